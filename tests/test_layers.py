"""Every layer against a straightforward numpy reference, eagerly and in graph mode."""

import contextlib
import os
import platform

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_efficient3d import layers as L


def _np_conv3d(x, w, stride, pad, groups=1, bias=None):
    """Direct NDHWC convolution with PyTorch padding; w is (kt, kh, kw, cin/g, cout)."""
    n, t, h, wd, c = x.shape
    kt, kh, kw, cg, cout = w.shape
    xp = np.pad(x, [(0, 0), (pad[0],) * 2, (pad[1],) * 2, (pad[2],) * 2, (0, 0)])
    to = (t + 2 * pad[0] - kt) // stride[0] + 1
    ho = (h + 2 * pad[1] - kh) // stride[1] + 1
    wo = (wd + 2 * pad[2] - kw) // stride[2] + 1
    out = np.zeros((n, to, ho, wo, cout), np.float64)
    og = cout // groups
    for g in range(groups):
        for a in range(kt):
            for b in range(kh):
                for d in range(kw):
                    patch = xp[:, a:a + stride[0] * to:stride[0], b:b + stride[1] * ho:stride[1],
                               d:d + stride[2] * wo:stride[2], g * cg:(g + 1) * cg]
                    out[..., g * og:(g + 1) * og] += patch @ w[a, b, d, :, g * og:(g + 1) * og]
    if bias is not None:
        out += bias
    return out


def _np_pool(x, k, s, p, mode):
    n, t, h, w, c = x.shape
    fill = -np.inf if mode == "max" else 0.0
    xp = np.pad(x, [(0, 0), (p[0],) * 2, (p[1],) * 2, (p[2],) * 2, (0, 0)], constant_values=fill)
    to, ho, wo = ((d + 2 * pp - kk) // ss + 1 for d, pp, kk, ss in zip((t, h, w), p, k, s))
    out = np.empty((n, to, ho, wo, c))
    for i in range(to):
        for j in range(ho):
            for m in range(wo):
                win = xp[:, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1], m * s[2]:m * s[2] + k[2]]
                out[:, i, j, m] = win.max(axis=(1, 2, 3)) if mode == "max" else win.mean(axis=(1, 2, 3))
    return out


def _run_all_modes(layer, x):
    """Outputs of `layer` eagerly, in a tf.function, through model.predict (unknown batch)
    and one clip at a time (a static batch of 1 takes the layers' in-place frame views)."""
    eager = np.asarray(layer(x))
    graph = tf.function(lambda v: layer(v))(tf.constant(x)).numpy()
    inputs = keras.Input(shape=x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    predicted = model.predict(x, verbose=0, batch_size=len(x))
    one = tf.function(lambda v: layer(v))
    single = np.concatenate([one(tf.constant(x[i:i + 1])).numpy() for i in range(len(x))])
    return eager, graph, predicted, single


CONV_CASES = [
    # (input T, H, W, C), filters, kernel, stride, padding, groups, bias
    ((5, 9, 9, 3), 4, (3, 3, 3), (1, 2, 2), (1, 1, 1), 1, False),  # the stem
    ((6, 8, 8, 4), 6, (3, 3, 3), (2, 2, 2), (1, 1, 1), 1, True),   # temporal stride, even length
    ((7, 9, 9, 4), 6, (3, 3, 3), (2, 2, 2), (1, 1, 1), 2, False),  # grouped (ResNeXt), odd length
    ((4, 6, 6, 6), 9, (1, 1, 1), (1, 1, 1), (0, 0, 0), 3, False),  # grouped 1x1x1 (ShuffleNetV1)
    ((4, 6, 6, 5), 3, (1, 1, 1), (2, 2, 2), (0, 0, 0), 1, False),  # strided 1x1x1 (shortcut B)
    ((9, 11, 11, 2), 3, (7, 7, 7), (1, 2, 2), (3, 3, 3), 1, False),  # ResNet stem
    ((4, 7, 7, 2), 3, (3, 3, 3), (1, 1, 1), (0, 0, 0), 1, True),   # unpadded
    ((3, 2, 2, 2), 4, (3, 7, 7), (1, 2, 2), (1, 3, 3), 1, False),  # padding wider than the clip
    # grouped, padded in time only: a pad of the batch axis straight into a convolution,
    # which TensorFlow's oneDNN remapper fused wrongly at batch 1 (AddN shape mismatch)
    ((4, 8, 8, 4), 4, (3, 1, 1), (1, 2, 2), (1, 0, 0), 2, False),
    ((4, 8, 8, 4), 4, (3, 2, 2), (1, 1, 1), (1, 0, 0), 2, True),
    ((4, 8, 8, 4), 4, (3, 1, 1), (1, 1, 1), (1, 0, 0), 1, False),
]


@pytest.mark.parametrize("portable", [False, True], ids=["native_groups", "portable"])
@pytest.mark.parametrize("shape,filters,kernel,stride,pad,groups,bias", CONV_CASES)
def test_conv3d_matches_reference(shape, filters, kernel, stride, pad, groups, bias, portable):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2,) + shape).astype(np.float32)
    layer = L.Conv3D(filters, kernel, stride, pad, groups=groups, use_bias=bias,
                     bias_initializer="random_normal")
    layer.build((None,) + shape)
    expected = _np_conv3d(x, layer.kernel.numpy(), stride, pad, groups,
                          layer.bias.numpy() if bias else None)
    with contextlib.ExitStack() as stack:
        if portable:
            stack.enter_context(L.forms.consumer("savedmodel"))
        for out in _run_all_modes(layer, x):
            np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    assert layer.compute_output_shape((None,) + shape) == (None,) + expected.shape[1:]


def _grouped_conv2d_ops(fn, spec):
    """Conv2D ops of a traced function whose filter is shallower than its input."""
    graph = fn.get_concrete_function(spec).graph
    return [op for op in graph.get_operations() if op.type == "Conv2D"
            and op.inputs[1].shape[2] != op.inputs[0].shape[-1]]


def test_grouped_conv3d_is_one_op_with_onednn_and_split_when_portable():
    if platform.machine().lower() in ("x86_64", "amd64") and \
            os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
        # The package turns oneDNN on at import (x86 builds of TensorFlow carry it).
        assert L.native_kernels()
    layer = L.Conv3D(9, 1, groups=3)
    spec = tf.TensorSpec((1, 4, 6, 6, 6), tf.float32)
    layer.build(spec.shape)
    expected = 1 if L.native_kernels() else 0
    assert L.forms.current().native is L.native_kernels()
    assert len(_grouped_conv2d_ops(tf.function(lambda v: layer(v)), spec)) == expected
    for portable in ("savedmodel", "tflite"):
        with L.forms.consumer(portable):
            assert L.forms.current().native is False
            assert _grouped_conv2d_ops(tf.function(lambda v: layer(v)), spec) == []


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[5] > 1 or c[2] != (1, 1, 1)])
def test_native_kernels_train_like_the_portable_form(case):
    """One TensorFlow Conv3D (dense) or grouped Conv2D (grouped) where oneDNN runs them; in
    training the Conv3D's padding avoids the Pad that Grappler's remapper cannot
    differentiate: same outputs and gradients as the portable 2D form either way."""
    shape, filters, kernel, stride, pad, groups, bias = case
    x = tf.constant(np.random.default_rng(3).normal(size=(2,) + shape).astype(np.float32))
    layer = L.Conv3D(filters, kernel, stride, pad, groups=groups, use_bias=bias,
                     bias_initializer="ones")
    layer.build(x.shape)
    spec = tf.TensorSpec(x.shape, tf.float32)

    def loss_and_grads(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            loss = tf.reduce_sum(tf.sin(layer(v, training=True)))
        return [loss] + tape.gradient(loss, [v] + layer.trainable_weights)

    native = tf.function(loss_and_grads)
    graph = native.get_concrete_function(spec).graph
    if not L.native_kernels():
        pass  # no oneDNN or GPU here: both forms are the portable one
    elif groups == 1:
        assert any(op.type == "Conv3D" for op in graph.get_operations())
        assert not any(op.type in ("Pad", "PadV2") for op in graph.get_operations())
    else:
        assert _grouped_conv2d_ops(native, spec)
    with L.portable_ops():
        portable = tf.function(loss_and_grads)
        assert not any(op.type == "Conv3D"
                       for op in portable.get_concrete_function(spec).graph.get_operations())
        assert not _grouped_conv2d_ops(portable, spec)
        expected = portable(x)
    for got, want in zip(native(x), expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    # Eagerly, and in a model of unknown batch size (as model.fit traces it).
    inputs = keras.Input(shape=shape)
    model = keras.Model(inputs, layer(inputs))
    for out in (layer(x, training=True), model(x, training=True)):
        np.testing.assert_allclose(np.asarray(out), np.asarray(layer(x)), rtol=1e-5, atol=1e-5)


def test_conv3d_matches_keras_grouped_conv():
    """Keras' own grouped Conv3D (through XLA) as a second reference."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 4, 6, 6, 8)).astype(np.float32)
    ours = L.Conv3D(8, 3, 1, 1, groups=4)
    ours.build(x.shape)
    ref = keras.layers.Conv3D(8, 3, padding="same", groups=4, use_bias=False)
    ref.build(x.shape)
    ref.set_weights([ours.kernel.numpy()])
    np.testing.assert_allclose(ours(x), ref(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape,stride", [((6, 8, 8, 5), (1, 1, 1)), ((6, 8, 8, 5), (2, 2, 2)),
                                          ((5, 9, 9, 3), (2, 2, 2)), ((1, 4, 4, 2), (2, 2, 2))])
def test_depthwise_conv3d_matches_reference(shape, stride):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2,) + shape).astype(np.float32)
    layer = L.DepthwiseConv3D(3, stride, 1)
    layer.build((None,) + shape)
    c = shape[-1]
    dense = np.zeros((3, 3, 3, 1, c), np.float32)
    dense[..., 0, :] = layer.kernel.numpy()[..., 0]
    expected = _np_conv3d(x, dense, stride, (1, 1, 1), groups=c)
    for out in _run_all_modes(layer, x):
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def _biased_depthwise_into_add(graph):
    """BiasAdd ops of `graph` that add a bias to a DepthwiseConv2dNative and feed an Add."""
    return [op for op in graph.get_operations()
            if op.type == "BiasAdd" and op.inputs[0].op.type == "DepthwiseConv2dNative"
            and any(c.type in ("Add", "AddV2", "AddN") for c in op.outputs[0].consumers())]


@pytest.mark.parametrize("shape,stride", [((2, 7, 7, 4), (2, 2, 2)),  # MobileNetV1 block 6
                                          ((4, 8, 8, 4), (1, 1, 1)), ((4, 8, 8, 4), (2, 2, 2)),
                                          ((1, 4, 4, 4), (2, 2, 2))])
def test_folded_depthwise_conv3d_keeps_its_bias_off_the_sum_of_taps(shape, stride):
    """The folded form (bias and ReLU in the layer): a kernel of several live temporal taps
    adds its bias to their sum. A bias on one tap whose output is summed, then the ReLU,
    is DepthwiseConv2dNative + BiasAdd + Add + Relu, which TensorFlow's grappler remapper
    fuses into a node without an op: the function's whole optimization is then dropped
    (no convolution of the model fused with its bias and activation)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1,) + shape).astype(np.float32)
    layer = L.DepthwiseConv3D(3, stride, 1, use_bias=True, activation="relu")
    layer.build(x.shape)
    c = shape[-1]
    bias = rng.normal(size=c).astype(np.float32)
    layer.bias.assign(bias)
    graph = tf.function(lambda v: layer(v)).get_concrete_function(
        tf.TensorSpec(x.shape, tf.float32)).graph
    assert _biased_depthwise_into_add(graph) == []
    dense = np.zeros((3, 3, 3, 1, c), np.float32)
    dense[..., 0, :] = layer.kernel.numpy()[..., 0]
    expected = np.maximum(_np_conv3d(x, dense, stride, (1, 1, 1), groups=c, bias=bias), 0)
    for out in _run_all_modes(layer, x):
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode,kernel,stride,pad,shape", [
    ("max", (3, 3, 3), (2, 2, 2), (1, 1, 1), (6, 8, 8, 3)),
    ("max", (3, 3, 3), (2, 2, 2), (1, 1, 1), (5, 7, 7, 2)),
    ("max", (1, 2, 2), (2, 2, 2), (0, 1, 1), (3, 7, 7, 2)),   # C3D pool5
    ("max", (2, 2, 2), (1, 2, 2), (0, 0, 0), (5, 8, 8, 2)),   # C3D pool1
    ("avg", (2, 3, 3), (2, 2, 2), (0, 1, 1), (6, 8, 8, 3)),   # ShuffleNetV1 shortcut
    ("avg", (2, 3, 3), (2, 2, 2), (0, 1, 1), (5, 7, 7, 2)),
])
def test_pooling_matches_pytorch_semantics(mode, kernel, stride, pad, shape):
    rng = np.random.default_rng(3)
    # Negative values: max pooling must not pick padded zeros.
    x = (rng.normal(size=(2,) + shape) - 3.0).astype(np.float32)
    cls = L.MaxPool3D if mode == "max" else L.AvgPool3D
    layer = cls(kernel, stride, pad)
    expected = _np_pool(x, kernel, stride, pad, mode)
    for out in _run_all_modes(layer, x):
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_avg_pool_counts_padded_zeros():
    x = np.ones((1, 2, 3, 3, 1), np.float32)
    out = np.asarray(L.AvgPool3D((2, 3, 3), 2, (0, 1, 1))(x))
    # The corner window covers 4 real pixels of 9 (PyTorch's count_include_pad=True).
    np.testing.assert_allclose(out[0, 0, 0, 0, 0], 4.0 / 9.0, rtol=1e-6)


@pytest.mark.parametrize("groups", [2, 3])
def test_channel_shuffle_matches_pytorch_view_permute(groups):
    rng = np.random.default_rng(4)
    c = 6 * groups
    x = rng.normal(size=(2, 3, 4, 4, c)).astype(np.float32)
    ncdhw = x.transpose(0, 4, 1, 2, 3)
    ref = ncdhw.reshape(2, groups, c // groups, 3, 4, 4).transpose(0, 2, 1, 3, 4, 5).reshape(2, c, 3, 4, 4)
    expected = ref.transpose(0, 2, 3, 4, 1)
    for out in _run_all_modes(L.ChannelShuffle(groups), x):
        np.testing.assert_array_equal(out, expected)


def test_channel_split_halves():
    x = np.arange(2 * 2 * 2 * 2 * 6, dtype=np.float32).reshape(2, 2, 2, 2, 6)
    first, second = L.ChannelSplit()(x)
    np.testing.assert_array_equal(first, x[..., :3])
    np.testing.assert_array_equal(second, x[..., 3:])


def test_zero_pad_channels_subsamples_and_pads():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 5, 7, 7, 3)).astype(np.float32)
    out = np.asarray(L.ZeroPadChannels(8, 2)(x))
    assert out.shape == (1, 3, 4, 4, 8)
    np.testing.assert_array_equal(out[..., :3], x[:, ::2, ::2, ::2])
    assert not out[..., 3:].any()


def test_fused_activation_is_applied():
    x = np.random.default_rng(6).normal(size=(1, 3, 4, 4, 2)).astype(np.float32)
    plain = L.Conv3D(4, 3, 1, 1)
    fused = L.Conv3D(4, 3, 1, 1, activation="relu6")
    plain.build(x.shape)
    fused.build(x.shape)
    fused.set_weights([w * 10 for w in plain.get_weights()])
    np.testing.assert_allclose(fused(x), np.clip(np.asarray(plain(x)) * 10, 0, 6), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer", [
    L.Conv3D(6, (3, 1, 1), (2, 1, 1), (1, 0, 0), groups=3, use_bias=True, name="c"),
    L.DepthwiseConv3D(3, 2, 1, name="d"),
    L.MaxPool3D(3, 2, 1, name="m"),
    L.AvgPool3D((2, 3, 3), 2, (0, 1, 1), name="a"),
    L.ChannelShuffle(3, name="s"),
    L.ZeroPadChannels(12, 2, name="z"),
    L.batch_norm("b"),
])
def test_layer_config_round_trip(layer):
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)


@pytest.mark.parametrize("kwargs", [
    {"filters": 5, "kernel_size": 3, "groups": 2},
    {"filters": 4, "kernel_size": (3, 3)},
    {"filters": 4, "kernel_size": 3, "strides": (1, 2, 1)},
    {"filters": 4, "kernel_size": 0},
])
def test_conv3d_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="Received"):
        L.Conv3D(**kwargs)


def test_layers_reject_non_video_input():
    with pytest.raises(ValueError, match="5D input"):
        L.DepthwiseConv3D(3).build((None, 8, 8, 3))


@pytest.mark.parametrize("shape", [(3, 4, 5, 5, 6), (6, 5, 5, 6)])
def test_batch_norm_training_step_equals_keras(shape):
    """The hand-written training gradient gives Keras' outputs, gradients and statistics."""
    rng = np.random.default_rng(7)
    x = tf.constant((rng.normal(size=shape) * 2 + 1).astype(np.float32))
    upstream = tf.constant(rng.normal(size=shape).astype(np.float32))
    weights = [rng.normal(size=(6,)).astype(np.float32) for _ in range(2)] + [
        np.zeros(6, np.float32), np.ones(6, np.float32)]
    results = []
    for layer in (keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
                  L.batch_norm("bn")):
        layer.build(shape)
        layer.set_weights(weights)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * upstream)
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        step = tf.function(lambda v, layer=layer: layer(v, training=True))(x)
        results.append([loss] + grads + [layer.moving_mean, layer.moving_variance, step])
    assert isinstance(L.batch_norm("bn"), L.BatchNorm)
    for ours, ref in zip(results[1], results[0]):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_forms_table_and_consumer_context():
    forms = L.forms
    assert set(forms.FORMS) == {"keras_training", "keras_inference", "savedmodel", "onnx",
                                "tflite"}
    assert forms.current().native is L.native_kernels()
    assert forms.current(training=True).native is L.native_kernels()
    with forms.consumer("tflite"):
        assert forms.current() == forms.FORMS["tflite"] and forms.current().xnnpack
        with forms.consumer("onnx"):
            assert forms.current() == forms.FORMS["onnx"]
        assert forms.current() == forms.FORMS["tflite"]
    assert forms.current().native is L.native_kernels()
    with L.portable_ops():
        assert forms.current() == forms.FORMS["savedmodel"]
    with pytest.raises(ValueError, match="Received: name='tensorrt'"):
        forms.consumer("tensorrt")


@pytest.mark.parametrize("batch", [None, 1, 2])
@pytest.mark.parametrize("t,kt,st,pt", [(5, 3, 1, 1), (6, 3, 2, 1), (7, 3, 2, 1), (1, 3, 1, 1),
                                        (4, 1, 2, 0), (9, 7, 1, 3)])
def test_tap_variants_select_the_same_frames(batch, t, kt, st, pt):
    """The deployment graph's temporal taps (input padded once) hold the Keras layers' taps
    (read in place, zero frames added per tap), frame for frame."""
    n = 1 if batch == 1 else 2
    x = np.random.default_rng(8).normal(size=(n, t, 3, 4, 2)).astype(np.float32)
    x4 = tf.constant(x.reshape((-1,) + x.shape[2:]))
    in_place, t_out = L.taps.temporal_taps(x4, t, batch, kt, st, pt)
    padded, t_out2 = L.taps.temporal_taps(x4, t, batch, kt, st, pt, pad_input=True)
    assert t_out == t_out2
    xp = np.pad(x, [(0, 0), (pt, pt), (0, 0), (0, 0), (0, 0)])
    for i, (a, b) in enumerate(zip(in_place, padded)):
        assert (a is None) == (b is None) == (i not in L.live_taps(t, kt, st, pt))
        if a is not None:
            want = xp[:, i:i + st * t_out:st].reshape((-1,) + x.shape[2:])
            np.testing.assert_array_equal(np.asarray(a), want)
            np.testing.assert_array_equal(np.asarray(b), want)


@pytest.mark.parametrize("batch", [None, 1, 2])
@pytest.mark.parametrize("t,kt,st,pt", [(5, 3, 1, 1), (6, 3, 2, 1), (9, 7, 1, 3), (6, 3, 1, 0),
                                        (7, 2, 1, 1), (8, 3, 2, 0)])
def test_stacked_taps_are_the_taps_concatenated(batch, t, kt, st, pt):
    """The 0/1 convolution that stacks an RGB stem's temporal taps as channels (float
    deployment graphs) gives the slices-and-concat result bit for bit."""
    n = 1 if batch == 1 else 2
    x = np.random.default_rng(9).normal(size=(n, t, 5, 4, 3)).astype(np.float32)
    x4 = tf.constant(x.reshape((-1,) + x.shape[2:]))
    taps, t_out = L.taps.temporal_taps(x4, t, batch, kt, st, pt, pad_input=True)
    stacked, t_out2 = L.taps.stacked_taps(x4, t, batch, kt, st, pt)
    assert t_out == t_out2 and stacked.shape == (n * t_out, 5, 4, kt * 3)
    np.testing.assert_array_equal(np.asarray(stacked), np.concatenate(taps, axis=-1))


@pytest.mark.parametrize("batch", [None, 1])
@pytest.mark.parametrize("kind,kernel,stride,pad,shape", [
    ("max", (3, 3, 3), (2, 2, 2), (1, 1, 1), (6, 8, 8, 3)),
    ("max", (1, 2, 2), (2, 2, 2), (0, 1, 1), (3, 7, 7, 2)),
    ("avg", (2, 3, 3), (2, 2, 2), (0, 1, 1), (6, 8, 8, 3)),
    ("avg", (2, 2, 2), (2, 2, 2), (0, 0, 0), (4, 6, 6, 2)),
])
def test_xnnpack_pooling_computes_the_keras_pool(batch, kind, kernel, stride, pad, shape):
    """TFLite's ops for pooling (edge padding for a signed max pool, average pools as
    depthwise convolutions) compute PyTorch's pool as the Keras layers do."""
    n = 1 if batch == 1 else 2
    x = (np.random.default_rng(9).normal(size=(n,) + shape) - 3.0).astype(np.float32)
    x4 = tf.constant(x.reshape((-1,) + shape[1:]))
    expected = _np_pool(x, kernel, stride, pad, kind)
    for xnnpack in (False, True):
        y, t_out = L.taps.pool(x4, shape[0], batch, kind, kernel, stride, pad, xnnpack=xnnpack)
        assert t_out == expected.shape[1]
        np.testing.assert_allclose(np.asarray(y).reshape(expected.shape), expected,
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("batch", [None, 1])
def test_xnnpack_zero_pad_channels_equals_the_keras_form(batch):
    n = 1 if batch == 1 else 2
    x = np.random.default_rng(10).normal(size=(n, 5, 7, 7, 3)).astype(np.float32)
    x4 = tf.constant(x.reshape(-1, 7, 7, 3))
    outs = [L.taps.zero_pad_channels(x4, 5, batch, 8, (2, 2, 2), xnnpack=v) for v in (False, True)]
    for y, t in outs:
        assert t == 3
        y = np.asarray(y).reshape(n, 3, 4, 4, 8)
        np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2, ::2])
        assert not y[..., 3:].any()


@pytest.mark.parametrize("make, message", [
    (lambda: L.Conv3D(4, 3, padding="same"), "PyTorch's explicit padding, not 'same'"),
    (lambda: L.DepthwiseConv3D(3, padding="valid"), "PyTorch's explicit padding"),
    (lambda: L.Conv3D(4, 3.5), r"`kernel_size` must be an int .* Received: kernel_size=3.5"),
    (lambda: L.MaxPool3D(2, strides=0), r"`strides` must be at least 1"),
    (lambda: L.MaxPool3D(0), r"`pool_size` must be at least 1"),
    (lambda: L.AvgPool3D(2, padding=-1), r"`padding` must be at least 0"),
    (lambda: L.Conv3D(4.7, 3), r"`filters` must be an integer of at least 1. Received: filters=4.7"),
    (lambda: L.Conv3D(8, 1, groups=2.9), r"`groups` must be an integer .* groups=2.9"),
    (lambda: L.Conv3D(0, 1), r"`filters` must be an integer of at least 1"),
    (lambda: L.ChannelShuffle(2.5), r"`groups` must be an integer .* groups=2.5"),
    (lambda: L.ZeroPadChannels(7.9), r"`filters` must be an integer .* filters=7.9"),
    (lambda: L.ZeroPadChannels(8, -1), r"`strides` must be at least 1 .* strides=-1"),
    (lambda: L.ZeroPadChannels(8, 0), r"`strides` must be at least 1 .* strides=0"),
])
def test_layer_arguments_are_refused_naming_the_argument(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_layer_arguments_take_numpy_and_whole_float_numbers():
    assert L.Conv3D(4, np.int64(3)).kernel_size == (3, 3, 3)
    assert L.MaxPool3D([2.0, 2, np.int32(2)]).pool_size == (2, 2, 2)


@pytest.mark.parametrize("conv", [lambda: L.Conv3D(4, (1, 5, 5)), lambda: L.DepthwiseConv3D((1, 5, 5))])
def test_a_kernel_larger_than_its_input_is_refused(conv):
    with pytest.raises(ValueError, match="a window of 5 with padding 0 does not fit 3 height"):
        conv()(keras.Input((4, 3, 3, 2)))


@pytest.mark.parametrize("conv", [
    lambda: L.DepthwiseConv3D((2, 3, 3), strides=(3, 1, 1), padding=(2, 1, 1)),
    lambda: L.Conv3D(6, (2, 1, 1), strides=(3, 1, 1), padding=(2, 0, 0), groups=3)])
def test_a_convolution_whose_taps_all_read_padding_is_refused(conv):
    """Every output frame would be padding alone: the layers' loops over the live taps ran
    zero times and failed on None."""
    with pytest.raises(ValueError, match="no temporal tap of a kernel of 2 frames at stride 3 "
                                         "with padding 2 meets one of the 1 input frames"):
        conv()(np.ones((1, 1, 7, 7, 3), np.float32))


@pytest.mark.parametrize("pool", [L.AvgPool3D, L.MaxPool3D])
def test_a_pool_window_larger_than_its_input_is_refused(pool):
    """TensorFlow gave an empty tensor (or oneDNN's descriptor error for a max pool), JAX a
    division by zero, PyTorch its own error: now one message, symbolic inputs included."""
    with pytest.raises(ValueError, match="a window of 8 with padding 0 does not fit 4 frames"):
        pool((8, 2, 2))(np.zeros((1, 4, 16, 16, 6), np.float32))
    with pytest.raises(ValueError, match="does not fit 4 frames"):
        pool((8, 2, 2))(keras.Input((4, 16, 16, 6)))
