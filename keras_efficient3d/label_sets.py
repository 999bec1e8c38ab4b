"""The class lists shipped with the package (``resources/labels/<name>.txt``), read without
anything but the standard library: the converter and the presets record them on any
backend, and `keras_efficient3d.predict.labels` reads label files of every other kind."""

import os

__all__ = ["LABEL_SETS", "LABELS_DIR", "class_key", "run_labels", "shipped_labels"]

LABELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources", "labels")

# `jester` in jester-v1-labels.csv's order (the order this project's training numbers the
# official CSVs' classes in), `ucf101` in classInd.txt's. `jester_original` is Jester's
# classes in the order the original code numbers them, which its published Jester
# checkpoints' outputs follow: its annotation_Jester/categories.txt lists them alphabetically
# ("1 Doing_other_things" ... "21 Thumb_Up" ...), and its jester.json takes their indices
# from it.
LABEL_SETS = {"jester": 27, "jester_original": 27, "ucf101": 101}


def shipped_labels(name):
    """The class names of the shipped set `name` (a key of `LABEL_SETS`)."""
    if name not in LABEL_SETS:
        raise ValueError(f"`name` must be one of {sorted(LABEL_SETS)}. Received: name={name!r}")
    with open(os.path.join(LABELS_DIR, f"{name}.txt"), encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def class_key(name):
    """A class name as compared between a model and a dataset or labels file: the original's
    annotation JSON writes Jester's classes with underscores ("Swiping_Left")."""
    return str(name).replace("_", " ")


def run_labels(model_file):
    """The class names of the training run a model file sits in: the ``labels.txt`` that
    train.py writes beside last.keras and best.keras (None where there is none, or it is
    unreadable or empty)."""
    where = os.path.join(os.path.dirname(os.path.abspath(model_file)), "labels.txt")
    try:
        with open(where, encoding="utf-8") as handle:
            names = [line.strip() for line in handle if line.strip()]
    except (OSError, UnicodeDecodeError):
        return None
    return names or None
