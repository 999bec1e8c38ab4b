r"""Times an ONNX export with ONNX Runtime: median latency and clips/s at batch 1 and 8.

    python deployment/benchmark_onnx.py --onnx exports/mobilenetv2.onnx --batch_sizes 1,8 \
        --warmup 10 --iterations 50 --json exports/mobilenetv2_ort.json

Execution providers: TensorRT, then CUDA, then CPU, whichever this onnxruntime build has
(onnxruntime-gpu for the first two), or the list given with --providers. Every batch gets
`--warmup` untimed runs, then `--iterations` timed ones; clips/s = batch / median latency,
the paper's measure. A fixed-batch export is timed at its own batch only.
"""

import json
import sys

import numpy as np
from absl import app, flags

from keras_efficient3d.runtime import choose_providers  # noqa: F401  (called from here by users and tests)
from keras_efficient3d.runtime import measure, onnx_session

FLAGS = flags.FLAGS


def benchmark_onnx(onnx_path, batch_sizes=(1, 8), warmup=10, iterations=50, providers=None,
                   threads=0):
    """Times `onnx_path`; returns {"providers": [...], "results": [{batch_size, median_ms,
    min_ms, spread_ms, clips_per_s, iterations}]}."""
    if warmup < 0 or iterations < 1:
        raise ValueError(f"Need warmup >= 0 and iterations >= 1. Received: warmup={warmup}, "
                         f"iterations={iterations}")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"Batch sizes must be positive. Received: batch_sizes={batch_sizes}")
    session = onnx_session(str(onnx_path), threads, providers or None)
    spec = session.get_inputs()[0]
    fixed = spec.shape[0] if isinstance(spec.shape[0], int) else None
    if fixed is not None:
        batch_sizes = (fixed,)
    clip_shape = tuple(int(d) for d in spec.shape[1:])
    rng = np.random.default_rng(0)
    results = []
    for batch in batch_sizes:
        clips = rng.standard_normal((int(batch),) + clip_shape).astype(np.float32)
        timing = measure(lambda: session.run(None, {spec.name: clips}), warmup, iterations, int(batch))
        results.append({"batch_size": int(batch), "median_ms": timing["median_ms"],
                        "min_ms": timing["min_ms"], "spread_ms": timing["spread_ms"],
                        "clips_per_s": timing["clips_per_s"], "iterations": iterations})
    return {"onnx": str(onnx_path), "providers": session.get_providers(), "results": results}


def format_table(report):
    lines = [f"ONNX Runtime {report['onnx']} on {', '.join(report['providers'])}",
             f"{'batch':>6} {'median ms':>12} {'min ms':>10} {'clips/s':>10}"]
    for r in report["results"]:
        lines.append(f"{r['batch_size']:>6} {r['median_ms']:>12.3f} {r['min_ms']:>10.3f} "
                     f"{r['clips_per_s']:>10.1f}")
    return "\n".join(lines)


def define_flags():
    flags.DEFINE_string("onnx", None, "The .onnx file to time.")
    flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes.")
    flags.DEFINE_integer("warmup", 10, "Untimed runs per batch size.")
    flags.DEFINE_integer("iterations", 50, "Timed runs per batch size.")
    flags.DEFINE_list("providers", None, "Execution providers (default: best available).")
    flags.DEFINE_integer("threads", 0, "CPU intra-op threads (0: onnxruntime's default).")
    flags.DEFINE_string("json", None, "Also write the report to this file.")
    flags.mark_flag_as_required("onnx")


def main(argv):
    del argv
    try:
        report = benchmark_onnx(FLAGS.onnx, [int(b) for b in FLAGS.batch_sizes], FLAGS.warmup,
                                FLAGS.iterations, FLAGS.providers, FLAGS.threads)
    except ImportError as err:
        sys.exit(f"benchmark_onnx.py: onnxruntime is missing ({err}); pip install onnxruntime(-gpu).")
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"benchmark_onnx.py: {err}")
    except Exception as err:  # pylint: disable=broad-except
        if type(err).__name__ in ("NoSuchFile", "InvalidProtobuf", "Fail", "InvalidGraph"):
            sys.exit(f"benchmark_onnx.py: cannot load {FLAGS.onnx}: {err}")
        raise
    print(format_table(report))
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
