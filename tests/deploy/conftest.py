"""Fixtures of the deployment tests."""

import pytest

from deploy_helpers import SMALL, calibrate_batchnorm, clips
from keras_efficient3d import create_model


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
