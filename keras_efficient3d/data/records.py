"""The plain record every dataset indexer returns, and helpers the indexers share."""

from __future__ import annotations

import dataclasses
import logging
import os

from keras_efficient3d.data.decode import (
    VIDEO_EXTENSIONS,
    DataError,
    count_frames,
    list_frame_files,
    missing_frames,
)

__all__ = ["VideoRecord", "IndexSummary", "VideoFinder", "make_record", "read_annotation_lines",
           "normalise_split"]

logger = logging.getLogger("keras_efficient3d.data")

KINDS = ("video", "frames")


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    """One labelled video on disk.

    Attributes:
        path: the video file, or the folder of its frames.
        label: class index into the indexer's class-name list; -1 when unlabelled
            (test splits).
        video_id: the dataset's own identifier (Jester id, YouTube clip key, file stem).
        kind: ``'video'`` (decoded with OpenCV) or ``'frames'`` (folder of images).
        num_frames: frame count when known at index time, else ``None`` (counted
            when the clip is loaded).
    """

    path: str
    label: int
    video_id: str
    kind: str
    num_frames: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={self.kind!r}")
        if self.num_frames is not None and self.num_frames <= 0:
            raise ValueError(f"`num_frames` must be positive or None. Received: num_frames={self.num_frames}")


@dataclasses.dataclass
class IndexSummary:
    """What an indexer found and what it skipped (missing or empty videos)."""

    dataset: str
    split: str
    found: int = 0
    missing: list[str] = dataclasses.field(default_factory=list)
    empty: list[str] = dataclasses.field(default_factory=list)
    duplicates: list[str] = dataclasses.field(default_factory=list)  # "file:line (of line N)"
    reasons: dict = dataclasses.field(default_factory=dict)  # why an unreadable one was skipped
    root: str | None = None  # the folder the videos were looked for in
    # files beside the videos that are none (by extension): {extension: count}
    ignored: dict = dataclasses.field(default_factory=dict)
    # frame folders whose numbering skips frames, read as they are: "path (3 missing, first
    # 00012.jpg)"
    gaps: list[str] = dataclasses.field(default_factory=list)
    # where the labels were read, when they are a layout's files beside the videos (Jester's
    # CSVs): a data root one folder down then needs --annotations to find them
    annotations: str | None = None

    def _elsewhere(self) -> str:
        """Where the missing videos are, when none was found under `root` but the first is
        under one of its folders (the download's ``20bn-jester-v1/`` under the root given)."""
        if self.found or not self.missing or not self.root:
            return ""
        relative = os.path.relpath(self.missing[0], self.root)
        if relative.startswith(os.pardir):
            return ""
        try:  # a root of many folders is a dataset's own, not the folder above it
            folders = sorted(entry.path for entry in os.scandir(self.root) if entry.is_dir())[:64]
        except OSError:
            return ""
        stem = os.path.splitext(relative)[0]
        for folder in folders:
            if any(os.path.exists(os.path.join(folder, name)) for name in (relative, stem)):
                also = (f", and --annotations={self.annotations} (where the CSVs are)"
                        if self.annotations else "")
                return f"; they are under {folder}: give that folder as the data root{also}"
        return ""

    def report(self) -> str:
        text = (f"{self.dataset} [{self.split}]: {self.found} "
                f"video{'' if self.found == 1 else 's'} indexed")
        if self.missing:
            text += (f", {len(self.missing)} missing and skipped (first: {self.missing[0]})"
                     f"{self._elsewhere()}")
        if self.empty:
            why = self.reasons.get(self.empty[0])
            text += (f", {len(self.empty)} empty/unreadable and skipped (first: {self.empty[0]}"
                     f"{': ' + why if why else ''})")
        if self.duplicates:
            text += (f", {len(self.duplicates)} duplicate rows skipped (first: "
                     f"{self.duplicates[0]})")
        if self.gaps:
            folders = "frame folder" + ("" if len(self.gaps) == 1 else "s")
            text += (f", {len(self.gaps)} {folders} with frames missing from the numbering, read "
                     f"as they are: their clips jump there (first: {self.gaps[0]})")
        if self.ignored:
            counts = sorted(self.ignored.items(), key=lambda item: (-item[1], item[0]))
            shown = ", ".join(f"{ext or 'no extension'} {n}" for ext, n in counts[:6])
            total = sum(self.ignored.values())
            text += (f"; {total} other file{'' if total == 1 else 's'} ignored ({shown}"
                     f"{', ...' if len(counts) > 6 else ''}: not a video extension)")
        return text

    def log(self) -> None:
        if self.missing or self.empty or self.duplicates or self.gaps:
            logger.warning(self.report())
        else:
            logger.info(self.report())


class VideoFinder:
    """Finds a listed video by its name without the extension, from cached folder listings
    (existence checks for 400k Kinetics videos without 10M stats): a video file of any
    extension OpenCV reads, in either case (a list naming ``.avi`` where the files were
    re-encoded to ``.mp4``, or are ``.AVI``: all were missing before), else a frame folder
    of that name. The name itself keeps its case (YouTube ids differ by case alone)."""

    def __init__(self):
        self._cache: dict[str, tuple[dict, frozenset]] = {}

    def _listing(self, folder):
        if folder not in self._cache:
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                names = []
            videos = {}
            for name in names:
                stem, ext = os.path.splitext(name)
                if ext.lower() in VIDEO_EXTENSIONS:  # of two, the earlier extension there (.mp4)
                    kept = videos.get(stem)
                    if kept is None or VIDEO_EXTENSIONS.index(ext.lower()) < \
                            VIDEO_EXTENSIONS.index(os.path.splitext(kept)[1].lower()):
                        videos[stem] = name
            self._cache[folder] = (videos, frozenset(names))
        return self._cache[folder]

    def find(self, folders, stem, extension=None):
        """The first of `folders` that holds `stem` (`extension`, the listed file's, wins
        over another): its path, or None."""
        for folder in folders:
            videos, names = self._listing(folder)
            if extension and stem + extension in names:
                return os.path.join(folder, stem + extension)
            if stem in videos:
                return os.path.join(folder, videos[stem])
            if stem in names and os.path.isdir(os.path.join(folder, stem)):
                return os.path.join(folder, stem)
        return None


def make_record(
    path: str,
    label: int,
    video_id: str,
    summary: IndexSummary,
    count: bool = True,
) -> VideoRecord | None:
    """A record for ``path`` (video file or frame folder), or ``None`` if it is skipped.

    Missing paths, frame folders without images and (when counted) unreadable
    videos are recorded in ``summary`` rather than raised: in real downloads some
    videos are always missing. Frame folders are always listed (one directory
    read, and the only way to know their length); video files are opened only if
    ``count`` (opening 400k Kinetics files at index time costs minutes), otherwise
    their frames are counted when a clip is loaded.
    """
    if os.path.isdir(path):
        try:
            files = list_frame_files(path)
        except DataError as err:
            summary.empty.append(path)
            summary.reasons[path] = err.reason
            return None
        num_frames = len(files)
        gap = missing_frames(files)
        if gap is not None:
            summary.gaps.append(f"{path} ({gap[0]} missing, first {gap[1]})")
        summary.found += 1
        return VideoRecord(path, label, video_id, "frames", num_frames)
    if os.path.isfile(path):
        num_frames = None
        if os.path.getsize(path) == 0:  # a failed download: skipped and said, as a missing one
            summary.empty.append(path)
            return None
        if count:
            try:
                num_frames = count_frames(path)
            except DataError as err:
                summary.empty.append(path)
                summary.reasons[path] = err.reason
                return None
        summary.found += 1
        return VideoRecord(path, label, video_id, "video", num_frames)
    summary.missing.append(path)
    return None


def read_annotation_lines(path: str | os.PathLike) -> list[tuple[int, str]]:
    """Non-blank, stripped lines of an annotation file with their 1-based numbers.

    Raises:
        DataError: the file is missing or not UTF-8 text.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError("annotation file not found", path)
    try:
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
    except UnicodeDecodeError as error:
        raise DataError(f"annotation file is not UTF-8 text ({error.reason})", path) from None
    # Lines end at "\n" only (a "\r" before it goes with the strip): `splitlines` also
    # breaks at form feeds and Unicode separators, which shifted the lines' numbers.
    return [(number, line.strip()) for number, line in enumerate(text.split("\n"), 1)
            if line.strip()]


def class_names_of(lines, path) -> list[str]:
    """The class names of `lines` (``(line number, name)``, `read_annotation_lines`) in
    order. Raises `DataError` for a name given twice (its label would be the last's)."""
    names, seen = [], {}
    for number, name in lines:
        if name in seen:
            raise DataError(f"duplicate class name {name!r} (first on line {seen[name]})", path, number)
        seen[name] = number
        names.append(name)
    return names


def normalise_split(split: str, aliases: dict[str, tuple[str, ...]]) -> str:
    """The canonical split name for ``split`` (e.g. ``'val'`` -> ``'validation'``)."""
    for canonical, names in aliases.items():
        if split == canonical or split in names:
            return canonical
    accepted = sorted({canonical for canonical in aliases} | {n for names in aliases.values() for n in names})
    raise ValueError(f"`split` must be one of {accepted}. Received: split={split!r}")
