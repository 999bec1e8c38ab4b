"""Kinetics (400/600/700), as distributed: video files plus the official CSV files.

Layout::

    <root>/<split>/<label>/<youtube_id>_<time_start:06d>_<time_end:06d>.mp4
    kinetics_600_<split>.csv:  label,youtube_id,time_start,time_end,split

Download tools differ slightly, so each video is looked for under split folder
``train``/``training``, ``val``/``validation``/``valid``, ``test``/``testing``;
label folder as written or with spaces as underscores; any video extension OpenCV
reads, in either case (`records.VideoFinder`); also the original implementation's
``<root>/<label>/<key>`` (no split folder) and a frame folder named after the key.
Real downloads always miss videos: those are counted, skipped and summarised.
"""

from __future__ import annotations

import csv
import json
import os
import re

from keras_efficient3d.data.decode import VIDEO_EXTENSIONS, DataError
from keras_efficient3d.data.records import (
    IndexSummary,
    VideoFinder,
    VideoRecord,
    class_names_of,
    make_record,
    normalise_split,
    read_annotation_lines,
)

__all__ = ["index_kinetics", "read_kinetics_classes"]

_SPLIT_ALIASES = {"train": ("training",), "val": ("validation", "valid", "validate"), "test": ("testing",)}
_REQUIRED = ("youtube_id", "time_start", "time_end", "split")


def _whole_seconds(text):
    """A CSV's time in whole seconds: ``273``, or ``273.0`` as some copies write it (a file
    name has whole seconds: ``<id>_000273_000283.mp4``)."""
    value = float(text)
    if not value.is_integer() or value < 0:
        raise ValueError(text)
    return int(value)


def _as_list(paths):
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def _read_annotations(path):
    """(rows, the class order the file records or None): the rows of an official CSV (or of
    the original's JSON, `_read_json`) as ``(path, line, label|None, youtube_id, start, end,
    split)``, and a JSON's ``labels``, read in one pass."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError("annotation file not found", path)
    try:
        if path.lower().endswith(".json"):
            return _read_json(path)
        return _read_csv_rows(path), None
    except UnicodeDecodeError:
        raise DataError("not a UTF-8 text file", path) from None


def _read_json(path):
    """(rows, labels) of the original's annotation JSON (utils/kinetics_json.py's: ``labels``,
    and ``database`` by subset, keyed ``<id>_<start>_<end>.mp4``; or ActivityNet's flat
    ``database`` whose entries name their ``subset``, as 3D-ResNets writes it). Its
    ``labels`` are the class order of the original's Kinetics models. Rows have no line."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise DataError(f"not valid JSON ({error.msg})", path, error.lineno) from None
    database = data.get("database") if isinstance(data, dict) else None
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(database, dict) or not (labels is None or isinstance(labels, list)):
        raise DataError("expected the original's annotation JSON: an object with 'labels' and "
                        "'database'", path)
    if all(isinstance(entry, dict) and "subset" in entry for entry in database.values()):
        entries = [(entry["subset"], key, entry) for key, entry in database.items()]
    else:  # utils/kinetics_json.py: {"training": {key: entry}, "validation": {...}}
        entries = [(subset, key, entry) for subset, videos in database.items()
                   if isinstance(videos, dict) for key, entry in videos.items()]
    rows = []
    for subset, key, entry in entries:
        try:
            split = normalise_split(str(subset), _SPLIT_ALIASES)
        except ValueError:
            raise DataError(f"unknown subset {subset!r} of {key!r}", path) from None
        stem = os.path.splitext(key)[0] if key.lower().endswith(VIDEO_EXTENSIONS) else key
        annotations = (entry.get("annotations") if isinstance(entry, dict) else None) or {}
        named = re.fullmatch(r"(.+)_(\d{6})_(\d{6})", stem)
        segment = annotations.get("segment")
        try:
            if named:
                youtube_id, start, end = named[1], int(named[2]), int(named[3])
            else:
                youtube_id, start, end = stem, _whole_seconds(segment[0]), _whole_seconds(segment[1])
        except (ValueError, IndexError, TypeError):
            raise DataError(f"entry {key!r}: expected <youtube_id>_<start>_<end> or a 'segment'",
                            path) from None
        label = annotations.get("label") or None
        rows.append((path, None, label, youtube_id, start, end, split))
    return rows, None if labels is None else [str(name) for name in labels]


def _read_csv_rows(path):
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError("annotation file is empty", path) from None
        except csv.Error as error:  # an unbalanced quote runs the header to the field limit
            raise DataError(f"malformed CSV header ({error})", path, 1) from None
        missing = [name for name in _REQUIRED if name not in header]
        if missing:
            raise DataError(f"header lacks column(s) {missing}; expected {('label',) + _REQUIRED}", path, 1)
        column = {name: header.index(name) for name in header}
        # A record with an unbalanced quote runs on to the end of the file: name the line
        # where it starts, not where the reader stopped.
        starts = reader.line_num + 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as error:  # in a large file, csv's field size limit stops it
                raise DataError(f"malformed CSV from this line on ({error}): an unbalanced "
                                "quote?", path, starts) from None
            number, starts = starts, reader.line_num + 1
            if not any(f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise DataError(f"malformed line: {len(fields)} fields, the header has {len(header)}", path, number)
            try:
                start = _whole_seconds(fields[column["time_start"]])
                end = _whole_seconds(fields[column["time_end"]])
            except ValueError:
                shown = f"{fields[column['time_start']]!r}, {fields[column['time_end']]!r}"
                raise DataError(f"time_start/time_end must be whole seconds (found {shown})",
                                path, number) from None
            label = fields[column["label"]].strip() if "label" in column else None
            raw_split = fields[column["split"]].strip()
            try:
                split = normalise_split(raw_split, _SPLIT_ALIASES)
            except ValueError:
                raise DataError(f"unknown split {raw_split!r}", path, number) from None
            youtube_id = fields[column["youtube_id"]].strip()
            if not youtube_id:
                raise DataError("empty youtube_id", path, number)
            rows.append((path, number, label or None, youtube_id, start, end, split))
    return rows


def read_kinetics_classes(csv_paths) -> list[str]:
    """Sorted class names found in the ``label`` column of the given CSVs."""
    names = set()
    for path in _as_list(csv_paths):
        names.update(row[2] for row in _read_annotations(path)[0] if row[2])
    if not names:
        raise DataError("no labelled row", ", ".join(_as_list(csv_paths)))
    return sorted(names)


def index_kinetics(
    root: str | os.PathLike,
    csv_paths,
    split: str = "train",
    classes=None,
    count_frames: bool = False,
) -> tuple[list[VideoRecord], list[str]]:
    """Index one Kinetics split.

    Args:
        root: the dataset folder (see the module docstring for the layouts found).
        csv_paths: one official CSV or several (e.g. train and val); rows whose
            ``split`` column differs from ``split`` are ignored.
        split: ``'train'``, ``'val'`` (``'validation'``) or ``'test'``.
        classes: class names (a list, or a text file with one per line); by
            default the sorted labels of *all* given CSVs, so pass the same
            CSVs (or classes) for train and val to get the same class indices.
        count_frames: open every video now to read its frame count (slow on the
            full dataset; otherwise frames are counted when a clip is loaded).

    Returns:
        ``(records, class_names)``; test rows without labels get label -1.

    Raises:
        DataError: missing CSV, malformed row, label not in ``classes`` (file and line).
    """
    root = os.fspath(root)
    split = normalise_split(split, _SPLIT_ALIASES)
    csv_paths = _as_list(csv_paths)
    if not csv_paths:
        raise ValueError("`csv_paths` must name at least one CSV file. Received: csv_paths=[]")
    read = [_read_annotations(path) for path in csv_paths]  # each file once: 400k rows
    rows = [row for file_rows, _ in read for row in file_rows]
    recorded = next((labels for _, labels in read if labels is not None), None)
    if classes is None and recorded:
        class_names = recorded  # the original's order, which its models' outputs follow
    elif classes is None:
        class_names = sorted({row[2] for row in rows if row[2]})
    elif isinstance(classes, (str, os.PathLike)):
        class_names = class_names_of(read_annotation_lines(classes), classes)
    else:
        class_names = [str(name) for name in classes]
    class_to_index = {name: i for i, name in enumerate(class_names)}

    split_folders = (split,) + _SPLIT_ALIASES[split]
    listings = VideoFinder()
    summary = IndexSummary("kinetics", split, root=root)
    records = []
    seen = {}  # key -> (file, line) of its first row
    for path, number, label_name, youtube_id, start, end, row_split in rows:
        if row_split != split:
            continue
        if label_name is None:
            if split != "test":
                raise DataError("empty label outside the test split", path, number)
            label = -1
        elif label_name not in class_to_index:
            raise DataError(f"label {label_name!r} is not in the class list", path, number)
        else:
            label = class_to_index[label_name]
        key = f"{youtube_id}_{start:06d}_{end:06d}"
        if key in seen:
            # One clip listed twice (in one CSV, or in two of those given) would be trained
            # on twice and counted twice; the first row is kept, with its label.
            first_path, first_number = seen[key]
            if first_number is None:  # a JSON's entries have no line
                first = f"first in {first_path}"
            else:
                first = f"first on {'' if first_path == path else first_path + ':'}line {first_number}"
            at = path if number is None else f"{path}:{number}"
            summary.duplicates.append(f"{at} ({key} again, {first})")
            continue
        seen[key] = (path, number)
        label_folders = [label_name, label_name.replace(" ", "_")] if label_name else []
        folders = [os.path.join(root, s, lf) for s in split_folders for lf in label_folders]
        folders += [os.path.join(root, s) for s in split_folders]
        folders += [os.path.join(root, lf) for lf in label_folders]
        found = listings.find(folders, key)
        if found is None:
            summary.missing.append(os.path.join(folders[0], key + ".mp4"))
            continue
        record = make_record(found, label, key, summary, count=count_frames)
        if record is not None:
            records.append(record)
    summary.log()
    return records, class_names
