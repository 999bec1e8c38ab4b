"""The deployment graph computes the Keras model's function, for every registered model."""

import numpy as np
import pytest
import tensorflow as tf

from deploy_helpers import SMALL, clips, input_shape_for, model_kwargs, randomize_batchnorm
from keras_efficient3d import create_model, list_models
from keras_efficient3d.deploy import DeploymentGraph

# Deep baselines are slow to build; the fast suite keeps one of each block type.
_SLOW = {"resnet50"}
# ResNet-34 repeats ResNet-18's basic blocks, ResNet-101/152/200 ResNet-50's bottlenecks and
# ResNeXt-101/152 ResNeXt-50's grouped ones (same layers, only more of them): left out for
# the suite's time budget.
_REPEATS = {"resnet34", "resnet101", "resnet152", "resnet200", "resnext101", "resnext152"}
MODELS = [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n
          for n in list_models() if n not in _REPEATS]


def _rel_err(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / (np.abs(np.asarray(b)).max() + 1e-12))


@pytest.mark.parametrize("name", MODELS)
def test_deployment_graph_equals_keras(name):
    shape = input_shape_for(name)
    model = randomize_batchnorm(create_model(name, input_shape=shape, **model_kwargs(name)))
    x = clips(shape, 2)
    expected = np.asarray(model(x, training=False))
    graph = DeploymentGraph(model)
    # Any batch (training layout) and the batch-1 export layout (frames on axis 0).
    np.testing.assert_allclose(graph(x, batch=None), expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())
    np.testing.assert_allclose(graph(x[:1], batch=1), expected[:1], rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())
    assert _rel_err(graph(x[:1], batch=1), expected[:1]) < 1e-4


def test_deployment_graph_has_no_5d_ops_at_batch_1():
    model = create_model("shufflenetv2_0.5x", input_shape=(8, 32, 32, 3), num_classes=3)
    graph = DeploymentGraph(model)
    fn = graph.as_function(batch=1).get_concrete_function()
    ranks = {}
    for op in fn.graph.get_operations():
        for t in op.outputs:
            if t.shape.rank is not None and op.type not in ("Placeholder", "Const"):
                ranks.setdefault(t.shape.rank, set()).add(op.type)
            if t.shape.rank is not None:
                assert None not in t.shape.as_list(), f"{op.name} has a dynamic shape {t.shape}"
    assert max(ranks) <= 4, f"ops with 5-D outputs: {ranks.get(5)}"


def test_dead_temporal_taps_are_dropped():
    """With one frame left, a 3-tap depthwise conv reads only padding in two taps."""
    from keras_efficient3d.layers import live_taps

    assert live_taps(1, 3, 1, 1) == [1]
    assert live_taps(2, 3, 2, 1) == [1, 2]
    assert live_taps(16, 3, 1, 1) == [0, 1, 2]


def test_unsupported_layer_is_reported():
    import keras

    inputs = keras.Input((4, 16, 16, 3))
    outputs = keras.layers.Conv3D(4, 3, padding="same")(inputs)
    with pytest.raises(ValueError, match="not supported"):
        DeploymentGraph(keras.Model(inputs, outputs))


def test_tap_windows_read_the_clip_in_place():
    """Temporal taps at batch 1 read (phase streams of) the clip without a padded copy; the
    frames a tap cannot reach become zero frames on its output."""
    from keras_efficient3d.layers import bias_tap, tap_windows

    # kernel 3, stride 1, pad 1 on 16 frames: x[0:15] shifted down, x, x[1:16] shifted up.
    t_out, w = tap_windows(16, 3, 1, 1)
    assert t_out == 16 and w == [(0, 0, 15, 1, 0), (0, 0, 16, 0, 0), (0, 1, 16, 0, 1)]
    assert bias_tap(16, 3, 1, 1) == 1
    # kernel 3, stride 2, pad 1: the odd frames shifted down, the even frames, the odd frames.
    t_out, w = tap_windows(16, 3, 2, 1)
    assert t_out == 8 and w == [(1, 0, 7, 1, 0), (0, 0, 8, 0, 0), (1, 0, 8, 0, 0)]
    # One frame left: only the centre tap is live.
    assert tap_windows(1, 3, 1, 1) == (1, [None, (0, 0, 1, 0, 0), None])


def _slice_sizes(fn):
    sizes = []
    for op in fn.graph.get_operations():
        if op.type == "Slice":
            sizes.append(tf.get_static_value(op.inputs[2]).tolist())
    return sizes


@pytest.mark.parametrize("name", ["shufflenetv2_0.5x", "shufflenet_0.5x_g3", "mobilenetv2_0.45x"])
def test_batch_1_slices_have_static_sizes(name):
    """XNNPACK declines a SLICE whose size holds -1; such slices (channel split, grouped
    convolution) cut ShuffleNets into many delegate partitions."""
    model = create_model(name, input_shape=input_shape_for(name), num_classes=3)
    fn = DeploymentGraph(model).as_function(batch=1).get_concrete_function()
    sizes = _slice_sizes(fn)
    assert sizes and all(-1 not in s for s in sizes), sizes


def test_batch_1_depthwise_taps_pad_no_input_frames():
    """No PAD of axis 0 feeds a convolution: temporal taps read the clip in place (a 4-D PAD
    of frames is a full copy that XNNPACK cannot fold into the convolution, unlike a
    spatial PAD)."""
    model = create_model("mobilenetv2_0.45x", input_shape=SMALL, num_classes=3)
    fn = DeploymentGraph(model).as_function(batch=1).get_concrete_function()
    for op in fn.graph.get_operations():
        if op.type in ("DepthwiseConv2dNative", "Conv2D"):
            src = op.inputs[0].op
            if src.type in ("Pad", "PadV2"):
                pads = tf.get_static_value(src.inputs[1])
                assert not pads[0].any(), (op.name, pads.tolist())


def test_layer_subclasses_take_their_base_class_handler():
    """The graph maps layer classes to handlers through a table, walking a layer's bases."""
    import keras

    from keras_efficient3d.layers import Conv3D, MaxPool3D

    class ClippedReLU(keras.layers.ReLU):
        pass

    inputs = keras.Input((4, 8, 8, 3))
    x = ClippedReLU(max_value=6.0)(Conv3D(4, 3, 1, 1, use_bias=True)(inputs))
    outputs = keras.layers.GlobalAveragePooling3D()(MaxPool3D(3, 2, 1)(x))
    model = keras.Model(inputs, outputs)
    x = clips((4, 8, 8, 3), 2)
    np.testing.assert_allclose(DeploymentGraph(model)(x),
                               np.asarray(model(x)), rtol=1e-5, atol=1e-5)


def test_rgb_stem_taps_are_stacked_by_a_convolution_but_in_qat_int8():
    """Float and post-training int8 graphs stack the stem's temporal taps with one 0/1
    Conv2D (XNNPACK's concat of 3-channel frames was the stem's largest cost); the int8
    file computes bit for bit what slices and a concat do (the converter gives the stacked
    taps the clip's range). A QAT graph's int8 form keeps slices and a concat: it has no
    range for the stacked tensor."""
    from keras_efficient3d.deploy import tflite
    from keras_efficient3d.deploy.quantize import _qat_layer, quantize_model

    model = randomize_batchnorm(create_model("mobilenetv1_0.5x", input_shape=SMALL, num_classes=3))
    graph = DeploymentGraph(model, pack_channels=0)
    sliced = DeploymentGraph(model, pack_channels=0, stack_channels=0)

    def op_types(g, int8, hooks=None):
        fn = g.as_function(batch=1, hooks=hooks, int8=int8).get_concrete_function()
        return [op.type for op in fn.graph.get_operations()]

    floats, ints = op_types(graph, False), op_types(graph, True)
    assert "ConcatV2" not in floats and "StridedSlice" not in floats
    assert "ConcatV2" not in ints and "StridedSlice" not in ints
    assert op_types(sliced, False).count("ConcatV2") == op_types(sliced, True).count("ConcatV2") == 1
    assert floats.count("Conv2D") == op_types(sliced, False).count("Conv2D") + 1

    data = clips(SMALL, 8, seed=1)
    runners = [tflite.TFLiteRunner(tflite.convert(g, "int8", representative_data=data, num_calibration=8),
                                   num_threads=1) for g in (graph, sliced)]
    x = clips(SMALL, 3, seed=4)
    for i in range(len(x)):
        np.testing.assert_array_equal(runners[0](x[i:i + 1]), runners[1](x[i:i + 1]))

    qat = _qat_layer(quantize_model(graph, data, num_calibration=8))
    assert op_types(qat.graph, True, hooks=qat.frozen_hooks()).count("ConcatV2") == 1
    with pytest.raises(ValueError, match=r"`stack_channels` must be >= 0. Received: stack_channels=-1"):
        DeploymentGraph(model, stack_channels=-1)


def _tiny_video_model(*head, conv_activation=None):
    import keras

    from keras_efficient3d.layers import Conv3D

    inp = keras.Input((4, 8, 8, 3))
    y = Conv3D(4, 3, strides=(1, 2, 2), padding=1, use_bias=True,
               activation=conv_activation)(inp)
    for layer in head:
        y = layer(y)
    return keras.Model(inp, y)


@pytest.mark.parametrize("where", ["layer", "conv"])
def test_softmax_on_video_is_per_frame_in_the_packed_layout(where):
    """The packed layout holds every frame's channels on one axis: a softmax there must
    not normalise across frames (it did, 0.25 off)."""
    import keras

    pool = keras.layers.GlobalAveragePooling3D()
    if where == "layer":
        model = _tiny_video_model(keras.layers.Activation("softmax"), pool)
    else:
        model = _tiny_video_model(pool, conv_activation="softmax")
    x = clips((4, 8, 8, 3), 2)
    expected = np.asarray(model(x))
    for pack in (0, 8):
        graph = DeploymentGraph(model, pack_channels=pack)
        assert graph.packs() == bool(pack)
        np.testing.assert_allclose(graph(x), expected, atol=1e-5)


@pytest.mark.parametrize("layer, message", [
    (lambda keras: keras.layers.BatchNormalization(axis=1), "normalises axis 1"),
    (lambda keras: keras.layers.GlobalAveragePooling3D(data_format="channels_first"),
     "data_format='channels_first'"),
    (lambda keras: keras.layers.GlobalMaxPooling3D(keepdims=True), "keepdims=True"),
    (lambda keras: keras.layers.Dense(5), "takes a 5-D input"),
])
def test_layer_settings_the_graph_does_not_emit_are_refused(layer, message):
    """Each was emitted as the channels-last default: wrong numbers or a wrong shape."""
    import keras

    # a ReLU in the convolution keeps the BatchNorm from folding into it
    model = _tiny_video_model(layer(keras), conv_activation="relu")
    with pytest.raises(ValueError, match=message):
        DeploymentGraph(model)


def test_dynamic_input_and_bad_replacement_weights_are_refused():
    import keras

    inp = keras.Input((None, 8, 8, 3))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling3D()(inp)))
    with pytest.raises(ValueError, match="static"):
        DeploymentGraph(model)

    model = _tiny_video_model(keras.layers.GlobalAveragePooling3D(), keras.layers.Dense(2))
    graph = DeploymentGraph(model, fold=False)
    conv, dense = model.layers[1].name, model.layers[-1].name
    with pytest.raises(ValueError, match=r"kernel must have shape \(3, 3, 3, 3, 4\)"):
        graph.set_conv_weights(conv, np.zeros((1, 1, 1, 3, 5)), None)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        graph.set_conv_weights(conv, None, np.zeros(5))
    with pytest.raises(ValueError, match="not a Conv3D"):
        graph.set_conv_weights(dense, None, None)


def test_predict_returns_each_output_of_a_model_of_several():
    import keras

    inp = keras.Input((4, 8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling3D()(inp)
    model = keras.Model(inp, [keras.layers.Dense(2)(pooled), keras.layers.Dense(3)(pooled)])
    x = clips((4, 8, 8, 3), 2)
    got = DeploymentGraph(model).predict(x)
    for out, want in zip(got, model(x)):
        np.testing.assert_allclose(out, np.asarray(want), atol=1e-5)
    assert [o.shape for o in got] == [(2, 2), (2, 3)]
