"""Temporal sampling against indices computed by hand from the original's rules."""

import numpy as np
import pytest

from keras_efficient3d.data import temporal


class FixedRng:
    """Stands in for np.random.Generator: ``integers`` returns a chosen value."""

    def __init__(self, value):
        self.value = value
        self.calls = []

    def integers(self, low, high):
        self.calls.append((low, high))
        return self.value


def test_loop_pad():
    np.testing.assert_array_equal(temporal.loop_pad([4, 5, 6], 7), [4, 5, 6, 4, 5, 6, 4])
    np.testing.assert_array_equal(temporal.loop_pad([1, 2, 3, 4], 2), [1, 2])
    with pytest.raises(ValueError):
        temporal.loop_pad([], 3)


@pytest.mark.parametrize(
    "num_frames, duration, downsample, expected",
    [
        (10, 4, 1, [3, 4, 5, 6]),  # centre 5, begin 5 - 2
        (10, 4, 2, [1, 3, 5, 7]),  # window 8: begin 5 - 4 = 1, frames 1..8, every 2nd
        (3, 4, 1, [0, 1, 2, 0]),  # short video: loop padding
        (5, 4, 2, [0, 2, 4, 1]),  # 0..4 padded to 0 1 2 3 4 0 1 2, every 2nd
        (37, 16, 1, list(range(10, 26))),  # a typical Jester video: 18 - 8 = 10
        (1, 3, 1, [0, 0, 0]),
    ],
)
def test_center_indices(num_frames, duration, downsample, expected):
    assert temporal.temporal_center_indices(num_frames, duration, downsample).tolist() == expected


def test_random_indices_use_the_originals_range_and_window():
    # n=20, 4 frames, stride 2: window 8, begins in [0, 20 - 8 - 1] = [0, 11].
    rng = FixedRng(11)
    assert temporal.temporal_random_indices(20, 4, 2, rng).tolist() == [11, 13, 15, 17]
    assert rng.calls == [(0, 12)]  # numpy's exclusive upper bound: 11 + 1
    assert temporal.temporal_random_indices(20, 4, 2, FixedRng(0)).tolist() == [0, 2, 4, 6]
    # Shorter than the window: begin forced to 0, then loop padding.
    rng = FixedRng(0)
    assert temporal.temporal_random_indices(3, 4, 1, rng).tolist() == [0, 1, 2, 0]
    assert rng.calls == [(0, 1)]
    # n = window exactly: rand_end = max(0, -1) = 0.
    assert temporal.temporal_random_indices(8, 4, 2, FixedRng(0)).tolist() == [0, 2, 4, 6]


def test_random_indices_cover_every_start_with_a_real_generator():
    rng = np.random.default_rng(0)
    begins = {int(temporal.temporal_random_indices(20, 4, 1, rng)[0]) for _ in range(400)}
    assert begins == set(range(0, 16))  # [0, 20 - 4 - 1]
    a = temporal.temporal_random_indices(50, 16, 1, np.random.default_rng(7))
    b = temporal.temporal_random_indices(50, 16, 1, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.diff(a), np.ones(15))


def test_sliding_windows():
    windows = temporal.sliding_window_indices(10, 4, 1)
    assert windows.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 8, 9]]
    # Stride 2: windows of 4 frames starting at 0, 4, 8; the last is 8 9 8 9 -> 8 8.
    assert temporal.sliding_window_indices(10, 2, 2).tolist() == [[0, 2], [4, 6], [8, 8]]
    assert temporal.sliding_window_indices(32, 16, 1).tolist() == [list(range(16)), list(range(16, 32))]
    assert temporal.sliding_window_indices(3, 4, 1).tolist() == [[0, 1, 2, 0]]


@pytest.mark.parametrize("num_frames", [1, 2, 15, 16, 17, 18, 32, 33, 34, 47, 49])
def test_sliding_windows_are_the_originals_test_windows(num_frames):
    # The original (datasets/*.py, n_samples_for_each_video=0), 1-based: windows begin at
    # range(1, n_frames, step) and run to min(n_frames + 1, begin + 16), then loop padding.
    # A video of 17 frames is one window there: frame 17 alone starts none.
    expected = []
    for begin in range(1, num_frames, 16):
        window = list(range(begin, min(num_frames + 1, begin + 16)))
        expected.append([window[k % len(window)] - 1 for k in range(16)])
    if num_frames == 1:  # the original leaves a one-frame video out; here it is one window
        expected = [[0] * 16]
    assert temporal.sliding_window_indices(num_frames, 16, 1).tolist() == expected


def test_begin_indices():
    assert temporal.temporal_begin_indices(10, 4, 2).tolist() == [0, 2, 4, 6]
    assert temporal.temporal_begin_indices(2, 3, 1).tolist() == [0, 1, 0]


@pytest.mark.parametrize("args", [(0, 4, 1), (10, 0, 1), (10, 4, 0)])
def test_invalid_arguments(args):
    with pytest.raises(ValueError, match="Received"):
        temporal.temporal_center_indices(*args)
