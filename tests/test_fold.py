"""BatchNorm folding: the affine form of a BatchNorm that the folded model and the
deployment graph both use."""

import keras
import numpy as np
import pytest

from keras_efficient3d.fold import batchnorm_affine
from keras_efficient3d.layers import batch_norm


@pytest.mark.parametrize("scale,center", [(True, True), (False, True), (True, False)])
def test_batchnorm_affine_is_the_inference_batchnorm(scale, center):
    rng = np.random.default_rng(0)
    bn = keras.layers.BatchNormalization(epsilon=1e-5, scale=scale, center=center)
    bn.build((None, 6))
    bn.set_weights([rng.normal(size=6).astype(np.float32) for _ in range(scale + center)]
                   + [rng.normal(size=6).astype(np.float32),
                      rng.uniform(0.5, 2.0, size=6).astype(np.float32)])
    x = rng.normal(size=(4, 6)).astype(np.float32)
    s, shift = batchnorm_affine(bn)
    np.testing.assert_allclose(x * s + shift, np.asarray(bn(x, training=False)),
                               rtol=1e-5, atol=1e-5)
    # A preceding layer's bias goes into the shift.
    bias = rng.normal(size=6)
    np.testing.assert_allclose(batchnorm_affine(bn, bias)[1], shift + bias * s, rtol=1e-5,
                               atol=1e-6)


def test_batchnorm_affine_of_the_package_batchnorm():
    bn = batch_norm("bn")
    bn.build((None, 3))
    s, shift = batchnorm_affine(bn)
    np.testing.assert_allclose(s, 1 / np.sqrt(1 + 1e-5), rtol=1e-6)
    np.testing.assert_array_equal(shift, 0.0)
