r"""Exports a model to a SavedModel (TF Serving, TF-TRT), ONNX (TensorRT, ONNX Runtime) or
OpenVINO IR (x86 CPUs, Intel GPUs/NPUs).

    # Registry model (random weights unless --weights), fixed batch 8, ONNX opset 13
    # (the output's folder must exist):
    mkdir -p exports
    python deployment/export.py --model=shufflenet_0.5x_g3 --num_classes=27 \
        --format=onnx --opset=13 --batch_size=8 --output=exports/shufflenet.onnx

    # A trained .keras file to a SavedModel with a dynamic batch (weights frozen as
    # constants: JetPack 4.6's TensorFlow loads it for TF-TRT):
    python deployment/export.py --model_file=model.keras --format=savedmodel \
        --output=exports/shufflenet_savedmodel

    # OpenVINO IR (.xml + .bin): fp32, fp16 weights, or int8 calibrated on the training data:
    python deployment/export.py --model=mobilenetv2_1.0x --format=openvino --output=m.xml
    python deployment/export.py --model=mobilenetv2_1.0x --format=openvino --quantize=ptq \
        --data_root=/tmp/gestures --output=m_int8.xml
    # ... taking uint8 frames and normalising them itself (faster int8; the sidecar says so):
    python deployment/export.py --model=mobilenetv2_0.2x --format=openvino --quantize=ptq \
        --frames_input --data_root=/tmp/gestures --output=m_int8_frames.xml

ONNX is written in the native form (5-D Conv with groups, NCDHW inside) that ONNX Runtime,
OpenVINO and TensorRT optimise; --onnx_form=taps takes tf2onnx of the 2D-tap TensorFlow
graph instead (the fallback --onnx_form=auto takes for a layer without a native form).
The BatchNorm-folded inference form is exported unless --nofold_bn; ONNX exports are
checked against the Keras model with ONNX Runtime (--noverify to skip), SavedModels by
loading them back, OpenVINO IR with OpenVINO (int8: top-1 agreement with the Keras model
on the validation split). The logic lives in
keras_efficient3d.deploy.{onnx_export,savedmodel,openvino_export}.
Bad input ends with one line on stderr and exit status 2; a failed verification with one
line and exit status 1.
"""

import json
import os

from absl import flags

from keras_efficient3d import cli, runtime


def define_flags(flag_values=flags.FLAGS):
    fv = {"flag_values": flag_values}
    cli.define("model", None, "Give --model or --model_file.", **fv)
    cli.define("model_file", None, "A saved .keras model (instead of --model).", **fv)
    cli.define("weights", None, **fv)
    cli.define("format", "onnx", choices=("savedmodel", "onnx", "openvino"), **fv)
    flags.DEFINE_enum("onnx_form", "auto", ["auto", "native", "taps"],
                      "ONNX graph (--format=onnx): native (5-D Conv with groups, what ONNX Runtime, "
                      "OpenVINO and TensorRT optimise), taps (tf2onnx of the 2D-tap TensorFlow graph) "
                      "or auto (native unless a layer has no native form).", **fv)
    flags.DEFINE_integer("opset", 13, "ONNX opset (13 for TensorRT 8.2 / JetPack 4.6).", **fv)
    cli.define("batch_size", None, "Fixed batch size of the export; when unset, dynamic for "
               "ONNX and SavedModel, 1 for OpenVINO (--dynamic_batch for a dynamic IR).", **fv)
    flags.DEFINE_boolean("dynamic_batch", False, "OpenVINO: an IR of a dynamic batch axis (a "
                         "server's batches of any size; the default IR is of batch 1, which "
                         "OpenVINO compiles for that shape).", **fv)
    cli.define("frames", 16, "(of --model)", **fv)
    cli.define("size", 112, "(of --model)", **fv)
    cli.define("num_classes", None, "(of --model; the model's default when unset)", **fv)
    flags.DEFINE_boolean("fold_bn", True, "Export the BatchNorm-folded inference form.", **fv)
    flags.DEFINE_boolean("verify", True, "Check the export against the Keras model.", **fv)
    cli.define("output", None, "An .onnx file, a SavedModel folder or an OpenVINO .xml file.",
               required=True, **fv)
    cli.define("normalization", None, "(as the model was trained: what the sidecar records for "
               "predict and, with --quantize, the calibration clips'; default: what the .keras "
               "file records, else none is recorded and calibration takes original)", **fv)
    cli.define("downsample", None, "(as the model was trained: what the sidecar records for "
               "predict and, with --quantize, the calibration clips'; default: what the .keras "
               "file records, else 1)", **fv)
    # OpenVINO: the int8 calibration flags are export_tflite.py's (--data_root, --num_calibration).
    flags.DEFINE_enum("quantize", None, ["ptq", "qat"], "OpenVINO int8: ptq (NNCF post-training "
                      "quantization) or qat (the quantization-aware form, Q/DQ).", **fv)
    flags.DEFINE_boolean("compress_to_fp16", False, "OpenVINO: fp16 weights in the .bin.", **fv)
    cli.define("data_root", None, "Here a dataset in the Jester layout (frame folders and "
               "jester-v1-*.csv, as `python -m keras_efficient3d.data.synthetic --output=DIR` "
               "writes) or a folder of class folders (train/ and val/): the int8 "
               "calibration clips (--quantize), normalised and sampled as a --model_file "
               "records.", **fv)
    flags.DEFINE_integer("num_calibration", 64, "Calibration clips for int8.", lower_bound=1,
                         **fv)
    flags.DEFINE_string("stem_fold", "auto", "Input columns the stem convolution takes as channels "
                        "(native ONNX, OpenVINO): auto (OpenVINO int8 on CPUs with AMX: the fastest "
                        "of 1, 2, 4 on this machine; else 1) or a factor.", **fv)
    flags.DEFINE_string("stem_output_fold", "auto", "Output columns the stem convolution writes per "
                        "position as channels (native ONNX, OpenVINO): auto (OpenVINO: 2 for a stem "
                        "of at most 8 channels, e.g. MobileNetV2 0.2x, in int8, and in float where "
                        "a depthwise layer reads it; ONNX: 1) or a factor.", **fv)
    flags.DEFINE_boolean("frames_input", False, "OpenVINO int8 (--quantize=ptq): the IR takes uint8 RGB "
                         "frames (0-255) and normalises them itself, as its sidecar records: no "
                         "float clip to build and no quantization pass over it (faster int8; exact "
                         "where every channel's mean is one whole pixel value, else the frame "
                         "border differs).", **fv)
    cli.define("threads", 0, "(of the verification and of --stem_fold=auto's timing)", **fv)
    cli.define_alias("keras_file", "model_file", **fv)
    flags.register_multi_flags_validator(
        ["model", "model_file"], lambda v: (v["model"] is None) != (v["model_file"] is None),
        message="give exactly one of --model and --model_file", **fv)
    flags.register_multi_flags_validator(
        ["format", "quantize", "compress_to_fp16"],
        lambda v: v["format"] == "openvino" or not (v["quantize"] or v["compress_to_fp16"]),
        message="--quantize and --compress_to_fp16 go with --format=openvino", **fv)
    flags.register_multi_flags_validator(
        ["format", "stem_fold", "stem_output_fold"],
        lambda v: v["format"] != "savedmodel" or v["stem_fold"] == v["stem_output_fold"] == "auto",
        message="--stem_fold and --stem_output_fold go with --format=onnx or --format=openvino", **fv)
    flags.register_multi_flags_validator(
        ["format", "quantize", "frames_input"],
        lambda v: not v["frames_input"] or (v["format"] == "openvino" and v["quantize"] == "ptq"),
        message="--frames_input goes with --format=openvino --quantize=ptq", **fv)
    flags.register_multi_flags_validator(
        ["quantize", "data_root"], lambda v: not v["quantize"] or bool(v["data_root"]),
        message="--quantize needs --data_root (calibration clips of the training data)", **fv)


def main(argv, flag_values=flags.FLAGS):
    del argv
    f = flag_values
    cli.refuse_beside_model_file(f, ("weights", "frames", "size", "num_classes"),
                                 "weights, classes and clip shape")
    _refuse_unused(f)
    if f.model_file:
        from keras_efficient3d import artifacts

        artifacts.keras_model_file(f.model_file, "export.py")
    check = cli.output_folder if f.format == "savedmodel" else cli.output_file
    try:
        check(f.output)
    except flags.ValidationError as err:
        raise cli.UsageError(f"--output={f.output} {err} for --format={f.format}") from None
    _check_extension(f.format, f.output)
    if f.format == "savedmodel" and os.path.isdir(f.output):  # a folder to write into
        cli.writable_folder(f.output)
    else:  # a file, or a folder made in an existing one (a mistyped parent is reported)
        cli.output_parent(f.output)
    common = {"model_name": f.model, "keras_file": f.model_file, "num_frames": f.frames,
              "image_size": f.size, "num_classes": f.num_classes, "batch_size": f.batch_size,
              "fold_bn": f.fold_bn, "verify": f.verify, "weights": f.weights,
              "normalization": f.normalization, "downsample": f.downsample}
    try:
        if f.format == "openvino":
            report = _export_openvino(f, common)
        elif f.format == "onnx":
            report = _export_onnx(f, common)
        else:
            from keras_efficient3d.deploy import savedmodel

            report = savedmodel.build_and_export_saved_model(f.output, **common)
    except AssertionError as err:  # the export runs, but differs from the Keras model
        raise SystemExit(f"{os.path.basename(__file__)}: verification failed: "
                         f"{cli.error_line(err)}") from None
    print(json.dumps(report, default=str))
    cli.note_random_weights(f, "a file to time or to check the export with",
                            agreement="top1_agreement" in report)
    _warn_low_agreement(report, f)


def _warn_low_agreement(report, f):
    if cli.random_weights(f):  # the note above says the figure means nothing
        return
    # A QAT export reports agreement with its fake-quantized model (top1_agreement) and,
    # where the float model was run too (OpenVINO), with that (top1_agreement_float)
    agreement = report.get("top1_agreement_float", report.get("top1_agreement"))
    against = ("the fake-quantized (QAT) model" if f.quantize == "qat" and
               "top1_agreement_float" not in report else "the float model")
    runtime.warn_low_agreement(agreement, report.get("clips"), against)


# What each format writes; a SavedModel is a folder, which a model file's name would belie.
_EXTENSIONS = {"onnx": ".onnx", "openvino": ".xml"}
_MODEL_FILES = (".onnx", ".xml", ".bin", ".tflite", ".keras", ".h5", ".pb", ".engine", ".json")


def _check_extension(fmt, output):
    ext = os.path.splitext(output.rstrip("/" + os.sep))[1].lower()
    if fmt == "openvino" and ext != ".xml":
        raise cli.UsageError(f"--output={output}: an OpenVINO IR is an .xml file (its .bin is "
                             "written beside it)")
    if fmt == "onnx" and ext != ".onnx":
        raise cli.UsageError(f"--output={output}: --format=onnx writes an .onnx file")
    if fmt == "savedmodel" and ext in _MODEL_FILES:
        raise cli.UsageError(f"--output={output}: --format=savedmodel writes a folder; a name "
                             f"ending in {ext} would read as a {ext} file")


def _refuse_unused(f):
    """Flags the chosen format or precision does not read, refused rather than ignored."""
    if f.format != "openvino":
        cli.refuse_unused(f, ("threads",), f"--format={f.format}",
                          "it sets the OpenVINO check's and stem-fold timing's threads")
        cli.refuse_unused(f, ("dynamic_batch",), f"--format={f.format}",
                          "its export is of a dynamic batch unless --batch_size says one")
    elif f.dynamic_batch and f.batch_size is not None:
        raise cli.UsageError("--dynamic_batch and --batch_size contradict each other: give one")
    if f.format == "savedmodel":
        cli.refuse_unused(f, ("opset", "onnx_form"), "--format=savedmodel",
                          "a SavedModel is a TensorFlow graph, not ONNX")
    if f.format == "openvino":
        cli.refuse_unused(f, ("onnx_form",), "--format=openvino",
                          "the IR is converted from the native form (the 2D-tap form is TFLite's)")
    if not f.quantize:
        cli.refuse_unused(f, ("data_root", "num_calibration"), "a float export",
                          "they are the int8 calibration of --quantize")
    if f.quantize and f.compress_to_fp16:
        raise cli.UsageError("--compress_to_fp16 is for float IR: an int8 IR's weights are int8 "
                             "(leave one of --compress_to_fp16 and --quantize out)")


def _stem_fold(value, flag="--stem_fold"):
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise cli.UsageError(f"{flag}={value}: expected auto or a whole number "
                             "(1: no fold)") from None


def _export_onnx(f, common):
    fold, output_fold = _stem_fold(f.stem_fold), _stem_fold(f.stem_output_fold, "--stem_output_fold")
    try:
        from keras_efficient3d.deploy import onnx_export

        return onnx_export.build_and_export_onnx(
            f.output, opset=f.opset, form=f.onnx_form, stem_fold=1 if fold == "auto" else fold,
            stem_output_fold=1 if output_fold == "auto" else output_fold, **common)
    except ImportError as err:  # a base install exports SavedModels (and TFLite with litert)
        raise cli.UsageError(f"--format=onnx needs the onnx packages ({cli.error_line(err)}): "
                             f"{runtime.install_command('onnx')}") from None


def _export_openvino(f, common):
    from keras_efficient3d.deploy import openvino_export

    try:
        return openvino_export.build_and_export_openvino(
            f.output, opset=f.opset, quantize=f.quantize, compress_to_fp16=f.compress_to_fp16,
            data_root=f.data_root, num_calibration=f.num_calibration, threads=f.threads or None,
            stem_fold=_stem_fold(f.stem_fold), frames_input=f.frames_input,
            stem_output_fold=_stem_fold(f.stem_output_fold, "--stem_output_fold"),
            **{**common, "batch_size": None if f.dynamic_batch else f.batch_size or 1})
    except ImportError as err:  # openvino or nncf missing: the message says what to install
        raise cli.UsageError(cli.error_line(err)) from None


if __name__ == "__main__":
    cli.run(main, define_flags)
