"""Temporal sampling: which frame indices make a clip (pure numpy).

Semantics follow the original implementation (okankop/Efficient-3DCNNs,
``temporal_transforms.py``), with 0-based indices:

* a window of ``sample_duration * downsample`` consecutive frames is chosen,
* if the video is shorter, the window is *loop padded* (``0 1 2 0 1 2 ...``),
* every ``downsample``-th frame of the padded window is kept, giving
  ``sample_duration`` indices.

Training draws the window start uniformly in ``[0, max(0, n - window - 1)]`` (the
original's range, which never ends a window on the very last frame); validation
takes the window centred on ``n // 2``; testing covers the whole video with
non-overlapping windows.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "loop_pad",
    "temporal_random_indices",
    "temporal_center_indices",
    "temporal_begin_indices",
    "sliding_window_indices",
]


def _check(num_frames, sample_duration, downsample):
    if int(num_frames) < 1:
        raise ValueError(f"`num_frames` must be >= 1. Received: num_frames={num_frames}")
    if int(sample_duration) < 1:
        raise ValueError(f"`sample_duration` must be >= 1. Received: sample_duration={sample_duration}")
    if int(downsample) < 1:
        raise ValueError(f"`downsample` must be >= 1. Received: downsample={downsample}")
    return int(num_frames), int(sample_duration), int(downsample)


def loop_pad(indices, length: int) -> np.ndarray:
    """Repeat ``indices`` cyclically up to ``length`` entries (truncating if longer)."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise ValueError("Cannot loop-pad an empty index list.")
    return indices[np.arange(length) % indices.size]


def _window(begin, num_frames, sample_duration, downsample):
    clip_duration = sample_duration * downsample
    end = min(begin + clip_duration, num_frames)
    padded = loop_pad(np.arange(begin, end), clip_duration)
    return padded[::downsample]


def temporal_random_indices(
    num_frames: int, sample_duration: int, downsample: int = 1, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Training sampling (``TemporalRandomCrop``): a random window, loop padded.

    Args:
        num_frames: frames in the video.
        sample_duration: frames in the clip.
        downsample: keep one frame out of ``downsample``.
        rng: source of randomness (a fresh unseeded one when ``None``).

    Returns:
        ``(sample_duration,)`` int64 frame indices.
    """
    num_frames, sample_duration, downsample = _check(num_frames, sample_duration, downsample)
    rng = np.random.default_rng() if rng is None else rng
    rand_end = max(0, num_frames - sample_duration * downsample - 1)
    begin = int(rng.integers(0, rand_end + 1))
    return _window(begin, num_frames, sample_duration, downsample)


def temporal_center_indices(num_frames: int, sample_duration: int, downsample: int = 1) -> np.ndarray:
    """Validation sampling (``TemporalCenterCrop``): the window centred on ``n // 2``, over the
    whole video, as the original validates with its scripts' ``--n_val_samples 1`` (its
    default of 3 cuts overlapping sub-videos first, each centre-cropped: not offered)."""
    num_frames, sample_duration, downsample = _check(num_frames, sample_duration, downsample)
    begin = max(0, num_frames // 2 - (sample_duration * downsample) // 2)
    return _window(begin, num_frames, sample_duration, downsample)


def temporal_begin_indices(num_frames: int, sample_duration: int, downsample: int = 1) -> np.ndarray:
    """The first window (``TemporalBeginCrop``), loop padded."""
    num_frames, sample_duration, downsample = _check(num_frames, sample_duration, downsample)
    return _window(0, num_frames, sample_duration, downsample)


def sliding_window_indices(num_frames: int, sample_duration: int, downsample: int = 1) -> np.ndarray:
    """Testing sampling: non-overlapping windows covering the whole video.

    Windows of ``sample_duration * downsample`` frames start at ``0, w, 2w, ...``
    before the last frame (the original's ``range(1, n_frames, step)``, 1-based: a
    last frame alone starts no window of copies of itself); the last one is loop
    padded within itself. With ``downsample == 1`` this is exactly the original's test
    set (``n_samples_for_each_video=0``), but for a one-frame video: the original
    leaves it out, here it is one window of that frame. With
    ``downsample > 1`` the original cut 16-frame windows and then asked for 32
    frames from each, which loops every window onto itself; here windows are
    ``sample_duration * downsample`` long so each clip spans the same time as in
    training.

    Returns:
        ``(num_windows, sample_duration)`` int64 frame indices.
    """
    num_frames, sample_duration, downsample = _check(num_frames, sample_duration, downsample)
    step = sample_duration * downsample
    return np.stack(
        [_window(begin, num_frames, sample_duration, downsample) for begin in range(0, max(num_frames - 1, 1), step)]
    )
