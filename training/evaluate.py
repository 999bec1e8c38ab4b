"""Evaluate a trained model: clip and video top-1/top-5, per-class accuracy, confusion matrix.

    python training/evaluate.py --model_file=runs/jester/best.keras \\
        --dataset=jester --data_root=/data/jester --output=runs/jester

Frames, size, downsample and normalisation default to the run's config.json (beside the
model file) when there is one. Bad input ends with one line on stderr and exit status 2.
"""

import json
import os

from absl import flags

from keras_efficient3d import cli


def define_flags(flag_values=flags.FLAGS):
    fv = {"flag_values": flag_values}
    cli.define("model_file", None, "A .keras model (best.keras / last.keras of a run).",
               required=True, **fv)
    for name in ("dataset", "data_root", "annotations"):
        cli.define(name, None, "(default: the run's)", **fv)
    flags.DEFINE_enum("split", "validation", ["validation", "train"], "Split to evaluate.", **fv)
    for name in ("frames", "size", "downsample", "normalization"):
        cli.define(name, None, "(default: the run's)", **fv)
    cli.define("batch_size", 8, **fv)
    cli.define("output", None, "A folder for the results (default: beside the model).",
               check=cli.output_folder, **fv)
    cli.define_alias("output_dir", "output", **fv)


def evaluate_file(model_file, dataset=None, data_root=None, annotations=None, split="validation",
                  frames=None, size=None, downsample=None, normalization=None, batch_size=8,
                  output_dir=None):
    """Evaluates a .keras file; returns (results, json path, confusion png)."""
    import keras  # after keras_efficient3d (imported with cli), which sets TensorFlow's options

    from keras_efficient3d import evaluation, trainer

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


def main(argv, flag_values=flags.FLAGS):
    del argv
    from keras_efficient3d import evaluation

    f = flag_values
    results, json_path, png = evaluate_file(
        f.model_file, f.dataset, f.data_root, f.annotations, f.split, f.frames, f.size,
        f.downsample, f.normalization, f.batch_size, f.output)
    print(evaluation.format_report(results, f"Evaluation of {f.model_file}"))
    print(f"results: {json_path}\nconfusion matrix: {png}")


if __name__ == "__main__":
    cli.run(main, define_flags)
