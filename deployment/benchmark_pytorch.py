"""The baseline every speed target is measured against: the original PyTorch models
(github okankop/Efficient-3DCNNs) timed on this machine, the way `benchmark.py` times ours.

    python -m venv /tmp/torch && /tmp/torch/bin/pip install torch numpy absl-py
    git clone https://github.com/okankop/Efficient-3DCNNs /tmp/Efficient-3DCNNs
    /tmp/torch/bin/python deployment/benchmark_pytorch.py --repo=/tmp/Efficient-3DCNNs \
        --threads=2 --batch_sizes=1 [--mode=train --batch_sizes=8]

Neither PyTorch nor the original code is a dependency of this project: this script only
imports the original's ``models/`` package from ``--repo``. Inference is the median of
``model(x)`` under ``torch.no_grad()`` in eval mode; training the median of a forward,
cross-entropy backward and SGD step (momentum 0.9, dampening 0.9, weight decay 1e-3, the
original's optimizer) in train mode. Configuration names are those of `benchmark.py`.
"""

import re
import sys

from absl import app, flags

from benchmark import define_timing_flags, timed, write_rows  # deployment/benchmark.py, beside this

FLAGS = flags.FLAGS


def define_flags():
    define_timing_flags("torch.set_num_threads.")
    flags.DEFINE_string("repo", None, "A checkout of the original Efficient-3DCNNs code.")
    flags.mark_flag_as_required("repo")


def parse_name(name):
    """'mobilenetv2_1.0x' -> ('mobilenetv2', {'width_mult': 1.0}); ResNets as 'resnet18_A'."""
    m = re.fullmatch(r"(mobilenetv2|mobilenet|shufflenetv2|shufflenet)_([\d.]+)x(?:_g(\d+))?", name)
    if m:
        kwargs = {"width_mult": float(m.group(2))}
        if m.group(1) == "shufflenet":
            kwargs["groups"] = int(m.group(3) or 3)
        return m.group(1), kwargs
    m = re.fullmatch(r"squeezenet_(1\.0|1\.1)", name)
    if m:
        return "squeezenet", {"version": float(m.group(1))}
    m = re.fullmatch(r"(resnet|resnext)(\d+)_([AB])", name)
    if m:
        return m.group(1), {"depth": int(m.group(2)), "shortcut_type": m.group(3)}
    raise ValueError(f"Unknown configuration '{name}'. Expected e.g. mobilenetv2_1.0x, "
                     "shufflenet_1.0x_g3, squeezenet_1.1, resnet18_A.")


def build(repo, name, num_classes, frames, size):
    """The original model for a configuration name, from ``repo/models``."""
    import importlib
    import os

    if not os.path.isfile(os.path.join(repo, "models", "mobilenetv2.py")):
        raise ValueError(f"--repo={repo} is not a checkout of the original Efficient-3DCNNs "
                         "code: it has no models/mobilenetv2.py.")
    if repo not in sys.path:
        sys.path.insert(0, repo)
    family, kwargs = parse_name(name)
    module = importlib.import_module(f"models.{family}")
    if family in ("resnet", "resnext"):
        depth = kwargs.pop("depth")
        return getattr(module, f"{family}{depth}")(
            num_classes=num_classes, sample_size=size, sample_duration=frames, **kwargs)
    if family == "squeezenet":
        return module.get_model(num_classes=num_classes, sample_size=size,
                                sample_duration=frames, **kwargs)
    if family == "shufflenet":
        return module.get_model(num_classes=num_classes, **kwargs)
    return module.get_model(num_classes=num_classes, sample_size=size, **kwargs)


def run(repo, models, mode="inference", batch_sizes=(1, 8), frames=16, size=112,
        num_classes=600, threads=2, warmup=3, runs=15, log=print):
    import torch

    if threads < 1:
        raise ValueError(f"--threads must be at least 1 for PyTorch. Received: {threads}")
    torch.set_num_threads(threads)
    rows = []
    for name in models:
        model = build(repo, name, num_classes, frames, size)
        for batch in batch_sizes:
            x = torch.rand(batch, 3, frames, size, size)
            if mode == "inference":
                model.eval()

                def step():
                    with torch.no_grad():
                        model(x)
            else:
                model.train()
                y = torch.randint(0, num_classes, (batch,))
                opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                                      dampening=0.9, weight_decay=1e-3)
                loss_fn = torch.nn.CrossEntropyLoss()

                def step():
                    opt.zero_grad()
                    loss_fn(model(x), y).backward()
                    opt.step()
            seconds = timed(step, warmup, runs)
            row = {"model": name, "form": "pytorch", "mode": mode, "batch_size": batch,
                   "threads": threads, "input": f"{frames}x{size}x{size}",
                   "median_ms": 1000 * seconds, "clips_per_s": batch / seconds,
                   "torch": torch.__version__}
            rows.append(row)
            log(f"{name:20s} pytorch {mode:9s} batch {batch:2d}: {row['median_ms']:8.1f} ms  "
                f"{row['clips_per_s']:7.1f} clips/s")
    return rows


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        rows = run(FLAGS.repo, FLAGS.models, FLAGS.mode, [int(b) for b in FLAGS.batch_sizes],
                   FLAGS.frames, FLAGS.size, FLAGS.num_classes, FLAGS.threads, FLAGS.warmup,
                   FLAGS.runs, log=lambda line: print(line, file=sys.stderr))
    except (ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_rows(rows, FLAGS.json_out)
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
