"""Decoding video files and JPEG frame folders into RGB uint8 clips.

Every reader here returns frames as a ``(T, H, W, 3)`` uint8 array in RGB order,
whatever the source: OpenCV decodes to BGR, so the conversion happens once, here.

JPEG folders are decoded with OpenCV too. ``python -m keras_efficient3d.data.benchmark
--compare_jpeg`` times it against ``tf.io.decode_jpeg`` run in-graph, 16 frames per
element: on the project's 2-core machine neither won consistently (runs under
varying load gave 1,850-2,500 vs 970-4,800 frames/s), and either is far above what
training consumes (16 x 16 = 256 frames/s). What decides is error handling: a
corrupt frame must be *caught per sample*, counted and skipped: an in-graph
decode error can only be dropped wholesale with ``ignore_errors`` (uncounted, and
swallowing real errors too), whereas inside the per-sample Python function it is
an ordinary :class:`DataError`. It also keeps one code path (frame indices ->
RGB frames) for videos and frame folders.

Every failure is a :class:`DataError` whose message names the offending file, so
that a corrupt sample in a dataset of 100k videos can be found.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = [
    "DataError",
    "check_opencv_path",
    "TruncatedVideoError",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "is_video_file",
    "list_frame_files",
    "missing_frames",
    "count_frames",
    "read_video",
    "read_frame_folder",
    "read_image",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# Containers OpenCV's FFmpeg reads (a .wmv or .flv in a class folder was ignored unseen).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".3gp", ".ogv", ".mts", ".m2ts")

# Seeking costs a keyframe search; below this many frames, reading forward is as fast
# and never depends on the container's index being right.
_SEEK_THRESHOLD = 48


class DataError(ValueError):
    """A data file or annotation is missing, malformed or undecodable.

    Args:
        message: what is wrong.
        path: the file concerned; prefixed to the message.
        line: 1-based line number in ``path`` (annotation files); prefixed too.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.reason = message
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
            where += ": "
        super().__init__(where + message)


class TruncatedVideoError(DataError):
    """A video holds fewer decodable frames than requested (``available`` of them)."""

    def __init__(self, path, available: int, requested: int):
        self.available = available
        self.requested = requested
        super().__init__(
            f"video ends after {available} decodable frames, frame {requested} was requested "
            "(truncated file or wrong frame count in the container)",
            path,
        )


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has one of :data:`VIDEO_EXTENSIONS` (case-insensitive)."""
    return os.fspath(path).lower().endswith(VIDEO_EXTENSIONS)


def _natural_key(name: str):
    # "img_10.jpg" after "img_9.jpg" even without zero padding.
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


_NO_DIGITS = str.maketrans("", "", "0123456789")


def list_frame_files(folder: str | os.PathLike) -> list[str]:
    """Image files of a frame folder, in natural (numeric-aware) order.

    Raises:
        DataError: the folder is missing, not a folder, holds no image file, or holds images
            named in several ways (``00001.jpg`` and ``image_00001.jpg``: one video's frames
            extracted twice, read as one video of twice the frames, in an order of neither).
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DataError("frame folder not found" if not os.path.exists(folder) else "not a folder", folder)
    names = [
        entry.name
        for entry in os.scandir(folder)
        if entry.name.lower().endswith(IMAGE_EXTENSIONS) and not entry.name.startswith(".")
    ]
    if not names:
        raise DataError("frame folder holds no image file (empty video)", folder)
    names.sort(key=_natural_key)
    schemes = {}
    for name in names:  # the name without its digits (translate: half re.sub's time)
        schemes.setdefault(name.lower().translate(_NO_DIGITS), name)
    if len(schemes) > 1:
        shown = list(schemes.values())
        raise DataError(f"frame folder holds images named in {len(schemes)} ways ("
                        f"{', '.join(shown[:3])}{', ...' if len(shown) > 3 else ''}): one "
                        "video's frames extracted twice? keep one set", folder)
    return [os.path.join(folder, name) for name in names]


_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def missing_frames(files: Sequence[str]) -> tuple[int, str] | None:
    """``(how many, the first missing name)`` of the frames a frame folder's numbering skips
    (``00012.jpg`` absent between ``00011.jpg`` and ``00013.jpg``), or None. Its files are
    read as they are, so a clip jumps where frames are missing: said, not refused (a
    dataset's folder of one lost frame still trains). `files` in natural order, one naming
    scheme (`list_frame_files`)."""
    if len(files) < 2:
        return None
    first, last = (_LAST_NUMBER.search(os.path.basename(files[i])) for i in (0, -1))
    if first is None or last is None:
        return None
    skipped = int(last[1]) - int(first[1]) + 1 - len(files)
    if skipped <= 0:
        return None
    expected = int(first[1])
    width = len(first[1]) if first[1].startswith("0") else 1  # zero-padded names stay so
    for path in files:
        name = os.path.basename(path)
        found = _LAST_NUMBER.search(name)
        if found is None:
            return None
        if int(found[1]) != expected:
            return skipped, name[:found.start(1)] + str(expected).zfill(width) + name[found.end(1):]
        expected += 1
    return None


def check_opencv_path(path: str, error=DataError) -> str:
    """`path`, checked to be a name OpenCV can take: one that is not valid UTF-8 (Python
    holds its undecodable bytes as surrogates) crashed the process in OpenCV's
    VideoCapture and VideoWriter (a segmentation fault: every later video of a run lost)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise error("the file name is not valid UTF-8, which OpenCV cannot open: rename it",
                    path) from None
    return path


_quiet = {"lock": threading.Lock(), "depth": 0, "level": None}


@contextlib.contextmanager
def opencv_quiet():
    """OpenCV logs a warning for every file it cannot open; the caller reports it once. Its
    log level is the process's: the decoders of parallel tf.data map calls share one quiet
    spell, the level of before it restored when the last of them ends (each restoring its
    own left it silent for good, when two overlapped)."""
    logging = getattr(cv2.utils, "logging", None)
    if logging is None:  # pragma: no cover - an OpenCV without its logging API
        yield
        return
    with _quiet["lock"]:
        if _quiet["depth"] == 0:
            _quiet["level"] = logging.getLogLevel()
            logging.setLogLevel(logging.LOG_LEVEL_SILENT)
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _quiet["lock"]:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0:
                logging.setLogLevel(_quiet["level"])


def open_capture(path: str) -> cv2.VideoCapture:
    """``cv2.VideoCapture`` of a file, by FFmpeg alone where OpenCV has it: where FFmpeg could
    not read a file (a truncated AVI), OpenCV went on to its own MJPEG reader, which printed
    "Unexpected element. Expected: LIST. Got: JUNK." past every log level (printf), and
    reads nothing FFmpeg does not (a file; a device or a pipe: whichever backend opens it)."""
    # a device (a V4L2 camera's /dev/videoN) is OpenCV's to choose a backend for
    backend = cv2.CAP_FFMPEG if _HAS_FFMPEG and os.path.isfile(path) else cv2.CAP_ANY
    with opencv_quiet():
        return cv2.VideoCapture(check_opencv_path(path), backend)


try:
    _HAS_FFMPEG = cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG)
except AttributeError:  # pragma: no cover - an OpenCV without the registry's API
    _HAS_FFMPEG = False


def _open_video(path: str) -> cv2.VideoCapture:
    if not os.path.exists(path):
        raise DataError("video file not found", path)
    if os.path.getsize(path) == 0:
        raise DataError("video file is empty (0 bytes)", path)
    cap = open_capture(path)
    if not cap.isOpened():
        cap.release()
        raise DataError("cannot open video (corrupt file or unsupported codec)", path)
    return cap


def count_frames(path: str | os.PathLike, exact: bool = False) -> int:
    """Number of frames of a video file or a frame folder.

    Args:
        path: video file or frame folder.
        exact: for videos, decode the whole stream instead of trusting the
            container's frame count (which can be missing or wrong for truncated
            or variable-frame-rate files). Frame folders are always exact.

    Raises:
        DataError: unreadable input, or a video with zero decodable frames.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return len(list_frame_files(path))
    cap = _open_video(path)
    try:
        if not exact:
            reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            if reported > 0:
                return reported
        count = 0
        while cap.grab():
            count += 1
    finally:
        cap.release()
    if count == 0:
        raise DataError("video has no decodable frame", path)
    return count


def read_image(path: str | os.PathLike) -> np.ndarray:
    """One image file as an RGB uint8 ``(H, W, 3)`` array."""
    path = os.fspath(path)
    try:
        buffer = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise DataError(f"cannot read image ({error.strerror or error})", path) from None
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR_RGB) if buffer.size else None
    if image is None:
        raise DataError("cannot decode image (corrupt or not an image)", path)
    return image


def _as_index_array(indices, name="indices") -> np.ndarray:
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size == 0:
        raise ValueError(f"`{name}` must not be empty. Received: {name}={indices!r}")
    if indices.min() < 0:
        raise ValueError(f"`{name}` must be >= 0. Received: {name}={indices.tolist()}")
    return indices


class _Decoded:
    """Frames as decoded, each checked to keep the first one's size and passed through
    `transform` at once: a whole video is held at the transformed size (a 10 s 1080p video
    took 1.9 GB at its own; evaluation decodes one per core)."""

    def __init__(self, path, transform=None):
        self.path, self.transform, self.shape = path, transform, None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.shape is None:
            self.shape = frame.shape
        elif frame.shape != self.shape:
            raise DataError(f"frames change size within the video ({self.shape} then "
                            f"{frame.shape})", self.path)
        return frame if self.transform is None else self.transform(frame[None])[0]


def read_frame_folder(
    folder: str | os.PathLike, indices: Sequence[int] | None = None, files: list[str] | None = None,
    transform=None,
) -> np.ndarray:
    """Frames ``indices`` (0-based positions in the sorted listing) of a frame folder.

    Repeated indices (loop padding) are decoded once.

    Args:
        folder: the frame folder.
        indices: frame positions; all frames when ``None``.
        files: the folder's listing when the caller already has it.
        transform: applied to each frame as it is decoded (a ``(1, H, W, 3)`` array in and
            out), so that the frames are held at its size only.

    Returns:
        ``(len(indices), H, W, 3)`` RGB uint8 (``H, W`` as `transform` makes them).
    """
    folder = os.fspath(folder)
    files = list_frame_files(folder) if files is None else files
    if indices is None:
        indices = np.arange(len(files))
    indices = _as_index_array(indices)
    if indices.max() >= len(files):
        raise DataError(
            f"frame {int(indices.max())} requested but the folder holds {len(files)} frames", folder
        )
    keep = _Decoded(folder, transform)
    decoded = {int(i): keep(read_image(files[i])) for i in np.unique(indices)}
    return np.stack([decoded[int(i)] for i in indices])


def read_video(path: str | os.PathLike, indices: Sequence[int] | None = None,
               transform=None) -> np.ndarray:
    """Frames ``indices`` (0-based) of a video file, decoded with OpenCV, as RGB.

    Indices may repeat and come in any order; each needed frame is decoded once,
    reading forward from the first needed frame (after a seek when it is far in).

    Args:
        path: the video file.
        indices: frame indices; all frames when ``None``.
        transform: as `read_frame_folder`'s.

    Returns:
        ``(len(indices), H, W, 3)`` RGB uint8 (``H, W`` as `transform` makes them).

    Raises:
        TruncatedVideoError: the stream ends before the largest index.
        DataError: missing, empty, corrupt or zero-frame video.
    """
    path = os.fspath(path)
    keep = _Decoded(path, transform)
    cap = _open_video(path)
    try:
        if indices is None:
            frames = []
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                frames.append(keep(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
            if not frames:
                raise DataError("video has no decodable frame", path)
            return np.stack(frames)

        indices = _as_index_array(indices)
        wanted = np.unique(indices)
        position = 0
        first = int(wanted[0])
        if first >= _SEEK_THRESHOLD:
            # OpenCV's FFmpeg backend seeks to the previous keyframe and decodes
            # forward, so the position it reports afterwards is exact; if it does not
            # land where asked, read forward from the start instead.
            if cap.set(cv2.CAP_PROP_POS_FRAMES, first) and int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == first:
                position = first
            else:
                cap.release()
                cap = _open_video(path)
        decoded: dict[int, np.ndarray] = {}
        for target in wanted:
            target = int(target)
            while position < target:
                if not cap.grab():
                    break
                position += 1
            ok, frame = cap.read() if position == target else (False, None)
            if not ok:
                if position == 0:
                    # Nothing decodable at all: not a short video but a broken one.
                    raise DataError("video has no decodable frame", path)
                raise TruncatedVideoError(path, available=position, requested=target)
            decoded[target] = keep(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            position += 1
    finally:
        cap.release()
    return np.stack([decoded[int(i)] for i in indices])
