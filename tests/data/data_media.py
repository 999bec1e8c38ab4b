"""Helpers writing real encoded test media with OpenCV.

Frame ``i`` of every generated video is uniform with red = ``20 + 8 * (i % 28)``
and blue = ``200 - 40 * (i // 28)`` (steps large enough to survive lossy codecs,
so the decoded frame index can be read back) and green = the caller's ``tag``
(e.g. the label, to check that a clip carries its own label).
"""

from __future__ import annotations

import os

import cv2
import numpy as np

FOURCCS = {"mp4": "mp4v", "avi": "MJPG", "xvid.avi": "XVID", "webm": "VP80"}


def frame_rgb(i, tag=100, height=48, width=64):
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = 20 + 8 * (i % 28)
    frame[..., 1] = tag
    frame[..., 2] = 200 - 40 * (i // 28)
    return frame


def frames_rgb(n, tag=100, height=48, width=64):
    return np.stack([frame_rgb(i, tag, height, width) for i in range(n)])


def frame_index(frame):
    """Recover the index of a ``frame_rgb`` frame (after any lossy round trip)."""
    low = int(round((float(np.mean(frame[..., 0])) - 20) / 8))
    high = int(round((200 - float(np.mean(frame[..., 2]))) / 40))
    return low + 28 * high


def frame_tag(frame):
    return int(round(float(np.mean(frame[..., 1]))))


def write_video(path, frames, fmt="mp4", fps=10):
    """Encode RGB ``frames`` to ``path`` with the codec for ``fmt`` (see FOURCCS)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCCS[fmt]), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {fmt}"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def write_frames(folder, frames, pattern="{:05d}.jpg", start=1):
    """RGB ``frames`` as JPEG files ``pattern.format(start + i)`` in ``folder``."""
    os.makedirs(folder, exist_ok=True)
    for i, frame in enumerate(frames):
        assert cv2.imwrite(os.path.join(folder, pattern.format(start + i)), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 95])
    return str(folder)
