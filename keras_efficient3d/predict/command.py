"""The command line: ``python -m keras_efficient3d.predict SOURCE [SOURCE ...] [--model_file ...]``."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Sequence

import cv2
import numpy as np
from absl import flags

from keras_efficient3d import cli
from keras_efficient3d.artifacts import check_keras_archive
from keras_efficient3d.data.decode import DataError
from keras_efficient3d.predict._errors import PredictError, command_line_names, option
from keras_efficient3d.predict.output import (
    check_output_path,
    counted,
    display_available,
    error_json,
    format_speed,
    format_window,
    summary_json,
    top_text,
    window_json,
)
from keras_efficient3d.predict.sources import (
    capture_frames,
    find_sources,
    is_stream_url,
    opencv_quiet,
    unread_folders,
)
from keras_efficient3d.predict.stream import (
    PredictionInterrupted,
    StreamClassifier,
    check_options,
    predict_video,
    resolve_spec,
    run_stream,
)
from keras_efficient3d.runtime import load_runner, quiet_stderr

__all__ = ["DEFAULT_MODEL", "define_flags", "main", "run"]

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(os.path.dirname(_PACKAGE_DIR), "saved_models", "synthetic_gestures_int8.tflite")


def run(source: str | Sequence[str], model: str | None = None, labels: str | None = None, window: int | None = None,
        stride: int = 8, top: int = 5, as_json: bool = False, threads: int | None = 2,
        output_video: str | None = None, normalization: str | None = None, display: bool = True,
        out=None, err=None, openvino_precision: str = "f32", openvino_device: str = "CPU") -> int:
    """What the command line does; returns the exit status (0, or 2 when a video of a folder
    could not be read). Bad input raises ValueError or OSError (the command line reports it as
    one line and status 2)."""
    out = out or sys.stdout
    err = err or sys.stderr

    def emit(obj):
        # One write with its newline: print's two let a Ctrl-C between them glue the summary
        # onto the last window's line (a JSON-lines reader then fails on both).
        # allow_nan=False: NaN is no JSON (a strict reader fails on the line); `_classify`
        # refuses non-finite outputs, this is the backstop
        try:
            out.write(f"{json.dumps(obj, allow_nan=False) if as_json else obj}\n")
            out.flush()
        except BrokenPipeError:
            raise  # a reader gone (`| head`): cli.run ends quietly
        except OSError as error:  # `> /dev/full`: "No space left on device", but of what
            if error.filename is not None or error.strerror is None:
                raise
            raise OSError(error.errno, error.strerror,
                          getattr(out, "name", None) if out is not sys.stdout
                          else "the standard output") from None

    model = model or DEFAULT_MODEL
    if not os.path.exists(model) and os.path.abspath(model) == os.path.abspath(DEFAULT_MODEL):
        shown = os.path.relpath(DEFAULT_MODEL)
        shown = DEFAULT_MODEL if shown.startswith("..") else shown
        raise PredictError(
            f"the shipped model {shown} is missing: run ./demo.sh to train and export it, or pass "
            f"{option('model')}=PATH (.keras, .tflite, .onnx or OpenVINO .xml)")
    check_options(stride, top, normalization)  # before a model that takes seconds to load
    given = [os.fspath(source)] if isinstance(source, (str, os.PathLike)) else [
        os.fspath(s) for s in source]
    if not given:
        raise PredictError("no SOURCE given (a video file, a folder, a camera index or a stream URL)")
    lives = [_live(s) for s in given]
    named = next((s for s, live in zip(given, lives) if live is not None), None)
    if len(given) > 1 and named is not None:
        raise PredictError(f"{named}: a camera index or a stream URL is given alone, not among "
                           "other sources")
    live = lives[0]
    # several: a shell's glob of files and folders, read in turn as a folder's videos are;
    # checked before a model loads
    sources = None if live is not None else [found for path in given for found in find_sources(path)]
    if output_video and sources is not None and len(sources) > 1:
        raise PredictError(f"{option('output_video')} needs a single video or a camera, not several "
                           "videos")
    if output_video:
        check_output_path(output_video)
    if output_video and sources:
        _check_output_apart(output_video, sources[0])
    if model.lower().endswith(".keras"):
        check_keras_archive(model)  # Keras calls a truncated archive "File not found"
    runner = load_runner(model, threads, openvino_precision, openvino_device)
    spec = resolve_spec(runner, labels=labels, window=window, normalization=normalization)
    for note in spec.notes:
        print(f"note: {note}", file=err)
    for path in given if live is None else ():
        unread = unread_folders(path)
        if unread:
            counted = (f"1 folder in {path} holds videos of its own" if len(unread) == 1
                       else f"{len(unread)} folders in {path} hold videos of their own")
            print(f"note: {counted}, not read (first: {unread[0]}): a folder SOURCE stands for "
                  "the videos and frame folders directly in it; give those folders too", file=err)
    fixed = getattr(getattr(runner, "input_spec", None), "batch", None)
    if fixed and fixed > 1:
        # windows come one at a time: the speed line would read as the file's speed per clip
        copies = f"{fixed - 1} padding {'copy' if fixed == 2 else 'copies'}"
        print(f"note: {model} takes a fixed batch of {fixed}: each window is run beside "
              f"{copies}, so it costs {fixed} clips' time (an export of batch 1, or of a "
              "dynamic batch, runs one)", file=err)

    if live is not None:
        return _run_camera(live, runner, spec, stride, top, as_json, output_video, display, emit, err)

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
        except PredictionInterrupted as stop:  # what was done of this video, then status 130
            while header:  # stopped before its first window: its summary under its own name
                emit(header.pop())
            _report_video(stop.summary, path, spec, stride, as_json, emit, err)
            if stop.summary.get("frames"):  # its frames so far are in place (none: no file)
                _say_written(output_video, err)
            raise
        except DataError as error:
            if len(sources) == 1:
                raise
            # One unreadable video of a folder does not stop the others; a JSON reader gets
            # a record of it too, in the stream where the others are.
            print(f"{cli.program_name(main)}: error: {cli.error_line(error)}", file=err, flush=True)
            if as_json:
                emit(error_json(path, cli.error_line(error)))
            failures += 1
            continue
        _report_video(summary, path, spec, stride, as_json, emit, err)
        _say_written(output_video, err)
    return 2 if failures else 0


def _live(source):
    """The camera index (an int) or stream URL `source` names, or None for a path."""
    if source.isdigit() and not os.path.exists(source):
        return int(source)
    return source if is_stream_url(source) else None


def _say_written(output_video, err):
    """Where the annotated video went (stdout is the classes'), once it is in place."""
    if output_video and os.path.isfile(output_video):
        print(f"wrote {output_video} (the frames with their classes drawn)", file=err,
              flush=True)


def _report_video(summary, path, spec, stride, as_json, emit, err):
    if summary.get("warning"):
        print(f"warning: {path}: {summary['warning']}", file=err, flush=True)
    if summary["note"]:
        print(f"note: {path}: {summary['note']}", file=err, flush=True)
    if as_json:
        emit(summary_json(summary, path))
        return
    fps = f", {summary['fps']:.1f} fps" if summary["fps"] else ""
    frames = counted(summary["frames"], "frame")
    if summary.get("interrupted"):
        frames = f"stopped by Ctrl-C after {frames}"
    # A window spans frames x frame step of the video (16 frames of every second: 32).
    step = f" (one in {spec.downsample}, spanning {spec.span})" if spec.downsample > 1 else ""
    emit(f"  video ({frames}{fps}, {counted(summary['window_count'], 'window')} of {spec.frames} frames"
         f"{step}, stride {stride}): {top_text(summary['top'])}")
    emit(format_speed(summary))


def _check_output_apart(output_video, source):
    """The writer truncates its file before the reader has decoded it: the source would be
    destroyed and the windows classified from whatever was left of it."""
    target = os.path.realpath(output_video)
    origin = os.path.realpath(source)
    same = target == origin
    if not same and os.path.exists(output_video):
        with contextlib.suppress(OSError):
            same = os.path.samefile(output_video, source)  # hard links
    inside = os.path.isdir(origin) and target.startswith(origin.rstrip(os.sep) + os.sep)
    if same or inside:
        where = "is the source video" if same else "is inside the source frame folder"
        raise PredictError(f"{option('output_video')}={output_video} {where} {source}: it would be overwritten "
                           "while it is read; give another file")


def _run_camera(target, runner, spec, stride, top, as_json, output_video, display, emit, err):
    """A live source: a camera (its index) or a stream URL."""
    with opencv_quiet(), quiet_stderr():
        capture = cv2.VideoCapture(target)
        opened = capture.isOpened()
    name = f"camera {target}" if isinstance(target, int) else target
    if not opened:
        capture.release()
        if isinstance(target, int):
            raise PredictError(f"cannot open camera {target} (no such device, or in use)")
        raise PredictError(f"cannot open the stream {target} (unreachable, or not a video "
                           "OpenCV's FFmpeg reads)")
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = float(fps) if fps and math.isfinite(fps) and 0 < fps < 1000 else 30.0
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
    if not summary["frames"] and not summary["interrupted"]:
        # Opened, then nothing (a camera another program holds, a stream with no video track):
        # a run that classified nothing is not a success, as a video with no frame is not.
        why = "in use by another program?" if isinstance(target, int) else "no video track?"
        raise PredictError(f"{name} opened but delivered no frame ({why})")
    if as_json:
        emit(summary_json(summary, name))
    else:
        stop = "stopped (Ctrl-C)" if summary["interrupted"] else "end of stream"
        emit(f"  {name}, {stop} after {counted(summary['frames'], 'frame')}, "
             f"{counted(summary['window_count'], 'window')}: {top_text(summary['top'])}")
        emit(format_speed(summary))
    _say_written(output_video, err)
    if summary["interrupted"]:
        print(f"{cli.program_name(main)}: interrupted", file=err, flush=True)
        return 130  # as a video file's run ends on Ctrl-C
    return 0


def _warm_up(runner, spec):
    """One call on a blank clip, so that the speed reported is the steady state (graph tracing,
    delegate preparation and allocation happen on the first call)."""
    runner(np.zeros((1, spec.frames, spec.height, spec.width, 3), np.uint8 if spec.uint8_frames else np.float32))


def define_flags(flag_values=flags.FLAGS):
    fv = {"flag_values": flag_values}
    cli.define("model_file", None, "A .keras, .tflite, .onnx or OpenVINO .xml model. Default: the shipped "
               "saved_models/synthetic_gestures_int8.tflite.", **fv)
    cli.define("labels", None, "Or a preset: jester, jester_original (the order of the "
               "authors' Jester checkpoints), ucf101, kinetics600 (needs its official file); "
               ".txt/.csv/.json files. Default: those recorded with the model.", **fv)
    cli.define("frames", None, "(default: the model's)", **fv)
    flags.DEFINE_integer("stride", 8, "Frames between the starts of consecutive windows.", **fv)
    flags.DEFINE_integer("top", 5, "Classes shown per window and per video.", **fv)
    cli.define("format", "text", "text, or json: one JSON object per line.",
               choices=("text", "json"), **fv)
    flags.DEFINE_bool("json", False, "Deprecated: --format=json.", **fv)
    cli.define("threads", 2, **fv)
    cli.define("openvino_precision", "f32", **fv)
    cli.define("openvino_device", "CPU", **fv)
    cli.define("output", None, "A video file: the frames with the overlay.",
               check=cli.output_file, **fv)
    cli.define("normalization", None, "Used when the model records none; one that differs "
               "from what the model records is refused.", **fv)
    flags.DEFINE_bool("display", True, "Show the camera overlay in a window when a display "
                      "exists.", **fv)
    cli.define_alias("model", "model_file", **fv)
    cli.define_alias("window", "frames", **fv)
    cli.define_alias("output_video", "output", **fv)


def main(argv, flag_values=flags.FLAGS):
    if len(argv) < 2:
        raise cli.UsageError("give a SOURCE (a video file, a folder, a camera index or a stream "
                             "URL; several videos or folders are read in turn); see --help")
    f = flag_values
    if f.json and f["format"].present and f.format != "json":
        raise cli.UsageError(f"--json asks for --format=json; --format={f.format} contradicts it")
    if f.json:
        print("note: --json is deprecated; use --format=json (the same output)", file=sys.stderr,
              flush=True)
    model = f.model_file or DEFAULT_MODEL
    if not model.lower().endswith(".xml"):  # another runtime would leave them unread
        cli.refuse_unused(f, ("openvino_precision", "openvino_device"), model,
                          "it is not an OpenVINO .xml model")
    elif f["openvino_device"].present:
        from keras_efficient3d.runtime import check_openvino_device

        try:
            check_openvino_device(f.openvino_device)
        except (ValueError, ImportError) as err:
            raise cli.UsageError(f"--openvino_device={f.openvino_device}: {err}") from None
    with command_line_names():
        return run(argv[1:], model=f.model_file, labels=f.labels, window=f.frames, stride=f.stride,
                   top=f.top, as_json=f.json or f.format == "json", threads=f.threads,
                   output_video=f.output, normalization=f.normalization, display=f.display,
                   openvino_precision=f.openvino_precision, openvino_device=f.openvino_device)


if __name__ == "__main__":
    cli.run(main, define_flags, positional=True)
