"""trt_classify.py, the Jetson's recognition script (Python 3.6, no keras_efficient3d): the
same frames, windows and classes as keras_efficient3d's predict on the same export, through
ONNX Runtime, a SavedModel, and TensorRT's Python API (a stand-in whose engine runs the
ONNX file: this machine has no GPU)."""

import ctypes
import importlib
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from deploy_helpers import calibrate_batchnorm, fake_tensorrt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TX2 = os.path.join(ROOT, "deployment", "tx2")
LABELS = ["Swiping Left", "Swiping Right", "Thumb Up", "Stop"]


@pytest.fixture(scope="module")
def tc():
    sys.path.insert(0, TX2)
    try:
        yield importlib.import_module("trt_classify")
    finally:
        sys.path.remove(TX2)


def _video(path, frames, size=(48, 64), seed=0):
    """An MJPG AVI of moving bars on noise: frames whose classes differ window to window."""
    height, width = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12, (width, height))
    rng = np.random.default_rng(seed)
    for i in range(frames):
        frame = (rng.random((height, width, 3)) * 255).astype(np.uint8)
        frame[:, (3 * i) % width:(3 * i) % width + 6] = (255, 40, 0) if i % 2 else (0, 200, 255)
        writer.write(frame)
    writer.release()
    return str(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A MobileNetV2 0.2x of 4 classes taking 4 of every 2nd frame (8-frame windows), 32x32,
    with the Kinetics (BGR) normalisation: ONNX (with its sidecar) and SavedModel exports."""
    import keras

    from keras_efficient3d import MobileNetV2_3D
    from keras_efficient3d.artifacts import ModelMetadata, write_sidecar
    from keras_efficient3d.deploy.onnx_export import export_onnx
    from keras_efficient3d.deploy.savedmodel import export_saved_model

    folder = tmp_path_factory.mktemp("classify")
    keras.utils.set_random_seed(0)  # the windows' scores checked below to differ
    model = MobileNetV2_3D(width_mult=0.2, num_classes=4, input_shape=(4, 32, 32, 3))
    # activations of a trained model's scale (normalised frames: about +-100), so that the
    # classes' scores differ from window to window
    calibrate_batchnorm(model, np.random.default_rng(2).normal(0, 60, (6, 4, 32, 32, 3)))
    metadata = ModelMetadata(frames=4, size=32, downsample=2, normalization="kinetics",
                             labels=LABELS, output="logits", batch="dynamic")
    onnx_path = str(folder / "m.onnx")
    export_onnx(model, onnx_path, opset=13)
    write_sidecar(onnx_path, metadata)
    saved = export_saved_model(model, str(folder / "sm"), metadata=metadata)
    return {"onnx": onnx_path, "saved_model": saved, "folder": folder,
            "video": _video(folder / "v.avi", 29), "short": _video(folder / "s.avi", 5, seed=2)}


def _script(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, os.path.join(TX2, "trt_classify.py")] + list(args),
                          capture_output=True, text=True, env=env, timeout=300)


def _reference(path, video, stride):
    """keras_efficient3d's predict on the same file and video."""
    from keras_efficient3d.predict.stream import predict_video
    from keras_efficient3d.runtime import load_runner

    return predict_video(load_runner(path), video, stride=stride, top=4)


def _same(json_out, reference, rtol=1e-5):
    """The windows and the result of `json_out` (trt_classify's --json) are predict's; `rtol`
    1e-5 for the same runtime (ONNX Runtime) as predict's, more for another."""
    windows = json_out["windows"]
    assert [(w["start"], w["end"], w["padded"]) for w in windows] == \
        [(w["start"], w["end"], w["padded"]) for w in reference["windows"]]
    for ours, theirs in zip(windows, reference["windows"]):
        assert [t["label"] for t in ours["top"]] == [t["label"] for t in theirs["top"]]
        np.testing.assert_allclose([t["score"] for t in ours["top"]],
                                   [t["score"] for t in theirs["top"]], rtol=rtol, atol=1e-6)
    summary = json_out["summary"]
    assert summary["frames"] == reference["frames"]
    assert [t["label"] for t in summary["top"]] == [t["label"] for t in reference["top"]]
    np.testing.assert_allclose([t["score"] for t in summary["top"]],
                               [t["score"] for t in reference["top"]], rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("video, stride", [("video", 3), ("short", 8)], ids=["windows", "padded"])
def test_onnx_runtime_classifies_as_predict_does(exported, tmp_path, video, stride):
    out = tmp_path / "out.json"
    run = _script("--onnx", exported["onnx"], "--source", exported[video], "--stride", str(stride),
                  "--top", "4", "--json", str(out))
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and "note:" not in run.stderr  # all recorded
    result = json.loads(out.read_text())
    reference = _reference(exported["onnx"], exported[video], stride)
    _same(result, reference)
    # windows of 8 frames (4, one in 2): the 29-frame video's last window ends at its end
    assert result["windows"][-1]["end"] == reference["frames"] - 1
    assert result["summary"]["padded"] == (video == "short")
    assert f"stride {stride}): {result['summary']['top'][0]['label']} " in run.stdout
    # the windows' scores differ: a comparison of a model that says one thing always would
    # prove little
    if video == "video":
        assert len({round(w["top"][0]["score"], 3) for w in result["windows"]}) > 2


def test_a_saved_model_classifies_as_predict_does_from_the_record_inside_it(exported, tmp_path):
    out = tmp_path / "out.json"
    run = _script("--saved-model", exported["saved_model"], "--source", exported["video"],
                  "--stride", "5", "--top", "4", "--json", str(out))
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip() == f"wrote {out}"  # TensorFlow's start-up lines kept off
    # TensorFlow's kernels against ONNX Runtime's (float32 sums in another order)
    _same(json.loads(out.read_text()), _reference(exported["onnx"], exported["video"], 5), 1e-3)


def test_frame_preprocessing_is_predicts(tc):
    """Scale + centre crop and the normalisation, bit for bit, for square and non-square
    inputs, shrinking and enlarging frames, BGR and 0-1 normalisations."""
    from keras_efficient3d.data.normalization import Normalization
    from keras_efficient3d.predict.stream import ClipSpec, prepare_frames, preprocess_frame

    rng = np.random.default_rng(0)
    for (height, width), preset in (((32, 32), "kinetics"), ((24, 40), "unit"),
                                    ((112, 112), "kinetics_mean_std"), ((40, 24), "original")):
        norm = Normalization.preset(preset)
        theirs = ClipSpec(4, height, width, normalization=norm)
        ours = tc.ClipSpec(4, height, width, normalization=tc._normalization(norm.to_config(), "x"))
        for shape in ((48, 64), (64, 48), (32, 32), (100, 30), (240, 320), (17, 90)):
            frame = (rng.random(shape + (3,)) * 255).astype(np.uint8)
            expected = prepare_frames(preprocess_frame(frame, theirs), theirs)
            got = tc.prepare_frame(tc.preprocess_frame(frame, ours, cv2), ours)
            assert got.dtype == np.float32 and got.shape == expected.shape
            np.testing.assert_array_equal(got, expected, err_msg=f"{shape} -> {height}x{width}")


# ---------------------------------------------------------------------------------------
# TensorRT: its Python API, with an engine that runs the ONNX file on what was copied to
# "device memory" (TensorRT 8.2's bindings and >= 8.5's tensors).


class _Memory:
    """libcudart's calls, over host buffers."""

    def __init__(self):
        self.blocks = {}

    def malloc(self, nbytes):
        pointer = ctypes.c_void_p(len(self.blocks) + 1)
        self.blocks[pointer.value] = bytearray(nbytes)
        return pointer

    def free(self, pointer):
        self.blocks.pop(pointer.value)

    def copy_to_device(self, pointer, array):
        self.blocks[pointer.value][:] = np.ascontiguousarray(array).tobytes()

    def copy_to_host(self, array, pointer):
        array[...] = np.frombuffer(bytes(self.blocks[pointer.value]), array.dtype).reshape(array.shape)

    def synchronize(self):
        pass


def _fake_tensorrt(onnx_path, memory, bindings, batch):
    import types

    import onnxruntime as ort

    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    names = ["input", "logits"]
    engine_batch = -1 if batch is None else batch

    class Context:
        def __init__(self):
            self.batch, self.addresses = engine_batch, {}

        def _shape(self, name):
            return (self.batch, 4, 32, 32, 3) if name == "input" else (self.batch, 4)

        def set_binding_shape(self, index, shape):
            self.batch = shape[0]
            return True

        set_input_shape = lambda self, name, shape: self.set_binding_shape(0, shape)  # noqa: E731

        def get_binding_shape(self, index):
            return self._shape(names[index])

        get_tensor_shape = _shape

        def set_tensor_address(self, name, address):
            self.addresses[name] = address

        def _run(self, addresses):
            clip = np.frombuffer(bytes(memory.blocks[addresses["input"]]), np.float32)
            logits = session.run(None, {"input": clip.reshape(self._shape("input"))})[0]
            memory.blocks[addresses["logits"]][:] = logits.astype(np.float32).tobytes()
            return True

        def execute_v2(self, pointers):
            return self._run(dict(zip(names, pointers)))

        def execute_async_v3(self, stream):
            return self._run(self.addresses)

    class Engine:
        def create_execution_context(self):
            return Context()

        def get_binding_shape(self, index):
            return Context._shape(types.SimpleNamespace(batch=engine_batch), names[index])

        get_tensor_shape = lambda self, name: self.get_binding_shape(names.index(name))  # noqa: E731
        get_binding_name = lambda self, i: names[i]  # noqa: E731
        get_tensor_name = get_binding_name
        binding_is_input = lambda self, i: i == 0  # noqa: E731
        get_tensor_mode = lambda self, name: 0 if name == "input" else 1  # noqa: E731
        get_binding_dtype = lambda self, i: "float32"  # noqa: E731
        get_tensor_dtype = lambda self, name: "float32"  # noqa: E731

    engine = Engine()
    if bindings:
        engine.num_bindings = 2
    else:
        engine.num_io_tensors = 2

    return fake_tensorrt(engine, "8.2.1.8" if bindings else "8.6.1", nptype=np.dtype)


@pytest.mark.parametrize("bindings, batch", [(True, None), (False, None), (True, 8)],
                         ids=["trt8.2", "trt8.5+", "fixed-batch-8"])
def test_a_tensorrt_engine_classifies_as_predict_does(tc, exported, monkeypatch, tmp_path,
                                                      bindings, batch):
    """The engine's record is the ONNX file's sidecar, copied by trt_build_engine.py."""
    import shutil

    memory = _Memory()
    monkeypatch.setitem(sys.modules, "tensorrt",
                        _fake_tensorrt(exported["onnx"], memory, bindings, batch))
    monkeypatch.setattr(tc.common, "CudaRuntime", lambda: memory)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"an engine")
    shutil.copy(exported["onnx"] + ".json", str(engine) + ".json")
    out = tmp_path / "out.json"
    assert tc.main(["--engine", str(engine), "--source", exported["video"], "--stride", "4",
                    "--top", "4", "--json", str(out)]) == 0
    _same(json.loads(out.read_text()), _reference(exported["onnx"], exported["video"], 4))
    assert json.loads(out.read_text())["model"].startswith("TensorRT 8.")
    assert len(memory.blocks) == 2  # one input and one output buffer, allocated once


# ---------------------------------------------------------------------------------------
# What a user gets wrong: one line each, exit status 2 (3: a runtime missing).


def _one_line(run, code, text):
    assert run.returncode == code, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], run.stderr


def test_mistakes_are_one_line(exported, tmp_path):
    onnx, video = exported["onnx"], exported["video"]
    _one_line(_script("--onnx", onnx, "--source", str(tmp_path / "no.avi")), 2,
              f"--source {tmp_path / 'no.avi'}: no such file or folder")
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video" * 100)
    _one_line(_script("--onnx", onnx, "--source", str(junk)), 2, "cannot open it as a video")
    _one_line(_script("--onnx", str(tmp_path / "no.onnx"), "--source", video), 2,
              "is not a file")
    _one_line(_script("--engine", str(tmp_path / "no.engine"), "--source", video), 2,
              "build it with trt_build_engine.py")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"an engine")
    _one_line(_script("--engine", str(engine), "--source", video), 3,
              "TensorRT's Python API (tensorrt) is not installed")
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    _one_line(_script("--onnx", onnx, "--source", video, "--labels", str(labels)), 2,
              "--labels names 3 classes, but the model outputs 4")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"input": {"frames": 16, "size": 112}}))
    _one_line(_script("--onnx", onnx, "--source", video, "--metadata", str(other)), 2,
              f"{other} records 16 frames per clip, but the model's input takes 4")
    other.write_text("{not json")
    _one_line(_script("--onnx", onnx, "--source", video, "--metadata", str(other)), 2,
              f"{other}: not readable JSON")
    other.write_text(json.dumps({"input": {"frames": 4, "size": 32},
                                 "normalization": {"mean": [1, 2], "std": [1, 1, 1]}}))
    _one_line(_script("--onnx", onnx, "--source", video, "--metadata", str(other)), 2,
              "its normalization is not three means")
    _one_line(_script("--onnx", onnx, "--source", video, "--metadata", str(tmp_path / "no.json")),
              2, "--metadata")
    _one_line(_script("--onnx", onnx, "--source", video, "--stride", "0"), 2,
              "--stride and --top must be at least 1")
    _one_line(_script("--onnx", onnx, "--source", str(tmp_path)), 2, "the folder holds no frame")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    run = subprocess.run([sys.executable, os.path.join(TX2, "trt_classify.py"), "--onnx", onnx,
                          "--source", video, "--display"], capture_output=True, text=True,
                         env=env, timeout=300)
    _one_line(run, 2, "--display: no display to show the frames on ($DISPLAY is not set)")


def test_without_a_record_it_says_what_it_assumes(exported, tmp_path):
    """An ONNX file without its sidecar: the clip from the file, the normalisation and names
    assumed, each said in a note."""
    import shutil

    bare = tmp_path / "bare.onnx"
    shutil.copy(exported["onnx"], str(bare))
    run = _script("--onnx", str(bare), "--source", exported["video"])
    assert run.returncode == 0, run.stderr
    notes = run.stderr.strip().splitlines()
    assert notes == ["note: no record of the export was found: assuming every frame (a model "
                     "trained on one frame in N needs its record: --metadata)",
                     "note: the model records no normalisation; assuming keras_efficient3d's "
                     "preset 'original' (ActivityNet mean, 0-255 RGB)",
                     "note: the model records no class names; showing class indices (pass "
                     "--labels)"]
    assert "class " in run.stdout


def test_a_frame_folder_is_a_video(exported, tmp_path):
    capture = cv2.VideoCapture(exported["video"])
    folder = tmp_path / "frames"
    folder.mkdir()
    i = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        i += 1
        cv2.imwrite(str(folder / f"{i:05d}.png"), frame)  # lossless: the same frames
    capture.release()
    out = tmp_path / "out.json"
    run = _script("--onnx", exported["onnx"], "--source", str(folder), "--stride", "6", "--top", "4",
                  "--json", str(out))
    assert run.returncode == 0, run.stderr
    _same(json.loads(out.read_text()), _reference(exported["onnx"], exported["video"], 6))


def test_labels_are_read_as_predict_reads_them(tc, tmp_path):
    """classInd.txt's index column taken off (it named classes "1 ApplyEyeMakeup"), a name
    given twice refused, as predict's load_labels does."""
    from keras_efficient3d.predict.labels import load_labels

    ind = tmp_path / "classInd.txt"
    ind.write_text("1 ApplyEyeMakeup\n2 ApplyLipstick\n\n3 Archery\n")
    assert tc.read_labels(str(ind)) == load_labels(str(ind)) == [
        "ApplyEyeMakeup", "ApplyLipstick", "Archery"]
    plain = tmp_path / "names.txt"
    plain.write_text("100 metre sprint\nlong jump\n")  # a name may begin with a number
    assert tc.read_labels(str(plain)) == load_labels(str(plain))
    plain.write_text("a\nb\na\n")
    with pytest.raises(tc.common.Refused, match=r"names.txt:3: class 'a' is named twice \(line 1"):
        tc.read_labels(str(plain))


def test_a_record_of_an_int8_engine_of_placeholder_scales_is_a_warning(tc):
    record = {"input": {"frames": 4, "size": 32}, "engine": {"precision": "int8"},
              "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1], "value_range": "0-1",
                                "channel_order": "RGB"}}
    spec = tc.resolve_spec(record, "m.engine.json", (4, 32, 32), 4, ["a", "b", "c", "d"])
    assert spec.notes == ["warning: m.engine.json is of an engine built with --precision int8 "
                          "from trtexec's placeholder scales: its classes mean nothing (build it "
                          "with --precision fp16, or calibrate through TF-TRT)"]
    # a model whose input is uint8 frames normalises them itself, as predict takes it
    assert tc.resolve_spec(None, None, (4, 32, 32), 4, takes_frames=True).normalization is None
    assert tc.resolve_spec(None, None, (4, 32, 32), 4).normalization is not None
