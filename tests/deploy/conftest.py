"""Fixtures of the deployment tests."""

import os

import numpy as np
import pytest

from deploy_helpers import SHIPPED, SMALL, calibrate_batchnorm, clips
from keras_efficient3d import create_model


@pytest.fixture(scope="session")
def shipped():
    """The shipped model, 32 calibration clips and 48 validation clips of its data."""
    import keras

    from keras_efficient3d.data import synthetic

    if not os.path.isfile(SHIPPED):
        pytest.fail(f"The shipped model is missing: {SHIPPED}")
    model = keras.saving.load_model(SHIPPED, compile=False)

    def gestures(n, seed):
        rng = np.random.default_rng(seed)
        labels = np.arange(n) % len(synthetic.CLASSES)
        videos = [synthetic.render_video(int(label), rng, 32, 64)[::2] for label in labels]
        return np.stack(videos).astype(np.float32) / 255.0, labels

    calibration, _ = gestures(32, seed=1)
    validation, labels = gestures(48, seed=2)
    accuracy = np.mean(np.argmax(model(validation, training=False), -1) == labels)
    assert accuracy >= 0.9  # the clips are what the model was trained on
    return model, calibration, validation


@pytest.fixture(scope="session")
def mobilenetv2_small():
    """A calibrated MobileNetV2 0.45x on 8x32x32 clips and 8 representative clips."""
    model = create_model("mobilenetv2_0.45x", input_shape=SMALL, num_classes=5)
    data = clips(SMALL, 8, seed=1)
    calibrate_batchnorm(model, data)
    return model, data


@pytest.fixture(scope="session")
def mobilenetv2_trunk():
    """The first blocks of a calibrated MobileNetV2 0.45x (stem, expand, depthwise taps with
    temporal strides, residual add) with a pooled Dense head. Deep random networks amplify
    int8 rounding into noise, so numerical int8 checks use this trunk."""
    import keras

    # Seeded: how closely fake quantization follows a random network varies with its
    # weights (correlation 0.990-0.999 over 12 seeds on these clips).
    keras.utils.set_random_seed(1)
    model = create_model("mobilenetv2_0.45x", input_shape=SMALL, num_classes=5)
    x = keras.layers.GlobalAveragePooling3D(name="trunk_pool")(model.get_layer("block_3_add").output)
    trunk = keras.Model(model.input, keras.layers.Dense(5, name="trunk_fc")(x), name="trunk")
    data = clips(SMALL, 8, seed=1)
    calibrate_batchnorm(trunk, data)
    return trunk, data
