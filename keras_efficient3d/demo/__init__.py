"""The main job: the whole path on the embedded synthetic gestures, end to end.

    python -m keras_efficient3d.demo                      # ./demo.sh does the install too
    python -m keras_efficient3d.demo --output=runs/demo --epochs=30

The application on top of the library: nothing in the package imports it. ``pipeline``
holds its deployment half (TFLite forms, scores, timing, the published files and their card).

1. generate the synthetic gesture dataset (Jester layout: JPEG folders + CSVs), so that
   the same readers as for real Jester run;
2. train a small 3D CNN from scratch with ``model.fit`` (`keras_efficient3d.trainer`);
3. evaluate it: clip and video-level top-1/top-5, per-class accuracy, confusion matrix;
4. deploy it: BatchNorm folding, quantization-aware fine-tuning, TFLite fp32 and int8,
   float-vs-int8 accuracy and TFLite latency (skipped with a note when LiteRT is absent);
5. print a short report and write it to OUTPUT/report.md and OUTPUT/report.json.
"""

import importlib.util
import os
import shutil
import time

from absl import flags

from keras_efficient3d import cli

# Training runs differ (parallel input order, multi-threaded float sums), and this small
# model learns clockwise from anticlockwise turning last: at 18 epochs two of three runs
# ended at 87.5% and 93.1% (one at 99.4%); at 24 epochs without flips nine runs reached
# 90.6-100% (two under 95%). Flips with mirrored labels (a flipped clockwise turn is an
# anticlockwise one) learn more slowly at first but end higher: 97.5-100% in four runs.
EPOCHS = 24


def define_flags(flag_values=flags.FLAGS):
    fv = {"flag_values": flag_values}
    cli.define("output", "runs/demo", "A folder: the dataset, models and report.",
               check=cli.output_folder, **fv)
    cli.define("model", "mobilenetv2", "The model to train.", **fv)
    cli.define("width_mult", 0.2, **fv)
    cli.define("frames", 16, **fv)
    cli.define("size", 64, **fv)
    flags.DEFINE_integer("epochs", EPOCHS, "Training epochs.", lower_bound=1, **fv)
    cli.define("batch_size", 8, **fv)
    flags.DEFINE_float("learning_rate", 5e-3, "Initial learning rate (Adam, cosine schedule).",
                       **fv)
    from keras_efficient3d.data.synthetic import GESTURES

    cli.define("videos_per_class", GESTURES["videos_per_class"], "(20% for validation)", **fv)
    cli.define("seed", 0, "(of the dataset and the training)", **fv)
    flags.DEFINE_bool("deploy", True, "Quantize, export to TFLite and time.", **fv)
    flags.DEFINE_integer("qat_epochs", 2, "Quantization-aware fine-tuning epochs (0: none).",
                         lower_bound=0, **fv)
    flags.DEFINE_string("publish", None, "Also copy the model, its TFLite forms and a model card "
                        "into this folder (the repository's saved_models/ was made so).", **fv)
    flags.register_validator("publish", cli.output_folder, **fv)
    cli.define_alias("output_dir", "output", **fv)


def demo_config(output_dir, data_root, model="mobilenetv2", width_mult=0.2, frames=16, size=64,
                epochs=EPOCHS, batch_size=8, learning_rate=5e-3, seed=0, optimizer="adam",
                crop="center"):
    """The training configuration of the demo (also training/flags/synthetic.flags)."""
    from keras_efficient3d.trainer import TrainConfig

    return TrainConfig(
        dataset="synthetic", data_root=data_root, model=model, width_mult=width_mult,
        frames=frames, size=size, downsample=2, crop=crop, hflip=True,
        normalization="unit", cache=True, optimizer=optimizer, learning_rate=learning_rate,
        lr_schedule="cosine",
        batch_size=batch_size, epochs=epochs, seed=seed, weight_decay=1e-4,
        output_dir=os.path.join(output_dir, "train"), verbose=2,
    )


# What a demo run writes beside its training run (which keeps the one before in train/previous):
# a run stopped, or one that skips the deployment, left the last run's report and models
# beside its own files, the report naming a best.keras that had been replaced.
_OUTPUTS = ("report.json", "report.md", "float_results.json", "float_confusion.png", "models")


def _clear_previous_outputs(output_dir):
    for name in _OUTPUTS:
        path = os.path.join(output_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)


def run(output_dir="runs/demo", model="mobilenetv2", width_mult=0.2, frames=16, size=64,
        epochs=EPOCHS, batch_size=8, learning_rate=5e-3, videos_per_class=None, seed=0, deploy=True,
        qat_epochs=2, publish=None, log=print):
    """Runs the whole demo; returns the report dict."""
    import keras

    from keras_efficient3d import evaluation, trainer
    from keras_efficient3d.data import synthetic

    started = time.time()
    report = {"steps": {}}
    if videos_per_class is not None and videos_per_class < 2:
        # checked before the data is generated: one video per class leaves none to validate on
        raise ValueError(f"--videos_per_class={videos_per_class} leaves no validation video "
                         "(one in five of each class's); give 2 or more")
    if deploy and importlib.util.find_spec("ai_edge_litert") is None:
        if publish:
            raise ValueError("--publish writes the TFLite files, and LiteRT (ai_edge_litert) is "
                             "not installed: pip install -e '.[litert]' (./demo.sh does)")
        log("note: LiteRT (ai_edge_litert) is not installed: the deployment step is skipped "
            "(pip install -e '.[litert]'; ./demo.sh does)")
        deploy = False
        report["deploy"] = {"skipped": "LiteRT (ai_edge_litert) is not installed"}
    if publish:
        from keras_efficient3d.demo import pipeline as deploy_pipeline

        deploy_pipeline.check_publish(publish)  # before the minutes of training, not after
    _clear_previous_outputs(output_dir)
    data_root = os.path.join(output_dir, "data")
    log(f"[1/5] generating the synthetic gestures in {data_root}")
    t0 = time.time()
    # The set training/flags/synthetic.flags trains on (synthetic.GESTURES), in the demo's folder.
    dataset = dict(synthetic.GESTURES, seed=seed)
    if videos_per_class is not None:
        dataset["videos_per_class"] = videos_per_class
    synthetic.generate(data_root, **dataset)
    report["steps"]["generate_s"] = time.time() - t0

    config = demo_config(output_dir, data_root, model, width_mult, frames, size, epochs,
                         batch_size, learning_rate, seed)
    log(f"[2/5] training {model} {width_mult}x on {frames}x{size}x{size} clips for {epochs} epochs")
    t0 = time.time()
    result = trainer.train(config, resume_hint=None)  # the demo has no --resume
    report["steps"]["train_s"] = time.time() - t0
    model_path = result["best_path"]

    log("[3/5] evaluating the best checkpoint")
    t0 = time.time()
    records, classes = trainer.load_split(config, "validation")
    best = keras.saving.load_model(model_path, compile=False)
    results = evaluation.evaluate(evaluation.keras_predict_fn(best), records, classes, frames,
                                  size, config.downsample, config.normalization)
    json_path, confusion_png = evaluation.write_results(results, output_dir, "float")
    report["steps"]["evaluate_s"] = time.time() - t0
    report["float"] = {k: results[k] for k in ("clip_top1", "clip_top5", "video_top1",
                                               "video_top5", "num_videos", "num_windows")}
    report.update(model=f"{model} {width_mult}x", input=f"{frames}x{size}x{size}",
                  classes=classes, model_path=model_path, curves=result["curves"],
                  confusion=confusion_png, train_videos=result["num_train_videos"])
    log(evaluation.format_report(results, "Float model (Keras)"))

    if deploy:
        log("[4/5] deploying: QAT, TFLite fp32/int8, accuracy and latency")
        t0 = time.time()
        from keras_efficient3d.demo import pipeline as deploy_pipeline

        report["deploy"] = deploy_pipeline.deploy_demo(
            best, config, records, classes, output_dir, qat_epochs=qat_epochs, log=log,
            train_ds=result["train_dataset"], val_ds=result["val_dataset"])
        float_top1 = results["video_top1"]
        for key in ("ptq_int8", "qat_int8"):
            if key in report["deploy"]:
                report["deploy"][key]["drop_vs_float_points"] = 100 * (
                    float_top1 - report["deploy"][key]["video_top1"])
        report["steps"]["deploy_s"] = time.time() - t0

    report["total_s"] = time.time() - started
    write_report(report, output_dir)  # first: a publish that fails keeps the run's report
    if deploy and publish:
        report["published"] = deploy_pipeline.publish(report, model_path, config, classes,
                                                      results, publish)
        write_report(report, output_dir)
    log("[5/5] report")
    log(format_report(report))
    return report


def format_report(report):
    f = report["float"]
    lines = [
        f"keras_efficient3d demo: {report['model']} on synthetic gestures "
        f"({len(report['classes'])} motion classes, {report['train_videos']} training videos, "
        f"{f['num_videos']} validation videos)",
        f"  input {report['input']}; total {report['total_s'] / 60:.1f} min "
        f"(train {report['steps']['train_s'] / 60:.1f} min)",
        f"  float: video top-1 {100 * f['video_top1']:.2f}%  clip top-1 {100 * f['clip_top1']:.2f}%",
    ]
    deploy = report.get("deploy")
    if deploy:
        if "skipped" in deploy:
            lines.append(f"  deployment skipped: {deploy['skipped']}")
        else:
            for key in ("fp32", "ptq_int8", "qat_int8"):
                if key in deploy:
                    d = deploy[key]
                    lines.append(
                        f"  TFLite {key:9s}: video top-1 {100 * d['video_top1']:.2f}%  "
                        f"{d['latency_ms']:.1f} ms/clip ({d['threads']} threads)  "
                        f"{d['size_kb']:.0f} KB")
    lines.append(f"  model: {report['model_path']}")
    files = (deploy or {}).get("files")
    if files:  # each with its sidecar (<file>.json), which predict reads
        folder = os.path.dirname(next(iter(files.values())))
        lines.append(f"  TFLite files: {folder}/ ("
                     + ", ".join(os.path.basename(p) for p in files.values()) + ")")
    lines.append(f"  plots: {report['curves']}, {report['confusion']}")
    return "\n".join(lines)


def write_report(report, output_dir):
    from keras_efficient3d.artifacts import atomic_write, atomic_write_json

    atomic_write_json(os.path.join(output_dir, "report.json"), report)
    atomic_write(os.path.join(output_dir, "report.md"), "```\n" + format_report(report) + "\n```\n")


def main(argv, flag_values=flags.FLAGS):
    del argv
    f = flag_values
    from keras_efficient3d import registry

    registry.resolve_name(f.model)  # an unknown name is reported before the dataset is generated
    if not f.deploy:
        cli.refuse_unused(f, ["qat_epochs", "publish"], "--nodeploy",
                          "it skips the deployment step")
    run(f.output, f.model, f.width_mult, f.frames, f.size, f.epochs, f.batch_size,
        f.learning_rate, f.videos_per_class, f.seed, f.deploy, f.qat_epochs, f.publish)
