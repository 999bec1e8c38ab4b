"""Sliding-window classification of a stream of frames: what a clip must look like
(`ClipSpec`, from the model, its metadata and the options), frame preprocessing, the
`StreamClassifier`, and the loops over files, folders and cameras."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator

import cv2
import numpy as np

from keras_efficient3d.artifacts import (
    FRAMES_DTYPE,
    TRAINED_ON,
    ModelMetadata,
    read_metadata,
    sidecar_path,
)
from keras_efficient3d.data.decode import DataError
from keras_efficient3d.data.normalization import PRESETS, Normalization
from keras_efficient3d.data.spatial import val_transform
from keras_efficient3d.data.temporal import loop_pad
from keras_efficient3d.label_sets import class_key, run_labels
from keras_efficient3d.predict._errors import PredictError, one_line, option
from keras_efficient3d.predict.labels import load_labels
from keras_efficient3d.predict.output import (
    DEFAULT_FPS,
    counted,
    draw_overlay,
    open_window,
    open_writer,
)
from keras_efficient3d.predict.sources import VideoSource

__all__ = ["ClipSpec", "PredictionInterrupted", "StreamClassifier", "iter_stream", "make_clip", "prepare_frames",
           "predict_video",
           "preprocess_frame", "resolve_spec", "run_stream"]


@dataclasses.dataclass
class ClipSpec:
    """How frames become the model's input, resolved from the model and its metadata.

    Attributes:
        frames: frames per clip.
        height, width: frame size fed to the model.
        downsample: one frame out of ``downsample`` in a window of ``frames * downsample``.
        normalization: applied to 0-255 RGB floats; ``None`` when the model includes it.
        labels: class names, one per model output.
        probabilities: the model outputs probabilities (``True``), logits (``False``) or
            unknown (``None``: told apart on the first window: non-negative, summing to 1).
        notes: assumptions made (printed to stderr).
        uint8_frames: the model takes the uint8 frames themselves and normalises them
            (`keras_efficient3d.runtime.InputSpec`); clips stay uint8.
    """

    frames: int
    height: int
    width: int
    downsample: int = 1
    normalization: Normalization | None = None
    labels: list | None = None
    probabilities: bool | None = None
    notes: list = dataclasses.field(default_factory=list)
    uint8_frames: bool = False

    @property
    def span(self):
        """Frames of the video one window covers."""
        return self.frames * self.downsample


def _check_recorded_input(path, recorded, uint8_frames):
    """Refuses metadata whose input values are not what the file's input tensor takes: a
    sidecar copied from another export (a float IR beside the sidecar of one of frames) ran
    without a word and named the wrong classes."""
    if not isinstance(recorded, str):
        return
    # what `artifacts.frames_metadata` and the float exports record (a model converted with
    # its preprocessing records "uint8 or float32 0-255": either holds)
    frames = recorded.startswith(FRAMES_DTYPE.split(",")[0])
    if frames == uint8_frames or not (frames or recorded.startswith("float32")):
        return
    takes = ("uint8 RGB frames (0-255), which it normalises itself" if uint8_frames else
             "float clips")
    _refuse_record(path, f"the model takes \"{recorded}\", but the model's input tensor "
                         f"takes {takes}")


def _refuse_record(path, contradiction):
    """Refuses the record of `path` (its `.keras` archive's, else its sidecar) that says
    `contradiction` of the file: most likely another export's, copied beside it."""
    where = path if path.endswith(".keras") else sidecar_path(path)
    raise PredictError(f"{where}: the metadata says {contradiction}: the metadata of another "
                       "export? Export the model again (its metadata is written beside it), or "
                       "remove the file to run the model without it")


def _check_recorded_outputs_and_batch(runner, metadata):
    """Refuses metadata of another class count or batch than the file's: a sidecar copied
    from another export of the same clip ran without a word, naming class 0 of 27 for a model
    of 8 (TensorRT builds an engine's profile from the recorded batch, too)."""
    recorded = (metadata.model or {}).get("num_classes")
    classes = runner.num_classes
    if isinstance(recorded, int) and classes is not None and recorded != classes:
        _refuse_record(runner.path, f"{recorded} classes, but the model outputs {classes}")
    if metadata.batch is None or runner.backend not in ("onnx", "openvino"):
        return  # only ONNX and OpenVINO exports record their batch axis
    said = None if metadata.batch == "dynamic" else int(metadata.batch)
    batch = runner.input_spec.batch
    if said != batch:
        shown = "a dynamic batch" if batch is None else f"a batch of {batch}"
        _refuse_record(runner.path, f"batch {metadata.batch}, but the model has {shown}")


def resolve_spec(runner, metadata: ModelMetadata | dict | None = None, labels=None, window: int | None = None,
                 normalization=None) -> ClipSpec:
    """Combines the runner's input tensor, the recorded metadata and the user's options.

    Args:
        runner: from `load_runner`.
        metadata: a `ModelMetadata` (or its dict) (``None``: read it from ``runner.path``
            with `keras_efficient3d.artifacts.read_metadata`).
        labels: class names, a label set name or file (overrides the metadata's).
        window: frames per clip asked by the user; must match the model if it is fixed.
        normalization: preset name or `Normalization` used when the metadata records none;
            one that differs from what the metadata records is refused.

    Raises:
        PredictError: the metadata, the options and the input tensor disagree.
    """
    path = runner.path
    if metadata is None:
        metadata = read_metadata(path)
        unrecorded = metadata is None
        metadata = metadata or ModelMetadata()
    else:
        metadata = ModelMetadata.from_dict(metadata)
        unrecorded = False
    spec = runner.input_spec
    notes = []
    frames = spec.frames
    meta_frames = metadata.frames
    if meta_frames is not None and frames is not None and int(meta_frames) != frames:
        raise PredictError(f"{path}: the metadata says {meta_frames} frames per clip but the model's "
                           f"input tensor takes {frames}")
    frames = frames or meta_frames
    if window is not None:
        if int(window) < 1:
            raise PredictError(f"{option('window')} must be >= 1, not {window}")
        if frames is not None and int(window) != frames:
            raise PredictError(
                f"{path}: the model takes {frames}-frame clips; {option('window')}={window} does not "
                "match")
        frames = int(window)
    if frames is None:
        raise PredictError(f"{path}: the model does not say how many frames a clip has; pass "
                           f"{option('window')}")
    meta_size = metadata.height_width
    height, width = spec.height, spec.width
    if meta_size is not None and height is not None and width is not None and meta_size != (height, width):
        said = f"{meta_size[0]}x{meta_size[1]}"
        raise PredictError(f"{path}: the metadata says {said} frames but the model's input tensor is "
                           f"{height}x{width}")
    if height is None or width is None:
        if meta_size is None:
            raise PredictError(
                f"{path}: the model does not record its frame size (dynamic input and no metadata)")
        height, width = meta_size
    downsample = int(metadata.downsample or 1)

    given = check_options(normalization=normalization)
    uint8_frames = bool(getattr(spec, "uint8_frames", False))
    _check_recorded_input(path, metadata.dtype, uint8_frames)
    _check_recorded_outputs_and_batch(runner, metadata)
    if uint8_frames and not metadata.preprocessing_included:
        # its input type says so even where no sidecar does
        metadata = dataclasses.replace(metadata, preprocessing_included=True)
    if given is not None:
        _check_normalization(path, metadata, given, normalization)
    norm = None
    if not metadata.preprocessing_included:
        if metadata.normalization is not None:
            norm = metadata.normalization
        elif given is not None:
            norm = given
        else:
            norm = Normalization.preset("original")
            notes.append(("normalisation", f"normalisation preset 'original' (pass {option('normalization')})"))

    if labels is None:
        origin = "recorded in its metadata"
    else:
        origin = "the labels given" if isinstance(labels, (list, tuple)) else f"{option('labels')}={labels}"
    if labels is not None and not isinstance(labels, (list, tuple)):
        labels = load_labels(labels)
    given = labels is not None
    labels = list(labels) if labels is not None else metadata.labels
    # the same names in another order: --labels=jester for an authors' Jester checkpoint,
    # whose outputs follow the original's (alphabetical) order, names every class wrong
    def keys(names):
        return [class_key(name) for name in names]

    reordered = given and metadata.labels and keys(labels) != keys(metadata.labels) and \
        sorted(keys(labels)) == sorted(keys(metadata.labels))
    classes = runner.num_classes
    # only for a model train.py wrote (it records what it was trained on): a converted
    # 600-class model saved into a Jester run's folder is no model of that run
    beside = run_labels(path) if labels is None and classes is not None and path and \
        os.path.isfile(path) and TRAINED_ON in metadata.extra else None
    named = None
    if beside is not None and len(beside) <= classes:
        # a model trained with --num_classes above its data's classes records no names; its
        # run's labels.txt names the first outputs (evaluate.py reads it too)
        labels = beside + [f"class {i}" for i in range(len(beside), classes)]
        named = (f"{os.path.basename(path)} records no class names: those of labels.txt beside "
                 "it" + ("" if len(beside) == classes else
                         f", for its first {len(beside)} of {classes} outputs"))
    if labels is not None and classes is not None and len(labels) != classes:
        raise PredictError(f"{path}: {len(labels)} labels for a model with {classes} classes ({origin})")
    if labels is None and classes is not None:
        labels = [f"class {i}" for i in range(classes)]
        notes.append(("class names", f"class indices for names (pass {option('labels')})"))
    notes = _assumptions(os.path.basename(path), notes, unrecorded)
    if unrecorded:
        notes += _records_of_other_names(path)
    if named:
        notes.append(named)
    if reordered:
        notes.append(f"{os.path.basename(path)} records these class names in another order; "
                     f"its outputs are named by {origin}, as asked (leave {option('labels')} out for the "
                     "names it records)")
    output = metadata.output
    probabilities = {"probabilities": True, "logits": False}.get(output)
    if probabilities is None and _softmax_quantization(getattr(runner, "output_quantization", None)):
        # TFLite quantizes a softmax output on these fixed parameters, whatever the model;
        # rounded to 1/256, 600 probabilities need not sum to 1 within the guess's 2%
        probabilities = True
    return ClipSpec(int(frames), int(height), int(width), downsample, norm, labels, probabilities, notes,
                    uint8_frames)


def _records_of_other_names(path):
    """A note naming the records beside a file without one that are of another file of its
    kind (gesture.xml beside fp32.xml.json and no fp32.xml: a renamed export, whose record
    did not follow it)."""
    if not path or not os.path.isfile(path) or path.endswith(".keras"):
        return []
    folder, name = os.path.split(os.path.abspath(path))
    ext = os.path.splitext(name)[1]
    try:
        orphans = sorted(entry for entry in os.listdir(folder)
                         if entry.lower().endswith(ext.lower() + ".json")
                         and not os.path.exists(os.path.join(folder, entry[:-len(".json")])))
    except OSError:
        return []
    if not orphans:
        return []
    return [f"{', '.join(orphans[:3])} beside it record{'s' if len(orphans) == 1 else ''} a "
            f"{ext} file that is not there: the record of this one, renamed? Copy it to "
            f"{name}.json"]


def _assumptions(name, assumed, unrecorded):
    """The notes saying what was assumed for what the model does not record (``assumed``:
    (what, assumption) pairs); one line for a model without any metadata, the frame step
    included (no flag sets it: a model trained on one frame in N would see its clips
    stretched N times)."""
    if not unrecorded:
        return [f"{name} records no {what}; assuming {assumption}" for what, assumption in assumed]
    said = [assumption for _, assumption in assumed]
    said.insert(min(1, len(said)), "every frame (a model trained on one frame in N needs its sidecar)")
    where = ("none in the file, no sidecar beside it" if name.lower().endswith(".keras")
             else f"no {name}.json beside it")
    listed = ", ".join(said[:-1]) + " and " + said[-1] if len(said) > 1 else said[0]
    return [f"{name} records no metadata ({where}): assuming {listed}"]


def check_options(stride=8, top=5, normalization=None) -> Normalization | None:
    """Refuses a ``stride`` or ``top`` below 1 and an unknown normalisation preset, in a line
    naming the option (the flag under the command line, the argument from Python: `option`):
    predict checks them before it loads a model. Returns the normalisation
    (``None`` when none is given)."""
    if int(stride) < 1:
        raise PredictError(f"{option('stride')} must be >= 1, not {stride}")
    if int(top) < 1:
        raise PredictError(f"{option('top')} must be >= 1, not {top}")
    if not normalization:
        return None
    try:
        return Normalization.coerce(normalization)
    except ValueError as err:
        if isinstance(normalization, str):  # the flag's value: answered in the flag's terms
            raise PredictError(f"{option('normalization')}={normalization}: unknown preset; expected one of "
                               f"{', '.join(PRESETS)}") from None
        raise PredictError(one_line(err)) from None


def _check_normalization(path, metadata: ModelMetadata, given: Normalization, asked):
    """Refuses a normalisation asked for beside a model that records its own and differs from
    it: one of the two would be silently ignored, and the wrong one gives wrong classes."""
    recorded = metadata.normalization
    shown = f"{option('normalization')}={asked}" if isinstance(asked, str) else "the normalisation given"
    if recorded is not None and given != recorded:
        itself = " and applies it itself" if metadata.preprocessing_included else ""
        raise PredictError(f"{path} records its normalisation ({recorded.describe()})"
                           f"{itself}; {shown} differs: leave it out")
    if recorded is None and metadata.preprocessing_included and given != PRESETS["none"]:
        raise PredictError(f"{path} normalises its frames itself (preprocessing included); "
                           f"{shown} would not be applied: leave it out")


def preprocess_frame(frame: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """One RGB uint8 frame -> ``(height, width, 3)`` uint8: ``Scale`` + ``CenterCrop`` as in
    validation (for non-square inputs: scaled to cover, then centre-cropped)."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise DataError(f"expected an RGB frame (H, W, 3), got shape {frame.shape}")
    if frame.dtype != np.uint8:  # else taken as 0-255 pixels whatever its range, and normalised so
        raise DataError(f"expected RGB uint8 frames (0-255); got {frame.dtype} values: convert them "
                        "first, e.g. (frame * 255).round().astype(np.uint8) for 0-1 floats")
    if spec.height == spec.width:
        return val_transform(frame[None], spec.height)[0]
    h, w = frame.shape[:2]
    factor = max(spec.height / h, spec.width / w)
    size = (max(spec.width, round(w * factor)), max(spec.height, round(h * factor)))
    scaled = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    x1 = (scaled.shape[1] - spec.width) // 2
    y1 = (scaled.shape[0] - spec.height) // 2
    return np.ascontiguousarray(scaled[y1:y1 + spec.height, x1:x1 + spec.width])


def prepare_frames(frames, spec: ClipSpec) -> np.ndarray:
    """Preprocessed uint8 frames (``(..., H, W, 3)``) as the model takes them: float32,
    normalised; or uint8 as they are, for a model that normalises them (``spec.uint8_frames``)."""
    if spec.uint8_frames:
        return np.asarray(frames, np.uint8)
    frames = np.asarray(frames, np.float32)
    # Normalization.apply keeps float32 (its mean and std are float32 too)
    return frames if spec.normalization is None else spec.normalization.apply(frames)


def make_clip(frames, spec: ClipSpec) -> np.ndarray:
    """Preprocessed uint8 frames ``(T, H, W, 3)`` -> the float32 model input ``(1, T, H, W, 3)``
    (uint8, the frames themselves, for a model that normalises them: ``spec.uint8_frames``).

    Raises:
        DataError: frames of another size than the model's (decoded frames: resize and crop
            each with `preprocess_frame` first), or not uint8 RGB.
    """
    array = np.asarray(frames)
    wanted = (spec.frames, spec.height, spec.width, 3)
    if array.ndim != 4 or array.shape[1:] != wanted[1:] or array.dtype != np.uint8:
        raise DataError(
            f"make_clip takes the window's frames resized and cropped to the model's input, "
            f"uint8 {wanted}; received {array.dtype} {array.shape}: make each decoded RGB frame "
            "preprocess_frame(frame, spec) first")
    return np.ascontiguousarray(prepare_frames(array, spec)[None])


# ---------------------------------------------------------------------------------------
# Sliding-window classification of a stream of frames.


def _softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max())
    return (e / e.sum()).astype(np.float32)


def _softmax_quantization(quantization):
    """Whether an integer output's (scale, zero point) are those TFLite gives a softmax:
    1/256, with zero at -128 (int8) or 0 (uint8)."""
    return quantization is not None and abs(quantization[0] - 1 / 256) < 1e-9 and \
        quantization[1] in (-128, 0)


def _looks_like_probabilities(y):
    return bool(np.all(y >= -1e-3) and np.all(y <= 1 + 1e-3) and abs(float(y.sum()) - 1.0) < 0.02)


class StreamClassifier:
    """Feeds frames one at a time; classifies the last ``spec.span`` frames every ``stride``.

    ``push(frame)`` returns a window result (dict) when a window completes, else ``None``;
    ``finish()`` at the end of the stream classifies its last frames where no window had
    them (its last ``span`` frames), or loop-pads a stream shorter than one window (as in
    training); ``summary()`` averages the windows' probabilities.

    A window result: ``window`` (0-based), ``start``/``end`` (frame indices, inclusive),
    ``top`` (list of ``{index, label, score}``), ``probabilities`` (all classes), ``ms``
    (model time), ``padded``.
    """

    def __init__(self, runner, spec: ClipSpec, stride: int = 8, top: int = 5):
        check_options(stride, top)
        takes_frames = bool(getattr(getattr(runner, "input_spec", None), "uint8_frames", False))
        if spec.uint8_frames != takes_frames:
            # outputs_unchecked below would cast one kind of clip into the other silently
            raise ValueError(f"{getattr(runner, 'path', 'the model')}: the clip spec "
                             f"{'keeps uint8 frames' if spec.uint8_frames else 'normalises frames'} "
                             f"but the model takes {'uint8 frames' if takes_frames else 'normalised clips'}: "
                             "build the spec with resolve_spec(runner)")
        self.runner, self.spec = runner, spec
        # clips of prepared uint8 frames have the model's shape and finite values: the
        # runner's pass checking a caller's clips would only add to the time reported.
        self._model = getattr(runner, "outputs_unchecked", runner)
        self.stride, self.top = int(stride), int(top)
        self.buffer = collections.deque(maxlen=spec.span)
        self.frames_seen = 0
        self.windows = 0
        self._last_end = -1
        self.padded = False
        self.model_seconds = 0.0
        self.started = None
        self._sum = None
        self._probabilities = spec.probabilities

    def push(self, frame) -> dict | None:
        if self.started is None:
            self.started = time.perf_counter()
        # each frame made model input once, not once per window it is in (stride 1: 16 times)
        self.buffer.append(prepare_frames(preprocess_frame(frame, self.spec), self.spec))
        self.frames_seen += 1
        span = self.spec.span
        if len(self.buffer) == span and (self.frames_seen - span) % self.stride == 0:
            clip = list(self.buffer)[::self.spec.downsample]
            return self._classify(clip, self.frames_seen - span, self.frames_seen - 1, False)
        return None

    def finish(self) -> dict | None:
        """The stream's last window, where frames at its end were in none: its last `span`
        frames (overlapping the window before; a stride that does not divide the stream
        left up to stride - 1 frames, or span - 1, unclassified), or, for a stream shorter
        than one window, its frames loop padded. None when every frame was in a window."""
        if not self.buffer or self._last_end >= self.frames_seen - 1:
            return None
        if self.windows:
            clip = list(self.buffer)[::self.spec.downsample]
            return self._classify(clip, self.frames_seen - self.spec.span, self.frames_seen - 1,
                                  False)
        order = loop_pad(np.arange(len(self.buffer)), self.spec.span)[::self.spec.downsample]
        frames = list(self.buffer)
        self.padded = True
        return self._classify([frames[i] for i in order], 0, self.frames_seen - 1, True)

    def _classify(self, frames, start, end, padded):
        clip = np.stack(frames)[None]  # frames already prepared (`push`)
        begin = time.perf_counter()
        output = self._model(clip)[0]
        elapsed = time.perf_counter() - begin
        self.model_seconds += elapsed
        if not np.all(np.isfinite(output)):
            raise PredictError(f"{getattr(self.runner, 'path', 'the model')}: the model's output "
                               f"for frames {start}-{end} is not finite (NaN or infinity): a "
                               "model that overflows (float16?) or diverged in training")
        if self.spec.labels is not None and len(output) != len(self.spec.labels):
            raise PredictError(f"{self.runner.path}: the model outputs {len(output)} classes but "
                               f"{len(self.spec.labels)} labels are given")
        if self._probabilities is None:
            self._probabilities = _looks_like_probabilities(output)
        if self._probabilities:
            probs = np.clip(output, 0, None)
            probs = (probs / max(float(probs.sum()), 1e-12)).astype(np.float32)
        else:
            probs = _softmax(output)
        self._sum = probs.astype(np.float64) if self._sum is None else self._sum + probs
        result = {"window": self.windows, "start": int(start), "end": int(end),
                  "top": self._top(probs), "probabilities": probs, "ms": elapsed * 1000.0,
                  "padded": bool(padded)}
        self.windows += 1
        self._last_end = int(end)
        return result

    def _top(self, probs):
        labels = self.spec.labels or [f"class {i}" for i in range(len(probs))]
        order = np.argsort(-probs, kind="stable")[:self.top]
        return [{"index": int(i), "label": labels[i], "score": float(probs[i])} for i in order]

    def summary(self) -> dict:
        """Whole-stream result: mean probabilities over windows, top-k, speed."""
        elapsed = time.perf_counter() - self.started if self.started is not None else 0.0
        mean = (self._sum / self.windows).astype(np.float32) if self.windows else None
        speed = {
            "frames_per_s": self.frames_seen / elapsed if elapsed > 0 else None,
            "ms_per_clip": 1000.0 * self.model_seconds / self.windows if self.windows else None,
            "seconds": elapsed,
            "backend": self.runner.backend,
            "threads": self.runner.threads,
        }
        devices = getattr(self.runner, "execution_devices", None)  # OpenVINO's (what AUTO chose)
        if devices:
            speed["device"] = ",".join(devices)
        return {
            "frames": self.frames_seen,
            "window_count": self.windows,
            "padded": self.padded,
            "top": self._top(mean) if mean is not None else [],
            "probabilities": mean,
            "speed": speed,
        }


def _stream(frames: Iterable, classifier: StreamClassifier) -> Iterator:
    """``(frame, window result or None)`` for every frame, then ``(None, result)`` of the
    window of the frames at the end that no window had (`StreamClassifier.finish`)."""
    for frame in frames:
        yield frame, classifier.push(frame)
    result = classifier.finish()
    if result is not None:
        yield None, result


def iter_stream(frames: Iterable, runner, spec: ClipSpec | None = None, stride: int = 8,
                top: int = 5, classifier: StreamClassifier | None = None) -> Iterator[dict]:
    """Window results over any iterable of RGB uint8 frames (a video, a camera, a test list).

    Pass ``classifier`` to read its ``summary()`` afterwards.
    """
    if classifier is None:
        classifier = StreamClassifier(runner, spec if spec is not None else resolve_spec(runner), stride, top)
    for _, result in _stream(frames, classifier):
        if result is not None:
            yield result


def run_stream(frames: Iterable, classifier: StreamClassifier, on_window: Callable | None = None,
               display: bool = False, output_video: str | None = None, fps: float | None = None,
               title: str = "keras_efficient3d") -> dict:
    """The streaming loop: classifies ``frames`` (any iterable of RGB uint8 frames), calls
    ``on_window(result)`` for each window, shows the annotated frames when ``display`` and a
    display exists, writes them to ``output_video`` (at ``fps``) if given.

    Ends at the end of the stream, on Ctrl-C (``KeyboardInterrupt``) or on ``q``/Esc in the
    window. Returns ``classifier.summary()`` plus ``interrupted`` and ``displayed``.
    """
    show = bool(display) and open_window(title)
    writer = None
    latest = None
    rate = None  # processing frame rate, smoothed
    last = time.perf_counter()
    interrupted = False
    # The written frames before the first result wait for it: it is the window that covers
    # them, and a video shorter than a window has no other (its loop-padded one, at the end).
    pending = []

    def overlay(frame, rate):
        return draw_overlay(cv2.cvtColor(np.asarray(frame, np.uint8), cv2.COLOR_RGB2BGR), latest, rate)

    try:
        for frame, result in _stream(frames, classifier):
            if result is not None:
                latest = result
                if on_window is not None:
                    on_window(result)
                for held in pending:
                    writer.write(overlay(*held))
                pending.clear()
            if frame is None or not (show or output_video):
                continue
            now = time.perf_counter()
            if now > last:
                instant = 1.0 / (now - last)
                rate = instant if rate is None else 0.9 * rate + 0.1 * instant
            last = now
            canvas = overlay(frame, rate) if show or latest is not None else None
            if output_video:
                if writer is None:
                    writer = open_writer(output_video, fps, np.shape(frame))
                if latest is None:
                    pending.append((np.array(frame, np.uint8), rate))  # a copy: a source may reuse its buffer
                else:
                    writer.write(canvas)
            if show:
                cv2.imshow(title, canvas)
                if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                    break
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        if writer is not None:
            writer.discard()  # an earlier file of that name stays as it was
            writer = None
        raise
    finally:
        if writer is not None:
            for held in pending:  # stopped before any result
                writer.write(overlay(*held))
            writer.close()
        if show:
            with contextlib.suppress(cv2.error):
                cv2.destroyWindow(title)
    summary = classifier.summary()
    summary.update(interrupted=interrupted, displayed=show)
    return summary


def predict_video(runner, path, window: int | None = None, stride: int = 8, top: int = 5,
                  spec: ClipSpec | None = None, labels=None, output_video: str | None = None,
                  on_window: Callable | None = None) -> dict:
    """Classifies one video file or frame folder with sliding windows.

    Args:
        runner: from `load_runner`.
        path: video file or frame folder.
        window: frames per clip (default: the model's).
        stride: frames between window starts.
        top: classes reported per window and for the video.
        spec: a resolved `ClipSpec` (else from the runner, its metadata, ``labels``, ``window``).
        labels: class names, set name or file.
        output_video: write the annotated frames there.
        on_window: called with each window result as it completes.

    Returns:
        ``{"source", "fps", "frames", "windows": [window results], "window_count", "top",
        "probabilities", "padded", "note", "speed": {"frames_per_s", "ms_per_clip", ...}}``; times of windows
        (``start_s``/``end_s``: the decoder's frame timestamps, which follow a variable frame
        rate; frame / fps where there are none) when they are known.

    Raises:
        DataError: unreadable video. PredictError: options that do not fit the model.
        PredictionInterrupted: Ctrl-C (a KeyboardInterrupt carrying the summary so far).
    """
    if spec is None:
        spec = resolve_spec(runner, labels=labels, window=window)
    source = VideoSource(path)
    classifier = StreamClassifier(runner, spec, stride, top)
    windows = []

    def collect(result):
        span = source.frame_times(result["start"], result["end"])
        if span is not None:
            result["start_s"], result["end_s"] = span
        windows.append(result)
        if on_window is not None:
            on_window(result)

    summary = run_stream(source, classifier, collect, output_video=output_video, fps=source.fps)
    interrupted = summary.pop("interrupted")
    summary.pop("displayed", None)
    notes = []
    if summary["padded"]:
        notes.append(f"{counted(summary['frames'], 'frame')}, fewer than the {spec.span}-frame "
                     "window: loop-padded as in training")
    if output_video and not source.fps:  # a frame folder: a Jester folder's 12 fps played 2.5x
        notes.append(f"it has no frame rate (frames, not a video): {output_video} plays at "
                     f"{DEFAULT_FPS:g} fps")
    note = "; ".join(notes) or None
    warnings = []
    if getattr(source, "truncated", False):
        warnings.append(f"decoded {source.decoded} of the {source.frame_count} frames the file "
                        "declares (truncated or corrupt video); classified from those")
    if getattr(source, "missing", None):
        skipped, first = source.missing
        warnings.append(f"its numbering skips {counted(skipped, 'frame')} (first: {first}); "
                        "classified from those there, whose motion jumps where frames are missing")
    warning = "; ".join(warnings) or None
    summary.update(source=os.fspath(path), fps=source.fps, windows=windows, note=note,
                   warning=warning)
    if interrupted:
        raise PredictionInterrupted(dict(summary, interrupted=True))
    return summary


class PredictionInterrupted(KeyboardInterrupt):
    """Ctrl-C during `predict_video`; ``summary``: its result for the frames read until then
    (``interrupted``: True)."""

    def __init__(self, summary):
        super().__init__()
        self.summary = summary
