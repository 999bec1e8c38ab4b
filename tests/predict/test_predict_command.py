"""The command line: every error path is one line on stderr and exit status 2; text and
JSON output; a fake camera."""

import concurrent.futures
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading

import cv2
import pytest

from helpers import moving_square
from keras_efficient3d import cli, predict
from keras_efficient3d.artifacts import write_sidecar
from keras_efficient3d.predict import PredictError, command
from keras_efficient3d.runtime import load_runner
from predict_helpers import FRAMES, LABELS, METADATA, ROOT, FakeCapture, window_starts, write_video


@pytest.mark.parametrize("interrupt_at", [None, 13])
def test_camera_command_line(models, monkeypatch, capfd, interrupt_at):
    """`SOURCE` = a camera index, with a fake capture device: text lines, then a summary."""
    opened = []

    def fake_capture(index):
        opened.append(index)
        return FakeCapture(moving_square(18), interrupt_at=interrupt_at)

    monkeypatch.setattr(cv2, "VideoCapture", fake_capture)
    code = _invoke("0", {"model": models["tflite"], "stride": 4, "top": 1})
    out, err = capfd.readouterr()
    # Ctrl-C ends a camera's run as a video file's: the summary, then status 130
    assert code == (0 if interrupt_at is None else 130) and opened == [0], err
    assert ("interrupted" in err) == (interrupt_at is not None)
    lines = out.splitlines()
    frames = 18 if interrupt_at is None else interrupt_at
    # a stream that ends has its last frames classified too; one stopped by Ctrl-C does not
    windows = len(window_starts(frames, 4)) if interrupt_at is None else (frames - FRAMES) // 4 + 1
    assert sum(line.startswith("  frames ") for line in lines) == windows
    stop = "end of stream" if interrupt_at is None else "stopped (Ctrl-C)"
    assert f"camera 0, {stop} after {frames} frames, {windows} windows" in out
    assert "frames/s" in lines[-1] and "Traceback" not in err


CLI_ERRORS = ["missing_video", "text_file", "corrupt_video", "empty_video", "empty_folder", "unknown_labels",
              "kinetics600", "label_count", "size_mismatch", "missing_model", "model_format",
              "corrupt_model", "bad_stride", "no_camera", "normalization_conflict",
              "openvino_precision_onnx", "openvino_device_tflite"]


def _cli_cases(models, videos, tmp):
    """name -> (SOURCE, options of `predict.run`, expected part of the error line)."""
    mismatched = os.path.join(tmp, "mismatched.tflite")
    if not os.path.exists(mismatched):
        shutil.copy(models["tflite"], mismatched)
        write_sidecar(mismatched, dict(METADATA, input={"frames": FRAMES, "size": 112}))
    unsupported = os.path.join(tmp, "m.h5")
    with open(unsupported, "wb") as handle:
        handle.write(b"not a model")
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
        "missing_model": (gesture, {"model": os.path.join(tmp, "none.onnx")}, "none.onnx: no such file"),
        "model_format": (gesture, {"model": unsupported}, "unsupported model format"),
        "corrupt_model": (gesture, {"model": junk}, "cannot load the TFLite model"),
        "bad_stride": (gesture, dict(m, stride=0), "--stride must be >= 1"),
        "no_camera": ("7", m, "cannot open camera 7"),
        # the model records its own: the flag would be silently ignored
        "normalization_conflict": (gesture, dict(m, normalization="original"),
                                   "records its normalisation (mean [0.4, 0.5, 0.6], std [0.2, "
                                   "0.25, 0.3], 0-1, RGB); --normalization=original differs"),
        "openvino_precision_onnx": (gesture, {"model": models["onnx"], "openvino_precision": "f32"},
                                    f"--openvino_precision is not used with {models['onnx']}: it "
                                    "is not an OpenVINO .xml model"),
        "openvino_device_tflite": (gesture, dict(m, openvino_device="CPU"),
                                   f"--openvino_device is not used with {models['int8']}: it is "
                                   "not an OpenVINO .xml model"),
    }


def _argv(source, options):
    """The command line of `predict.run`'s options."""
    names = {"model": "model_file", "window": "frames", "output_video": "output"}
    argv = [source] if isinstance(source, str) else list(source)
    for key, value in options.items():
        if key == "as_json":
            argv.append(f"--format={'json' if value else 'text'}")
        else:
            argv.append(f"--{names.get(key, key)}={value}")
    return argv


def _invoke(source, options):
    """The command line in this process (`cli.invoke`); returns the exit status."""
    return cli.invoke(command.main, command.define_flags,
                      ["keras_efficient3d.predict", *_argv(source, options)], positional=True)


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
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("keras_efficient3d.predict: error: ") and expected in lines[0], lines[0]


@pytest.mark.parametrize("case", CLI_ERRORS)
def test_errors_are_one_line(models, videos, tmp_path, capfd, case):
    """In process, with the file descriptors captured (native libraries' output included)."""
    cases = _cli_cases(models, videos, str(tmp_path))
    assert sorted(cases) == sorted(CLI_ERRORS)
    source, options, expected = cases[case]
    capfd.readouterr()
    code = _invoke(source, options)
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
    assert [w["start"] for w in windows] == window_starts(30, 4) == [0, 4, 8, 12, 16, 20, 22]
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
    assert ", 1 window of " in out  # shorter than one window: one, padded
    _check_error(*cli_runs["size_mismatch"], "112x112")


def test_text_output_for_a_folder(models, videos, capsys):
    assert _invoke(videos["folder"], {"model": models["keras"], "threads": 1, "top": 2}) == 0
    out = capsys.readouterr().out
    assert out.count("  video (") == 3 and out.count("frames/s") == 3 and "ms per clip (keras" in out
    assert "(keras, 1 thread)" in out  # not "1 threads"
    for name in ("clip2.avi:", "clip10.mp4:", "frames_a:"):
        assert name in out


def test_a_folder_whose_folders_hold_videos_says_they_are_not_read(models, videos, tmp_path,
                                                                   capsys):
    """A folder of a video and a folder of more videos: the video alone was read, without a
    word of the others."""
    import shutil

    top = tmp_path / "mixed"
    (top / "more").mkdir(parents=True)
    shutil.copy(videos["gesture"], top / "a.mp4")
    shutil.copy(videos["gesture"], top / "more" / "x.mp4")
    shutil.copytree(videos["frames"], top / "frames_b")  # a frame folder is read: not said
    assert _invoke(str(top), {"model": models["tflite"], "stride": 8}) == 0
    captured = capsys.readouterr()
    assert "a.mp4:" in captured.out and "frames_b:" in captured.out
    assert (f"note: 1 folder in {top} holds videos of its own, not read (first: {top / 'more'})"
            ) in captured.err, captured.err
    assert _invoke(str(top / "a.mp4"), {"model": models["tflite"], "stride": 8}) == 0
    assert "not read" not in capsys.readouterr().err


def test_several_sources_are_read_in_turn_as_a_folders_videos(models, videos, capsys):
    """A shell's glob: videos and folders given together, each reported as a folder's are."""
    sources = [videos["gesture"], videos["folder"], videos["corrupt"]]
    code = _invoke(sources, {"model": models["tflite"], "as_json": True, "stride": 4})
    captured = capsys.readouterr()
    assert code == 2  # the corrupt one could not be read; the others are scored
    records = [json.loads(line) for line in captured.out.splitlines()]
    read = [r["source"] for r in records if r["type"] == "video"]
    assert read == [videos["gesture"]] + [os.path.join(videos["folder"], name)
                                          for name in ("clip2.avi", "clip10.mp4", "frames_a")]
    assert [r["source"] for r in records if r["type"] == "error"] == [videos["corrupt"]]
    code = _invoke([videos["gesture"], videos["short"]],
                   {"model": models["tflite"], "output_video": "annotated.mp4"})
    _check_error(code, *capsys.readouterr(), "--output needs a single video or a camera, not "
                                             "several videos")


def test_json_lines_of_a_folder_hold_a_record_of_a_video_that_cannot_be_read(models, videos,
                                                                            tmp_path, capsys):
    import shutil

    folder = tmp_path / "mixed"
    shutil.copytree(videos["folder"], folder)
    shutil.copy(videos["corrupt"], folder / "broken.mp4")
    code = _invoke(str(folder), {"model": models["tflite"], "as_json": True, "stride": 4})
    captured = capsys.readouterr()
    assert code == 2  # a video could not be read; the others are scored
    records = [json.loads(line) for line in captured.out.splitlines()]
    errors = [r for r in records if r["type"] == "error"]
    assert [e["source"] for e in errors] == [str(folder / "broken.mp4")]
    assert errors[0]["error"] and errors[0]["error"] in captured.err
    assert sum(r["type"] == "video" for r in records) == 3


# The errors whose native libraries (FFmpeg, OpenCV's camera probe, TFLite's loader) write to
# the process's own stderr at start-up or first use: a fresh process shows what in-process
# capture may not (every case runs in process above).
NATIVE_NOISE_ERRORS = ["corrupt_video", "corrupt_model", "no_camera", "text_file"]


@pytest.mark.slow
def test_cli_errors_with_native_noise_in_a_subprocess(models, videos, tmp_path):
    cases = {name: case for name, case in _cli_cases(models, videos, str(tmp_path)).items()
             if name in NATIVE_NOISE_ERRORS}
    assert sorted(cases) == sorted(NATIVE_NOISE_ERRORS)
    results = _run_all({name: _argv(source, options) for name, (source, options, _) in cases.items()})
    for name, (_, _, expected) in cases.items():
        _check_error(*results[name], expected)


def test_a_model_of_a_fixed_batch_says_what_its_speed_line_counts(tiny, models, videos, tmp_path,
                                                                  capfd):
    """Windows are run one at a time: an export of a fixed batch (2 here) pads each to 2
    clips, and its speed line (2 clips' time per window) read as the file's speed per clip."""
    from helpers import export_onnx

    path = export_onnx(tiny, str(tmp_path / "batch2.onnx"), batch=2)
    write_sidecar(path, METADATA)
    capfd.readouterr()
    assert _invoke(videos["gesture"], {"model": path, "top": 1}) == 0
    out, err = capfd.readouterr()
    assert f"note: {path} takes a fixed batch of 2: each window is run beside 1 padding copy, " \
           "so it costs 2 clips' time" in err
    assert "ms per clip" in out
    capfd.readouterr()
    assert _invoke(videos["gesture"], {"model": models["onnx"], "top": 1}) == 0
    assert "fixed batch" not in capfd.readouterr().err  # a dynamic batch: no note


def test_default_model_missing_message(monkeypatch, tmp_path):
    missing = tmp_path / "saved_models" / "synthetic_gestures_int8.tflite"
    monkeypatch.setattr(command, "DEFAULT_MODEL", str(missing))
    with pytest.raises(PredictError, match=r"missing: run ./demo.sh"):
        predict.run(str(tmp_path))


def test_output_over_the_source_is_refused(models, videos, tmp_path, capfd, monkeypatch):
    """--output naming the video being read (by any path to it) would truncate it before it is
    decoded; a file inside a frame folder being read is refused too."""
    clip = shutil.copy(videos["gesture"], tmp_path / "clip.mp4")
    original = clip.read_bytes()
    (tmp_path / "link.mp4").symlink_to(clip)
    os.link(clip, tmp_path / "hard.mp4")
    frames = shutil.copytree(videos["frames"], tmp_path / "frames")
    monkeypatch.chdir(tmp_path)
    cases = [("clip.mp4", "clip.mp4", "is the source video"),
             ("link.mp4", "./clip.mp4", "is the source video"),
             (str(clip), "hard.mp4", "is the source video"),
             (str(frames), str(frames / "out.mp4"), "inside the source frame folder")]
    for source, output, expected in cases:
        capfd.readouterr()
        code = _invoke(source, {"model": models["onnx"], "output_video": output})
        out, err = capfd.readouterr()
        _check_error(code, out, err, expected)
        assert "would be overwritten while it is read" in err
    assert clip.read_bytes() == original and not (frames / "out.mp4").exists()


def test_bad_options_are_refused_before_the_model_loads(models, videos, capfd, monkeypatch):
    """--stride, --top and --normalization are checked before a model (seconds for a .keras one)
    is loaded; the line names the flag."""
    monkeypatch.setattr(command, "load_runner", lambda *args: pytest.fail("loaded the model"))
    cases = [({"stride": 0}, "--stride must be >= 1, not 0"),
             ({"top": 0}, "--top must be >= 1, not 0"),
             ({"top": -2}, "--top must be >= 1, not -2"),
             ({"normalization": "klingon"}, "--normalization=klingon: unknown preset; expected one of ")]
    for options, expected in cases:
        capfd.readouterr()
        code = _invoke(videos["gesture"], dict(options, model=models["onnx"]))
        out, err = capfd.readouterr()
        _check_error(code, out, err, expected)


def test_messages_name_the_flag_on_the_command_line_and_the_argument_in_python(models, videos,
                                                                              capfd, tmp_path):
    """The same mistake, said in the caller's terms: `predict.run(window=0)` and
    `predict_video(window=0)` were told "--frames must be >= 1", a flag no one typed."""
    gesture, model = videos["gesture"], models["onnx"]
    bad_output = str(tmp_path / "out.xyz")
    cases = [({"window": 0}, "--frames=0: 0 is not a positive integer", "window must be >= 1, not 0"),
             ({"stride": 0}, "--stride must be >= 1, not 0", "stride must be >= 1, not 0"),
             ({"output_video": bad_output}, f"--output={bad_output}: unsupported extension",
              f"output_video={bad_output}: unsupported extension"),
             ({"normalization": "klingon"}, "--normalization=klingon: unknown preset",
              "normalization=klingon: unknown preset")]
    for options, flag_said, argument_said in cases:
        capfd.readouterr()
        code = _invoke(gesture, dict(options, model=model))
        _check_error(code, *capfd.readouterr(), flag_said)
        # after the command line, in the same process: Python's names again
        with pytest.raises(PredictError) as raised:
            predict.run(gesture, model=model, **options)
        assert str(raised.value).startswith(argument_said), raised.value
    runner = load_runner(model)
    for options, said in (({"window": 0}, "window must be >= 1"), ({"stride": 0}, "stride must be >= 1"),
                          ({"top": 0}, "top must be >= 1")):
        with pytest.raises(PredictError, match=f"^{said}"):
            predict.predict_video(runner, gesture, **options)


def test_keras_model_on_other_backends_prints_no_start_up_noise(videos):
    """A .keras model on PyTorch or JAX: Keras imports TensorFlow there too (to serialise the
    layer configs that folding reads), whose start-up notices go to file descriptor 2 whatever
    TF_CPP_MIN_LOG_LEVEL says; JAX logs each accelerator it does not find. None of it tells the
    user anything."""
    model = os.path.join(ROOT, "saved_models", "synthetic_gestures.keras")  # BatchNorm, ReLU6
    argv = [videos["gesture"], f"--model_file={model}", "--top=1"]

    def run(backend):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND=backend)
        env.pop("JAX_PLATFORMS", None)
        return subprocess.run([sys.executable, "-m", "keras_efficient3d.predict", *argv], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(("torch", "jax"), pool.map(run, ("torch", "jax"))))
    for backend, proc in results.items():
        assert proc.returncode == 0, (backend, proc.stderr[-2000:])
        assert "speed:" in proc.stdout and "(keras, 2 threads)" in proc.stdout, backend
        noise = [line for line in proc.stderr.splitlines() if not line.startswith("note: ")]
        assert noise == [], (backend, proc.stderr)  # the note: the video is shorter than a window


def test_pipes_and_stream_urls_are_read(models, videos, tmp_path, capfd):
    """A named pipe (or a device file) has no size to check: it is read as the video it carries.
    A URL (rtsp://, http://, file://, ...) is a stream OpenCV's FFmpeg opens, read as a camera is;
    one that cannot be opened is one line naming it."""
    avi = tmp_path / "gesture.avi"
    write_video(str(avi), moving_square(20))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    feeder = threading.Thread(target=lambda: fifo.write_bytes(avi.read_bytes()), daemon=True)
    feeder.start()
    capfd.readouterr()
    code = _invoke(str(fifo), {"model": models["tflite"], "stride": 4})
    feeder.join(timeout=10)
    out, err = capfd.readouterr()
    assert code == 0, err
    assert f"{fifo}:" in out and "video (20 frames, 30.0 fps, 4 windows" in out, out
    # An MP4 as OpenCV writes it, index after the frames, which a pipe cannot seek to: said so,
    # not called corrupt (it reads as a file).
    mp4 = tmp_path / "gesture.mp4"
    write_video(str(mp4), moving_square(60, height=120, width=160))
    assert mp4.stat().st_size > 200_000  # past what FFmpeg probes of a pipe before it gives up
    feeder = threading.Thread(target=lambda: _feed(fifo, mp4), daemon=True)
    feeder.start()
    code = _invoke(str(fifo), {"model": models["tflite"], "stride": 4})
    feeder.join(timeout=10)
    out, err = capfd.readouterr()
    _check_error(code, out, err, f"{fifo}: no frame decoded from the pipe or device: a stream with "
                                 "its index at the end (an MP4 as most tools write it) cannot be "
                                 "read from a pipe; send MKV, AVI, MPEG-TS or a faststart MP4")

    code = _invoke(f"file://{avi}", {"model": models["tflite"], "stride": 4})
    out, err = capfd.readouterr()
    assert code == 0, err
    assert f"  file://{avi}, end of stream after 20 frames, 4 windows" in out, out

    code = _invoke("rtsp://127.0.0.1:9/none", {"model": models["tflite"]})  # loopback: refused
    out, err = capfd.readouterr()
    _check_error(code, out, err, "cannot open the stream rtsp://127.0.0.1:9/none (unreachable, or "
                                 "not a video OpenCV's FFmpeg reads)")


def _feed(fifo, path):
    """Writes `path` into the pipe `fifo`; a reader that stops early closes it."""
    with contextlib.suppress(BrokenPipeError):
        fifo.write_bytes(path.read_bytes())


def _stop_at(monkeypatch, name, frame):
    """Ctrl-C while the video `name` is read, at its frame `frame`."""
    from keras_efficient3d.predict import stream

    class Stopping(stream.VideoSource):
        def __iter__(self):
            for i, image in enumerate(super().__iter__()):
                if self.path.endswith(name) and i == frame:
                    raise KeyboardInterrupt
                yield image

    monkeypatch.setattr(stream, "VideoSource", Stopping)


def test_ctrl_c_before_a_video_s_first_window_reports_it_under_its_name(models, videos, capfd,
                                                                       monkeypatch):
    """Its summary came under the previous video's heading: the heading came with a window."""
    _stop_at(monkeypatch, "clip10.mp4", 2)
    capfd.readouterr()
    assert _invoke(videos["folder"], {"model": models["tflite"], "stride": 2}) == 130
    out = capfd.readouterr().out
    heading = next(i for i, line in enumerate(out.splitlines()) if line.endswith("clip10.mp4:"))
    assert out.splitlines()[heading + 1].startswith("  video (stopped by Ctrl-C after 2 frames"), out


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_ctrl_c_over_a_folder_reports_what_was_done(models, videos, capfd, monkeypatch, as_json):
    """Ctrl-C during the second of three videos: the first's summary, the second's windows and
    its summary so far (marked as stopped), then 'interrupted' and status 130."""
    _stop_at(monkeypatch, "clip10.mp4", 10)
    capfd.readouterr()
    code = _invoke(videos["folder"], {"model": models["tflite"], "stride": 2, "as_json": as_json})
    out, err = capfd.readouterr()
    assert code == 130 and err.strip() == "keras_efficient3d.predict: interrupted", err
    if as_json:
        videos_done = [json.loads(line) for line in out.splitlines() if '"type": "video"' in line]
        assert [(v["source"].rsplit("/", 1)[-1], v["frames"], v["windows"], v.get("interrupted"))
                for v in videos_done] == [("clip2.avi", 9, 2, None), ("clip10.mp4", 10, 2, True)]
    else:
        assert "clip2.avi:" in out and "clip10.mp4:" in out and "frames_a" not in out
        assert out.count("  video (") == 2 and out.count("frames/s") == 2
        assert "  video (stopped by Ctrl-C after 10 frames, 30.0 fps, 2 windows of " in out, out


def test_one_frame_is_said_in_the_singular(models, tmp_path, capfd, monkeypatch):
    video = write_video(str(tmp_path / "one.avi"), moving_square(1))
    capfd.readouterr()
    assert _invoke(video, {"model": models["tflite"]}) == 0
    out, err = capfd.readouterr()
    assert "  video (1 frame, 30.0 fps, 1 window of " in out, out
    assert f"note: {video}: 1 frame, fewer than the {FRAMES}-frame window: loop-padded" in err, err
    monkeypatch.setattr(cv2, "VideoCapture", lambda index: FakeCapture(moving_square(1)))
    assert _invoke("0", {"model": models["tflite"]}) == 0
    out, err = capfd.readouterr()
    assert "  camera 0, end of stream after 1 frame, 1 window: " in out, out


def test_the_annotated_video_written_is_named_on_stderr(models, videos, tmp_path, capfd,
                                                             monkeypatch):
    out_video = tmp_path / "overlay.mp4"
    capfd.readouterr()
    code = _invoke(videos["gesture"], {"model": models["tflite"], "output_video": str(out_video)})
    out, err = capfd.readouterr()
    assert code == 0, err
    assert out_video.is_file() and out_video.stat().st_size > 0
    assert f"wrote {out_video} (the frames with their classes drawn)\n" in err, err
    assert "wrote" not in out  # stdout is the classes'
    # Ctrl-C: the frames so far are in place, and said to be (as the camera's are)
    _stop_at(monkeypatch, os.path.basename(videos["gesture"]), 20)
    out_video.unlink()
    code = _invoke(videos["gesture"], {"model": models["tflite"], "output_video": str(out_video)})
    out, err = capfd.readouterr()
    assert code == 130 and out_video.is_file() and out_video.stat().st_size > 0
    assert err == (f"wrote {out_video} (the frames with their classes drawn)\n"
                   "keras_efficient3d.predict: interrupted\n"), err
    # before its first frame: nothing written, and an earlier file of that name not claimed
    before = out_video.read_bytes()
    _stop_at(monkeypatch, os.path.basename(videos["gesture"]), 0)
    code = _invoke(videos["gesture"], {"model": models["tflite"], "output_video": str(out_video)})
    out, err = capfd.readouterr()
    assert code == 130 and err == "keras_efficient3d.predict: interrupted\n", err
    assert out_video.read_bytes() == before


@pytest.mark.parametrize("as_json", [False, True])
def test_a_camera_that_delivers_no_frame_is_an_error(models, tmp_path, capfd, monkeypatch, as_json):
    """Opened, then end of stream at once (a camera held by another program): one message and
    status 2, as a video without a frame, not a 0-window success; no empty overlay video."""
    monkeypatch.setattr(cv2, "VideoCapture", lambda index: FakeCapture([]))
    out_video = tmp_path / "overlay.mp4"
    capfd.readouterr()
    code = _invoke("0", {"model": models["tflite"], "output": str(out_video),
                         "format": "json" if as_json else "text"})
    out, err = capfd.readouterr()
    assert code == 2, (out, err)
    assert "camera 0 opened but delivered no frame" in err and "Traceback" not in err, err
    assert "window" not in out and not out_video.exists()


def test_the_deprecated_json_flag_says_what_replaces_it(models, videos, capfd):
    capfd.readouterr()
    code = cli.invoke(command.main, command.define_flags,
                      ["keras_efficient3d.predict", videos["gesture"], f"--model_file={models['tflite']}",
                       "--json"], positional=True)
    out, err = capfd.readouterr()
    assert code == 0, err
    assert err.splitlines()[0] == "note: --json is deprecated; use --format=json (the same output)"
    assert all(json.loads(line)["type"] in ("window", "video") for line in out.splitlines())


def test_an_error_in_a_flag_set_by_its_former_spelling_names_that_spelling(models, videos,
                                                                             capfd):
    # --window sets --frames: absl's error named --frames, which the user never typed
    capfd.readouterr()
    code = cli.invoke(command.main, command.define_flags,
                      ["keras_efficient3d.predict", videos["gesture"], "--window=0",
                       f"--model_file={models['int8']}"], positional=True)
    _check_error(code, *capfd.readouterr(), "flag --window=0: 0 is not a positive integer")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full is Linux's")
def test_a_standard_output_that_cannot_be_written_is_named(models, videos, capfd, monkeypatch):
    capfd.readouterr()
    full = open("/dev/full", "w")  # noqa: SIM115  `predict ... > /dev/full`
    monkeypatch.setattr(sys, "stdout", full)
    code = _invoke(videos["gesture"], {"model": models["int8"]})
    monkeypatch.undo()
    with contextlib.suppress(OSError):  # what the failed flush left to write
        full.close()
    _check_error(code, *capfd.readouterr(),
                 "error: the standard output: No space left on device")


def test_an_annotated_video_of_a_frame_folder_says_its_assumed_frame_rate(models, videos,
                                                                            tmp_path, capfd):
    out = tmp_path / "annotated.mp4"
    capfd.readouterr()
    assert _invoke(videos["frames"], {"model": models["int8"], "output_video": str(out)}) == 0
    err = capfd.readouterr().err
    assert f"note: {videos['frames']}: it has no frame rate (frames, not a video): {out} plays " \
           "at 30 fps" in err, err
    assert out.exists()


def test_a_dash_reads_the_standard_input(tmp_path, monkeypatch):
    from keras_efficient3d.predict.sources import find_sources

    monkeypatch.chdir(tmp_path)
    assert find_sources("-") == ["/dev/stdin"]  # `cat clip.avi | predict -`
    (tmp_path / "-").write_bytes(b"x")
    assert find_sources("-") == ["-"]  # a file of that name is that file


def test_a_frame_folder_with_frames_missing_is_classified_with_a_warning(models, videos,
                                                                         tmp_path, capfd):
    folder = shutil.copytree(videos["frames"], tmp_path / "frames")
    os.remove(folder / "img_3.jpg")
    os.remove(folder / "img_4.jpg")
    capfd.readouterr()
    assert _invoke(str(folder), {"model": models["int8"]}) == 0
    err = capfd.readouterr().err
    assert (f"warning: {folder}: its numbering skips 2 frames (first: img_3.jpg); classified "
            "from those there, whose motion jumps where frames are missing") in err, err
    capfd.readouterr()
    assert _invoke(videos["frames"], {"model": models["int8"]}) == 0
    assert "warning" not in capfd.readouterr().err  # a whole folder: nothing to say
