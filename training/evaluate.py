"""Evaluate a trained model: clip and video top-1/top-5, per-class accuracy, confusion matrix.

    python training/evaluate.py --model_file=runs/jester/best.keras \\
        --dataset=jester --data_root=/data/jester --output=runs/jester

Frames, size, downsample and normalisation default to the run's config.json (beside the
model file) when there is one. Bad input ends with one line on stderr and exit status 2.
"""

import json
import os
import sys

from absl import flags

from keras_efficient3d import cli
from keras_efficient3d.data import synthetic
from keras_efficient3d.data.normalization import Normalization
from keras_efficient3d.label_sets import run_labels


def define_flags(flag_values=flags.FLAGS):
    fv = {"flag_values": flag_values}
    cli.define("model_file", None, "A .keras model (best.keras / last.keras of a run), or an "
               "export of one: .tflite, .onnx, OpenVINO .xml (with its .json sidecar, which says "
               "the clips it takes).", required=True, **fv)
    for name in ("dataset", "data_root", "annotations"):
        cli.define(name, None, "(default: the run's, else what the model records)", **fv)
    flags.DEFINE_integer("ucf101_fold", None, "UCF-101 split 1, 2 or 3 (default: the run's, "
                         "else what the model records)", lower_bound=1, upper_bound=3, **fv)
    flags.DEFINE_enum("split", "validation", ["validation", "train"], "Split to evaluate.", **fv)
    for name in ("frames", "size", "downsample", "normalization"):
        cli.define(name, None, "(default: the run's)", **fv)
    cli.define("batch_size", 8, **fv)
    cli.define("output", None, "A folder for the results (default: beside the model).",
               check=cli.output_folder, **fv)
    cli.define_alias("output_dir", "output", **fv)


def _shown(value):
    from keras_efficient3d.data.normalization import Normalization

    if isinstance(value, Normalization):
        name = value.preset_name
        return f"'{name}'" if name else f"{value.channel_order} {value.value_range}"
    return value


def _recorded_labels(model_file, metadata):
    if metadata is not None and metadata.labels:
        return metadata.labels, "its metadata"
    beside = run_labels(model_file)
    if beside is not None:
        return beside, os.path.join(os.path.dirname(os.path.abspath(model_file)), "labels.txt")
    return None, None


def _in_the_models_order(records, classes, labels, model_file, where, note):
    """(records, classes) with the labels indexing the model's outputs, where the model names
    the dataset's classes in another order (the authors' Jester checkpoints number them
    alphabetically, jester-v1-labels.csv does not), with a note; other names are refused."""
    import dataclasses

    from keras_efficient3d.label_sets import class_key as key
    index = {key(name): i for i, name in enumerate(labels)}
    if len(labels) != len(classes) or len(index) != len(labels) or \
            set(index) != {key(name) for name in classes}:
        first = next((i for i, (a, b) in enumerate(zip(labels, classes)) if a != b), None)
        detail = (f"{len(labels)} names vs {len(classes)}" if first is None
                  else f"class {first}: {labels[first]!r} vs {classes[first]!r}")
        raise ValueError(f"{model_file}: the class names in {where} differ from the dataset's "
                         f"({detail})")
    how = ("names the dataset's classes with underscores for spaces" if
           [key(name) for name in labels] == [key(name) for name in classes] else
           "numbers the dataset's classes in another order")
    note(f"{model_file} {how} ({where}): each video's label is taken by its class name")
    moved = [index[key(name)] for name in classes]
    records = [record if record.label < 0 else dataclasses.replace(record, label=moved[record.label])
               for record in records]
    return records, list(labels)


def evaluate_file(model_file, dataset=None, data_root=None, annotations=None, split="validation",
                  frames=None, size=None, downsample=None, normalization=None, batch_size=8,
                  output_dir=None, log=None, ucf101_fold=None):
    """Evaluates a .keras file; returns (results, json path, confusion png).

    Unset options come from the run's config.json beside the model, else from the model's
    recorded metadata, else from its input shape (each such choice is one ``note:`` line on
    stderr). A model whose class count, labels, clip length or frame size contradicts the
    dataset or the flags is refused before any clip is decoded: a Keras model is never fed
    another shape, and a head of another size would report an accuracy that means nothing.
    """
    from keras_efficient3d import artifacts, evaluation, trainer

    def note(text):
        (log or (lambda line: print(line, file=sys.stderr)))(f"note: {text}")

    exported = bool(model_file) and model_file.lower().endswith(EXPORTS)
    if not model_file or not (model_file.endswith(".keras") or exported):  # Keras reads no X.KERAS
        raise cli.UsageError(f"--model_file must be a .keras model (the extension in lower "
                             f"case) or an export ({', '.join(EXPORTS)}: OpenVINO's IR). "
                             f"Received: {model_file!r}")
    if dataset is not None and dataset not in trainer.DATASETS:
        raise cli.UsageError(f"--dataset={dataset}: expected one of {', '.join(trainer.DATASETS)}")
    run_config = os.path.join(os.path.dirname(os.path.abspath(model_file)), "config.json")
    from_run = os.path.exists(run_config)
    # a run's results go into its folder; a shipped or converted model's folder (a
    # repository's, a download's) is not the user's to write into: the current one instead
    out = output_dir or (os.path.dirname(os.path.abspath(model_file)) if from_run else os.getcwd())
    cli.writable_folder(out, "--output" if output_dir else
                        "the model's folder (--output)" if from_run else "the current folder (--output)")
    if exported:
        from keras_efficient3d.runtime import load_runner

        runner = load_runner(model_file)
        model = _Shapes(runner)
    else:
        model = artifacts.load_model(model_file, compile=False)
    metadata = artifacts.read_metadata(model_file)
    base = trainer.TrainConfig(data_root="")
    if from_run:
        try:
            with open(run_config, encoding="utf-8") as handle:
                saved = json.load(handle)
            saved["lr_steps"] = tuple(saved.get("lr_steps", ()))
            base = trainer.TrainConfig(**saved)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{run_config}: not a training run's config.json "
                             f"({cli.error_line(err)})") from None
        _prefer_the_models_input(base, metadata, model_file, downsample, normalization, note)
    else:
        # No run beside the model (a shipped or converted model): what the model records.
        model_shape = tuple(model.input_shape[1:3])
        recorded = {}
        if metadata is not None:
            pipeline = metadata.pipeline_arguments()
            trained_on = metadata.extra.get(trainer.TRAINED_ON) or {}
            recorded = {"dataset": trained_on.get("dataset"),
                        "ucf101_fold": trained_on.get("ucf101_fold"),
                        "frames": metadata.frames, "downsample": pipeline.get("downsample"),
                        "size": (metadata.height_width or (None,))[0],
                        "normalization": pipeline.get("normalization")}
        elif None not in model_shape:
            recorded = {"frames": model_shape[0], "size": model_shape[1]}
        given = {"dataset": dataset, "ucf101_fold": ucf101_fold, "frames": frames, "size": size,
                 "downsample": downsample, "normalization": normalization}
        chosen = {key: value for key, value in recorded.items()
                  if value is not None and given[key] is None}
        for key, value in chosen.items():
            setattr(base, key, value)
        if chosen:
            where = "its metadata" if metadata is not None else "its input shape"
            shown = ", ".join(f"{key} {_shown(value)}" for key, value in chosen.items())
            note(f"no config.json beside {model_file}: {shown} from {where}")
        if dataset is None and recorded.get("dataset") is None:
            note(f"{model_file} records no dataset: the {base.dataset} layout is assumed "
                 "(--dataset)")
        if ucf101_fold is not None and recorded.get("ucf101_fold") not in (None, ucf101_fold):
            # fold k's test videos are other folds' training videos
            print(f"warning: {model_file} was trained on UCF-101 fold "
                  f"{recorded['ucf101_fold']}; fold {ucf101_fold}'s test list holds videos it "
                  "trained on", file=sys.stderr)
    if from_run and ucf101_fold is not None and base.ucf101_fold != ucf101_fold:
        print(f"warning: the run beside {model_file} trained on UCF-101 fold "
              f"{base.ucf101_fold}; fold {ucf101_fold}'s test list holds videos it trained on",
              file=sys.stderr)
    _refuse_other_input(metadata, model_file, downsample, normalization)
    overrides = {"dataset": dataset, "data_root": data_root, "annotations": annotations,
                 "ucf101_fold": ucf101_fold, "frames": frames, "size": size,
                 "downsample": downsample, "normalization": normalization}
    other_root = data_root is not None and (not base.data_root or os.path.realpath(data_root)
                                            != os.path.realpath(base.data_root))
    if from_run and annotations is None and base.annotations and (
            dataset not in (None, base.dataset) or other_root):
        # the run's lists were of its own data: another dataset's (or folder's) are found
        # where that layout keeps them (a --data_root holding its own CSVs was scored on
        # the run's, without a word)
        note(f"the annotations the run beside {model_file} read ({base.annotations}) are not "
             "used for another --dataset or --data_root (--annotations names them)")
        base.annotations = None
    for key, value in overrides.items():
        if value is not None:
            setattr(base, key, value)
    # Shape first: a model that cannot take the clips is refused before the dataset is read.
    trainer.check_model_fits(model, None, base.frames, base.size, model_file)
    if not base.data_root:
        if base.dataset != "synthetic":
            raise cli.UsageError(f"--data_root is needed: no config.json of a training run "
                                 f"beside {model_file}")
        base.data_root = synthetic.cached_gestures(log=note)
    elif from_run and data_root is None and not os.path.isdir(base.data_root):
        # the folder the run trained on, since moved or removed: say where it was read
        raise cli.UsageError(f"the data folder {base.data_root} that {run_config} records does "
                             "not exist; give --data_root")
    labels, where = _recorded_labels(model_file, metadata)
    # The model's class names, where recorded, are what its outputs mean: the split is
    # indexed with them (a split lacking a class must not shift the labels after it).
    records, classes = trainer.load_split(base, split, labels)
    if not records:
        raise ValueError(f"no videos to evaluate in the {base.dataset} dataset's {split} split "
                         f"under {base.data_root}")
    outputs = model.output_shape[-1]
    if outputs is not None and outputs > len(classes):
        # A model trained with --num_classes above the dataset's: its first outputs are the
        # classes (an unused output is scored as a wrong answer). Fewer outputs are refused.
        note(f"{model_file} has {outputs} outputs, the dataset {len(classes)} classes: its "
             f"first {len(classes)} outputs are taken as the classes")
        trainer.check_model_fits(model, None, base.frames, base.size, model_file)
    else:
        trainer.check_model_fits(model, len(classes), base.frames, base.size, model_file)
    if labels is not None and list(labels) != list(classes):
        records, classes = _in_the_models_order(records, classes, labels, model_file, where,
                                                note)
    predict_fn = _frames_fed(runner) if exported else evaluation.keras_predict_fn(model)
    results = evaluation.evaluate(predict_fn, records, classes,
                                  base.frames, base.size, base.downsample, base.normalization,
                                  batch_size, max_decode_failures=base.max_decode_failures)
    # what was scored, in the results: a training split's figures are not a test's
    results["evaluated"] = {
        "dataset": base.dataset, "split": split, "data_root": base.data_root,
        **({"annotations": base.annotations} if base.annotations else {}),
        **({"ucf101_fold": base.ucf101_fold} if base.dataset == "ucf101" else {}),
        "frames": base.frames, "size": base.size, "downsample": base.downsample,
        "normalization": _shown(Normalization.coerce(base.normalization)).strip("'")}
    results["evaluated"]["model_file"] = os.path.abspath(model_file)
    epoch = artifacts.checkpoint_epoch(metadata)
    if epoch is not None:
        results["evaluated"]["epoch"] = epoch
    json_path, png = evaluation.write_results(results, out, results_prefix(model_file, split))
    return results, json_path, png


# What evaluate.py scores besides .keras models: the exports the runtime runs.
EXPORTS = (".tflite", ".onnx", ".xml")


class _Shapes:
    """An exported model's input and output shapes, as a Keras model gives them, for the
    checks that the data fits it (`trainer.check_model_fits`)."""

    def __init__(self, runner):
        spec = runner.input_spec
        self.name = os.path.basename(runner.path)
        self.input_shape = (None, spec.frames, spec.height, spec.width, spec.channels)
        self.output_shape = (None, runner.num_classes)


def _frames_fed(runner):
    """The runner as a predict function of the pipeline's clips: for a model that takes uint8
    frames and normalises them itself (recorded as normalisation 'none': the clips are the
    0-255 pixels, as floats), the frames themselves."""
    import numpy as np

    if not runner.input_spec.uint8_frames:
        return runner
    return lambda clips: runner(np.clip(np.rint(clips), 0, 255).astype(np.uint8))


def results_prefix(model_file, split="validation"):
    """eval (best.keras, the run's model), last_eval, <name>_eval of another model, with
    _train for the training split: two models of one folder do not write over each other's
    (a model named train.keras would have had best.keras' eval_train)."""
    stem = os.path.splitext(os.path.basename(model_file))[0]
    prefix = "eval" if stem == "best" else f"{stem}_eval"
    return prefix if split == "validation" else f"{prefix}_{split}"


def _prefer_the_models_input(base, metadata, model_file, downsample, normalization, note):
    """The frame step and normalisation the model records win over the run's config.json
    beside it: a model copied into another run's folder was scored on that run's clips,
    without a word. Said in a note."""
    if metadata is None:
        return
    recorded = metadata.pipeline_arguments()
    differ = []
    for key, given in (("downsample", downsample), ("normalization", normalization)):
        kept, runs = recorded.get(key), getattr(base, key)
        if kept is None or given is not None:
            continue  # a flag given is checked against the model (_refuse_other_input)
        if _compared(key, kept) != _compared(key, runs):
            differ.append(f"{key} {_shown(_compared(key, kept))} "
                          f"(config.json: {_shown(_compared(key, runs))})")
            setattr(base, key, kept)
    if differ:
        note(f"{model_file} records {', '.join(differ)}, which its clips are made with: it is "
             "not the model of the run beside it?")


def _compared(key, value):
    """A frame step or normalisation (a preset name, a config, a `Normalization`) as two of
    them are compared."""
    return Normalization.coerce(value) if key == "normalization" else value


def _refuse_other_input(metadata, model_file, downsample, normalization):
    """A --downsample or --normalization other than the model records is refused, as predict
    refuses it: the model would be scored on clips it was not trained on."""
    if metadata is None:
        return
    recorded = metadata.pipeline_arguments()
    given = {"downsample": downsample, "normalization": normalization}
    for key, what in (("downsample", "frame step"), ("normalization", "normalisation")):
        kept = recorded.get(key)
        if given[key] is not None and kept is not None and \
                _compared(key, kept) != _compared(key, given[key]):
            raise cli.UsageError(f"{model_file} records its {what} ({_shown(kept)}); "
                                 f"--{key}={downsample if key == 'downsample' else normalization} "
                                 "differs: leave it out")


def main(argv, flag_values=flags.FLAGS):
    del argv
    from keras_efficient3d import evaluation

    f = flag_values
    results, json_path, png = evaluate_file(
        f.model_file, f.dataset, f.data_root, f.annotations, f.split, f.frames, f.size,
        f.downsample, f.normalization, f.batch_size, f.output, ucf101_fold=f.ucf101_fold)
    scored = results["evaluated"]
    fold = f", fold {scored['ucf101_fold']}" if "ucf101_fold" in scored else ""
    print(evaluation.format_report(results, f"Evaluation of {f.model_file} on the "
                                            f"{scored['dataset']} {scored['split']} split{fold}"))
    print(f"results: {json_path}\nconfusion matrix: {png}")


if __name__ == "__main__":
    cli.run(main, define_flags)
