"""Issue 14's target table: our deployments of each model against what a user of the
original model runs instead (its PyTorch model, and its plain ONNX export under ONNX Runtime
and OpenVINO), timed in interleaved rounds in one process, with the speed-up targets.

Our runtimes (`OURS`) are exported once per model into a work folder and reused: TFLite
fp32 and int8 (the 2D-tap graph of `keras_efficient3d.deploy.tflite`, XNNPACK), the native
ONNX export under ONNX Runtime, and OpenVINO IR of it, fp32 and int8 (NNCF PTQ), each int8
also as the file that takes uint8 frames (the -frames runtimes); the fp32 IR
runs twice, in fp32 and at the CPU's default inference precision (``openvino-auto``: bf16 on
CPUs with bf16 units, 1.5-2.5x faster there), and so does the original's ONNX: each
precision is compared with its like, and the issue's "OpenVINO fp32" is fp32. Weights are
random with BatchNorm statistics of random clips, and int8 calibrates on random clips:
timing does not depend on the weights. Each round times every runtime of a model in turn,
so that a loaded machine slows them alike; a runtime's figure is the median of its rounds'
medians, with the rounds' min and max, and a speed-up is that of the medians, with the least
and greatest of the rounds' own speed-ups (`target_row`).

    steps = our_steps("mobilenetv2_1.0x", "work", threads=2)
    steps.update(peer_steps)                     # "original-pytorch": step, ...
    times = time_interleaved(steps, rounds=3)    # runtime -> [median ms per round]
    row = target_row("mobilenetv2_1.0x", times, macs, peak)
"""

import contextlib
import io
import os

import numpy as np

from keras_efficient3d import runtime
from keras_efficient3d.runtime import time_interleaved

__all__ = ["OURS", "PEERS", "TARGETS", "export_ours", "format_targets",
           "openvino_default_precision", "our_steps", "run_targets", "target_row",
           "time_interleaved"]

# Our deployments: runtime label -> (file suffix, precision group); "auto" is the fp32 IR
# at the CPU's default inference precision; the "-int8-frames" ones the int8 IR and TFLite
# file that take the decoder's uint8 frames and normalise them themselves
# (`openvino_export.export_openvino`'s frames_input, `deploy.tflite.convert`'s frames; the
# others take normalised float clips, whose normalisation is not timed).
OURS = {"tflite-fp32": ("fp32.tflite", "fp32"), "tflite-int8": ("int8.tflite", "int8"),
        "tflite-int8-frames": ("int8_frames.tflite", "int8"),
        "onnxruntime-fp32": ("native.onnx", "fp32"), "openvino-fp32": ("fp32.xml", "fp32"),
        "openvino-auto": ("fp32.xml", "auto"), "openvino-int8": ("int8.xml", "int8"),
        "openvino-int8-frames": ("int8_frames.xml", "int8")}
# The peers: the original model as a user runs it (keras_efficient3d.deploy.benchmark.PEER_FORMS).
PEERS = ("original-pytorch", "original-onnxruntime", "original-openvino", "original-openvino-auto")

# Issue 14's targets: (name, which of ours, which peer, at least this speed-up).
TARGETS = (
    ("best x86 int8 vs original OpenVINO fp32",
     ("tflite-int8", "tflite-int8-frames", "openvino-int8", "openvino-int8-frames"),
     "original-openvino", 2.0),
    ("best fp32 vs original OpenVINO fp32", ("tflite-fp32", "onnxruntime-fp32", "openvino-fp32"),
     "original-openvino", 1.0),
    ("TFLite fp32 vs original PyTorch", ("tflite-fp32",), "original-pytorch", 2.0),
    ("TFLite int8 vs original PyTorch", ("tflite-int8", "tflite-int8-frames"), "original-pytorch", 4.0),
    # int8 that is actually faster than its own fp32, on each runtime (ours against ours).
    ("TFLite int8 vs TFLite fp32", ("tflite-int8", "tflite-int8-frames"), "tflite-fp32", 1.5),
    ("OpenVINO int8 vs OpenVINO fp32", ("openvino-int8", "openvino-int8-frames"), "openvino-fp32", 1.5),
    # What a user who passes OpenVINO nothing gets, against ours given nothing either.
    ("OpenVINO at the CPU's default precision vs the original's", ("openvino-auto",),
     "original-openvino-auto", 1.0),
)


def _file(folder, name, input_shape, num_classes, runtime):
    clip = "x".join(str(d) for d in input_shape[:3])
    return os.path.join(folder, f"{name}_{clip}_{num_classes}c_{OURS[runtime][0]}")


# The packages (import name, pip extra) each of our runtimes and the peers need, exports
# included: an OpenVINO IR is converted from ONNX, its int8 quantised by NNCF; the extra is
# the runtime's own where it brings the package too (the openvino extra installs onnx).
_NEEDS = {"tflite": (("ai_edge_litert", "litert"),),
          "onnxruntime": (("onnx", "onnx"), ("onnxruntime", "onnx")),
          "openvino": (("onnx", "openvino"), ("openvino", "openvino")),
          "openvino-int8": (("onnx", "openvino"), ("openvino", "openvino"), ("nncf", "openvino")),
          "original-pytorch": (("torch", "torch"),),
          "original-onnxruntime": (("torch", "torch"), ("onnxruntime", "onnx")),
          "original-openvino": (("torch", "torch"), ("openvino", "openvino"))}


def missing_packages(runtimes=(), peers=()):
    """``(package, runtime, extra)`` of each package that `runtimes` (of `OURS`) or `peers`
    (of `PEERS`, timed here) need and this environment lacks, for one line before any work."""
    from keras_efficient3d import runtime

    missing = []
    for label in (*runtimes, *peers):
        if label.startswith("original-"):  # original-openvino-auto runs original-openvino's
            key = "original-openvino" if label.startswith("original-openvino") else label
        else:
            key = "openvino-int8" if label.startswith("openvino-int8") else label.split("-")[0]
        extras = dict(_NEEDS[key])
        for package in runtime.missing_packages(*extras):
            if package not in [m[0] for m in missing]:
                missing.append((package, label, extras[package]))
    return missing


def export_ours(name, folder, input_shape=(16, 112, 112, 3), num_classes=600, runtimes=OURS,
                calibration_clips=8, seed=0, log=print):
    """Writes registry model `name` for each of `runtimes` (`OURS`) in `folder`, reusing the
    files already there (their names carry the clip and classes); returns runtime -> path."""
    paths = {rt: _file(folder, name, input_shape, num_classes, rt) for rt in runtimes}
    # one export per file, under the first runtime that reads it (openvino-auto runs
    # openvino-fp32's)
    missing = {}
    for rt, path in paths.items():
        if not os.path.isfile(path):
            missing.setdefault(path, rt)
    missing = list(missing.values())
    if not missing:
        return paths
    from keras_efficient3d.artifacts import atomic_write
    from keras_efficient3d.data.normalization import Normalization
    from keras_efficient3d.deploy.benchmark import benchmark_model
    from keras_efficient3d.deploy.graph import DeploymentGraph
    from keras_efficient3d.deploy.tflite import convert
    from keras_efficient3d.runtime import quiet_stderr

    os.makedirs(folder, exist_ok=True)
    model, clips = benchmark_model(name, input_shape, num_classes, calibration_clips, seed)
    for rt in missing:
        if log:
            log(f"{name}: exporting {rt} -> {paths[rt]}")
        # A file of frames applies the pipeline's default normalisation.
        frames = Normalization.preset("original") if rt.endswith("-frames") else None
        # The converters' notices (stderr) and NNCF's progress bars (stdout).
        with quiet_stderr(), contextlib.redirect_stdout(io.StringIO()):
            if rt.startswith("tflite"):
                atomic_write(paths[rt], convert(DeploymentGraph(model), OURS[rt][1],
                                                representative_data=clips,
                                                num_calibration=len(clips), frames=frames))
            elif rt == "onnxruntime-fp32":
                from keras_efficient3d.deploy.onnx_export import export_onnx

                export_onnx(model, paths[rt], batch_size=1, form="native", verify=False)
            else:
                from keras_efficient3d.deploy.openvino_export import export_openvino

                int8 = OURS[rt][1] == "int8"
                export_openvino(model, paths[rt], quantize="ptq" if int8 else None,
                                calibration=clips if int8 else None, num_calibration=len(clips),
                                verify=False,
                                frames_input=frames is not None, normalization=frames)
    return paths


def our_steps(name, folder, input_shape=(16, 112, 112, 3), num_classes=600, threads=2,
              runtimes=OURS, log=print):
    """runtime -> a call of our export of `name` on one fixed clip (`export_ours`, then
    `keras_efficient3d.runtime.load_runner` at `threads`)."""
    from keras_efficient3d.runtime import ONNXRunner, OpenVINORunner, load_runner

    paths = export_ours(name, folder, input_shape, num_classes, runtimes, log=log)

    def runner(rt):
        if OURS[rt][1] == "auto":
            return OpenVINORunner(paths[rt], threads, inference_precision=None)
        if rt == "onnxruntime-fp32":  # timed in turns with others: no spinning workers
            return ONNXRunner(paths[rt], threads, spinning=False)
        return load_runner(paths[rt], threads)

    return {rt: runner(rt).timing_step(0)[0] for rt in runtimes}


def openvino_default_precision(device="CPU"):
    """The inference precision OpenVINO picks on this machine's `device` when given none
    ('bf16', 'f32', ...), or None without OpenVINO."""
    try:
        ov = runtime.openvino_module()
    except ImportError:
        return None
    return ov.Core().get_property(device, "INFERENCE_PRECISION_HINT").to_string()


def target_row(name, times, macs=None, peak=None):
    """One model's row: per runtime of `times` (label -> round medians) its median, min and
    max ms, GMAC/s and share of the `gemm_peak` result `peak`; per target of `TARGETS`
    whose peer and one of ours were timed: the best of ours, the ratio peer ms / ours ms
    (of their medians), the target and ``passed``, and ``round_ratios``, the ratio within
    each round (None for a peer timed elsewhere).

    Why the rounds' ratios: within a round the two are timed seconds apart, so a VM that
    changes speed between rounds moves both alike; the spread of these ratios is the
    spread of the speed-up itself, which the medians' ratio alone does not show."""
    runtimes = {}
    for label, values in times.items():
        entry = {"median_ms": float(np.median(values)), "min_ms": float(min(values)),
                 "max_ms": float(max(values)), "rounds_ms": [float(v) for v in values]}
        if macs:
            entry["gmacs_per_s"] = macs / entry["median_ms"] / 1e6
            if peak:
                entry["of_peak"] = entry["gmacs_per_s"] / peak["gmacs_per_s"]
        runtimes[label] = entry
    targets = []
    for target, ours, peer, needed in TARGETS:
        timed = [rt for rt in ours if rt in runtimes]
        if peer not in runtimes or not timed:
            continue
        best = min(timed, key=lambda rt: runtimes[rt]["median_ms"])
        ratio = runtimes[peer]["median_ms"] / runtimes[best]["median_ms"]
        peer_rounds, best_rounds = times[peer], times[best]
        paired = None
        if len(peer_rounds) == len(best_rounds) > 1:
            paired = [float(p / b) for p, b in zip(peer_rounds, best_rounds)]
        targets.append({"target": target, "ours": best, "peer": peer, "ratio": ratio,
                        "needed": needed, "passed": ratio >= needed, "round_ratios": paired})
    return {"model": name, "macs": macs, "runtimes": runtimes, "targets": targets}


def run_targets(names, folder, input_shape=(16, 112, 112, 3), num_classes=600, threads=2,
                rounds=3, warmup=3, runs=10, runtimes=OURS, peer_steps=None, peer_ms=None,
                peak=None, log=print):
    """`target_row` per registry model of `names`, our `runtimes` (exported into `folder`)
    and, with `peer_steps` (a function of the model name returning label -> step, labels
    of `PEERS`), the peers, all timed in the same interleaved rounds. `peer_ms` (model
    name -> {label of `PEERS`: ms}, e.g. from another process's
    `keras_efficient3d.deploy.benchmark.load_peers`) gives peers measured elsewhere."""
    from keras_efficient3d.deploy.benchmark import model_macs

    rows = []
    for name in names:
        # The peers first: a wrong checkout of the original fails before our exports.
        peers = peer_steps(name) if peer_steps else {}
        steps = our_steps(name, folder, input_shape, num_classes, threads, runtimes, log)
        steps.update(peers)
        times = time_interleaved(steps, rounds, warmup, runs)
        times.update({label: [ms] for label, ms in (peer_ms or {}).get(name, {}).items()})
        row = target_row(name, times,
                         model_macs(name, input_shape, num_classes), peak)
        row.update(threads=threads, input=list(input_shape), num_classes=num_classes,
                   rounds=rounds, warmup=warmup, runs=runs)
        if any(label.endswith("openvino-auto") for label in times):
            row["openvino_default_precision"] = openvino_default_precision()
        rows.append(row)
        if log and len(names) > 1:  # one model's table is the report itself: printed once
            log(format_targets([row]))
    return rows


def _spread(target):
    ratios = target.get("round_ratios")
    return f"{min(ratios):.2f}-{max(ratios):.2f}x" if ratios else "-"


def format_targets(rows, peak=None):
    """Markdown: the `gemm_peak` line, a table of each model's runtimes (median ms,
    min-max over rounds, GMAC/s, share of the peak) and a table of the targets (the speed-up
    of the medians, the least and greatest of the rounds' own)."""
    from keras_efficient3d.deploy.benchmark import comparison_cells, markdown_table, peak_lines

    lines = peak_lines(peak)
    auto = sorted({row["openvino_default_precision"] for row in rows
                   if row.get("openvino_default_precision")})
    if auto:
        lines += [f"OpenVINO's default inference precision on this CPU (the -auto rows): "
                  f"{', '.join(auto)}", ""]
    lines += markdown_table(
        ("model", "runtime", "median ms", "min-max ms", "GMAC/s", "% of peak"),
        [[row["model"], label, f"{r['median_ms']:.2f}", f"{r['min_ms']:.2f}-{r['max_ms']:.2f}",
          *comparison_cells(r)[2:]]
         for row in rows for label, r in row["runtimes"].items()], "llrrrr")
    if any(row["targets"] for row in rows):
        lines += [""] + markdown_table(
            ("model", "target", "ours", "peer", "speed-up", "per round", "needed", ""),
            [[row["model"], t["target"], t["ours"], t["peer"], f"{t['ratio']:.2f}x", _spread(t),
              f"{t['needed']:g}x", "PASS" if t["passed"] else "MISS"]
             for row in rows for t in row["targets"]], "llllrrrl")
    return "\n".join(lines)
