"""Where frames come from: a video file, a frame folder, a folder of either, a camera."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator

import cv2
import numpy as np

from keras_efficient3d.data.decode import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    DataError,
    is_video_file,
    list_frame_files,
    missing_frames,
    open_capture,
    opencv_quiet,
    read_image,
)
from keras_efficient3d.predict._errors import PredictError
from keras_efficient3d.runtime import quiet_stderr

__all__ = ["VideoSource", "capture_frames", "find_sources", "is_stream_url", "opencv_quiet",
           "unread_folders", "video_frames"]


def capture_frames(capture) -> Iterator[np.ndarray]:
    """RGB frames from an object with ``read() -> (ok, BGR frame)`` (``cv2.VideoCapture`` or a
    fake) until ``read`` fails; releases it at the end if it can."""
    try:
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        if hasattr(capture, "release"):
            capture.release()


class VideoSource:
    """Frames of a video file or a frame folder, decoded lazily, with the video's fps and
    each decoded frame's timestamp (`frame_times`)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.fps = None
        self.frame_count = None
        self.decoded = None
        self._times = []  # seconds, one per frame read; None once one is missing or not later
        if os.path.isdir(self.path):
            self.files = list_frame_files(self.path)
            self.frame_count = len(self.files)
            self.missing = missing_frames(self.files)
            self.capture = None
            return
        self.files = None
        self.missing = None  # frames a frame folder's numbering skips: (how many, first name)
        if not os.path.exists(self.path):
            raise DataError("video file not found", self.path)
        # A named pipe or a device file has no size: it is read as the video it carries.
        if os.path.isfile(self.path) and os.path.getsize(self.path) == 0:
            raise DataError("video file is empty (0 bytes)", self.path)
        with quiet_stderr():  # open_capture keeps OpenCV's own log quiet
            self.capture = open_capture(self.path)
            opened = self.capture.isOpened()
        if not opened:
            self.capture.release()
            kind = "a corrupt video or an unsupported codec" if is_video_file(self.path) else "not a video"
            raise DataError(f"cannot open as a video ({kind})", self.path)
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and math.isfinite(fps) and 0 < fps < 1000 else None
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None

    def __iter__(self):
        if self.files is not None:
            for name in self.files:
                yield read_image(name)
            return
        count = 0
        capture = _QuietCapture(self.capture)
        with opencv_quiet():
            for frame in capture_frames(capture):
                count += 1
                if self._times is not None:
                    # the decoder's presentation time of the frame just read: a variable
                    # frame rate (phones, screen captures) makes frame / fps drift
                    stamp = capture.position_ms / 1000.0
                    if math.isfinite(stamp) and stamp >= 0 and (
                            not self._times or stamp > self._times[-1]):
                        self._times.append(stamp)
                    else:
                        self._times = None
                yield frame
        self.decoded = count
        if count == 0:
            if not os.path.isfile(self.path):
                # FFmpeg reads a pipe once, front to back: an MP4 as most tools write it
                # (OpenCV's VideoWriter included) has its index after the frames.
                raise DataError(
                    "no frame decoded from the pipe or device: a stream with its index at the "
                    "end (an MP4 as most tools write it) cannot be read from a pipe; send "
                    "MKV, AVI, MPEG-TS or a faststart MP4 (ffmpeg -movflags +faststart), or "
                    "give the file's path", self.path)
            raise DataError("video has no decodable frame (corrupt or empty stream)", self.path)

    def frame_times(self, first, last):
        """The start and end (seconds) of frames `first` to `last` (read already): the
        decoder's timestamps, the last frame lasting as long as the one before it; frame /
        fps where the stream has no increasing timestamps; None without an fps either."""
        times = self._times
        if times and last < len(times):
            step = times[last] - times[last - 1] if last > 0 else (
                1.0 / self.fps if self.fps else None)
            if step is not None:
                return times[first], times[last] + step
        if self.fps:
            return first / self.fps, (last + 1) / self.fps
        return None

    @property
    def truncated(self):
        """Whether fewer frames decoded than the container declares (after iterating)."""
        return (self.decoded is not None and self.frame_count is not None
                and self.decoded < self.frame_count)


class _QuietCapture:
    """A capture whose reads keep FFmpeg's own messages about a damaged stream ("[mjpeg @
    0x...] huffman table decode error") off the screen: the caller reports the damage once."""

    def __init__(self, capture):
        self.capture = capture

    def read(self):
        with quiet_stderr():
            return self.capture.read()

    @property
    def position_ms(self):
        """The timestamp of the frame read last, in milliseconds."""
        return self.capture.get(cv2.CAP_PROP_POS_MSEC)

    def release(self):
        self.capture.release()


def video_frames(path) -> Iterator[np.ndarray]:
    """RGB uint8 frames of a video file or a frame folder, one at a time.

    Raises:
        DataError: missing, empty, corrupt or non-video file; folder without images.
    """
    return iter(VideoSource(path))


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_stream_url(source) -> bool:
    """Whether SOURCE is a URL for OpenCV's FFmpeg (rtsp://, http://, udp://, file://, ...)
    rather than a path that exists."""
    source = os.fspath(source)
    return bool(_URL.match(source)) and not os.path.exists(source)


def _is_frame_folder(path):
    """A folder of images and no video: a folder of videos that also holds an image (a
    thumbnail, a poster) is a folder of videos, not one clip of that image."""
    images = videos = False
    with os.scandir(path) as entries:
        for e in entries:
            if e.name.startswith(".") or not e.is_file():
                continue
            name = e.name.lower()
            images |= name.endswith(IMAGE_EXTENSIONS)
            videos |= name.endswith(VIDEO_EXTENSIONS)
    return images and not videos


def _natural_key(name):
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def find_sources(path) -> list[str]:
    """The videos a SOURCE path stands for: a video file; a frame folder (holding images);
    or a folder of videos and/or frame folders (its direct entries, in natural order); ``-``
    for the standard input (``/dev/stdin``), where no file of that name exists.

    Raises:
        PredictError: the path does not exist, or a folder holds no video or frame folder.
    """
    path = os.fspath(path)
    if path == "-" and not os.path.exists(path) and os.path.exists("/dev/stdin"):
        return ["/dev/stdin"]  # a video piped in (`cat clip.avi | predict -`)
    if not os.path.exists(path):
        raise PredictError(f"{path}: no such file or folder")
    if not os.path.isdir(path):
        return [path]
    if _is_frame_folder(path):
        return [path]
    sources = _videos_in(path)
    if not sources:
        extensions = ", ".join(ext[1:] for ext in VIDEO_EXTENSIONS)
        # a dataset's split (val/ of class folders): the videos are one level down
        deeper = next((full for full in _entries(path) if os.path.isdir(full) and _videos_in(full)),
                      None)
        hint = (f"; its folders hold videos: give one of them (e.g. {deeper}), or several "
                "(a shell's glob)") if deeper else ""
        raise PredictError(f"{path}: the folder holds no video file ({extensions}) and no frame "
                           f"folder{hint}")
    return sources


def unread_folders(path) -> list[str]:
    """The folders in a folder SOURCE that hold videos of their own, which are not read (a
    folder stands for its direct entries): said, rather than skipped without a word."""
    path = os.fspath(path)
    if not os.path.isdir(path) or _is_frame_folder(path):
        return []
    return [full for full in _entries(path)
            if os.path.isdir(full) and not _is_frame_folder(full) and _videos_in(full)]


def _entries(folder):
    """The paths of `folder`'s entries but hidden ones, in natural order."""
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder), key=_natural_key)
            if not name.startswith(".")]


def _videos_in(folder):
    """The video files and frame folders directly in `folder`, in natural order."""
    return [full for full in _entries(folder)
            if (os.path.isfile(full) and is_video_file(full))
            or (os.path.isdir(full) and _is_frame_folder(full))]
