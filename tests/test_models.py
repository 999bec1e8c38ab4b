"""Architectures and registry: shapes, gradients, parameter counts, saving, arguments."""

import dataclasses
import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_efficient3d as k3
from helpers import randomize_batchnorm
from keras_efficient3d import complexity, registry, runtime
from keras_efficient3d.fold import fold_batchnorm

_HEAVY = ("resnet101", "resnet152", "resnet200", "resnext50", "resnext101", "resnext152", "c3d")


def _small_shape(name):
    return registry.get_family(name).small_input


@pytest.mark.parametrize("name", [n for n in k3.list_models() if n not in _HEAVY])
def test_forward_backward_small_input(name):
    keras.utils.set_random_seed(0)
    model = k3.create_model(name, input_shape=_small_shape(name), num_classes=5)
    x = np.random.default_rng(0).normal(size=(2,) + _small_shape(name)).astype(np.float32)
    with tf.GradientTape() as tape:
        y = model(x, training=True)
        loss = tf.reduce_sum(y * y)
    assert y.shape == (2, 5)
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None for g in grads)
    assert any(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    graph = model.predict(x, verbose=0)
    eager = np.asarray(model(x, training=False))
    # Compare at the logits' scale: graph rewrites and oneDNN's threading reorder float sums,
    # and the error of a small logit follows the large activations it was summed from (CI saw
    # 3.5e-6 of the scale on ResNet-34). A wrong graph (BatchNorm in training mode, a dropped
    # branch) moves logits by a sizeable fraction of the scale.
    scale = np.abs(eager).max()
    np.testing.assert_allclose(graph, eager, rtol=1e-4, atol=5e-5 * scale + 1e-5)


@pytest.mark.slow
# ResNet-152/200 and the ResNeXts add only repeats of the blocks built here (their parameter
# counts are checked against the original above); left out for the suite's time budget.
@pytest.mark.parametrize("name", ["resnet101", "c3d"])
def test_heavy_models_build_and_run(name):
    # C3D's flattening head fits 112-pixel frames only (as the original's).
    shape = (16, 112, 112, 3) if name == "c3d" else (16, 32, 32, 3)
    model = k3.create_model(name, input_shape=shape, num_classes=7)
    y = model(np.zeros((1,) + shape, np.float32), training=False)
    assert y.shape == (1, 7)


def _keys(reference_dir, config):
    return json.loads((reference_dir / "state_dict_keys" / f"{config}.keys.json").read_text())


_CONFIGS = ["mobilenet_0.5x", "mobilenet_1.0x", "mobilenet_2.0x", "mobilenetv2_0.2x",
            "mobilenetv2_0.45x", "mobilenetv2_0.7x", "mobilenetv2_1.0x", "resnet18_A",
            "resnet50_B", "resnext101_B", "shufflenet_0.5x_g3", "shufflenet_1.0x_g2",
            "shufflenet_1.5x_g3", "shufflenetv2_0.25x", "shufflenetv2_1.5x", "shufflenetv2_2.0x",
            "squeezenet_1.1"]


@pytest.mark.parametrize("config", _CONFIGS)
def test_parameter_count_matches_original(reference_dir, config):
    ref = _keys(reference_dir, config)
    expected = sum(int(np.prod(s)) for k, s in ref["state_dict"].items()
                   if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    model = k3.create_model(config, num_classes=ref["num_classes"])
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == expected


# Parameter-count regression table (600 classes); Table 8 prints them rounded (0.55M, 0.83M...).
PARAMS_600 = {
    "mobilenet_0.5x": 1_171_896, "mobilenetv2_0.2x": 964_110, "shufflenet_0.5x_g3": 545_772,
    "shufflenetv2_0.25x": 829_656, "squeezenet_1.1": 2_145_560, "shufflenetv2_1.0x": 1_914_180,
}


@pytest.mark.parametrize("config,expected", sorted(PARAMS_600.items()))
def test_parameter_regression_table(config, expected):
    model = k3.create_model(config, num_classes=600)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == expected


@pytest.mark.parametrize("name,shape,expected", [
    ("mobilenetv2", (16, 112, 112, 3), (1, 1, 4, 4, 1280)),
    ("mobilenetv2", (32, 112, 112, 3), (1, 2, 4, 4, 1280)),
    ("mobilenetv2", (16, 224, 224, 3), (1, 1, 7, 7, 1280)),
    ("shufflenetv1", (16, 112, 112, 3), (1, 1, 4, 4, 960)),
    ("shufflenetv2", (32, 224, 224, 3), (1, 2, 7, 7, 1024)),
    ("mobilenetv1", (8, 64, 64, 3), (1, 1, 2, 2, 1024)),
    ("squeezenet", (16, 112, 112, 3), (1, 1, 4, 4, 512)),
    ("resnet18", (16, 112, 112, 3), (1, 1, 4, 4, 512)),
])
def test_feature_shapes(name, shape, expected):
    model = k3.create_model(name, input_shape=shape, include_top=False)
    assert tuple(model.output_shape[1:]) == expected[1:]


def test_pooling_options():
    avg = k3.MobileNetV2_3D(0.2, include_top=False, pooling="avg", input_shape=(8, 32, 32, 3))
    mx = k3.MobileNetV2_3D(0.2, include_top=False, pooling="max", input_shape=(8, 32, 32, 3))
    assert avg.output_shape == (None, 1280) and mx.output_shape == (None, 1280)


@pytest.mark.parametrize("name,kwargs", [
    ("mobilenet", {"width_mult": 0.25}),
    ("mobilenet", {"width_mult": 0.25, "include_top": False, "pooling": "max"}),
    ("squeezenet", {}), ("resnet10", {}), ("c3d", {})])
def test_models_ignore_a_channels_first_keras_json(name, kwargs):
    """The layers are channels-last whatever `keras.config.image_data_format()` says (a
    PyTorch user's keras.json often says channels_first): the heads' global pools averaged
    over height, width and channels, and C3D's Flatten reordered fc6's inputs, so that
    converted weights loaded and gave other outputs."""
    shape = _small_shape(name)
    x = np.random.default_rng(0).normal(size=(1,) + shape).astype(np.float32)
    keras.utils.set_random_seed(0)
    expected_model = k3.create_model(name, input_shape=shape, num_classes=3, **kwargs)
    expected = expected_model(x, training=False)
    keras.config.set_image_data_format("channels_first")
    try:
        model = k3.create_model(name, input_shape=shape, num_classes=3, **kwargs)
    finally:
        keras.config.set_image_data_format("channels_last")
    assert model.output_shape == expected_model.output_shape
    model.set_weights(expected_model.get_weights())
    np.testing.assert_allclose(model(x, training=False), expected, rtol=1e-5, atol=1e-5)


def test_softmax_classifier_activation():
    model = k3.ShuffleNetV2_3D(0.25, num_classes=4, input_shape=(8, 32, 32, 3),
                               classifier_activation="softmax")
    y = np.asarray(model(np.random.rand(2, 8, 32, 32, 3).astype("float32"), training=False))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


def test_input_tensor():
    import warnings

    inputs = keras.Input((8, 32, 32, 3))
    model = k3.MobileNetV1_3D(0.5, input_tensor=inputs, num_classes=3)
    assert model.inputs[0] is inputs
    with warnings.catch_warnings():  # Keras warned at each call that a clip is not [clip]
        warnings.simplefilter("error")
        model(np.zeros((1, 8, 32, 32, 3), np.float32))


def test_input_tensor_made_by_other_layers_keeps_them():
    """As keras.applications: the model starts at the source Input, so that the upstream
    layers are part of it (a clone of their output would drop them silently)."""
    inputs = keras.Input((8, 32, 32, 3))
    scaled = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    model = k3.MobileNetV1_3D(0.5, input_tensor=scaled, num_classes=3)
    assert model.inputs[0] is inputs
    assert "scale" in [layer.name for layer in model.layers]
    outer = keras.Model(inputs, model.output)
    x = np.full((1, 8, 32, 32, 3), 255.0, np.float32)
    expected = np.asarray(model(x, training=False))
    np.testing.assert_allclose(np.asarray(outer(x, training=False)), expected, rtol=1e-6)
    # the Rescaling runs: 255 in is 1 out, not 255
    plain = k3.MobileNetV1_3D(0.5, input_shape=(8, 32, 32, 3), num_classes=3)
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(plain(x / 255.0, training=False)), expected, rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("name", ["mobilenetv2_0.2x", "shufflenet_0.5x_g3", "shufflenetv2_0.25x",
                                  "resnet10_A", "squeezenet_1.0"])
def test_keras_file_round_trip(tmp_path, name):
    shape = _small_shape(name)
    model = k3.create_model(name, input_shape=shape, num_classes=3)
    x = np.random.default_rng(1).normal(size=(1,) + shape).astype(np.float32)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert [l.name for l in restored.layers] == [l.name for l in model.layers]
    # eager calls: `predict` would trace (and optimise) a graph of each model for one clip
    np.testing.assert_allclose(np.asarray(restored(x, training=False)),
                               np.asarray(model(x, training=False)), rtol=1e-5, atol=1e-6)
    assert restored.get_config()["name"] == model.get_config()["name"]


def test_model_config_round_trip():
    model = k3.create_model("shufflenetv2_0.25x", input_shape=(8, 32, 32, 3), num_classes=3)
    clone = keras.Model.from_config(model.get_config())
    assert clone.count_params() == model.count_params()


def test_layer_names_are_stable():
    names = [l.name for l in k3.MobileNetV2_3D(1.0, input_shape=(8, 32, 32, 3)).layers]
    for expected in ("conv1", "conv1_bn", "block_1_depthwise", "block_2_expand", "block_3_add",
                     "block_17_project_BN", "conv_last", "predictions"):
        assert expected in names


@pytest.mark.parametrize("name", ["mobilenetv2_1.0x", "shufflenet_1.0x_g3", "shufflenetv2_1.0x",
                                  "squeezenet_1.1", "resnet18_A", "resnext50", "c3d"])
def test_fold_batchnorm_is_equivalent(name):
    shape = (16, 32, 32, 3)
    # C3D's flattening head only fits 112-pixel frames: compare its convolutional trunk.
    head = {"include_top": False} if name == "c3d" else {"num_classes": 6}
    model = k3.create_model(name, input_shape=shape, **head)
    randomize_batchnorm(model, seed=2, spread=0.2)
    folded = fold_batchnorm(model)
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in folded.layers)
    x = np.random.default_rng(2).normal(size=(2,) + shape).astype(np.float32)
    ref = model(x, training=False).numpy()
    np.testing.assert_allclose(folded(x).numpy(), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_registry_names_and_aliases():
    names = k3.list_models()
    for expected in ("mobilenetv1", "mobilenetv2", "shufflenetv1", "shufflenetv2", "squeezenet",
                     "resnet10", "resnet200", "resnext50", "resnext152", "c3d"):
        assert expected in names
    assert k3.list_models("resnext*") == ["resnext50", "resnext101", "resnext152"]
    with pytest.raises(ValueError, match=r"shell-style pattern string.*Received: pattern=3"):
        k3.list_models(3)  # was a TypeError from inside fnmatch
    assert registry.resolve_name("mobilenet") == ("mobilenetv1", {})
    assert registry.resolve_name("shufflenet_0.5x_g3") == ("shufflenetv1", {"width_mult": 0.5, "groups": 3})
    assert registry.resolve_name("resnet", depth=34) == ("resnet34", {})
    assert registry.resolve_name("resnext101_B") == ("resnext101", {"shortcut": "B"})
    assert registry.resolve_name("squeezenet_1.0") == ("squeezenet", {"version": 1.0})


@pytest.mark.parametrize("family", registry.families(), ids=lambda f: f.name)
def test_every_family_is_registered_under_its_names(family):
    names = family.registry_names()
    assert set(names) <= set(k3.list_models())
    for name in (*names, family.name, *family.aliases):
        assert registry.get_family(name) is family
    for arch, (name, _, _) in family.paper_rows.items():
        assert registry.get_family(arch) is family and name in names
    name = next(iter(names))
    model = k3.create_model(name, input_shape=_small_shape(name), include_top=False)
    # Complexity counting finds the family's rules from the default model name.
    assert complexity.detect_family(model) == family.name


def test_register_family_refuses_a_taken_name():
    family = registry.get_family("mobilenetv2")
    with pytest.raises(ValueError, match="already registered"):
        registry.register_family(family)
    with pytest.raises(ValueError, match=r"already taken: \['mobilenet'\]"):
        registry.register_family(dataclasses.replace(family, name="mobilenetv9",
                                                     aliases=("mobilenet",)))
    assert registry.get_family("mobilenetv9") is None


def test_registry_names_and_depths_are_checked_where_they_are_given():
    with pytest.raises(ValueError, match="lower case.* register 'mynet'"):
        registry.register_model("MyNet", k3.MobileNetV2_3D)  # create_model could not find it
    assert "MyNet" not in registry.list_models()
    for depth in (19, 18.7, "abc"):  # an unknown name, a silent resnet18, int()'s own error
        with pytest.raises(ValueError, match=rf"'resnet' has depths 10, 18, .*depth={depth!r}"):
            registry.resolve_name("resnet", depth=depth)
    for name in ("resnet", "resnet18"):
        for depth in ("18", 18.0):  # as the name says it, not as typed
            assert registry.resolve_name(name, depth=depth)[1].get("depth", 18) == 18
            assert registry.resolve_name(name, depth=depth)[0] == "resnet18"


@pytest.mark.parametrize("name, expected", [
    ("MobileNetV2", ("mobilenetv2", {})),
    ("MobileNetV2_0.2x", ("mobilenetv2", {"width_mult": 0.2})),
    ("ShuffleNet_0.5x_G3", ("shufflenetv1", {"width_mult": 0.5, "groups": 3})),
    ("ResNet18_A", ("resnet18", {"shortcut": "A"})),
    ("resnet18_a", ("resnet18", {"shortcut": "A"})),
    ("resnet18", ("resnet18", {})),
])
def test_names_ignore_case(name, expected):
    assert k3.registry.resolve_name(name) == expected


def test_names_agreeing_with_their_kwargs_build():
    model = k3.create_model("resnet10_A", depth=10, shortcut="A", input_shape=(16, 32, 32, 3),
                            num_classes=3)
    assert model.name == "resnet10_3d"
    assert k3.registry.resolve_name("resnet18", depth=None) == ("resnet18", {"depth": None})


def test_create_model_drops_none_kwargs():
    model = k3.create_model("mobilenetv2", width_mult=0.2, num_classes=None, dropout=None,
                            input_shape=(8, 32, 32, 3))
    assert model.output_shape == (None, 600)


@pytest.mark.parametrize("call,match", [
    (lambda: k3.create_model("vgg16"), "Unknown model 'vgg16'"),
    (lambda: k3.create_model("mobilenetv2_0.2"), "in the name: mobilenetv2_0.2x"),
    (lambda: k3.create_model("resnet"), "needs a depth"),
    (lambda: k3.create_model("mobilenetv2", bogus=1), "Invalid arguments"),
    # said before the builder's "SqueezeNet_3D() got an unexpected keyword argument"
    (lambda: k3.create_model("squeezenet", width_mult=0.5),
     r"^Invalid arguments for model 'squeezenet': it takes no width_mult: leave it unset\. "
     r"Received: width_mult=0\.5$"),
    # a name that fixes an argument is not overridden by a kwarg saying otherwise
    (lambda: k3.create_model("resnet18", depth=50), "'resnet18' fixes depth=18"),
    (lambda: k3.create_model("resnet18_A", depth=50), "fixes depth=18"),
    (lambda: k3.create_model("resnet18_A", shortcut="B"), "fixes shortcut='A'"),
    (lambda: k3.create_model("mobilenetv2_0.2x", width_mult=0.45), "fixes width_mult=0.2"),
    (lambda: k3.ShuffleNetV2_3D(0.3), "width_mult"),
    (lambda: k3.ShuffleNetV1_3D(groups=5), "groups"),
    (lambda: k3.ShuffleNetV1_3D(input_shape=(8, 32, 32, 3)), "even number of frames"),
    (lambda: k3.ResNet3D(depth=20), "depth"),
    (lambda: k3.ResNet3D(18, shortcut="C"), "shortcut"),
    (lambda: k3.SqueezeNet_3D(version=1.2), "version"),
    (lambda: k3.MobileNetV2_3D(pooling="sum"), "pooling"),
    (lambda: k3.MobileNetV2_3D(num_classes=0), "num_classes"),
    (lambda: k3.MobileNetV2_3D(input_shape=(16, 112, 112, 1)), "RGB"),
    (lambda: k3.MobileNetV2_3D(weights="missing.weights.h5"), "weights"),
    (lambda: k3.MobileNetV2_3D(weights="kinetics_mobilenetv2_1.0x_RGB_16_best.pth"),
     r"converted first: python -m keras_efficient3d.convert --checkpoint=kinetics_mob"),
    # strings show quoted, so that "1.0" is not mistaken for a number; bools are no numbers
    (lambda: k3.MobileNetV2_3D(width_mult="1.0"), "Received: width_mult='1.0'"),
    (lambda: k3.MobileNetV2_3D(width_mult=True), "Received: width_mult=True"),
    (lambda: k3.ShuffleNetV2_3D(width_mult=True), "Received: width_mult=True"),
    (lambda: k3.ShuffleNetV1_3D(groups=True), "Received: groups=True"),
    (lambda: k3.SqueezeNet_3D(version=True), "Received: version=True"),
    (lambda: k3.ResNet3D(depth=True), "Received: depth=True"),
    (lambda: k3.MobileNetV2_3D(num_classes=True), "Received: num_classes=True"),
    (lambda: k3.MobileNetV2_3D(num_classes="5"), "Received: num_classes='5'"),
])
def test_argument_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("width_mult,groups,channels", [
    (0.25, 8, 6), (0.5, 8, 12), (0.75, 8, 18), (1.25, 8, 30), (1.5, 8, 36), (0.6, 3, 14)])
def test_shufflenetv1_refuses_a_width_its_groups_cannot_split(width_mult, groups, channels):
    """The stem's channels (int(24 * width_mult)) are the first unit's grouped input."""
    with pytest.raises(ValueError, match=rf"width_mult={width_mult} with groups={groups} gives "
                                         rf"stage 1 an input of {channels} channels, not divisible "
                                         rf"into {groups} groups"):
        k3.ShuffleNetV1_3D(width_mult, groups, input_shape=(16, 32, 32, 3), num_classes=3)


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
def test_shufflenetv1_widths_that_build(groups):
    """What the builder accepts builds, the paper's widths with 3 groups included."""
    from keras_efficient3d.models import shufflenet_v1

    built = []
    for width_mult in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0):
        try:
            k3.ShuffleNetV1_3D(width_mult, groups, input_shape=(16, 32, 32, 3), num_classes=3)
        except ValueError as err:
            assert f"width_mult={width_mult} with groups={groups} gives stage" in str(err)
            continue
        built.append(width_mult)
    assert {1.0, 2.0} <= set(built)
    if groups == 3:
        assert set(shufflenet_v1.WIDTHS) <= set(built)


def test_numpy_integers_are_accepted_and_saved_as_ints(tmp_path):
    """Arguments from NumPy (a label count, a sweep's grid) are numbers.Integral."""
    model = k3.ResNeXt3D(depth=np.int64(50), cardinality=np.int64(4), num_classes=np.int64(5),
                         input_shape=(16, 32, 32, 3))
    assert model.output_shape == (None, 5)
    model.save(tmp_path / "m.keras")  # a NumPy integer in the config would not serialize
    assert keras.saving.load_model(tmp_path / "m.keras").output_shape == (None, 5)
    shuffle = k3.ShuffleNetV1_3D(width_mult=np.float32(0.5), groups=np.int32(3),
                                 num_classes=np.int16(3), input_shape=(16, 32, 32, 3))
    assert shuffle.output_shape == (None, 3)


def test_weights_argument_loads_file(tmp_path):
    model = k3.MobileNetV2_3D(0.2, input_shape=(8, 32, 32, 3), num_classes=3)
    path = tmp_path / "w.weights.h5"
    model.save_weights(path)
    again = k3.MobileNetV2_3D(0.2, input_shape=(8, 32, 32, 3), num_classes=3, weights=str(path))
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "saved_models",
                       "synthetic_gestures.keras")


def test_weights_from_a_keras_archive_with_keras_batchnormalization():
    """The shipped archive holds Keras' BatchNormalization where the builders now make the
    project's BatchNorm: Keras' load_weights finds none of its variables; by layer name
    they all load (into smaller clips too: no weight depends on the clip size)."""
    shipped = keras.saving.load_model(SHIPPED, compile=False)
    assert any(type(l) is keras.layers.BatchNormalization for l in shipped.layers)
    model = k3.create_model("mobilenetv2_0.2x", input_shape=(8, 32, 32, 3), num_classes=8,
                            weights=SHIPPED)
    assert len(model.get_weights()) == len(shipped.get_weights())
    for a, b in zip(shipped.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, match", [
    (dict(width=0.2, num_classes=5), r"8 classes\) does not fit .*5 classes\) \(layer predictions"),
    (dict(width=0.5, num_classes=8), r"does not fit .* \(layer conv1: weights of shapes"),
])
def test_weights_of_another_model_are_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        k3.MobileNetV2_3D(kwargs["width"], input_shape=(8, 32, 32, 3),
                          num_classes=kwargs["num_classes"], weights=SHIPPED)
    assert "\n" not in str(err.value) and str(err.value).startswith(SHIPPED)


def test_h5_weights_of_another_model_name_the_file_not_the_values(tmp_path):
    path = str(tmp_path / "w.weights.h5")
    k3.MobileNetV2_3D(0.2, input_shape=(8, 32, 32, 3), num_classes=8).save_weights(path)
    with pytest.raises(ValueError) as err:
        k3.MobileNetV2_3D(0.2, input_shape=(8, 32, 32, 3), num_classes=5, weights=path)
    message = str(err.value)
    assert message.startswith(f"{path}: these weights do not fit")
    assert "layer predictions: weights of shape (1280, 8), expected (1280, 5)" in message
    assert "value=" not in message and "\n" not in message


@pytest.mark.parametrize("printed", ["(1280, 5)", "torch.Size([1280, 5])"])
def test_a_weight_shape_mismatch_is_named_on_every_backend(printed):
    """Keras on PyTorch prints a shape as torch.Size([...]): that mismatch was reported as
    layers that found no weights."""
    from keras_efficient3d.models._base import _weights_error

    err = ValueError("Layer 'predictions' expected 2 variables. Trying to load for object "
                     "<Dense name=predictions, built=True>: variable.shape=(1280, 7), "
                     f"Received: value.shape={printed}. Target variable: [[0.1 ...]] "
                     "A total of 1 objects could not be loaded.")
    assert _weights_error(err) == "layer predictions: weights of shape (1280, 5), expected (1280, 7)"


def test_h5_weights_of_another_structure_say_how_many_layers_find_none(tmp_path):
    # Keras lists every object it could not load; the message is one line, whole, not that
    # list cut off mid-way.
    path = str(tmp_path / "other.weights.h5")
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.BatchNormalization()])
    other.save_weights(path)
    with pytest.raises(ValueError) as err:
        k3.MobileNetV2_3D(0.2, input_shape=(8, 32, 32, 3), num_classes=3, weights=path)
    message = str(err.value)
    assert re.search(r"^.*other.weights.h5: these weights do not fit the built model .* \(\d+ of "
                     r"the model's layers find no weights in the file: weights of another model, "
                     r"or saved from one of Keras' BatchNormalization layers", message), message
    assert message.endswith("instead))") and "\n" not in message


def test_weights_from_a_truncated_keras_archive_name_the_file(tmp_path):
    path = str(tmp_path / "cut.keras")
    with open(SHIPPED, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read()[:50_000])
    with pytest.raises(ValueError, match=r"cut\.keras: not a valid \.keras archive"):
        k3.MobileNetV2_3D(0.2, input_shape=(8, 32, 32, 3), num_classes=8, weights=path)


def _halves_model(listed=False):
    """A small graph of every kind of per-clip layer around BatchNorm and a Dropout, where
    each BatchNorm normalises enough values that float rounding stays small (`listed`: its
    output in a one-element list, as `video_model` rebuilds a functional model)."""
    L = k3.layers
    inputs = keras.Input((4, 12, 12, 3))
    x = L.Conv3D(8, 3, (1, 2, 2), 1, name="conv")(inputs)
    x = L.batch_norm("conv_bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    a, b = L.ChannelSplit(name="split")(x)
    b = L.DepthwiseConv3D(3, 1, 1, name="dw")(b)
    b = L.batch_norm("dw_bn")(b)
    x = keras.layers.Concatenate(name="concat")([a, b])
    x = L.ChannelShuffle(2, name="shuffle")(x)
    x = L.MaxPool3D(3, 2, 1, name="pool")(x)
    x = keras.layers.GlobalAveragePooling3D(name="avg")(x)
    x = keras.layers.Dropout(0.3, name="dropout")(x)
    outputs = keras.layers.Dense(5, name="logits")(x)
    return k3.VideoModel(inputs, [outputs] if listed else outputs)


def _training_call(model, x, labels):
    """Logits, loss gradients and moving statistics of one training call, the weights
    restored after it."""
    saved = [w.numpy() for w in model.variables]  # with the Dropout's seed state
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(input_signature=[tf.TensorSpec((None,) + x.shape[1:]), tf.TensorSpec((None,), tf.int64)])
    def step(clips, y):
        with tf.GradientTape() as tape:
            logits = model(clips, training=True)
            loss = loss_fn(y, logits)
        return logits, tape.gradient(loss, model.trainable_weights)

    logits, grads = step(x, labels)
    stats = [w.numpy() for w in model.non_trainable_variables]
    for w, v in zip(model.variables, saved):
        w.assign(v)
    return [logits.numpy()] + [g.numpy() for g in grads] + stats


@pytest.mark.parametrize("batch", [1, 2, 3, 5])
def test_training_call_in_halves_equals_the_whole_batch(batch, monkeypatch):
    """On TensorFlow a training call runs the batch's two halves side by side, BatchNorm
    normalising both by the whole batch's statistics: the logits, the loss gradients and
    the moving statistics of the whole batch's call (a 1-clip batch, which has no halves,
    takes the whole-batch graph; the batch size is unknown to the traced graph, as in
    `fit`)."""
    keras.utils.set_random_seed(0)
    monkeypatch.setattr(runtime, "tf_side_by_side", lambda: True)  # the thread plan's threads
    model = _halves_model()
    randomize_batchnorm(model)
    assert model.halves_call()
    rng = np.random.default_rng(batch)
    x = rng.normal(size=(batch, 4, 12, 12, 3)).astype(np.float32)
    labels = rng.integers(0, 5, batch)
    parts = []
    call_parts = k3.layers.BatchNorm.call_parts
    monkeypatch.setattr(k3.layers.BatchNorm, "call_parts",
                        lambda self, p: parts.append(len(p)) or call_parts(self, p))
    halves = _training_call(model, x, labels)
    assert parts == [2, 2]  # both BatchNorm layers, traced once, each on two halves
    monkeypatch.setattr(k3.VideoModel, "halves_call", lambda self: False)
    whole = _training_call(model, x, labels)
    assert parts == [2, 2]
    # the moving statistics, and the Dropout's seed state: one draw for the whole batch
    assert len(halves) == len(whole) == 1 + len(model.trainable_weights) + 5
    assert len(model.non_trainable_variables) == 5
    for a, b in zip(halves, whole):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(b).max()))


def test_halves_call_only_for_graphs_of_per_clip_layers(monkeypatch):
    """With threads that run operations side by side, every registry family trains in
    halves; a layer that may mix a batch's clips (Keras' own BatchNormalization, a Lambda)
    or a BatchNorm without a parts form keeps the whole batch's call, and inference never
    splits. TensorFlow's default threads (every core on each operation) keep the whole
    batch's call."""
    threads = tf.config.threading
    assert not _halves_model().halves_call()  # the suite runs at TensorFlow's default
    for intra, inter, side_by_side in [(1, 2, True), (0, 2, False), (1, 1, False),
                                       (os.cpu_count(), 2, False)]:
        monkeypatch.setattr(threads, "get_intra_op_parallelism_threads", lambda v=intra: v)
        monkeypatch.setattr(threads, "get_inter_op_parallelism_threads", lambda v=inter: v)
        assert runtime.tf_side_by_side() is side_by_side, (intra, inter)
        assert _halves_model().halves_call() is side_by_side
    with monkeypatch.context() as m:  # several replicas (MirroredStrategy): the whole batch
        m.setattr(threads, "get_intra_op_parallelism_threads", lambda: 1)
        m.setattr(threads, "get_inter_op_parallelism_threads", lambda: 2)
        assert _halves_model().halves_call()
        m.setattr(tf.distribute, "has_strategy", lambda: True)
        m.setattr(tf.distribute, "get_strategy",
                  lambda: type("Strategy", (), {"num_replicas_in_sync": 2})())
        assert not _halves_model().halves_call()
    with monkeypatch.context() as m:  # the plan's (1, 2), on a machine with a GPU
        m.setattr(threads, "get_intra_op_parallelism_threads", lambda: 1)
        assert runtime.tf_side_by_side()
        m.setattr(tf.config, "list_physical_devices", lambda kind=None: ["gpu"])
        assert not runtime.tf_side_by_side()
    monkeypatch.setattr(runtime, "tf_side_by_side", lambda: True)
    for family in registry.families():
        name = min(family.registry_names(), key=lambda n: n in _HEAVY)
        assert k3.create_model(name, input_shape=_small_shape(name), num_classes=3).halves_call(), name
    inputs = keras.Input((4, 8, 8, 3))
    class OwnConv(k3.layers.Conv3D):
        pass

    for layer in (keras.layers.BatchNormalization(), keras.layers.Lambda(lambda v: v * 2),
                  k3.layers.BatchNorm(renorm=True), OwnConv(4, 1),
                  k3.layers.Conv3D(4, 1, activity_regularizer="l2")):
        x = k3.layers.Conv3D(4, 3, 1, 1)(inputs)
        model = k3.VideoModel(inputs, keras.layers.GlobalAveragePooling3D()(layer(x)))
        assert not model.halves_call(), type(layer).__name__
    x = k3.layers.Conv3D(4, 3, 1, 1)(inputs)
    along_batch = keras.layers.Concatenate(axis=0)([x, x])  # mixes the halves' order
    assert not k3.VideoModel(inputs, along_batch).halves_call()
    assert k3.VideoModel(inputs, keras.layers.Concatenate()([x, x])).halves_call()
    frozen = _halves_model()
    frozen.get_layer("dw_bn").trainable = False  # inference-mode BatchNorm: per clip
    assert frozen.halves_call()
    model = _halves_model()
    parts = []
    call_parts = k3.layers.BatchNorm.call_parts
    monkeypatch.setattr(k3.layers.BatchNorm, "call_parts",
                        lambda self, p: parts.append(len(p)) or call_parts(self, p))
    clips = np.zeros((2, 4, 12, 12, 3), np.float32)
    model(clips, training=False)
    model.predict(clips, verbose=0)
    model(clips, training=True)  # eagerly, nothing would run side by side
    assert not parts
    tf.function(lambda v: model(v, training=True))(clips)
    assert parts == [2, 2]


def test_fit_in_halves_ends_with_the_whole_batch_weights(monkeypatch):
    """`model.fit` with the halves call (batches of 2, 2 and 1 clips: the last takes the
    whole-batch branch, which returns the same structure for a model whose outputs are a
    one-element list) ends with the weights, moving statistics and Dropout seed of fit
    without it."""
    monkeypatch.setattr(runtime, "tf_side_by_side", lambda: True)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 4, 12, 12, 3)).astype(np.float32)
    y = rng.integers(0, 5, 5)
    results = []
    for halves in (True, False):
        keras.utils.set_random_seed(0)
        model = _halves_model(listed=True)
        assert model.halves_call()
        if not halves:
            object.__setattr__(model, "halves_call", lambda: False)
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0)
        results.append([w.numpy() for w in model.variables])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(b).max()))


@pytest.mark.parametrize("build, message", [
    (lambda: k3.MobileNetV2_3D(float("inf")), r"`width_mult` must be a positive number.*inf"),
    (lambda: k3.ShuffleNetV1_3D(float("nan")), r"`width_mult` must be a positive number.*nan"),
    (lambda: k3.MobileNetV1_3D(0.25, input_shape=(8.7, 32, 32, 3)), r"tuple of whole numbers"),
    (lambda: k3.MobileNetV2_3D(0.2, input_tensor=np.zeros((1, 8, 32, 32, 3))),
     r"`input_tensor` must be a Keras tensor .* of type ndarray$"),
    (lambda: k3.MobileNetV1_3D(0.25, input_shape=5), r"`input_shape` must be a fully defined"),
    # input_tensor's shape and input_shape both given, and apart: one would be dropped
    (lambda: k3.MobileNetV2_3D(0.2, input_tensor=keras.Input((8, 32, 32, 3)),
                               input_shape=(16, 64, 64, 3)),
     r"`input_shape` \(16, 64, 64, 3\) is not the shape of `input_tensor` \(8, 32, 32, 3\)"),
    (lambda: k3.MobileNetV2_3D(0.2, input_tensor=keras.Input((32, 32, 3))),
     r"^the shape of `input_tensor` must be a fully defined .* Received: input_tensor of shape "
     r"\(32, 32, 3\)$"),
    (lambda: k3.MobileNetV2_3D(0.2, input_shape=(3, 16, 112, 112)),
     r"3 channels, last: \(frames, height, width, 3\)\)\. Received: input_shape="),
    (lambda: k3.ShuffleNetV1_3D(0.04, 1, input_shape=(16, 32, 32, 3)),
     r"width_mult=0.04 gives the stem 0 channels: too small for any channel"),
    (lambda: k3.create_model("resnet", depth=0, input_shape=(16, 32, 32, 3)),
     r"'resnet' has depths 10, 18, .* Received: depth=0"),
    (lambda: k3.create_model("resnet", depth=18, model_depth=34), r"disagree: give one"),
])
def test_builders_refuse_what_they_would_overflow_truncate_or_quote_whole(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_squeezenet_version_of_another_number_type_is_the_tables():
    """np.float32(1.1) equals 1.1 but hashed apart from it (a KeyError in the pool table);
    version=1 named the model squeezenet_3d_1."""
    model = k3.SqueezeNet_3D(version=np.float32(1.1), input_shape=(16, 32, 32, 3), num_classes=3)
    assert model.name == "squeezenet_3d_1.1"
    assert k3.SqueezeNet_3D(version=1, input_shape=(16, 32, 32, 3), num_classes=3).name == \
        "squeezenet_3d_1.0"
    assert k3.create_model("resnet", depth=18, model_depth=18, input_shape=(16, 32, 32, 3),
                           num_classes=3).count_params() > 0


def test_a_squeezenet_keras_file_loads_into_a_headless_squeezenet(tmp_path):
    """Its classifier is a 1x1x1 convolution, "predictions", not a Dense layer: a .keras file
    of the whole model was refused for include_top=False (a .weights.h5 loaded)."""
    shape = (16, 32, 32, 3)
    source = randomize_batchnorm(k3.SqueezeNet_3D(input_shape=shape, num_classes=5))
    source.save(str(tmp_path / "sq.keras"))
    headless = k3.SqueezeNet_3D(input_shape=shape, include_top=False,
                                weights=str(tmp_path / "sq.keras"))
    for layer in headless.layers:
        for a, b in zip(layer.get_weights(), source.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_a_models_name_does_not_depend_on_the_widths_type():
    shape = dict(input_shape=(8, 32, 32, 3))
    assert k3.MobileNetV2_3D(np.float32(0.2), **shape).name == "mobilenetv2_3d_0.2x"
    assert k3.ShuffleNetV2_3D(1, **shape).name == k3.create_model("shufflenetv2_1.0x", **shape).name
    assert k3.MobileNetV1_3D(0.25, input_shape=(8.0, 32, 32, 3)).input_shape == (None, 8, 32, 32, 3)


def test_weights_that_are_a_folder_or_not_hdf5_are_named(tmp_path):
    with pytest.raises(ValueError, match="path to an existing weights file"):
        k3.MobileNetV2_3D(0.2, input_shape=(8, 32, 32, 3), weights=str(tmp_path))
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(b"not HDF5 at all")
    with pytest.raises(ValueError, match=r"broken.weights.h5: not a readable weights file \("):
        k3.MobileNetV2_3D(0.2, input_shape=(8, 32, 32, 3), weights=str(broken))


def test_weights_of_a_keras_file_load_by_name_as_a_weights_file_does(tmp_path):
    """Into a headless model (the file's classifier is left out, as from a .weights.h5),
    from a model wrapped with its preprocessing layer; a BatchNorm-folded file is named as
    such (its layers are not a trainable model's)."""
    from keras_efficient3d.data.normalization import Normalization
    from keras_efficient3d.fold import fold_batchnorm
    from keras_efficient3d.preprocessing import with_preprocessing

    shape = (8, 32, 32, 3)
    source = randomize_batchnorm(k3.MobileNetV2_3D(0.2, input_shape=shape, num_classes=5))
    source.save(str(tmp_path / "w.keras"))
    with_preprocessing(source, Normalization.preset("kinetics")).save(str(tmp_path / "p.keras"))
    fold_batchnorm(source).save(str(tmp_path / "f.keras"))
    headless = k3.MobileNetV2_3D(0.2, input_shape=shape, include_top=False, pooling="avg",
                                 weights=str(tmp_path / "w.keras"))
    for layer in headless.layers:
        for a, b in zip(layer.get_weights(), source.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)
    wrapped = k3.MobileNetV2_3D(0.2, input_shape=shape, num_classes=5,
                                weights=str(tmp_path / "p.keras"))
    for a, b in zip(wrapped.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"f.keras: its model .* has BatchNorm folded"):
        k3.MobileNetV2_3D(0.2, input_shape=shape, num_classes=5, weights=str(tmp_path / "f.keras"))
    with pytest.raises(ValueError, match=r"\(8x32x32 clips, 1024 features\) \(no layer"):
        k3.ShuffleNetV2_3D(0.25, input_shape=shape, include_top=False,
                           weights=str(tmp_path / "w.keras"))


def test_size_refusals_say_which_sizes_fit():
    with pytest.raises(ValueError, match=r"\(not a multiple of 32\) must fit the head, e.g. 48, 80, 112"):
        k3.C3D(input_shape=(16, 64, 64, 3), num_classes=3)
    with pytest.raises(ValueError, match=r"use 16 or 32 frames. Received: input_shape=\(8, 32, 32, 3\)"):
        k3.ShuffleNetV1_3D(0.25, input_shape=(8, 32, 32, 3))


def test_weights_of_a_deeper_model_do_not_load_into_a_shallower_one(tmp_path):
    """Every layer of a ResNet-10 is in a ResNet-18's file, with the same shapes: only a
    headless model may leave layers of the file out, and only its classifier."""
    shape = (8, 32, 32, 3)
    k3.create_model("resnet18", input_shape=shape, num_classes=5).save(str(tmp_path / "r18.keras"))
    with pytest.raises(ValueError, match=r"layer layer1_block1_\w+ of the file is not in the built"):
        k3.create_model("resnet10", input_shape=shape, num_classes=5,
                        weights=str(tmp_path / "r18.keras"))
    with pytest.raises(ValueError, match=r"of the file is not in the built model"):
        k3.create_model("resnet10", input_shape=shape, include_top=False,
                        weights=str(tmp_path / "r18.keras"))
