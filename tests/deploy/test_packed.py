"""The time-packed layout of the deployment graph (frames folded into channels) computes the
Keras model's function, and is what the float and int8 graphs of narrow models run."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deploy_helpers import SMALL, calibrate_batchnorm, clips, load_script, randomize_batchnorm
from keras_efficient3d import create_model
from keras_efficient3d.deploy import DeploymentGraph
from keras_efficient3d.deploy import graph as graph_module
from keras_efficient3d.layers import Conv3D, DepthwiseConv3D


def _rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))


def _first_conv_input_channels(graph, int8):
    """Input channels of the first convolution with a spatial kernel (the 0/1 convolution
    that stacks a float stem's taps has a (kt, 1) kernel)."""
    fn = graph.as_function(batch=1, int8=int8).get_concrete_function()
    for op in fn.graph.get_operations():
        if op.type == "Conv2D" and int(op.inputs[1].shape[1]) > 1:
            return int(op.inputs[1].shape[2])
    raise AssertionError("no Conv2D")


@pytest.fixture
def wide_packing(monkeypatch):
    """Every layer the packed layout takes stays packed (the default unpacks wide ones)."""
    monkeypatch.setattr(graph_module, "PACK_WIDTH", 10**6)


@pytest.mark.parametrize("int8", [False, True], ids=["float-form", "int8-form"])
@pytest.mark.parametrize("name", ["mobilenetv2_0.2x", "mobilenet_0.5x", "shufflenetv2_0.25x"])
def test_packed_graph_equals_keras(name, int8, wide_packing):
    """Banded stem, pointwise convolutions (view and block-diagonal), depthwise taps with
    temporal and spatial strides selected up through the expansion, residual adds, the
    unpacking before pooling or channel shuffles, and global pooling of a packed clip."""
    model = randomize_batchnorm(create_model(name, input_shape=SMALL, num_classes=7))
    x = clips(SMALL, 2)
    expected = np.asarray(model(x, training=False))
    graph = DeploymentGraph(model, pack_channels=1000)
    assert _first_conv_input_channels(graph, int8) == (SMALL[0] + 2) * 3  # packed, padded
    for batch, xb in ((None, x), (1, x[:1])):
        err = _rel_err(graph(xb, batch=batch, int8=int8), expected[: len(xb)])
        assert err < 1e-4, (batch, err)
    # Traced, as export and QAT run it (TensorFlow's graph optimizer rewrites PAD + Conv2D).
    traced = tf.function(lambda c: graph(c, batch=None, int8=int8))
    assert _rel_err(traced(x), expected) < 1e-4
    assert _rel_err(graph.as_function(batch=1, int8=int8)(x[:1]), expected[:1]) < 1e-4


@pytest.mark.parametrize("amx", [False, True])
def test_packing_is_chosen_per_precision_and_cpu(monkeypatch, amx):
    """Float packs only the narrowest stems (extra multiplications cost float time), int8
    the stems up to 16 channels, up to 64 on a CPU with AMX (whose 64-deep int8 tiles
    need the wide products; VNNI alone ran 32- and 64-channel stems slower packed), never
    a 7-frame stem (ResNets) or one without a spatial stride (C3D)."""
    from keras_efficient3d import runtime
    from keras_efficient3d.deploy.graph import default_pack_channels

    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: amx)
    thin = create_model("mobilenetv2_0.2x", input_shape=SMALL, num_classes=3)  # 8-channel stem
    mid = create_model("shufflenetv2_1.0x", input_shape=SMALL, num_classes=3)  # 24 channels
    wide = create_model("mobilenet_1.0x", input_shape=SMALL, num_classes=3)  # 32 channels
    resnet = create_model("resnet10", input_shape=(16, 32, 32, 3), num_classes=3)
    packed = (SMALL[0] + 2) * 3
    assert default_pack_channels(int8=True) == (64 if amx else 16)
    assert _first_conv_input_channels(DeploymentGraph(thin), int8=False) == packed
    assert _first_conv_input_channels(DeploymentGraph(thin), int8=True) == packed
    assert _first_conv_input_channels(DeploymentGraph(mid), int8=False) == 3 * 3
    assert _first_conv_input_channels(DeploymentGraph(mid), int8=True) == (packed if amx else 3 * 3)
    assert _first_conv_input_channels(DeploymentGraph(wide), int8=True) == (packed if amx else 3 * 3)
    assert DeploymentGraph(wide, pack_channels=32).packs(int8=True)
    assert not DeploymentGraph(resnet).packs(int8=True)
    assert DeploymentGraph(wide).packs(int8=True) == amx and not DeploymentGraph(wide).packs()
    assert _first_conv_input_channels(DeploymentGraph(thin, pack_channels=0), int8=True) == 9
    with pytest.raises(ValueError, match="pack_channels"):
        DeploymentGraph(thin, pack_channels=-1)


def _first_depthwise_channels(graph, int8):
    fn = graph.as_function(batch=1, int8=int8).get_concrete_function()
    for op in fn.graph.get_operations():
        if op.type == "DepthwiseConv2dNative":
            return int(op.inputs[0].shape[-1])
    raise AssertionError("no depthwise convolution")


def test_int8_keeps_a_temporally_unstrided_depthwise_layer_packed_up_to_512():
    """16 frames x 32 channels after a packed stem (32 channels: packed in int8 where the
    CPU has AMX, `pack_channels=64`): int8 graphs run MobileNetV2's first depthwise layer
    (temporal stride 1) packed, 512 wide, rather than unpack the whole clip before it;
    MobileNetV1's (temporal stride 2) unpacks, as do float graphs, and still the Keras model."""
    shape = (16, 32, 32, 3)
    v2 = randomize_batchnorm(create_model("mobilenetv2_1.0x", input_shape=shape, num_classes=3))
    v1 = create_model("mobilenet_1.0x", input_shape=shape, num_classes=3)
    assert _first_depthwise_channels(DeploymentGraph(v2, pack_channels=64), int8=True) == 16 * 32
    assert _first_depthwise_channels(DeploymentGraph(v1, pack_channels=64), int8=True) == 32
    assert _first_depthwise_channels(DeploymentGraph(v2, pack_channels=64), int8=False) == 32
    x = clips(shape, 1)
    got = DeploymentGraph(v2, pack_channels=64)(x, batch=1, int8=True)
    assert _rel_err(got, v2(x, training=False)) < 1e-4


@pytest.mark.parametrize("frames", [7, 8])
@pytest.mark.parametrize("strides,padding", [((2, 1, 1), (1, 1, 1)), ((1, 2, 2), (1, 1, 1)),
                                             ((2, 2, 2), (1, 1, 1)), ((2, 2, 2), (0, 0, 0)),
                                             ((1, 1, 1), (0, 1, 1))])
def test_packed_layers_match_keras_for_strides_and_paddings(frames, strides, padding,
                                                            wide_packing):
    """Odd frame counts (a phase stream shorter than the other), VALID borders, temporal and
    spatial strides: a dense 3x3x3 convolution after the stem (a band with a stride) and a
    depthwise one."""
    inputs = keras.Input((frames, 24, 24, 3))
    x = Conv3D(4, 3, (1, 2, 2), 1, use_bias=True, name="stem")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = Conv3D(4, 3, strides, padding, use_bias=True, name="conv")(x)
    x = DepthwiseConv3D(3, strides, padding, use_bias=True, name="dw")(x)
    x = Conv3D(5, 1, name="pw")(x)
    outputs = keras.layers.GlobalAveragePooling3D(name="pool")(x)
    model = keras.Model(inputs, outputs)
    x = clips((frames, 24, 24, 3), 2)
    expected = np.asarray(model(x))
    for int8 in (False, True):
        graph = DeploymentGraph(model, pack_channels=8)
        assert _first_conv_input_channels(graph, int8) == (frames + 2) * 3
        for batch, xb in ((None, x), (1, x[:1])):
            assert _rel_err(graph(xb, batch=batch, int8=int8), expected[: len(xb)]) < 1e-5
        traced = tf.function(lambda c, g=graph, q=int8: g(c, batch=None, int8=q))
        assert _rel_err(traced(x), expected) < 1e-5


def test_int8_tflite_of_a_packed_model_is_int8_and_static(mobilenetv2_trunk):
    """The packed int8 graph converts with its relaid kernels as constants: no TILE, EINSUM
    or BATCH_MATMUL left, every convolution int8, XNNPACK takes the whole graph (float too:
    a SLICE sized -1 had cut it in two), and the outputs follow the float model's."""
    from keras_efficient3d.deploy.tflite import convert, float_op_types, op_summary
    from keras_efficient3d.runtime import TFLiteRunner

    trunk, data = mobilenetv2_trunk
    graph = DeploymentGraph(trunk)
    assert _first_conv_input_channels(graph, int8=True) == (SMALL[0] + 2) * 3
    blob = convert(graph, "int8", representative_data=data)
    names = {op for op, _, _ in op_summary(blob)}
    assert not names & {"TILE", "EINSUM", "BATCH_MATMUL", "GATHER"}, names
    assert "TRANSPOSE" in names  # the packing
    assert float_op_types(blob) == []
    runner = TFLiteRunner(blob, num_threads=1)  # raises unless XNNPACK takes the whole graph
    assert runner.partitions() == 1
    assert TFLiteRunner(convert(DeploymentGraph(trunk, pack_channels=24), "fp32"),
                        num_threads=1).partitions() == 1
    x = clips(SMALL, 8, seed=3)
    got = np.concatenate([runner(x[i:i + 1]) for i in range(len(x))])
    expected = np.asarray(trunk(x))
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.98


def test_qat_export_of_a_packed_model_reproduces_the_qat_model():
    """After QAT the packed graph's relaid kernels (banded stem, block-diagonal pointwise,
    tiled depthwise) are built from kernels on their int8 grid: the converter's own
    per-channel scales reproduce it, and the int8 file follows the fake-quantized model as
    closely as the unpacked form's does (a MobileNetV2 0.2x trunk: deep random networks
    amplify int8 rounding into noise)."""
    from keras_efficient3d.deploy.quantize import convert_qat, quantize_model
    from keras_efficient3d.runtime import TFLiteRunner

    keras.utils.set_random_seed(2)
    model = create_model("mobilenetv2_0.2x", input_shape=SMALL, num_classes=5)
    pooled = keras.layers.GlobalAveragePooling3D()(model.get_layer("block_3_add").output)
    trunk = keras.Model(model.input, keras.layers.Dense(5)(pooled))
    data = clips(SMALL, 8, seed=1)
    calibrate_batchnorm(trunk, data)
    x = clips(SMALL, 6, seed=5)
    errors = {}
    for pack in (0, None):
        graph = DeploymentGraph(trunk, pack_channels=pack)
        qat = quantize_model(graph, data, num_calibration=8)
        runner = TFLiteRunner(convert_qat(qat), num_threads=1)
        got = np.concatenate([runner(x[i:i + 1]) for i in range(len(x))])
        expected = np.asarray(qat(x, training=False))
        errors[pack] = _rel_err(got, expected)
    assert _first_conv_input_channels(DeploymentGraph(trunk), int8=True) == (SMALL[0] + 2) * 3
    assert errors[None] < 0.05 and errors[None] < 1.5 * errors[0] + 1e-3, errors


def _tflite_first_conv_input_channels(path):
    """Input channels of the first CONV_2D with a spatial kernel in a .tflite file (not the
    (kt, 1) 0/1 convolution that stacks a float stem's taps)."""
    from keras_efficient3d.runtime import tflite_interpreter

    interp = tflite_interpreter(path, use_xnnpack=False)
    shapes = {d["index"]: tuple(d["shape"]) for d in interp.get_tensor_details()}
    for op in interp._get_ops_details():
        if op["op_name"] == "CONV_2D":
            filters = shapes[op["inputs"][1]]  # (out, kh, kw, in)
            if filters[1] > 1 and filters[2] > 1:
                return int(filters[3])
    raise AssertionError(f"no spatial CONV_2D in {path}")


def test_export_tflite_script_takes_pack_channels(tmp_path):
    """`deployment/export_tflite.py`'s --pack_channels reaches the graph: a file for another
    CPU than this one can be packed (or not) whatever this CPU's default."""
    script = load_script("export_tflite")
    frames = SMALL[0]
    channels = {}
    for pack in (0, None, 64):
        path = str(tmp_path / f"m_{pack}.tflite")
        script.export("shufflenetv2_0.25x", None, 3, frames, SMALL[1], "fp32", path, pack_channels=pack)
        channels[pack] = _tflite_first_conv_input_channels(path)
    # float packs stems of at most 8 channels by default; ShuffleNetV2's is 24
    assert channels == {0: 3 * 3, None: 3 * 3, 64: (frames + 2) * 3}, channels
