r"""Times an ONNX export with ONNX Runtime: median latency and clips/s at batch 1 and 8.

    python deployment/benchmark_onnx.py --model_file=exports/mobilenetv2.onnx --batch_sizes=1,8 \
        --warmup=10 --runs=50 --json_out=exports/mobilenetv2_ort.json

Execution providers: TensorRT, then CUDA, then CPU, whichever this onnxruntime build has
(onnxruntime-gpu for the first two), or the list given with --providers. Every batch gets
`--warmup` untimed runs, then `--runs` timed ones; clips/s = batch / median latency,
the paper's measure. A fixed-batch export is timed at its own batch (another --batch_sizes
is refused). A file with a
``<file>.json`` sidecar (what export.py writes beside it) must agree with it, and with
``--model``, on the clip, the classes and the layout, or nothing is timed.

With ``--model`` (the registry configuration the file was exported from) each batch also
shows the achieved multiply-accumulates per second beside this machine's fp32 GEMM peak at
``--threads``, and with ``--peers_json`` (``benchmark_pytorch.py`` rows of this machine) the
original model's timings in PyTorch, ONNX Runtime and OpenVINO and our speed-up against
the best of them:

    python deployment/benchmark_onnx.py --model_file=exports/mobilenetv2.onnx \
        --model=mobilenetv2_1.0x --threads=2 --batch_sizes=1 --peers_json=peers.json
"""

import sys

import numpy as np
from absl import flags

from keras_efficient3d import cli
from keras_efficient3d.runtime import (
    choose_providers,  # noqa: F401  (called from here by users and tests)
    measure,
    onnx_session,
)


def benchmark_onnx(onnx_path, batch_sizes=None, warmup=10, iterations=50, providers=None,
                   threads=0, model=None):
    """Times `onnx_path` at `batch_sizes` (None: 1 and 8, or the batch of a fixed-batch
    file, the only one such a file can be asked for); returns {"providers": [...],
    "results": [{batch_size, median_ms, min_ms, spread_ms, clips_per_s, iterations}]}. Its
    sidecar, where it has one, must agree with it and with `model` (`check_sidecar`) before
    anything is timed."""
    if warmup < 0 or iterations < 1:
        raise ValueError(f"Need warmup >= 0 and iterations >= 1. Received: warmup={warmup}, "
                         f"iterations={iterations}")
    if batch_sizes is not None and (not batch_sizes or any(int(b) < 1 for b in batch_sizes)):
        raise ValueError(f"Batch sizes must be positive. Received: batch_sizes={batch_sizes}")
    session = onnx_session(str(onnx_path), threads, providers or None)
    spec = session.get_inputs()[0]
    fixed = spec.shape[0] if isinstance(spec.shape[0], int) else None
    if fixed is not None and batch_sizes is not None and {int(b) for b in batch_sizes} != {fixed}:
        raise ValueError(f"{onnx_path} takes a fixed batch of {fixed}: --batch_sizes="
                         f"{','.join(str(b) for b in batch_sizes)} cannot be timed (leave "
                         f"--batch_sizes out, or give {fixed}; export.py without --batch_size "
                         "writes a dynamic batch)")
    batch_sizes = (fixed,) if fixed is not None else batch_sizes or (1, 8)
    clip_shape = tuple(int(d) for d in spec.shape[1:])
    check_sidecar(onnx_path, spec.shape, session.get_outputs()[0].shape[-1], model)
    rng = np.random.default_rng(0)
    results = []
    for batch in batch_sizes:
        clips = rng.standard_normal((int(batch),) + clip_shape).astype(np.float32)
        timing = measure(lambda clips=clips: session.run(None, {spec.name: clips}), warmup, iterations, int(batch))
        results.append({"batch_size": int(batch), "median_ms": timing["median_ms"],
                        "min_ms": timing["min_ms"], "spread_ms": timing["spread_ms"],
                        "clips_per_s": timing["clips_per_s"], "iterations": iterations})
    return {"onnx": str(onnx_path), "providers": session.get_providers(),
            "clip": clip_dims(spec.shape), "num_classes": int(session.get_outputs()[0].shape[-1]),
            "results": results}


def check_sidecar(onnx_path, input_shape, num_classes, model=None):
    """Refuses a file whose ``<file>.json`` sidecar (`artifacts.read_metadata`, as predict
    and the runtime read it) records another clip, class count or layout than the file
    holds, or another model than `model` (``--model``, whose MACs and peers would then be
    another model's). A file without a sidecar is timed as it is.

    Raises:
        ModelFileError: naming the sidecar, what it records and what does not agree.
    """
    from keras_efficient3d import artifacts, registry

    metadata = artifacts.read_metadata(onnx_path)
    if metadata is None:
        if model is not None:
            print(f"note: {onnx_path} has no sidecar to check --model={model} against: its "
                  "GMAC/s and peers are that model's, whatever the file holds", file=sys.stderr)
        return
    where = artifacts.sidecar_path(onnx_path)
    dims = tuple(int(d) for d in input_shape[1:])
    clip = clip_dims(input_shape)
    channels_last = len(dims) == 4 and dims[3] <= 4
    if metadata.layout and metadata.layout.upper() == "NDHWC" and not channels_last:
        raise artifacts.ModelFileError(f"{where} records NDHWC clips but {onnx_path} takes "
                                       f"{'x'.join(map(str, dims))} (channels first)")
    recorded = (metadata.frames, *(metadata.height_width or (None, None)))
    if any(r is not None and r != c for r, c in zip(recorded, clip)):
        shown = "x".join("?" if r is None else str(r) for r in recorded)
        raise artifacts.ModelFileError(f"{where} records {shown} clips but {onnx_path} takes "
                                       f"{'x'.join(map(str, clip))}")
    if metadata.num_classes is not None and isinstance(num_classes, int) and \
            metadata.num_classes != num_classes:
        raise artifacts.ModelFileError(f"{where} records {metadata.num_classes} classes but "
                                       f"{onnx_path} has {num_classes}")
    recorded_model = dict(metadata.model or {})
    if model and recorded_model.get("model"):
        recorded_name = recorded_model.pop("model")
        name, kwargs = registry.configuration(recorded_name, **recorded_model)
        given, given_config = registry.configuration(model)
        # What either side names, each with its builder's defaults (--model=mobilenetv2 is
        # the 1.0x); the class count was checked against the file above.
        named = (set(registry.resolve_name(recorded_name)[1]) | set(recorded_model)
                 | set(registry.resolve_name(model)[1])) - {"num_classes"}
        differ = [k for k in sorted(named) if kwargs.get(k) != given_config.get(k)]
        if name != given or differ:
            said = " ".join([name] + [f"{k}={kwargs.get(k)}" for k in differ])
            raise artifacts.ModelFileError(f"{where} records a {said} model; --model={model} "
                                           "names another")


def clip_dims(input_shape):
    """(frames, height, width) of an ONNX clip input, channels last (N, T, H, W, C) or
    first (N, C, T, H, W)."""
    dims = tuple(int(d) for d in input_shape[1:])
    if len(dims) != 4:
        raise ValueError(f"Expected a 5-D clip input. Received: input_shape={tuple(input_shape)}")
    return dims[:3] if dims[3] <= 4 else dims[1:]


def add_comparison(report, model, peers_json=None, threads=2, peak=None):
    """Adds to each result of `report` the `compare` columns of registry model `model`:
    the peers of `peers_json` at the same batch, `threads` and clip; MAC/s beside `peak`."""
    from keras_efficient3d.deploy.benchmark import compare, load_peers, model_macs

    clip = report["clip"]
    macs = model_macs(model, clip, report["num_classes"])
    for r in report["results"]:
        peers = (load_peers(peers_json, batch_size=r["batch_size"], threads=threads,
                            input_shape=clip) if peers_json else None)
        r.update(compare(model, r["median_ms"], peers, macs * r["batch_size"], peak))
    report.update(model=model, peak=peak)
    return report


def format_table(report):
    from keras_efficient3d.deploy.benchmark import format_comparison, format_peak

    lines = [f"ONNX Runtime {report['onnx']} on {', '.join(report['providers'])}"]
    if report.get("peak"):
        lines.append(format_peak(report["peak"]))
    lines.append(f"{'batch':>6} {'median ms':>12} {'min ms':>10} {'clips/s':>10}")
    for r in report["results"]:
        lines.append(f"{r['batch_size']:>6} {r['median_ms']:>12.3f} {r['min_ms']:>10.3f} "
                     f"{r['clips_per_s']:>10.1f}  {format_comparison(r)}".rstrip())
    return "\n".join(lines)


def define_flags(flag_values=flags.FLAGS):
    fv = {"flag_values": flag_values}
    cli.define("model_file", None, "The .onnx file to time.", required=True, **fv)
    cli.define("batch_sizes", [1, 8], **fv)
    cli.define("warmup", 10, "(per batch size)", **fv)
    cli.define("runs", 50, "(per batch size)", **fv)
    flags.DEFINE_list("providers", None, "Execution providers (default: best available).", **fv)
    # 2, as every other timing script here: --peers_json's rows are of 2 threads by default,
    # and rows of another thread count compare with none
    cli.define("threads", 2, "(intra-op; 0: ONNX Runtime's default, every core)", **fv)
    cli.define("json_out", None, "The report.", **fv)
    cli.define("model", None, "(the configuration the file was exported from: adds MAC/s "
               "beside the GEMM peak, and the peers of --peers_json)", **fv)
    cli.define("peers_json", None, "(needs --model)", **fv)
    cli.define("gemm_peak", True, "(needs --model)", **fv)
    cli.define_alias("onnx", "model_file", **fv)
    cli.define_alias("iterations", "runs", **fv)
    cli.define_alias("json", "json_out", **fv)


def main(argv, flag_values=flags.FLAGS):
    del argv
    f = flag_values
    if not f.model_file.lower().endswith(".onnx"):  # before ONNX Runtime's protobuf error
        raise cli.UsageError(f"--model_file={f.model_file}: an .onnx file is needed "
                             "(benchmark_openvino.py times .xml, benchmark_tflite.py .tflite)")
    if f.peers_json and not f.model:
        raise cli.UsageError("--peers_json needs --model (which configuration the file is)")
    if f.model:  # an unknown name is reported before anything is timed
        from keras_efficient3d import registry
        registry.resolve_name(f.model)
    try:
        # not given: the defaults, or the batch of a fixed-batch file
        report = benchmark_onnx(f.model_file, f.batch_sizes if f["batch_sizes"].present else None,
                                f.warmup, f.runs, f.providers, f.threads, f.model)
    except ImportError as err:
        from keras_efficient3d.runtime import install_command

        raise cli.UsageError(f"onnxruntime is missing ({err}); {install_command('onnxruntime')} "
                             "(or onnxruntime-gpu)") from None
    if f.model:
        from keras_efficient3d.deploy.benchmark import gemm_peak
        add_comparison(report, f.model, f.peers_json, f.threads,
                       gemm_peak(f.threads) if f.gemm_peak else None)
        from keras_efficient3d.deploy.benchmark import note_unmatched_peers
        note_unmatched_peers(f.peers_json, any("best_peer" in r for r in report["results"]),
                             f"{f.threads} threads, the same batch and "
                             f"{'x'.join(str(d) for d in report['clip'])} clips")
    from keras_efficient3d.deploy.benchmark import write_report
    write_report(report, format_table(report), f.json_out, markdown=False)


if __name__ == "__main__":
    cli.run(main, define_flags)
