"""What prediction shows and prints: the overlay on frames, text lines, JSON lines."""

from __future__ import annotations

import contextlib
import os
import re
import sys

import cv2
import numpy as np

from keras_efficient3d.data.decode import check_opencv_path
from keras_efficient3d.predict._errors import PredictError, option
from keras_efficient3d.runtime import quiet_stderr

__all__ = ["display_available", "draw_overlay", "format_speed", "format_window", "open_window",
           "open_writer", "summary_json", "top_text", "window_json"]


def display_available() -> bool:
    """Whether frames can be shown: OpenCV built with a GUI backend (opencv-python-headless
    is not) and, on Linux, an X11/Wayland display."""
    gui = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    if gui is None or gui[1].upper() == "NONE":
        return False
    has_screen = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if sys.platform.startswith("linux") and not has_screen:
        return False
    return True


def open_window(title):
    if not display_available():
        return False
    try:
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        return True
    except cv2.error:
        return False


def draw_overlay(frame_bgr: np.ndarray, result: dict | None, fps: float | None, lines: int = 3) -> np.ndarray:
    """Draws the top classes of ``result`` and the frame rate onto a BGR frame (in place)."""
    height, width = frame_bgr.shape[:2]
    scale = max(0.35, min(1.0, height / 720.0 * 1.2))
    thickness = 1 if scale < 0.7 else 2
    line_height = int(28 * scale) + 4
    texts = []
    if result is not None:
        texts += [f"{t['label']}  {t['score']:.2f}" for t in result["top"][:lines]]
    else:
        texts.append("waiting for the first window...")
    texts.append(f"{fps:.1f} fps" if fps else "")
    font = cv2.FONT_HERSHEY_SIMPLEX
    text_width = max(cv2.getTextSize(text, font, scale, thickness)[0][0] for text in texts)
    if text_width + 12 > width:  # a narrow (portrait) video: smaller text, not a cut label
        scale = max(0.2, scale * (width - 12) / text_width)
        thickness = 1
        line_height = int(28 * scale) + 4
        text_width = max(cv2.getTextSize(text, font, scale, thickness)[0][0] for text in texts)
    box_height = min(height, line_height * len(texts) + 8)
    box_width = min(width, text_width + 12)
    region = frame_bgr[:box_height, :box_width]
    region[:] = (region.astype(np.uint16) // 3).astype(np.uint8)  # darken behind the text
    for i, text in enumerate(texts):
        colour = (80, 255, 80) if i == 0 and result is not None else (240, 240, 240)
        cv2.putText(frame_bgr, text, (6, line_height * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    colour, thickness, cv2.LINE_AA)
    return frame_bgr


_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG", ".webm": "VP80"}


def check_output_path(path) -> str:
    """Checks an output video's path (checked by the command line before the model loads):
    an extension with a codec, an existing folder, a name OpenCV can take. Returns its
    folder. Raises `PredictError`."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in _FOURCC:
        raise PredictError(f"{option('output_video')}={path}: unsupported extension (use one of "
                           f"{', '.join(_FOURCC)})")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise PredictError(f"{option('output_video')}={path}: folder {directory} does not exist")
    check_opencv_path(path, lambda message, where: PredictError(f"{option('output_video')}={where}: {message}"))
    return directory


# The frame rate of an annotated video whose source has none (a frame folder).
DEFAULT_FPS = 30.0


class VideoOutput:
    """The ``--output`` video, written beside `path` under a temporary name and renamed over
    it by `close` (also after Ctrl-C: what was annotated is kept): a run that fails leaves an
    earlier file of that name as it was, not a few frames of this one. Frames of another
    size than the first (a folder of mixed images) are resized to it: OpenCV's writer drops
    them, with a warning line each. A frame of odd width or height gets a black column or
    row: the encoders cut frames to even sizes, which loses the last of the user's."""

    def __init__(self, path, fps, shape):
        directory = check_output_path(path)
        ext = os.path.splitext(path)[1].lower()
        self.path, self.frame_size = path, (int(shape[1]), int(shape[0]))
        self.size = tuple(side + side % 2 for side in self.frame_size)
        self.partial = os.path.join(directory, f".{os.path.basename(path)}.partial{ext}")
        # quiet: FFmpeg's WebM muxer notes that it takes the VP8 tag as its own, every time
        with quiet_stderr():
            self.writer = cv2.VideoWriter(self.partial, cv2.VideoWriter_fourcc(*_FOURCC[ext]),
                                          float(fps or DEFAULT_FPS), self.size)
        if not self.writer.isOpened():
            self.discard()
            raise PredictError(f"{option('output_video')}={path}: cannot write a video there")

    def write(self, frame_bgr):
        if (frame_bgr.shape[1], frame_bgr.shape[0]) != self.frame_size:
            frame_bgr = cv2.resize(frame_bgr, self.frame_size, interpolation=cv2.INTER_AREA)
        if self.size != self.frame_size:
            frame_bgr = cv2.copyMakeBorder(frame_bgr, 0, self.size[1] - self.frame_size[1], 0,
                                           self.size[0] - self.frame_size[0],
                                           cv2.BORDER_CONSTANT, value=0)
        self.writer.write(frame_bgr)

    def close(self):
        self.writer.release()
        os.replace(self.partial, self.path)

    def discard(self):
        self.writer.release()
        with contextlib.suppress(OSError):
            os.remove(self.partial)


def open_writer(path, fps, shape):
    return VideoOutput(path, fps, shape)


def counted(number, word):
    """``"1 frame"``, ``"2 frames"``."""
    return f"{number} {word}{'s' * (number != 1)}"


def top_text(top):
    return ", ".join(f"{t['label']} {t['score']:.3f}" for t in top)


def format_window(result: dict) -> str:
    span = f"frames {result['start']}-{result['end']}"
    if "start_s" in result:
        span += f" ({result['start_s']:.2f}-{result['end_s']:.2f} s)"
    return f"  {span}: {top_text(result['top'])}" + ("  [loop-padded]" if result.get("padded") else "")


def format_speed(summary: dict) -> str:
    speed = summary["speed"]
    fps = f"{speed['frames_per_s']:.1f} frames/s" if speed["frames_per_s"] else "- frames/s"
    ms = f"{speed['ms_per_clip']:.1f} ms per clip" if speed["ms_per_clip"] else "- ms per clip"
    count = speed.get("threads")
    threads = f", {counted(count, 'thread')}" if count else ""
    device = f" on {speed['device']}" if speed.get("device") else ""
    return f"  speed: {fps}, {ms} ({speed['backend']}{device}{threads})"


def window_json(result: dict, source) -> dict:
    out = {"type": "window", "source": source, "window": result["window"], "start": result["start"],
           "end": result["end"], "top": _round_top(result["top"]), "ms": round(result["ms"], 3),
           "padded": result["padded"]}
    for key in ("start_s", "end_s"):
        if key in result:
            out[key] = round(result[key], 4)
    return out


def error_json(source, message: str) -> dict:
    """The JSON-lines record of a video that could not be read (`summary_json`'s place)."""
    return {"type": "error", "source": str(source), "error": message}


def summary_json(summary: dict, source) -> dict:
    speed = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in summary["speed"].items()}
    out = {"type": "video", "source": source, "frames": summary["frames"], "windows": summary["window_count"],
           "top": _round_top(summary["top"]), "padded": summary["padded"], "speed": speed}
    for key in ("fps", "note", "warning", "interrupted"):
        if summary.get(key) is not None:
            out[key] = summary[key]
    return out


def _round_top(top):
    return [{"index": t["index"], "label": t["label"], "score": round(t["score"], 5)} for t in top]
