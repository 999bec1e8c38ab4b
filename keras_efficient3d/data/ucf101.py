"""UCF-101, as distributed: ``.avi`` files (or extracted frame folders) plus the split lists.

Layout::

    <root>/<Class>/v_<Class>_gXX_cYY.avi        (or a frame folder v_<Class>_gXX_cYY/)
    <annotations>/classInd.txt                  "<index 1..101> <Class>"
    <annotations>/trainlist0N.txt               "<Class>/v_....avi <index>"   N = 1, 2, 3
    <annotations>/testlist0N.txt                "<Class>/v_....avi"
"""

from __future__ import annotations

import os

from keras_efficient3d.data.decode import DataError
from keras_efficient3d.data.records import (
    IndexSummary,
    VideoFinder,
    VideoRecord,
    make_record,
    normalise_split,
    read_annotation_lines,
)

__all__ = ["index_ucf101", "read_ucf101_classes"]

_SPLIT_ALIASES = {"train": ("training",), "test": ("testing", "val", "validation")}


def read_ucf101_classes(path: str | os.PathLike) -> list[str]:
    """Class names from ``classInd.txt``; indices must run 1..N in order."""
    names = []
    for number, line in read_annotation_lines(path):
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit():
            raise DataError(f"malformed line {line!r}, expected '<index> <ClassName>'", path, number)
        if int(fields[0]) != len(names) + 1:
            raise DataError(f"class index {fields[0]} out of order, expected {len(names) + 1}", path, number)
        if fields[1] in names:
            raise DataError(f"duplicate class name {fields[1]!r}", path, number)
        names.append(fields[1])
    if not names:
        raise DataError("class list is empty", path)
    return names


def index_ucf101(
    root: str | os.PathLike,
    split: str = "train",
    fold: int = 1,
    annotations: str | os.PathLike | None = None,
    count_frames: bool = True,
) -> tuple[list[VideoRecord], list[str]]:
    """Index one UCF-101 split.

    Args:
        root: folder of ``<Class>/`` folders holding ``.avi`` files or frame folders.
        split: ``'train'`` or ``'test'`` (``'val'`` is accepted for ``'test'``, as
            the original validates on the test list).
        fold: which official split, 1, 2 or 3.
        annotations: folder holding ``classInd.txt`` and the lists; defaults to ``root``.
        count_frames: open each video file now to read its frame count (frame
            folders are always listed).

    Returns:
        ``(records, class_names)``; missing videos are skipped and summarised.

    Raises:
        DataError: missing list file, malformed line, unknown class, or a train
            line whose index disagrees with its class folder (file and line).
    """
    if fold not in (1, 2, 3):
        raise ValueError(f"`fold` must be 1, 2 or 3. Received: fold={fold!r}")
    split = normalise_split(split, _SPLIT_ALIASES)
    root = os.fspath(root)
    annotations = root if annotations is None else os.fspath(annotations)
    class_ind = os.path.join(annotations, "classInd.txt")
    if not os.path.isfile(class_ind):
        # The lists usually sit apart from the videos (ucfTrainTestlist/): say how to name them.
        raise DataError("annotation file not found (name the folder holding classInd.txt and "
                        "the split lists with --annotations)", class_ind)
    class_names = read_ucf101_classes(class_ind)
    class_to_index = {name: i for i, name in enumerate(class_names)}
    list_path = os.path.join(annotations, f"{split}list0{fold}.txt")
    summary = IndexSummary("ucf101", f"{split}{fold}", root=root)
    records = []
    finder = VideoFinder()
    seen = {}  # Class/video -> its first line
    for number, line in read_annotation_lines(list_path):
        fields = line.split()
        if len(fields) not in ((2,) if split == "train" else (1, 2)):
            expected = "'<Class>/<video>.avi <index>'" if split == "train" else "'<Class>/<video>.avi'"
            raise DataError(f"malformed line {line!r}, expected {expected}", list_path, number)
        relative = fields[0].replace("\\", "/")
        if relative.count("/") != 1:
            raise DataError(f"malformed path {relative!r}, expected '<Class>/<video>'", list_path, number)
        if relative in seen:
            raise DataError(f"duplicate video {relative!r} (first on line {seen[relative]})",
                            list_path, number)
        seen[relative] = number
        class_name, file_name = relative.split("/")
        if class_name not in class_to_index:
            raise DataError(f"class {class_name!r} is not in classInd.txt", list_path, number)
        label = class_to_index[class_name]
        if len(fields) == 2:
            if not fields[1].isdigit() or int(fields[1]) - 1 != label:
                raise DataError(
                    f"index {fields[1]!r} disagrees with class {class_name!r} (index {label + 1} in classInd.txt)",
                    list_path,
                    number,
                )
        stem, extension = os.path.splitext(file_name)
        folder = os.path.join(root, class_name)
        # the listed .avi, another video of its name (re-encoded, .AVI) or its frame folder
        path = finder.find([folder], stem, extension) or os.path.join(folder, file_name)
        record = make_record(path, label, stem, summary, count=count_frames)
        if record is not None:
            records.append(record)
    summary.log()
    return records, class_names
