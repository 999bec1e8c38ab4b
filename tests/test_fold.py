"""BatchNorm folding: the affine form of a BatchNorm that the folded model and the
deployment graph both use, and the activation classifier that folding, both deployment
walkers and complexity counting share."""

import keras
import numpy as np
import pytest

import keras_efficient3d as k3
from keras_efficient3d import registry
from keras_efficient3d.fold import ACTIVATIONS, activation_name, batchnorm_affine
from keras_efficient3d.layers import Conv3D, DepthwiseConv3D, batch_norm


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


def _own_relu(x):
    return keras.activations.relu(x)


_own_relu.__name__ = "relu"  # a name alone does not make it Keras' relu


@pytest.mark.parametrize("activation,expected", [
    # layers, as the models build them
    (keras.layers.ReLU(), "relu"),
    (keras.layers.ReLU(6.0), "relu6"),
    (keras.layers.ReLU(max_value=4.0), None),
    (keras.layers.ReLU(negative_slope=0.1), None),
    (keras.layers.ReLU(threshold=0.5), None),
    (keras.layers.Activation("relu"), "relu"),
    (keras.layers.Activation("relu6"), "relu6"),
    (keras.layers.Activation("softmax"), "softmax"),
    (keras.layers.Activation("sigmoid"), "sigmoid"),
    (keras.layers.Activation("linear"), "linear"),
    (keras.layers.Activation("gelu"), None),
    (keras.layers.Dense(3), "linear"),
    (keras.layers.Dense(3, activation="relu"), "relu"),
    (keras.layers.Dense(3, activation="softmax"), "softmax"),
    (Conv3D(4, 1), "linear"),
    (Conv3D(4, 1, activation="relu6"), "relu6"),
    (DepthwiseConv3D(3, activation="relu"), "relu"),
    # functions and names
    (None, "linear"),
    (keras.activations.relu, "relu"),
    (keras.activations.relu6, "relu6"),
    (keras.activations.softmax, "softmax"),
    (keras.activations.sigmoid, "sigmoid"),
    (keras.activations.linear, "linear"),
    (keras.activations.gelu, None),
    (_own_relu, None),
    ("relu", "relu"),
    ("relu6", "relu6"),
    ("softmax", "softmax"),
    ("linear", "linear"),
    ("swish", None),
])
def test_activation_name(activation, expected):
    assert activation_name(activation) == expected


@pytest.mark.parametrize("activation,match", [
    ("relu7", "names no Keras activation. Received: activation='relu7'"),
    (keras.layers.BatchNormalization(name="bn"), r"Received: activation=bn \(BatchNormalization\)"),
    (3, "Received: activation=3"),
])
def test_activation_name_refuses_what_is_no_activation(activation, match):
    with pytest.raises(ValueError, match=match):
        activation_name(activation)


@pytest.mark.parametrize("family", [
    pytest.param(f, id=f.name, marks=[pytest.mark.slow] if f.name in ("resnext", "c3d") else [])
    for f in registry.families()])
def test_every_activation_of_the_models_is_known(family):
    # The deployment graphs emit only these; an unknown one would stop an export.
    name = next(iter(family.registry_names()))
    model = k3.create_model(name, input_shape=family.small_input, num_classes=3)
    seen = {activation_name(layer) for layer in model.layers
            if isinstance(layer, keras.layers.ReLU) or hasattr(layer, "activation")}
    assert None not in seen and seen <= set(ACTIVATIONS)
    assert seen & {"relu", "relu6"}


def _fold_cases():
    def graph(outputs_of, axis=-1):
        inputs = keras.Input((8, 6, 6, 3))
        conv = Conv3D(8, 3, padding=1, name="conv")(inputs)  # a foldable layer: the package's
        bn = keras.layers.BatchNormalization(axis=axis, name="bn")(conv)
        relu = keras.layers.ReLU(name="relu")(bn)
        pooled = keras.layers.GlobalAveragePooling3D()(relu)
        named = {"conv": conv, "bn": bn, "relu": relu, "pooled": pooled}
        return keras.Model(inputs, [named[n] for n in outputs_of])

    return {"bn_over_frames": graph(["pooled"], axis=1),  # 8 frames, 8 channels: shapes fit
            "bn_returned": graph(["bn", "relu"]),
            "conv_returned": graph(["conv", "bn"])}


@pytest.mark.parametrize("case", ["bn_over_frames", "bn_returned", "conv_returned"])
def test_a_fold_that_would_change_what_the_model_returns_is_left_out(case):
    """A BatchNorm of another axis than the channels (its scale was put on the kernel's
    output channels), a BatchNorm whose output the model returns (the ReLU after it was
    moved into the convolution) or a convolution whose output it returns (it then returned
    the normalised values): the folded model computed something else, silently."""
    from keras_efficient3d.fold import fold_batchnorm

    model = _fold_cases()[case]
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(size=n),
                               rng.normal(size=n), rng.uniform(0.5, 2, n)])
    x = rng.normal(size=(2, 8, 6, 6, 3)).astype(np.float32)
    expected = [np.asarray(y) for y in model(x, training=False)]
    folded = [np.asarray(y) for y in fold_batchnorm(model)(x, training=False)]
    for want, got in zip(expected, folded):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_a_model_with_preprocessing_folds_as_the_builders_models_do():
    """The network behind the preprocessing layer folds too, and the folded model stays a
    `VideoModel` of the same name, as the folded form of any builder's model is."""
    from helpers import randomize_batchnorm
    from keras_efficient3d.fold import fold_batchnorm, inference_form
    from keras_efficient3d.models._base import VideoModel
    from keras_efficient3d.preprocessing import with_preprocessing

    net = randomize_batchnorm(registry.create_model("mobilenetv2_0.2x", input_shape=(8, 32, 32, 3),
                                                    num_classes=3), seed=2)
    model = with_preprocessing(net, "kinetics")  # a preset name, as Normalization.coerce takes
    assert isinstance(fold_batchnorm(net), VideoModel)
    for folded in (fold_batchnorm(model), inference_form(model)):
        assert isinstance(model, VideoModel) and isinstance(folded, VideoModel)
        assert folded.name == model.name == net.name
        inner = folded.layers[-1]
        assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in inner.layers)
        frames = np.random.default_rng(0).uniform(0, 255, (2, 8, 32, 32, 3)).astype(np.float32)
        np.testing.assert_allclose(folded(frames, training=False), model(frames, training=False),
                                   rtol=1e-4, atol=1e-4)


_GRAPPLER_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port
from keras_efficient3d import create_model
from keras_efficient3d.deploy.savedmodel import SIGNATURE_NAME, export_saved_model
from keras_efficient3d.fold import fold_batchnorm

print("onednn", _pywrap_util_port.IsMklEnabled(), flush=True)
x = np.zeros((1, 16, 56, 56, 3), np.float32)
for name in sys.argv[1:]:
    model = create_model(name, input_shape=x.shape[1:], num_classes=10)
    for form in (model, fold_batchnorm(model)):
        tf.function(lambda x, form=form: form(x, training=False))(x)
    print("traced", name, flush=True)
    # what TF Serving and TF-TRT run: the SavedModel export, loaded
    tf.saved_model.load(export_saved_model(model, name, batch_size=1)).signatures[SIGNATURE_NAME](tf.constant(x))
    print("served", name, flush=True)
"""


@pytest.mark.slow
def test_grapplers_optimisation_of_every_depthwise_family_succeeds(tmp_path):
    """TensorFlow's graph optimiser gives up on a whole function, with one warning line and no
    error, when one of its rewrites fails: the model then runs with no fused convolution,
    bias or activation anywhere (the folded MobileNetV1 ran 6-18% slower while a depthwise
    tap's BiasAdd + Add + Relu became a fused node without an op; a SavedModel of it, run by
    TensorFlow, too). Both Keras forms and the loaded SavedModel export of each family with
    depthwise layers, traced at 16 frames (the temporal sizes the models have), in a
    process that shows TensorFlow's warnings, with oneDNN on (the failing rewrite is
    oneDNN's; the package turns it on by default, the CPU's own default varies)."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    names = ["mobilenet_0.5x", "mobilenetv2_0.45x", "shufflenet_0.5x_g3", "shufflenetv2_0.5x"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", PYTHONPATH=root, KERAS_BACKEND="tensorflow",
               TF_ENABLE_ONEDNN_OPTS="1")
    proc = subprocess.run([sys.executable, "-c", _GRAPPLER_SCRIPT, *names], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["onednn", "True"] + [
        w for name in names for w in ("traced", name, "served", name)], proc.stdout
    failures = [line for line in proc.stderr.splitlines()
                if "optimization failure" in line or "empty op name" in line]
    assert not failures, "\n".join(failures)
