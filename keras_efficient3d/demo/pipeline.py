"""The deployment half of the main job: trained Keras model -> TFLite fp32, PTQ int8 and
QAT int8, each scored on the validation videos and timed, plus the files `predict` runs.

    report = deploy_demo(model, train_config, val_records, classes, "runs/demo")
    publish(report, "saved_models")    # the shipped model, its TFLite forms and its card
"""

import os
import shutil
import tempfile

import keras
import numpy as np

from keras_efficient3d import evaluation, trainer
from keras_efficient3d.artifacts import (
    atomic_write,
    move_entries,
    save_model,
    write_sidecar,
)
from keras_efficient3d.deploy import quantize, tflite
from keras_efficient3d.runtime import TFLiteRunner, time_interleaved

BASENAME = "synthetic_gestures"


def model_metadata(config, classes, extra=None):
    """Metadata recorded with every exported form (read by `keras_efficient3d.predict`):
    the training run's (`trainer.model_metadata`)."""
    return trainer.model_metadata(config, classes, extra=extra)


def _score(predict_fn, records, classes, config):
    return evaluation.evaluate(predict_fn, records, classes, config.frames, config.size,
                               config.downsample, config.normalization, batch_size=8)


def deploy_demo(model, config, val_records, classes, output_dir, qat_epochs=2, threads=2,
                log=print, train_ds=None, val_ds=None):
    """Exports and scores fp32, PTQ-int8 and QAT-int8 TFLite forms of `model`. `train_ds`,
    `val_ds`: the training run's pipelines (`trainer.train`'s), whose caches hold the decoded
    videos and clips (new ones decode them all again: half a minute of the demo); None
    builds them."""
    models_dir = os.path.join(output_dir, "models")
    os.makedirs(models_dir, exist_ok=True)
    if train_ds is None or val_ds is None:
        train_records, train_classes = trainer.load_split(config, "train")
        new_train, new_val = trainer.make_datasets(config, train_records, val_records,
                                                   train_classes)
        train_ds = new_train if train_ds is None else train_ds
        val_ds = new_val if val_ds is None else val_ds
    report = {"threads": threads, "files": {}}
    runners = {}

    metadata = model_metadata(config, classes)

    def record(key, data, note=""):
        path = os.path.join(models_dir, f"{BASENAME}_{key}.tflite")
        atomic_write(path, data)
        # what predict feeds it (the frame step, the normalisation, the class names): without
        # it, predict assumed every frame and the 'original' normalisation, and erred
        write_sidecar(path, tflite.sidecar_metadata(data, metadata))
        runner = runners[key] = TFLiteRunner(data, num_threads=threads, strict=False)
        results = _score(runner.predict, val_records, classes, config)
        report[key] = {"video_top1": results["video_top1"], "clip_top1": results["clip_top1"],
                       "threads": threads, "size_kb": len(data) / 1024,
                       "xnnpack_partitions": runner.partitions(), "path": path, "note": note}
        report["files"][key] = path
        log(f"  TFLite {key}: video top-1 {100 * results['video_top1']:.2f}%, {len(data) / 1024:.0f} KB")

    record("fp32", tflite.convert(model, "fp32"))
    record("ptq_int8", tflite.convert(model, "int8", representative_data=train_ds,
                                      num_calibration=64), "post-training quantization")
    if qat_epochs:
        qat = quantize.quantize_model(model, train_ds, num_calibration=64)
        kept, accuracies = quantize.fine_tune_qat(qat, train_ds, val_ds, qat_epochs)
        log(f"  QAT: kept epoch {kept} of {qat_epochs}; validation accuracy by epoch (0: "
            f"calibrated, before the first): "
            + ", ".join(f"{100 * a:.2f}%" for a in accuracies))
        record("qat_int8", quantize.convert_qat(qat),
               f"quantization-aware training, {qat_epochs} epochs, kept epoch {kept} (best "
               "validation accuracy)")
        report["qat_int8"].update(kept_epoch=kept, validation_accuracy_by_epoch=accuracies)
    # Timed in turns once all exist: timed each right after its scoring, the PTQ file once
    # read 1.4 ms against the QAT file's 0.9 (the same int8 graph; 0.88 both, in turns).
    rounds = time_interleaved({key: r.timing_step(0)[0] for key, r in runners.items()},
                              rounds=3, warmup=5, runs=30)
    for key, medians in rounds.items():
        report[key].update(latency_ms=float(np.median(medians)), round_medians_ms=medians)
        log(f"  TFLite {key}: {report[key]['latency_ms']:.1f} ms/clip ({threads} threads, "
            f"median of 3 rounds in turns)")
    return report


PUBLISHED = (f"{BASENAME}.keras", f"{BASENAME}_fp32.tflite", f"{BASENAME}_fp32.tflite.json",
             f"{BASENAME}_int8.tflite", f"{BASENAME}_int8.tflite.json", "MODEL_CARD.md")


def check_publish(destination):
    """Refuses (ValueError, one line) a `publish` destination the files cannot be written
    into: found out before the demo trains, not after."""
    if os.path.exists(destination) and not os.path.isdir(destination):
        raise ValueError(f"--publish={destination}: not a folder")
    for name in PUBLISHED:
        if os.path.isdir(os.path.join(destination, name)):
            raise ValueError(f"--publish={destination}: {name} there is a folder, not a file")
    try:
        os.makedirs(destination, exist_ok=True)
        tempfile.TemporaryFile(dir=destination).close()
    except OSError as err:
        raise ValueError(f"--publish={destination}: cannot write there "
                         f"({err.strerror or err})") from None


def publish(report, model_path, config, classes, float_results, destination="saved_models"):
    """Copies the demo's model into `destination` in .keras, fp32 .tflite and int8 .tflite
    (QAT when available) with metadata and a model card; returns the paths written.

    Every file is written into a staging folder inside `destination` first and moved into
    place at the end, so a failure leaves the files of an earlier publish as they were,
    not a new model beside an old card."""
    check_publish(destination)
    deploy = report.get("deploy", {})
    int8_key = "qat_int8" if "qat_int8" in deploy else "ptq_int8"
    card = {"accuracy_video_top1": {"keras": float_results["video_top1"]}, "latency_ms": {}}
    for key in ("fp32", int8_key):
        if key in deploy:
            card["accuracy_video_top1"][key] = deploy[key]["video_top1"]
            card["latency_ms"][key] = deploy[key]["latency_ms"]
    metadata = model_metadata(config, classes, {"card": card})
    model = keras.saving.load_model(model_path, compile=False)
    with tempfile.TemporaryDirectory(prefix=".publish-", dir=destination,
                                     ignore_cleanup_errors=True) as stage:
        save_model(model, os.path.join(stage, f"{BASENAME}.keras"), metadata)
        for key, name in (("fp32", "fp32"), (int8_key, "int8")):
            if key in deploy:
                target = os.path.join(stage, f"{BASENAME}_{name}.tflite")
                shutil.copyfile(deploy[key]["path"], target)
                write_sidecar(target, tflite.sidecar_metadata(target, metadata))
        atomic_write(os.path.join(stage, "MODEL_CARD.md"),
                     model_card(report, config, classes, float_results, int8_key))
        staged = move_entries(stage, destination)
    return [os.path.join(destination, name) for name in staged
            if name.endswith((".keras", ".tflite"))]


def _machine():
    """The publishing machine in a few words: "2-core x86_64" (the card once said 2-core x86
    whatever the machine was)."""
    import platform

    return f"{os.cpu_count() or '?'}-core {platform.machine() or 'unknown architecture'}"


_OUTSIDE_THE_DATA = (
    "The accuracies are of clips like the training ones. On other motion the model's scores "
    "are no calibrated probabilities, and the int8 file's top-1 can differ from the float "
    "files', confidently.")


def model_card(report, config, classes, float_results, int8_key):
    deploy = report.get("deploy", {})
    lines = [
        f"# {BASENAME}: {config.model} {config.width_mult}x trained on the synthetic gestures",
        "",
        "Made by the main job (`./demo.sh --publish=saved_models`), from scratch, on the embedded synthetic "
        "gesture dataset (motion-only classes; see `keras_efficient3d/data/synthetic.py`).",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | 3D {config.model} width {config.width_mult} (`keras_efficient3d.create_model`) |",
        f"| input | {config.frames} frames x {config.size} x {config.size} RGB, every "
        f"{config.downsample}nd frame, NDHWC float32 |",
        f"| normalisation | '{config.normalization}' preset: pixels / 255, no mean, no std |",
        f"| labels | {', '.join(classes)} |",
        f"| output | logits over {len(classes)} classes |",
        f"| training | {config.epochs} epochs, {config.optimizer} lr {config.learning_rate} "
        f"cosine, batch {config.batch_size}, seed {config.seed} |",
        "",
        "| form | file | video top-1 | clip top-1 | latency (batch 1, 2 threads) | size |",
        "|---|---|---|---|---|---|",
        f"| Keras float32 | {BASENAME}.keras | {100 * float_results['video_top1']:.2f}% | "
        f"{100 * float_results['clip_top1']:.2f}% | - | - |",
    ]
    for key, name in (("fp32", "fp32"), (int8_key, "int8")):
        if key in deploy:
            d = deploy[key]
            lines.append(f"| TFLite {key} | {BASENAME}_{name}.tflite | {100 * d['video_top1']:.2f}% | "
                         f"{100 * d['clip_top1']:.2f}% | {d['latency_ms']:.1f} ms | {d['size_kb']:.0f} KB |")
    lines += ["", f"Validation: {float_results['num_videos']} synthetic videos "
              "(video accuracy = softmax averaged over the windows of each video). Latency "
              f"measured by the demo on the machine that produced the model ({_machine()}).", "",
              _OUTSIDE_THE_DATA, ""]
    return "\n".join(lines)
