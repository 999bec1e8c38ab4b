"""Exports a model to TFLite (fp32, fp16, dynamic range or full int8) through the
deployment graph (BatchNorm folded, 2D ops over temporal taps, batch 1, XNNPACK-ready).

    python deployment/export_tflite.py --model mobilenetv2_1.0x --weights w.weights.h5 \\
        --num_classes 27 --precision int8 --data_root /tmp/gestures --output m_int8.tflite
"""

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("model", "mobilenetv2_1.0x", "Registry name.")
    flags.DEFINE_string("weights", None, "Trained weights (.weights.h5 or .keras).")
    flags.DEFINE_integer("num_classes", 600, "Classifier size.")
    flags.DEFINE_integer("frames", 16, "Clip length.")
    flags.DEFINE_integer("size", 112, "Clip height and width.")
    flags.DEFINE_enum("precision", "fp32", ["fp32", "fp16", "dynamic", "int8"], "Precision.")
    flags.DEFINE_string("data_root", None, "Jester-layout root for int8 calibration clips.")
    flags.DEFINE_integer("num_calibration", 64, "Calibration clips for int8.")
    flags.DEFINE_boolean("int8_io", False, "int8 input/output tensors (int8 only).")
    flags.DEFINE_string("output", None, "Destination .tflite.", required=False)


def export(model_name, weights, num_classes, frames, size, precision, output, data_root=None,
           num_calibration=64, int8_io=False):
    """Builds, optionally calibrates on the training pipeline, converts and writes."""
    from keras_efficient3d import create_model
    from keras_efficient3d.deploy import export_tflite

    model = create_model(model_name, input_shape=(frames, size, size, 3), num_classes=num_classes,
                         weights=weights)
    data = None
    if precision == "int8":
        if data_root is None:
            raise ValueError("--precision=int8 needs --data_root (calibration clips).")
        from keras_efficient3d import data as kdata

        records, _ = kdata.index_jester(data_root, "train")
        data = kdata.make_dataset(records, "val", sample_duration=frames, sample_size=size,
                                  batch_size=8)
    return export_tflite(model, output, precision, representative_data=data,
                         num_calibration=num_calibration, int8_io=int8_io)


def main(argv):
    del argv
    output = FLAGS.output or f"{FLAGS.model}_{FLAGS.precision}.tflite"
    size = export(FLAGS.model, FLAGS.weights, FLAGS.num_classes, FLAGS.frames, FLAGS.size,
                  FLAGS.precision, output, FLAGS.data_root, FLAGS.num_calibration, FLAGS.int8_io)
    print(f"Wrote {output} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    define_flags()
    app.run(main)
