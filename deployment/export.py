r"""Exports a model to a SavedModel (TF Serving, TF-TRT) or ONNX (TensorRT, ONNX Runtime,
OpenVINO).

    # Registry model (random weights unless --weights), fixed batch 8, ONNX opset 13:
    python deployment/export.py --model=shufflenet_0.5x_g3 --num_classes=27 \
        --format=onnx --opset=13 --batch_size=8 --output=exports/shufflenet.onnx

    # A trained .keras file to a SavedModel with a dynamic batch:
    python deployment/export.py --model_file=model.keras --format=savedmodel \
        --output=exports/shufflenet_savedmodel

ONNX is written in the native form (5-D Conv with groups, NCDHW inside) that ONNX Runtime,
OpenVINO and TensorRT optimise; --onnx_form=taps takes tf2onnx of the 2D-tap TensorFlow
graph instead (the fallback --onnx_form=auto takes for layers without a native form).
The BatchNorm-folded inference form is exported unless --nofold_bn; ONNX exports are
checked against the Keras model with ONNX Runtime (--noverify to skip), SavedModels by
loading them back. The logic lives in keras_efficient3d.deploy.{onnx_export,savedmodel}.
Bad input ends with one line on stderr and exit status 2; a failed verification with one
line and exit status 1.
"""

import json
import os

from absl import flags

from keras_efficient3d import cli


def define_flags(flag_values=flags.FLAGS):
    fv = {"flag_values": flag_values}
    cli.define("model", None, "Give --model or --model_file.", **fv)
    cli.define("model_file", None, "A saved .keras model (instead of --model).", **fv)
    cli.define("weights", None, **fv)
    cli.define("format", "onnx", choices=("savedmodel", "onnx"), **fv)
    cli.define("onnx_form", "auto", "(of --format=onnx)", **fv)
    flags.DEFINE_integer("opset", 13, "ONNX opset (13 for TensorRT 8.2 / JetPack 4.6).", **fv)
    cli.define("batch_size", None, "Fixed batch size of the export; dynamic when unset.", **fv)
    cli.define("frames", 16, "(of --model)", **fv)
    cli.define("size", 112, "(of --model)", **fv)
    cli.define("num_classes", None, "(of --model; the model's default when unset)", **fv)
    flags.DEFINE_boolean("fold_bn", True, "Export the BatchNorm-folded inference form.", **fv)
    flags.DEFINE_boolean("verify", True, "Check the export against the Keras model.", **fv)
    cli.define("output", None, "An .onnx file or a SavedModel folder.", required=True, **fv)
    cli.define_alias("keras_file", "model_file", **fv)
    flags.register_multi_flags_validator(
        ["model", "model_file"], lambda v: (v["model"] is None) != (v["model_file"] is None),
        message="give exactly one of --model and --model_file", **fv)
    flags.register_multi_flags_validator(
        ["model_file", "weights"], lambda v: not (v["model_file"] and v["weights"]),
        message="--weights goes with --model; a --model_file carries its own", **fv)


def main(argv, flag_values=flags.FLAGS):
    del argv
    from keras_efficient3d.deploy import onnx_export, savedmodel

    f = flag_values
    check = cli.output_file if f.format == "onnx" else cli.output_folder
    try:
        check(f.output)
    except flags.ValidationError as err:
        raise cli.UsageError(f"--output={f.output} {err} for --format={f.format}") from None
    common = {"model_name": f.model, "keras_file": f.model_file, "num_frames": f.frames,
              "image_size": f.size, "num_classes": f.num_classes, "batch_size": f.batch_size,
              "fold_bn": f.fold_bn, "verify": f.verify, "weights": f.weights}
    try:
        if f.format == "onnx":
            report = onnx_export.build_and_export_onnx(f.output, opset=f.opset, form=f.onnx_form,
                                                       **common)
        else:
            report = savedmodel.build_and_export_saved_model(f.output, **common)
    except AssertionError as err:  # the export runs, but differs from the Keras model
        raise SystemExit(f"{os.path.basename(__file__)}: verification failed: "
                         f"{cli.error_line(err)}") from None
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    cli.run(main, define_flags)
