"""Spatial boxes against values computed by hand from the original's transforms."""

import numpy as np
import pytest

from keras_efficient3d.data import spatial


class ScriptedRng:
    """np.random.Generator stand-in returning scripted ``integers`` and ``random`` values."""

    def __init__(self, integers=(), randoms=()):
        self._integers = list(integers)
        self._randoms = list(randoms)

    def integers(self, low, high):
        value = self._integers.pop(0)
        assert low <= value < high
        return value

    def random(self):
        return self._randoms.pop(0)


def column_clip(height, width, frames=2):
    """Pixel value = column index in channel 0, row index in channel 1."""
    clip = np.zeros((frames, height, width, 3), np.uint8)
    clip[..., 0] = np.arange(width)[None, None, :]
    clip[..., 1] = np.arange(height)[None, :, None]
    return clip


def test_scale_list_matches_the_original():
    np.testing.assert_allclose(spatial.multiscale_scales(), [1.0, 0.84089641525, 0.70710678, 0.59460356, 0.5],
                               rtol=1e-6)
    assert spatial.multiscale_scales(1.0, 1) == [1.0]
    with pytest.raises(ValueError):
        spatial.multiscale_scales(n_scales=0)


def test_multiscale_random_crop_box():
    # 100x160 frame, scale 0.5 -> side 50; x1 = round(0.25 * 110) = round(27.5) = 28
    # (PIL rounds half to even), y1 = round(0.5 * 50) = 25.
    rng = ScriptedRng(integers=[1], randoms=[0.25, 0.5])
    assert spatial.multiscale_random_crop_box(100, 160, [1.0, 0.5], rng) == (28, 25, 78, 75)
    rng = ScriptedRng(integers=[0], randoms=[0.999, 0.0])
    assert spatial.multiscale_random_crop_box(100, 160, [1.0, 0.5], rng) == (60, 0, 160, 100)


@pytest.mark.parametrize(
    "position, box",
    [
        ("c", (38, 8, 122, 92)),  # side int(100 * 0.8409) = 84, centre (80, 50) +- 42
        ("tl", (0, 0, 84, 84)),
        ("tr", (76, 0, 160, 84)),
        ("bl", (0, 16, 84, 100)),
        ("br", (76, 16, 160, 100)),
    ],
)
def test_multiscale_corner_crop_box(position, box):
    rng = ScriptedRng(integers=[1, spatial.CROP_POSITIONS.index(position)])
    assert spatial.multiscale_corner_crop_box(100, 160, spatial.multiscale_scales(), rng) == box


def test_corner_crop_centre_keeps_the_originals_odd_side_quirk():
    # scale 0.5946 -> side int(59.46) = 59; the original's centre box is +-(59 // 2) = 29.
    rng = ScriptedRng(integers=[3, 0])
    assert spatial.multiscale_corner_crop_box(100, 160, spatial.multiscale_scales(), rng) == (51, 21, 109, 79)


def test_center_crop_and_scale():
    assert spatial.center_crop_box(100, 133, 100) == (16, 0, 116, 100)  # round(16.5) = 16
    assert spatial.center_crop_box(100, 135, 100) == (18, 0, 118, 100)  # round(17.5) = 18
    assert spatial.scaled_size(120, 160, 112) == (112, 149)  # int(112 * 160 / 120) = 149
    assert spatial.scaled_size(160, 120, 112) == (149, 112)
    assert spatial.scaled_size(112, 200, 112) == (112, 200)  # already the right size


def test_val_transform_is_scale_then_centre_crop():
    clip = column_clip(100, 160)
    out = spatial.val_transform(clip, 100)  # shorter side already 100: crop columns 30..129
    assert out.shape == (2, 100, 100, 3)
    np.testing.assert_array_equal(out[0, 0, :, 0], np.arange(30, 130))
    np.testing.assert_array_equal(out[1, :, 0, 1], np.arange(100))


def test_test_transform_corner_positions():
    clip = column_clip(100, 160)
    out = spatial.test_transform(clip, 100, position="tr")
    np.testing.assert_array_equal(out[0, 0, :, 0], np.arange(60, 160))
    out = spatial.test_transform(clip, 100, position="c")
    np.testing.assert_array_equal(out[0, 0, :, 0], np.arange(30, 130))
    with pytest.raises(ValueError, match="scale_in_test"):
        spatial.test_transform(clip, 100, scale_in_test=1.5)


def test_train_transform_crops_the_drawn_box_and_resizes():
    clip = column_clip(100, 160)
    # 'random', scale index 1 (0.5): box (28, 25, 78, 75), resized 50 -> 25 (INTER_AREA
    # averages pairs of columns: (28 + 29) / 2 = 28.5 -> 28 or 29).
    rng = ScriptedRng(integers=[1], randoms=[0.25, 0.5])
    out = spatial.train_transform(clip, 25, rng, "random", [1.0, 0.5], hflip=False)
    assert out.shape == (2, 25, 25, 3)
    assert 28 <= out[0, 0, 0, 0] <= 29 and 76 <= out[0, 0, -1, 0] <= 77
    assert 25 <= out[0, 0, 0, 1] <= 26
    # 'center' at scale 1 on a square frame is the whole frame.
    square = column_clip(64, 64)
    out = spatial.train_transform(square, 64, np.random.default_rng(0), "center", [1.0])
    np.testing.assert_array_equal(out, square)


@pytest.mark.parametrize("crop", ["random", "corner", "center"])
@pytest.mark.parametrize("shape", [(1, 40), (40, 1), (1, 1), (2, 9)])
def test_train_transform_of_a_frame_a_pixel_or_two_high_is_a_clip(crop, shape):
    # int(1 * 0.84) is 0: the crop used to be empty and stop training in the pipeline
    clip = column_clip(*shape)
    for seed in range(6):
        out = spatial.train_transform(clip, 8, np.random.default_rng(seed), crop,
                                      spatial.multiscale_scales())
        assert out.shape == (2, 8, 8, 3) and out.dtype == np.uint8
        assert out[..., 0].min() >= clip[..., 0].min() and out[..., 0].max() <= clip[..., 0].max()


def test_train_transform_flip_only_when_asked():
    square = column_clip(64, 64)
    no_flip = [spatial.train_transform(square, 64, np.random.default_rng(s), "center", [1.0]) for s in range(20)]
    assert all(np.array_equal(o, square) for o in no_flip)
    flips = [spatial.train_transform(square, 64, np.random.default_rng(s), "center", [1.0], hflip=True)
             for s in range(20)]
    flipped = [np.array_equal(o, square[:, :, ::-1]) for o in flips]
    kept = [np.array_equal(o, square) for o in flips]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_train_transform_is_deterministic_for_a_seed():
    clip = np.random.default_rng(0).integers(0, 256, (4, 90, 120, 3), dtype=np.uint8)
    a = spatial.train_transform(clip, 32, np.random.default_rng(3), "corner")
    b = spatial.train_transform(clip, 32, np.random.default_rng(3), "corner")
    c = spatial.train_transform(clip, 32, np.random.default_rng(4), "corner")
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 32, 32, 3) and not np.array_equal(a, c)


def test_invalid_arguments():
    clip = column_clip(10, 10)
    with pytest.raises(ValueError, match="crop"):
        spatial.train_transform(clip, 8, np.random.default_rng(0), "middle")
    with pytest.raises(ValueError, match="scales"):
        spatial.multiscale_random_crop_box(10, 10, [1.5], np.random.default_rng(0))
    with pytest.raises(ValueError, match="not inside"):
        spatial.crop_clip(clip, (0, 0, 11, 5))
    with pytest.raises(ValueError, match="position"):
        spatial.corner_crop_box(10, 10, 5, "middle")
