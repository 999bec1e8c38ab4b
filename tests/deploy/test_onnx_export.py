"""ONNX export: equivalence with Keras for every architecture, options, QAT Q/DQ, CLI."""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf

from deploy_helpers import randomize_batchnorm
from keras_efficient3d import create_model, list_models
from keras_efficient3d.deploy import onnx_export

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Heads that pool ceil(frames/16) x ceil(size/32)^2 cells need 16 x 32 x 32 clips.
_NEEDS_16 = ("resnet", "resnext", "squeezenet", "c3d", "shufflenetv1")
# Narrow widths keep the efficient models' conversion to a few seconds; the graph (and so
# what is exported) is the same at every width.
_WIDTHS = {"mobilenetv1": 0.5, "mobilenetv2": 0.2, "shufflenetv1": 0.5, "shufflenetv2": 0.25}


def _registry_case(name):
    frames = 16 if name.startswith(_NEEDS_16) else 8
    kwargs = {"input_shape": (frames, 32, 32, 3), "num_classes": 5}
    if name in _WIDTHS:
        kwargs["width_mult"] = _WIDTHS[name]
    if name.startswith(("resnet101", "resnet152", "resnet200", "resnext", "c3d")):
        kwargs = {"input_shape": (frames, 32, 32, 3), "include_top": False, "pooling": "avg"}
    # The native form of every family is tested in the fast tier (test_onnx_native.py); this
    # is the taps form, the fallback for layers without a native form.
    return pytest.param(name, kwargs, id=name, marks=[pytest.mark.slow])


# The deeper ResNets and the ResNeXts repeat the basic, bottleneck and grouped blocks of
# ResNet-18 and of test_onnx_native.py's small ResNets (same layers, only more of them) and
# take up to minutes each to convert with tf2onnx here: ResNet-18 stands for them.
_REPEATS = ("resnet34", "resnet50", "resnet101", "resnet152", "resnet200", "resnext50",
            "resnext101", "resnext152")


@pytest.mark.parametrize("name,kwargs", [_registry_case(n) for n in list_models()
                                         if n not in _REPEATS])
def test_every_registered_model_exports_in_taps_form_and_matches_keras(name, kwargs):
    model = randomize_batchnorm(create_model(name, **kwargs))
    proto = onnx_export.convert_to_onnx(model, form="taps")
    assert proto.producer_name == "keras_efficient3d+tf2onnx"
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}
    assert onnx_export.verify_onnx(proto, model) < 1e-4


def _tiny_model():
    """The project's layers (conv, depthwise, pools, shuffle) in a few-layer model: the export
    options do not depend on the architecture, and this converts in seconds."""
    from keras_efficient3d import layers as L

    inputs = keras.Input((8, 32, 32, 3), name="input")
    x = L.Conv3D(8, 3, (1, 2, 2), 1, use_bias=False, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="conv1_bn")(x)
    x = keras.layers.ReLU(6.0, name="conv1_relu")(x)
    x = L.DepthwiseConv3D(3, 2, 1, use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="dw_bn")(x)
    x = keras.layers.ReLU(name="dw_relu")(x)
    x = L.ChannelShuffle(2, name="shuffle")(x)
    x = L.MaxPool3D(3, 2, 1, name="pool")(x)
    x = keras.layers.GlobalAveragePooling3D(name="avg_pool")(x)
    outputs = keras.layers.Dense(4, name="predictions")(x)
    return randomize_batchnorm(keras.Model(inputs, outputs, name="tiny3d"))


@pytest.fixture(scope="module")
def small_model():
    return _tiny_model()


@pytest.fixture(scope="module")
def small_proto(small_model):
    return onnx_export.convert_to_onnx(small_model)


def test_dynamic_batch_is_named_and_runs_any_batch(small_model, small_proto):
    proto = small_proto
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [8, 32, 32, 3]
    assert proto.opset_import[0].version == 13 and proto.ir_version == 7
    for batch in (1, 3):
        clips = onnx_export.random_clips(small_model, batch, seed=batch)
        assert onnx_export.verify_onnx(proto, small_model, clips) < 1e-4


def test_fixed_batch_keep_bn_and_opset(small_model):
    proto = onnx_export.convert_to_onnx(small_model, opset=17, batch_size=3, fold_bn=False)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3
    assert proto.opset_import[0].version == 17
    assert onnx_export.verify_onnx(proto, small_model) < 1e-4
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    with pytest.raises(InvalidArgument, match="dimension"):  # a fixed batch refuses another one
        onnx_export.run_onnx(proto, onnx_export.random_clips(small_model, 2))


def test_taps_form_on_request(small_model):
    proto = onnx_export.convert_to_onnx(small_model, batch_size=2, form="taps")
    ops = {n.op_type for n in proto.graph.node}
    # tf2onnx of the 2D-tap graph: per-frame slices, 4-D convolutions, no 5-D Conv kernel
    assert proto.producer_name == "keras_efficient3d+tf2onnx" and "Conv" in ops
    assert not any(len(i.dims) == 5 for i in proto.graph.initializer)
    assert onnx_export.verify_onnx(proto, small_model) < 1e-4


def test_invalid_arguments(small_model):
    with pytest.raises(ValueError, match="opset"):
        onnx_export.convert_to_onnx(small_model, opset=11)
    # an opset the onnx package has and tf2onnx lacks: ours, not "make_sure failure: ..."
    from tf2onnx.constants import OPSET_TO_IR_VERSION

    newest = max(OPSET_TO_IR_VERSION)
    if newest < onnx.defs.onnx_opset_version():
        with pytest.raises(ValueError, match=f"The taps form converts through tf2onnx, whose "
                                             f"opsets end at {newest}"):
            onnx_export.convert_to_onnx(small_model, opset=newest + 1, form="taps")
    with pytest.raises(ValueError, match="batch_size"):
        onnx_export.convert_to_onnx(small_model, batch_size=0)
    with pytest.raises(ValueError, match="exactly one"):
        onnx_export.build_and_export_onnx("x.onnx")


def test_verification_detects_a_wrong_graph(small_model, small_proto):
    proto = onnx.ModelProto()
    proto.CopyFrom(small_proto)
    for init in proto.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 2:  # classifier
            values = onnx.numpy_helper.to_array(init) * 1.01
            init.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), init.name))
    with pytest.raises(AssertionError, match="differs"):
        onnx_export.verify_onnx(proto, small_model)


def test_export_refuses_a_file_name_of_another_format(small_model, tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.onnx"):
        onnx_export.export_onnx(small_model, str(tmp_path / "model.tflite"))
    assert not list(tmp_path.iterdir())


def test_export_writes_file_and_report(small_model, tmp_path):
    path = str(tmp_path / "model.onnx")
    report = onnx_export.export_onnx(small_model, path, batch_size=2)
    assert os.path.isfile(path) and report["input_shape"] == (2, 8, 32, 32, 3)
    assert report["max_rel_error"] < 1e-4 and report["quantization"]["QuantizeLinear"] == 0
    clips = onnx_export.random_clips(small_model, 2)
    np.testing.assert_allclose(onnx_export.run_onnx(path, clips),
                               small_model(clips, training=False).numpy(), rtol=1e-4, atol=1e-5)


def test_build_and_export_from_keras_file(small_model, tmp_path):
    from keras_efficient3d.artifacts import ModelMetadata, read_metadata, save_model
    from keras_efficient3d.data.normalization import Normalization

    keras_file = str(tmp_path / "model.keras")
    recorded = ModelMetadata(frames=8, size=32, downsample=2, normalization=Normalization.preset("unit"),
                             labels=["a", "b", "c"])
    save_model(small_model, keras_file, metadata=recorded)
    path = str(tmp_path / "m.onnx")
    report = onnx_export.build_and_export_onnx(path, keras_file=keras_file)
    assert report["max_rel_error"] < 1e-4
    # The sidecar says how to feed the model (predict would otherwise guess), and the batch
    # axis (a Jetson's engine build reads it).
    assert report["sidecar"] == path + ".json"
    assert read_metadata(path) == dataclasses.replace(recorded, batch="dynamic")


# --- QAT: fake-quant ops become QuantizeLinear/DequantizeLinear --------------------------


class _FakeQuantActivation(keras.layers.Layer):
    def __init__(self, low, high, **kwargs):
        super().__init__(**kwargs)
        self.low, self.high = low, high

    def build(self, input_shape):
        self.min_var = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.low),
                                       trainable=False, name="min")
        self.max_var = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.high),
                                       trainable=False, name="max")

    def call(self, x):
        return tf.quantization.fake_quant_with_min_max_vars(x, self.min_var, self.max_var)


class _FakeQuantConv(keras.layers.Layer):
    """A conv whose kernel is fake-quantized per output channel, symmetric, narrow range."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(3, 3, input_shape[-1], 8), initializer="glorot_uniform")
        self.amax = self.add_weight(shape=(8,), initializer="ones", trainable=False)

    def call(self, x):
        kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            self.kernel, -self.amax, self.amax, narrow_range=True)
        return tf.nn.conv2d(x, kernel, 1, "SAME")


def _qat_model(symmetric=True):
    # Seeded: with unseeded weights one full-suite run in many put a value on a rounding
    # boundary, where ONNX Runtime's QuantizeLinear and TensorFlow's FakeQuant landed one
    # quantization step apart (9.7e-5 on a 0.87 logit); the check is of the export.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 16, 16, 3))
    x = keras.layers.Reshape((16, 16, 12))(inputs)
    x = _FakeQuantActivation(-4.0, 4.0 * 127 / 128 if symmetric else 3.0)(x)
    conv = _FakeQuantConv()
    x = keras.layers.ReLU()(conv(x))
    x = _FakeQuantActivation(-6.0, 6.0 * 127 / 128 if symmetric else 5.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    conv.amax.assign(np.abs(conv.kernel.numpy()).max(axis=(0, 1, 2)))
    return model


def test_qat_model_exports_symmetric_int8_qdq_for_tensorrt():
    model = _qat_model(symmetric=True)
    assert onnx_export.resolve_form(model) == "taps"  # fake-quant layers: no native form
    proto = onnx_export.convert_to_onnx(model)
    summary = onnx_export.quantization_summary(proto)
    # two activations and the conv's weights, per channel on the OIHW output axis
    assert summary == {"QuantizeLinear": 3, "DequantizeLinear": 3, "types": ["INT8"]}
    axes = [a.i for n in proto.graph.node if n.op_type == "QuantizeLinear" for a in n.attribute
            if a.name == "axis"]
    assert axes == [0]
    assert onnx_export.verify_onnx(proto, model) < 1e-4


def test_asymmetric_fake_quant_exports_uint8():
    model = _qat_model(symmetric=False)
    proto = onnx_export.convert_to_onnx(model)
    assert onnx_export.quantization_summary(proto)["types"] == ["INT8", "UINT8"]
    assert onnx_export.verify_onnx(proto, model) < 1e-4


# --- CLI -----------------------------------------------------------------------------


def _run(args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, os.path.join(ROOT, "deployment", "export.py")] + args,
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_cli_exports_onnx(tmp_path):
    out = tmp_path / "cli.onnx"
    run = _run(["--model", "mobilenetv1_0.25x", "--frames", "8", "--size", "32", "--num_classes", "4",
                "--format", "onnx", "--batch_size", "2", "--output", str(out)])
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["opset"] == 13 and report["max_rel_error"] < 1e-4
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


def test_weights_from_a_keras_file_record_its_preprocessing(tmp_path):
    """--weights=<shipped .keras>: it loads (its BatchNormalization layers by name) and the
    sidecar keeps its labels, frame step and 0-1 normalisation for predict."""
    from keras_efficient3d.artifacts import read_metadata

    shipped = os.path.join(ROOT, "saved_models", "synthetic_gestures.keras")
    out = str(tmp_path / "m.onnx")
    report = onnx_export.build_and_export_onnx(out, model_name="mobilenetv2_0.2x", num_frames=8,
                                               image_size=32, num_classes=8, weights=shipped)
    assert report["max_rel_error"] < 1e-4
    recorded = read_metadata(out)
    assert recorded.labels == read_metadata(shipped).labels and recorded.downsample == 2
    assert (recorded.frames, recorded.size) == (8, 32)

def test_taps_export_keeps_tf2onnx_notices_off_the_screen(caplog):
    """tf2onnx's INFO lines (versions, opset, optimizer counts) reached the screen through
    absl's root handler in export.py --onnx_form=taps."""
    import logging

    model = create_model("mobilenetv2_0.2x", input_shape=(8, 32, 32, 3), num_classes=3)
    caplog.set_level(logging.INFO)
    onnx_export.convert_to_onnx(model, form="taps")
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("tf2onnx")]

def test_cli_rejects_bad_arguments(tmp_path, capsys):
    # In this process (`cli.invoke`, the program's own error mapping); the real program runs
    # above and in test_cli.py.
    from deploy_helpers import load_script
    from keras_efficient3d import cli

    export = load_script("export")

    def run(args):
        status = cli.invoke(export.main, export.define_flags, ["export.py", *args])
        return status, capsys.readouterr().err

    keras_file = tmp_path / "x.keras"
    keras_file.write_text("")
    status, err = run(["--model", "mobilenetv1", "--keras_file", str(keras_file),
                       "--output", str(tmp_path / "x")])
    assert status == 2 and "exactly one of --model and --model_file" in err
    status, err = run(["--model", "nosuchnet", "--output", str(tmp_path / "x.onnx")])
    assert status == 2 and "Unknown model 'nosuchnet'" in err
    assert "Traceback" not in err


def test_export_records_how_a_model_of_weights_alone_was_trained(tmp_path, capsys):
    """A .weights.h5 records nothing: its export's sidecar said no normalisation or frame
    step (predict assumed 'original', every frame) and its int8 IR calibrated on those
    clips, with no flag to say otherwise. --normalization and --downsample say it; one
    other than a .keras file records is refused, as export_tflite.py refuses it."""
    import json

    from deploy_helpers import load_script
    from keras_efficient3d import cli
    from keras_efficient3d.artifacts import read_metadata

    export = load_script("export")
    model = create_model("mobilenetv2_0.2x", input_shape=(8, 32, 32, 3), num_classes=3)
    weights = str(tmp_path / "w.weights.h5")
    model.save_weights(weights)
    out = str(tmp_path / "m.onnx")
    status = cli.invoke(export.main, export.define_flags, [
        "export.py", "--model=mobilenetv2_0.2x", "--num_classes=3", "--frames=8", "--size=32",
        f"--weights={weights}", "--normalization=unit", "--downsample=2", f"--output={out}"])
    assert status == 0, capsys.readouterr().err
    recorded = read_metadata(out)
    assert recorded.downsample == 2 and recorded.value_range == "0-1"
    assert json.loads(open(out + ".json").read())["normalization"]["value_range"] == "0-1"
    from keras_efficient3d.artifacts import ModelMetadata, save_model

    keras_file = save_model(model, str(tmp_path / "m.keras"),
                            ModelMetadata(frames=8, size=32, normalization="unit", downsample=2))
    capsys.readouterr()
    status = cli.invoke(export.main, export.define_flags, [
        "export.py", f"--model_file={keras_file}", "--normalization=original",
        f"--output={tmp_path / 'n.onnx'}"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1, err
    assert f"--normalization=original differs from the normalisation {keras_file} records" in err


@pytest.mark.parametrize("fmt, output", [("onnx", "m.onnx"), ("savedmodel", "sm"),
                                         ("openvino", "m.xml")])
def test_an_export_on_a_full_disk_is_one_line_that_names_the_output(fmt, output, tmp_path,
                                                                     capsys):
    """A full disk (here a file-size limit, which fails writes as one does) was "[Errno 27]
    File too large" (ONNX), a TensorFlow traceback through the staging folder (SavedModel)
    or OpenVINO's "basic_ios::clear: iostream error"; and it leaves nothing behind."""
    from deploy_helpers import load_script
    from helpers import file_size_limit
    from keras_efficient3d import cli

    export = load_script("export")
    folder = tmp_path / "out"
    folder.mkdir()
    args = ["export.py", "--model=mobilenetv2_0.2x", "--num_classes=3", "--frames=8",
            "--size=32", f"--format={fmt}", f"--output={folder / output}"]
    with file_size_limit(16384):
        status = cli.invoke(export.main, export.define_flags, args)
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("export.py: error: cannot write ") and "File too large" in err, err
    assert (str(folder / output) in err if fmt != "openvino" else
            "the temporary ONNX file" in err and "set TMPDIR" in err), err
    assert os.listdir(folder) == []


def test_openvino_ir_on_a_full_disk_is_an_error_that_names_it(tmp_path, monkeypatch):
    """OpenVINO's own words for it: "basic_ios::clear: iostream error". The IR is written
    in a staging folder beside it: the message names the user's file and folder."""
    from helpers import file_size_limit
    from keras_efficient3d.deploy import openvino_export

    model = create_model("mobilenetv2", input_shape=(8, 32, 32, 3), num_classes=3, width_mult=0.2)
    converted = openvino_export.convert_to_openvino(model)
    # converted before the limit: its temporary ONNX file would meet it first
    monkeypatch.setattr(openvino_export, "convert_to_openvino", lambda *a, **k: converted)
    with file_size_limit(16384), pytest.raises(OSError) as err:
        openvino_export.export_openvino(model, str(tmp_path / "m.xml"), verify=False,
                                        stem_output_fold=1)
    assert str(err.value).startswith(f"cannot write {tmp_path / 'm.xml'} and its .bin: "
                                     "OpenVINO's save_model failed"), err.value
    assert str(err.value).endswith(f"is there room in {tmp_path}?"), err.value
    assert os.listdir(tmp_path) == []


def test_benchmark_onnx_reports_clips_per_second(small_model, small_proto, tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "deployment"))
    try:
        import benchmark_onnx
    finally:
        sys.path.pop(0)
    path = str(tmp_path / "tiny.onnx")
    onnx.save(small_proto, path)
    report = benchmark_onnx.benchmark_onnx(path, (1, 8), warmup=1, iterations=3)
    assert report["providers"] == ["CPUExecutionProvider"]
    assert [r["batch_size"] for r in report["results"]] == [1, 8]
    assert all(r["clips_per_s"] > 0 for r in report["results"])
    assert "clips/s" in benchmark_onnx.format_table(report)
    # a fixed batch: timed at that batch, and no other asked for (it was ignored in silence)
    fixed = str(tmp_path / "tiny_b2.onnx")
    onnx.save(onnx_export.convert_to_onnx(small_model, batch_size=2), fixed)
    report = benchmark_onnx.benchmark_onnx(fixed, None, warmup=1, iterations=3)
    assert [r["batch_size"] for r in report["results"]] == [2]
    assert benchmark_onnx.benchmark_onnx(fixed, (2,), warmup=1, iterations=3)["results"]
    with pytest.raises(ValueError, match=f"^{fixed} takes a fixed batch of 2: "
                       "--batch_sizes=1,8 cannot be timed"):
        benchmark_onnx.benchmark_onnx(fixed, (1, 8), warmup=1, iterations=3)
    assert benchmark_onnx.choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(ValueError, match="TensorrtExecutionProvider"):
        benchmark_onnx.choose_providers(["CPUExecutionProvider"], ["TensorrtExecutionProvider"])
