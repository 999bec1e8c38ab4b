r"""Issue 14's target table in one command: our TFLite fp32/int8, ONNX Runtime (native ONNX)
and OpenVINO fp32/int8 of each model against the original model in PyTorch and its plain
ONNX export under ONNX Runtime and OpenVINO, all timed in the same interleaved rounds in
this process (2 threads, batch 1, 16x112x112, 600 classes by default).

    git clone https://github.com/okankop/Efficient-3DCNNs /tmp/Efficient-3DCNNs
    python deployment/benchmark_targets.py --repo=/tmp/Efficient-3DCNNs \
        --json_out=targets.json --work_dir=/tmp/targets_work      # ~15 min on 2 quiet cores
    python deployment/benchmark_targets.py --models=mobilenetv2_0.2x --rounds=8   # ours only
    python deployment/benchmark_targets.py --peers_json=peers.json   # peers timed elsewhere
    python deployment/benchmark_targets.py --repo=/tmp/Efficient-3DCNNs --models=mobilenetv2_0.2x \
        --runtimes=openvino-fp32 --peers=original-openvino     # one pair, nothing else in the process

Prints, per model, each runtime's median ms (min-max over the rounds), GMAC/s and share of
this machine's fp32 GEMM peak, then the issue's targets with PASS/MISS (each speed-up that of
the medians, beside the least and greatest of the rounds' own): our best x86 int8 >= 2x and
our best fp32 >= 1x the original's ONNX under OpenVINO in fp32; TFLite fp32 >= 2x and int8
>= 4x the original PyTorch; int8 >= 1.5x fp32 on TFLite and on OpenVINO; and OpenVINO at the
CPU's default precision (bf16 on CPUs with bf16 units) >= 1x the original's ONNX under
OpenVINO at it. The peers need
``--repo`` (a checkout of the original code) and PyTorch in this environment; they are built
and exported by ``benchmark_pytorch.py``'s functions. Where PyTorch lives in another
environment, ``--peers_json`` takes the rows that ``benchmark_pytorch.py --json_out`` wrote
there (same machine; not interleaved with ours).
ONNX Runtime runs here without spinning worker threads, ours and the original's: spinning
after each run, they took the cores from the runtime timed next (OpenVINO fp32 of MobileNetV2
0.2x 2.5 ms instead of 1.6).
Exports are kept in ``--work_dir`` and reused (weights random, int8 calibrated on random
clips: the timing does not depend on them). ``--json_out`` gets every figure and the
Markdown table beside it (.md).
"""

import os
import sys

from absl import flags

from keras_efficient3d import cli

# isort: split
# deployment/benchmark.py, beside this; imported after the package's cli, which it then
# shares (loaded first, it would load a copy of cli.py of its own)
from benchmark import check_original, load_original

DEFAULT_MODELS = ["mobilenetv2_1.0x", "shufflenetv2_1.0x", "mobilenet_1.0x", "shufflenet_1.0x_g3",
                  "squeezenet_1.1", "mobilenetv2_0.2x"]


def original_steps(repo, input_shape, num_classes, threads, folder, labels=None):
    """A function of a model name returning the peers' steps (``original-pytorch``,
    ``original-onnxruntime``, ``original-openvino`` (fp32) and ``original-openvino-auto``
    (the CPU's default precision): the original model built from `repo` and its plain ONNX
    export, by ``benchmark_pytorch.py``'s functions) on one clip; those of `labels` only
    when given (`repo` and the names checked by `benchmark.check_original`)."""
    import torch

    from keras_efficient3d.runtime import quiet_stderr

    original = load_original()
    frames, size = int(input_shape[0]), int(input_shape[1])
    torch.set_num_threads(int(threads))
    os.makedirs(folder, exist_ok=True)

    def steps(name):
        model = original.build(repo, name, num_classes, frames, size).eval()
        x = torch.rand(1, 3, frames, size, size)

        def pytorch():
            with torch.no_grad():
                model(x)

        clip = f"{frames}x{size}x{size}"
        with quiet_stderr():  # the exporter's warnings
            path = original.export_onnx(model, x, os.path.join(
                folder, f"{name}_{clip}_{num_classes}c_original.onnx"))
        makers = {"original-pytorch": lambda: pytorch,
                  # spinning workers would slow the runtimes timed after it (ours alike)
                  "original-onnxruntime": lambda: original.onnxruntime_step(path, x.numpy(), threads,
                                                                            spinning=False)[0],
                  "original-openvino": lambda: original.openvino_step(path, x.numpy(), threads)[0],
                  "original-openvino-auto": lambda: original.openvino_auto_step(path, x.numpy(), threads)[0]}
        return {label: make() for label, make in makers.items() if labels is None or label in labels}

    return steps


def define_flags(flag_values=flags.FLAGS):
    from keras_efficient3d.deploy.targets import OURS, PEERS

    fv = {"flag_values": flag_values}
    cli.define("models", DEFAULT_MODELS, **fv)
    flags.DEFINE_string("repo", None, "A checkout of the original Efficient-3DCNNs code: adds "
                        "the peers (needs PyTorch).", **fv)
    flags.register_validator("repo", cli.existing_folder, **fv)
    cli.define("peers_json", None, "Instead of --repo (written in a separate PyTorch "
               "environment; not interleaved with ours).", **fv)
    flags.DEFINE_list("runtimes", list(OURS), f"Our runtimes, comma-separated ({', '.join(OURS)}).",
                      **fv)
    flags.register_validator("runtimes", cli.each_of(OURS), **fv)
    flags.DEFINE_list("peers", list(PEERS), f"The original's runtimes timed with --repo, or "
                      f"taken from --peers_json, comma-separated ({', '.join(PEERS)}).", **fv)
    flags.register_validator("peers", cli.each_of(PEERS), **fv)
    flags.DEFINE_string("work_dir", "benchmark_targets_work", "Where the exports are written "
                        "and reused.", **fv)
    cli.define("threads", 2, **fv)
    cli.define("frames", 16, **fv)
    cli.define("size", 112, **fv)
    cli.define("num_classes", 600, **fv)
    cli.define("warmup", 3, "(per runtime and round)", **fv)
    cli.define("runs", 10, "(per runtime and round)", **fv)
    cli.define("rounds", 5, "(over all runtimes of a model)", **fv)
    cli.define("gemm_peak", True, **fv)
    cli.define("json_out", "targets.json", "The Markdown table goes beside it (.md).", **fv)


def main(argv, flag_values=flags.FLAGS):
    del argv
    from keras_efficient3d import registry
    from keras_efficient3d.deploy.benchmark import gemm_peak, load_peers, note_unmatched_peers, write_report
    from keras_efficient3d.deploy.targets import format_targets, missing_packages, run_targets

    f = flag_values
    for name in f.models:  # an unknown name is reported before anything is timed
        registry.resolve_name(name)
    if os.path.isfile(f.work_dir):
        raise cli.UsageError(f"--work_dir={f.work_dir}: a file, not a folder")
    if f.repo and f.peers_json:
        raise cli.UsageError("give --repo (time the peers here) or --peers_json (their "
                             "figures from benchmark_pytorch.py), not both")
    if f["peers"].present and not f.repo and not f.peers_json:
        raise cli.UsageError("--peers chooses among the peers of --repo or --peers_json: give "
                             "one of them")
    if f.repo:
        check_original(f.repo, f.models)
        if f.threads < 1:  # PyTorch takes a count, not 0 for its default
            raise cli.UsageError(f"--threads={f.threads}: the peers of --repo need a thread "
                                 "count of 1 or more")
    lacking = missing_packages(f.runtimes, f.peers if f.repo else ())
    if lacking:
        raise cli.UsageError("not installed: " + "; ".join(
            f"{package} (for {label}: pip install 'keras_efficient3d[{extra}]')"
            for package, label, extra in lacking) + " (or leave them out of --runtimes/--peers)")
    input_shape = (f.frames, f.size, f.size, 3)
    peers = (original_steps(f.repo, input_shape, f.num_classes, f.threads, f.work_dir, f.peers)
             if f.repo else None)
    peer_ms = None
    if f.peers_json:
        # the file's rows of the peers chosen (by default every peer)
        peer_ms = {model: {f"original-{form}": ms for form, ms in forms.items()
                           if f"original-{form}" in f.peers}
                   for model, forms in load_peers(f.peers_json, threads=f.threads,
                                                  input_shape=input_shape).items()}
        note_unmatched_peers(f.peers_json, any(peer_ms.get(name) for name in f.models),
                             f"{f.threads} threads, batch 1, {f.frames}x{f.size}x{f.size} clips")
    if not f.repo and not f.peers_json:
        print("note: no --repo or --peers_json: only our own int8 against fp32 is compared; "
              "the targets against the original model need one of them", file=sys.stderr)
    peak = gemm_peak(f.threads) if f.gemm_peak else None
    rows = run_targets(f.models, f.work_dir, input_shape, f.num_classes, f.threads, f.rounds,
                       f.warmup, f.runs, f.runtimes, peers, peer_ms, peak,
                       log=lambda line: print(line, file=sys.stderr))
    write_report({"peak": peak, "rows": rows}, format_targets(rows, peak), f.json_out)


if __name__ == "__main__":
    cli.run(main, define_flags)
