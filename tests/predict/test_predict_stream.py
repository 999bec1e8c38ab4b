"""What a clip must look like (`resolve_spec`), sliding windows over files and streams, a fake
camera, and a registry model through all three runtimes."""

import os
import shutil

import cv2
import numpy as np
import pytest

from helpers import export_onnx, export_tflite, moving_square
from keras_efficient3d import predict
from keras_efficient3d.artifacts import frames_metadata, save_model, write_sidecar
from keras_efficient3d.data.decode import DataError, read_video
from keras_efficient3d.data.normalization import Normalization
from keras_efficient3d.predict import PredictError
from keras_efficient3d.predict.stream import check_options
from keras_efficient3d.runtime import InputSpec, load_runner
from predict_helpers import (
    CLASSES,
    FRAMES,
    LABELS,
    METADATA,
    NORM,
    SIZE,
    FakeCapture,
    FakeRunner,
    count_video_frames,
    reference_probabilities,
    window_starts,
    write_video,
)


def test_resolve_spec_reads_the_model(models):
    spec = predict.resolve_spec(load_runner(models["int8"]))
    assert (spec.frames, spec.height, spec.width, spec.span) == (FRAMES, SIZE, SIZE, FRAMES)
    assert spec.normalization == NORM and spec.labels == LABELS and spec.notes == []
    spec = predict.resolve_spec(load_runner(models["int8"]), labels=["a", "b", "c", "d"])
    assert spec.labels == ["a", "b", "c", "d"]


def test_resolve_spec_refuses_the_metadata_of_another_class_count_or_batch(tmp_path, models):
    """A sidecar copied from a 27-class export of a fixed batch of 8 beside an 8-class model
    of a dynamic batch ran without a word, naming class 0."""
    path = str(tmp_path / "m.onnx")
    shutil.copy(models["onnx"], path)
    runner = load_runner(path)
    own = dict(METADATA, model={"model": "mobilenetv2_0.2x", "num_classes": runner.num_classes},
               input=dict(METADATA["input"], batch="dynamic"))
    write_sidecar(path, own)
    predict.resolve_spec(runner)  # its own: fine
    write_sidecar(path, dict(own, model={"model": "mobilenetv2_0.2x", "num_classes": 27},
                             labels=None))
    with pytest.raises(PredictError, match=rf"^{path}.json: the metadata says 27 classes, but the "
                                           rf"model outputs {runner.num_classes}: the metadata of "
                                           "another export"):
        predict.resolve_spec(runner)
    write_sidecar(path, dict(own, input=dict(own["input"], batch=8)))
    with pytest.raises(PredictError, match=rf"^{path}.json: the metadata says batch 8, but the "
                                           "model has a dynamic batch"):
        predict.resolve_spec(runner)


def test_a_renamed_export_is_told_of_the_record_it_left_behind(tmp_path, models):
    """gesture.onnx, renamed from m.onnx, ran on every assumption while m.onnx.json lay
    beside it."""
    path = str(tmp_path / "gesture.onnx")
    shutil.copy(models["onnx"], path)
    shutil.copy(models["onnx"] + ".json", str(tmp_path / "m.onnx.json"))
    spec = predict.resolve_spec(load_runner(path))
    assert spec.notes[-1] == ("m.onnx.json beside it records a .onnx file that is not there: "
                              "the record of this one, renamed? Copy it to gesture.onnx.json")
    shutil.copy(models["onnx"], str(tmp_path / "m.onnx"))  # its own file: no word of it
    assert not [n for n in predict.resolve_spec(load_runner(path)).notes if "renamed" in n]


def test_resolve_spec_rejects_mismatches(tmp_path, models):
    path = str(tmp_path / "m.tflite")
    shutil.copy(models["tflite"], path)
    write_sidecar(path, dict(METADATA, input={"frames": FRAMES, "size": 112}))
    runner = load_runner(path)
    message = "metadata says 112x112 frames but the model's input tensor is 32x32"
    with pytest.raises(PredictError, match=message):
        predict.resolve_spec(runner)
    write_sidecar(path, dict(METADATA, input={"frames": 16, "size": SIZE}))
    with pytest.raises(PredictError, match="metadata says 16 frames per clip"):
        predict.resolve_spec(runner)
    write_sidecar(path, METADATA)
    with pytest.raises(PredictError, match="27 labels for a model with 4 classes"):
        predict.resolve_spec(runner, labels="jester")
    with pytest.raises(PredictError, match="takes 8-frame clips; window=16 does not match"):
        predict.resolve_spec(runner, window=16)
    # the sidecar of a file of uint8 frames beside a float file (and the reverse): they ran
    # without a word and named the wrong classes
    write_sidecar(path, frames_metadata(METADATA, NORM))
    with pytest.raises(PredictError) as err:
        predict.resolve_spec(runner)
    assert str(err.value) == (
        f"{path}.json: the metadata says the model takes \"uint8 0-255, RGB\", but the model's "
        "input tensor takes float clips: the metadata of another export? Export the model "
        "again (its metadata is written beside it), or remove the file to run the model "
        "without it")
    frames_runner = FakeRunner()
    frames_runner.path = path
    frames_runner.input_spec = InputSpec((1, FRAMES, SIZE, SIZE, 3), "uint8", uint8_frames=True)
    assert predict.resolve_spec(frames_runner).uint8_frames  # the metadata of its kind: fine
    write_sidecar(path, dict(METADATA, input=dict(METADATA["input"],
                                                  dtype="float32, already normalised")))
    with pytest.raises(PredictError, match="the metadata says the model takes \"float32, "
                       "already normalised\", but the model's input tensor takes uint8 RGB "
                       "frames \\(0-255\\), which it normalises itself"):
        predict.resolve_spec(frames_runner)
    os.remove(path + ".json")
    spec = predict.resolve_spec(runner)  # nothing recorded: defaults, said aloud in one line
    assert spec.labels == [f"class {i}" for i in range(CLASSES)] and spec.downsample == 1
    assert spec.normalization == Normalization.preset("original")
    assert spec.notes == ["m.tflite records no metadata (no m.tflite.json beside it): assuming "
                          "normalisation preset 'original' (pass normalization), every frame (a "
                          "model trained on one frame in N needs its sidecar) and class indices for "
                          "names (pass labels)"]
    assert predict.resolve_spec(runner, labels=LABELS, normalization="original").notes == [
        "m.tflite records no metadata (no m.tflite.json beside it): assuming every frame (a model "
        "trained on one frame in N needs its sidecar)"]


def test_resolve_spec_takes_a_normalization_only_where_it_agrees(tmp_path, models):
    path = str(tmp_path / "m.tflite")
    shutil.copy(models["tflite"], path)
    kinetics = Normalization.preset("kinetics").to_config()
    write_sidecar(path, dict(METADATA, normalization=kinetics))
    runner = load_runner(path)
    spec = predict.resolve_spec(runner, normalization="kinetics")  # the same: fine
    assert spec.normalization == Normalization.preset("kinetics") and spec.notes == []
    with pytest.raises(PredictError, match=r"records its normalisation \(preset 'kinetics'\); "
                                           r"normalization=original differs: leave it out"):
        predict.resolve_spec(runner, normalization="original")
    # A model that normalises its frames itself takes them as they are.
    write_sidecar(path, dict(METADATA, normalization=None, preprocessing_included=True))
    assert predict.resolve_spec(runner, normalization="none").normalization is None
    with pytest.raises(PredictError, match="normalises its frames itself .*normalization=unit"):
        predict.resolve_spec(runner, normalization="unit")
    with pytest.raises(PredictError, match="^normalization=klingon: unknown preset; expected one of original, "):
        predict.resolve_spec(runner, normalization="klingon")


def test_check_options_takes_a_normalization_as_make_dataset_does():
    unit = Normalization.preset("unit")
    assert check_options(normalization=unit.to_config()) == unit
    assert check_options(normalization="") is None
    with pytest.raises(PredictError, match=r"must be a Normalization, a preset name or a config dict"):
        check_options(normalization=3)


@pytest.mark.parametrize("stride", [8, 3])
def test_predict_video_matches_reference(models, model, videos, stride):
    runner = load_runner(models["keras"])
    result = predict.predict_video(runner, videos["gesture"], stride=stride, top=3)
    frames = read_video(videos["gesture"])
    n = len(frames)
    starts = window_starts(n, stride)  # the last frames in a window of their own
    assert starts[-1] == n - FRAMES
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
        assert window["end_s"] == pytest.approx((window["end"] + 1) / 30.0)
    assert result["top"][0]["index"] == int(np.argmax(expected.mean(axis=0)))
    assert result["speed"]["frames_per_s"] > 0 and result["speed"]["ms_per_clip"] > 0


def test_window_times_follow_a_variable_frame_rate(models, videos, tmp_path):
    """A phone's video slows its frame rate in the dark: the windows' times are the frames'
    own timestamps, not frame / fps (OpenCV's fps is then the average, and frame / fps
    drifts: here by 0.4 s at frame 20)."""
    from predict_helpers import make_variable_frame_rate, write_video

    path = write_video(str(tmp_path / "vfr.mp4"), read_video(videos["gesture"]), fps=30.0)
    times = make_variable_frame_rate(path, slow_after=15, factor=3)
    result = predict.predict_video(load_runner(models["keras"]), path, stride=4)
    assert result["frames"] == 30 and result["window_count"] > 2
    for window in result["windows"]:
        start, end = window["start"], window["end"]
        assert window["start_s"] == pytest.approx(times[start], abs=1e-3)
        assert window["end_s"] == pytest.approx(times[end] + times[end] - times[end - 1],
                                                abs=1e-3)
    assert any(abs(w["start_s"] - w["start"] / result["fps"]) > 0.1 for w in result["windows"])


def test_short_video_is_loop_padded(models, model, videos):
    runner = load_runner(models["keras"])
    result = predict.predict_video(runner, videos["short"])
    assert result["frames"] == 5 and result["window_count"] == 1 and result["padded"]
    assert "loop-padded" in result["note"]
    window = result["windows"][0]
    assert (window["start"], window["end"], window["padded"]) == (0, 4, True)
    expected = reference_probabilities(model, read_video(videos["short"]), [0])[0]
    np.testing.assert_allclose(window["probabilities"], expected, atol=1e-5)


def test_stream_equals_file(models, videos):
    runner = load_runner(models["tflite"])
    spec = predict.resolve_spec(runner)
    from_file = predict.predict_video(runner, videos["gesture"], spec=spec, stride=4)
    classifier = predict.StreamClassifier(runner, spec, stride=4)
    streamed = list(predict.iter_stream(iter(read_video(videos["gesture"])), runner, classifier=classifier))
    assert [w["start"] for w in streamed] == [w["start"] for w in from_file["windows"]]
    for a, b in zip(streamed, from_file["windows"]):
        np.testing.assert_array_equal(a["probabilities"], b["probabilities"])
    np.testing.assert_allclose(classifier.summary()["probabilities"], from_file["probabilities"], atol=1e-7)


def test_a_model_of_more_outputs_than_its_runs_classes_is_named_by_the_runs_labels(tmp_path):
    """train.py --num_classes above the data's classes records no class names (they name
    only some outputs): predict named every output "class i", and the run's labels.txt was
    refused as too short. It names the first outputs now, as evaluate.py reads it."""
    runner = FakeRunner()
    run = tmp_path / "run"
    run.mkdir()
    runner.path = str(run / "best.keras")
    (run / "best.keras").write_bytes(b"")
    (run / "labels.txt").write_text("MoveLeft\nMoveRight\n")
    trained = {"output": "logits", "trained_on": {"dataset": "folders"}}  # as train.py records
    spec = predict.resolve_spec(runner, metadata=trained)
    assert spec.labels == ["MoveLeft", "MoveRight"] + [f"class {i}" for i in range(2, CLASSES)]
    assert spec.notes[-1:] == [f"best.keras records no class names: those of labels.txt beside "
                               f"it, for its first 2 of {CLASSES} outputs"]
    # a model no run of this folder trained (a converted one saved there) keeps its indices
    unnamed = [f"class {i}" for i in range(CLASSES)]
    assert predict.resolve_spec(runner, metadata={"output": "logits"}).labels == unnamed
    (run / "labels.txt").write_text("".join(f"{name}\n" for name in LABELS))
    assert predict.resolve_spec(runner, metadata=trained).labels == LABELS
    # recorded names, or names given, come first
    assert predict.resolve_spec(runner, metadata=dict(trained, labels=LABELS[::-1])).labels == \
        LABELS[::-1]
    (run / "labels.txt").write_text("".join(f"{i}\n" for i in range(CLASSES + 1)))  # not its run's
    assert predict.resolve_spec(runner, metadata=trained).labels == unnamed


def test_make_clip_takes_frames_preprocessed_to_the_models_size():
    spec = predict.ClipSpec(FRAMES, SIZE, SIZE, normalization=Normalization.preset("unit"))
    decoded = np.full((FRAMES, 40, 64, 3), 255, np.uint8)
    with pytest.raises(DataError, match=rf"uint8 \(\d+, {SIZE}, {SIZE}, 3\); received uint8 "
                                        r"\(\d+, 40, 64, 3\).*preprocess_frame"):
        predict.make_clip(decoded, spec)  # was a (1, T, 40, 64, 3) clip the runner refused
    clip = predict.make_clip(np.stack([predict.preprocess_frame(f, spec) for f in decoded]), spec)
    assert clip.shape == (1, FRAMES, SIZE, SIZE, 3) and clip.dtype == np.float32 and clip.max() == 1


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


@pytest.mark.parametrize("quantization, softmax", [((1 / 256, -128), True), ((1 / 256, 0), True),
                                                   ((0.05, -3), False), (None, False)])
def test_a_softmax_quantized_output_is_taken_as_probabilities(quantization, softmax):
    """An int8 TFLite softmax (scale 1/256, zero point -128) of many classes, rounded to 1/256,
    need not sum to 1 within the guess's 2%: with no sidecar it was taken for logits and
    squashed by a second softmax (all classes near 1 / classes)."""
    class Quantized(FakeRunner):
        output_quantization = quantization

        def __call__(self, clips):
            out = np.zeros((len(clips), CLASSES), np.float32)
            out[:, 1] = 0.9  # 0.1 of the mass rounded away in classes below 1/512
            return out

    runner = Quantized()
    spec = predict.resolve_spec(runner, labels=LABELS)
    assert spec.probabilities is (True if softmax else None)
    frames = [np.zeros((SIZE, SIZE, 3), np.uint8)] * FRAMES
    (window,) = predict.iter_stream(frames, runner, spec, stride=FRAMES)
    if softmax:  # renormalised, not softmaxed again
        np.testing.assert_allclose(window["probabilities"], np.eye(CLASSES)[1], atol=1e-6)
    else:  # the guess: logits
        assert window["probabilities"][1] < 0.9


def test_fake_camera_with_overlay_video(models, tmp_path):
    runner = load_runner(models["int8"])
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
    assert [w["start"] for w in seen] == [0, 4, 8, 12, 13] == window_starts(21, 4)
    assert summary["window_count"] == 5 and len(summary["top"]) == 2
    if not predict.display_available():
        assert summary["displayed"] is False
    assert count_video_frames(out) == 21
    written = read_video(out)
    # The overlay darkens and writes over the top-left corner only.
    corner = written[:, :40, :100].astype(int)
    assert np.abs(corner - source[:, :40, :100]).mean() > 15
    rest = written[:, 120:, 160:].astype(int)
    assert np.abs(rest - source[:, 120:, 160:]).mean() < 5


def test_overlay_video_of_a_short_video_shows_its_result(models, tmp_path):
    """A video shorter than one window has one result, the loop-padded one predict prints: its
    frames carry it, not "waiting for the first window"."""
    runner = load_runner(models["int8"])
    source = moving_square(5, height=240, width=320, seed=2)
    source[:, :60] = 100  # flat behind the overlay: no codec noise
    video = write_video(str(tmp_path / "short.avi"), source)
    out = str(tmp_path / "overlay.avi")
    result = predict.predict_video(runner, video, output_video=out)
    assert result["padded"] and result["window_count"] == 1
    written = read_video(out)
    assert len(written) == 5
    rows = slice(0, 28)  # the first line of the overlay: the top class, or "waiting ..."
    for frame, shown in zip(source, written):
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        expected = {key: cv2.cvtColor(predict.draw_overlay(bgr.copy(), answer, None), cv2.COLOR_BGR2RGB)
                    for key, answer in (("result", result["windows"][0]), ("waiting", None))}
        error = {key: np.abs(shown[rows].astype(int) - image[rows]).mean() for key, image in expected.items()}
        assert error["result"] < error["waiting"] / 3, error


def test_ctrl_c_ends_the_stream_cleanly(models, tmp_path):
    runner = load_runner(models["tflite"])
    capture = FakeCapture(moving_square(40), interrupt_at=19)
    classifier = predict.StreamClassifier(runner, predict.resolve_spec(runner), stride=4)
    out = str(tmp_path / "stopped.mp4")
    summary = predict.run_stream(predict.capture_frames(capture), classifier, output_video=out, fps=30)
    assert summary["interrupted"] and summary["frames"] == 19
    assert summary["window_count"] == 3  # windows ending at frames 7, 11, 15
    assert count_video_frames(out) == 19  # the writer was closed properly


def test_an_output_video_is_renamed_into_place_at_the_end_and_only_then(models, tmp_path):
    runner = load_runner(models["tflite"])
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier result")

    def frames_then_a_failure():
        yield from moving_square(12)
        raise PredictError("frames/00013.jpg: cannot decode image")

    classifier = predict.StreamClassifier(runner, predict.resolve_spec(runner), stride=4)
    with pytest.raises(PredictError):
        predict.run_stream(frames_then_a_failure(), classifier, output_video=str(out), fps=30)
    assert out.read_bytes() == b"an earlier result"  # not a few frames of the failed run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no partial file left
    # a folder of images of two sizes: every frame is written, at the first one's size
    mixed = [cv2.resize(f, (80, 60)) for f in moving_square(8)] + list(moving_square(8))
    classifier = predict.StreamClassifier(runner, predict.resolve_spec(runner), stride=4)
    predict.run_stream(iter(mixed), classifier, output_video=str(out), fps=30)
    assert count_video_frames(str(out)) == 16
    capture = cv2.VideoCapture(str(out))
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (80, 60)
    capture.release()


@pytest.mark.parametrize("ext", [".webm", ".avi"])
def test_an_output_video_of_odd_size_keeps_every_pixel_and_says_nothing(models, tmp_path, capfd,
                                                                         ext):
    """Encoders cut frames to even sizes (81x121 came out 80x120, its last column and row
    lost); FFmpeg's WebM muxer printed a line about its VP8 tag on every run."""
    runner = load_runner(models["tflite"])
    frames = [cv2.resize(f, (81, 121)) for f in moving_square(8)]
    frames = [np.ascontiguousarray(f) for f in frames]
    for f in frames:
        f[:, -1] = (255, 255, 255)  # the last column white: lost if the frame is cut
    out = tmp_path / f"odd{ext}"
    capfd.readouterr()
    classifier = predict.StreamClassifier(runner, predict.resolve_spec(runner), stride=4)
    predict.run_stream(iter(frames), classifier, output_video=str(out), fps=30)
    assert "OpenCV" not in capfd.readouterr().err
    capture = cv2.VideoCapture(str(out))
    ok, frame = capture.read()
    capture.release()
    assert ok and frame.shape == (122, 82, 3)
    # under the overlay's darkened top 60 rows: the user's last column, white, then the black
    # column added after it, and the black row added under the user's last
    assert frame[70:121, 80].min() > 150
    assert frame[70:121, 81].max() < 100
    assert frame[121, :70].max() < 100


def test_each_line_of_output_is_one_write_with_its_newline(models, videos):
    class Writes:
        def __init__(self):
            self.writes = []

        def write(self, text):
            self.writes.append(text)

        def flush(self):
            pass

    out = Writes()
    code = predict.run(videos["gesture"], model=models["tflite"], as_json=True, out=out,
                       err=Writes())
    assert code == 0 and len(out.writes) >= 2
    assert all(text.endswith("\n") and text.count("\n") == 1 for text in out.writes), out.writes


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
        write_sidecar(paths[key], METADATA)
    results = {key: predict.predict_video(load_runner(path), videos["gesture"], stride=8)
               for key, path in paths.items()}
    for key in ("tflite", "onnx"):
        np.testing.assert_allclose(results[key]["probabilities"], results["keras"]["probabilities"],
                                   atol=1e-4, err_msg=key)


def test_a_label_count_mismatch_names_where_the_labels_came_from(tmp_path, models):
    runner = load_runner(models["tflite"])
    path = tmp_path / "classes.txt"
    path.write_text("a\nb\nc\n")
    with pytest.raises(PredictError, match=rf"3 labels for a model with {CLASSES} classes \(labels={path}\)$"):
        predict.resolve_spec(runner, labels=str(path))
    with pytest.raises(PredictError, match=rf"2 labels for a model with {CLASSES} classes \(the labels given\)$"):
        predict.resolve_spec(runner, labels=["a", "b"])
    with pytest.raises(PredictError, match=rf"2 labels for a model with {CLASSES} classes \(recorded in its "
                                           r"metadata\)$"):
        predict.resolve_spec(runner, metadata=dict(METADATA, labels=["a", "b"]))


def test_labels_given_in_another_order_than_the_recorded_ones_are_said(tmp_path, models):
    """--labels=jester for an authors' Jester checkpoint (recorded in the original's order)
    names every output wrong: the labels given are used, as asked, with a note."""
    runner = load_runner(models["tflite"])
    recorded = [f"class {i}" for i in range(CLASSES)]
    reordered = recorded[1:] + recorded[:1]
    spec = predict.resolve_spec(runner, metadata=dict(METADATA, labels=recorded),
                                labels=reordered)
    assert spec.labels == reordered
    assert spec.notes[-1] == (f"{os.path.basename(models['tflite'])} records these class names "
                              "in another order; its outputs are named by the labels given, as "
                              "asked (leave labels out for the names it records)")
    spec = predict.resolve_spec(runner, metadata=dict(METADATA, labels=recorded),
                                labels=list(recorded))
    assert not any("another order" in note for note in spec.notes)


def test_frames_that_are_not_uint8_are_refused():
    """Float frames (0-1 or 0-255) would be taken as 0-255 pixels and normalised as such."""
    from keras_efficient3d.data.decode import DataError

    spec = predict.ClipSpec(FRAMES, SIZE, SIZE, labels=LABELS)
    for frame in (np.zeros((SIZE, SIZE, 3), np.float32), np.zeros((SIZE, SIZE, 3), np.uint16)):
        with pytest.raises(DataError, match=rf"expected RGB uint8 frames \(0-255\); got {frame.dtype} "):
            list(predict.iter_stream([frame], FakeRunner(), spec))


def test_each_frame_is_normalised_once_and_the_windows_are_make_clips():
    """The stream makes each frame model input when it arrives (not once per window it is in)
    and the windows it feeds are exactly `make_clip` of their frames."""
    from keras_efficient3d.predict import stream

    runner = FakeRunner()
    norm = Normalization(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), value_range="0-1")
    spec = predict.ClipSpec(FRAMES, SIZE, SIZE, downsample=2, normalization=norm, labels=LABELS)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(24)]
    prepared = []
    original = stream.prepare_frames

    def counting(frames_, spec_):
        prepared.append(np.shape(frames_))
        return original(frames_, spec_)

    stream.prepare_frames = counting
    try:
        windows = list(predict.iter_stream(frames, runner, spec, stride=1))
    finally:
        stream.prepare_frames = original
    assert len(windows) == 24 - 2 * FRAMES + 1 == len(runner.calls)
    assert prepared == [(SIZE, SIZE, 3)] * 24  # one call per frame, none per window
    for window, clip in zip(windows, runner.calls):
        expected = predict.make_clip(frames[window["start"]:window["end"] + 1:2], spec)
        assert clip.dtype == np.float32 and clip.flags.c_contiguous
        np.testing.assert_array_equal(clip, expected)


def test_an_int8_tflite_model_gets_the_windows_its_own_quantization_would_give(models, videos):
    """A LiteRT int8 model in the stream (its normalised windows quantized by the runner): the
    outputs of the runner called on make_clip of each window's frames."""
    runner = load_runner(models["int8"])
    assert runner.input_spec.quantization is not None
    spec = predict.resolve_spec(runner)
    result = predict.predict_video(runner, videos["gesture"], spec=spec, stride=3)
    frames = read_video(videos["gesture"])
    assert result["window_count"] > 3
    for window in result["windows"]:
        clip = predict.make_clip([predict.preprocess_frame(f, spec) for f in
                                  frames[window["start"]:window["end"] + 1:spec.downsample]], spec)
        logits = runner(clip)[0]
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        np.testing.assert_allclose(window["probabilities"], expected, atol=1e-6)


def test_a_model_output_that_is_not_finite_is_one_error():
    """A NaN score made a JSON line no strict reader takes (json.dumps writes NaN)."""
    class Overflowing(FakeRunner):
        def __call__(self, clips):
            out = super().__call__(clips)
            out[:, 1] = np.inf
            return out

    frames = np.zeros((FRAMES, SIZE, SIZE, 3), np.uint8)
    spec = predict.ClipSpec(FRAMES, SIZE, SIZE, labels=LABELS)
    with pytest.raises(PredictError, match=r"fake.model: the model's output for frames 0-7 is "
                                           r"not finite"):
        list(predict.iter_stream(frames, Overflowing(), spec))
