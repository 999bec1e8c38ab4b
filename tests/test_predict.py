"""Tests of `keras_efficient3d.predict`: label sets, model metadata, the three runners, sliding
windows over files, folders and a fake camera, and the command line's error handling.

Most tests use a tiny hand-made 3D CNN (prediction does not depend on the architecture, and
its TFLite/ONNX exports take about a second); one slow test runs a registry model.
"""

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_efficient3d import predict
from keras_efficient3d.convert import save_model
from keras_efficient3d.data.decode import read_video
from keras_efficient3d.data.normalization import Normalization
from keras_efficient3d.data.spatial import val_transform
from keras_efficient3d.data.temporal import loop_pad
from keras_efficient3d.predict import PredictError

from helpers import randomize_batchnorm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES, SIZE, CLASSES = 8, 32, 4
LABELS = ["swipe left", "swipe right", "zoom in", "zoom out"]
# Mean/std chosen so that a normalisation bug changes the outputs.
NORM = Normalization(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), value_range="0-1")
METADATA = {
    "model": {"model": "tiny"},
    "input": {"frames": FRAMES, "size": SIZE, "layout": "NDHWC"},
    "normalization": NORM.to_config(),
    "preprocessing_included": False,
    "labels": LABELS,
}


# ---------------------------------------------------------------------------------------
# Helpers.


def tiny_model(frames=FRAMES, size=SIZE, classes=CLASSES, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((frames, size, size, 3)),
        keras.layers.Conv3D(8, 3, strides=2, activation="relu"),
        keras.layers.Conv3D(8, (3, 1, 1), activation="relu"),
        keras.layers.GlobalAveragePooling3D(),
        keras.layers.Dense(classes, kernel_initializer=keras.initializers.RandomNormal(stddev=2.0)),
    ])


def _concrete(model, batch=1):
    shape = (batch,) + tuple(model.input_shape[1:])
    return tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec(shape, tf.float32))


def export_tflite(model, path, int8=False, calibration=None):
    """fp32, or full-int8 post-training quantisation with int8 input and output tensors."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([_concrete(model)])
    if int8:
        def representative():
            for clip in calibration:
                yield [clip[None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with open(path, "wb") as handle:
        handle.write(converter.convert())
    return path


def export_onnx(model, path):
    import tf2onnx

    spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32, name="clips")
    tf2onnx.convert.from_function(tf.function(lambda x: model(x, training=False)),
                                  input_signature=[spec], output_path=path, opset=17)
    return path


def write_video(path, frames_rgb, fps=30.0):
    fourcc = {".mp4": "mp4v", ".avi": "MJPG"}[os.path.splitext(path)[1]]
    height, width = frames_rgb.shape[1:3]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened()
    for frame in frames_rgb:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def moving_square(n, height=48, width=64, seed=0):
    """A bright square moving right over a noisy background: RGB uint8 (n, H, W, 3)."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 90, size=(n, height, width, 3), dtype=np.uint8)
    for t in range(n):
        x = 4 + (t * 2) % (width - 20)
        video[t, 14:30, x:x + 16] = (230, 200, 40)
    return video


def count_video_frames(path):
    capture = cv2.VideoCapture(path)
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


def reference_probabilities(model, frames_rgb, starts, span=FRAMES):
    """What the predictions must be, computed independently of `predict`: the validation
    transform on the whole clip, the recorded normalisation, the Keras model, a softmax."""
    out = []
    n = len(frames_rgb)
    for start in starts:
        indices = loop_pad(np.arange(start, min(start + span, n)), span)
        clip = val_transform(frames_rgb[indices], SIZE).astype(np.float32)
        logits = model(NORM.apply(clip)[None], training=False).numpy()[0]
        out.append(np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum())
    return np.asarray(out)


class FakeCapture:
    """Stands for `cv2.VideoCapture(index)`: BGR frames, then end of stream, or a Ctrl-C."""

    def __init__(self, frames_rgb, interrupt_at=None):
        self.frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames_rgb]
        self.interrupt_at = interrupt_at
        self.reads = 0
        self.released = False

    def isOpened(self):
        return True

    def read(self):
        if self.interrupt_at is not None and self.reads == self.interrupt_at:
            raise KeyboardInterrupt
        if self.reads >= len(self.frames):
            return False, None
        self.reads += 1
        return True, self.frames[self.reads - 1].copy()

    def release(self):
        self.released = True

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0


class FakeRunner:
    """A runner whose logits are known: class c scores the mean of channel c (+ frame count)."""

    backend, path, threads = "fake", "fake.model", 1

    def __init__(self, probabilities=False):
        self.input_spec = predict.InputSpec((1, FRAMES, SIZE, SIZE, 3))
        self.num_classes = CLASSES
        self.probabilities = probabilities
        self.calls = []

    def __call__(self, clips):
        self.calls.append(np.array(clips))
        means = clips.mean(axis=(1, 2, 3))  # (N, 3)
        logits = np.concatenate([means, means[:, :1] * 0 + 0.5], axis=1).astype(np.float32)
        if self.probabilities:
            e = np.exp(logits)
            return e / e.sum(axis=1, keepdims=True)
        return logits


# ---------------------------------------------------------------------------------------
# Fixtures.


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def models(tmp_path_factory, model):
    """The tiny model as .keras (metadata inside), fp32 and int8 .tflite and .onnx (sidecars)."""
    root = tmp_path_factory.mktemp("models")
    paths = {"keras": str(root / "tiny.keras")}
    save_model(model, paths["keras"], METADATA)
    rng = np.random.default_rng(1)
    calibration = [NORM.apply(val_transform(moving_square(FRAMES, seed=s), SIZE).astype(np.float32))
                   for s in range(4)] + [rng.normal(size=(FRAMES, SIZE, SIZE, 3)) for _ in range(4)]
    paths["tflite"] = export_tflite(model, str(root / "tiny.tflite"))
    paths["int8"] = export_tflite(model, str(root / "tiny_int8.tflite"), int8=True, calibration=calibration)
    paths["onnx"] = export_onnx(model, str(root / "tiny.onnx"))
    for key in ("tflite", "int8", "onnx"):
        predict.write_sidecar(paths[key], METADATA)
    return paths


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    paths = {
        "gesture": write_video(str(root / "gesture.mp4"), moving_square(30)),
        "short": write_video(str(root / "short.avi"), moving_square(5, seed=2)),
    }
    folder = root / "folder"
    folder.mkdir()
    write_video(str(folder / "clip10.mp4"), moving_square(12, seed=3))
    write_video(str(folder / "clip2.avi"), moving_square(9, seed=4))
    frame_folder = folder / "frames_a"
    frame_folder.mkdir()
    for i, frame in enumerate(moving_square(10, seed=5)):
        cv2.imwrite(str(frame_folder / f"img_{i + 1}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (folder / "README.txt").write_text("not a video\n")
    paths["folder"] = str(folder)
    paths["frames"] = str(frame_folder)
    (root / "notes.txt").write_text("hello, I am not a video\n")
    paths["text"] = str(root / "notes.txt")
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)
    (root / "corrupt.mp4").write_bytes(noise.tobytes())
    paths["corrupt"] = str(root / "corrupt.mp4")
    (root / "empty.mp4").write_bytes(b"")
    paths["empty"] = str(root / "empty.mp4")
    (root / "nothing").mkdir()
    paths["empty_folder"] = str(root / "nothing")
    return paths


# ---------------------------------------------------------------------------------------
# Labels.


def test_shipped_label_sets():
    jester = predict.load_labels("jester")
    assert len(jester) == len(set(jester)) == 27
    # jester-v1-labels.csv order (the original's class indices).
    assert jester[:4] == ["Swiping Left", "Swiping Right", "Swiping Down", "Swiping Up"]
    assert jester[20:] == ["Thumb Up", "Thumb Down", "Shaking Hand", "Stop Sign", "Drumming Fingers",
                           "No gesture", "Doing other things"]
    ucf = predict.load_labels("ucf101")
    assert len(ucf) == len(set(ucf)) == 101
    # classInd.txt is in case-insensitive alphabetical order ("Hammering" before "HammerThrow").
    assert ucf == sorted(ucf, key=str.lower)
    assert (ucf[0], ucf[34], ucf[35], ucf[100]) == ("ApplyEyeMakeup", "Hammering", "HammerThrow", "YoYo")
    assert all(" " not in name for name in ucf)


def test_label_files(tmp_path):
    (tmp_path / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 ApplyLipstick\n\n3 Archery\n")
    assert predict.load_labels(str(tmp_path / "classInd.txt")) == [
        "ApplyEyeMakeup", "ApplyLipstick", "Archery"]
    (tmp_path / "map.csv").write_text("id,name\n0,abseiling\n1,air drumming\n")
    assert predict.load_labels(str(tmp_path / "map.csv")) == ["abseiling", "air drumming"]
    # A Kinetics annotation CSV: one row per video; classes sorted as the original does.
    (tmp_path / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nzumba,a,0,10,train\nabseiling,b,0,10,train\n"
        "zumba,c,0,10,train\n\"air drumming\",d,0,10,train\n")
    assert predict.load_labels(str(tmp_path / "train.csv")) == ["abseiling", "air drumming", "zumba"]
    (tmp_path / "jester-v1-labels.csv").write_text("Swiping Left\nSwiping Right\n")
    assert predict.load_labels(str(tmp_path / "jester-v1-labels.csv")) == ["Swiping Left", "Swiping Right"]
    (tmp_path / "ann.json").write_text(json.dumps({"labels": ["a", "b"], "database": {}}))
    assert predict.load_labels(str(tmp_path / "ann.json")) == ["a", "b"]
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(PredictError, match="no class names"):
        predict.load_labels(str(tmp_path / "empty.txt"))


def test_unknown_and_unshipped_label_sets():
    with pytest.raises(PredictError, match="official"):
        predict.load_labels("kinetics600")
    with pytest.raises(PredictError, match="unknown label set 'klingon'"):
        predict.load_labels("klingon")


# ---------------------------------------------------------------------------------------
# Metadata.


def test_sidecar_round_trip_and_keras_entry(tmp_path, models):
    path = str(tmp_path / "m.tflite")
    open(path, "wb").close()
    assert predict.read_model_metadata(path) == {}
    written = predict.write_sidecar(path, dict(METADATA, normalization=NORM, extra={"accuracy": 0.9}))
    assert written == path + ".json" == predict.sidecar_path(path)
    back = predict.read_model_metadata(path)
    assert back["normalization"] == NORM.to_config() and back["extra"] == {"accuracy": 0.9}
    assert back["input"] == METADATA["input"] and back["labels"] == LABELS
    assert predict.read_model_metadata(models["keras"]) == METADATA
    with open(path + ".json", "w") as handle:
        handle.write("{not json")
    with pytest.raises(PredictError, match="cannot read the model metadata"):
        predict.read_model_metadata(path)
    with pytest.raises(PredictError, match="input.frames"):
        predict.write_sidecar(path, {"input": {"frames": "sixteen"}})


# ---------------------------------------------------------------------------------------
# Runners.


def test_quantization_helpers():
    x = np.array([-1.0, 0.0, 0.26, 100.0], np.float32)
    q = predict._quantize(x, 0.5, -3, "int8")
    assert q.dtype == np.int8 and q.tolist() == [-5, -3, -2, 127]
    np.testing.assert_allclose(predict._dequantize(q, 0.5, -3), [-1.0, 0.0, 0.5, 65.0])
    assert predict._quantize([-5.0], 1.0, 0, "uint8").tolist() == [0]


def test_runners_agree(models, model):
    rng = np.random.default_rng(0)
    clips = rng.normal(size=(3, FRAMES, SIZE, SIZE, 3)).astype(np.float32)
    expected = model(clips, training=False).numpy()
    runners = {key: predict.load_runner(models[key], threads=2)
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
    expected = model(real, training=False).numpy()
    got = runners["int8"](real)
    assert got.dtype == np.float32 and got.shape == expected.shape
    output_scale = runners["int8"]._output_quantization[0]
    tolerance = 3 * output_scale + 0.02 * float(np.ptp(expected))
    assert np.max(np.abs(got - expected)) < tolerance, (got, expected)


def test_keras_runner_runs_the_batchnorm_folded_form(tmp_path):
    from keras_efficient3d import create_model

    model = create_model("mobilenetv2_0.2x", input_shape=(FRAMES, SIZE, SIZE, 3),
                         num_classes=CLASSES)
    randomize_batchnorm(model, seed=4, spread=0.2)
    rng = np.random.default_rng(4)
    path = str(tmp_path / "bn.keras")
    save_model(model, path, METADATA)
    runner = predict.load_runner(path, threads=2)
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in runner.model.layers)
    clips = rng.normal(size=(2, FRAMES, SIZE, SIZE, 3)).astype(np.float32)
    expected = model(clips, training=False).numpy()
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(runner(clips), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_load_runner_rejects_bad_models(tmp_path, models):
    with pytest.raises(PredictError, match="model file not found"):
        predict.load_runner(str(tmp_path / "missing.tflite"))
    with pytest.raises(PredictError, match="unsupported model format '.h5'"):
        predict.load_runner(str(tmp_path / "model.h5"))
    (tmp_path / "junk.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(PredictError, match="cannot load the TFLite model"):
        predict.load_runner(str(tmp_path / "junk.tflite"))
    (tmp_path / "junk.onnx").write_bytes(b"garbage")
    with pytest.raises(PredictError, match="cannot load the ONNX model"):
        predict.load_runner(str(tmp_path / "junk.onnx"))


def test_resolve_spec_reads_the_model(models):
    spec = predict.resolve_spec(predict.load_runner(models["int8"]))
    assert (spec.frames, spec.height, spec.width, spec.span) == (FRAMES, SIZE, SIZE, FRAMES)
    assert spec.normalization == NORM and spec.labels == LABELS and spec.notes == []
    spec = predict.resolve_spec(predict.load_runner(models["int8"]), labels=["a", "b", "c", "d"])
    assert spec.labels == ["a", "b", "c", "d"]


def test_resolve_spec_rejects_mismatches(tmp_path, models):
    path = str(tmp_path / "m.tflite")
    shutil.copy(models["tflite"], path)
    predict.write_sidecar(path, dict(METADATA, input={"frames": FRAMES, "size": 112}))
    runner = predict.load_runner(path)
    message = "metadata says 112x112 frames but the model's input tensor is 32x32"
    with pytest.raises(PredictError, match=message):
        predict.resolve_spec(runner)
    predict.write_sidecar(path, dict(METADATA, input={"frames": 16, "size": SIZE}))
    with pytest.raises(PredictError, match="metadata says 16 frames per clip"):
        predict.resolve_spec(runner)
    predict.write_sidecar(path, METADATA)
    with pytest.raises(PredictError, match="27 labels for a model with 4 classes"):
        predict.resolve_spec(runner, labels="jester")
    with pytest.raises(PredictError, match="takes 8-frame clips; --window 16"):
        predict.resolve_spec(runner, window=16)
    os.remove(path + ".json")
    spec = predict.resolve_spec(runner)  # nothing recorded: defaults, said aloud
    assert spec.labels == [f"class {i}" for i in range(CLASSES)] and len(spec.notes) == 2
    assert spec.normalization == Normalization.preset("original")


# ---------------------------------------------------------------------------------------
# Sliding windows over files, folders and streams.


@pytest.mark.parametrize("stride", [8, 3])
def test_predict_video_matches_reference(models, model, videos, stride):
    runner = predict.load_runner(models["keras"])
    result = predict.predict_video(runner, videos["gesture"], stride=stride, top=3)
    frames = read_video(videos["gesture"])
    n = len(frames)
    starts = list(range(0, n - FRAMES + 1, stride))
    assert result["frames"] == n == 30 and result["fps"] == pytest.approx(30.0)
    assert [w["start"] for w in result["windows"]] == starts
    assert [w["end"] for w in result["windows"]] == [s + FRAMES - 1 for s in starts]
    assert result["window_count"] == len(starts) and not result["padded"] and result["note"] is None
    expected = reference_probabilities(model, frames, starts)
    got = np.stack([w["probabilities"] for w in result["windows"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(result["probabilities"], expected.mean(axis=0), atol=1e-5)
    for window, probs in zip(result["windows"], expected):
        assert [t["index"] for t in window["top"]] == list(np.argsort(-probs)[:3])
        assert [t["label"] for t in window["top"]] == [LABELS[i] for i in np.argsort(-probs)[:3]]
        assert window["start_s"] == pytest.approx(window["start"] / 30.0)
    assert result["top"][0]["index"] == int(np.argmax(expected.mean(axis=0)))
    assert result["speed"]["frames_per_s"] > 0 and result["speed"]["ms_per_clip"] > 0


def test_short_video_is_loop_padded(models, model, videos):
    runner = predict.load_runner(models["keras"])
    result = predict.predict_video(runner, videos["short"])
    assert result["frames"] == 5 and result["window_count"] == 1 and result["padded"]
    assert "loop-padded" in result["note"]
    window = result["windows"][0]
    assert (window["start"], window["end"], window["padded"]) == (0, 4, True)
    expected = reference_probabilities(model, read_video(videos["short"]), [0])[0]
    np.testing.assert_allclose(window["probabilities"], expected, atol=1e-5)


def test_stream_equals_file(models, videos):
    runner = predict.load_runner(models["tflite"])
    spec = predict.resolve_spec(runner)
    from_file = predict.predict_video(runner, videos["gesture"], spec=spec, stride=4)
    classifier = predict.StreamClassifier(runner, spec, stride=4)
    streamed = list(predict.iter_stream(iter(read_video(videos["gesture"])), runner, classifier=classifier))
    assert [w["start"] for w in streamed] == [w["start"] for w in from_file["windows"]]
    for a, b in zip(streamed, from_file["windows"]):
        np.testing.assert_array_equal(a["probabilities"], b["probabilities"])
    np.testing.assert_allclose(classifier.summary()["probabilities"], from_file["probabilities"], atol=1e-7)


def test_downsample_and_probability_outputs():
    runner = FakeRunner(probabilities=True)
    spec = predict.ClipSpec(FRAMES, SIZE, SIZE, downsample=2, labels=LABELS)
    frames = [np.full((SIZE, SIZE, 3), i, np.uint8) for i in range(20)]
    windows = list(predict.iter_stream(frames, runner, spec, stride=4))
    assert [(w["start"], w["end"]) for w in windows] == [(0, 15), (4, 19)]
    # every other frame of the 16-frame span is fed
    np.testing.assert_array_equal(runner.calls[0][0, :, 0, 0, 0], np.arange(0, 16, 2))
    # probabilities recognised as such: not squashed by a second softmax
    means = runner.calls[0][0].mean(axis=(0, 1, 2))
    logits = np.append(means, 0.5)
    np.testing.assert_allclose(windows[0]["probabilities"], np.exp(logits) / np.exp(logits).sum(), rtol=1e-5)


def test_folder_of_videos_and_frame_folders(models, videos):
    assert [os.path.basename(p) for p in predict.find_sources(videos["folder"])] == [
        "clip2.avi", "clip10.mp4", "frames_a"]
    assert predict.find_sources(videos["frames"]) == [videos["frames"]]
    with pytest.raises(PredictError, match="no video file"):
        predict.find_sources(videos["empty_folder"])
    runner = predict.load_runner(models["onnx"])
    results = [predict.predict_video(runner, p, stride=2) for p in predict.find_sources(videos["folder"])]
    assert [r["frames"] for r in results] == [9, 12, 10]
    assert [r["window_count"] for r in results] == [1, 3, 2]
    assert results[2]["fps"] is None and "start_s" not in results[2]["windows"][0]


def test_bad_videos_raise_data_errors(models, videos, tmp_path):
    from keras_efficient3d.data import DataError

    runner = predict.load_runner(models["tflite"])
    for key, message in [("text", "not a video"), ("corrupt", "corrupt"), ("empty", "empty")]:
        with pytest.raises(DataError, match=message):
            predict.predict_video(runner, videos[key])
    with pytest.raises(DataError, match="not found"):
        predict.predict_video(runner, str(tmp_path / "missing.mp4"))


def test_fake_camera_with_overlay_video(models, tmp_path):
    runner = predict.load_runner(models["int8"])
    spec = predict.resolve_spec(runner)
    source = moving_square(21, height=240, width=320, seed=7)
    source[:, :, :] = np.where(source.max(axis=-1, keepdims=True) > 150, source, 100)  # flat: no codec noise
    capture = FakeCapture(source)
    seen = []
    classifier = predict.StreamClassifier(runner, spec, stride=4, top=2)
    out = str(tmp_path / "overlay.avi")
    summary = predict.run_stream(predict.capture_frames(capture), classifier, seen.append,
                                 display=True, output_video=out, fps=30)
    assert capture.released and capture.reads == 21
    assert not summary["interrupted"] and summary["frames"] == 21
    assert [w["start"] for w in seen] == [0, 4, 8, 12] == [w["start"] for w in seen]
    assert summary["window_count"] == 4 and len(summary["top"]) == 2
    if not predict.display_available():
        assert summary["displayed"] is False
    assert count_video_frames(out) == 21
    written = read_video(out)
    # The overlay darkens and writes over the top-left corner only.
    corner = written[:, :40, :100].astype(int)
    assert np.abs(corner - source[:, :40, :100]).mean() > 15
    rest = written[:, 120:, 160:].astype(int)
    assert np.abs(rest - source[:, 120:, 160:]).mean() < 5


def test_ctrl_c_ends_the_stream_cleanly(models, tmp_path):
    runner = predict.load_runner(models["tflite"])
    capture = FakeCapture(moving_square(40), interrupt_at=19)
    classifier = predict.StreamClassifier(runner, predict.resolve_spec(runner), stride=4)
    out = str(tmp_path / "stopped.mp4")
    summary = predict.run_stream(predict.capture_frames(capture), classifier, output_video=out, fps=30)
    assert summary["interrupted"] and summary["frames"] == 19
    assert summary["window_count"] == 3  # windows ending at frames 7, 11, 15
    assert count_video_frames(out) == 19  # the writer was closed properly


@pytest.mark.parametrize("interrupt_at", [None, 13])
def test_camera_command_line(models, monkeypatch, capfd, interrupt_at):
    """`SOURCE` = a camera index, with a fake capture device: text lines, then a summary."""
    opened = []

    def fake_capture(index):
        opened.append(index)
        return FakeCapture(moving_square(18), interrupt_at=interrupt_at)

    monkeypatch.setattr(cv2, "VideoCapture", fake_capture)
    code = predict.cli("0", model=models["tflite"], stride=4, top=1)
    out, err = capfd.readouterr()
    assert code == 0 and opened == [0], err
    lines = out.splitlines()
    frames = 18 if interrupt_at is None else interrupt_at
    windows = (frames - FRAMES) // 4 + 1
    assert sum(line.startswith("  frames ") for line in lines) == windows
    stop = "end of stream" if interrupt_at is None else "stopped (Ctrl-C)"
    assert f"camera 0, {stop} after {frames} frames, {windows} windows" in out
    assert "frames/s" in lines[-1] and "Traceback" not in err


def test_display_detection_and_overlay():
    headless = "NONE" in [line.split(":")[-1].strip() for line in cv2.getBuildInformation().splitlines()
                          if line.strip().startswith("GUI:")]
    if headless:
        assert predict.display_available() is False
    frame = np.zeros((240, 320, 3), np.uint8)
    result = {"top": [{"label": "swipe left", "score": 0.9}, {"label": "zoom in", "score": 0.05}]}
    predict.draw_overlay(frame, result, fps=29.7)
    assert frame[:60, :150].any() and not frame[120:, 200:].any()


# ---------------------------------------------------------------------------------------
# The command line: every error path is one line on stderr and a non-zero exit.

CLI_ERRORS = ["missing_video", "text_file", "corrupt_video", "empty_video", "empty_folder", "unknown_labels",
              "kinetics600", "label_count", "size_mismatch", "missing_model", "model_format",
              "corrupt_model", "bad_stride", "no_camera"]


def _cli_cases(models, videos, tmp):
    """name -> (SOURCE, options of `predict.run`, expected part of the error line)."""
    mismatched = os.path.join(tmp, "mismatched.tflite")
    if not os.path.exists(mismatched):
        shutil.copy(models["tflite"], mismatched)
        predict.write_sidecar(mismatched, dict(METADATA, input={"frames": FRAMES, "size": 112}))
    junk = os.path.join(tmp, "junk.tflite")
    with open(junk, "wb") as handle:
        handle.write(b"this is not a flatbuffer" * 10)
    m = {"model": models["int8"]}
    gesture = videos["gesture"]
    return {
        "missing_video": (os.path.join(tmp, "nope.mp4"), m, "no such file"),
        "text_file": (videos["text"], m, "not a video"),
        "corrupt_video": (videos["corrupt"], m, "corrupt"),
        "empty_video": (videos["empty"], m, "empty (0 bytes)"),
        "empty_folder": (videos["empty_folder"], m, "no video file"),
        "unknown_labels": (gesture, dict(m, labels="klingon"), "unknown label set"),
        "kinetics600": (gesture, dict(m, labels="kinetics600"), "official"),
        "label_count": (gesture, dict(m, labels="jester"), "27 labels for a model with 4 classes"),
        "size_mismatch": (gesture, {"model": mismatched}, "112x112"),
        "missing_model": (gesture, {"model": os.path.join(tmp, "none.onnx")}, "model file not found"),
        "model_format": (gesture, {"model": os.path.join(tmp, "m.h5")}, "unsupported model format"),
        "corrupt_model": (gesture, {"model": junk}, "cannot load the TFLite model"),
        "bad_stride": (gesture, dict(m, stride=0), "--stride must be >= 1"),
        "no_camera": ("7", m, "cannot open camera 7"),
    }


def _argv(source, options):
    flags = {"as_json": "json"}
    argv = [source]
    for key, value in options.items():
        name = flags.get(key, key)
        argv.append(f"--{name}" if value is True else f"--{name}={value}")
    return argv


def _subprocess(argv):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "keras_efficient3d.predict", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def _run_all(argvs):
    """Runs command lines two at a time (each process pays for importing TensorFlow)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_subprocess, argv) for name, argv in argvs.items()}
        return {name: future.result() for name, future in futures.items()}


def _check_error(code, out, err, expected):
    assert code == 1, (code, out, err)
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]


@pytest.mark.parametrize("case", CLI_ERRORS)
def test_errors_are_one_line(models, videos, tmp_path, capfd, case):
    """In process, with the file descriptors captured (native libraries' output included)."""
    cases = _cli_cases(models, videos, str(tmp_path))
    assert sorted(cases) == sorted(CLI_ERRORS)
    source, options, expected = cases[case]
    capfd.readouterr()
    code = predict.cli(source, **options)
    out, err = capfd.readouterr()
    _check_error(code, out, err, expected)


@pytest.fixture(scope="module")
def cli_runs(models, videos, tmp_path_factory):
    """The real command line, in subprocesses: two runs and one error."""
    tmp = str(tmp_path_factory.mktemp("cli"))
    source, options, _ = _cli_cases(models, videos, tmp)["size_mismatch"]
    return _run_all({
        "json": _argv(videos["gesture"], {"model": models["int8"], "as_json": True, "top": 2, "stride": 4}),
        "short": _argv(videos["short"], {"model": models["onnx"]}),
        "size_mismatch": _argv(source, options),
    })


def test_cli_json_lines(cli_runs):
    code, out, err = cli_runs["json"]
    assert code == 0, err
    assert "Traceback" not in err and not [line for line in err.splitlines() if line.strip()], err
    records = [json.loads(line) for line in out.splitlines()]
    windows = [r for r in records if r["type"] == "window"]
    assert [w["start"] for w in windows] == list(range(0, 23, 4))
    assert all(len(w["top"]) == 2 and w["top"][0]["label"] in LABELS for w in windows)
    video = records[-1]
    assert video["type"] == "video" and video["windows"] == len(windows) and video["frames"] == 30
    assert video["speed"]["frames_per_s"] > 0 and video["speed"]["ms_per_clip"] > 0
    assert video["speed"]["backend"] == "tflite"
    assert sum(t["score"] for t in video["top"]) <= 1.0 + 1e-6


def test_cli_padding_note_and_error(cli_runs):
    code, out, err = cli_runs["short"]
    assert code == 0, err
    assert "loop-padded" in err and "[loop-padded]" in out and "speed:" in out and "frames/s" in out
    _check_error(*cli_runs["size_mismatch"], "112x112")


def test_text_output_for_a_folder(models, videos, capsys):
    assert predict.cli(videos["folder"], model=models["keras"], threads=1, top=2) == 0
    out = capsys.readouterr().out
    assert out.count("  video (") == 3 and out.count("frames/s") == 3 and "ms per clip (keras" in out
    for name in ("clip2.avi:", "clip10.mp4:", "frames_a:"):
        assert name in out


@pytest.mark.slow
def test_cli_every_error_in_a_subprocess(models, videos, tmp_path):
    cases = _cli_cases(models, videos, str(tmp_path))
    results = _run_all({name: _argv(source, options) for name, (source, options, _) in cases.items()})
    for name, (_, _, expected) in cases.items():
        _check_error(*results[name], expected)


def test_default_model_missing_message(monkeypatch, tmp_path):
    missing = tmp_path / "saved_models" / "synthetic_gestures_int8.tflite"
    monkeypatch.setattr(predict, "DEFAULT_MODEL", str(missing))
    with pytest.raises(PredictError, match=r"missing: run ./demo.sh"):
        predict.run(str(tmp_path))


# ---------------------------------------------------------------------------------------
# A registry model through all three runtimes.


@pytest.mark.slow
def test_registry_model_all_backends(tmp_path, videos):
    import keras_efficient3d

    net = keras_efficient3d.create_model("shufflenetv2_0.25x", input_shape=(FRAMES, SIZE, SIZE, 3),
                                         num_classes=CLASSES)
    paths = {"keras": str(tmp_path / "s.keras")}
    save_model(net, paths["keras"], METADATA)
    paths["tflite"] = export_tflite(net, str(tmp_path / "s.tflite"))
    paths["onnx"] = export_onnx(net, str(tmp_path / "s.onnx"))
    for key in ("tflite", "onnx"):
        predict.write_sidecar(paths[key], METADATA)
    results = {key: predict.predict_video(predict.load_runner(path), videos["gesture"], stride=8)
               for key, path in paths.items()}
    for key in ("tflite", "onnx"):
        np.testing.assert_allclose(results[key]["probabilities"], results["keras"]["probabilities"],
                                   atol=1e-4, err_msg=key)
