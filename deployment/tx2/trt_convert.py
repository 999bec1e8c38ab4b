#!/usr/bin/env python3
"""TF-TRT conversion of an exported SavedModel (deployment/export.py --format savedmodel).

Runs on the Jetson with JetPack's TensorFlow (NVIDIA's wheel, built with TensorRT), or in an
NGC TensorFlow container; PyPI TensorFlow >= 2.18 has no TF-TRT. Python 3.6 compatible.

    python3 trt_convert.py --saved-model mobilenetv2_sm --output mobilenetv2_trt_fp16 \
        --precision FP16 --batch-sizes 1,8

Engines are built ahead of time for each batch size (``converter.build``) so that the first
timed call does not build them. INT8 needs calibration clips (--calibration-npy, a float
.npy array of shape (N, frames, height, width, 3); FP16 and FP32 read none and refuse it) and
a GPU with INT8 kernels (compute capability 6.1 or >= 7.0): it is refused on the Jetson TX2
(sm_62), where FP16 is the fast path.
"""

import argparse
import os

import tx2_common as common


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--saved-model", required=True, help="SavedModel directory to convert.")
    parser.add_argument("--output", required=True, help="Directory for the converted SavedModel.")
    parser.add_argument("--precision", default="FP16", type=str.upper, choices=("FP32", "FP16", "INT8"))
    parser.add_argument("--batch-sizes", default=None,
                        help="Engines to build ahead (default: 1,8); a fixed-batch signature "
                             "keeps its own.")
    parser.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT workspace (MiB).")
    parser.add_argument("--signature", default="serving_default")
    parser.add_argument("--calibration-npy", default=None, help="INT8 calibration clips (.npy).")
    parser.add_argument("--compute-capability", default=None,
                        help="INT8 only: the GPU's compute capability the INT8 check goes by, "
                             "e.g. 6.2, instead of the board's or TensorFlow's (a GPU is "
                             "still needed to convert).")
    return parser.parse_args(argv)


def read_calibration(path):
    """The calibration clips of `path`, read before TensorFlow starts and the conversion
    begins: a missing or malformed file is refused in one line, not after minutes."""
    if not os.path.isfile(path):
        raise common.Refused("--calibration-npy {} is not a file.".format(path))
    try:
        import numpy as np  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise common.Missing("NumPy is not installed (it reads --calibration-npy).") from None
    expected = "expected float clips shaped (N, frames, height, width, 3), N >= 1, in an .npy file"
    try:
        clips = np.load(path)
    except (ValueError, OSError) as err:
        raise common.Refused("--calibration-npy {}: not a NumPy .npy array ({}).".format(
            path, " ".join(str(err).split())[:200])) from None
    if not isinstance(clips, np.ndarray):  # np.load opens an .npz archive as a mapping
        clips.close()
        raise common.Refused("--calibration-npy {}: an .npz archive; {} (np.save, not "
                             "np.savez).".format(path, expected))
    # Strings or booleans would pass the shape check and fail at astype after TensorFlow starts.
    if clips.dtype.kind not in "fiu":
        raise common.Refused("--calibration-npy {}: {}. Received: dtype {}".format(
            path, expected, clips.dtype))
    if clips.ndim != 5 or len(clips) == 0 or clips.shape[-1] != 3:
        raise common.Refused("--calibration-npy {}: {}. Received: {}".format(
            path, expected, clips.shape))
    return clips


def import_tftrt():
    common.quiet_tensorflow()
    try:
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise common.Missing("TensorFlow is not installed (on JetPack: NVIDIA's tensorflow wheel "
                             "for JetPack 4.6, which includes TF-TRT).") from None
    try:
        from tensorflow.python.compiler.tensorrt import trt_convert as trt  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise common.Missing("this TensorFlow ({}) has no TF-TRT module.".format(tf.__version__)) from None
    build_info = getattr(tf.sysconfig, "get_build_info", lambda: {})()
    if build_info.get("is_tensorrt_build") is False:
        raise common.Missing(
            "this TensorFlow ({}) was not built with TensorRT (TF-TRT lives on in NVIDIA's builds: "
            "JetPack's wheel and the NGC containers; PyPI's 2.18+ has none).".format(tf.__version__))
    return tf, trt


def gpu_capability(tf):
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise common.Missing("no GPU visible to TensorFlow; TF-TRT needs a CUDA GPU.")
    # TensorFlow takes most of the GPU's memory when it starts, which on a Jetson is the
    # board's memory: TensorRT's builder, beside it, then runs short
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError):  # already initialised: nothing to change
            pass
    details = tf.config.experimental.get_device_details(gpus[0])
    capability = details.get("compute_capability")
    return tuple(capability) if capability else common.compute_capability_from_board()


def signature_clip_shape(tf, saved_model, signature):
    loaded = common.load_saved_model(tf, saved_model)
    if signature not in loaded.signatures:
        raise common.Refused("the SavedModel has no signature '{}' (it has: {}).".format(
            signature, ", ".join(sorted(loaded.signatures))))
    specs = list(loaded.signatures[signature].structured_input_signature[1].values())
    if len(specs) != 1:
        raise common.Refused("expected one clip input, found {}.".format(len(specs)))
    return tuple(specs[0].shape.as_list())


def check_output(output, saved_model):
    """Refuses, before the conversion, an --output that is a file or the input SavedModel
    (converter.save would end in a traceback, or write over the model it converts)."""
    if os.path.isfile(output):
        raise common.Refused("--output {} is a file; the TF-TRT SavedModel is a folder.".format(
            output))
    if os.path.realpath(output) == os.path.realpath(saved_model):
        raise common.Refused("--output {} is the --saved-model being converted: write the "
                             "TF-TRT SavedModel into another folder.".format(output))


def engine_count(graph_def):
    """The TensorRT engines (TRTEngineOp nodes) TF-TRT put in a converted graph, its functions'
    included: 0 means that TensorFlow runs the whole model as before."""
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    return sum(1 for node in nodes if node.op == "TRTEngineOp")


def calibration_batches(clips, step, fixed):
    """The INT8 calibration clips in batches of `step`: all of them where the signature's batch
    is free, whole batches only where it is `fixed` (a signature of batch 8 takes no 5)."""
    if fixed and len(clips) < step:
        raise common.Refused("--calibration-npy holds {} clips, fewer than the SavedModel's "
                             "fixed batch of {}.".format(len(clips), step))
    end = len(clips) // step * step if fixed else len(clips)
    return [clips[start:start + step] for start in range(0, end, step)]


def main(argv=None):
    args = parse_args(argv)
    batch_sizes = common.parse_batch_sizes(args.batch_sizes)
    common.check_saved_model(args.saved_model)
    check_output(args.output, args.saved_model)
    common.check_workspace_mb(args.workspace_mb)
    if args.precision != "INT8":
        for flag, value, why in (
                ("--calibration-npy", args.calibration_npy,
                 "TF-TRT calibrates INT8 ranges; {} needs none".format(args.precision)),
                ("--compute-capability", args.compute_capability,
                 "the check that the GPU has INT8 kernels")):
            if value:
                raise common.Refused("{} is read for --precision INT8 only ({}): drop it".format(
                    flag, why))
    override = None
    if args.compute_capability:
        override = common.parse_compute_capability(args.compute_capability)
    if args.precision == "INT8":
        # before the clips are asked for: on a TX2 no clips make INT8 possible
        common.check_int8(override or common.compute_capability_from_board(), "TF-TRT INT8")
        if not args.calibration_npy:
            raise common.Refused("INT8 needs --calibration-npy (clips shaped (N, frames, height, "
                                 "width, 3)).")
    clips = read_calibration(args.calibration_npy) if args.precision == "INT8" else None

    tf, trt = import_tftrt()
    capability = gpu_capability(tf)  # a GPU is needed whatever --compute-capability says
    if override is not None:
        capability = override
    if args.precision == "INT8":
        common.check_int8(capability, "TF-TRT INT8")
    import numpy as np  # pylint: disable=import-outside-toplevel

    shape = signature_clip_shape(tf, args.saved_model, args.signature)
    if clips is not None and tuple(clips.shape[1:]) != tuple(shape[1:]):
        raise common.Refused("calibration clips are {} but the model takes {}.".format(
            clips.shape[1:], shape[1:]))
    batch_sizes = common.fixed_batch_sizes(
        "signature {} of {}".format(args.signature, args.saved_model), shape[0], batch_sizes,
        args.batch_sizes, "TF-TRT builds an engine for")
    params = trt.DEFAULT_TRT_CONVERSION_PARAMS._replace(
        precision_mode=getattr(trt.TrtPrecisionMode, args.precision),
        max_workspace_size_bytes=args.workspace_mb << 20,
        maximum_cached_engines=max(len(batch_sizes), 1),
        use_calibration=args.precision == "INT8")
    try:
        converter = trt.TrtGraphConverterV2(input_saved_model_dir=args.saved_model,
                                            input_saved_model_signature_key=args.signature,
                                            conversion_params=params)
    except RuntimeError as err:
        raise common.Missing(str(err).splitlines()[0]) from None

    # TensorFlow's own log is off (its start-up lines): the steps, which take minutes on a
    # TX2, are said here
    print("converting {} to TF-TRT {}{}...".format(
        args.saved_model, args.precision,
        " (calibrating on {} clips)".format(len(clips)) if clips is not None else ""), flush=True)
    if args.precision == "INT8":
        clips = clips.astype(np.float32)

        batches = calibration_batches(clips, batch_sizes[-1], shape[0] is not None)

        def calibration_input_fn():
            for batch in batches:
                yield (tf.constant(batch),)

        converted = converter.convert(calibration_input_fn=calibration_input_fn)
    else:
        converted = converter.convert()
    engines = engine_count(converted.graph.as_graph_def()) if converted is not None else None
    if engines == 0:
        print("warning: TF-TRT made no TensorRT engine of this graph: TensorFlow runs all of it "
              "as before (TensorRT did not take its operations)", flush=True)
    elif engines is not None:
        print("{} TensorRT segment{} made".format(engines, "" if engines == 1 else "s"), flush=True)

    def build_input_fn():
        for batch in batch_sizes:
            print("building the engines for batch {}...".format(batch), flush=True)
            yield (tf.zeros((batch,) + tuple(shape[1:]), tf.float32),)

    converter.build(input_fn=build_input_fn)
    converter.save(args.output)
    record = os.path.join("assets.extra", "keras_efficient3d.json")
    # TF-TRT writes a SavedModel of its own, without the export's assets.extra
    common.copy_record(os.path.join(args.saved_model, record), os.path.join(args.output, record),
                       {"tftrt": {"precision": args.precision}})
    built = ("no TensorRT engine" if engines == 0 else
             "engines for batch {}".format(",".join(str(b) for b in batch_sizes)))
    print("TF-TRT {} SavedModel written to {} ({}; GPU sm_{}{}).".format(
        args.precision, args.output, built,
        capability[0] if capability else "?", capability[1] if capability else "?"))
    return 0


if __name__ == "__main__":
    common.run_main(main)
