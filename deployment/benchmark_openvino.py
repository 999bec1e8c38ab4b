r"""Times OpenVINO IR (CPU, batch 1): fp32, fp16-compressed weights and int8 (NNCF PTQ) per
model and thread count; prints a Markdown table and writes JSON (and the table beside it).

    python deployment/benchmark_openvino.py --models=mobilenetv2_1.0x,shufflenetv2_1.0x \
        --precisions=fp32,int8 --threads=2 --json_out=openvino_timing.json
    python deployment/benchmark_openvino.py --model_file=m_int8.xml --threads=1,2,4
    python deployment/benchmark_openvino.py --stem_folds=1,2,4 --rounds=5   # each stem fold
    python deployment/benchmark_openvino.py --model_file=m_int8.xml --openvino_device=GPU


Registry models get random weights with BatchNorm statistics set on random clips, and are
exported with `keras_efficient3d.deploy.openvino_export.export_openvino` (int8 calibrated on
random clips: timing does not depend on the weights). The precisions of one model and
thread count are timed in turns (fp32, int8, fp32, int8, ... for `--rounds` rounds), so
that a busy machine slows them alike, and each reports the median (and min, max, p90) of
all its rounds' runs (a row's ``runs``: ``rounds`` of ``runs_per_round``, each round after
``warmup`` untimed runs);
the ``int8 speed-up`` column is fp32 / int8 of the same round-robin. ``--peers_json``
(rows of ``deployment/benchmark_pytorch.py`` measured on this machine: the original model in
PyTorch, ONNX Runtime and OpenVINO) adds the best peer and our speed-up against it at 2
threads. Every row shows its achieved multiply-accumulates per second beside this machine's
fp32 GEMM peak at the same thread count, measured first (``--nogemm_peak`` skips it).
``--stem_folds`` exports every precision once per stem fold (`onnx_native.native_onnx`'s
``stem_fold``: the stem reads that many adjacent columns as channels) and times them all in
the same turns; without it each export takes its default (int8 on AMX CPUs: the fastest
fold, timed at export). ``--openvino_device`` times on another device than the CPU (an
Intel GPU or NPU, or AUTO; exports and calibration stay on the CPU); the peers and the GEMM
peak are the CPU's, so they go with the CPU only, and each row records the device that ran
it.
"""

import os
import sys
import tempfile

from absl import flags

from keras_efficient3d import cli

DEFAULT_MODELS = ["mobilenetv2_1.0x", "shufflenetv2_1.0x", "mobilenet_1.0x", "shufflenet_1.0x_g3",
                  "squeezenet_1.1", "mobilenetv2_0.2x"]
PRECISIONS = ("fp32", "fp16", "int8", "int8-frames")
# --model_file's rows are another table than --models': its own default file leaves
# openvino_timing.json as it was.
MODEL_FILE_JSON = "openvino_file_timing.json"



def export_model(name, precision, folder, input_shape=(16, 112, 112, 3), num_classes=600,
                 calibration_clips=8, seed=0, stem_fold="auto"):
    """Builds registry model `name` (random weights, BatchNorm statistics of random clips) and
    writes it as OpenVINO IR of `precision` (and `stem_fold`) in `folder`; returns the .xml
    path."""
    from keras_efficient3d.deploy.benchmark import benchmark_model
    from keras_efficient3d.deploy.openvino_export import export_openvino

    model, clips = benchmark_model(name, input_shape, num_classes, calibration_clips, seed)
    path = os.path.join(folder, f"{name}_{precision}{'' if stem_fold == 'auto' else f'_f{stem_fold}'}.xml")
    int8, frames = precision.startswith("int8"), precision == "int8-frames"
    # int8-frames: uint8 frames in, normalised as the pipeline does by default
    export_openvino(model, path, compress_to_fp16=precision == "fp16",
                    quantize="ptq" if int8 else None, calibration=clips if int8 else None,
                    num_calibration=len(clips), frames_input=frames,
                    normalization="original" if frames else None, verify=False, stem_fold=stem_fold)
    return path


def time_files(files, threads=(2,), warmup=5, runs=20, rounds=3, log=print, device="CPU"):
    """Times IR files (``{label: path}``) on `device` in turns, per thread count: returns rows
    with model file, label, threads, device (the devices that ran it) and
    `keras_efficient3d.runtime.benchmark`'s figures over every run of every round
    (median_ms too; ``runs``: all of them, ``rounds`` of ``runs_per_round``; ``warmup``:
    per round), and ``round_medians_ms``."""
    from keras_efficient3d.runtime import OpenVINORunner, benchmark, time_statistics

    rows = []
    for n in threads:
        runners = {label: OpenVINORunner(path, threads=n, device=device) for label, path in files.items()}
        results = {label: [] for label in runners}
        for _ in range(rounds):
            for label, runner in runners.items():
                results[label].append(benchmark(runner, warmup, runs, keep_times=True))
        for label, rounds_ in results.items():
            # All the figures are of the pooled runs of every round (each round has as many),
            # so that they describe one set: min <= median <= p90 <= max. A figure of one
            # round beside a median of others could contradict it.
            times = [t for r in rounds_ for t in r.pop("times_ms")]
            row = dict(rounds_[0])
            row.update(time_statistics(times), runs=len(times), rounds=len(rounds_),
                       runs_per_round=rounds_[0]["runs"],
                       round_medians_ms=[r["median_ms"] for r in rounds_], label=label,
                       path=files[label], threads=int(n),
                       device=",".join(runners[label].execution_devices),
                       input_shape=list(runners[label].input_spec.shape),
                       size_bytes=os.path.getsize(files[label])
                       + os.path.getsize(os.path.splitext(files[label])[0] + ".bin"))
            row["clips_per_s"] = row["batch"] * 1000.0 / row["median_ms"]
            rows.append(row)
            if log:
                log(f"{label:32s} threads={n} {row['median_ms']:8.2f} ms {row['clips_per_s']:7.1f} clips/s")
    return rows


def benchmark_models(names, precisions=("fp32", "int8"), threads=(2,), input_shape=(16, 112, 112, 3),
                     num_classes=600, warmup=5, runs=20, rounds=3, peers=None, peaks=None,
                     peer_threads=2, folder=None, stem_folds=None, log=print, device="CPU"):
    """Exports each registry model in each precision (and each of `stem_folds`, else the
    export's default) and times them (`time_files`); rows get ``model``, ``precision``,
    ``stem_fold`` (None: the default), ``macs``, ``int8_speedup`` (fp32 / int8 of the same
    thread count, and fold) and `keras_efficient3d.deploy.benchmark.compare`'s columns: the peers of
    `peers` (see `load_peers`, measured at `peer_threads`) and the share of the `gemm_peak`
    result of `peaks` (thread count -> result) at the row's threads. `device`: where they
    are timed (`time_files`)."""
    from keras_efficient3d.deploy.benchmark import compare, model_macs

    rows = []
    with tempfile.TemporaryDirectory(prefix="benchmark_openvino-") as tmp:
        folder = folder or tmp
        for name in names:
            macs = model_macs(name, input_shape, num_classes)
            # label -> (precision, stem fold; None: the export's default)
            settings = {f"{name} {p}" + (f" f{fold}" if fold else ""): (p, fold)
                        for fold in (stem_folds or [None]) for p in precisions}
            files = {label: export_model(name, p, folder, input_shape, num_classes,
                                         stem_fold=fold or "auto")
                     for label, (p, fold) in settings.items()}
            timed = time_files(files, threads, warmup, runs, rounds, log, device)
            for row in timed:
                precision, fold = settings[row["label"]]
                row.update(model=name, precision=precision, macs=macs, stem_fold=fold)
                row.update(compare(name, row["median_ms"],
                                   peers if row["threads"] == peer_threads else None, macs,
                                   (peaks or {}).get(row["threads"])))
            _add_speedups(timed)
            rows.extend(timed)
    return rows


def _add_speedups(rows):
    def key(r):
        return r.get("model"), r["threads"], r.get("stem_fold")

    fp32 = {key(r): r["median_ms"] for r in rows if r.get("precision") == "fp32"}
    for row in rows:
        base = fp32.get(key(row))
        row["int8_speedup"] = (base / row["median_ms"]
                               if base and str(row.get("precision")).startswith("int8") else None)


def format_table(rows, peaks=None):
    """A Markdown table of `benchmark_models` or `time_files` rows, after a line per
    `gemm_peak` result of `peaks` (thread count -> result) and one saying how many runs each
    row's figures are of."""
    from keras_efficient3d.deploy.benchmark import (
        COMPARISON_COLUMNS,
        comparison_cells,
        markdown_table,
        peak_lines,
    )

    table = [[r.get("model") or r["label"],
              r.get("precision", "") + (f" (stem fold {r['stem_fold']})" if r.get("stem_fold") else ""),
              r["threads"], f"{r['median_ms']:.2f}",
              f"{r['clips_per_s']:.1f}", f"{r['size_bytes'] / 1e6:.2f}",
              f"{r['int8_speedup']:.2f}x" if r.get("int8_speedup") else "",
              f"{r['pytorch_ms']:.1f}" if r.get("pytorch_ms") else "", *comparison_cells(r)]
             for r in rows]
    return "\n".join(peak_lines(peaks) + _runs_lines(rows) + _device_lines(rows) + markdown_table(
        ("model", "precision", "threads", "median ms", "clips/s", "size MB", "int8 speed-up",
         "PyTorch ms", *COMPARISON_COLUMNS), table, "ll" + "r" * 10))


def _device_lines(rows):
    devices = sorted({r["device"] for r in rows if r.get("device")} - {"CPU"})
    return [f"Timed on OpenVINO's {', '.join(devices)}, not the CPU.", ""] if devices else []


def _runs_lines(rows):
    # The table shows medians only: what they are of, in one line (one run of the script
    # times every row alike).
    counts = {(r["runs"], r["rounds"], r["runs_per_round"], r["warmup"]) for r in rows
              if "runs_per_round" in r}
    if len(counts) != 1:
        return []
    runs, rounds, per_round, warmup = counts.pop()
    said = f"{rounds} round{'' if rounds == 1 else 's'} of {per_round}"
    return [f"Each row: the median of {runs} runs ({said}, in turns with the other rows, each "
            f"after {warmup} untimed).", ""]


def _stem_folds(values):
    if not values:
        return None
    try:
        folds = [int(v) for v in values]
    except ValueError:
        raise cli.UsageError(f"--stem_folds={','.join(values)}: expected whole numbers, e.g. 1,2,4") from None
    if min(folds) < 1:
        raise cli.UsageError(f"--stem_folds={','.join(values)}: every fold must be >= 1")
    return folds


def _progress(line):
    # on stderr, as every other timing script's: stdout is the table (`> table.md`)
    print(line, file=sys.stderr, flush=True)


def _check_stem_folds(models, folds, input_shape, num_classes):
    """Refuses, before anything is exported, a fold a model's stem does not take, in the
    flag's terms (the export's error named its argument, `stem_fold`, and the Keras model)."""
    from keras_efficient3d.deploy.onnx_native import stem_fold_factors
    from keras_efficient3d.registry import create_model

    for name in models:
        takes = (1, *stem_fold_factors(create_model(name, input_shape=input_shape,
                                                    num_classes=num_classes)))
        wrong = [fold for fold in folds if fold not in takes]
        if wrong:
            raise cli.UsageError(f"--stem_folds={','.join(map(str, folds))}: {name}'s stem at "
                                 f"{input_shape[2]} pixels takes {', '.join(map(str, takes))}, "
                                 f"not {', '.join(map(str, wrong))}")


def define_flags(flag_values=flags.FLAGS):
    fv = {"flag_values": flag_values}
    cli.define("models", DEFAULT_MODELS, **fv)
    cli.define("model_file", None, "An OpenVINO .xml file to time instead of --models.", **fv)
    flags.DEFINE_list("precisions", ["fp32", "int8"], "OpenVINO precisions, comma-separated "
                      f"({', '.join(PRECISIONS)}; fp16: fp16-compressed weights; int8-frames: "
                      "int8 that takes uint8 frames, export.py --frames_input).", **fv)
    flags.register_validator("precisions", cli.each_of(PRECISIONS), **fv)
    cli.define("threads", [2], multiple=True, **fv)
    cli.define("frames", 16, **fv)
    cli.define("size", 112, **fv)
    cli.define("num_classes", 600, **fv)
    cli.define("runs", 20, "(per setting and round)", **fv)
    cli.define("warmup", 5, **fv)
    cli.define("rounds", 3, "(over the precisions: A, B, A, B, ...)", **fv)
    cli.define("json_out", "openvino_timing.json", "The Markdown table goes beside it (.md). "
               f"Without it, --model_file writes {MODEL_FILE_JSON}.", **fv)
    cli.define("peers_json", None, "(compared at 2 threads)", **fv)
    cli.define("gemm_peak", True, **fv)
    flags.DEFINE_list("stem_folds", None, "Export and time each precision with each of these "
                      "stem folds (e.g. 1,2,4), instead of the export's default.", **fv)
    cli.define("openvino_device", "CPU", "(where the files are timed)", **fv)
    cli.define_alias("output", "json_out", **fv)
    cli.define_alias("pytorch_json", "peers_json", **fv)


def main(argv, flag_values=flags.FLAGS):
    del argv
    from keras_efficient3d.deploy.benchmark import peers_and_peaks, write_report

    f = flag_values
    if f.model_file:
        # One refusal naming every flag given; --nogemm_peak agrees with what happens anyway.
        cli.refuse_unused(f, [n for n in ("frames", "size", "num_classes", "peers_json",
                                          "gemm_peak", "models", "precisions", "stem_folds")
                              if n != "gemm_peak" or f[n].value],
                          "--model_file", "nothing is exported, the file is timed as it is (its "
                          "clip, classes and precision are the file's), and the peers and the "
                          "share of the GEMM peak need the registry model (--models)")
    from keras_efficient3d import runtime

    if runtime.missing_packages("openvino"):
        raise cli.UsageError(f"OpenVINO is not installed: {runtime.OPENVINO_INSTALL}")
    if not f.model_file and any(p.startswith("int8") for p in f.precisions) and \
            runtime.missing_packages("nncf"):  # said before the exports, not after
        raise cli.UsageError("--precisions int8 quantises with NNCF, which is not installed: "
                             f"{runtime.install_command('nncf')}, or --precisions=fp32")
    from keras_efficient3d.runtime import check_openvino_device, normalize_openvino_device, openvino_uses_cpu

    device = normalize_openvino_device(f.openvino_device)
    if device != "CPU":  # before minutes of exports (OpenVINO always has its CPU)
        try:
            check_openvino_device(device)
        except ValueError as err:
            raise cli.UsageError(f"--openvino_device={f.openvino_device}: {err}") from None
    on_cpu = device == "CPU"
    if len(f.threads) > 1 and not openvino_uses_cpu(device):
        raise cli.UsageError(f"--threads={','.join(map(str, f.threads))}: {device} takes no thread count "
                             "(the CPU's setting): every row would time the same thing")
    if not on_cpu:
        # --nogemm_peak agrees with what happens anyway
        cli.refuse_unused(f, [n for n in ("peers_json", "gemm_peak") if f[n].value],
                          f"--openvino_device={f.openvino_device}",
                          "the peers and the GEMM peak are timed on the CPU")
    peaks = None
    json_out = f.json_out
    if f.model_file:
        if not f["json_out"].present:
            json_out = MODEL_FILE_JSON
        if not f.model_file.lower().endswith(".xml"):
            raise cli.UsageError(f"--model_file={f.model_file}: an OpenVINO IR .xml file is needed")
        from keras_efficient3d.deploy.openvino_export import ir_label

        rows = time_files({os.path.basename(f.model_file): f.model_file}, f.threads, f.warmup,
                          f.runs, f.rounds, log=_progress, device=f.openvino_device)
        for row in rows:
            row["precision"] = ir_label(f.model_file)
    else:
        folds = _stem_folds(f.stem_folds)
        if folds:
            _check_stem_folds(f.models, folds, (f.frames, f.size, f.size, 3), f.num_classes)
        peers, peaks = peers_and_peaks(f.models, f.peers_json, (f.frames, f.size, f.size),
                                       f.threads, f.gemm_peak and on_cpu)
        rows = benchmark_models(f.models, f.precisions, f.threads, (f.frames, f.size, f.size, 3),
                                f.num_classes, f.warmup, f.runs, f.rounds, peers, peaks,
                                stem_folds=folds, log=_progress, device=f.openvino_device)
    write_report(rows, format_table(rows, peaks), json_out)


if __name__ == "__main__":
    cli.run(main, define_flags)
