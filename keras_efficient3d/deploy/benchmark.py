"""What every timing script shares: TFLite timing of registry models, the peers' figures
(the original model in PyTorch, and its plain ONNX export run by ONNX Runtime and OpenVINO,
from ``deployment/benchmark_pytorch.py``) with our speed-up against the best of them, and
the achieved multiply-accumulates per second beside the machine's measured fp32 GEMM peak.

TFLite weights are random (timing does not depend on them) with BatchNorm statistics
calibrated on random clips, unless `weights` files are given; int8 calibrates on random clips too.

    peers = load_peers("peers.json", threads=2, input_shape=(16, 112, 112))
    peak = gemm_peak(threads=2)                     # {"gmacs_per_s": ..., "backend": ...}
    row.update(compare(row["model"], row["median_ms"], peers, macs, peak))

Every script reports the same way: a table (`markdown_table`, with `peak_lines` and
`comparison_cells` for what they share) printed and, with ``--json_out``, the rows as JSON
and the table beside them (.md), by `write_report`.
"""

import os
import sys
import time

import numpy as np

from keras_efficient3d.artifacts import atomic_write, atomic_write_json
from keras_efficient3d.data.normalization import Normalization
from keras_efficient3d.deploy.graph import DeploymentGraph
from keras_efficient3d.deploy.tflite import benchmark, convert
from keras_efficient3d.registry import create_model, resolve_name

__all__ = ["COMPARISON_COLUMNS", "PEER_FORMS", "benchmark_models", "best_peer", "compare",
           "comparison_cells", "format_comparison", "format_op_profile", "format_peak",
           "format_table", "gemm_peak", "int8_op_profile", "load_peers", "load_reference",
           "markdown_table", "model_macs", "note_unmatched_peers", "peak_lines", "peers_and_peaks",
           "read_reference_rows", "write_report"]

# The peers: what a user who takes the original model runs instead of ours (OpenVINO in
# fp32, and at the CPU's default precision: bf16 where the CPU has bf16 units).
PEER_FORMS = ("pytorch", "onnxruntime", "openvino", "openvino-auto")

_ROW_TYPES = {"model": str, "mode": str, "batch_size": int, "threads": int, "input": str,
              "median_ms": (int, float)}


def read_reference_rows(path):
    """The rows that ``deployment/benchmark_pytorch.py --json_out`` writes (measure them on
    the machine whose figures they are compared with), checked: one per model, peer form
    (`PEER_FORMS`), mode, batch, threads and clip. Raises ValueError naming the file, the
    row and what was expected."""
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
    seen = {}  # a file joining two runs: which of two figures of one peer is meant?
    for i, row in enumerate(rows):
        bad = [key for key, kind in _ROW_TYPES.items()
               if not isinstance(row, dict) or not isinstance(row.get(key), kind)
               or isinstance(row.get(key), bool)]
        if bad or row.get("form") not in PEER_FORMS or row["median_ms"] <= 0:
            raise ValueError(
                f"{path}, row {i}: expected a benchmark_pytorch.py row (form one of "
                f"{', '.join(PEER_FORMS)}; model, "
                f"mode, input strings; batch_size, threads integers; median_ms > 0). "
                f"Received: {row!r}"[:400])
        key = tuple(row[k] for k in ("model", "form", "mode", "batch_size", "threads", "input"))
        if key in seen:
            raise ValueError(f"{path}, rows {seen[key]} and {i}: two figures of {row['model']} "
                             f"in {row['form']} ({row['mode']}, batch {row['batch_size']}, "
                             f"{row['threads']} threads, {row['input']}): keep one run's rows")
        seen[key] = i
    return rows


def load_peers(path, mode="inference", batch_size=1, threads=2, input_shape=None):
    """Model name -> {peer form: median ms} at `mode`, `batch_size`, `threads` (and clip
    `input_shape` (frames, height, width, ...) when given), from `read_reference_rows`."""
    clip = "x".join(str(d) for d in input_shape[:3]) if input_shape is not None else None
    peers = {}
    for r in read_reference_rows(path):
        if r["mode"] == mode and r["batch_size"] == batch_size and r["threads"] == threads \
                and clip in (None, r["input"]):
            peers.setdefault(r["model"], {})[r["form"]] = float(r["median_ms"])
    return peers


def load_reference(path, mode="inference", batch_size=1, threads=2, input_shape=None):
    """Model name -> median ms of the original PyTorch implementation (see `load_peers`)."""
    return {model: forms["pytorch"] for model, forms in
            load_peers(path, mode, batch_size, threads, input_shape).items() if "pytorch" in forms}


def best_peer(forms):
    """The fastest of a model's peers ``{form: ms}``: ``(form, ms)``, or ``(None, None)``."""
    if not forms:
        return None, None
    form = min(forms, key=forms.get)
    return form, forms[form]


def compare(model, median_ms, peers=None, macs=None, peak=None):
    """The columns every timing table adds to one of our timings of `model`: each peer's
    ms (``pytorch_ms``, ``onnxruntime_ms``, ``openvino_ms``), the best peer and our
    speed-up against it (``best_peer``, ``best_peer_ms``, ``speedup_vs_best``), and with
    `macs` the achieved rate (``gmacs_per_s``) and, with a `gemm_peak` result, its share
    of the peak (``of_peak``, 0-1). Absent figures are left out."""
    if median_ms <= 0:
        raise ValueError(f"`median_ms` must be positive. Received: median_ms={median_ms}")
    out = {}
    forms = (peers or {}).get(model, {})
    for form, ms in forms.items():
        out[f"{form}_ms"] = ms
    form, ms = best_peer(forms)
    if form:
        out.update(best_peer=form, best_peer_ms=ms, speedup_vs_best=ms / median_ms)
    if macs:
        out["gmacs_per_s"] = macs / median_ms / 1e6
        if peak:
            out["of_peak"] = out["gmacs_per_s"] / peak["gmacs_per_s"]
    return out


def format_comparison(row):
    """' 2.40x vs openvino 12.0 ms, 31.2 GMAC/s (16% of peak)': the `compare` columns of a
    row as text ('' when it has none)."""
    parts = []
    if "best_peer" in row:
        parts.append(f"{row['speedup_vs_best']:5.2f}x vs {row['best_peer']} "
                     f"{row['best_peer_ms']:.1f} ms")
    if "gmacs_per_s" in row:
        rate = f"{row['gmacs_per_s']:.1f} GMAC/s"
        if "of_peak" in row:
            rate += f" ({100 * row['of_peak']:.0f}% of peak)"
        parts.append(rate)
    return ", ".join(parts)


def _xnnpack_gemm_seconds(size, threads, runs):
    """Best seconds of a ``size``-square fp32 FULLY_CONNECTED under LiteRT + XNNPACK, the
    kernels that run our TFLite models."""
    import tensorflow as tf

    from keras_efficient3d.deploy.tflite import convert_function
    from keras_efficient3d.runtime import TFLiteRunner

    weights = tf.constant(np.random.default_rng(0).standard_normal((size, size), np.float32))
    fn = tf.function(lambda x: tf.matmul(x, weights),
                     input_signature=[tf.TensorSpec((size, size), tf.float32)])
    blob = convert_function(fn.get_concrete_function(), "fp32")
    runner = TFLiteRunner(blob, threads or None, strict=False)
    step, _ = runner.timing_step(0)
    return _best_seconds(step, runs)


def _numpy_gemm_seconds(size, threads, runs):
    """Best seconds of a ``size``-square fp32 numpy matmul, its BLAS pinned to `threads`
    (threadpoolctl, when installed; else the BLAS's own thread count)."""
    import contextlib

    a = np.random.default_rng(0).standard_normal((size, size), np.float32)
    try:
        from threadpoolctl import threadpool_limits
        limit = threadpool_limits(limits=threads or None, user_api="blas")
    except ImportError:
        limit = contextlib.nullcontext()
    with limit:
        return _best_seconds(lambda: a @ a, runs)


def _best_seconds(step, runs):
    step()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


_GEMM_BACKENDS = {"xnnpack": _xnnpack_gemm_seconds, "numpy": _numpy_gemm_seconds}


def gemm_peak(threads=2, size=1024, runs=5, backends=("xnnpack", "numpy")):
    """This machine's fp32 GEMM peak at `threads` (0: all cores): the best of `runs`
    square ``size`` matrix products, per backend (LiteRT's XNNPACK, numpy's BLAS), the
    fastest backend kept. Returns ``{"gflops", "gmacs_per_s", "backend", "threads",
    "size", "per_backend": {backend: GMAC/s}}``; a backend that cannot run is skipped."""
    if size < 64 or runs < 1:
        raise ValueError(f"Need size >= 64 and runs >= 1. Received: size={size}, runs={runs}")
    unknown = [b for b in backends if b not in _GEMM_BACKENDS]
    if unknown or not backends:
        raise ValueError(f"`backends` must be among {tuple(_GEMM_BACKENDS)}. "
                         f"Received: backends={backends}")
    threads = int(threads) or os.cpu_count()
    rates = {}
    for backend in backends:
        try:
            seconds = _GEMM_BACKENDS[backend](size, threads, runs)
        except ImportError:
            continue
        rates[backend] = size ** 3 / seconds / 1e9
    if not rates:
        raise RuntimeError(f"No GEMM backend could run (tried {', '.join(backends)}).")
    backend = max(rates, key=rates.get)
    return {"gflops": 2 * rates[backend], "gmacs_per_s": rates[backend], "backend": backend,
            "threads": threads, "size": size, "per_backend": rates}


def peers_and_peaks(models, peers_json=None, clip=(16, 112, 112), threads=(2,), measure_peak=True):
    """What a timing script settles before it times anything: it checks the registry names
    `models` (an unknown one raises first), reads the peers of `peers_json` at `clip`
    (`load_peers`; None without it) and measures the `gemm_peak` at each of `threads` (None
    unless `measure_peak`). Returns ``(peers, peaks)``, peaks by thread count."""
    for name in models:
        resolve_name(name)
    peers = load_peers(peers_json, input_shape=clip) if peers_json else None
    note_unmatched_peers(peers_json, 2 in threads and any(name in (peers or {}) for name in models),
                         f"2 threads, batch 1, {'x'.join(str(d) for d in clip)} clips")
    return peers, ({n: gemm_peak(n) for n in threads} if measure_peak else None)


def note_unmatched_peers(peers_json, matched, setting):
    """Says on stderr, when `peers_json` was given but none of its rows `matched` a timed
    model at `setting` (in words), that the table has no peer columns: it would otherwise
    just lack them, as if the file had been left out."""
    if peers_json and not matched:
        print(f"note: no row of --peers_json={peers_json} is of a timed model at {setting}: "
              "the table has no peer columns", file=sys.stderr)


def format_peak(peak):
    """One line: the machine's measured fp32 GEMM peak."""
    threads = f"{peak['threads']} thread{'' if peak['threads'] == 1 else 's'}"
    return (f"fp32 GEMM peak of this machine at {threads}: "
            f"{peak['gflops']:.1f} GFLOP/s = {peak['gmacs_per_s']:.1f} GMAC/s "
            f"({peak['backend']}, {peak['size']}-square matmul, best of runs)")


def peak_lines(peaks):
    """A table's preamble: the `format_peak` line of each `gemm_peak` result of `peaks` (one
    result, or thread count -> result; None for none), then an empty line if there is any."""
    if peaks and "gmacs_per_s" in peaks:
        peaks = {peaks["threads"]: peaks}
    lines = [format_peak(peak) for _, peak in sorted((peaks or {}).items())]
    return lines + [""] if lines else []


# The Markdown columns of `compare`'s figures, as `comparison_cells` gives them.
COMPARISON_COLUMNS = ("best peer ms", "vs best peer", "GMAC/s", "% of peak")


def comparison_cells(row):
    """The `COMPARISON_COLUMNS` cells of a row with `compare` columns ('' where absent)."""
    peer = "best_peer" in row
    return [f"{row['best_peer_ms']:.1f} ({row['best_peer']})" if peer else "",
            f"{row['speedup_vs_best']:.2f}x" if peer else "",
            f"{row['gmacs_per_s']:.1f}" if row.get("gmacs_per_s") is not None else "",
            f"{100 * row['of_peak']:.0f}%" if "of_peak" in row else ""]


def markdown_table(columns, rows, align):
    """The lines of a Markdown table: a header of `columns`, their alignment (`align`, one
    'l' or 'r' a column) and a line per row of `rows` (lists of cells). A column empty in
    every row is left out (the peer columns of a run without peers, a file timed without a
    GEMM peak): six empty columns a row said nothing."""
    if len(align) != len(columns) or set(align) - set("lr"):
        raise ValueError(f"`align` must be one 'l' or 'r' per column ({len(columns)}). "
                         f"Received: align={align!r}")
    if rows and all(len(row) == len(columns) for row in rows):
        kept = [i for i in range(len(columns)) if any(str(row[i]) != "" for row in rows)]
        columns, align = [columns[i] for i in kept], "".join(align[i] for i in kept)
        rows = [[row[i] for i in kept] for row in rows]
    lines = ["|" + "".join(f" {c} |" if c else " |" for c in columns),
             "|" + "".join("---:|" if a == "r" else "---|" for a in align)]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"Each row must have {len(columns)} cells. Received: row={row!r}")
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return lines


def write_report(report, table, json_out=None, markdown=True):
    """Prints `table`; with `json_out`, writes `report` there as JSON and, with `markdown`,
    `table` beside it (`json_out` with the extension .md), each atomically, and says which
    files it wrote. Returns their paths."""
    print(table)
    if not json_out:
        return []
    table_path = os.path.splitext(json_out)[0] + ".md"
    if markdown and os.path.abspath(table_path) == os.path.abspath(json_out):
        raise ValueError(f"{json_out}: the Markdown table's name; give the JSON's (.json)")
    paths = [atomic_write_json(json_out, report)]
    if markdown:
        paths.append(atomic_write(table_path, table + "\n"))
    print(f"wrote {', '.join(paths)}")
    return paths


def model_macs(name, input_shape, num_classes):
    """Multiply-accumulates of one clip through registry model `name`
    (`keras_efficient3d.complexity`)."""
    from keras_efficient3d import complexity

    model, family = complexity.build(name, num_classes=num_classes, frames=int(input_shape[0]),
                                     size=int(input_shape[1]), width=int(input_shape[2]))
    return complexity.count(model, family)["macs"]


def benchmark_model(name, input_shape=(16, 112, 112, 3), num_classes=600, calibration_clips=4,
                    seed=0, weights=None):
    """``(model, clips)``: registry model `name` and `calibration_clips` seeded random clips.
    Without `weights`, its BatchNorm statistics are those of the first four clips: random
    weights with the initial statistics (mean 0, variance 1) give activations that grow layer
    after layer, which no trained model has and which int8 calibration would be fitted to."""
    clips = np.random.default_rng(seed).normal(
        size=(calibration_clips,) + tuple(input_shape)).astype(np.float32)
    model = create_model(name, input_shape=tuple(input_shape), num_classes=num_classes,
                         weights=weights)
    if not weights:
        _calibrate_bn(model, clips[:4])
    return model, clips


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
                     calibration_clips=4, weights=None, seed=0, reference=None, peers=None,
                     peaks=None, peer_threads=2, log=print):
    """Returns a list of result dicts (model, precision, threads, size_bytes, latency, macs,
    gmacs_per_s...); precisions of `deploy.tflite.PRECISIONS`, and ``int8-frames``: int8
    that takes uint8 frames. `peers` (see `load_peers`; `reference`, PyTorch's ms per model, is the
    older form of it), measured at `peer_threads`, adds the `compare` columns to the rows
    at that thread count; `peaks` (thread count -> `gemm_peak` result) the share of the
    peak that each row achieves at its threads."""
    from keras_efficient3d import complexity

    if peers is None and reference:
        peers = {model: {"pytorch": ms} for model, ms in reference.items()}
    rows = []
    for name in names:
        model, clips = benchmark_model(name, input_shape, num_classes, calibration_clips, seed,
                                       weights=(weights or {}).get(name))
        macs = complexity.count(model)["macs"]
        graph = DeploymentGraph(model)
        for precision in precisions:
            # int8-frames: the int8 file that takes uint8 frames (the pipeline's default
            # normalisation), `deploy.tflite.convert`'s frames
            # every clip the benchmark made, and no "fewer than asked for" about them
            blob = (convert(graph, "int8", representative_data=clips, num_calibration=len(clips),
                            frames=Normalization.preset("original"))
                    if precision == "int8-frames" else
                    convert(graph, precision, representative_data=clips, num_calibration=len(clips)))
            for n in threads:
                result = benchmark(blob, num_threads=n, warmup=warmup, runs=runs)
                result.update(model=name, precision=precision, size_bytes=len(blob),
                              input_shape=list(input_shape), macs=macs)
                result.update(compare(name, result["median_ms"],
                                      peers if n == peer_threads else None, macs,
                                      (peaks or {}).get(n)))
                rows.append(result)
                if log:
                    log(f"{name:20s} {precision:11s} threads={n} {result['median_ms']:8.1f} ms "
                        f"{result['clips_per_s']:7.1f} clips/s {len(blob) / 1e6:6.2f} MB  "
                        f"{format_comparison(result)}")
    return rows


def format_table(rows, peaks=None):
    """A Markdown table of `benchmark_models` rows, after a line per `gemm_peak` result of
    `peaks` (thread count -> result)."""
    table = []
    for r in rows:
        ref = r.get("pytorch_ms")
        # two decimals: a small model's int8 and fp32 files differ in the second
        table.append([r["model"], r["precision"], r["threads"], f"{r['median_ms']:.2f}",
                      f"{r['clips_per_s']:.1f}", f"{r['size_bytes'] / 1e6:.2f}",
                      "" if ref is None else f"{ref:.1f}",
                      f"{ref / r['median_ms']:.2f}x" if ref and r["threads"] == 2 else "",
                      *comparison_cells(r)])
    return "\n".join(peak_lines(peaks) + markdown_table(
        ("model", "precision", "threads", "median ms", "clips/s", "size MB", "PyTorch ms",
         "speed-up", *COMPARISON_COLUMNS), table, "ll" + "r" * 10))


def int8_op_profile(frames=16, size=56, channels=24, expansion=6, threads=2, rounds=15,
                    warmup=2, seed=0):
    """Where full int8 gains or loses against fp32 under XNNPACK on this CPU, per op class
    of an inverted residual block (MobileNetV2's, at ``frames x size x size``, `channels`
    in and out, `expansion` times wider inside) as the deployment graph emits it: the
    pointwise expansion and projection (CONV_2D), one depthwise 2D tap, a whole 3x3x3
    depthwise 3D convolution (its taps' DEPTHWISE_CONV_2D, SLICE, PAD and ADD) and the
    residual ADD. Each op class is its own model with int8 input and output (no boundary
    conversion timed), fp32 and int8 timed in interleaved rounds. Returns rows ``{"op",
    "fp32_ms", "int8_ms", "speedup"}`` (fp32 / int8 median ms)."""
    import tensorflow as tf

    from keras_efficient3d.deploy.tflite import convert_function
    from keras_efficient3d.layers import taps
    from keras_efficient3d.runtime import TFLiteRunner

    t, h, c, e = int(frames), int(size), int(channels), int(channels) * int(expansion)
    rng = np.random.default_rng(seed)

    def const(*shape, scale=0.2):
        return tf.constant(scale * rng.standard_normal(shape).astype(np.float32))

    expand_k, project_k = const(1, 1, c, e), const(1, 1, e, c, scale=0.1)
    taps_k, bias = [const(3, 3, e, 1, scale=0.3) for _ in range(3)], const(e)

    def depthwise3d(x):
        y, _ = taps.depthwise(x, t, 1, lambda i: taps_k[i], bias, (3, 3, 3), (1, 1, 1), (1, 1, 1))
        return tf.nn.relu6(y)

    cases = [
        ("pointwise expand (CONV_2D)", c, lambda x: tf.nn.relu6(tf.nn.conv2d(x, expand_k, 1, "SAME"))),
        ("depthwise 2D, one tap", e,
         lambda x: tf.nn.relu6(tf.nn.depthwise_conv2d(x, taps_k[0], [1, 1, 1, 1], "SAME"))),
        ("depthwise 3D, 3 taps", e, depthwise3d),
        ("pointwise project (CONV_2D)", e, lambda x: tf.nn.conv2d(x, project_k, 1, "SAME")),
        ("residual ADD", 2 * c, lambda x: x[..., :c] + x[..., c:]),
    ]
    steps = []
    for op, cin, fn in cases:
        concrete = tf.function(fn, input_signature=[tf.TensorSpec((t, h, h, cin), tf.float32)]
                               ).get_concrete_function()
        clips = rng.standard_normal((4, t, h, h, cin)).astype(np.float32)
        for precision in ("fp32", "int8"):
            blob = convert_function(concrete, precision, lambda clips=clips: ([x] for x in clips),
                                    int8_io=True)
            runner = TFLiteRunner(blob, threads, strict=False)
            steps.append((op, precision, runner.timing_step(seed)[0]))
    for _, _, step in steps:
        for _ in range(warmup):
            step()
    times = {(op, precision): [] for op, precision, _ in steps}
    for _ in range(rounds):
        for op, precision, step in steps:
            start = time.perf_counter()
            step()
            times[(op, precision)].append(time.perf_counter() - start)
    rows = []
    for op, _, _ in cases:
        fp32, int8 = (1000 * float(np.median(times[(op, p)])) for p in ("fp32", "int8"))
        rows.append({"op": op, "fp32_ms": fp32, "int8_ms": int8, "speedup": fp32 / int8})
    return rows


def _time_forms(names, precisions, forms, input_shape, num_classes, threads, rounds, warmup,
                runs, calibration_clips, seed, log, inspect=None):
    """TFLite files of each model, precision and deployment-graph form (``forms``: name ->
    `DeploymentGraph` keyword arguments), random weights, timed in interleaved rounds.
    Returns {(model, precision, form): per-round median ms} and {(model, precision, form):
    ``{"partitions": XNNPACK's delegate partitions, "inspect": inspect(graph, precision)}``}."""
    from keras_efficient3d.runtime import TFLiteRunner, measure

    steps, answers = {}, {}
    for name in names:
        model, clips = benchmark_model(name, input_shape, num_classes, calibration_clips, seed)
        for precision in precisions:
            for form, kwargs in forms.items():
                graph = DeploymentGraph(model, **kwargs)
                blob = convert(graph, precision, representative_data=clips,
                               num_calibration=len(clips))
                runner = TFLiteRunner(blob, threads, strict=False)
                steps[(name, precision, form)] = runner.timing_step(seed)[0]
                answers[(name, precision, form)] = {
                    "partitions": runner.partitions(),
                    "inspect": None if inspect is None else inspect(graph, precision)}
            if log:
                log(f"{name}: {precision} exported")
    times = {key: [] for key in steps}
    for _ in range(rounds):
        for key, step in steps.items():
            times[key].append(measure(step, warmup=warmup, runs=runs)["median_ms"])
    return times, answers


def packing_comparison(names, input_shape=(16, 112, 112, 3), num_classes=600, threads=2,
                       rounds=5, warmup=5, runs=20, calibration_clips=8, seed=0, log=print):
    """The deployment graph's default form (narrow stages time-packed, see
    `keras_efficient3d.deploy.packed`) against the same graph unpacked
    (``pack_channels=0``), fp32 and int8 TFLite of each model, random weights, timed in
    interleaved rounds (``runs`` invokes per turn). Returns rows ``{"model", "precision",
    "packed", "unpacked_ms", "packed_ms"}`` (medians over the rounds) with the per-round
    medians (``*_rounds``); ``packed`` says whether the default packs that model at all."""
    times, packs = _time_forms(
        names, ("fp32", "int8"), {"unpacked": {"pack_channels": 0}, "packed": {}}, input_shape,
        num_classes, threads, rounds, warmup, runs, calibration_clips, seed, log,
        inspect=lambda graph, precision: graph.packs(int8=precision == "int8"))
    rows = []
    for name in names:
        for precision in ("fp32", "int8"):
            row = {"model": name, "precision": precision,
                   "packed": packs[(name, precision, "packed")]["inspect"]}
            for form in ("unpacked", "packed"):
                row[f"{form}_rounds"] = times[(name, precision, form)]
                row[f"{form}_ms"] = float(np.median(times[(name, precision, form)]))
            rows.append(row)
    return rows


def stacking_comparison(names, input_shape=(16, 112, 112, 3), num_classes=600, threads=2,
                        rounds=5, warmup=5, runs=20, seed=0, log=print):
    """fp32 TFLite of each model with the stem's temporal taps stacked by slices and a
    concat (``stack_channels=0``) against the default 0/1 convolution (`taps.stacked_taps`),
    timed in interleaved rounds. Returns rows ``{"model", "concat_ms", "conv_ms"}`` (medians
    over the rounds) with the per-round medians (``*_rounds``) and XNNPACK's delegate
    partitions (``*_partitions``: XNNPACK takes no concat of 7 inputs, a ResNet's stem)."""
    times, info = _time_forms(names, ("fp32",), {"concat": {"stack_channels": 0}, "conv": {}},
                           input_shape, num_classes, threads, rounds, warmup, runs, 1, seed, log)
    rows = []
    for name in names:
        row = {"model": name}
        for form in ("concat", "conv"):
            row[f"{form}_rounds"] = times[(name, "fp32", form)]
            row[f"{form}_ms"] = float(np.median(row[f"{form}_rounds"]))
            row[f"{form}_partitions"] = info[(name, "fp32", form)]["partitions"]
        rows.append(row)
    return rows


def format_stacking(rows):
    """A Markdown table of `stacking_comparison` rows."""
    def cell(row, form):
        r, parts = row[f"{form}_rounds"], row[f"{form}_partitions"]
        note = f" ({parts} XNNPACK partitions)" if parts != 1 else ""
        return f"{row[f'{form}_ms']:.2f} ({min(r):.2f}-{max(r):.2f}){note}"

    return "\n".join(markdown_table(
        ("model", "fp32 ms, slices + concat", "fp32 ms, 0/1 convolution", "speed-up"),
        [[r["model"], cell(r, "concat"), cell(r, "conv"), f"{r['concat_ms'] / r['conv_ms']:.2f}x"]
         for r in rows], "lrrr"))


def format_packing(rows):
    """A Markdown table of `packing_comparison` rows, int8 / fp32 per form."""
    by = {(r["model"], r["precision"]): r for r in rows}
    lines = []
    for (name, precision), r in by.items():
        if precision != "int8":
            continue
        f = by[(name, "fp32")]

        def cell(row):
            ms = row["unpacked_ms"], row["packed_ms"]
            lo = [min(row[f"{k}_rounds"]) for k in ("unpacked", "packed")]
            hi = [max(row[f"{k}_rounds"]) for k in ("unpacked", "packed")]
            note = "" if row["packed"] else " (not packed)"
            return (f"{ms[0]:.2f} ({lo[0]:.2f}-{hi[0]:.2f}) -> {ms[1]:.2f} "
                    f"({lo[1]:.2f}-{hi[1]:.2f}){note}")

        lines.append([name, cell(f), cell(r),
                      f"{f['unpacked_ms'] / r['unpacked_ms']:.2f}x -> "
                      f"{f['packed_ms'] / r['packed_ms']:.2f}x"])
    return "\n".join(markdown_table(
        ("model", "fp32 ms, unpacked -> default", "int8 ms, unpacked -> default",
         "int8 / fp32 speed-up"), lines, "lrrr"))


def format_op_profile(rows):
    """A Markdown table of `int8_op_profile` rows."""
    return "\n".join(markdown_table(
        ("op", "fp32 ms", "int8 ms", "int8 speed-up"),
        [[r["op"], f"{r['fp32_ms']:.2f}", f"{r['int8_ms']:.2f}", f"{r['speedup']:.2f}x"] for r in rows],
        "lrrr"))
