"""Generic folder datasets: ``<root>/<split>/<class>/<video file or frame folder>``.

Class names are the sorted union of the class folders of *every* split folder
under ``root`` (or the given ``classes``), so train and validation agree on
class indices even when a split lacks a class.
"""

from __future__ import annotations

import os

from keras_efficient3d.data.decode import DataError, is_video_file
from keras_efficient3d.data.records import IndexSummary, VideoRecord, make_record

__all__ = ["agreement_records", "index_dataset", "index_folders"]


def _subfolders(path):
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _listed(names, limit=8):
    """The first names and how many more: a Jester root's 148,000 folder names are no
    one-line message."""
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def index_folders(
    root: str | os.PathLike,
    split: str | None = "train",
    classes=None,
    count_frames: bool = False,
) -> tuple[list[VideoRecord], list[str]]:
    """Index ``<root>/<split>/<class>/*``.

    Args:
        root: dataset folder.
        split: split folder name; ``None`` for ``<root>/<class>/*`` without splits.
        classes: class names in index order; by default the sorted union of the
            class folders of ``train``, ``val`` and `split` (another folder of the root, an
            unlabelled test set or notes, names no class).
        count_frames: open each video file now to read its frame count (frame
            folders are always listed).

    Returns:
        ``(records, class_names)``. Entries that are neither video files (by
        extension) nor folders are ignored; empty frame folders are skipped and
        summarised.

    Raises:
        DataError: missing root or split folder, or no video at all.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataError("dataset folder not found", root)
    split_root = root if split is None else os.path.join(root, split)
    if not os.path.isdir(split_root):
        raise DataError(f"split folder {split!r} not found (found: {_listed(_subfolders(root)) or 'no folder'})",
                        split_root)
    if classes is None:
        if split is None:
            class_names = _subfolders(root)
        else:
            splits = [s for s in dict.fromkeys(("train", "val", split))
                      if os.path.isdir(os.path.join(root, s))]
            class_names = sorted({c for s in splits for c in _subfolders(os.path.join(root, s))})
    else:
        class_names = [str(c) for c in classes]
    unknown = sorted(set(_subfolders(split_root)) - set(class_names))
    if unknown:
        # the list given (a model's class names), shown: a folder named otherwise
        # ("Swiping_Down" for "Swiping Down") is then plain to see
        shown = class_names if len(class_names) <= 10 else class_names[:10] + ["..."]
        raise DataError(f"class folder(s) {unknown} are not among the {len(class_names)} "
                        f"classes {shown}", split_root)
    if split is None and {"train", "val"} <= set(class_names):
        # the root of the splits indexed as if it had none: every class folder of train/ and
        # val/ read as an empty frame folder of the classes "train" and "val"
        _refuse_splits_as_classes(class_names, split_root, "this folder holds splits")
    summary = IndexSummary("folders", split or "-", root=root)
    records = []
    for label, class_name in enumerate(class_names):
        class_dir = os.path.join(split_root, class_name)
        if not os.path.isdir(class_dir):
            continue
        for name in sorted(os.listdir(class_dir)):
            path = os.path.join(class_dir, name)
            if name.startswith("."):
                continue
            if not (os.path.isdir(path) or is_video_file(name)):
                # counted in the summary: a video of an extension not read would show
                ext = os.path.splitext(name)[1].lower()
                summary.ignored[ext] = summary.ignored.get(ext, 0) + 1
                continue
            record = make_record(path, label, os.path.splitext(name)[0], summary, count=count_frames)
            if record is not None:
                records.append(record)
    if not records:
        loose = [name for name in sorted(os.listdir(split_root)) if is_video_file(name)]
        if loose:  # the class is the folder a video is in: videos beside them have none
            shown = (f"{len(loose)} videos ({loose[0]}, ...) lie" if len(loose) > 1
                     else f"a video ({loose[0]}) lies")
            raise DataError(f"no video in a class folder; {shown} in the folder itself: put "
                            "each in a folder named after its class", split_root)
        if split is None and ("train" in class_names or "val" in class_names):
            _refuse_splits_as_classes(class_names, split_root, "no video file or frame folder found")
        raise DataError("no video file or frame folder found", split_root)
    summary.log()
    return records, class_names


def _refuse_splits_as_classes(class_names, root, what):
    splits = [name for name in ("train", "val") if name in class_names]
    are = "folders train and val are splits" if len(splits) == 2 else f"folder {splits[0]} is a split"
    raise DataError(f"{what}: its {are}, not classes; index one: split={splits[0]!r}", root)


def index_dataset(root: str | os.PathLike, split: str = "train") -> tuple[list[VideoRecord], list[str]]:
    """Index `root` in whichever layout the trainer reads it: the Jester layout where its
    labels CSV is (``--dataset=jester`` or ``synthetic``), else a folder of class folders
    (``--dataset=folders``: ``<root>/train|val/<class>/``). For the programs with no
    ``--dataset`` flag of their own (the exporters' int8 calibration).

    Args:
        root: dataset folder.
        split: ``"train"`` or ``"validation"`` (``"val"`` too; ``val/`` of a folder of class
            folders).

    Raises:
        DataError: a folder in neither layout, or the indexer's own errors.
    """
    from keras_efficient3d.data.jester import LABELS_CSV, index_jester

    root = os.fspath(root)
    if split not in ("train", "validation", "val"):
        raise ValueError(f"`split` must be 'train' or 'validation'. Received: split={split!r}")
    if not os.path.isdir(root):
        raise DataError("dataset folder not found", root)
    if os.path.isfile(os.path.join(root, LABELS_CSV)):
        return index_jester(root, "train" if split == "train" else "validation")
    if any(os.path.isdir(os.path.join(root, name)) for name in ("train", "val")):
        return index_folders(root, "train" if split == "train" else "val")
    found = _subfolders(root)
    if found:
        # class folders without split folders (UCF-101's own videos, whose splits are lists
        # kept apart): every video, as the training split (calibration reads no label)
        if split != "train":
            raise DataError(f"no {LABELS_CSV} (the Jester layout) and no val/ folder (class "
                            "folders without split folders)", root)
        why = ""
        try:
            records, classes = index_folders(root, None)
        except DataError as err:
            records, why = [], f"; as class folders alone: {err.reason}"
        if records:
            return records, classes
        why = why or "; as class folders alone: no video in them"
    else:
        why = ""
    raise DataError(f"neither dataset layout: no {LABELS_CSV} (the Jester layout) and no "
                    f"train/ or val/ folder of class folders (found: {_listed(found) or 'no folder'})"
                    f"{why}", root)


def agreement_records(root):
    """``(records, note)``: the clips of `root`'s validation split for an int8 export's
    agreement check, or, where it has none (no split file or folder, or an empty one), its
    training split with a note saying so (None otherwise); `index_dataset`'s layouts."""
    try:
        records, _ = index_dataset(root, "validation")
        if records:
            return records, None
        why = "its validation split is empty"
    except DataError as err:
        why = f"no validation split ({err.reason})"
    records, _ = index_dataset(root, "train")
    return records, f"the int8 agreement check runs on training clips: {why}"
