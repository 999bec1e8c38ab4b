"""Normalisation presets against the original's mean.py / main.py option logic."""

import json

import numpy as np
import pytest
import tensorflow as tf

from keras_efficient3d.data.normalization import (
    ACTIVITYNET_MEAN,
    KINETICS_MEAN,
    KINETICS_STD,
    PRESETS,
    Normalization,
)


def test_original_defaults_are_activitynet_mean_0_255_rgb_no_std():
    norm = Normalization.from_original_options()
    assert norm.mean == pytest.approx((114.7748, 107.7354, 99.4750))
    assert norm.std == (1.0, 1.0, 1.0)
    assert (norm.value_range, norm.channel_order) == ("0-255", "RGB")
    assert PRESETS["jester"] == norm == PRESETS["original"]


def test_norm_value_255_divides_mean_and_std():
    norm = Normalization.from_original_options("kinetics", norm_value=255, std_norm=True)
    assert norm.mean == pytest.approx(tuple(v / 255 for v in KINETICS_MEAN))
    assert norm.std == pytest.approx(tuple(v / 255 for v in KINETICS_STD))
    assert norm.value_range == "0-1"


def test_no_mean_norm_only_without_std_norm():
    assert Normalization.from_original_options(no_mean_norm=True).mean == (0.0, 0.0, 0.0)
    # As in main.py: --std_norm wins and implies the mean.
    with_std = Normalization.from_original_options(no_mean_norm=True, std_norm=True)
    assert with_std.mean == pytest.approx(ACTIVITYNET_MEAN)
    assert with_std.std == pytest.approx(KINETICS_STD)


def test_apply_rgb_0_255():
    pixel = np.array([[[255.0, 0.0, 10.0]]], np.float32)
    out = PRESETS["original"].apply(pixel)
    np.testing.assert_allclose(out[0, 0], [255 - 114.7748, 0 - 107.7354, 10 - 99.4750], rtol=1e-5)


def test_apply_bgr_for_the_originals_kinetics_checkpoints():
    pixel = np.array([[[255.0, 0.0, 10.0]]], np.float32)  # RGB in
    out = PRESETS["kinetics"].apply(pixel)
    # Channel 0 is blue, minus the first mean value, as the original fed it.
    np.testing.assert_allclose(out[0, 0], [10 - 114.7748, 0 - 107.7354, 255 - 99.4750], rtol=1e-5)


def test_kinetics_mean_std_is_bgr_too_as_the_originals_kinetics_videos():
    # --mean_dataset kinetics --std_norm changes the statistics, not the loader: OpenCV's BGR.
    pixel = np.array([[[255.0, 0.0, 10.0]]], np.float32)  # RGB in
    out = PRESETS["kinetics_mean_std"].apply(pixel)
    bgr = np.array([10.0, 0.0, 255.0])
    np.testing.assert_allclose(out[0, 0], (bgr - np.array(KINETICS_MEAN)) / np.array(KINETICS_STD),
                               rtol=1e-5)


def test_apply_0_1_with_std_and_on_tensors():
    norm = Normalization.from_original_options("kinetics", norm_value=255, std_norm=True)
    clip = np.random.default_rng(0).uniform(0, 255, (2, 3, 4, 4, 3)).astype(np.float32)
    expected = (clip / 255 - np.array(KINETICS_MEAN) / 255) / (np.array(KINETICS_STD) / 255)
    np.testing.assert_allclose(norm.apply(clip), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(norm.apply(tf.constant(clip)).numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(PRESETS["unit"].apply(clip), clip / 255, rtol=1e-6)


def test_config_round_trip_is_json():
    for name, norm in PRESETS.items():
        config = json.loads(json.dumps(norm.to_config()))
        assert Normalization.from_config(config) == norm, name
    assert Normalization.preset("kinetics").channel_order == "BGR"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mean=(1, 2)), "mean"),
        (dict(std=(1, 0, 1)), "std"),
        (dict(value_range="0-100"), "value_range"),
        (dict(channel_order="RGBA"), "channel_order"),
    ],
)
def test_invalid_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Normalization(**kwargs)


def test_invalid_options_and_configs():
    with pytest.raises(ValueError, match="mean_dataset"):
        Normalization.from_original_options("imagenet")
    with pytest.raises(ValueError, match="norm_value"):
        Normalization.from_original_options(norm_value=2)
    with pytest.raises(ValueError, match="Unknown normalization config"):
        Normalization.from_config({"mean": [0, 0, 0], "scale": 2})
    with pytest.raises(ValueError, match="preset"):
        Normalization.preset("imagenet")


def test_coerce_takes_a_normalization_a_preset_name_or_a_config():
    unit = PRESETS["unit"]
    assert Normalization.coerce(unit) is unit
    assert Normalization.coerce("unit") == unit
    assert Normalization.coerce(json.loads(json.dumps(unit.to_config()))) == unit
    with pytest.raises(ValueError, match="Unknown normalization preset.*name='imagenet'"):
        Normalization.coerce("imagenet")
    with pytest.raises(ValueError, match="Unknown normalization config keys"):
        Normalization.coerce({"mean": [0, 0, 0], "scale": 2})
    with pytest.raises(ValueError, match="a Normalization, a preset name or a config dict. "
                                         r"Received: normalization=\(0, 1\)"):
        Normalization.coerce((0, 1))
