"""Exports a model to TFLite (fp32, fp16, dynamic range or full int8) through the
deployment graph (BatchNorm folded, 2D ops over temporal taps, batch 1, XNNPACK-ready).

    python deployment/export_tflite.py --model=mobilenetv2_1.0x --weights=w.weights.h5 \\
        --num_classes=27 --precision=int8 --data_root=/tmp/gestures --output=m_int8.tflite
    python deployment/export_tflite.py --model_file=saved_models/synthetic_gestures.keras \\
        --output=gestures_fp32.tflite
    python deployment/export_tflite.py --model_file=saved_models/synthetic_gestures.keras \\
        --precision=int8 --frames_input --data_root=/tmp/gestures --output=gestures_frames.tflite

int8 calibrates on clips of a Jester-layout dataset or a folder of class folders
(``--data_root``; e.g. the synthetic
gestures of ``python -m keras_efficient3d.data.synthetic``), normalised and sampled as a
``.keras`` file (``--model_file``, or ``--weights``) records (``--normalization`` and
``--downsample`` say it for a model that records none; one that differs is refused). ``--pack_channels`` sets how
wide a stem the graph starts time-packed (`keras_efficient3d.deploy.graph.DeploymentGraph`;
default: by precision and, for int8, by this CPU: 64 channels with AMX, else 16); give it
when the file is for another CPU than this one (64 for an AMX server, 16 for a phone, 0
never). fp32 and fp16 files are checked against the Keras model (``--noverify`` to skip);
every file gets a ``<output>.json`` metadata sidecar (what the ``.keras`` file records:
normalisation, frame step, labels), which ``predict`` reads. Bad input ends with one line on
stderr and exit status 2; a failed verification with one line and exit status 1.
"""

import dataclasses
import os
import sys

from absl import flags

from keras_efficient3d import cli, runtime

# What a --model_file fixes itself: these flags would be silently ignored beside it.
_OF_THE_MODEL = ("model", "weights", "num_classes", "frames", "size")


def define_flags(flag_values=flags.FLAGS):
    fv = {"flag_values": flag_values}
    cli.define("model", "mobilenetv2_1.0x", **fv)
    cli.define("model_file", None, "A saved .keras model (instead of --model and --weights).",
               **fv)
    cli.define("weights", None, **fv)
    cli.define("num_classes", 600, **fv)
    cli.define("frames", 16, **fv)
    cli.define("size", 112, **fv)
    cli.define("precision", "fp32", **fv)
    cli.define("data_root", None, "Here a dataset in the Jester layout (frame folders and "
               "jester-v1-*.csv, as `python -m keras_efficient3d.data.synthetic --output=DIR` "
               "writes) or a folder of class folders (train/ and val/, as --dataset=folders "
               "trains on): the int8 calibration clips.", **fv)
    cli.define("normalization", None, "(as the model was trained: the int8 calibration clips' "
               "and, for every precision, what the sidecar records for predict; default: what "
               "the .keras file records, else original)", **fv)
    cli.define("downsample", None, "(as the model was trained: the int8 calibration clips' and, "
               "for every precision, what the sidecar records for predict; default: what the "
               ".keras file records, else 1)", **fv)
    flags.DEFINE_integer("num_calibration", 64, "Calibration clips for int8.", lower_bound=1,
                         **fv)
    flags.DEFINE_boolean("int8_io", False, "int8 input/output tensors (int8 only).", **fv)
    flags.DEFINE_boolean("frames_input", False, "int8: the file takes the decoder's uint8 RGB "
                         "frames and normalises them itself, as its sidecar records (its "
                         "int8 input is frames - 128; predict and the runtime's runner feed it "
                         "the frames).", **fv)
    flags.DEFINE_integer("qat_epochs", 0, "int8 by quantization-aware training instead of "
                         "post-training quantization: the model with fake-quant ops, calibrated on "
                         "--data_root's training clips, fine-tuned for N epochs there (Adam, rate "
                         "1e-4), the epoch of best validation accuracy kept (0: the calibrated "
                         "model, before the first). The data's classes are matched to the model's "
                         "by name.", lower_bound=0, **fv)
    flags.DEFINE_integer("pack_channels", None, "Start the graph time-packed where the stem is "
                         "at most this many channels wide; 0: never (default: by precision "
                         "and this CPU: int8 64 with AMX, else 16; float 8).", lower_bound=0, **fv)
    flags.DEFINE_boolean("verify", True, "Check an fp32 or fp16 file against the Keras model.",
                         **fv)
    cli.define("output", None, "The .tflite file (default: <model>_<precision>.tflite).",
               check=_tflite_output, **fv)
    flags.register_multi_flags_validator(
        ["precision", "data_root"], lambda v: v["precision"] != "int8" or bool(v["data_root"]),
        message="--precision=int8 needs --data_root (calibration clips)", **fv)
    flags.register_multi_flags_validator(
        ["precision", "data_root"], lambda v: v["precision"] == "int8" or not v["data_root"],
        message="--data_root is read for --precision=int8 alone (its calibration clips)", **fv)
    flags.register_multi_flags_validator(
        ["precision", "int8_io"], lambda v: v["precision"] == "int8" or not v["int8_io"],
        message="--int8_io needs --precision=int8", **fv)
    flags.register_multi_flags_validator(
        ["precision", "int8_io", "frames_input"],
        lambda v: not v["frames_input"] or (v["precision"] == "int8" and not v["int8_io"]),
        message="--frames_input goes with --precision=int8 (and a float output: no --int8_io)", **fv)
    flags.register_multi_flags_validator(
        ["precision", "qat_epochs"], lambda v: not v["qat_epochs"] or v["precision"] == "int8",
        message="--qat_epochs needs --precision=int8", **fv)
    flags.register_multi_flags_validator(
        ["qat_epochs", "frames_input", "pack_channels"],
        lambda v: not v["qat_epochs"] or not (v["frames_input"] or v["pack_channels"] is not None),
        message="--qat_epochs makes a file of normalised clips in its own graph: --frames_input "
                "and --pack_channels are for post-training quantization", **fv)


def _tflite_output(value):
    # Any other name would hold a TFLite file that ONNX Runtime or OpenVINO fail to parse.
    cli.output_file(value)
    if value and not value.lower().endswith(".tflite"):
        raise flags.ValidationError("expected a file name ending in .tflite")
    return True


def export(model_name, weights, num_classes, frames, size, precision, output, data_root=None,
           num_calibration=64, int8_io=False, pack_channels=None, normalization=None,
           downsample=None, model_file=None, verify=True, frames_input=False, qat_epochs=0,
           log=None):
    """Builds `model_name` (or loads `model_file`), optionally calibrates on the training
    pipeline (clips normalised and sampled as the model was trained: what the ``.keras``
    file records, else `normalization` and `downsample`; a value that differs from the
    file's is refused), converts, verifies (fp32 and fp16 against the model; int8 by its
    top-1 agreement on validation clips) and writes the file and its metadata sidecar
    (`pack_channels`: `DeploymentGraph`'s, None its default). Returns a dict: path, bytes,
    max_rel_error (None when not verified), sidecar, and for a verified int8 file
    top1_agreement and clips. ``frames_input`` (int8): the file takes uint8 frames and
    applies the calibration clips' normalisation itself (`tflite.convert`'s ``frames``).
    ``qat_epochs`` (int8): quantization-aware training on `data_root` instead of
    post-training quantization (`_quantization_aware`); the report's ``qat`` says which
    epoch was kept; `log` prints its lines."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if qat_epochs and (precision != "int8" or frames_input or pack_channels is not None):
        # as the flags' checks say it (a Python caller has none of them)
        raise ValueError("`qat_epochs` makes an int8 file of normalised clips in its own graph: "
                         "it needs `precision='int8'`, and `frames_input` and `pack_channels` "
                         "are post-training quantization's. Received: "
                         f"precision={precision!r}, frames_input={frames_input}, "
                         f"pack_channels={pack_channels}")
    if precision == "int8" and data_root is None:
        raise ValueError("`precision='int8'` needs `data_root` (calibration clips). "
                         f"Received: data_root={data_root}")
    from keras_efficient3d import artifacts, create_model
    from keras_efficient3d.deploy import DeploymentGraph, tflite

    if model_file is not None:
        model = artifacts.load_model(artifacts.keras_model_file(model_file, "export_tflite.py"),
                                     compile=False)
        model_name = None
    else:
        try:
            model = create_model(model_name, input_shape=(frames, size, size, 3),
                                 num_classes=num_classes, weights=weights)
        except OSError as err:  # h5py's messages do not say which file
            raise OSError(f"cannot read the weights {weights}: {err}") from err
    metadata = artifacts.export_metadata(model, model_file, model_name, weights=weights)
    data = None
    artifacts.refuse_other_pipeline(metadata, model_file or weights, normalization, downsample)
    pipeline = {"normalization": "original", "downsample": 1, **metadata.pipeline_arguments()}
    pipeline.update({k: v for k, v in (("normalization", normalization),
                                       ("downsample", downsample)) if v is not None})
    # An int8 file is quantised for these clips, and a float one told them is fed them: its
    # sidecar says so, for predict to feed it the same. A float file keeps what the model
    # records otherwise (none: predict says what it assumes, in a note).
    if precision == "int8" or downsample is not None:
        metadata = dataclasses.replace(metadata, downsample=int(pipeline["downsample"]))
    if precision == "int8" or normalization is not None:
        from keras_efficient3d.data.normalization import Normalization

        metadata = dataclasses.replace(metadata, normalization=None if metadata.preprocessing_included
                                       else Normalization.coerce(pipeline["normalization"]))
    validation, agreement_on = None, "validation"
    if precision == "int8":
        from keras_efficient3d import data as kdata

        common = dict(sample_duration=int(model.inputs[0].shape[1]),
                      sample_size=int(model.inputs[0].shape[2]), batch_size=8, **pipeline)
        records, _ = kdata.index_dataset(data_root, "train")
        data = kdata.make_dataset(records, "val", **common)
        if verify:  # the agreement check's clips, as export.py's OpenVINO int8 measures it
            val_records, note = kdata.agreement_records(data_root)
            if note:
                print(f"note: {note}", file=sys.stderr)
                agreement_on = "training"
            validation = kdata.make_dataset(val_records, "val", **common)
    frames = None
    if frames_input:
        if metadata.preprocessing_included:
            raise ValueError("--frames_input: the model already takes frames and normalises them "
                             "itself (its metadata says preprocessing_included)")
        frames = metadata.normalization
        metadata = artifacts.frames_metadata(metadata, frames)
    qat = None
    with tflite.naming_the_data(data_root):
        if qat_epochs:
            blob, qat = _quantization_aware(model, metadata, data_root, common, data,
                                            num_calibration, qat_epochs, int8_io, log)
        else:
            graph = DeploymentGraph(model, pack_channels=pack_channels)
            blob = tflite.convert(graph, precision, representative_data=data,
                                  num_calibration=num_calibration, int8_io=int8_io, frames=frames)
        error = tflite.verify_tflite(blob, model, precision) if verify else None
        agreement = None if validation is None else dict(
            tflite.int8_agreement(blob, model, validation, frames=frames),
            agreement_on=agreement_on)
    artifacts.atomic_write(output, blob)
    return {"path": output, "bytes": len(blob), "max_rel_error": error,
            "sidecar": artifacts.write_sidecar(output, tflite.sidecar_metadata(blob, metadata)),
            **(agreement or {}), **({"qat": qat} if qat else {})}


def _in_the_models_classes(records, classes, labels, outputs, where, log):
    """`records` (of `classes`, a split's) with labels that index the model's outputs: by
    the model's class names (`labels`) where it records them; the data's order otherwise,
    for as many classes as outputs. Raises ValueError for classes the model has not."""
    import dataclasses

    from keras_efficient3d.label_sets import class_key

    if labels:
        index = {class_key(name): i for i, name in enumerate(labels)}
        unknown = [name for name in classes if class_key(name) not in index]
        if unknown:
            raise ValueError(f"--qat_epochs: {where}'s class {unknown[0]!r} is none of the "
                             f"{len(labels)} classes the model records (QAT trains its own "
                             "classes): --data_root of the data it was trained on")
        order = [index[class_key(name)] for name in classes]
    else:
        if len(classes) != outputs:
            raise ValueError(f"--qat_epochs: the model records no class names and has {outputs} "
                             f"outputs, {where} {len(classes)} classes")
        log(f"note: the model records no class names: {where}'s classes are taken as its "
            "outputs, in their order")
        order = list(range(len(classes)))
    return [dataclasses.replace(r, label=order[r.label]) for r in records if r.label >= 0]


def _quantization_aware(model, metadata, data_root, common, calibration, num_calibration,
                        epochs, int8_io, log):
    """(TFLite bytes, what was kept): `model` with fake-quant ops, calibrated on
    `calibration`, fine-tuned on `data_root`'s training split for `epochs`, the epoch of
    best validation accuracy kept (`quantize.fine_tune_qat`), converted to int8."""
    from keras_efficient3d import data as kdata
    from keras_efficient3d.deploy import quantize

    outputs = int(model.output_shape[-1])
    records, classes = kdata.index_dataset(data_root, "train")
    train = _in_the_models_classes(records, classes, metadata.labels, outputs, data_root, log)
    try:
        records, classes = kdata.index_dataset(data_root, "validation")
    except kdata.DataError:
        records = []
    if records:
        val = _in_the_models_classes(records, classes, metadata.labels, outputs, data_root,
                                     lambda line: None)
    else:
        log(f"note: {data_root} has no validation split: the epoch kept is the one of best "
            "accuracy on its training clips")
        val = train
    train_ds = kdata.make_dataset(train, "train", **common)
    val_ds = kdata.make_dataset(val, "val", **common)
    qat = quantize.quantize_model(model, calibration, num_calibration=num_calibration)
    kept, accuracies = quantize.fine_tune_qat(qat, train_ds, val_ds, epochs)
    log(f"QAT: kept epoch {kept} of {epochs}; validation accuracy by epoch (0: calibrated, "
        "before the first): " + ", ".join(f"{100 * a:.2f}%" for a in accuracies))
    return quantize.convert_qat(qat, int8_io=int8_io), {
        "epochs": epochs, "kept_epoch": kept, "validation_accuracy_by_epoch": accuracies}


def main(argv, flag_values=flags.FLAGS):
    del argv
    f = flag_values
    cli.refuse_beside_model_file(f, _OF_THE_MODEL,
                                 "architecture, classes, clip shape and weights")
    if f.precision != "int8":
        cli.refuse_unused(f, ("num_calibration",), f"--precision={f.precision}",
                          "it is int8's calibration")
    name = os.path.splitext(os.path.basename(f.model_file))[0] if f.model_file else f.model
    output = f.output or f"{name}_{f.precision}.tflite"
    cli.output_parent(output)
    if f.verify and runtime.missing_packages("ai_edge_litert"):
        # said before the conversion, not as a traceback after it
        raise cli.UsageError("--verify runs the file in LiteRT (ai_edge_litert), which is not "
                             f"installed: {runtime.install_command('ai_edge_litert')}, or --noverify")
    try:
        report = export(f.model, f.weights, f.num_classes, f.frames, f.size, f.precision,
                        output, f.data_root, f.num_calibration, f.int8_io, f.pack_channels,
                        f.normalization, f.downsample, model_file=f.model_file,
                        verify=f.verify, frames_input=f.frames_input, qat_epochs=f.qat_epochs)
    except AssertionError as err:  # the file converts, but differs from the Keras model
        raise SystemExit(f"{os.path.basename(__file__)}: verification failed: "
                         f"{cli.error_line(err)}") from None
    checked = ("" if report["max_rel_error"] is None else
               f", max relative error {report['max_rel_error']:.2g} against Keras")
    if "top1_agreement" in report:
        checked = (f", top-1 agreement with the float model {100 * report['top1_agreement']:.1f}% "
                   f"on {report['clips']} {report.get('agreement_on', 'validation')} clips")
    print(f"Wrote {output} ({report['bytes'] / 1e6:.2f} MB{checked}) and {report['sidecar']}")
    if not cli.random_weights(f):  # else the note below says the figure means nothing
        runtime.warn_low_agreement(report.get("top1_agreement"), report.get("clips"))
    cli.note_random_weights(f, "a file to time or to check the export with",
                            agreement="top1_agreement" in report)


if __name__ == "__main__":
    cli.run(main, define_flags)
