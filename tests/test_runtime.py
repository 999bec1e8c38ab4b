"""`keras_efficient3d.runtime`: the three runners agree with the Keras model, int8 tensors,
models it refuses, the timing loop."""

import os
import re
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from helpers import (
    TINY_CLASSES,
    TINY_FRAMES,
    TINY_SIZE,
    moving_square,
    randomize_batchnorm,
    tiny_metadata,
    tiny_normalization,
)
from keras_efficient3d import registry
from keras_efficient3d.artifacts import ModelFileError, save_model
from keras_efficient3d.data.spatial import val_transform
from keras_efficient3d.runtime import (
    KerasRunner,
    TFLiteRunner,
    benchmark,
    check_threads,
    choose_providers,
    dequantize,
    is_depthwise_model,
    load_runner,
    measure,
    onnx_session,
    quantize,
    tf_thread_plan,
)

FRAMES, SIZE, CLASSES = TINY_FRAMES, TINY_SIZE, TINY_CLASSES
NORM = tiny_normalization()
METADATA = tiny_metadata()
SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "saved_models",
                       "synthetic_gestures.keras")


def test_quantization_helpers():
    x = np.array([-1.0, 0.0, 0.26, 100.0], np.float32)
    q = quantize(x, 0.5, -3, "int8")
    assert q.dtype == np.int8 and q.tolist() == [-5, -3, -2, 127]
    np.testing.assert_allclose(dequantize(q, 0.5, -3), [-1.0, 0.0, 0.5, 65.0])
    assert quantize([-5.0], 1.0, 0, "uint8").tolist() == [0]


def test_runners_agree(tiny_files, tiny):
    rng = np.random.default_rng(0)
    clips = rng.normal(size=(3, FRAMES, SIZE, SIZE, 3)).astype(np.float32)
    expected = tiny(clips, training=False).numpy()
    runners = {key: load_runner(tiny_files[key], threads=2)
               for key in ("keras", "tflite", "int8", "onnx")}
    for key, runner in runners.items():
        assert runner.input_spec.frames == FRAMES and runner.input_spec.height == SIZE, key
        assert runner.num_classes == CLASSES, key
    assert runners["tflite"].input_spec.batch == 1  # static batch: run clip by clip
    int8 = runners["int8"].input_spec
    assert int8.dtype == "int8" and int8.quantization is not None and int8.quantization[0] > 0
    for key in ("keras", "tflite", "onnx"):
        np.testing.assert_allclose(runners[key](clips), expected, rtol=1e-4, atol=1e-4, err_msg=key)
    # Full int8, on clips like those it was calibrated on: the same function up to a few
    # quantisation steps (a wrong zero point or scale is off by ten times more).
    real = np.stack([NORM.apply(val_transform(moving_square(FRAMES, seed=s), SIZE).astype(np.float32))
                     for s in (10, 11, 12)])
    expected = tiny(real, training=False).numpy()
    got = runners["int8"](real)
    assert got.dtype == np.float32 and got.shape == expected.shape
    output_scale = runners["int8"].output_quantization[0]
    tolerance = 3 * output_scale + 0.02 * float(np.ptp(expected))
    assert np.max(np.abs(got - expected)) < tolerance, (got, expected)


def test_keras_runner_runs_the_batchnorm_folded_form(tmp_path, capfd):
    from keras_efficient3d import create_model

    model = create_model("mobilenetv2_0.2x", input_shape=(FRAMES, SIZE, SIZE, 3),
                         num_classes=CLASSES)
    randomize_batchnorm(model, seed=4, spread=0.2)
    rng = np.random.default_rng(4)
    path = str(tmp_path / "bn.keras")
    save_model(model, path, METADATA)
    runner = load_runner(path, threads=2)
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in runner.model.layers)
    clips = rng.normal(size=(2, FRAMES, SIZE, SIZE, 3)).astype(np.float32)
    expected = model(clips, training=False).numpy()
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(runner(clips), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # one function for every batch size
    np.testing.assert_allclose(runner(clips[1:]), expected[1:], rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())
    # Grappler's errors about the folded ReLU6 depthwise layers stay off the screen
    err = capfd.readouterr().err
    assert "tfg_optimizer" not in err and "E0000" not in err, err


def test_load_runner_rejects_bad_tiny_files(tmp_path, tiny_files):
    with pytest.raises(ModelFileError, match="model file not found"):
        load_runner(str(tmp_path / "missing.tflite"))
    with pytest.raises(ModelFileError, match="unsupported model format '.h5'"):
        load_runner(str(tmp_path / "model.h5"))
    (tmp_path / "junk.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="cannot load the TFLite model"):
        load_runner(str(tmp_path / "junk.tflite"))
    (tmp_path / "junk.onnx").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="cannot load the ONNX model"):
        load_runner(str(tmp_path / "junk.onnx"))
    # Keras' own message for X.KERAS spoke of legacy formats
    (tmp_path / "M.KERAS").write_bytes(b"PK")
    with pytest.raises(ModelFileError, match="M.KERAS: Keras reads the .keras extension in lower "
                                             "case only; rename the file"):
        load_runner(str(tmp_path / "M.KERAS"))


def test_a_nan_output_fails_the_export_check():
    from keras_efficient3d.runtime import check_close

    expected = np.array([[0.5, 1.0]])
    assert check_close(expected + 1e-6, expected) < 1e-4
    for bad in (np.nan, np.inf):
        with pytest.raises(AssertionError, match="differs from the Keras model"):
            check_close(np.array([[bad, 1.0]]), expected)


def _uint8_onnx(path):
    """An ONNX model of a uint8 clip input (frames the model normalises): its class scores
    are the clip's channel means / 255."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["frames"], ["x"], to=TensorProto.FLOAT),
         helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0),
         helper.make_node("Div", ["m", "scale"], ["logits"])],
        "frames", [helper.make_tensor_value_info("frames", TensorProto.UINT8, [1, 2, 4, 4, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
         helper.make_tensor("scale", TensorProto.FLOAT, [], [255.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_an_onnx_model_of_uint8_frames_is_fed_frames_and_found_by_path(tmp_path):
    import pathlib

    from keras_efficient3d.artifacts import write_sidecar
    from keras_efficient3d.runtime import ONNXRunner

    (tmp_path / "sub").mkdir()
    path = _uint8_onnx(tmp_path / "sub" / "m.onnx")
    write_sidecar(path, {"labels": ["a", "b", "c"]})
    runner = ONNXRunner(pathlib.Path(path), threads=1)
    # The path as given, for its sidecar: not the bare file name looked up elsewhere.
    assert runner.path == str(path)
    assert runner.input_spec.uint8_frames and runner.input_spec.dtype == "uint8"
    frames = np.zeros((1, 2, 4, 4, 3), np.uint8)
    frames[..., 1] = 255
    np.testing.assert_allclose(runner(frames), [[0.0, 1.0, 0.0]], atol=1e-6)


def test_measure_reports_median_spread_and_rate():
    calls = []
    result = measure(lambda: calls.append(time.sleep(0.002)), warmup=2, runs=5, batch=4)
    assert len(calls) == 7 and (result["runs"], result["warmup"], result["batch"]) == (5, 2, 4)
    assert 2.0 <= result["min_ms"] <= result["median_ms"] <= result["p90_ms"] <= result["max_ms"]
    assert result["spread_ms"] >= 0
    assert result["clips_per_s"] == pytest.approx(4000.0 / result["median_ms"])
    with pytest.raises(ValueError, match="Received: warmup=-1"):
        measure(lambda: None, warmup=-1)
    with pytest.raises(ValueError, match="runs=0"):
        measure(lambda: None, runs=0)
    # numpy's integers (a count from an array) are counts too, and plain ints in the results
    result = measure(lambda: None, warmup=np.int64(1), runs=np.int64(3))
    assert (result["runs"], result["warmup"]) == (3, 1) and type(result["runs"]) is int


def test_benchmark_times_every_runner(tiny_files):
    for key in ("keras", "tflite", "int8", "onnx"):
        runner = load_runner(tiny_files[key], threads=1)
        result = benchmark(runner, warmup=1, runs=2)
        assert result["median_ms"] > 0 and result["backend"] == runner.backend, key
        assert result["threads"] == 1 and result["batch"] == (runner.input_spec.batch or 1), key


def test_one_tflite_runner_for_bytes_and_files(tiny_files):
    from keras_efficient3d.deploy import tflite

    assert tflite.TFLiteRunner is TFLiteRunner
    with open(tiny_files["int8"], "rb") as handle:
        from_bytes = TFLiteRunner(handle.read(), num_threads=1, strict=False)
    from_file = load_runner(tiny_files["int8"], threads=1)
    assert type(from_file) is TFLiteRunner and from_bytes.input_spec == from_file.input_spec
    clips = np.random.default_rng(3).normal(size=(3, FRAMES, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_array_equal(from_bytes(clips), from_file(clips))
    assert from_file.partitions() >= 0 and from_bytes.input_shape == (1, FRAMES, SIZE, SIZE, 3)


def test_onnx_session_threads_and_providers(tiny_files):
    session = onnx_session(tiny_files["onnx"], threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    # one provider by name, not a list of its characters
    assert choose_providers(["CPUExecutionProvider"], "CPUExecutionProvider") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="Providers not in this onnxruntime build: "
                                         "NoSuchExecutionProvider. Available"):
        choose_providers(["CPUExecutionProvider"], "NoSuchExecutionProvider")
    with pytest.raises(ValueError, match="Providers not in this onnxruntime build"):
        onnx_session(tiny_files["onnx"], providers=["NoSuchExecutionProvider"])
    # spinning workers off (benchmarks timing several runtimes in turns), on by default
    key = "session.intra_op.allow_spinning"
    quiet = onnx_session(tiny_files["onnx"], threads=2, spinning=False)
    assert quiet.get_session_options().get_session_config_entry(key) == "0"
    with pytest.raises(RuntimeError, match="does not have configuration"):
        session.get_session_options().get_session_config_entry(key)


def test_tf_thread_plan_gives_depthwise_models_two_ops_at_a_time():
    assert tf_thread_plan(2, depthwise=True) == (1, 2)
    assert tf_thread_plan(4, depthwise=True) == (2, 2)
    assert tf_thread_plan(2) == (2, 1)
    assert tf_thread_plan(1, depthwise=True) == (1, 1)
    assert tf_thread_plan(None, depthwise=True) is None and tf_thread_plan(0) is None


@pytest.mark.parametrize("threads", [-1, 0.5, 1.5, "2", True])
def test_tf_thread_plan_refuses_what_load_runner_refuses(threads):
    """One rule for both: `tf_thread_plan` took 0.5 as a plan of 0 threads, 1.5 as 1 and "2"
    as 2."""
    message = ("`threads` must be None, 0 (the runtime's default) or a positive integer. "
               f"Received: threads={threads!r}")
    with pytest.raises(ValueError, match=re.escape(message)):
        tf_thread_plan(threads)
    with pytest.raises(ValueError, match=re.escape(message)):
        check_threads(threads)


@pytest.mark.parametrize("family", registry.families(), ids=lambda f: f.name)
def test_families_say_whether_they_are_depthwise(family):
    """`Family.depthwise` (what the thread plan reads for a registry name) matches the
    layers the family's models have."""
    name = next(iter(family.registry_names()))
    model = registry.create_model(name, num_classes=3, input_shape=family.small_input)
    assert is_depthwise_model(model) == family.depthwise
    assert is_depthwise_model(name) == family.depthwise


@pytest.mark.parametrize("name,expected", [
    ("mobilenet", True), ("shufflenet", True), ("shufflenet_1.0x_g3", True),
    ("mobilenetv2_0.2x", True), ("resnet18_A", False), ("resnext", False), ("c3d", False),
    ("squeezenet_1.1", False), ("no_such_model", False)])
def test_is_depthwise_model_knows_the_names_training_passes(name, expected):
    assert is_depthwise_model(name) is expected


def test_is_depthwise_model_reads_keras_archives(tmp_path, tiny):
    dense = str(tmp_path / "dense.keras")
    tiny.save(dense)
    assert not is_depthwise_model(dense)
    assert is_depthwise_model(SHIPPED)
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    assert not is_depthwise_model(str(broken))


@pytest.mark.parametrize("depthwise", [True, False], ids=["depthwise", "dense"])
def test_load_runner_sets_tensorflows_threads_by_the_plan(tmp_path, tiny, depthwise):
    """In a fresh process (TensorFlow's threads are fixed once it runs an op): a depthwise
    `.keras` model at 2 threads runs one thread per op, two ops at a time; a dense one both
    threads on one op at a time."""
    path = SHIPPED
    if not depthwise:
        path = str(tmp_path / "dense.keras")
        tiny.save(path)
    probe = ("import tensorflow as tf; from keras_efficient3d.runtime import load_runner; "
             f"load_runner({path!r}, threads=2); "
             "print(tf.config.threading.get_intra_op_parallelism_threads(), "
             "tf.config.threading.get_inter_op_parallelism_threads())")
    assert _probe(probe, "tensorflow")[-2:] == (["1", "2"] if depthwise else ["2", "1"])


def _probe(code, backend):
    """The words `code` prints in a fresh process on the Keras `backend`."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_runners_check_their_input(tiny_files):
    """Every runner refuses, with one message of its own, what the runtimes would take or fail
    on each in their own way: uint8 frames (read as if normalised), wrong shapes, an empty
    batch, NaN (which an int8 model turns into confident scores)."""
    good = np.random.default_rng(0).normal(size=(2, FRAMES, SIZE, SIZE, 3)).astype(np.float32)
    expected = f"(N, {FRAMES}, {SIZE}, {SIZE}, 3)"
    for key in ("tflite", "int8", "onnx"):
        runner = load_runner(tiny_files[key], threads=1)
        assert runner(good).shape == (2, CLASSES) and runner(good[0]).shape == (1, CLASSES), key
        assert runner(good.astype(np.float64)).dtype == np.float32, key
        np.testing.assert_array_equal(runner.outputs_unchecked(good), runner(good))
        with pytest.raises(ValueError, match=r"takes normalised float clips; received uint8 .*make_clip"):
            runner(np.zeros((1, FRAMES, SIZE, SIZE, 3), np.uint8))
        with pytest.raises(ValueError, match=re.escape(f"clips of shape {expected}; received shape "
                                                       f"(1, 3, {FRAMES}, {SIZE}, {SIZE}) (channels first?")):
            runner(good[:1].transpose(0, 4, 1, 2, 3))
        for shape in [(1, FRAMES + 1, SIZE, SIZE, 3), (1, FRAMES, SIZE, 16, 3), (1, FRAMES, SIZE, SIZE, 1),
                      (1, 1, FRAMES, SIZE, SIZE, 3), (SIZE, SIZE, 3)]:
            with pytest.raises(ValueError, match=re.escape(f"clips of shape {expected}; received shape {shape}.")):
                runner(np.zeros(shape, np.float32))
        with pytest.raises(ValueError, match="empty batch"):
            runner(good[:0])
        for bad in (np.nan, np.inf, -np.inf):
            clips = good.copy()
            clips[1, 3, 4, 5, 1] = bad
            with pytest.raises(ValueError, match="NaN or infinite"):
                runner(clips)


def test_predict_skips_the_check_of_a_callers_clips(tiny_files, monkeypatch):
    """predict's clips, made from uint8 frames, are good by construction: the runner's pass over
    the values (~1% of a small model's time) stays out of the time it reports."""
    from keras_efficient3d import predict

    runner = load_runner(tiny_files["tflite"], threads=1)
    monkeypatch.setattr(runner, "check_clips", lambda clips: pytest.fail("checked predict's clip"))
    frames = np.zeros((FRAMES, SIZE, SIZE, 3), np.uint8)
    assert len(list(predict.iter_stream(frames, runner, stride=FRAMES))) == 1


def test_torch_runner_warms_each_trace_up():
    """On PyTorch, a frozen trace's second run is its profiling executor's optimisation (5x a
    steady run's CPU time for the shipped model): the first call of a clip shape traces and runs
    it three times, as the other runners warm up, so that predict's warm-up call leaves the
    clips it times at the steady speed."""
    probe = ("import numpy as np; from keras_efficient3d import runtime as rt\n"
             "runs = []\n"
             "trace = rt.torch_trace\n"
             "def counted(net, example):\n"
             "    traced = trace(net, example)\n"
             "    return lambda x: (runs.append(1), traced(x))[1]\n"
             "rt.torch_trace = counted\n"
             f"runner = rt.load_runner({SHIPPED!r}, threads=1)\n"
             "clip = np.zeros((1,) + runner.input_spec.shape[1:], np.float32)\n"
             "first = runner(clip); counts = [len(runs)]; second = runner(clip); counts.append(len(runs))\n"
             "np.testing.assert_allclose(first, second, atol=1e-5); print(*counts)")
    assert _probe(probe, "torch")[-2:] == ["3", "4"]


@pytest.mark.parametrize("threads", [-1, 1.5, "2", True])
def test_load_runner_refuses_a_bad_thread_count(tiny_files, threads):
    """Each runtime would take a negative or fractional count its own way (LiteRT's -1 is its
    default, ONNX Runtime and OpenVINO fail with their own messages)."""
    for key in ("tflite", "onnx"):
        with pytest.raises(ValueError, match=re.escape(
                f"`threads` must be None, 0 (the runtime's default) or a positive integer. "
                f"Received: threads={threads!r}")):
            load_runner(tiny_files[key], threads=threads)


def test_keras_runner_of_a_model_that_normalises_takes_uint8_frames(tiny):
    """A model with its preprocessing layer (`with_preprocessing`, convert's preprocessing)
    takes the frames themselves, uint8 or 0-255 floats; the runner used to refuse uint8 and
    advise normalising them, which would have normalised them twice."""
    from keras_efficient3d.data.normalization import Normalization
    from keras_efficient3d.preprocessing import with_preprocessing

    model = with_preprocessing(tiny, Normalization.preset("kinetics"))
    frames = np.random.default_rng(5).integers(0, 256, (2, FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    expected = np.asarray(model(frames.astype(np.float32), training=False))
    runner = KerasRunner(model)
    np.testing.assert_allclose(runner(frames), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="normalised float clips; received uint8"):
        KerasRunner(tiny)(frames)  # a model of normalised clips still refuses them


@pytest.mark.parametrize("backend", ["numpy", "openvino"])
def test_keras_runner_names_the_backends_it_runs_on(tiny, monkeypatch, backend):
    # Keras' inference-only backends: a KeyError of the runner's compilers before
    import keras

    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    with pytest.raises(ValueError, match=rf"Keras' {backend} backend does not run the project's "
                                         "models: set KERAS_BACKEND to tensorflow, jax or torch"):
        KerasRunner(tiny)
