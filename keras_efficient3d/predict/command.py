"""The command line: ``python -m keras_efficient3d.predict SOURCE [--model ...]``."""

from __future__ import annotations

import json
import math
import os
import sys

import cv2
import numpy as np

from keras_efficient3d.artifacts import ModelFileError
from keras_efficient3d.data.decode import DataError
from keras_efficient3d.predict._errors import PredictError, one_line
from keras_efficient3d.predict.output import (
    display_available,
    format_speed,
    format_window,
    summary_json,
    top_text,
    window_json,
)
from keras_efficient3d.predict.sources import capture_frames, find_sources, opencv_quiet
from keras_efficient3d.predict.stream import StreamClassifier, predict_video, resolve_spec, run_stream
from keras_efficient3d.runtime import load_runner, quiet_stderr

__all__ = ["DEFAULT_MODEL", "cli", "define_flags", "main", "run"]

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(os.path.dirname(_PACKAGE_DIR), "saved_models", "synthetic_gestures_int8.tflite")


def run(source: str, model: str | None = None, labels: str | None = None, window: int | None = None,
        stride: int = 8, top: int = 5, as_json: bool = False, threads: int | None = 2,
        output_video: str | None = None, normalization: str | None = None, display: bool = True,
        out=None, err=None) -> int:
    """What the command line does; returns the exit status (0 ok, 1 bad input, 130 Ctrl-C)."""
    out = out or sys.stdout
    err = err or sys.stderr

    def emit(obj):
        print(json.dumps(obj) if as_json else obj, file=out, flush=True)

    model = model or DEFAULT_MODEL
    if not os.path.exists(model) and os.path.abspath(model) == os.path.abspath(DEFAULT_MODEL):
        shown = os.path.relpath(DEFAULT_MODEL)
        shown = DEFAULT_MODEL if shown.startswith("..") else shown
        raise PredictError(
            f"the shipped model {shown} is missing: run ./demo.sh to train and export it, or pass "
            "--model PATH (.keras, .tflite or .onnx)")
    camera = source.isdigit() and not os.path.exists(source)
    sources = None if camera else find_sources(source)  # check the source before loading a model
    if output_video and sources is not None and len(sources) > 1:
        raise PredictError("--output_video needs a single video or a camera, not a folder of videos")
    runner = load_runner(model, threads)
    spec = resolve_spec(runner, labels=labels, window=window, normalization=normalization)
    for note in spec.notes:
        print(f"note: {note}", file=err)
    StreamClassifier(runner, spec, stride, top)  # validates stride and top before any decoding

    if camera:
        return _run_camera(int(source), runner, spec, stride, top, as_json, output_video, display, emit, err)

    _warm_up(runner, spec)
    failures = 0
    for path in sources:
        header = [] if as_json else [f"{path}:"]

        def on_window(result, path=path, header=header):
            while header:
                emit(header.pop())
            emit(window_json(result, path) if as_json else format_window(result))

        try:
            summary = predict_video(runner, path, spec=spec, stride=stride, top=top,
                                    output_video=output_video, on_window=on_window)
        except DataError as error:
            print(f"error: {one_line(error)}", file=err, flush=True)
            failures += 1
            continue
        if summary["note"]:
            print(f"note: {path}: {summary['note']}", file=err, flush=True)
        if as_json:
            emit(summary_json(summary, path))
        else:
            fps = f", {summary['fps']:.1f} fps" if summary["fps"] else ""
            emit(f"  video ({summary['frames']} frames{fps}, {summary['window_count']} windows of "
                 f"{spec.frames} frames, stride {stride}): {top_text(summary['top'])}")
            emit(format_speed(summary))
    return 1 if failures else 0


def _run_camera(index, runner, spec, stride, top, as_json, output_video, display, emit, err):
    with opencv_quiet(), quiet_stderr():
        capture = cv2.VideoCapture(index)
        opened = capture.isOpened()
    if not opened:
        capture.release()
        raise PredictError(f"cannot open camera {index} (no such device, or in use)")
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = float(fps) if fps and math.isfinite(fps) and 0 < fps < 1000 else 30.0
    name = f"camera {index}"
    _warm_up(runner, spec)
    classifier = StreamClassifier(runner, spec, stride, top)
    show = display and display_available()
    if display and not show and not as_json:
        print("note: no display (headless OpenCV or no $DISPLAY): printing results as text; "
              "Ctrl-C to stop", file=err, flush=True)

    def on_window(result):
        emit(window_json(result, name) if as_json else format_window(result))

    summary = run_stream(capture_frames(capture), classifier, on_window, display=show,
                         output_video=output_video, fps=fps, title=f"keras_efficient3d: {name}")
    if as_json:
        emit(summary_json(summary, name))
    else:
        stop = "stopped (Ctrl-C)" if summary["interrupted"] else "end of stream"
        emit(f"  {name}, {stop} after {summary['frames']} frames, {summary['window_count']} windows: "
             f"{top_text(summary['top'])}")
        emit(format_speed(summary))
    return 0


def _warm_up(runner, spec):
    """One call on a blank clip, so that the speed reported is the steady state (graph tracing,
    delegate preparation and allocation happen on the first call)."""
    runner(np.zeros((1, spec.frames, spec.height, spec.width, 3), np.float32))


FLAGS = None


def define_flags():
    """Command-line flags; defined on demand so that importing this module never registers
    flags (tests import several CLIs in one process)."""
    from absl import flags

    global FLAGS
    flags.DEFINE_string("model", None, "Model file: .keras, .tflite or .onnx. Default: the shipped "
                        "saved_models/synthetic_gestures_int8.tflite.")
    flags.DEFINE_string("labels", None, "Class names: jester, ucf101, kinetics600 (needs its official "
                        "file), or a .txt/.csv/.json file. Default: those recorded with the model.")
    flags.DEFINE_integer("window", None, "Frames per clip (default: the model's).")
    flags.DEFINE_integer("stride", 8, "Frames between the starts of consecutive windows.")
    flags.DEFINE_integer("top", 5, "Classes shown per window and per video.")
    flags.DEFINE_bool("json", False, "Print JSON lines instead of text.")
    flags.DEFINE_integer("threads", 2, "CPU threads of the runtime.")
    flags.DEFINE_string("output_video", None, "Write the frames with the overlay to this video file.")
    flags.DEFINE_string("normalization", None, "Normalisation preset when the model records none "
                        "(original, unit, kinetics, ...).")
    flags.DEFINE_bool("display", True, "Show the camera overlay in a window when a display exists.")
    FLAGS = flags.FLAGS


def cli(source: str, **options) -> int:
    """`run` as the command line runs it: bad input is one ``error: ...`` line on stderr and
    status 1 (no traceback); Ctrl-C is status 130."""
    try:
        return run(source, **options)
    except (PredictError, ModelFileError, DataError, OSError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130


def main(argv):
    if len(argv) != 2:
        print("error: give one SOURCE (a video file, a folder, or a camera index); see --help",
              file=sys.stderr)
        return 2
    return cli(argv[1], model=FLAGS.model, labels=FLAGS.labels, window=FLAGS.window,
               stride=FLAGS.stride, top=FLAGS.top, as_json=FLAGS.json, threads=FLAGS.threads,
               output_video=FLAGS.output_video, normalization=FLAGS.normalization,
               display=FLAGS.display)

