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
original's optimizer) in train mode. Configuration names are those of `benchmark.py`,
written with the original's ``--model`` names (mobilenet_1.0x, shufflenet_1.0x_g3,
squeezenet_1.1, resnet18_A); the models are built by the original's own
``model.generate_model`` with its ``opts.py`` defaults for what a name leaves out.
"""

import importlib
import os
import re
import sys

from absl import flags

# deployment/benchmark.py, beside this; it loads keras_efficient3d/cli.py without the package.
from benchmark import cli, define_timing_flags, timed, write_rows


def define_flags(flag_values=flags.FLAGS):
    define_timing_flags(flag_values, "(torch.set_num_threads; at least 1)")
    flags.DEFINE_string("repo", None, "A checkout of the original Efficient-3DCNNs code.",
                        required=True, flag_values=flag_values)
    flags.register_validator("repo", cli.existing_folder, flag_values=flag_values)


# A configuration name of the registry ('shufflenet_1.5x_g3', 'resnet18_A') whose
# architecture is the original's --model name, and the original's option of each part.
_CONFIG_NAME = re.compile(
    r"(?P<model>[a-z]+?(?:v\d)?|c3d)(?P<model_depth>\d+)?(?:_(?P<width_mult>\d+(?:\.\d+)?)x)?"
    r"(?:_g(?P<groups>\d+))?(?:_(?P<version>\d\.\d))?(?:_(?P<resnet_shortcut>[AB]))?")
_OPTION_TYPES = {"model_depth": int, "width_mult": float, "groups": int, "version": float,
                 "resnet_shortcut": str}


def parse_name(name):
    """'mobilenetv2_1.0x' -> ('mobilenetv2', {'width_mult': 1.0}): the original's --model
    name and the options the name sets, in the original's own option names (its opts.py);
    ResNets as 'resnet18_A'. What a name leaves out takes the original's defaults."""
    match = _CONFIG_NAME.fullmatch(name)
    if not match:
        raise ValueError(f"Unknown configuration '{name}'. Expected e.g. mobilenetv2_1.0x, "
                         "shufflenet_1.0x_g3, squeezenet_1.1, resnet18_A.")
    options = {key: _OPTION_TYPES[key](value) for key, value in match.groupdict().items()
               if key != "model" and value is not None}
    return match["model"], options


def original_options(repo, name, num_classes, frames, size):
    """The original's options (its ``opts.parse_opts()``, defaults included) for a
    configuration name, on the CPU."""
    model, options = parse_name(name)
    if not os.path.isfile(os.path.join(repo, "models", f"{model}.py")):
        raise ValueError(f"Unknown configuration '{name}': the original code has no model "
                         f"'{model}' (models/{model}.py).")
    argv = [f"--model={model}", f"--n_classes={num_classes}", f"--sample_size={size}",
            f"--sample_duration={frames}", "--no_cuda"]
    argv += [f"--{key}={value}" for key, value in options.items()]
    opts = importlib.import_module("opts")
    saved, sys.argv = sys.argv, [os.path.join(repo, "main.py"), *argv]
    try:
        return opts.parse_opts()
    finally:
        sys.argv = saved


def build(repo, name, num_classes, frames, size):
    """The original model for a configuration name, built by the original's own
    ``model.generate_model`` from ``repo``, so that this script knows no architecture."""
    if not os.path.isfile(os.path.join(repo, "models", "mobilenetv2.py")):
        raise ValueError(f"--repo={repo} is not a checkout of the original Efficient-3DCNNs "
                         "code: it has no models/mobilenetv2.py.")
    if repo not in sys.path:
        sys.path.insert(0, repo)
    opt = original_options(repo, name, num_classes, frames, size)
    model, _ = importlib.import_module("model").generate_model(opt)
    return model


def run(repo, models, mode="inference", batch_sizes=(1, 8), frames=16, size=112,
        num_classes=600, threads=2, warmup=3, runs=15, log=print):
    try:
        import torch
    except ImportError as err:
        raise cli.UsageError(f"this script runs where PyTorch is installed ({err})") from None

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


def main(argv, flag_values=flags.FLAGS):
    del argv
    f = flag_values
    rows = run(f.repo, f.models, f.mode, f.batch_sizes, f.frames, f.size, f.num_classes,
               f.threads, f.warmup, f.runs, log=lambda line: print(line, file=sys.stderr))
    write_rows(rows, f.json_out)


if __name__ == "__main__":
    cli.run(main, define_flags)
