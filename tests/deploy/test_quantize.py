"""Quantization-aware training: a fake-quantized Keras model that fits, converted to int8."""

import keras
import numpy as np
import pytest

from keras_efficient3d.deploy import quantize, tflite


@pytest.fixture(scope="module")
def qat(mobilenetv2_trunk):
    model, data = mobilenetv2_trunk
    qat_model = quantize.quantize_model(model, data, num_calibration=8)
    return qat_model, model, data


def test_qat_model_matches_float_before_training(qat):
    qat_model, model, data = qat
    got = np.asarray(qat_model(data, training=False))
    expected = np.asarray(model(data, training=False))
    assert got.shape == expected.shape
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.98


def test_qat_fits_and_tracks_ranges(qat):
    qat_model, _, data = qat
    layer = quantize._qat_layer(qat_model)
    key = "input"
    before = float(layer._range_vars[key][1].numpy())
    weights_before = layer._param_vars["conv1/kernel0"].numpy().copy()
    labels = np.arange(len(data)) % 5
    qat_model.compile(keras.optimizers.SGD(0.01),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    history = qat_model.fit(data * 2.0, labels, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert float(layer._range_vars[key][1].numpy()) != before  # EMA moved the range
    assert not np.allclose(layer._param_vars["conv1/kernel0"].numpy(), weights_before)


def test_convert_qat_is_int8_and_matches_the_fake_quant_model(qat):
    qat_model, _, data = qat
    blob = quantize.convert_qat(qat_model)
    assert tflite.float_op_types(blob) == []
    runner = tflite.TFLiteRunner(blob, num_threads=2)
    assert runner.delegated()
    got = runner.predict(data[:4])
    expected = np.asarray(qat_model(data[:4], training=False))
    # Fake quantization simulates the int8 kernels up to one step of rounding per layer.
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.995
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()


def test_invalid_ranges_mode(mobilenetv2_trunk):
    model, data = mobilenetv2_trunk
    with pytest.raises(ValueError, match="ranges"):
        quantize.quantize_model(model, data[:2], num_calibration=2, ranges="minmax")


def test_every_qat_variable_gets_a_gradient():
    """Depthwise taps that read only padding (the 1-frame stages of an 8-frame clip) make
    no variables: each one the QAT model trains is used."""
    import tensorflow as tf

    from keras_efficient3d import create_model

    model = create_model("mobilenetv2_0.2x", input_shape=(8, 32, 32, 3), num_classes=3)
    data = np.random.default_rng(2).normal(size=(2, 8, 32, 32, 3)).astype(np.float32)
    qat_model = quantize.quantize_model(model, data, num_calibration=2)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(qat_model(data, training=True) ** 2)
    grads = tape.gradient(loss, qat_model.trainable_variables)
    missing = [v.path for v, g in zip(qat_model.trainable_variables, grads) if g is None]
    assert qat_model.trainable_variables and missing == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet10", "shufflenet_0.25x_g3"])
def test_convert_qat_of_dropped_taps_and_average_pools_is_int8(name):
    """ResNet's late stages see one frame (the kernel rows of taps that see only padding
    are dropped), ShuffleNetV1's average pools are a spatial then a temporal stage: both
    convert to int8 throughout and compute what the fake-quantized model computes."""
    from keras_efficient3d import create_model

    shape = (16, 32, 32, 3)
    model = create_model(name, input_shape=shape, num_classes=3)
    data = np.random.default_rng(3).normal(size=(4, *shape)).astype(np.float32)
    qat_model = quantize.quantize_model(model, data, num_calibration=4)
    blob = quantize.convert_qat(qat_model)
    assert tflite.float_op_types(blob) == []
    got = tflite.TFLiteRunner(blob, num_threads=2).predict(data[:2])
    expected = np.asarray(qat_model(data[:2], training=False))
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.99


def test_a_qat_model_refuses_a_whole_save_and_its_weights_round_trip(qat, tmp_path):
    """Keras would write a .keras file that it cannot load back: the save is refused with
    the route that works, which this test follows."""
    qat_model, model, data = qat
    with pytest.raises(NotImplementedError, match=r"save_weights\('qat.weights.h5'\)"):
        qat_model.save(str(tmp_path / "qat.keras"))
    assert not (tmp_path / "qat.keras").exists()
    layer = quantize._qat_layer(qat_model)
    lo, hi = layer._range_vars["input"]
    hi.assign(hi * 1.5)  # a range no new calibration gives
    qat_model.save_weights(str(tmp_path / "qat.weights.h5"))
    rebuilt = quantize.quantize_model(model, data, num_calibration=2)
    rebuilt.load_weights(str(tmp_path / "qat.weights.h5"))
    np.testing.assert_array_equal(np.asarray(rebuilt(data[:2], training=False)),
                                  np.asarray(qat_model(data[:2], training=False)))


def test_a_qat_model_given_to_the_float_converter_is_pointed_to_convert_qat(qat):
    qat_model, _, data = qat
    with pytest.raises(ValueError, match=r"^A quantization-aware model \(deploy.quantize_model's\) "
                                         r"is converted with deploy.convert_qat\(model\)"):
        tflite.convert(qat_model, "int8", representative_data=data)
