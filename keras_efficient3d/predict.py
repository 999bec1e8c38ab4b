"""Real-time recognition: a video file, a folder of videos or frame folders, or a camera.

    python -m keras_efficient3d.predict clip.mp4                         # the shipped int8 TFLite model
    python -m keras_efficient3d.predict clip.mp4 --model m.keras --top 3 --json
    python -m keras_efficient3d.predict videos/ --model m.onnx --labels jester
    python -m keras_efficient3d.predict 0 --output_video annotated.mp4  # camera 0, live overlay

A clip of ``frames`` frames is classified every ``stride`` frames (sliding windows, as a
stream would see them); each frame is resized and centre-cropped as in validation
(``Scale(size)`` + ``CenterCrop(size)``) and normalised as the model was trained. The video's
scores are the softmax averaged over its windows. A video shorter than one window is loop
padded, as in training, and says so.

What the model expects (frames, size, normalisation, labels) is read from the model: the
``keras_efficient3d.json`` entry of a ``.keras`` archive (``convert.save_model``), or a
sidecar ``<model file>.json`` next to a ``.tflite``/``.onnx`` file, holding the same keys
(`write_sidecar`); ``--labels`` overrides the recorded labels. Anything that contradicts the
model's input tensor stops the run with one line.

Models run behind one small interface, `load_runner(path, threads)`: an object with an
``input_spec`` and ``__call__(clips) -> logits``, backed by Keras, LiteRT (XNNPACK) or ONNX
Runtime. int8 inputs and outputs are (de)quantised with the tensor's own parameters.

Camera mode shows the top classes and the frame rate over the picture when a display exists
(the opencv-python-headless wheel has none: then it prints text lines); ``--output_video``
writes the annotated frames either way. Ctrl-C or the end of the stream ends it cleanly.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import json
import math
import os
import re
import sys
import tempfile
import time
import zipfile
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from keras_efficient3d.data.decode import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    DataError,
    is_video_file,
    list_frame_files,
    read_image,
)
from keras_efficient3d.data.normalization import Normalization
from keras_efficient3d.data.spatial import val_transform
from keras_efficient3d.data.temporal import loop_pad

__all__ = [
    "DEFAULT_MODEL",
    "LABEL_SETS",
    "ClipSpec",
    "InputSpec",
    "PredictError",
    "StreamClassifier",
    "capture_frames",
    "cli",
    "display_available",
    "draw_overlay",
    "find_sources",
    "iter_stream",
    "load_labels",
    "load_runner",
    "predict_video",
    "read_model_metadata",
    "resolve_spec",
    "run_stream",
    "sidecar_path",
    "video_frames",
    "write_sidecar",
]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_LABELS_DIR = os.path.join(_PACKAGE_DIR, "resources", "labels")
DEFAULT_MODEL = os.path.join(os.path.dirname(_PACKAGE_DIR), "saved_models", "synthetic_gestures_int8.tflite")
METADATA_ENTRY = "keras_efficient3d.json"  # as in convert.save_model

# Shipped class lists (resources/labels/<name>.txt), in the datasets' official order:
# jester-v1-labels.csv for Jester, classInd.txt for UCF-101.
LABEL_SETS = {"jester": 27, "ucf101": 101}
_KINETICS600_HELP = (
    "the Kinetics-600 class list is not shipped (its exact official order could not be "
    "verified here); pass the official file instead: --labels=PATH to a text file with one "
    "class per line in the model's order, or to a Kinetics annotation CSV (its 'label' column; "
    "classes are then sorted by name, as the original's kinetics_json.py does)"
)


class PredictError(ValueError):
    """Bad input for prediction (source, model, labels): reported as one line."""


# ---------------------------------------------------------------------------------------
# Labels.


def _read_text_labels(path):
    labels = []
    with open(path, encoding="utf-8-sig") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            # classInd.txt style: "1 ApplyEyeMakeup".
            match = re.fullmatch(r"\d+[\s,;]+(.+)", line)
            labels.append(match[1].strip() if match else line)
    return labels


def _read_csv_labels(path):
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    for column in ("label", "name", "class", "class_name"):
        if column in header:
            index = header.index(column)
            values = [row[index].strip() for row in rows[1:] if len(row) > index and row[index].strip()]
            if len(set(values)) == len(values):
                return values  # a label map: one row per class, in order
            # An annotation CSV (one row per video): the original sorts the unique labels.
            return sorted(set(values))
    if all(len(row) == 1 for row in rows):
        return [row[0].strip() for row in rows]  # jester-v1-labels.csv: one class per line
    raise PredictError(
        f"{path}: cannot find the class names: expected a 'label' (or 'name') column, or one class per line")


def load_labels(name_or_path: str) -> list[str]:
    """Class names by set name (``jester``, ``ucf101``) or from a file.

    Files: ``.txt`` (one class per line; ``"1 ApplyEyeMakeup"`` lines as in classInd.txt
    are accepted), ``.csv`` (a ``label``/``name`` column: a label map when its values are
    unique, else an annotation CSV whose sorted unique labels are the classes, as the
    original builds them; or one class per line), ``.json`` (a list, or an object with a
    ``labels`` list, as the original's annotation files).

    Raises:
        PredictError: unknown set name, ``kinetics600`` (not shipped), unreadable or empty file.
    """
    name = os.fspath(name_or_path)
    key = name.lower().replace("-", "").replace("_", "")
    if key in ("kinetics600", "kinetics"):
        raise PredictError(_KINETICS600_HELP)
    if key in LABEL_SETS and not os.path.exists(name):
        path = os.path.join(_LABELS_DIR, f"{key}.txt")
    elif os.path.isfile(name):
        path = name
    else:
        raise PredictError(
            f"unknown label set '{name}': expected one of {', '.join(LABEL_SETS)}, kinetics600 "
            "(with its official file) or the path of a label file")
    try:
        if path.lower().endswith(".json"):
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            labels = data.get("labels") if isinstance(data, dict) else data
            if not isinstance(labels, list):
                raise PredictError(f"{path}: expected a JSON list of class names or an object with 'labels'")
            labels = [str(v) for v in labels]
        elif path.lower().endswith(".csv"):
            labels = _read_csv_labels(path)
        else:
            labels = _read_text_labels(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as err:
        raise PredictError(f"{path}: cannot read the labels ({_one_line(err)})") from None
    if not labels:
        raise PredictError(f"{path}: no class names in the labels file")
    return labels


# ---------------------------------------------------------------------------------------
# Model metadata: the .keras archive entry or a sidecar JSON.


def sidecar_path(model_path) -> str:
    """``<model file>.json``: where the metadata of a ``.tflite``/``.onnx`` model lives."""
    return os.fspath(model_path) + ".json"


def write_sidecar(model_path, metadata: dict) -> str:
    """Writes ``metadata`` next to ``model_path`` as ``<model file>.json``; returns its path.

    The keys are those of `convert.save_model`'s metadata: ``input`` (``frames``,
    ``size``, optional ``downsample``, ``layout``, ``dtype``), ``normalization``
    (`Normalization.to_config`), ``preprocessing_included`` (the model takes raw 0-255 RGB
    frames), ``labels`` and ``model``; optionally ``output`` (``"logits"`` or
    ``"probabilities"``); extra keys (a model card's accuracy, latency) are kept. A
    `Normalization` object is accepted for ``normalization``.
    """
    metadata = dict(metadata)
    if isinstance(metadata.get("normalization"), Normalization):
        metadata["normalization"] = metadata["normalization"].to_config()
    _check_metadata(metadata, sidecar_path(model_path))
    path = sidecar_path(model_path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=".json", dir=directory)
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(metadata, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _check_metadata(metadata, where):
    if not isinstance(metadata, dict):
        raise PredictError(f"{where}: model metadata must be a JSON object")
    inputs = metadata.get("input", {})
    if not isinstance(inputs, dict):
        raise PredictError(f"{where}: metadata 'input' must be an object with 'frames' and 'size'")
    for key in ("frames", "downsample"):
        value = inputs.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise PredictError(f"{where}: metadata input.{key} must be a positive integer, not {value!r}")
    size = inputs.get("size")
    if size is not None and _size_pair(size) is None:
        raise PredictError(
            f"{where}: metadata input.size must be an integer or [height, width], not {size!r}")
    if metadata.get("normalization") is not None:
        try:
            Normalization.from_config(metadata["normalization"])
        except (TypeError, ValueError) as err:
            raise PredictError(f"{where}: bad metadata normalization ({_one_line(err)})") from None
    labels = metadata.get("labels")
    if labels is not None and (not isinstance(labels, list) or not labels):
        raise PredictError(f"{where}: metadata labels must be a non-empty list of class names")


def _size_pair(size):
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size, size
    if (isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(v, int) and v > 0 for v in size)):
        return int(size[0]), int(size[1])
    return None


def read_model_metadata(model_path) -> dict:
    """The metadata recorded for a model: for ``.keras``, the archive's
    ``keras_efficient3d.json`` entry (else a sidecar); otherwise ``<model file>.json``.
    ``{}`` when nothing is recorded.

    Raises:
        PredictError: the metadata exists but is not valid JSON or has bad values.
    """
    path = os.fspath(model_path)
    metadata = None
    if path.lower().endswith(".keras"):
        try:
            with zipfile.ZipFile(path) as archive:
                if METADATA_ENTRY in archive.namelist():
                    metadata = json.loads(archive.read(METADATA_ENTRY))
        except zipfile.BadZipFile:
            raise PredictError(f"{path}: not a .keras archive (corrupt or not a Keras model)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise PredictError(f"{path}: bad {METADATA_ENTRY} in the archive ({_one_line(err)})") from None
        where = f"{path}:{METADATA_ENTRY}"
    if metadata is None:
        where = sidecar_path(path)
        if not os.path.isfile(where):
            return {}
        try:
            with open(where, encoding="utf-8") as handle:
                metadata = json.load(handle)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise PredictError(f"{where}: cannot read the model metadata ({_one_line(err)})") from None
    _check_metadata(metadata, where)
    return metadata


# ---------------------------------------------------------------------------------------
# Runners: Keras, LiteRT, ONNX Runtime behind one interface.


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The model's input tensor: ``shape`` (batch, frames, height, width, channels), ``None``
    where dynamic; ``dtype`` (numpy name); ``quantization`` (scale, zero point) for integer
    inputs."""

    shape: tuple
    dtype: str = "float32"
    quantization: tuple | None = None

    @property
    def batch(self):
        return self.shape[0]

    @property
    def frames(self):
        return self.shape[1]

    @property
    def height(self):
        return self.shape[2]

    @property
    def width(self):
        return self.shape[3]

    @property
    def channels(self):
        return self.shape[4]


def _quantize(x, scale, zero_point, dtype):
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(q, scale, zero_point):
    return (np.asarray(q, np.float32) - np.float32(zero_point)) * np.float32(scale)


def _check_input_shape(shape, path):
    if len(shape) != 5:
        raise PredictError(
            f"{path}: the model's input has shape {tuple(shape)}; expected a 5-D clip tensor "
            "(batch, frames, height, width, channels)")
    if shape[4] not in (None, 3):
        raise PredictError(f"{path}: the model's input has {shape[4]} channels; expected 3 (RGB)")


class _Runner:
    backend = "?"
    path = ""
    input_spec: InputSpec
    num_classes: int | None = None
    threads = 1

    def _run(self, batch):
        raise NotImplementedError

    def __call__(self, clips) -> np.ndarray:
        """Logits (or probabilities, as the model outputs) for float32 clips ``(N, T, H, W, 3)``."""
        clips = np.asarray(clips, np.float32)
        if clips.ndim == 4:
            clips = clips[None]
        step = self.input_spec.batch or len(clips)
        outputs = []
        for begin in range(0, len(clips), step):
            chunk = clips[begin:begin + step]
            count = len(chunk)
            if count < step:  # fixed batch: pad with copies of the last clip
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - count, axis=0)])
            if self.input_spec.quantization is not None:
                chunk = _quantize(chunk, *self.input_spec.quantization, self.input_spec.dtype)
            elif self.input_spec.dtype != "float32":
                chunk = chunk.astype(self.input_spec.dtype)
            out = np.asarray(self._run(chunk))
            outputs.append(out.reshape(out.shape[0], -1)[:count])
        return np.concatenate(outputs).astype(np.float32)

    def __repr__(self):
        return f"<{self.backend} runner {self.path} input {self.input_spec.shape} {self.input_spec.dtype}>"


class KerasRunner(_Runner):
    backend = "keras"

    def __init__(self, path, threads=None):
        import keras
        import tensorflow as tf

        # Register the project's serialisable layers before loading.
        import keras_efficient3d  # noqa: F401
        import keras_efficient3d.convert  # noqa: F401  (VideoPreprocessing)
        import keras_efficient3d.fold  # noqa: F401  (Folded)

        if threads:
            with contextlib.suppress(RuntimeError):  # too late once TF has run ops
                tf.config.threading.set_intra_op_parallelism_threads(int(threads))
                tf.config.threading.set_inter_op_parallelism_threads(1)
        self.path, self.threads = path, threads
        try:
            self.model = keras.saving.load_model(path, compile=False)
        except Exception as err:  # corrupt archives raise many different types
            raise PredictError(f"{path}: cannot load the Keras model ({_one_line(err)})") from None
        self.model = keras_efficient3d.fold.inference_form(self.model)  # BatchNorm folded
        shape = self.model.input_shape
        if isinstance(shape, list):
            raise PredictError(f"{path}: the model has {len(shape)} inputs; expected one clip input")
        _check_input_shape(shape, path)
        self.input_spec = InputSpec(tuple(shape), "float32")
        self.num_classes = self.model.output_shape[-1]

    def _run(self, batch):
        return self.model.predict_on_batch(batch)


@contextlib.contextmanager
def _quiet_stderr():
    """Silences native libraries' stderr (LiteRT's delegate banner) for a moment."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class TFLiteRunner(_Runner):
    """LiteRT with its default resolver (XNNPACK where the graph allows) and ``threads``."""

    backend = "tflite"

    def __init__(self, path, threads=None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # pragma: no cover - TensorFlow's own copy
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        self.path, self.threads = path, threads
        try:
            with _quiet_stderr():
                self.interpreter = Interpreter(model_path=path, num_threads=threads or None)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise PredictError(f"{path}: cannot load the TFLite model ({_one_line(err)})") from None
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise PredictError(f"{path}: the model has {len(inputs)} inputs; expected one clip input")
        self._input = inputs[0]
        self._output = self.interpreter.get_output_details()[0]
        signature = self._input.get("shape_signature", self._input["shape"])
        shape = tuple(int(d) for d in self._input["shape"])
        _check_input_shape(shape, path)
        if len(signature) and int(signature[0]) < 0:
            shape = (1,) + shape[1:]  # dynamic batch: allocated as 1, run clip by clip
        dtype = np.dtype(self._input["dtype"]).name
        self.input_spec = InputSpec(shape, dtype, self._quantization(self._input, "input"))
        self._output_quantization = self._quantization(self._output, "output")
        self.num_classes = int(self._output["shape"][-1])

    def _quantization(self, detail, what):
        if np.dtype(detail["dtype"]).kind not in "iu":
            return None
        scale, zero_point = detail["quantization"]
        if not scale:
            raise PredictError(f"{self.path}: the {what} tensor is {np.dtype(detail['dtype']).name} "
                               "but carries no quantization parameters")
        return float(scale), int(zero_point)

    def _run(self, batch):
        self.interpreter.set_tensor(self._input["index"], batch)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self._output["index"])
        if self._output_quantization is not None:
            out = _dequantize(out, *self._output_quantization)
        return out


class ONNXRunner(_Runner):
    backend = "onnx"
    _DTYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8",
               "tensor(float16)": "float16"}

    def __init__(self, path, threads=None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise PredictError("ONNX models need onnxruntime: pip install onnxruntime") from None
        self.path, self.threads = path, threads
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            raise PredictError(f"{path}: cannot load the ONNX model ({_one_line(err)})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise PredictError(f"{path}: the model has {len(inputs)} inputs; expected one clip input")
        self._input_name = inputs[0].name
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in inputs[0].shape)
        _check_input_shape(shape, path)
        dtype = self._DTYPES.get(inputs[0].type)
        if dtype is None:
            raise PredictError(f"{path}: unsupported input type {inputs[0].type}")
        self.input_spec = InputSpec(shape, dtype)
        last = self.session.get_outputs()[0].shape[-1] if self.session.get_outputs()[0].shape else None
        self.num_classes = last if isinstance(last, int) and last > 0 else None

    def _run(self, batch):
        return self.session.run(None, {self._input_name: batch})[0]


_RUNNERS = {".keras": KerasRunner, ".tflite": TFLiteRunner, ".onnx": ONNXRunner}


def load_runner(path, threads: int | None = 2):
    """A runner for a ``.keras``, ``.tflite`` or ``.onnx`` model.

    The runner has ``input_spec`` (`InputSpec`), ``num_classes`` (``None`` if the model does
    not say), ``backend``, and ``__call__(clips) -> logits`` taking float32 clips
    ``(N, T, H, W, 3)`` (quantised here for int8 inputs) and returning float32 ``(N, classes)``.

    Raises:
        PredictError: missing file, unknown format, unloadable model, not a clip model.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in _RUNNERS:
        raise PredictError(
            f"{path}: unsupported model format '{ext or path}' (expected .keras, .tflite or .onnx)")
    if not os.path.isfile(path):
        raise PredictError(f"{path}: model file not found")
    if os.path.getsize(path) == 0:
        raise PredictError(f"{path}: model file is empty (0 bytes)")
    return _RUNNERS[ext](path, threads)


# ---------------------------------------------------------------------------------------
# What the clip must look like.


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
    """

    frames: int
    height: int
    width: int
    downsample: int = 1
    normalization: Normalization | None = None
    labels: list | None = None
    probabilities: bool | None = None
    notes: list = dataclasses.field(default_factory=list)

    @property
    def span(self):
        """Frames of the video one window covers."""
        return self.frames * self.downsample


def resolve_spec(runner, metadata: dict | None = None, labels=None, window: int | None = None,
                 normalization=None) -> ClipSpec:
    """Combines the runner's input tensor, the recorded metadata and the user's options.

    Args:
        runner: from `load_runner`.
        metadata: from `read_model_metadata` (``None``: read it from ``runner.path``).
        labels: class names, a label set name or file (overrides the metadata's).
        window: frames per clip asked by the user; must match the model if it is fixed.
        normalization: preset name or `Normalization` used when the metadata records none.

    Raises:
        PredictError: the metadata, the options and the input tensor disagree.
    """
    path = runner.path
    if metadata is None:
        metadata = read_model_metadata(path)
    spec = runner.input_spec
    notes = []
    recorded = metadata.get("input", {}) or {}
    frames = spec.frames
    meta_frames = recorded.get("frames")
    if meta_frames is not None and frames is not None and int(meta_frames) != frames:
        raise PredictError(f"{path}: the metadata says {meta_frames} frames per clip but the model's "
                           f"input tensor takes {frames}")
    frames = frames or meta_frames
    if window is not None:
        if int(window) < 1:
            raise PredictError(f"--window must be >= 1, not {window}")
        if frames is not None and int(window) != frames:
            raise PredictError(
                f"{path}: the model takes {frames}-frame clips; --window {window} does not match")
        frames = int(window)
    if frames is None:
        raise PredictError(f"{path}: the model does not say how many frames a clip has; pass --window")
    meta_size = _size_pair(recorded["size"]) if recorded.get("size") is not None else None
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
    downsample = int(recorded.get("downsample", 1) or 1)

    norm = None
    if not metadata.get("preprocessing_included", False):
        if metadata.get("normalization") is not None:
            norm = Normalization.from_config(metadata["normalization"])
        elif isinstance(normalization, Normalization):
            norm = normalization
        else:
            name = normalization or "original"
            try:
                norm = Normalization.preset(name)
            except ValueError as err:
                raise PredictError(_one_line(err)) from None
            if not normalization:
                notes.append(f"{os.path.basename(path)} records no normalisation; assuming preset "
                             f"'{name}' (pass --normalization)")

    if labels is not None and not isinstance(labels, (list, tuple)):
        labels = load_labels(labels)
    labels = list(labels) if labels is not None else metadata.get("labels")
    classes = runner.num_classes
    if labels is not None and classes is not None and len(labels) != classes:
        raise PredictError(f"{path}: {len(labels)} labels for a model with {classes} classes")
    if labels is None and classes is not None:
        labels = [f"class {i}" for i in range(classes)]
        notes.append(f"{os.path.basename(path)} records no class names; showing indices (pass --labels)")
    output = metadata.get("output")
    probabilities = {"probabilities": True, "logits": False}.get(output)
    return ClipSpec(int(frames), int(height), int(width), downsample, norm, labels, probabilities, notes)


def preprocess_frame(frame: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """One RGB uint8 frame -> ``(height, width, 3)`` uint8: ``Scale`` + ``CenterCrop`` as in
    validation (for non-square inputs: scaled to cover, then centre-cropped)."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise DataError(f"expected an RGB frame (H, W, 3), got shape {frame.shape}")
    if spec.height == spec.width:
        return val_transform(frame[None], spec.height)[0]
    h, w = frame.shape[:2]
    factor = max(spec.height / h, spec.width / w)
    size = (max(spec.width, round(w * factor)), max(spec.height, round(h * factor)))
    scaled = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    x1 = (scaled.shape[1] - spec.width) // 2
    y1 = (scaled.shape[0] - spec.height) // 2
    return np.ascontiguousarray(scaled[y1:y1 + spec.height, x1:x1 + spec.width])


def make_clip(frames, spec: ClipSpec) -> np.ndarray:
    """Preprocessed uint8 frames ``(T, H, W, 3)`` -> the float32 model input ``(1, T, H, W, 3)``."""
    clip = np.asarray(frames, np.float32)
    if spec.normalization is not None:
        clip = spec.normalization.apply(clip)
    return np.ascontiguousarray(clip[None], dtype=np.float32)


# ---------------------------------------------------------------------------------------
# Sliding-window classification of a stream of frames.


def _softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max())
    return (e / e.sum()).astype(np.float32)


def _looks_like_probabilities(y):
    return bool(np.all(y >= -1e-3) and np.all(y <= 1 + 1e-3) and abs(float(y.sum()) - 1.0) < 0.02)


class StreamClassifier:
    """Feeds frames one at a time; classifies the last ``spec.span`` frames every ``stride``.

    ``push(frame)`` returns a window result (dict) when a window completes, else ``None``;
    ``finish()`` at the end of the stream loop-pads a stream shorter than one window (as in
    training) and classifies it; ``summary()`` averages the windows' probabilities.

    A window result: ``window`` (0-based), ``start``/``end`` (frame indices, inclusive),
    ``top`` (list of ``{index, label, score}``), ``probabilities`` (all classes), ``ms``
    (model time), ``padded``.
    """

    def __init__(self, runner, spec: ClipSpec, stride: int = 8, top: int = 5):
        if int(stride) < 1:
            raise PredictError(f"--stride must be >= 1, not {stride}")
        if int(top) < 1:
            raise PredictError(f"--top must be >= 1, not {top}")
        self.runner, self.spec = runner, spec
        self.stride, self.top = int(stride), int(top)
        self.buffer = collections.deque(maxlen=spec.span)
        self.frames_seen = 0
        self.windows = 0
        self.padded = False
        self.model_seconds = 0.0
        self.started = None
        self._sum = None
        self._probabilities = spec.probabilities

    def push(self, frame) -> dict | None:
        if self.started is None:
            self.started = time.perf_counter()
        self.buffer.append(preprocess_frame(frame, self.spec))
        self.frames_seen += 1
        span = self.spec.span
        if len(self.buffer) == span and (self.frames_seen - span) % self.stride == 0:
            clip = list(self.buffer)[::self.spec.downsample]
            return self._classify(clip, self.frames_seen - span, self.frames_seen - 1, False)
        return None

    def finish(self) -> dict | None:
        """Classifies a stream that ended before its first full window (loop padded)."""
        if self.windows or not self.buffer:
            return None
        order = loop_pad(np.arange(len(self.buffer)), self.spec.span)[::self.spec.downsample]
        frames = list(self.buffer)
        self.padded = True
        return self._classify([frames[i] for i in order], 0, self.frames_seen - 1, True)

    def _classify(self, frames, start, end, padded):
        clip = make_clip(frames, self.spec)
        begin = time.perf_counter()
        output = self.runner(clip)[0]
        elapsed = time.perf_counter() - begin
        self.model_seconds += elapsed
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
        return result

    def _top(self, probs):
        labels = self.spec.labels or [f"class {i}" for i in range(len(probs))]
        order = np.argsort(-probs, kind="stable")[:self.top]
        return [{"index": int(i), "label": labels[i], "score": float(probs[i])} for i in order]

    def summary(self) -> dict:
        """Whole-stream result: mean probabilities over windows, top-k, speed."""
        elapsed = time.perf_counter() - self.started if self.started is not None else 0.0
        mean = (self._sum / self.windows).astype(np.float32) if self.windows else None
        return {
            "frames": self.frames_seen,
            "window_count": self.windows,
            "padded": self.padded,
            "top": self._top(mean) if mean is not None else [],
            "probabilities": mean,
            "speed": {
                "frames_per_s": self.frames_seen / elapsed if elapsed > 0 else None,
                "ms_per_clip": 1000.0 * self.model_seconds / self.windows if self.windows else None,
                "seconds": elapsed,
                "backend": self.runner.backend,
                "threads": self.runner.threads,
            },
        }


def _stream(frames: Iterable, classifier: StreamClassifier) -> Iterator:
    """``(frame, window result or None)`` for every frame, then ``(None, padded result)`` when
    the stream was shorter than a window."""
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


# ---------------------------------------------------------------------------------------
# Sources.


@contextlib.contextmanager
def _opencv_quiet():
    """OpenCV logs a warning for every file it cannot open; the caller reports it once."""
    try:
        previous = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # pragma: no cover
        yield
        return
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def capture_frames(capture) -> Iterator[np.ndarray]:
    """RGB frames from an object with ``read() -> (ok, BGR frame)`` (``cv2.VideoCapture`` or a
    fake) until ``read`` fails; releases it at the end if it can."""
    try:
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        if hasattr(capture, "release"):
            capture.release()


class _VideoSource:
    """Frames of a video file or a frame folder, decoded lazily, with the video's fps."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.fps = None
        self.frame_count = None
        if os.path.isdir(self.path):
            self.files = list_frame_files(self.path)
            self.frame_count = len(self.files)
            self.capture = None
            return
        self.files = None
        if not os.path.exists(self.path):
            raise DataError("video file not found", self.path)
        if os.path.getsize(self.path) == 0:
            raise DataError("video file is empty (0 bytes)", self.path)
        with _opencv_quiet(), _quiet_stderr():
            self.capture = cv2.VideoCapture(self.path)
            opened = self.capture.isOpened()
        if not opened:
            self.capture.release()
            kind = "a corrupt video or an unsupported codec" if is_video_file(self.path) else "not a video"
            raise DataError(f"cannot open as a video ({kind})", self.path)
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and math.isfinite(fps) and 0 < fps < 1000 else None
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None

    def __iter__(self):
        if self.files is not None:
            for name in self.files:
                yield read_image(name)
            return
        count = 0
        with _opencv_quiet():
            for frame in capture_frames(self.capture):
                count += 1
                yield frame
        if count == 0:
            raise DataError("video has no decodable frame (corrupt or empty stream)", self.path)


def video_frames(path) -> Iterator[np.ndarray]:
    """RGB uint8 frames of a video file or a frame folder, one at a time.

    Raises:
        DataError: missing, empty, corrupt or non-video file; folder without images.
    """
    return iter(_VideoSource(path))


def _is_frame_folder(path):
    with os.scandir(path) as entries:
        return any(e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS) and not e.name.startswith(".")
                   for e in entries)


def _natural_key(name):
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def find_sources(path) -> list[str]:
    """The videos a SOURCE path stands for: a video file; a frame folder (holding images);
    or a folder of videos and/or frame folders (its direct entries, in natural order).

    Raises:
        PredictError: the path does not exist, or a folder holds no video or frame folder.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise PredictError(f"{path}: no such file or folder")
    if not os.path.isdir(path):
        return [path]
    if _is_frame_folder(path):
        return [path]
    sources = []
    for name in sorted(os.listdir(path), key=_natural_key):
        if name.startswith("."):
            continue
        full = os.path.join(path, name)
        if os.path.isfile(full) and is_video_file(full):
            sources.append(full)
        elif os.path.isdir(full) and _is_frame_folder(full):
            sources.append(full)
    if not sources:
        extensions = ", ".join(ext[1:] for ext in VIDEO_EXTENSIONS)
        raise PredictError(f"{path}: the folder holds no video file ({extensions}) and no frame folder")
    return sources


# ---------------------------------------------------------------------------------------
# Overlay, display and the streaming loop.


def display_available() -> bool:
    """Whether frames can be shown: OpenCV built with a GUI backend (opencv-python-headless
    is not) and, on Linux, an X11/Wayland display."""
    gui = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    if gui is None or gui[1].upper() == "NONE":
        return False
    has_screen = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if sys.platform.startswith("linux") and not has_screen:
        return False
    return True


def _open_window(title):
    if not display_available():
        return False
    try:
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        return True
    except cv2.error:
        return False


def draw_overlay(frame_bgr: np.ndarray, result: dict | None, fps: float | None, lines: int = 3) -> np.ndarray:
    """Draws the top classes of ``result`` and the frame rate onto a BGR frame (in place)."""
    height, width = frame_bgr.shape[:2]
    scale = max(0.35, min(1.0, height / 720.0 * 1.2))
    thickness = 1 if scale < 0.7 else 2
    line_height = int(28 * scale) + 4
    texts = []
    if result is not None:
        texts += [f"{t['label']}  {t['score']:.2f}" for t in result["top"][:lines]]
    else:
        texts.append("waiting for the first window...")
    texts.append(f"{fps:.1f} fps" if fps else "")
    box_height = min(height, line_height * len(texts) + 8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    text_width = max(cv2.getTextSize(text, font, scale, thickness)[0][0] for text in texts)
    box_width = min(width, text_width + 12)
    region = frame_bgr[:box_height, :box_width]
    region[:] = (region.astype(np.uint16) // 3).astype(np.uint8)  # darken behind the text
    for i, text in enumerate(texts):
        colour = (80, 255, 80) if i == 0 and result is not None else (240, 240, 240)
        cv2.putText(frame_bgr, text, (6, line_height * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    colour, thickness, cv2.LINE_AA)
    return frame_bgr


_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG", ".webm": "VP80"}


def _open_writer(path, fps, shape):
    ext = os.path.splitext(path)[1].lower()
    if ext not in _FOURCC:
        raise PredictError(f"--output_video {path}: unsupported extension (use one of {', '.join(_FOURCC)})")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise PredictError(f"--output_video {path}: folder {directory} does not exist")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*_FOURCC[ext]), float(fps or 30.0),
                             (int(shape[1]), int(shape[0])))
    if not writer.isOpened():
        raise PredictError(f"--output_video {path}: cannot write a video there")
    return writer


def run_stream(frames: Iterable, classifier: StreamClassifier, on_window: Callable | None = None,
               display: bool = False, output_video: str | None = None, fps: float | None = None,
               title: str = "keras_efficient3d") -> dict:
    """The streaming loop: classifies ``frames`` (any iterable of RGB uint8 frames), calls
    ``on_window(result)`` for each window, shows the annotated frames when ``display`` and a
    display exists, writes them to ``output_video`` (at ``fps``) if given.

    Ends at the end of the stream, on Ctrl-C (``KeyboardInterrupt``) or on ``q``/Esc in the
    window. Returns ``classifier.summary()`` plus ``interrupted`` and ``displayed``.
    """
    show = bool(display) and _open_window(title)
    writer = None
    latest = None
    rate = None  # processing frame rate, smoothed
    last = time.perf_counter()
    interrupted = False
    try:
        for frame, result in _stream(frames, classifier):
            if result is not None:
                latest = result
                if on_window is not None:
                    on_window(result)
            if frame is None or not (show or output_video):
                continue
            now = time.perf_counter()
            if now > last:
                instant = 1.0 / (now - last)
                rate = instant if rate is None else 0.9 * rate + 0.1 * instant
            last = now
            canvas = draw_overlay(cv2.cvtColor(np.asarray(frame, np.uint8), cv2.COLOR_RGB2BGR), latest, rate)
            if output_video:
                if writer is None:
                    writer = _open_writer(output_video, fps, canvas.shape)
                writer.write(canvas)
            if show:
                cv2.imshow(title, canvas)
                if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if writer is not None:
            writer.release()
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
        (``start_s``/``end_s``) when the fps is known.

    Raises:
        DataError: unreadable video. PredictError: options that do not fit the model.
    """
    if spec is None:
        spec = resolve_spec(runner, labels=labels, window=window)
    source = _VideoSource(path)
    classifier = StreamClassifier(runner, spec, stride, top)
    windows = []

    def collect(result):
        if source.fps:
            result["start_s"] = result["start"] / source.fps
            result["end_s"] = (result["end"] + 1) / source.fps
        windows.append(result)
        if on_window is not None:
            on_window(result)

    summary = run_stream(source, classifier, collect, output_video=output_video, fps=source.fps)
    if summary["interrupted"]:
        raise KeyboardInterrupt
    summary.pop("displayed", None)
    summary.pop("interrupted", None)
    note = None
    if summary["padded"]:
        note = (f"{summary['frames']} frames, fewer than the {spec.span}-frame window: "
                "loop-padded as in training")
    summary.update(source=os.fspath(path), fps=source.fps, windows=windows, note=note)
    return summary


# ---------------------------------------------------------------------------------------
# Output.


def _one_line(err) -> str:
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())


def _top_text(top):
    return ", ".join(f"{t['label']} {t['score']:.3f}" for t in top)


def format_window(result: dict) -> str:
    span = f"frames {result['start']}-{result['end']}"
    if "start_s" in result:
        span += f" ({result['start_s']:.2f}-{result['end_s']:.2f} s)"
    return f"  {span}: {_top_text(result['top'])}" + ("  [loop-padded]" if result.get("padded") else "")


def format_speed(summary: dict) -> str:
    speed = summary["speed"]
    fps = f"{speed['frames_per_s']:.1f} frames/s" if speed["frames_per_s"] else "- frames/s"
    ms = f"{speed['ms_per_clip']:.1f} ms per clip" if speed["ms_per_clip"] else "- ms per clip"
    threads = f", {speed['threads']} threads" if speed.get("threads") else ""
    return f"  speed: {fps}, {ms} ({speed['backend']}{threads})"


def window_json(result: dict, source) -> dict:
    out = {"type": "window", "source": source, "window": result["window"], "start": result["start"],
           "end": result["end"], "top": _round_top(result["top"]), "ms": round(result["ms"], 3),
           "padded": result["padded"]}
    for key in ("start_s", "end_s"):
        if key in result:
            out[key] = round(result[key], 4)
    return out


def summary_json(summary: dict, source) -> dict:
    speed = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in summary["speed"].items()}
    out = {"type": "video", "source": source, "frames": summary["frames"], "windows": summary["window_count"],
           "top": _round_top(summary["top"]), "padded": summary["padded"], "speed": speed}
    for key in ("fps", "note", "interrupted"):
        if summary.get(key) is not None:
            out[key] = summary[key]
    return out


def _round_top(top):
    return [{"index": t["index"], "label": t["label"], "score": round(t["score"], 5)} for t in top]


# ---------------------------------------------------------------------------------------
# Command line.


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
            print(f"error: {_one_line(error)}", file=err, flush=True)
            failures += 1
            continue
        if summary["note"]:
            print(f"note: {path}: {summary['note']}", file=err, flush=True)
        if as_json:
            emit(summary_json(summary, path))
        else:
            fps = f", {summary['fps']:.1f} fps" if summary["fps"] else ""
            emit(f"  video ({summary['frames']} frames{fps}, {summary['window_count']} windows of "
                 f"{spec.frames} frames, stride {stride}): {_top_text(summary['top'])}")
            emit(format_speed(summary))
    return 1 if failures else 0


def _run_camera(index, runner, spec, stride, top, as_json, output_video, display, emit, err):
    with _opencv_quiet(), _quiet_stderr():
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
             f"{_top_text(summary['top'])}")
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
    except (PredictError, DataError, OSError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr, flush=True)
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


if __name__ == "__main__":
    from absl import app

    define_flags()
    app.run(main)
