r"""Exports a model to a SavedModel (TF Serving, TF-TRT) or ONNX (TensorRT, ONNX Runtime).

    # Registry model (random weights unless --weights), fixed batch 8, ONNX opset 13:
    python deployment/export.py --model shufflenet_0.5x_g3 --num_classes 27 \
        --format onnx --opset 13 --batch_size 8 --output exports/shufflenet.onnx

    # A trained .keras file to a SavedModel with a dynamic batch:
    python deployment/export.py --keras_file model.keras --format savedmodel \
        --output exports/shufflenet_savedmodel

The BatchNorm-folded inference form is exported unless --nofold_bn; ONNX exports are
checked against the Keras model with ONNX Runtime (--noverify to skip), SavedModels by
loading them back. The logic lives in keras_efficient3d.deploy.{onnx_export,savedmodel}.
"""

import json
import sys

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("model", None, "Registry or configuration name, e.g. mobilenetv2_0.2x.")
    flags.DEFINE_string("keras_file", None, "A saved .keras model (instead of --model).")
    flags.DEFINE_string("weights", None, "Weights file for --model (.weights.h5 or .keras).")
    flags.DEFINE_enum("format", "onnx", ["savedmodel", "onnx"], "Export format.")
    flags.DEFINE_integer("opset", 13, "ONNX opset (13 for TensorRT 8.2 / JetPack 4.6).")
    flags.DEFINE_integer("batch_size", None, "Fixed batch size; dynamic when unset.")
    flags.DEFINE_integer("frames", 16, "Clip length of --model.")
    flags.DEFINE_integer("size", 112, "Frame height and width of --model.")
    flags.DEFINE_integer("num_classes", None, "Classes of --model (model default when unset).")
    flags.DEFINE_boolean("fold_bn", True, "Export the BatchNorm-folded inference form.")
    flags.DEFINE_boolean("verify", True, "Check the export against the Keras model.")
    flags.DEFINE_string("output", None, "Output .onnx file or SavedModel directory.")
    flags.mark_flag_as_required("output")
    flags.register_multi_flags_validator(
        ["model", "keras_file"], lambda v: (v["model"] is None) != (v["keras_file"] is None),
        message="Give exactly one of --model and --keras_file.")


def main(argv):
    del argv
    from keras_efficient3d.deploy import onnx_export, savedmodel  # pylint: disable=import-outside-toplevel

    common = dict(model_name=FLAGS.model, keras_file=FLAGS.keras_file, num_frames=FLAGS.frames,
                  image_size=FLAGS.size, num_classes=FLAGS.num_classes,
                  batch_size=FLAGS.batch_size, fold_bn=FLAGS.fold_bn, verify=FLAGS.verify,
                  weights=FLAGS.weights)
    try:
        if FLAGS.format == "onnx":
            report = onnx_export.build_and_export_onnx(FLAGS.output, opset=FLAGS.opset, **common)
        else:
            report = savedmodel.build_and_export_saved_model(FLAGS.output, **common)
    except (ValueError, AssertionError) as err:
        sys.exit(f"export.py: {err}")
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    define_flags()
    app.run(main)
