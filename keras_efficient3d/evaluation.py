"""Clip- and video-level accuracy, per-class accuracy, confusion matrix.

Users of the original often mixed up its two figures, so both are always reported and
labelled:

* **clip accuracy**: one centre clip per video (the original's validation, ``val_epoch``);
* **video accuracy**: softmax scores averaged over the non-overlapping windows covering the
  whole video (the original's ``test.py`` + ``utils/video_accuracy.py``), the figure the
  paper reports.

`evaluate` takes any ``predict_fn(clips) -> logits`` so that Keras, TFLite and ONNX models
are scored by the same code.
"""

import os

import numpy as np

from keras_efficient3d.artifacts import atomic_write_json, figure, write_png


def _softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _topk(probs, labels, k):
    k = min(k, probs.shape[1])
    ranking = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((ranking == labels[:, None]).any(axis=1).mean()) if len(labels) else 0.0


def _outputs(predict_fn, clips, num_classes):
    """`predict_fn`'s outputs for `clips`, refused where no score can be read from them: a
    NaN or infinite output ranked as class 0 (a diverged model scored 1 / classes), and a
    head with fewer outputs than classes scored the missing classes as never predicted."""
    logits = np.asarray(predict_fn(clips), np.float64)
    if logits.ndim != 2 or logits.shape[0] != len(clips) or logits.shape[1] < num_classes:
        raise ValueError(f"the model's outputs have shape {logits.shape} for {len(clips)} clips: "
                         f"expected ({len(clips)}, {num_classes}) (one score per class of the "
                         "dataset)")
    bad = ~np.isfinite(logits).all(axis=1)
    if bad.any():
        raise ValueError(f"the model's outputs are NaN or infinite for {int(bad.sum())} of "
                         f"{len(clips)} clips (a model whose training diverged?): nothing to score")
    return logits


def keras_predict_fn(model, batch_size=None):
    """A predict function over a Keras model in inference mode, run with BatchNorm folded
    into the convolutions (the same function, 1.2-1.5x faster on a CPU): a
    `keras_efficient3d.runtime.KerasRunner`."""
    from keras_efficient3d.runtime import KerasRunner

    return KerasRunner(model)


def evaluate(predict_fn, records, classes, frames=16, size=112, downsample=1,
             normalization="original", batch_size=8, softmax=True, max_decode_failures=100):
    """Scores `predict_fn` on `records`; returns a JSON-serialisable dict (with the videos
    that failed to decode, left out of every figure, in ``failed_videos``)."""
    from keras_efficient3d import data

    if not records:
        raise ValueError("No videos to evaluate.")
    # One count for both passes: an undecodable video is warned about once, and said in the
    # results (the accuracies are over the videos that decode).
    failures = data.DecodeFailures(max_decode_failures, classes)
    common = dict(sample_duration=frames, downsample=downsample, sample_size=size,
                  batch_size=batch_size, normalization=normalization, failures=failures)
    # The whole videos first: a video that fails there (a corrupt frame anywhere) is left out
    # of the clip pass too, so that both figures are over the same videos.
    def nothing_decoded():
        return data.DataError(f"none of the {len(records)} videos decoded (the first that "
                              f"failed: {failures.paths[0]}); nothing to score")

    window_probs, window_labels, window_videos = [], [], []
    for clips, labels, videos in data.make_dataset(records, "test", **common):
        logits = _outputs(predict_fn, clips.numpy(), len(classes))
        window_probs.append(_softmax(logits) if softmax else logits)
        window_labels.append(labels.numpy())
        window_videos.append(videos.numpy())
    if not window_probs:
        raise nothing_decoded()
    failed = set(failures.paths)
    decoded = [record for record in records if record.path not in failed]
    clip_probs, clip_labels = [], []
    for clips, labels in data.make_dataset(decoded, "val", **common):
        clip_probs.append(_softmax(_outputs(predict_fn, clips.numpy(), len(classes))))
        clip_labels.append(labels.numpy())
    clip_probs = np.concatenate(clip_probs) if clip_probs else np.zeros((0, 0))
    clip_labels = np.concatenate(clip_labels) if clip_labels else np.zeros(0, np.int32)
    window_probs = np.concatenate(window_probs)
    window_labels = np.concatenate(window_labels)
    window_videos = np.concatenate(window_videos)
    # A centre clip that failed where its whole video decoded (a seek its container refuses):
    # that video leaves the video figures as well.
    if failures.count > len(failed):
        failed = set(failures.paths)
        kept = np.array([records[i].path not in failed for i in window_videos], bool)
        window_probs, window_labels, window_videos = (
            window_probs[kept], window_labels[kept], window_videos[kept])
        if not len(window_videos):
            raise nothing_decoded()
    video = data.video_level_accuracy(window_probs, window_labels, window_videos, topk=(1, 5))
    ids, mean_probs = data.aggregate_video_predictions(window_probs, window_videos)
    video_labels = np.empty(len(ids), np.int64)
    video_labels[np.searchsorted(ids, window_videos)] = window_labels
    predictions = mean_probs.argmax(axis=1)

    num_classes = len(classes)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    # A model may have more outputs than the dataset has classes (trained with a larger
    # --num_classes): a prediction of an unused output is wrong, and has no column.
    named = predictions < num_classes
    np.add.at(confusion, (video_labels[named], predictions[named]), 1)
    totals = np.bincount(video_labels, minlength=num_classes)
    per_class = {}
    for index, name in enumerate(classes):
        total = int(totals[index])
        per_class[name] = {"videos": total,
                           "accuracy": float(confusion[index, index] / total) if total else None}
    return {
        "clip_top1": _topk(clip_probs, clip_labels, 1),
        "clip_top5": _topk(clip_probs, clip_labels, 5),
        "video_top1": video["top1"],
        "video_top5": video["top5"],
        "num_videos": video["num_videos"],
        "num_windows": video["num_clips"],
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "classes": list(classes),
        "failed_videos": failures.paths,
        "num_outputs": int(window_probs.shape[1]),
    }


def top5_can_miss(num_classes):
    """Top-5 accuracy of five classes (or model outputs) or fewer is 1 whatever the model
    does: evaluation's report and training's logs leave it out there."""
    return num_classes > 5


def format_report(results, title="Evaluation"):
    top5 = top5_can_miss(max(len(results.get("classes", ())), results.get("num_outputs", 0)))

    def shown(kind):
        return (f"top-1 {100 * results[f'{kind}_top1']:6.2f}%" +
                (f"   top-5 {100 * results[f'{kind}_top5']:6.2f}%" if top5 else ""))

    failed = results.get("failed_videos") or []
    lines = [
        title,
        f"  clip accuracy  (one centre clip per video): {shown('clip')}",
        f"  video accuracy (all windows, softmax mean):  {shown('video')}",
        f"  {results['num_videos']} videos, {results['num_windows']} windows" +
        (f"; {len(failed)} more failed to decode and are left out (failed_videos in the "
         "results)" if failed else ""),
    ]
    worst = sorted((v["accuracy"], k) for k, v in results["per_class"].items()
                   if v["accuracy"] is not None)[:3]
    if worst:
        lines.append("  weakest classes: " + ", ".join(f"{k} {100 * a:.0f}%" for a, k in worst))
    return "\n".join(lines)


# Past this many classes the figure stops growing and names no class on its axes (their
# indices instead): 600 Kinetics classes at 0.45 inch each made a 30,000-pixel-square
# image that needed about 35 GB to draw.
NAMED_CLASSES = 60


def plot_confusion(results, path):
    cm = np.asarray(results["confusion_matrix"], np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(results["classes"])
    side = 0.45 * min(n, NAMED_CLASSES)
    fig = figure(figsize=(max(5, side + 2), max(4, side + 1.5)))
    ax = fig.add_subplot()
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if n <= NAMED_CLASSES:
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        labels = [c if len(c) <= 18 else c[:17] + "…" for c in results["classes"]]
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        ax.set_yticklabels(labels, fontsize=7)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if normalised[i, j] > 0.5 else "black")
    named = "" if n <= NAMED_CLASSES else " (class index; names in the results' classes)"
    ax.set_xlabel("predicted" + named)
    ax.set_ylabel("true" + named)
    ax.set_title(f"video-level confusion (top-1 {100 * results['video_top1']:.1f}%)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return write_png(fig, path, dpi=110)


def write_results(results, output_dir, prefix="eval"):
    """Writes PREFIX_results.json and PREFIX_confusion.png; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, f"{prefix}_results.json")
    atomic_write_json(json_path, results)
    png = plot_confusion(results, os.path.join(output_dir, f"{prefix}_confusion.png"))
    return json_path, png
