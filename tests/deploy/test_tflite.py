"""TFLite conversion: fp32/fp16/dynamic equal the Keras model; full int8 is int8 throughout,
runs under XNNPACK and is about a quarter of the fp32 file."""

import os

import numpy as np
import pytest

from deploy_helpers import ROOT, SMALL, clips, input_shape_for, load_script, randomize_batchnorm
from keras_efficient3d import create_model
from keras_efficient3d.artifacts import read_metadata
from keras_efficient3d.deploy import DeploymentGraph, tflite

# The efficient models of the paper's Table 8, at small widths for speed.
EFFICIENT = ["mobilenetv2_0.45x", "mobilenet_0.5x", "shufflenetv2_0.5x", "shufflenet_0.5x_g3",
             "squeezenet_1.1"]


@pytest.mark.parametrize("name", EFFICIENT)
def test_fp32_tflite_equals_keras_under_xnnpack(name):
    shape = input_shape_for(name)
    model = randomize_batchnorm(create_model(name, input_shape=shape, num_classes=7))
    x = clips(shape, 1)
    expected = np.asarray(model(x, training=False))
    runner = tflite.TFLiteRunner(tflite.convert(model, "fp32"), num_threads=2)
    assert runner.delegated()
    got = runner(x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_fp16_and_dynamic_range_stay_close(mobilenetv2_trunk):
    model, data = mobilenetv2_trunk
    graph = DeploymentGraph(model)
    expected = graph.predict(data[:2])
    scale = np.abs(expected).max()
    for precision, tol in (("fp16", 0.01), ("dynamic", 0.1)):
        blob = tflite.convert(graph, precision)
        runner = tflite.TFLiteRunner(blob, num_threads=2)
        got = runner.predict(data[:2])
        assert np.abs(got - expected).max() < tol * scale, precision


@pytest.fixture(scope="module")
def int8_and_fp32(mobilenetv2_small):
    model, data = mobilenetv2_small
    graph = DeploymentGraph(model)
    return (tflite.convert(graph, "int8", representative_data=data),
            tflite.convert(graph, "fp32"), graph, data)


def test_int8_has_only_integer_compute_ops(int8_and_fp32):
    blob, _, _, _ = int8_and_fp32
    ops = tflite.op_summary(blob)
    names = {name for name, _, _ in ops}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= names
    assert "CONV_3D" not in names
    for name, ins, outs in ops:
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            # input, weights int8; bias int32; output int8
            assert ins[0] == "int8" and ins[1] == "int8" and outs == ["int8"], (name, ins, outs)
            assert all(t in ("int8", "int32") for t in ins), (name, ins)
    # Float tensors only at the two ends (QUANTIZE of the input, DEQUANTIZE of the logits).
    float_ops = [n for n, ins, outs in ops if "float32" in ins + outs]
    assert sorted(float_ops) == ["DEQUANTIZE", "QUANTIZE"], float_ops
    assert tflite.float_op_types(blob) == []


def test_float_op_types_flags_a_float_model(int8_and_fp32):
    _, fp32, _, _ = int8_and_fp32
    assert "CONV_2D" in tflite.float_op_types(fp32)


def test_int8_runs_under_xnnpack(int8_and_fp32):
    blob, _, _, data = int8_and_fp32
    runner = tflite.TFLiteRunner(blob, num_threads=2)  # raises if XNNPACK refuses the graph
    assert runner.delegated()
    assert np.isfinite(runner.predict(data[:2])).all()


def test_int8_tracks_float(mobilenetv2_trunk):
    model, data = mobilenetv2_trunk
    graph = DeploymentGraph(model)
    runner = tflite.TFLiteRunner(tflite.convert(graph, "int8", representative_data=data))
    got, expected = runner.predict(data[:4]), graph.predict(data[:4])
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.99
    assert np.abs(got - expected).max() < 0.15 * np.abs(expected).max()


def test_int8_file_is_about_a_quarter_of_fp32(int8_and_fp32):
    blob, fp32, _, _ = int8_and_fp32
    ratio = len(blob) / len(fp32)
    # Weights are 1/4; per-channel scales and zero points add a few percent.
    # (0.31 for MobileNetV2 1.0x with 600 classes; more here, at 0.45x with 5 classes)
    assert 0.2 < ratio < 0.4, ratio


def test_int8_io_model_takes_int8_clips(mobilenetv2_small):
    model, data = mobilenetv2_small
    blob = tflite.convert(model, "int8", representative_data=data, int8_io=True)
    runner = tflite.TFLiteRunner(blob, num_threads=1)
    assert runner.input["dtype"] == np.int8 and runner.output["dtype"] == np.int8
    assert runner(data[:1]).shape == (1, 5)


def test_benchmark_reports_latency(int8_and_fp32):
    blob, _, _, _ = int8_and_fp32
    result = tflite.benchmark(blob, num_threads=1, warmup=1, runs=3)
    assert result["median_ms"] > 0 and result["clips_per_s"] > 0 and result["xnnpack"]


def test_int8_needs_representative_data():
    model = create_model("mobilenet_0.5x", input_shape=SMALL, num_classes=3)
    with pytest.raises(ValueError, match="representative_data"):
        tflite.convert(model, "int8")


@pytest.mark.parametrize("name", ["shufflenetv2_0.5x", "shufflenet_0.5x_g3"])
def test_shufflenets_are_one_xnnpack_partition(name):
    """Channel splits and grouped convolutions once left SLICEs with -1 sizes that XNNPACK
    declines (14 partitions); fp32 and full int8 must now be one delegate node."""
    shape = input_shape_for(name)
    model = create_model(name, input_shape=shape, num_classes=7)
    graph = DeploymentGraph(model)
    data = clips(shape, 2)
    for precision in ("fp32", "int8"):
        blob = tflite.convert(graph, precision, representative_data=data)
        runner = tflite.TFLiteRunner(blob, num_threads=2)
        assert runner.partitions() == 1 and runner.delegated(), precision
        if precision == "int8":
            assert tflite.float_op_types(blob) == []


def test_fp32_resnet_with_a_7_frame_stem_is_one_xnnpack_partition():
    """XNNPACK takes no CONCATENATION of 7 inputs: a ResNet stem's taps stacked by slices and
    a concat split the fp32 graph in two. Stacked by the 0/1 convolution it is one
    partition, and still the Keras model."""
    shape = (16, 32, 32, 3)
    model = randomize_batchnorm(create_model("resnet10", input_shape=shape, num_classes=7))
    x = clips(shape, 1)
    expected = np.asarray(model(x, training=False))
    concat = tflite.TFLiteRunner(tflite.convert(DeploymentGraph(model, stack_channels=0), "fp32"),
                                 num_threads=2, strict=False)
    assert concat.partitions() == 2
    runner = tflite.TFLiteRunner(tflite.convert(model, "fp32"), num_threads=2)
    assert runner.partitions() == 1
    np.testing.assert_allclose(runner(x), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


SHIPPED = os.path.join(ROOT, "saved_models", "synthetic_gestures.keras")


def test_export_script_verifies_and_records_what_the_weights_file_records(tmp_path):
    """--weights=<.keras>: the file is checked against the Keras model and its sidecar says
    how the model was trained (0-1 pixels, every 2nd frame, the labels), not the defaults."""
    output = str(tmp_path / "m.tflite")
    report = load_script("export_tflite").export(
        "mobilenetv2_0.2x", SHIPPED, 8, 8, 32, "fp32", output)
    assert report["max_rel_error"] < 1e-4
    assert os.path.getsize(output) == report["bytes"]
    recorded, shipped = read_metadata(output), read_metadata(SHIPPED)
    assert report["sidecar"] == output + ".json"
    assert recorded.labels == shipped.labels and recorded.downsample == 2
    assert recorded.normalization == shipped.normalization
    assert (recorded.frames, recorded.size) == (8, 32)  # the build's clip, not the file's
    assert "card" in shipped.extra and "card" not in recorded.extra  # figures of other files


def test_verification_catches_a_file_of_another_model():
    shape = (8, 32, 32, 3)
    one = create_model("mobilenetv2_0.2x", input_shape=shape, num_classes=3)
    other = create_model("mobilenetv2_0.2x", input_shape=shape, num_classes=3)
    head = other.get_layer("predictions")
    head.set_weights([w * 2 + 0.1 for w in head.get_weights()])
    blob = tflite.convert(one, "fp32")
    assert tflite.verify_tflite(blob, one) < 1e-4
    with pytest.raises(AssertionError, match="TFLite fp32 model differs"):
        tflite.verify_tflite(blob, other)
    assert tflite.verify_tflite(blob, other, "int8") is None


def test_int8_calibrates_as_the_weights_file_records_unless_told(monkeypatch, tmp_path):
    from keras_efficient3d import data as kdata

    seen = []

    def make_dataset(records, mode, **kwargs):
        seen.append(kwargs)
        raise KeyboardInterrupt  # stop before the (slow) calibration

    monkeypatch.setattr(kdata, "index_jester", lambda root, split: ([], None))
    monkeypatch.setattr(kdata, "make_dataset", make_dataset)
    script = load_script("export_tflite")
    out = str(tmp_path / "m.tflite")
    for extra in ({}, {"normalization": "kinetics", "downsample": 1}):
        with pytest.raises(KeyboardInterrupt):
            script.export("mobilenetv2_0.2x", SHIPPED, 8, 8, 32, "int8", out,
                          data_root=str(tmp_path), **extra)
    assert seen[0]["downsample"] == 2
    assert seen[0]["normalization"] == read_metadata(SHIPPED).normalization
    assert (seen[1]["normalization"], seen[1]["downsample"]) == ("kinetics", 1)
    assert (seen[0]["sample_duration"], seen[0]["sample_size"]) == (8, 32)


def test_int8_sidecar_records_the_calibrations_normalization(monkeypatch, tmp_path):
    """The clips an int8 file was calibrated on are the ones it is made for: its sidecar says
    how they were normalised and sampled, for predict to feed it the same (a model that
    records none would otherwise be fed 'original' clips, whatever it was calibrated on)."""
    from keras_efficient3d import data as kdata
    from keras_efficient3d.data.normalization import Normalization

    monkeypatch.setattr(kdata, "index_jester", lambda root, split: ([], None))
    monkeypatch.setattr(kdata, "make_dataset", lambda records, mode, **kwargs: clips((8, 32, 32, 3), 4))
    out = str(tmp_path / "m.tflite")
    load_script("export_tflite").export("mobilenetv2_0.2x", None, 3, 8, 32, "int8", out,
                                        data_root=str(tmp_path), num_calibration=4,
                                        normalization="unit", downsample=2)
    recorded = read_metadata(out)
    assert recorded.normalization == Normalization.preset("unit") and recorded.downsample == 2
