"""TFLite timing of registry models: latency and clips/s per model, precision and threads.

Weights are random (timing does not depend on them) with BatchNorm statistics calibrated on
random clips, unless `weights` files are given; int8 calibrates on random clips too.
"""

import numpy as np

from keras_efficient3d.deploy.graph import DeploymentGraph
from keras_efficient3d.deploy.tflite import benchmark, convert
from keras_efficient3d.registry import create_model

__all__ = ["benchmark_models", "format_table", "load_reference", "read_reference_rows"]

_ROW_TYPES = {"model": str, "mode": str, "batch_size": int, "threads": int, "input": str,
              "median_ms": (int, float)}


def read_reference_rows(path):
    """The rows that ``deployment/benchmark_pytorch.py --json_out`` writes (measure them on
    the machine whose figures they are compared with), checked. Raises ValueError naming
    the file, the row and what was expected."""
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            rows = json.load(handle)
    except OSError as err:
        raise ValueError(f"Cannot read the PyTorch reference {path}: {err.strerror}") from None
    except ValueError as err:
        raise ValueError(f"{path} is not a list of benchmark_pytorch.py rows: {err}") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path} is not a list of benchmark_pytorch.py rows.")
    for i, row in enumerate(rows):
        bad = [key for key, kind in _ROW_TYPES.items()
               if not isinstance(row, dict) or not isinstance(row.get(key), kind)
               or isinstance(row.get(key), bool)]
        if bad or row.get("form") != "pytorch" or row["median_ms"] <= 0:
            raise ValueError(
                f"{path}, row {i}: expected a benchmark_pytorch.py row (form 'pytorch'; model, "
                f"mode, input strings; batch_size, threads integers; median_ms > 0). "
                f"Received: {row!r}"[:400])
    return rows


def load_reference(path, mode="inference", batch_size=1, threads=2, input_shape=None):
    """Model name -> median ms of the original PyTorch implementation at `mode`,
    `batch_size`, `threads` (and clip `input_shape` (frames, height, width, ...) when
    given), from `read_reference_rows`."""
    clip = "x".join(str(d) for d in input_shape[:3]) if input_shape is not None else None
    return {r["model"]: float(r["median_ms"]) for r in read_reference_rows(path)
            if r["mode"] == mode and r["batch_size"] == batch_size and r["threads"] == threads
            and clip in (None, r["input"])}


def _calibrate_bn(model, clips):
    import keras

    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    momenta = [l.momentum for l in bns]
    for layer in bns:
        layer.momentum = 0.0
    model(clips, training=True)
    for layer, momentum in zip(bns, momenta):
        layer.momentum = momentum


def benchmark_models(names, precisions=("fp32", "fp16", "dynamic", "int8"), threads=(1, 2, 4),
                     input_shape=(16, 112, 112, 3), num_classes=600, warmup=5, runs=30,
                     calibration_clips=4, weights=None, seed=0, reference=None, log=print):
    """Returns a list of result dicts (model, precision, threads, size_bytes, latency...);
    `reference` (see `load_reference`) adds each model's PyTorch figure as ``pytorch_ms``."""
    rng = np.random.default_rng(seed)
    clips = rng.normal(size=(calibration_clips,) + tuple(input_shape)).astype(np.float32)
    rows = []
    for name in names:
        model = create_model(name, input_shape=tuple(input_shape), num_classes=num_classes,
                             weights=(weights or {}).get(name))
        if not (weights or {}).get(name):
            _calibrate_bn(model, clips)
        graph = DeploymentGraph(model)
        for precision in precisions:
            blob = convert(graph, precision, representative_data=clips)
            for n in threads:
                result = benchmark(blob, num_threads=n, warmup=warmup, runs=runs)
                result.update(model=name, precision=precision, size_bytes=len(blob),
                              input_shape=list(input_shape), pytorch_ms=(reference or {}).get(name))
                rows.append(result)
                if log:
                    log(f"{name:20s} {precision:8s} threads={n} {result['median_ms']:8.1f} ms "
                        f"{result['clips_per_s']:7.1f} clips/s {len(blob) / 1e6:6.2f} MB")
    return rows


def format_table(rows):
    """A Markdown table of `benchmark_models` rows."""
    lines = ["| model | precision | threads | median ms | clips/s | size MB | PyTorch ms | speed-up |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ref = r.get("pytorch_ms")
        speedup = f"{ref / r['median_ms']:.2f}x" if ref and r["threads"] == 2 else ""
        reference = f"{ref:.1f}" if ref else ""
        lines.append(f"| {r['model']} | {r['precision']} | {r['threads']} | {r['median_ms']:.1f} | "
                     f"{r['clips_per_s']:.1f} | {r['size_bytes'] / 1e6:.2f} | {reference} | {speedup} |")
    return "\n".join(lines)
