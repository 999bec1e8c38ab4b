"""Times TFLite models (LiteRT + XNNPACK, batch 1): latency and clips/s per model, precision
and thread count; writes JSON and a Markdown table.

    python deployment/benchmark_tflite.py --json_out=tflite_timing.json
    python deployment/benchmark_tflite.py --models=mobilenetv2_1.0x --precisions=fp32,int8 --threads=2
    python deployment/benchmark_tflite.py --peers_json=peers.json   # from benchmark_pytorch.py
    python deployment/benchmark_tflite.py --model_file=m_int8.tflite --threads=1,2,4   # a file

With ``--peers_json`` (the original model timed on this machine in PyTorch, ONNX Runtime and
OpenVINO by ``benchmark_pytorch.py``) the 2-thread rows gain each peer's figure and our
speed-up against the best of them. Every row shows its achieved multiply-accumulates per
second beside this machine's fp32 GEMM peak at the same thread count, measured first
(``--nogemm_peak`` skips it).

    python deployment/benchmark_tflite.py --op_profile --threads=2   # int8 vs fp32 per op class
    python deployment/benchmark_tflite.py --packing --threads=2 \
        --models=mobilenetv2_0.2x,mobilenetv2_0.45x,shufflenetv2_1.0x   # packed vs unpacked
    python deployment/benchmark_tflite.py --stacking --threads=2   # fp32 stems: concat vs 0/1 conv
"""

import os
import sys

from absl import flags

from keras_efficient3d import cli

DEFAULT_MODELS = ["mobilenetv2_1.0x", "shufflenetv2_1.0x", "mobilenet_1.0x", "shufflenet_1.0x_g3",
                  "squeezenet_1.1"]
# int8-frames: int8 that takes the uint8 frames (export_tflite.py --frames_input)
PRECISIONS = cli.VOCABULARY["precision"].choices + ("int8-frames",)
# A side mode's rows are another table than the main mode's: its own default file leaves
# the main mode's tflite_timing.json as it was.
SIDE_MODE_FILES = {"op_profile": "tflite_op_profile.json", "packing": "tflite_packing.json",
                   "stacking": "tflite_stacking.json"}
MODEL_FILE_JSON = "tflite_file_timing.json"  # --model_file's rows, another table


def time_file(path, threads=(2,), warmup=5, runs=30):
    """Times the .tflite file `path` (LiteRT + XNNPACK, the batch it takes) at each thread
    count: rows of `format_table`'s fields (``model`` the file's name, ``precision`` what it
    computes in and what its input takes, e.g. "int8 (float32 clips)") with
    `keras_efficient3d.runtime.benchmark`'s figures and the number of XNNPACK partitions (1:
    the whole graph)."""
    from keras_efficient3d.deploy.tflite import file_precision
    from keras_efficient3d.runtime import TFLiteRunner, benchmark

    rows = []
    kind = None
    for n in threads:
        # timed as it is: a file XNNPACK takes in parts (ops it lacks) is the file's own speed
        runner = TFLiteRunner(path, num_threads=int(n), strict=False)  # names a bad file
        # what it computes in (as benchmark_openvino.py's rows say), then what its input takes
        kind = kind or file_precision(path)
        row = benchmark(runner, warmup, runs)
        row["xnnpack_partitions"] = runner.partitions()
        spec = runner.input_spec
        takes = "uint8 frames" if spec.uint8_frames else f"{spec.dtype} clips"
        row.update(model=os.path.basename(path), precision=f"{kind} ({takes})", threads=int(n),
                   path=path, input_shape=list(spec.shape), size_bytes=os.path.getsize(path))
        rows.append(row)
    return rows


def define_flags(flag_values=flags.FLAGS):
    fv = {"flag_values": flag_values}
    cli.define("models", DEFAULT_MODELS, **fv)
    flags.DEFINE_list("precisions", list(cli.VOCABULARY["precision"].choices),
                      "TFLite precisions, comma-separated "
                      f"({', '.join(PRECISIONS)}; int8-frames: int8 that takes uint8 frames, "
                      "export_tflite.py --frames_input).", **fv)
    flags.register_validator("precisions", cli.each_of(PRECISIONS), **fv)
    cli.define("threads", [1, 2, 4], multiple=True, **fv)
    cli.define("frames", 16, **fv)
    cli.define("size", 112, **fv)
    cli.define("num_classes", 600, **fv)
    cli.define("runs", 30, "(invokes per setting)", **fv)
    cli.define("warmup", 5, **fv)
    cli.define("json_out", "tflite_timing.json", "The Markdown table goes beside it (.md). "
               "Without it, " + ", ".join(f"--{mode} writes {name}"
                                          for mode, name in SIDE_MODE_FILES.items()) + ".", **fv)
    cli.define("peers_json", None, "(compared at 2 threads)", **fv)
    cli.define("gemm_peak", True, **fv)
    flags.DEFINE_bool("op_profile", False, "Instead of the models: fp32 and int8 of each op "
                      "class of a MobileNetV2 block at --frames x 56 x 56, 24 channels "
                      "(pointwise, depthwise taps, ADD), at the first --threads, --runs "
                      "rounds after --warmup.", **fv)
    flags.DEFINE_bool("packing", False, "Instead of the table: fp32 and int8 of each model as "
                      "the deployment graph emits it by default (narrow stages time-packed) "
                      "against the same graph unpacked, at the first --threads, --rounds "
                      "interleaved rounds of --runs invokes.", **fv)
    flags.DEFINE_bool("stacking", False, "Instead of the table: fp32 of each model with the "
                      "stem's temporal taps stacked by slices and a concat against the default "
                      "0/1 convolution, at the first --threads, --rounds interleaved rounds.", **fv)
    cli.define("rounds", 5, **fv)
    cli.define("model_file", None, f"A .tflite file (export_tflite.py's) to time instead of "
               f"--models, at each --threads; without --json_out it writes {MODEL_FILE_JSON}.",
               **fv)
    cli.define_alias("output", "json_out", **fv)
    cli.define_alias("pytorch_json", "peers_json", **fv)


def main(argv, flag_values=flags.FLAGS):
    del argv
    from keras_efficient3d.deploy.benchmark import benchmark_models, format_table, peers_and_peaks, write_report

    f = flag_values
    if f.model_file:
        return _time_model_file(f)
    modes = [f"--{name}" for name in ("op_profile", "packing", "stacking") if f[name].value]
    if len(modes) > 1:  # each is its own comparison; the first would run, the rest be dropped
        raise cli.UsageError(f"{' and '.join(modes)} are separate comparisons: give one")
    json_out = f.json_out
    if modes and not f["json_out"].present:
        json_out = SIDE_MODE_FILES[modes[0][2:]]
    # What a mode does not read is refused, not silently dropped.
    if modes:
        unused = ("precisions", "peers_json", "gemm_peak") + (
            ("models", "size", "num_classes", "rounds") if f.op_profile else ())
        cli.refuse_unused(f, unused, modes[0], "it times its own settings (its help says which)")
    else:
        cli.refuse_unused(f, ("rounds",), "the table of the models",
                          "it times each setting in one go (--rounds is of --packing and "
                          "--stacking)")
    if f.op_profile:
        from keras_efficient3d.deploy.benchmark import format_op_profile, int8_op_profile
        rows = int8_op_profile(frames=f.frames, threads=f.threads[0], rounds=f.runs,
                               warmup=f.warmup)
        write_report(rows, format_op_profile(rows), json_out, markdown=False)
        return
    if f.packing:
        from keras_efficient3d.deploy.benchmark import format_packing, packing_comparison
        rows = packing_comparison(f.models, (f.frames, f.size, f.size, 3), f.num_classes,
                                  f.threads[0], f.rounds, f.warmup, f.runs)
        write_report(rows, format_packing(rows), json_out)
        return
    if f.stacking:
        from keras_efficient3d.deploy.benchmark import format_stacking, stacking_comparison
        rows = stacking_comparison(f.models, (f.frames, f.size, f.size, 3), f.num_classes,
                                   f.threads[0], f.rounds, f.warmup, f.runs)
        write_report(rows, format_stacking(rows), json_out)
        return
    peers, peaks = peers_and_peaks(f.models, f.peers_json, (f.frames, f.size, f.size), f.threads,
                                   f.gemm_peak)
    # progress on stderr, as every other timing script's: stdout is the table (`> table.md`)
    rows = benchmark_models(f.models, f.precisions, f.threads, (f.frames, f.size, f.size, 3),
                            f.num_classes, f.warmup, f.runs, peers=peers, peaks=peaks,
                            log=lambda line: print(line, file=sys.stderr, flush=True))
    write_report(rows, format_table(rows, peaks), f.json_out)


def _time_model_file(f):
    from keras_efficient3d.deploy.benchmark import format_table, write_report

    cli.refuse_unused(f, ("models", "precisions", "frames", "size", "num_classes", "peers_json",
                          "gemm_peak", "rounds", "op_profile", "packing", "stacking"),
                      "--model_file", "the file is timed as it is (its clip, classes and "
                      "precision are the file's)")
    if not f.model_file.lower().endswith(".tflite"):
        raise cli.UsageError(f"--model_file={f.model_file}: a .tflite file is needed "
                             "(benchmark_openvino.py times .xml, benchmark_onnx.py .onnx)")
    rows = time_file(f.model_file, f.threads, f.warmup, f.runs)
    write_report(rows, format_table(rows), f.json_out if f["json_out"].present else MODEL_FILE_JSON)


if __name__ == "__main__":
    cli.run(main, define_flags)
