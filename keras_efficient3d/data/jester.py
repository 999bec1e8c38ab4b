"""20BN-Jester, as distributed: JPEG frame folders plus the official CSV files.

Layout::

    <root>/<video_id>/00001.jpg, 00002.jpg, ...   (or <root>/<video_id>.mp4, a set re-encoded)
    <annotations>/jester-v1-labels.csv       one class name per line
    <annotations>/jester-v1-train.csv        <video_id>;<class name>
    <annotations>/jester-v1-validation.csv   <video_id>;<class name>
    <annotations>/jester-v1-test.csv         <video_id>              (optional)

``annotations`` may instead be the JSON file the original implementation
generates (``utils/jester_json.py``: ``{"labels": [...], "database": {id:
{"subset": "training", "annotations": {"label": ...}}}}``).

Jester is a gesture dataset where left/right matters: never train it with
horizontal flips (the pipeline's default).
"""

from __future__ import annotations

import json
import os

from keras_efficient3d.data.decode import DataError
from keras_efficient3d.data.records import (
    IndexSummary,
    VideoFinder,
    VideoRecord,
    class_names_of,
    make_record,
    normalise_split,
    read_annotation_lines,
)

__all__ = ["index_jester", "read_jester_labels", "LABELS_CSV", "SPLIT_CSVS"]

LABELS_CSV = "jester-v1-labels.csv"
SPLIT_CSVS = {
    "train": "jester-v1-train.csv",
    "validation": "jester-v1-validation.csv",
    "test": "jester-v1-test.csv",
}
_SPLIT_ALIASES = {"train": ("training",), "validation": ("val", "valid"), "test": ("testing",)}
# The original's JSON subset names.
_JSON_SUBSETS = {"train": "training", "validation": "validation", "test": "testing"}


def read_jester_labels(path: str | os.PathLike) -> list[str]:
    """Class names from ``jester-v1-labels.csv``, in file order (= class index)."""
    lines = read_annotation_lines(path)
    for number, name in lines:
        if ";" in name:
            raise DataError(f"expected one class name per line, got {name!r}", path, number)
    if lines and lines[0][1].strip().lower() in ("label", "labels", "name", "class", "classes"):
        # it would be class 0, and every class after it one index off
        raise DataError(f"{lines[0][1]!r} reads as a header: the file lists one class per "
                        "line, without one", path, lines[0][0])
    names = class_names_of(lines, path)
    if not names:
        raise DataError("label file lists no class", path)
    return names


def _read_split_csv(path, class_to_index, with_labels):
    entries = []
    seen: dict[str, int] = {}
    for number, line in read_annotation_lines(path):
        fields = line.split(";")
        if len(fields) != (2 if with_labels else 1) or not fields[0].strip():
            expected = "'<video_id>;<label>'" if with_labels else "'<video_id>'"
            raise DataError(f"malformed line {line!r}, expected {expected}", path, number)
        video_id = fields[0].strip()
        if video_id in seen:
            raise DataError(f"duplicate video id {video_id!r} (first on line {seen[video_id]})", path, number)
        seen[video_id] = number
        if with_labels:
            label_name = fields[1].strip()
            if label_name not in class_to_index:
                header = (" (a header line? the Jester CSVs have none: remove it)"
                          if not entries else "")
                raise DataError(f"label {label_name!r} is not in the label list{header}", path,
                                number)
            entries.append((video_id, class_to_index[label_name]))
        else:
            entries.append((video_id, -1))
    return entries


def _read_json(path, split):
    try:
        with open(path, encoding="utf-8-sig") as handle:  # a BOM, as the CSV readers take
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise DataError(f"invalid JSON ({error.msg})", path, error.lineno) from None
    except UnicodeDecodeError:
        raise DataError("not a UTF-8 text file", path) from None
    expected = ("expected the original's annotation JSON: {'labels': [names], 'database': "
                "{video_id: {'subset': ..., 'annotations': {'label': name}}}}")
    if not isinstance(data, dict) or not isinstance(data.get("labels"), list) or \
            not isinstance(data.get("database"), dict):
        raise DataError(expected, path)
    class_names = [str(name) for name in data["labels"]]
    twice = sorted({name for name in class_names if class_names.count(name) > 1})
    if twice:
        raise DataError(f"'labels' names {twice[0]!r} twice", path)
    class_to_index = {name: i for i, name in enumerate(class_names)}
    subset = _JSON_SUBSETS[split]
    entries = []
    for video_id, value in data["database"].items():
        annotations = value.get("annotations") if isinstance(value, dict) else None
        if not isinstance(value, dict) or not isinstance(annotations or {}, dict):
            raise DataError(f"video {video_id!r}: {expected}", path)
        if value.get("subset") != subset:
            continue
        label_name = (annotations or {}).get("label")
        if label_name is not None and not isinstance(label_name, str):
            raise DataError(f"video {video_id!r}: label {label_name!r} is not a name", path)
        if label_name is None:
            if split != "test":
                raise DataError(f"video {video_id!r} of subset {subset!r} has no label", path)
            entries.append((str(video_id), -1))
        elif label_name not in class_to_index:
            raise DataError(f"video {video_id!r}: label {label_name!r} is not in 'labels'", path)
        else:
            entries.append((str(video_id), class_to_index[label_name]))
    return entries, class_names


def index_jester(
    root: str | os.PathLike,
    split: str = "train",
    annotations: str | os.PathLike | None = None,
    name: str = "jester",
) -> tuple[list[VideoRecord], list[str]]:
    """Index one Jester split.

    Args:
        root: folder holding one frame folder per video id.
        split: ``'train'``, ``'validation'`` (``'val'``) or ``'test'``.
        annotations: folder with the official CSVs, or the original's JSON file;
            defaults to ``root``.
        name: the dataset's name in the log line (another set in Jester's layout, such as
            the synthetic gestures, says its own).

    Returns:
        ``(records, class_names)``. Missing and empty frame folders are skipped and
        summarised in a warning.

    Raises:
        DataError: missing label file, malformed CSV line, unknown label (with file
            and line).
    """
    root = os.fspath(root)
    split = normalise_split(split, _SPLIT_ALIASES)
    annotations = root if annotations is None else os.fspath(annotations)
    if os.path.isfile(annotations) and not annotations.lower().endswith(".json"):
        raise DataError(f"a file: the annotations are a folder holding {LABELS_CSV} and the "
                        "split CSVs, or the original's JSON file", annotations)
    if annotations.lower().endswith(".json"):
        if not os.path.isfile(annotations):
            raise DataError("annotation file not found", annotations)
        entries, class_names = _read_json(annotations, split)
    else:
        labels = os.path.join(annotations, LABELS_CSV)
        if not os.path.isfile(labels):
            # a folder of class folders (the synthetic generator's --layout=video) reads as
            # a missing CSV: say which layout is read
            raise DataError(f"annotation file not found (the {name} dataset is read in the "
                            f"Jester layout: {LABELS_CSV} and the split CSVs beside the frame "
                            "folders or in the folder --annotations names; a folder of class "
                            "folders is --dataset=folders)", labels)
        class_names = read_jester_labels(labels)
        class_to_index = {name: i for i, name in enumerate(class_names)}
        entries = _read_split_csv(
            os.path.join(annotations, SPLIT_CSVS[split]), class_to_index, with_labels=split != "test"
        )
    summary = IndexSummary(name, split, root=root,
                           annotations=annotations if annotations == root else None)
    records = []
    finder = VideoFinder()
    for video_id, label in entries:
        path = os.path.join(root, video_id)
        if not os.path.isdir(path):  # a set re-encoded as videos: <id>.mp4 (it was "missing")
            path = finder.find([root], video_id) or path
        # a video's frames are counted as its clip is loaded (148k files at index time)
        record = make_record(path, label, video_id, summary, count=False)
        if record is not None:
            records.append(record)
    summary.log()
    return records, class_names
