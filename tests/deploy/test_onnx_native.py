"""The native ONNX export (deploy.onnx_native): every family exact to Keras through ONNX
Runtime and OpenVINO, in the form those runtimes optimise (one 5-D Conv per layer, group for
depthwise and grouped convolutions, BatchNorm folded, one Transpose at the input)."""

import os
import sys

import keras
import numpy as np
import onnx
import pytest

from deploy_helpers import randomize_batchnorm
from keras_efficient3d import cli, create_model
from keras_efficient3d import layers as L
from keras_efficient3d.data.normalization import Normalization
from keras_efficient3d.deploy import onnx_export, onnx_native
from keras_efficient3d.deploy.frames import frames_input_affine
from keras_efficient3d.fold import inference_form
from keras_efficient3d.models.resnet import ResNet3DBase
from keras_efficient3d.runtime import check_close, random_clips

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SMALL, _SIXTEEN = (8, 32, 32, 3), (16, 32, 32, 3)
# Tiny configurations of every family: the graph (layer classes, groups, shuffles, splits,
# shortcuts, heads) is the one of the full-size models.
_FAMILIES = {
    "mobilenetv1": lambda: create_model("mobilenetv1", width_mult=0.25, input_shape=_SMALL, num_classes=5),
    "mobilenetv2": lambda: create_model("mobilenetv2", width_mult=0.2, input_shape=_SMALL, num_classes=5),
    "shufflenetv1_g3": lambda: create_model("shufflenetv1", width_mult=0.25, groups=3,
                                            input_shape=_SIXTEEN, num_classes=5),
    "shufflenetv2": lambda: create_model("shufflenetv2", width_mult=0.25, input_shape=_SMALL, num_classes=5),
    "squeezenet": lambda: create_model("squeezenet", input_shape=_SIXTEEN, num_classes=5),
    "resnet_basic_A": lambda: ResNet3DBase("basic", (1, 1, 1, 1), (64, 64, 80, 96), shortcut="A",
                                           input_shape=_SIXTEEN, num_classes=5),
    "resnet_bottleneck_B": lambda: ResNet3DBase("bottleneck", (1, 1, 1, 1), (8, 16, 32, 64), shortcut="B",
                                                input_shape=_SIXTEEN, num_classes=5),
    "resnext_B": lambda: ResNet3DBase("resnext", (1, 1, 1, 1), (32, 64, 64, 64), shortcut="B",
                                      cardinality=4, input_shape=_SIXTEEN, num_classes=5),
    "c3d_features": lambda: create_model("c3d", input_shape=_SIXTEEN, include_top=False, pooling="avg"),
}
# Over 10 s on the shared 2-core machine (model build and Keras inference, not the export);
# MobileNetV1 is also exported natively by test_onnx_export.py's CLI test in the fast tier.
_SLOW = ("c3d_features", "mobilenetv1")


def _openvino_compiled(proto):
    """`proto` compiled by OpenVINO for the CPU in fp32: CPUs with bf16 units (AVX512_BF16,
    AMX) would otherwise compute float layers in bf16 (~1e-3 from Keras)."""
    import openvino as ov
    core = ov.Core()
    return core.compile_model(core.read_model(proto.SerializeToString()), "CPU",
                              {"INFERENCE_PRECISION_HINT": "f32"})


def _openvino_output(proto, clips):
    compiled = _openvino_compiled(proto)
    return compiled(clips)[compiled.output(0)]


def _conv_layers(model):
    return {layer.name: layer for layer in model.layers
            if isinstance(layer, (L.Conv3D, L.DepthwiseConv3D))}


def _check_graph(proto, model):
    """The properties of the native form that a regression would break."""
    nodes = list(proto.graph.node)
    ops = [n.op_type for n in nodes]
    assert {"Slice", "Gather", "BatchNormalization", "Unsqueeze", "Squeeze"}.isdisjoint(ops)
    assert proto.producer_name == "keras_efficient3d"
    # one Transpose to NCDHW at the input; any other is a channel shuffle's 4-D swap
    assert nodes[0].op_type == "Transpose" and list(nodes[0].input) == ["input"]
    assert list(nodes[0].attribute[0].ints) == [0, 4, 1, 2, 3]
    shuffles = [layer for layer in model.layers if isinstance(layer, L.ChannelShuffle) and layer.groups > 1]
    written = len(onnx_native.shuffles_into_convolutions(inference_form(model)))  # no op at all
    assert ops.count("Transpose") == 1 + len(shuffles) - written
    splits = [layer for layer in model.layers if isinstance(layer, L.ChannelSplit)]
    assert ops.count("Split") == len(splits)
    # one 5-D Conv per convolution layer, grouped as the layer
    weights = {i.name: i for i in proto.graph.initializer}
    convs = {n.name.rsplit("/", 1)[0]: n for n in nodes if n.op_type == "Conv"}
    layers = _conv_layers(model)
    assert set(convs) == set(layers)
    for name, node in convs.items():
        layer = layers[name]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert len(weights[node.input[1]].dims) == 5 and len(node.input) == 3  # bias: folded BN
        channels = layer.kernel.shape[3]
        expected = channels if isinstance(layer, L.DepthwiseConv3D) else layer.groups
        assert attrs["group"] == expected and list(attrs["kernel_shape"]) == list(layer.kernel_size)
        assert list(attrs["pads"]) == list(layer.padding) * 2
    return convs


def _family_case(name):
    return pytest.param(name, id=name, marks=[pytest.mark.slow] if name in _SLOW else [])


@pytest.mark.parametrize("name", [_family_case(n) for n in _FAMILIES])
def test_every_family_exports_natively_exact_to_keras(name):
    model = randomize_batchnorm(_FAMILIES[name]())
    assert onnx_native.supports(model) and onnx_export.resolve_form(model) == "native"
    proto = onnx_export.convert_to_onnx(model)
    convs = _check_graph(proto, model)
    groups = [onnx.helper.get_attribute_value(a) for n in convs.values() for a in n.attribute
              if a.name == "group"]
    if name.startswith(("mobilenet", "shufflenet", "resnext")):
        assert max(groups) > 1  # depthwise / grouped convolutions stay one Conv each
    clips = random_clips(model, 2)
    expected = model(clips, training=False).numpy()
    assert check_close(onnx_export.run_onnx(proto, clips), expected, 1e-4, 1e-6) < 1e-4
    check_close(_openvino_output(proto, clips), expected, 1e-4, 1e-6, what="OpenVINO model")


def test_a_shuffle_after_an_ungrouped_convolution_is_its_channel_order():
    model = randomize_batchnorm(create_model("shufflenetv1", groups=3, input_shape=_SIXTEEN, num_classes=5))
    shuffles = onnx_native.shuffles_into_convolutions(inference_form(model))
    # ShuffleNetV1 1.0x's first block: its 1x1x1 convolution is ungrouped (24 input channels)
    assert list(shuffles) == ["stage1_block0_shuffle"]
    conv, order = shuffles["stage1_block0_shuffle"]
    assert conv == "stage1_block0_conv1" and sorted(order) == list(range(model.get_layer(conv).filters))
    assert list(order[:4]) == [0, order.size // 3, 2 * order.size // 3, 1]
    names = {n.name.split("/")[0] for n in onnx_native.native_onnx(model).graph.node}
    assert "stage1_block0_shuffle" not in names and "stage1_block1_shuffle" in names
    # through a BatchNorm that is not folded, the shuffle stays
    assert not onnx_native.shuffles_into_convolutions(model)
    proto = onnx_native.native_onnx(model, fold_bn=False)
    assert "stage1_block0_shuffle" in {n.name.split("/")[0] for n in proto.graph.node}
    clips = random_clips(model, 2)
    assert check_close(onnx_export.run_onnx(proto, clips), model(clips, training=False).numpy()) < 1e-4


@pytest.mark.slow
def test_resnet18_and_c3d_head_export_natively():
    # the registry's ResNet-18 (its widths) and C3D's Permute -> Flatten -> Dense head
    for model in (create_model("resnet18", input_shape=_SIXTEEN, num_classes=5, shortcut="A"),
                  create_model("c3d", input_shape=(16, 48, 48, 3), num_classes=5)):
        model = randomize_batchnorm(model)
        proto = onnx_export.convert_to_onnx(model)
        _check_graph(proto, model)
        assert onnx_export.verify_onnx(proto, model) < 1e-4


def _odd_model():
    """Layers the registry's heads use in other combinations: a BatchNorm with no
    convolution to fold into, channels-last Flatten, C3D's channels-first Permute, global
    max pooling, a softmax, ReLU6 and a shortcut-A channel pad."""
    inputs = keras.Input((4, 16, 16, 3), name="input")
    x = L.Conv3D(6, 3, (1, 2, 2), 1, use_bias=True, name="conv")(inputs)
    x = keras.layers.ReLU(6.0, name="relu6")(x)
    x = L.ZeroPadChannels(8, (2, 2, 2), name="pad")(x)
    a = keras.layers.BatchNormalization(epsilon=1e-5, name="lone_bn")(x)
    b = L.AvgPool3D(3, 1, 1, name="avg")(x)
    x = keras.layers.Concatenate(name="concat")([a, b])
    first = keras.layers.Flatten(name="flat")(x)
    second = keras.layers.Flatten(name="flat_cf")(keras.layers.Permute((4, 1, 2, 3), name="cf")(x))
    third = keras.layers.GlobalMaxPooling3D(name="gmax")(x)
    x = keras.layers.Concatenate(name="features")([first, second, third])
    outputs = keras.layers.Dense(3, activation="softmax", name="logits")(x)  # the output's name
    return randomize_batchnorm(keras.Model(inputs, outputs, name="odd"))


@pytest.fixture(scope="module")
def odd_model():
    return _odd_model()


def test_other_layers_and_dynamic_batch(odd_model):
    proto = onnx_native.native_onnx(odd_model)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [4, 16, 16, 3]
    assert proto.graph.output[0].name == "logits"
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert proto.opset_import[0].version == 13 and proto.ir_version == 7
    for batch in (1, 3):
        clips = random_clips(odd_model, batch, seed=batch)
        # softmax outputs: the relative check is on probabilities of about 1/3
        assert onnx_export.verify_onnx(proto, odd_model, clips) < 1e-4


def test_fixed_batch_unfolded_and_newer_opset(odd_model):
    proto = onnx_export.convert_to_onnx(odd_model, opset=17, batch_size=2, fold_bn=False)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert proto.opset_import[0].version == 17
    assert onnx_export.verify_onnx(proto, odd_model) < 1e-4
    clips = random_clips(odd_model, 2)
    check_close(_openvino_output(proto, clips), odd_model(clips, training=False).numpy(),
                what="OpenVINO model")


def test_verification_catches_a_wrong_layout():
    # A dense kernel of a channels-last flatten read as channels-first would go unnoticed
    # by shapes alone; the numbers must differ.
    model = _odd_model()
    proto = onnx_native.native_onnx(model)
    for node in proto.graph.node:
        if node.op_type == "Transpose" and node.name.startswith("flat/"):
            node.attribute[0].ints[:] = [0, 1, 2, 3, 4]
    with pytest.raises(AssertionError, match="differs"):
        onnx_export.verify_onnx(proto, model)


def test_forms_and_refusals(odd_model, tmp_path):
    report = onnx_export.export_onnx(odd_model, str(tmp_path / "m.onnx"), batch_size=1)
    assert report["form"] == "native" and report["max_rel_error"] < 1e-4
    assert report["input_shape"] == (1, 4, 16, 16, 3)
    with pytest.raises(ValueError, match="Received: form='fast'"):
        onnx_export.convert_to_onnx(odd_model, form="fast")
    with pytest.raises(ValueError, match="batch_size"):
        onnx_export.convert_to_onnx(odd_model, batch_size=0)
    # a layer without a native form: "auto" falls back to the taps form, "native" refuses
    inputs = keras.Input((4, 16, 16, 3))
    x = keras.layers.Reshape((4, 16, 16 * 3))(inputs)
    foreign = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Reshape((16, 16, 12))(x))))
    assert not onnx_native.supports(foreign) and onnx_export.resolve_form(foreign) == "taps"
    with pytest.raises(ValueError, match="Reshape.*form='taps'"):
        onnx_export.convert_to_onnx(foreign, form="native")
    # a channels-first pool (of a channels-last clip) was written as a channels-last one
    pooled = keras.layers.GlobalAveragePooling3D(data_format="channels_first")(L.Conv3D(4, 1)(inputs))
    first = keras.Model(inputs, pooled)
    assert not onnx_native.supports(first) and onnx_export.resolve_form(first) == "taps"
    with pytest.raises(ValueError, match="global_average_pooling3d.*no native ONNX form"):
        onnx_export.convert_to_onnx(first, form="native")


def test_cli_onnx_form_flag(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "deployment"))
    try:
        import export
    finally:
        sys.path.pop(0)

    out = tmp_path / "m.onnx"
    argv = ["export.py", "--model=mobilenetv2_0.2x", "--frames=8", "--size=32", "--num_classes=3",
            f"--output={out}"]
    assert cli.invoke(export.main, export.define_flags, argv + ["--onnx_form=native"]) == 0
    assert "Conv" in {n.op_type for n in onnx.load(str(out)).graph.node}
    assert np.isfinite(onnx_export.run_onnx(str(out), np.zeros((1, 8, 32, 32, 3), np.float32))).all()
    assert cli.invoke(export.main, export.define_flags, argv + ["--onnx_form=fast"]) == 2


@pytest.mark.slow
def test_benchmark_of_both_forms(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "deployment"))
    try:
        import benchmark_onnx_forms
    finally:
        sys.path.pop(0)
    rows = benchmark_onnx_forms.compare_forms(["mobilenetv2_0.2x"], frames=8, size=32, num_classes=3,
                                              rounds=2, warmup=0, runs=2, folder=str(tmp_path))
    assert {r["runtime"] for r in rows} == {"onnxruntime", "openvino"}
    for r in rows:
        assert [len(r["rounds"][f]) for f in ("native", "taps")] == [2, 2]
        assert r["ratio"] == pytest.approx(r["taps_ms"] / r["native_ms"]) and r["native_ms"] > 0
    forms = {os.path.basename(p): onnx.load(str(p)).producer_name for p in tmp_path.iterdir()}
    assert forms == {"mobilenetv2_0.2x_native.onnx": "keras_efficient3d",
                     "mobilenetv2_0.2x_taps.onnx": "keras_efficient3d+tf2onnx"}
    assert "taps/native" in benchmark_onnx_forms.format_table(rows)
    with pytest.raises(ValueError, match="rounds"):
        benchmark_onnx_forms.compare_forms(["mobilenetv2_0.2x"], rounds=0)


# --- quantization-aware models: the native graph with Q/DQ --------------------------------


def _stem_model(kernel, strides, padding, width=24, use_bias=False):
    """A stem Conv3D on a clip of `width` columns, then a depthwise layer (the stem's output
    must land in the layout every later layer reads)."""
    inputs = keras.Input((4, 12, width, 3), name="input")
    x = L.Conv3D(6, kernel, strides, padding, use_bias=use_bias, name="stem")(inputs)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    x = L.DepthwiseConv3D(3, 1, 1, name="dw")(x)
    return randomize_batchnorm(keras.Model(inputs, x, name="stem_model"))


@pytest.mark.parametrize("kernel, strides, padding, factors", [
    (3, (1, 2, 2), 1, (2, 4, 8)),            # the registry's efficient models' stem
    ((3, 3, 5), (1, 2, 2), (1, 1, 2), (2, 4, 8)),  # taps two columns beyond a group
    (3, 1, 1, (2, 4, 8)),                    # C3D's (unstrided)
    ((1, 3, 3), (1, 3, 3), (0, 1, 1), (6, 12, 24)),  # a stride of 3: folds of 3s only (none listed)
    (3, (1, 2, 2), 0, ()),                   # unpadded: fewer output columns than groups hold
])
def test_stem_fold_is_exact_for_every_factor(kernel, strides, padding, factors):
    model = _stem_model(kernel, strides, padding, use_bias=True)
    allowed = onnx_native.stem_fold_factors(model)
    assert allowed == tuple(f for f in factors if f in (2, 4, 8, 16))
    clips = random_clips(model, 3)
    expected = model(clips, training=False).numpy()
    for fold in allowed:
        proto = onnx_native.native_onnx(model, stem_fold=fold)
        nodes = list(proto.graph.node)
        # the clip is read as Keras holds it, a view with `fold` columns per group
        assert nodes[0].op_type == "Reshape" and list(nodes[0].input)[0] == "input"
        conv = next(n for n in nodes if n.op_type == "Conv")
        weights = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
        q = fold // model.get_layer("stem").strides[2]
        assert weights[conv.input[1]].shape[:2] == (6 * q, 3 * fold)
        assert check_close(onnx_export.run_onnx(proto, clips), expected, 1e-4, 1e-6) < 1e-4
        check_close(_openvino_output(proto, clips), expected, 1e-4, 1e-6, what="OpenVINO model")
    with pytest.raises(ValueError, match=r"`stem_fold` must be 1 or one of .* Received: stem_fold=5"):
        onnx_native.native_onnx(model, stem_fold=5)


def test_stem_fold_needs_a_lone_stem(odd_model):
    # the registry's families all fold; a clip read by two layers does not
    for name in ("mobilenetv2", "shufflenetv2", "squeezenet"):
        assert onnx_native.stem_fold_factors(_FAMILIES[name]()) == (2, 4, 8, 16)
    inputs = keras.Input((4, 16, 16, 3))
    x = keras.layers.Add()([L.Conv3D(3, 3, 1, 1)(inputs), inputs])
    assert onnx_native.stem_fold_factors(keras.Model(inputs, x)) == ()
    # the taps form has no fold
    with pytest.raises(ValueError, match="native form"):
        onnx_export.convert_to_onnx(odd_model, form="taps", stem_fold=2)
    proto = onnx_native.native_onnx(odd_model, stem_fold=4, batch_size=2)  # a biased stem
    assert onnx_export.verify_onnx(proto, odd_model, random_clips(odd_model, 2)) < 1e-4


def _pointwise_chain(*widths, first_activation=None, strides=1):
    """Input (3 channels) -> 3x3x3 Conv3D -> a pointwise Conv3D per width after the first
    (the first of them linear unless `first_activation`, with `strides`), BatchNorm after each."""
    inputs = keras.Input((4, 8, 8, 3))
    x = L.Conv3D(widths[0], 3, 1, 1, name="stem")(inputs)
    for i, width in enumerate(widths[1:]):
        x = L.Conv3D(width, 1, strides if i == 0 else 1, 0, name=f"pw{i}")(x)
        x = keras.layers.BatchNormalization(name=f"pw{i}_bn")(x)
        if i or first_activation:
            x = keras.layers.Activation(first_activation or "relu", name=f"pw{i}_act")(x)
    return randomize_batchnorm(keras.Model(inputs, x))


def test_linear_pointwise_pairs_are_written_as_one_convolution():
    model = randomize_batchnorm(_FAMILIES["mobilenetv2"]())
    assert onnx_native.pointwise_pairs(inference_form(model)) == {"block_2_expand": "block_1_project"}
    merged = onnx_export.convert_to_onnx(model, merge_pointwise=True)
    names = [n.name for n in merged.graph.node if n.op_type == "Conv"]
    assert "block_1_project/Conv" not in names and "block_2_expand/Conv" in names
    assert len(names) == len(_conv_layers(model)) - 1
    clips = random_clips(model, 2)
    assert onnx_export.verify_onnx(merged, model, clips) < 1e-4
    # by default, unfolded (BatchNorm between them) and in the taps form: apart
    assert "block_1_project/Conv" in [n.name for n in onnx_export.convert_to_onnx(model).graph.node]
    assert "block_1_project/Conv" in [n.name for n in onnx_native.native_onnx(
        model, fold_bn=False, merge_pointwise=True).graph.node]
    with pytest.raises(ValueError, match="native form"):
        onnx_export.convert_to_onnx(model, form="taps", merge_pointwise=True)
    # a strided first convolution keeps its strides; a bottleneck only, and linear only
    chain = _pointwise_chain(8, 4, 12, strides=2)
    assert onnx_native.pointwise_pairs(inference_form(chain)) == {"pw1": "pw0"}
    proto = onnx_native.native_onnx(chain, merge_pointwise=True)
    assert [n.name for n in proto.graph.node if n.op_type == "Conv"] == ["stem/Conv", "pw1/Conv"]
    assert onnx_export.verify_onnx(proto, chain, random_clips(chain, 2)) < 1e-4
    for chain in (_pointwise_chain(8, 12, 12), _pointwise_chain(8, 4, 12, first_activation="relu"),
                  _pointwise_chain(64, 2, 64)):  # the product: 16 times the pair's multiplications
        assert onnx_native.pointwise_pairs(inference_form(chain)) == {}
    # an output something else reads too stays
    inputs = keras.Input((4, 8, 8, 3))
    x = L.Conv3D(4, 1, name="pw0")(L.Conv3D(8, 3, 1, 1, name="stem")(inputs))
    two = keras.Model(inputs, keras.layers.Concatenate()([L.Conv3D(12, 1, name="pw1")(x), x]))
    assert onnx_native.pointwise_pairs(inference_form(two)) == {}


def test_a_narrow_depthwise_layer_reads_the_folded_stem_folded():
    # MobileNetV2 0.2x: a 6-channel stem at stride 2, fold 4 -> 2 columns x 6 channels
    model = randomize_batchnorm(_FAMILIES["mobilenetv2"]())
    clips = random_clips(model, 2)
    expected = model(clips, training=False).numpy()
    for fold, group, kernel in ((4, None, (12, 12, 3, 3, 3)), (8, 6, (6, 1, 3, 3, 3))):  # 24 > 16
        proto = onnx_native.native_onnx(model, stem_fold=fold)
        node = next(n for n in proto.graph.node if n.name == "block_1_depthwise/Conv")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weights = {i.name: tuple(i.dims) for i in proto.graph.initializer}
        assert attrs.get("group") == group and weights[node.input[1]] == kernel
        # no unfold of the stem's output: the depthwise layer's own
        unfolds = [n.name for n in proto.graph.node if n.op_type == "Reshape" and "unfold" in n.name]
        assert unfolds == ["block_1_depthwise/unfold/Reshape" if group is None else "conv1/unfold/Reshape"]
        assert onnx_export.verify_onnx(proto, model, clips) < 1e-4
        check_close(_openvino_output(proto, clips), expected, 1e-4, 1e-6, what="OpenVINO model")
    # a 32-channel stem (MobileNetV2 1.0x) keeps its depthwise layer grouped
    wide = create_model("mobilenetv2", width_mult=1.0, input_shape=_SMALL, num_classes=5)
    node = next(n for n in onnx_native.native_onnx(wide, stem_fold=4).graph.node
                if n.name == "block_1_depthwise/Conv")
    assert {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}["group"] == 32


@pytest.mark.parametrize("stem, fold, kernel, padding, folded", [
    (6, 4, 3, 1, True),                     # two columns per group: 12 channels
    (4, 8, 3, 1, True),                     # four: 16, the most that fold
    (6, 4, 5, 2, True),                     # taps two columns beyond the group
    (6, 4, (3, 3, 1), (1, 1, 0), True),     # no taps across columns
    (6, 4, 3, (1, 1, 0), False),            # narrows the width: as it was
    (4, 16, 3, 1, False),                   # eight columns: 32 channels
])
def test_folded_depthwise_is_exact_for_every_geometry(stem, fold, kernel, padding, folded):
    inputs = keras.Input((4, 16, 32, 3))
    x = keras.layers.BatchNormalization()(L.Conv3D(stem, 3, (1, 2, 2), 1, name="stem")(inputs))
    x = L.DepthwiseConv3D(kernel, 1, padding, use_bias=True, name="dw")(keras.layers.ReLU()(x))
    model = randomize_batchnorm(keras.Model(inputs, keras.layers.ReLU(6.0)(keras.layers.BatchNormalization()(x))))
    proto = onnx_native.native_onnx(model, stem_fold=fold)
    node = next(n for n in proto.graph.node if n.name == "dw/Conv")
    group = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}.get("group")
    assert (group is None) == folded and (folded or group == stem)
    assert onnx_export.verify_onnx(proto, model, random_clips(model, 2)) < 1e-4


def _synthetic_clips(n, seed, frames=8, size=32):
    """Synthetic gesture clips in [-1, 1]: images with the statistics the ranges are set on."""
    from keras_efficient3d.data import synthetic

    rng = np.random.default_rng(seed)
    videos = [synthetic.render_video(i % len(synthetic.CLASSES), rng, frames, size) for i in range(n)]
    return np.stack(videos).astype(np.float32) / 127.5 - 1.0


@pytest.fixture(scope="module")
def qat_trunk(mobilenetv2_trunk):
    """A QAT MobileNetV2 trunk (stem, depthwise taps with temporal stride, residual add),
    its float model and synthetic clips."""
    from keras_efficient3d.deploy.quantize import quantize_model

    trunk, _ = mobilenetv2_trunk
    qat = quantize_model(trunk, _synthetic_clips(8, seed=1), num_calibration=8)
    return qat, trunk, _synthetic_clips(16, seed=2)


def _dequantized_inputs(proto):
    """Q/DQ pairs by the tensor they dequantize to, with their scale and zero-point arrays."""
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    out = {}
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear":
            axis = [a.i for a in node.attribute if a.name == "axis"]
            out[node.output[0]] = (node, inits[node.input[1]], inits[node.input[2]], axis)
    return out


def test_qat_model_exports_natively_with_qdq(qat_trunk):
    from keras_efficient3d.deploy.quantize import _qat_layer

    qat, trunk, clips = qat_trunk
    assert onnx_native.supports(qat) and onnx_export.resolve_form(qat) == "native"
    proto = onnx_export.convert_to_onnx(qat)
    ops = [n.op_type for n in proto.graph.node]
    assert {"Slice", "Pad", "Gather"}.isdisjoint(ops)  # no temporal taps
    dq = _dequantized_inputs(proto)
    graph_model = _qat_layer(qat).graph.model
    convs = {n.name.rsplit("/", 1)[0]: n for n in proto.graph.node if n.op_type == "Conv"}
    assert set(convs) == set(_conv_layers(graph_model))
    for name, node in convs.items():
        # weights: symmetric int8 per output channel over the whole 3-D kernel
        _, scale, zero, axis = dq[node.input[1]]
        assert zero.dtype == np.int8 and not zero.any() and axis == [0]
        assert scale.shape == (graph_model.get_layer(name).output.shape[-1],)
        # every convolution reads a dequantized activation
        assert node.input[0] in dq
    # activation points: the QAT graph's keys that are layer outputs; the depthwise taps'
    # per-tap partial sums have no native tensor
    ranges = _qat_layer(qat).frozen_hooks().ranges
    acts = {n.name.split("/act/")[0] for n in proto.graph.node
            if n.op_type == "QuantizeLinear" and "/act/" in n.name}
    taps = {k for k in ranges if "/tap" in k or "/sum" in k}
    assert taps and acts == set(ranges) - taps
    # the input's nudged range, as TensorFlow's FakeQuant
    lo, hi = ranges["input"]
    _, scale, zero, _ = next(v for v in dq.values() if v[0].name.startswith("input/act/"))
    assert scale == pytest.approx((hi - min(lo, 0.0)) / 255, rel=1e-5) and zero.dtype == np.uint8
    # int8 follows the fake-quantized model and the float model
    got = onnx_export.run_onnx(proto, clips)
    fake = qat(clips, training=False).numpy()
    assert np.mean(np.argmax(got, -1) == np.argmax(fake, -1)) >= 0.9
    assert np.mean(np.argmax(got, -1) == np.argmax(trunk(clips, training=False).numpy(), -1)) >= 0.9
    assert np.abs(got - fake).max() <= 0.1 * np.abs(fake).max()


def test_qat_stem_fold_keeps_the_quantization_grid(qat_trunk):
    qat, _, clips = qat_trunk
    # a quantization point between them: the pair of pointwise convolutions stays apart
    merged = onnx_native.native_onnx(qat, stem_fold=4, merge_pointwise=True)
    assert {"block_1_project/Conv", "block_2_expand/Conv"} <= {n.name for n in merged.graph.node}
    plain, folded = (onnx_native.native_onnx(qat, stem_fold=f) for f in (1, 4))
    dq = _dequantized_inputs(folded)
    stem = next(n for n in folded.graph.node if n.op_type == "Conv")
    _, scale, _, _ = dq[stem.input[1]]
    _, plain_scale, _, _ = _dequantized_inputs(plain)[next(
        n for n in plain.graph.node if n.op_type == "Conv").input[1]]
    assert np.array_equal(scale, np.tile(plain_scale, 2))  # one scale per output channel, as before
    # the input's Q/DQ, then the view of the clip the stem reads
    assert [n.op_type for n in folded.graph.node[:3]] == ["QuantizeLinear", "DequantizeLinear", "Reshape"]
    assert folded.graph.node[0].input[0] == "input"
    got, expected = onnx_export.run_onnx(folded, clips), onnx_export.run_onnx(plain, clips)
    assert np.abs(got - expected).max() <= 1e-3 * np.abs(expected).max()


def test_qat_native_runs_int8_in_openvino(qat_trunk):
    qat, _, clips = qat_trunk
    proto = onnx_native.native_onnx(qat, weight_bits=7)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    levels = [np.abs(np.round(inits[n.input[0]] / inits[n.input[1]].reshape(-1, 1, 1, 1, 1))).max()
              for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits]
    # conv weights in [-63, 63]: no int16 pair saturation on x86 CPUs without VNNI
    assert levels and max(levels) == 63
    compiled = _openvino_compiled(proto)
    precisions = {op.get_rt_info()["runtimePrecision"].astype(str)
                  for op in compiled.get_runtime_model().get_ops()
                  if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
    assert precisions and precisions <= {"u8", "i8"}
    got = compiled(clips)[compiled.output(0)]
    expected = onnx_export.run_onnx(proto, clips)
    assert np.mean(np.argmax(got, -1) == np.argmax(expected, -1)) >= 0.9


def test_qat_export_report_and_taps_form(qat_trunk, tmp_path):
    qat, _, clips = qat_trunk
    report = onnx_export.export_onnx(qat, str(tmp_path / "qat.onnx"))
    assert report["form"] == "native" and report["max_rel_error"] is None
    assert 0.0 <= report["top1_agreement"] <= 1.0
    assert report["quantization"]["types"] == ["INT8", "UINT8"]
    # the taps form on request: tf2onnx of the fake-quantized 2D-tap graph (not verified:
    # ONNX Runtime's Q/DQ of that graph is 4.5% off the Keras QAT model at batch 1, as
    # before the native QAT export existed)
    taps = onnx_export.export_onnx(qat, str(tmp_path / "taps.onnx"), form="taps", verify=False)
    assert taps["form"] == "taps" and taps["quantization"]["QuantizeLinear"] > 0
    assert "Slice" in {n.op_type for n in onnx.load(str(tmp_path / "taps.onnx")).graph.node}
    with pytest.raises(ValueError, match="Received: weight_bits=6"):
        onnx_native.native_onnx(qat, weight_bits=6)


@pytest.mark.slow
def test_qat_native_agrees_with_float_and_tflite_int8_on_the_shipped_model():
    """The issue's measure: MobileNetV2 0.2x trained on the synthetic gestures (shipped),
    its QAT form over synthetic validation clips, int8 top-1 agreement with the float model
    >= 99% (measured on these 240: ONNX Runtime 99.6%, OpenVINO 7-bit weights 99.6%, 8-bit
    95.0% on this AVX2 machine; with TFLite int8 98.75%: rounding apart, not a bias)."""
    from keras_efficient3d.data import synthetic
    from keras_efficient3d.deploy.quantize import convert_qat, quantize_model
    from keras_efficient3d.runtime import TFLiteRunner

    model = keras.saving.load_model(os.path.join(ROOT, "saved_models", "synthetic_gestures.keras"),
                                    compile=False)

    def gestures(n, seed):  # as it was trained: 16 of 32 frames, 64 px, RGB in [0, 1]
        rng = np.random.default_rng(seed)
        videos = [synthetic.render_video(i % len(synthetic.CLASSES), rng, 32, 64)[::2] for i in range(n)]
        return np.stack(videos).astype(np.float32) / 255.0

    qat = quantize_model(model, gestures(32, seed=1), num_calibration=32)
    clips = gestures(240, seed=2)
    float_top1 = np.argmax(model.predict(clips, batch_size=8, verbose=0), -1)
    tflite = TFLiteRunner(convert_qat(qat))
    tflite_top1 = np.array([np.argmax(tflite(clips[i:i + 1])) for i in range(len(clips))])
    proto = onnx_native.native_onnx(qat)
    ort_top1 = np.argmax(np.concatenate([onnx_export.run_onnx(proto, clips[i:i + 16]) for i in range(0, 240, 16)]), -1)
    assert np.mean(ort_top1 == float_top1) >= 0.99 and np.mean(ort_top1 == tflite_top1) >= 0.98
    seven = onnx_native.native_onnx(qat, weight_bits=7)
    assert np.mean(np.argmax(_openvino_output(seven, clips), -1) == float_top1) >= 0.99


# One mean for every channel (128 of 255), a std per channel and BGR: a frames input is exact.
_ONE_MEAN = Normalization(mean=(128 / 255,) * 3, std=(0.2, 0.25, 0.3), value_range="0-1", channel_order="BGR")


def _frames(shape, n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n,) + tuple(shape)).astype(np.float32)


def test_a_frames_input_is_normalised_in_the_graph_exactly():
    """RGB 0-255 frames in, the model's normalisation in the graph: one scalar Sub and Mul
    before the stem, the per-channel std and the channel order in the stem's weights; the
    same outputs as the model on the normalised clip, at every stem fold, in ONNX Runtime
    and OpenVINO."""
    model = _stem_model(3, (1, 2, 2), 1, use_bias=False)
    frames = _frames(model.inputs[0].shape[1:])
    expected = model(_ONE_MEAN.apply(frames), training=False).numpy()
    assert frames_input_affine(_ONE_MEAN) == {
        "zero_point": 128.0, "scale": pytest.approx(np.mean([1 / (255 * s) for s in _ONE_MEAN.std])),
        "exact": True, "border_offset": 0.0}
    for fold in (1,) + onnx_native.stem_fold_factors(model):
        proto = onnx_native.native_onnx(model, frames=_ONE_MEAN, stem_fold=fold)
        assert [n.op_type for n in proto.graph.node][:2] == ["Sub", "Mul"]
        assert check_close(onnx_export.run_onnx(proto, frames), expected, 1e-4, 1e-6) < 1e-4
        check_close(_openvino_output(proto, frames), expected, 1e-4, 1e-6, what="OpenVINO model")
    # the channel order is the stem's: the same frames in BGR are another clip
    assert check_close(onnx_export.run_onnx(onnx_native.native_onnx(model, frames=_ONE_MEAN), frames[..., ::-1]),
                       expected, 1e30, 0) > 1e-3


def test_a_frames_input_with_a_mean_per_channel_is_exact_inside_the_border():
    """Per-channel means (the original's ActivityNet mean): the stem's zero padding reads the
    channels' common mean, so the outputs whose taps reach the padding differ, and only
    those (the border the report's border_offset is about)."""
    from keras_efficient3d.data.normalization import PRESETS

    inputs = keras.Input((6, 12, 12, 3), name="input")
    x = L.Conv3D(6, 3, (1, 2, 2), 1, name="stem")(inputs)
    model = randomize_batchnorm(keras.Model(
        inputs, keras.layers.BatchNormalization(epsilon=1e-5, name="stem_bn")(x), name="stem_only"))
    norm = PRESETS["original"]
    affine = frames_input_affine(norm)
    assert not affine["exact"] and affine["border_offset"] == pytest.approx(7.7748)
    frames = _frames(model.inputs[0].shape[1:])
    expected = model(norm.apply(frames), training=False).numpy()
    actual = onnx_export.run_onnx(onnx_native.native_onnx(model, frames=norm), frames)
    # stride 2 over 12 columns with a pad of 1: only the first row and column read padding
    inside = (slice(None), slice(1, -1), slice(1, None), slice(1, None))
    assert check_close(actual[inside], expected[inside], 1e-4, 1e-6) < 1e-4
    assert np.abs(actual - expected).max() > 1e-2 * np.abs(expected).max()


def test_a_frames_input_needs_a_float_model_with_a_stem(qat_trunk):
    with pytest.raises(ValueError, match="frames input is written for float models"):
        onnx_native.native_onnx(qat_trunk[0], frames=_ONE_MEAN)
    inputs = keras.Input((4, 8, 8, 3), name="input")
    two = keras.layers.Concatenate()([L.Conv3D(4, 3, 1, 1, name="a")(inputs), L.Conv3D(4, 3, 1, 1, name="b")(inputs)])
    with pytest.raises(ValueError, match="one ungrouped Conv3D alone reads"):
        onnx_native.native_onnx(keras.Model(inputs, two), frames=_ONE_MEAN)


@pytest.mark.parametrize("kernel, strides, padding", [
    (3, (1, 2, 2), 1),             # the registry's efficient models' stem
    ((3, 3, 5), (1, 2, 2), (1, 1, 2)),
    (3, 1, 1),                     # C3D's (unstrided)
    ((1, 3, 3), (1, 3, 3), (0, 1, 1)),
])
def test_stem_output_fold_is_exact_for_every_factor(kernel, strides, padding):
    """The stem writing q output columns per position as channels, unfolded after it: the
    model's outputs in ONNX Runtime and OpenVINO, with a frames input too."""
    model = _stem_model(kernel, strides, padding, use_bias=True)
    factors = onnx_native.stem_output_fold_factors(model)
    assert 2 in factors
    clips = random_clips(model, 2)
    expected = model(clips, training=False).numpy()
    for q in factors:
        proto = onnx_native.native_onnx(model, stem_output_fold=q)
        conv = next(n for n in proto.graph.node if n.op_type == "Conv")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
        assert attrs["strides"][2] == q * model.get_layer("stem").strides[2]
        weights = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
        assert weights[conv.input[1]].shape[0] == 6 * q
        assert check_close(onnx_export.run_onnx(proto, clips), expected, 1e-4, 1e-6) < 1e-4
        check_close(_openvino_output(proto, clips), expected, 1e-4, 1e-6, what="OpenVINO model")
    frames = _frames(model.inputs[0].shape[1:])
    proto = onnx_native.native_onnx(model, stem_output_fold=2, frames=_ONE_MEAN)
    assert check_close(onnx_export.run_onnx(proto, frames),
                       model(_ONE_MEAN.apply(frames), training=False).numpy(), 1e-4, 1e-6) < 1e-4


def test_stem_output_fold_refusals(qat_trunk):
    model = _stem_model(3, (1, 2, 2), 1)
    with pytest.raises(ValueError, match=r"`stem_output_fold` must be 1 or one of \(2, 4\)"):
        onnx_native.native_onnx(model, stem_output_fold=3)
    with pytest.raises(ValueError, match="without `stem_fold`"):
        onnx_native.native_onnx(model, stem_output_fold=2, stem_fold=2)
    assert onnx_native.stem_output_fold_factors(qat_trunk[0]) == ()
    with pytest.raises(ValueError, match=r"one of \(\)"):
        onnx_native.native_onnx(qat_trunk[0], stem_output_fold=2)
