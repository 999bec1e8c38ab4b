"""Class names: the shipped sets (``jester``, ``ucf101``) and label files in the formats the
datasets publish them (classInd.txt, label maps, annotation CSVs, JSON)."""

from __future__ import annotations

import csv
import json
import os
import re

from keras_efficient3d.label_sets import LABEL_SETS, LABELS_DIR
from keras_efficient3d.predict._errors import PredictError, one_line

__all__ = ["LABEL_SETS", "load_labels"]

_KINETICS600_HELP = (
    "the Kinetics-600 class list is not shipped (its exact official order could not be "
    "verified here); give the official file's path instead: a text file with one class per "
    "line in the model's order, a Kinetics annotation CSV (its 'label' column; classes are "
    "then sorted by name), or the original's kinetics.json (its 'labels', "
    "the order of the validation CSV it was made from, which its models' outputs follow)"
)


def _read_text_labels(path):
    """The names of a text file and their line numbers. classInd.txt's index column ("1
    ApplyEyeMakeup") is taken off when every line has one, numbered from 0 or 1 in order: a
    name of a plain list may begin with a number ("100 metre sprint")."""
    with open(path, encoding="utf-8-sig") as handle:
        lines = [(number, line.strip()) for number, line in enumerate(handle, 1) if line.strip()]
    matches = [re.fullmatch(r"(\d+)[\s,;]+(.+)", line) for _, line in lines]
    if lines and all(matches):
        first = int(matches[0][1])
        if first in (0, 1) and all(int(m[1]) == first + i for i, m in enumerate(matches)):
            return [m[2].strip() for m in matches], [number for number, _ in lines]
    return [line for _, line in lines], [number for number, _ in lines]


def _refuse_repeats(path, labels, lines=None):
    """Two outputs of one name: a result naming it could be either."""
    seen = {}
    for i, label in enumerate(labels):
        if label in seen:
            if lines is not None:
                raise PredictError(f"{path}:{lines[i]}: class '{label}' is named twice "
                                   f"(line {lines[seen[label]]} too)")
            raise PredictError(f"{path}: class '{label}' is named twice (entries {seen[label] + 1} "
                               f"and {i + 1})")
        seen[label] = i


def _read_csv_labels(path):
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    for column in ("label", "name", "class", "class_name"):
        if column in header:
            index = header.index(column)
            values = [row[index].strip() for row in rows[1:] if len(row) > index and row[index].strip()]
            if len(set(values)) == len(values):
                return values  # a label map: one row per class, in order
            # An annotation CSV (one row per video): its labels sorted (the original's
            # kinetics_json.py keeps the order of first appearance in the validation CSV,
            # whose rows the official release lists by label).
            return sorted(set(values))
    if all(len(row) == 1 for row in rows):
        return [row[0].strip() for row in rows]  # jester-v1-labels.csv: one class per line
    raise PredictError(
        f"{path}: cannot find the class names: expected a 'label' (or 'name') column, or one class per line")


def load_labels(name_or_path: str) -> list[str]:
    """Class names by set name (``jester``, ``jester_original``, ``ucf101``: `LABEL_SETS`) or
    from a file.

    Files: ``.txt`` (one class per line; classInd.txt's ``"1 ApplyEyeMakeup"`` lines, all
    numbered in order, lose their index), ``.csv`` (a ``label``/``name`` column: a label map
    when its values are unique, else an annotation CSV whose sorted unique labels are the
    classes, as the original builds them; or one class per line), ``.json`` (a list, or an
    object with a ``labels`` list, as the original's annotation files).

    Raises:
        PredictError: unknown set name, ``kinetics600`` (not shipped), unreadable or empty file,
            a class named twice (with its line).
    """
    name = os.fspath(name_or_path)
    key = name.lower().replace("-", "").replace("_", "")
    if key in ("kinetics600", "kinetics"):
        raise PredictError(_KINETICS600_HELP)
    sets = {s.replace("_", ""): s for s in LABEL_SETS}
    if key in sets and not os.path.isfile(name):  # a dataset folder of that name too
        path = os.path.join(LABELS_DIR, f"{sets[key]}.txt")
    elif os.path.isfile(name):
        path = name
    elif os.path.isdir(name):
        raise PredictError(f"{name}: a folder, not a labels file")
    elif os.sep in name or "/" in name or os.path.splitext(name)[1]:
        raise PredictError(f"{name}: labels file not found")
    else:
        raise PredictError(
            f"unknown label set '{name}': expected one of {', '.join(LABEL_SETS)}, kinetics600 "
            "(with its official file) or the path of a label file")
    lines = None
    try:
        if path.lower().endswith(".json"):
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            labels = data.get("labels") if isinstance(data, dict) else data
            if not isinstance(labels, list):
                raise PredictError(f"{path}: expected a JSON list of class names or an object with 'labels'")
            labels = [str(v) for v in labels]
        elif path.lower().endswith(".csv"):
            labels = _read_csv_labels(path)
        else:
            labels, lines = _read_text_labels(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as err:
        raise PredictError(f"{path}: cannot read the labels ({one_line(err)})") from None
    if not labels:
        raise PredictError(f"{path}: no class names in the labels file")
    _refuse_repeats(path, labels, lines)
    return labels
