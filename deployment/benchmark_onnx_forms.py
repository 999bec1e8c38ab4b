r"""Times the two ONNX forms of a model with ONNX Runtime and OpenVINO, interleaved.

    python deployment/benchmark_onnx_forms.py --models=mobilenetv2,shufflenetv2 \
        --frames=16 --size=112 --num_classes=600 --threads=2 --rounds=3 --runs=30

Each model is exported twice at batch 1 (`export_onnx`, both verified against Keras):
``native`` (`keras_efficient3d.deploy.onnx_native`, the default) and ``taps`` (tf2onnx of
the 2D-tap TensorFlow graph, the export before). Every round times each runtime on each
form in turn (native, taps, native, taps, ...) so that a loaded machine slows both alike;
the table gives the median over rounds of each run's median latency and taps / native.
OpenVINO is skipped when it is not installed.
"""

import os
import tempfile

import numpy as np
from absl import flags

from keras_efficient3d import cli

FORMS = ("native", "taps")


def _runners(path, threads):
    """name -> a function running one batch-1 clip, for each runtime installed: the
    package's runners (`keras_efficient3d.runtime`), ONNX Runtime's and OpenVINO's of the
    same ONNX file."""
    from keras_efficient3d.runtime import ONNXRunner, OpenVINORunner, openvino_module

    runners = {"onnxruntime": ONNXRunner(path, threads)}
    try:
        runners["openvino"] = OpenVINORunner(openvino_module().Core().read_model(path), threads)
    except ImportError:
        pass
    return {runtime: runner.timing_step(0)[0] for runtime, runner in runners.items()}


def compare_forms(model_names, frames=16, size=112, num_classes=600, threads=2, rounds=3,
                  warmup=5, runs=30, folder=None):
    """Exports each model in both forms and times them; returns a list of rows
    {model, runtime, native_ms, taps_ms, ratio, rounds: {form: [median_ms, ...]}}."""
    from keras_efficient3d import create_model
    from keras_efficient3d.deploy.onnx_export import export_onnx
    from keras_efficient3d.runtime import measure

    if rounds < 1:
        raise ValueError(f"`rounds` must be >= 1. Received: rounds={rounds}")
    if folder is None:  # the exports of a run without a folder are removed when it ends
        with tempfile.TemporaryDirectory(prefix="onnx_forms_") as tmp:
            return compare_forms(model_names, frames, size, num_classes, threads, rounds,
                                 warmup, runs, tmp)
    rows = []
    for name in model_names:
        model = create_model(name, input_shape=(frames, size, size, 3), num_classes=num_classes)
        runners = {}
        for form in FORMS:
            path = os.path.join(folder, f"{name}_{form}.onnx")
            export_onnx(model, path, batch_size=1, form=form)
            runners[form] = _runners(path, threads)
        times = {(rt, form): [] for rt in runners["native"] for form in FORMS}
        for _ in range(rounds):
            for runtime in runners["native"]:
                for form in FORMS:
                    timing = measure(runners[form][runtime], warmup, runs)
                    times[(runtime, form)].append(timing["median_ms"])
        for runtime in runners["native"]:
            native = float(np.median(times[(runtime, "native")]))
            taps = float(np.median(times[(runtime, "taps")]))
            rows.append({"model": name, "runtime": runtime, "native_ms": native, "taps_ms": taps,
                         "ratio": taps / native,
                         "rounds": {form: times[(runtime, form)] for form in FORMS}})
    return rows


def format_table(rows):
    lines = [f"{'model':<16} {'runtime':<12} {'native ms':>10} {'taps ms':>10} {'taps/native':>12}"]
    for r in rows:
        lines.append(f"{r['model']:<16} {r['runtime']:<12} {r['native_ms']:>10.2f} "
                     f"{r['taps_ms']:>10.2f} {r['ratio']:>11.2f}x")
    return "\n".join(lines)


def define_flags(flag_values=flags.FLAGS):
    fv = {"flag_values": flag_values}
    cli.define("models", ["mobilenetv2", "shufflenetv2"], **fv)
    cli.define("frames", 16, **fv)
    cli.define("size", 112, **fv)
    cli.define("num_classes", 600, **fv)
    cli.define("threads", 2, **fv)
    cli.define("warmup", 5, "(per round)", **fv)
    cli.define("runs", 30, "(per round)", **fv)
    cli.define("rounds", 3, "(native, taps, native, taps, ...)", **fv)
    cli.define("json_out", None, **fv)


def main(argv, flag_values=flags.FLAGS):
    del argv
    f = flag_values
    from keras_efficient3d import registry

    for name in f.models:  # an unknown name is reported before a model is built and exported
        registry.resolve_name(name)
    rows = compare_forms(f.models, f.frames, f.size, f.num_classes, f.threads, f.rounds,
                         f.warmup, f.runs)
    from keras_efficient3d.deploy.benchmark import write_report
    write_report(rows, format_table(rows), f.json_out, markdown=False)


if __name__ == "__main__":
    cli.run(main, define_flags)
