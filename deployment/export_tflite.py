"""Exports a model to TFLite (fp32, fp16, dynamic range or full int8) through the
deployment graph (BatchNorm folded, 2D ops over temporal taps, batch 1, XNNPACK-ready).

    python deployment/export_tflite.py --model=mobilenetv2_1.0x --weights=w.weights.h5 \\
        --num_classes=27 --precision=int8 --data_root=/tmp/gestures --output=m_int8.tflite

int8 calibrates on clips of a Jester-layout dataset (``--data_root``; e.g. the synthetic
gestures of ``python -m keras_efficient3d.data.synthetic``). ``--pack_channels`` sets how
wide a stem the graph starts time-packed (`keras_efficient3d.deploy.graph.DeploymentGraph`;
default: by precision and, for int8, by this CPU: 64 channels with AMX, else 16); give it
when the file is for another CPU than this one (64 for an AMX server, 16 for a phone, 0
never). Bad input ends with one line on stderr and exit status 2.
"""

from absl import flags

from keras_efficient3d import cli


def define_flags(flag_values=flags.FLAGS):
    fv = {"flag_values": flag_values}
    cli.define("model", "mobilenetv2_1.0x", **fv)
    cli.define("weights", None, **fv)
    cli.define("num_classes", 600, **fv)
    cli.define("frames", 16, **fv)
    cli.define("size", 112, **fv)
    cli.define("precision", "fp32", **fv)
    cli.define("data_root", None, "Here the Jester layout only (frame folders and jester-v1-*.csv, as "
               "`python -m keras_efficient3d.data.synthetic --output=DIR` writes): the int8 "
               "calibration clips.", **fv)
    cli.define("normalization", "original", "(of the calibration clips: as the model was "
               "trained; the demo's models: unit)", **fv)
    cli.define("downsample", 1, "(of the calibration clips: as the model was trained)", **fv)
    flags.DEFINE_integer("num_calibration", 64, "Calibration clips for int8.", lower_bound=1,
                         **fv)
    flags.DEFINE_boolean("int8_io", False, "int8 input/output tensors (int8 only).", **fv)
    flags.DEFINE_integer("pack_channels", None, "Start the graph time-packed where the stem is "
                         "at most this many channels wide; 0: never (default: by precision "
                         "and this CPU: int8 64 with AMX, else 16; float 8).", lower_bound=0, **fv)
    cli.define("output", None, "The .tflite file (default: <model>_<precision>.tflite).",
               check=cli.output_file, **fv)
    flags.register_multi_flags_validator(
        ["precision", "data_root"], lambda v: v["precision"] != "int8" or bool(v["data_root"]),
        message="--precision=int8 needs --data_root (calibration clips)", **fv)
    flags.register_multi_flags_validator(
        ["precision", "int8_io"], lambda v: v["precision"] == "int8" or not v["int8_io"],
        message="--int8_io needs --precision=int8", **fv)


def export(model_name, weights, num_classes, frames, size, precision, output, data_root=None,
           num_calibration=64, int8_io=False, pack_channels=None, normalization="original",
           downsample=1):
    """Builds, optionally calibrates on the training pipeline (clips normalised and sampled
    as the model was trained: `normalization`, `downsample`), converts and writes
    (`pack_channels`: `DeploymentGraph`'s, None its default)."""
    if precision == "int8" and data_root is None:
        raise ValueError("`precision='int8'` needs `data_root` (calibration clips). "
                         f"Received: data_root={data_root}")
    from keras_efficient3d import create_model
    from keras_efficient3d.deploy import DeploymentGraph, export_tflite

    try:
        model = create_model(model_name, input_shape=(frames, size, size, 3),
                             num_classes=num_classes, weights=weights)
    except OSError as err:  # h5py's messages do not say which file
        raise OSError(f"cannot read the weights {weights}: {err}") from err
    data = None
    if precision == "int8":
        from keras_efficient3d import data as kdata

        records, _ = kdata.index_jester(data_root, "train")
        data = kdata.make_dataset(records, "val", sample_duration=frames, sample_size=size,
                                  batch_size=8, normalization=normalization, downsample=downsample)
    graph = DeploymentGraph(model, pack_channels=pack_channels)
    return export_tflite(graph, output, precision, representative_data=data,
                         num_calibration=num_calibration, int8_io=int8_io)


def main(argv, flag_values=flags.FLAGS):
    del argv
    f = flag_values
    output = f.output or f"{f.model}_{f.precision}.tflite"
    size = export(f.model, f.weights, f.num_classes, f.frames, f.size, f.precision, output,
                  f.data_root, f.num_calibration, f.int8_io, f.pack_channels, f.normalization,
                  f.downsample)
    print(f"Wrote {output} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    cli.run(main, define_flags)
