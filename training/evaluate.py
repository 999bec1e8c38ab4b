"""Evaluate a trained model: clip and video top-1/top-5, per-class accuracy, confusion matrix.

    python training/evaluate.py --model_file=runs/jester/best.keras \\
        --dataset=jester --data_root=/data/jester --output_dir=runs/jester

Frames, size, downsample and normalisation default to the run's config.json (beside the
model file) when there is one.
"""

import json
import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("model_file", None, "A .keras model (best.keras / last.keras of a run).")
    flags.DEFINE_string("dataset", None, "jester, kinetics600, ucf101, folders or synthetic "
                        "(default: the run's).")
    flags.DEFINE_string("data_root", None, "Dataset folder (default: the run's).")
    flags.DEFINE_string("annotations", None, "Annotation files (default: the run's).")
    flags.DEFINE_string("split", "validation", "validation or train.")
    flags.DEFINE_integer("frames", None, "Frames per clip.")
    flags.DEFINE_integer("size", None, "Clip size.")
    flags.DEFINE_integer("downsample", None, "Temporal stride.")
    flags.DEFINE_string("normalization", None, "Normalisation preset.")
    flags.DEFINE_integer("batch_size", 8, "Clips per batch.")
    flags.DEFINE_string("output_dir", None, "Where results go (default: beside the model).")


def evaluate_file(model_file, dataset=None, data_root=None, annotations=None, split="validation",
                  frames=None, size=None, downsample=None, normalization=None, batch_size=8,
                  output_dir=None):
    """Evaluates a .keras file; returns (results, json path, confusion png)."""
    from keras_efficient3d import evaluation, trainer  # first: sets TensorFlow's CPU options

    import keras

    if not model_file or not os.path.isfile(model_file):
        raise ValueError(f"No model file at {model_file!r}.")
    run_config = os.path.join(os.path.dirname(os.path.abspath(model_file)), "config.json")
    base = trainer.TrainConfig()
    if os.path.exists(run_config):
        with open(run_config) as handle:
            saved = json.load(handle)
        saved["lr_steps"] = tuple(saved.get("lr_steps", ()))
        base = trainer.TrainConfig(**saved)
    overrides = {"dataset": dataset, "data_root": data_root, "annotations": annotations,
                 "frames": frames, "size": size, "downsample": downsample,
                 "normalization": normalization}
    for key, value in overrides.items():
        if value is not None:
            setattr(base, key, value)
    records, classes = trainer.load_split(base, split)
    model = keras.saving.load_model(model_file, compile=False)
    results = evaluation.evaluate(evaluation.keras_predict_fn(model), records, classes,
                                  base.frames, base.size, base.downsample, base.normalization,
                                  batch_size)
    out = output_dir or os.path.dirname(os.path.abspath(model_file))
    json_path, png = evaluation.write_results(results, out)
    return results, json_path, png


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from keras_efficient3d import evaluation
    from keras_efficient3d.data import DataError

    try:
        results, json_path, png = evaluate_file(
            FLAGS.model_file, FLAGS.dataset, FLAGS.data_root, FLAGS.annotations, FLAGS.split,
            FLAGS.frames, FLAGS.size, FLAGS.downsample, FLAGS.normalization, FLAGS.batch_size,
            FLAGS.output_dir)
    except (ValueError, DataError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(evaluation.format_report(results, f"Evaluation of {FLAGS.model_file}"))
    print(f"results: {json_path}\nconfusion matrix: {png}")
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
