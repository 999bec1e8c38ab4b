"""TFLite conversion: fp32/fp16/dynamic equal the Keras model; full int8 is int8 throughout,
runs under XNNPACK and is about a quarter of the fp32 file."""

import json
import os

import numpy as np
import pytest

from deploy_helpers import AGREEMENT, SHIPPED, SMALL, clips, input_shape_for, load_script, randomize_batchnorm
from keras_efficient3d import create_model
from keras_efficient3d.artifacts import read_metadata
from keras_efficient3d.data.normalization import Normalization
from keras_efficient3d.deploy import DeploymentGraph, tflite
from keras_efficient3d.models import resnet

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
    # its sidecar says so: it said "float32, already normalised" of an int8 tensor
    from keras_efficient3d.artifacts import ModelMetadata

    meta = tflite.sidecar_metadata(blob, ModelMetadata(frames=8, dtype="float32, already normalised"))
    assert meta.dtype == ("int8: the normalised clip quantized (real = scale x (q - zero point), "
                          "the tensor's)")
    written = meta.to_dict()
    for record, details in ((written["input"]["tensor"], runner.input),
                            (written["output_tensor"], runner.output)):
        assert record["dtype"] == "int8" and (record["scale"], record["zero_point"]) == (
            pytest.approx(details["quantization"][0]), details["quantization"][1])
    assert ModelMetadata.from_dict(written).to_dict() == written  # read back as written
    pixels = tflite.sidecar_metadata(blob, ModelMetadata(frames=8, preprocessing_included=True))
    assert pixels.dtype.startswith("int8: the 0-255 RGB pixels quantized")


def test_benchmark_reports_latency(int8_and_fp32):
    blob, _, _, _ = int8_and_fp32
    result = tflite.benchmark(blob, num_threads=1, warmup=1, runs=3)
    assert result["median_ms"] > 0 and result["clips_per_s"] > 0 and result["xnnpack"]


def test_int8_needs_representative_data():
    model = create_model("mobilenet_0.5x", input_shape=SMALL, num_classes=3)
    with pytest.raises(ValueError, match="representative_data"):
        tflite.convert(model, "int8")


def test_int8_calibration_refuses_frames_that_are_not_normalised():
    # uint8 frames calibrated 0-255 ranges for a model of normalised clips: written, mostly noise
    frames = (clips(SMALL, 2) * 255).astype(np.uint8)
    with pytest.raises(ValueError, match=r"int8 calibration must be normalised float clips.*"
                                         r"received uint8 values.*Normalization"):
        next(tflite.representative_dataset(frames, 2, SMALL)())


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
    """XNNPACK takes no CONCATENATION of 7 inputs: a ResNet stem's taps, where slices and
    concatenations stack them (`stack_channels=0`, and QAT int8 graphs), are concatenated
    four at most at a time (`taps.concatenate_channels`); where the 0/1 convolution stacks
    them, there is no concatenation. Either is one partition, and the Keras model."""
    shape = (16, 32, 32, 3)
    model = randomize_batchnorm(create_model("resnet10", input_shape=shape, num_classes=7))
    x = clips(shape, 1)
    expected = np.asarray(model(x, training=False))
    concat = tflite.convert(DeploymentGraph(model, stack_channels=0), "fp32")
    assert max(len(inputs) for op, inputs, _ in tflite.op_summary(concat)
               if op == "CONCATENATION") <= 4
    for blob in (concat, tflite.convert(model, "fp32")):
        runner = tflite.TFLiteRunner(blob, num_threads=2)
        assert runner.partitions() == 1
        np.testing.assert_allclose(runner(x), expected, rtol=1e-4,
                                   atol=1e-4 * np.abs(expected).max())


@pytest.mark.slow
def test_resnext_groups_are_one_xnnpack_partition():
    """A ResNeXt's grouped convolutions are one 2D convolution per group (32 of them),
    concatenated four at most at a time: XNNPACK took no CONCATENATION of 32, and ran the
    fp32 and int8 files in 17 partitions."""
    shape = (16, 32, 32, 3)
    # One block per stage: each holds the 32 groups (ResNeXt-50's 16 blocks took 55 s here).
    model = randomize_batchnorm(resnet.ResNet3DBase(
        "resnext", (1, 1, 1, 1), (128, 256, 512, 1024), input_shape=shape, num_classes=3))
    x = clips(shape, 1)
    expected = np.asarray(model(x, training=False))
    blob = tflite.convert(model, "fp32")
    assert max(len(inputs) for op, inputs, _ in tflite.op_summary(blob)
               if op == "CONCATENATION") <= 4
    runner = tflite.TFLiteRunner(blob, num_threads=2)
    assert runner.partitions() == 1
    np.testing.assert_allclose(runner(x), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


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


def test_export_script_refuses_a_normalisation_or_frame_step_other_than_the_files(tmp_path):
    """The .keras file records how its model was trained: another normalisation or frame
    step written into the sidecar had predict feed the file other clips (confident, wrong
    classes; a note said so and the export went on), as predict refuses such a flag."""
    output = str(tmp_path / "m.tflite")
    export = load_script("export_tflite").export
    report = export("mobilenetv2_0.2x", SHIPPED, 8, 8, 32, "fp32", output,
                    normalization="unit", downsample=2, verify=False)  # what the file records
    assert report["bytes"] > 0
    written = read_metadata(output)
    os.remove(output)
    for given, says in ((dict(normalization="original"),
                         f"--normalization=original differs from the normalisation {SHIPPED} "
                         "records (preset 'unit'), which its model was trained with: leave the "
                         "flag out"),
                        (dict(downsample=1), f"--downsample=1 differs from the frame step "
                                             f"{SHIPPED} records (2)")):
        with pytest.raises(ValueError) as err:
            export("mobilenetv2_0.2x", SHIPPED, 8, 8, 32, "fp32", output, verify=False, **given)
        assert str(err.value).startswith(says), str(err.value)
        assert not os.path.exists(output)
    assert written.normalization == Normalization.preset("unit") and written.downsample == 2


def test_a_float_file_records_the_normalisation_and_frame_step_it_is_given(tmp_path):
    """--normalization and --downsample are how the model was trained, whatever the
    precision: a float file's sidecar must say so, or predict feeds it 'original' clips of
    consecutive frames and reports another class."""
    output = str(tmp_path / "m.tflite")
    load_script("export_tflite").export("mobilenetv2_0.2x", None, 3, 8, 32, "fp16", output,
                                        normalization="unit", downsample=3, verify=False)
    recorded = read_metadata(output)
    assert recorded.normalization == Normalization.preset("unit") and recorded.downsample == 3
    # The frame step alone: no normalisation is made up for a model that records none.
    load_script("export_tflite").export("mobilenetv2_0.2x", None, 3, 8, 32, "fp16", output,
                                        downsample=2, verify=False)
    recorded = read_metadata(output)
    assert recorded.normalization is None and recorded.downsample == 2


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

    monkeypatch.setattr(kdata, "index_dataset", lambda root, split: ([], None))
    monkeypatch.setattr(kdata, "agreement_records", lambda root: ([], None))
    monkeypatch.setattr(kdata, "make_dataset", make_dataset)
    script = load_script("export_tflite")
    out = str(tmp_path / "m.tflite")
    # the .keras file's own, else (weights that record none) what the flags say
    for weights, extra in ((SHIPPED, {}), (None, {"normalization": "kinetics", "downsample": 1})):
        with pytest.raises(KeyboardInterrupt):
            script.export("mobilenetv2_0.2x", weights, 8, 8, 32, "int8", out,
                          data_root=str(tmp_path), **extra)
    assert seen[0]["downsample"] == 2
    assert seen[0]["normalization"] == read_metadata(SHIPPED).normalization
    assert (seen[1]["normalization"], seen[1]["downsample"]) == ("kinetics", 1)
    assert (seen[0]["sample_duration"], seen[0]["sample_size"]) == (8, 32)


def test_export_script_without_litert_says_so_before_converting(monkeypatch, tmp_path, capsys):
    """--verify (the default) runs the file in LiteRT, an extra: without it the script ended
    in a ModuleNotFoundError traceback after the conversion."""
    import sys

    from keras_efficient3d import cli

    script = load_script("export_tflite")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # its import raises ImportError
    monkeypatch.setattr(script, "export", lambda *a, **k: pytest.fail("converted"))
    out = tmp_path / "m.tflite"
    argv = ["export_tflite.py", "--model=mobilenetv2_0.2x", "--num_classes=3", "--frames=8",
            "--size=32", f"--output={out}"]
    assert cli.invoke(script.main, script.define_flags, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'keras_efficient3d[litert]', or --noverify" in err
    assert not out.exists()


def test_export_script_says_once_written_that_a_registry_models_weights_are_random(
        monkeypatch, tmp_path, capsys):
    """--model without --weights (the README's first export commands) writes a file of random
    weights: a note says so after the "Wrote" line; a file's own weights get none."""
    from keras_efficient3d import cli

    script = load_script("export_tflite")
    monkeypatch.setattr(script, "export", lambda *a, **k: {"bytes": 10, "max_rel_error": None,
                                                           "sidecar": "m.tflite.json"})
    out = tmp_path / "m.tflite"
    for given, note in ((["--model=mobilenetv2_0.2x"], True), ([f"--model_file={SHIPPED}"], False),
                        (["--model=mobilenetv2_0.2x", f"--weights={SHIPPED}"], False)):
        assert cli.invoke(script.main, script.define_flags,
                          ["export_tflite.py", *given, f"--output={out}", "--noverify"]) == 0
        captured = capsys.readouterr()
        assert captured.out.startswith(f"Wrote {out}")
        said = ("note: --model=mobilenetv2_0.2x without --weights: random weights (a file to "
                "time or to check the export with; its classes mean nothing)\n")
        assert captured.err == (said if note else ""), given
    # int8: the Wrote line gives the agreement check's figure, a warning below the target
    for agreement, warned in ((1.0, False), (0.5, True)):
        monkeypatch.setattr(script, "export", lambda *a, agreement=agreement, **k: {
            "bytes": 10, "max_rel_error": None, "sidecar": "m.tflite.json",
            "top1_agreement": agreement, "clips": 16})
        assert cli.invoke(script.main, script.define_flags,
                          ["export_tflite.py", f"--model_file={SHIPPED}", f"--output={out}",
                           "--precision=int8", f"--data_root={tmp_path}"]) == 0
        captured = capsys.readouterr()
        assert (f"top-1 agreement with the float model {100 * agreement:.1f}% on 16 validation "
                "clips") in captured.out
        assert ("warning: int8 top-1 agreement with the float model 50.0% on 16 clips, below 99%"
                in captured.err) == warned, captured.err
    # measured on training clips (a dataset without a validation split): the line says so
    monkeypatch.setattr(script, "export", lambda *a, **k: {
        "bytes": 10, "max_rel_error": None, "sidecar": "m.tflite.json", "top1_agreement": 1.0,
        "clips": 24, "agreement_on": "training"})
    assert cli.invoke(script.main, script.define_flags,
                      ["export_tflite.py", f"--model_file={SHIPPED}", f"--output={out}",
                       "--precision=int8", f"--data_root={tmp_path}"]) == 0
    assert "top-1 agreement with the float model 100.0% on 24 training clips" in \
        capsys.readouterr().out
    # random weights: one note, which says the figure means nothing, and no warning
    assert cli.invoke(script.main, script.define_flags,
                      ["export_tflite.py", "--model=mobilenetv2_0.2x", f"--output={out}",
                       "--precision=int8", f"--data_root={tmp_path}"]) == 0
    assert capsys.readouterr().err == (
        "note: --model=mobilenetv2_0.2x without --weights: random weights (a file to time or to "
        "check the export with; its classes mean nothing, nor does its int8 top-1 agreement)\n")


def test_int8_of_a_batch_above_one_calibrates_on_samples_of_its_batch(caplog, capfd):
    """The representative samples were single clips, fed to a graph of a fixed batch of 2:
    "reshape.cc: num_input_elements != num_output_elements". Five clips make three samples
    of two (the last filled again), and fewer clips than asked for is said: on the screen,
    not into the /dev/null that holds the converter's notices while it draws the clips."""
    import logging

    class ToFd2(logging.Handler):  # as a terminal's handler writes: to file descriptor 2
        def emit(self, record):
            os.write(2, (record.getMessage() + "\n").encode())

    shape = (8, 32, 32, 3)
    model = randomize_batchnorm(create_model("mobilenetv2_0.2x", input_shape=shape, num_classes=3))
    data = clips(shape, 5)
    samples = [s[0] for s in tflite.representative_dataset(data, 64, shape, batch=2)()]
    assert [len(s) for s in samples] == [2, 2, 2]
    np.testing.assert_array_equal(samples[2], data[[4, 4]])
    screen = ToFd2()
    logging.getLogger().addHandler(screen)
    capfd.readouterr()
    try:
        with caplog.at_level(logging.WARNING):
            blob = tflite.convert(model, "int8", representative_data=data, num_calibration=64,
                                  batch=2)
    finally:
        logging.getLogger().removeHandler(screen)
    assert "int8 calibration on 5 clips: the data has fewer than the 64" in caplog.text
    assert "int8 calibration on 5 clips: the data has fewer than the 64" in capfd.readouterr().err
    runner = tflite.TFLiteRunner(blob, num_threads=2)
    x = clips(shape, 2, seed=3)
    assert np.asarray(runner(x)).shape == (2, 3)


def test_int8_sidecar_records_the_calibrations_normalization(monkeypatch, tmp_path):
    """The clips an int8 file was calibrated on are the ones it is made for: its sidecar says
    how they were normalised and sampled, for predict to feed it the same (a model that
    records none would otherwise be fed 'original' clips, whatever it was calibrated on)."""
    from keras_efficient3d import data as kdata
    from keras_efficient3d.data.normalization import Normalization

    monkeypatch.setattr(kdata, "index_dataset", lambda root, split: ([], None))
    monkeypatch.setattr(kdata, "agreement_records", lambda root: ([], None))
    monkeypatch.setattr(kdata, "make_dataset", lambda records, mode, **kwargs: clips((8, 32, 32, 3), 4))
    out = str(tmp_path / "m.tflite")
    load_script("export_tflite").export("mobilenetv2_0.2x", None, 3, 8, 32, "int8", out,
                                        data_root=str(tmp_path), num_calibration=4,
                                        normalization="unit", downsample=2)
    recorded = read_metadata(out)
    assert recorded.normalization == Normalization.preset("unit") and recorded.downsample == 2


# One mean for every channel (128 of 255), a std each: the frames input is exact.
FRAMES_NORM = Normalization(mean=(128 / 255,) * 3, std=(0.2, 0.25, 0.3), value_range="0-1")


def test_int8_file_of_frames_takes_frames_minus_128(mobilenetv2_trunk):
    """convert(frames=...): the input, named frames, is int8 quantized with the
    normalisation's scalar scale and zero point (frames - 128 is then the input as it is:
    no conversion op in the model); the runner takes the uint8 frames and refuses float clips;
    the outputs follow the int8 file of normalised clips."""
    model, data = mobilenetv2_trunk
    pixels = FRAMES_NORM.frames(data)
    normalised = FRAMES_NORM.apply(pixels.astype(np.float32))
    blob = tflite.convert(model, "int8", normalised, frames=FRAMES_NORM)
    runner = tflite.TFLiteRunner(blob, num_threads=2)
    assert runner.delegated() and runner.input_spec.uint8_frames and runner.input_spec.dtype == "uint8"
    scale, zero_point = runner.input["quantization"]
    assert runner.input["dtype"] == np.int8 and "frames" in runner.input["name"]
    assert zero_point == 0 and scale == pytest.approx(np.mean(1 / (255 * np.array(FRAMES_NORM.std))), rel=1e-4)
    assert [name for name, ins, _ in tflite.op_summary(blob) if "float32" in ins] == []  # nothing converts
    plain = tflite.TFLiteRunner(tflite.convert(model, "int8", normalised), num_threads=2)
    expected, got = plain(normalised), runner(pixels)
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.98
    with pytest.raises(ValueError, match=r"takes uint8 RGB frames \(0-255\)"):
        runner(normalised)
    for kwargs in ({"precision": "fp32"}, {"precision": "int8", "int8_io": True}):
        with pytest.raises(ValueError, match="`frames` is for full int8 with a float output"):
            tflite.convert(model, representative_data=normalised, frames=FRAMES_NORM, **kwargs)


@pytest.mark.slow
def test_export_script_writes_an_int8_file_of_frames_that_predict_feeds_frames(shipped, monkeypatch, tmp_path, capsys):
    """export_tflite.py --frames_input on the shipped model: the sidecar says the file
    normalises its frames; it agrees with the model on its validation clips as int8 of clips
    does; predict runs it on a rendered gesture video with the .keras model's class."""
    from keras_efficient3d import cli
    from keras_efficient3d import data as kdata
    from keras_efficient3d.data import synthetic
    from keras_efficient3d.predict import command

    model, calibration, validation = shipped
    monkeypatch.setattr(kdata, "index_dataset", lambda root, split: ([], None))
    monkeypatch.setattr(kdata, "agreement_records", lambda root: ([], None))
    monkeypatch.setattr(kdata, "make_dataset", lambda records, mode, **kwargs: calibration)
    out = str(tmp_path / "frames.tflite")
    script = load_script("export_tflite")
    report = script.export(None, None, None, None, None, "int8", out, data_root=str(tmp_path),
                           num_calibration=len(calibration), model_file=SHIPPED, frames_input=True)
    # the agreement check, as export.py's OpenVINO int8 reports it (here on the stand-in
    # pipeline's clips, the uint8 frames fed to the file)
    assert report["clips"] == len(calibration) and report["top1_agreement"] >= 0.9, report
    recorded = read_metadata(out)
    assert recorded.preprocessing_included and recorded.normalization == read_metadata(SHIPPED).normalization
    # what an app needs of the tensors: the frames minus 128 in an int8 tensor (it said
    # "uint8 0-255", and camera bytes copied in as they are fed 128 and above as negative)
    assert recorded.dtype == ("uint8 0-255, RGB; fed to the int8 tensor minus 128 (each byte's "
                              "top bit flipped)")
    written = json.loads(open(out + ".json").read())
    details = tflite.tflite_interpreter(out).get_input_details()[0]
    assert written["input"]["tensor"] == {
        "name": details["name"], "dtype": "int8", "shape": [1, 16, 64, 64, 3],
        "scale": float(details["quantization"][0]), "zero_point": -128}
    assert written["output_tensor"]["dtype"] == "float32"
    runner = tflite.TFLiteRunner(out, num_threads=2)
    agreement = np.mean(np.argmax(runner(recorded.normalization.frames(validation)), -1)
                        == np.argmax(model(validation, training=False), -1))
    assert agreement >= AGREEMENT, agreement
    checked = tflite.int8_agreement(out, model, validation, frames=recorded.normalization)
    assert checked["clips"] == len(validation) and checked["top1_agreement"] >= AGREEMENT, checked
    ph = load_script("predict_helpers", os.path.join("tests", "predict"))
    label = 1
    video = ph.write_video(str(tmp_path / "gesture.mp4"),
                           synthetic.render_video(label, np.random.default_rng(7), 32, 64))
    tops = []
    for name in (SHIPPED, out):
        assert cli.invoke(command.main, command.define_flags,
                          ["predict", video, f"--model_file={name}", "--format=json", "--threads=1"],
                          positional=True) == 0
        tops.append(json.loads(capsys.readouterr().out.splitlines()[-1])["top"][0]["index"])
    assert tops == [label, label]


@pytest.mark.parametrize("args", [["--precision=fp32"], ["--precision=int8", "--int8_io"]])
def test_export_script_refuses_frames_input_but_for_int8_with_a_float_output(tmp_path, capsys, args):
    from keras_efficient3d import cli

    script = load_script("export_tflite")
    code = cli.invoke(script.main, script.define_flags,
                      ["export_tflite.py", "--model=mobilenetv2_0.2x", "--frames_input",
                       *([f"--data_root={tmp_path}"] if "--precision=int8" in args else []),
                       f"--output={tmp_path}/m.tflite", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--frames_input goes with --precision=int8 (and a float output: no --int8_io)" in err[0]


@pytest.mark.parametrize("args, message", [
    (["--precision=fp32"], "--qat_epochs needs --precision=int8"),
    (["--precision=int8", "--frames_input"], "--frames_input and --pack_channels are for "
                                             "post-training quantization"),
    (["--precision=int8", "--pack_channels=8"], "--frames_input and --pack_channels are for "
                                                "post-training quantization")])
def test_export_script_refuses_what_qat_does_not_make(tmp_path, capsys, args, message):
    from keras_efficient3d import cli

    script = load_script("export_tflite")
    code = cli.invoke(script.main, script.define_flags,
                      ["export_tflite.py", "--model=mobilenetv2_0.2x", "--qat_epochs=2",
                       *([f"--data_root={tmp_path}"] if "--precision=int8" in args else []),
                       f"--output={tmp_path}/m.tflite", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_benchmark_times_int8_of_frames():
    from keras_efficient3d.deploy.benchmark import benchmark_models

    rows = benchmark_models(["mobilenetv2_0.2x"], ("int8", "int8-frames"), threads=(1,), input_shape=SMALL,
                            num_classes=4, warmup=1, runs=2, log=None)
    assert [row["precision"] for row in rows] == ["int8", "int8-frames"]
    assert all(row["median_ms"] > 0 for row in rows)
    assert abs(rows[1]["size_bytes"] - rows[0]["size_bytes"]) < 0.01 * rows[0]["size_bytes"]  # the same weights


def test_a_model_that_normalises_its_frames_is_refused_with_the_route_that_works():
    from keras_efficient3d.preprocessing import with_preprocessing

    net = create_model("mobilenetv2_0.2x", input_shape=(8, 32, 32, 3), num_classes=4)
    model = with_preprocessing(net, Normalization.preset("kinetics"))
    with pytest.raises(ValueError, match=r"normalises its frames itself .*converted with "
                                         r"--with_preprocessing.*--frames_input") as err:
        DeploymentGraph(model)
    assert "\n" not in str(err.value)


def test_benchmark_script_times_a_tflite_file(tiny_files, tmp_path, capsys):
    """benchmark_tflite.py --model_file: an exported file timed at each thread count, as
    benchmark_openvino.py and benchmark_onnx.py time theirs (it timed registry models
    only, while benchmark_onnx.py sent a .tflite file to it)."""
    from keras_efficient3d import cli

    script = load_script("benchmark_tflite")
    out = tmp_path / "t.json"
    argv = ["benchmark_tflite.py", f"--model_file={tiny_files['int8']}", "--threads=1,2",
            "--runs=3", "--warmup=1"]
    assert cli.invoke(script.main, script.define_flags, argv + [f"--json_out={out}"]) == 0
    rows = json.loads(out.read_text())
    assert [(r["model"], r["threads"]) for r in rows] == [("tiny_int8.tflite", 1),
                                                          ("tiny_int8.tflite", 2)]
    assert all(r["median_ms"] > 0 and r["size_bytes"] == os.path.getsize(tiny_files["int8"])
               for r in rows)
    table = capsys.readouterr().out
    line = next(row for row in table.splitlines() if row.startswith("| tiny_int8.tflite"))
    assert f" {rows[0]['median_ms']:.2f} |" in line and "| int8 (int8 clips) |" in line
    # what each kind of file computes in, read from its ops (as benchmark_openvino.py's say)
    assert [tflite.file_precision(tiny_files[k]) for k in ("tflite", "int8")] == ["fp32", "int8"]
    fp16 = tflite.convert(create_model("mobilenetv2_0.2x", input_shape=(4, 32, 32, 3),
                                       num_classes=3), "fp16")
    assert tflite.file_precision(fp16) == "fp16"
    (tmp_path / "m.xml").write_text("<net/>")
    for extra, says in ((["--models=mobilenetv2_0.2x"], "--models is not used with --model_file"),
                        ([f"--model_file={tmp_path / 'm.xml'}"], "a .tflite file is needed")):
        assert cli.invoke(script.main, script.define_flags, argv + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err


def _undecodable_gestures(folder):
    """A Jester-layout set (one video a class) whose every JPEG is empty."""
    from keras_efficient3d.data import synthetic

    root = synthetic.generate(str(folder), layout="jester", videos_per_class=1, seed=1,
                              frames=16, size=40)
    for top, _, files in os.walk(root):
        for name in files:
            if name.endswith(".jpg"):
                open(os.path.join(top, name), "wb").close()
    return root


def test_an_int8_calibration_whose_videos_all_fail_names_them_and_the_data_root(tmp_path):
    """The real program: the pipeline's warnings, one per video that fails to decode, went to
    /dev/null with the converter's notices, and the error said only "The representative
    data yielded no clip."."""
    import subprocess
    import sys

    from deploy_helpers import ROOT

    root = _undecodable_gestures(tmp_path / "gestures")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "deployment", "export_tflite.py"),
         "--model=mobilenetv2_0.2x", "--frames=8", "--size=32", "--num_classes=8",
         "--precision=int8", f"--data_root={root}", f"--output={tmp_path / 'm.tflite'}"],
        capture_output=True, text=True, cwd=ROOT, timeout=600, check=False,
        env=dict(os.environ, PYTHONPATH=ROOT))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[-1] == (f"export_tflite.py: error: {root}: no clip for the int8 calibration: "
                         "none of the videos it was drawn from could be decoded (the warnings "
                         "above name each)"), lines
    skipped = [line for line in lines if "skipping" in line and "cannot" in line]
    assert len(skipped) == 8, proc.stderr  # the train split's eight videos, each named
    assert not os.path.exists(tmp_path / "m.tflite")


def test_export_script_makes_an_int8_file_by_quantization_aware_training(tmp_path):
    """export_tflite.py --qat_epochs: the command line's QAT (the Python API's and the
    demo's alone before), on the data's training split, whose classes are matched to the
    model's by name (the model records them in another order here)."""
    from keras_efficient3d import create_model
    from keras_efficient3d.artifacts import ModelMetadata, save_model
    from keras_efficient3d.data import synthetic

    root = synthetic.generate(str(tmp_path / "gestures"), layout="jester", videos_per_class=3,
                              seed=1, frames=12, size=40)
    names = list(reversed(synthetic.CLASSES))
    model = create_model("mobilenetv2_0.2x", input_shape=(8, 32, 32, 3), num_classes=len(names))
    path = save_model(model, str(tmp_path / "m.keras"),
                      ModelMetadata(frames=8, size=32, normalization="unit", labels=names))
    lines, out = [], str(tmp_path / "qat.tflite")
    report = load_script("export_tflite").export(
        None, None, None, None, None, "int8", out, data_root=root, num_calibration=8,
        model_file=path, qat_epochs=1, log=lines.append)
    qat = report["qat"]
    assert qat["epochs"] == 1 and qat["kept_epoch"] in (0, 1)
    assert len(qat["validation_accuracy_by_epoch"]) == 2
    assert [line for line in lines if line.startswith("QAT:")] == [
        f"QAT: kept epoch {qat['kept_epoch']} of 1; validation accuracy by epoch (0: calibrated, "
        "before the first): " + ", ".join(f"{100 * a:.2f}%" for a in qat["validation_accuracy_by_epoch"])]
    assert tflite.file_precision(out) == "int8"
    assert read_metadata(out).labels == names and 0 <= report["top1_agreement"] <= 1


@pytest.mark.parametrize("kwargs", [{"precision": "fp32"}, {"precision": "int8", "frames_input": True},
                                    {"precision": "int8", "pack_channels": 8}])
def test_export_refuses_what_qat_does_not_make_from_python_too(tmp_path, kwargs):
    """The flags' checks, for a Python caller: fp32 ended in an UnboundLocalError, and a
    file of normalised clips got the sidecar of a file of frames."""
    kwargs = dict(kwargs)
    precision = kwargs.pop("precision")
    with pytest.raises(ValueError, match=r"^`qat_epochs` makes an int8 file of normalised clips"):
        load_script("export_tflite").export("mobilenetv2_0.2x", None, 4, 4, 32, precision,
                                            str(tmp_path / "m.tflite"), data_root=str(tmp_path),
                                            qat_epochs=1, verify=False, **kwargs)


def test_qat_trains_the_models_classes_by_name(tmp_path):
    """The data's labels index its own class list; QAT trains the model's outputs: each
    record's label is moved to the model's output of its class name, and a class the model
    has not is refused."""
    import dataclasses

    from keras_efficient3d.data.records import VideoRecord

    script = load_script("export_tflite")
    records = [VideoRecord(f"v{i}", i % 3, f"v{i}", "frames", 16) for i in range(6)]
    moved = script._in_the_models_classes(records, ["a", "b", "c"], ["c", "a", "b"], 3, "d",
                                          print)
    assert [r.label for r in moved] == [1, 2, 0, 1, 2, 0]
    assert [dataclasses.replace(r, label=0) for r in moved][0].path == "v0"
    with pytest.raises(ValueError, match=r"^--qat_epochs: d's class 'c' is none of the 2 classes"):
        script._in_the_models_classes(records, ["a", "b", "c"], ["a", "b"], 2, "d", print)
    notes = []
    same = script._in_the_models_classes(records, ["a", "b", "c"], None, 3, "d", notes.append)
    assert [r.label for r in same] == [0, 1, 2, 0, 1, 2] and "records no class names" in notes[0]
