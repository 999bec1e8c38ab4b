#!/usr/bin/env python3
"""Classifies a video, a frame folder or a camera stream on the Jetson.

    python3 trt_classify.py --engine ../mobilenetv2_fp16.engine --source clip.mp4
    python3 trt_classify.py --engine ../mobilenetv2_fp16.engine --source 0 --display
    python3 trt_classify.py --onnx ../mobilenetv2.onnx --source clip.mp4 --json out.json
    python3 trt_classify.py --saved-model ../mobilenetv2_tftrt_fp16 --source clip.mp4

The model runs as a TensorRT engine (trt_build_engine.py; TensorRT's Python API, libcudart
through ctypes), an ONNX file (ONNX Runtime, e.g. the Jetson Zoo's onnxruntime-gpu wheel)
or a SavedModel (TF-TRT's or export.py's; JetPack's TensorFlow). Each frame is made model
input as keras_efficient3d's predict makes it (scaled to cover, centre-cropped, normalised
as the export records), and a window of the last frames is classified every --stride frames;
the video's classes are the windows' mean probabilities. Python 3.6 compatible, numpy and
OpenCV (JetPack's python3-opencv), without keras_efficient3d installed.

What the model expects (frames per clip, frame size, frame step, normalisation, class
names) is read from the export's record: ``<engine>.json`` (trt_build_engine.py copies the
ONNX file's sidecar there), ``<file>.onnx.json``, or a SavedModel's
``assets.extra/keras_efficient3d.json``; ``--metadata`` names another.
"""

import argparse
import collections
import json
import os
import re
import sys
import time

import tx2_common as common

# The normalisation keras_efficient3d's predict assumes for a model that records none (its
# preset 'original': the original code's ActivityNet mean, 0-255 RGB, no std).
ORIGINAL_MEAN = (114.7748, 107.7354, 99.4750)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
SAVED_MODEL_METADATA = os.path.join("assets.extra", "keras_efficient3d.json")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--engine", help="a TensorRT engine (trt_build_engine.py).")
    model.add_argument("--onnx", help="an ONNX export, run by ONNX Runtime.")
    model.add_argument("--saved-model", help="a SavedModel folder (TF-TRT's or export.py's).")
    parser.add_argument("--source", required=True,
                        help="a video file, a folder of frames, a camera index (0), a stream URL, "
                             "or a GStreamer pipeline ending in appsink (a CSI camera).")
    parser.add_argument("--metadata", default=None,
                        help="the export's record (default: beside the model, see above).")
    parser.add_argument("--labels", default=None,
                        help="a text file of class names, one per line (default: the record's).")
    parser.add_argument("--stride", type=int, default=8,
                        help="frames between two windows (default 8).")
    parser.add_argument("--top", type=int, default=5, help="classes shown (default 5).")
    parser.add_argument("--display", action="store_true",
                        help="show the frames with their classes (q or Esc to stop).")
    parser.add_argument("--json", default=None, help="write the windows and the result here.")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------
# What the model expects: its record, checked.


class ClipSpec(object):
    """frames, height, width, downsample, normalisation (mean, inv_std, scale, bgr; None where
    the model normalises its frames itself), labels, probabilities (the model's outputs are
    probabilities: True, logits: False, unknown: None) and the notes on what was assumed."""

    def __init__(self, frames, height, width, downsample=1, normalization=None, labels=None,
                 probabilities=None, notes=()):
        self.frames, self.height, self.width = frames, height, width
        self.downsample = downsample
        self.normalization = normalization
        self.labels = labels
        self.probabilities = probabilities
        self.notes = list(notes)

    @property
    def span(self):
        return self.frames * self.downsample


def default_metadata_path(args):
    if args.engine:
        return args.engine + ".json"
    if args.onnx:
        return args.onnx + ".json"
    return os.path.join(args.saved_model, SAVED_MODEL_METADATA)


def read_record(path, given):
    """The export's record (a dict), or None where there is none and none was `given`."""
    if not os.path.isfile(path):
        if given:
            raise common.Refused("--metadata {}: no such file".format(path))
        return None
    try:
        with open(path, "rb") as f:
            record = json.loads(f.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise common.Refused("{}: not readable JSON ({})".format(path, err)) from None
    if not isinstance(record, dict) or not isinstance(record.get("input", {}), dict):
        raise common.Refused("{}: not a keras_efficient3d export record (a JSON object with "
                             "'input': {{'frames': ..., 'size': ...}})".format(path))
    return record


def _positive(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _normalization(config, path):
    """(mean, inv_std, scale, bgr) as numpy float32 arrays and flags, as keras_efficient3d's
    Normalization.apply computes them."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    try:
        mean = [float(v) for v in config.get("mean", (0.0, 0.0, 0.0))]
        std = [float(v) for v in config.get("std", (1.0, 1.0, 1.0))]
        value_range = config.get("value_range", "0-255")
        order = config.get("channel_order", "RGB")
        if len(mean) != 3 or len(std) != 3 or 0.0 in std or value_range not in ("0-255", "0-1") \
                or order not in ("RGB", "BGR"):
            raise ValueError(config)
    except (AttributeError, TypeError, ValueError):
        raise common.Refused("{}: its normalization is not three means, three non-zero stds, a "
                             "value_range of 0-255 or 0-1 and a channel_order of RGB or BGR: "
                             "{!r}".format(path, config)) from None
    return (np.asarray(mean, np.float32), np.asarray([1.0 / s for s in std], np.float32),
            1.0 if value_range == "0-255" else 255.0, order == "BGR")


def read_labels(path):
    """Class names of a text file as keras_efficient3d's predict reads one: a name per line,
    classInd.txt's index column ("1 ApplyEyeMakeup") taken off where every line has one,
    numbered from 0 or 1 in order; a name given twice is refused."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise common.Refused("--labels {}: cannot read it ({})".format(path, err)) from None
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)
             if line.strip()]
    if not lines:
        raise common.Refused("--labels {}: no class name in it".format(path))
    matches = [re.match(r"^(\d+)[\s,;]+(.+)$", line) for _, line in lines]
    labels = [line for _, line in lines]
    if all(matches):
        first = int(matches[0].group(1))
        if first in (0, 1) and all(int(m.group(1)) == first + i for i, m in enumerate(matches)):
            labels = [m.group(2).strip() for m in matches]
    seen = {}
    for (number, _), label in zip(lines, labels):
        if label in seen:
            raise common.Refused("--labels {}:{}: class '{}' is named twice (line {} too)".format(
                path, number, label, seen[label]))
        seen[label] = number
    return labels


def resolve_spec(record, where, input_shape, num_classes, labels=None, takes_frames=False):
    """The ClipSpec from the record (`where` its path; None: no record) and the model's own
    input (frames, height, width; None where dynamic), class count, and whether its input is
    uint8 (frames it normalises itself, as predict takes such an input)."""
    notes = []
    if record is None:
        # no flag sets it: a model trained on one frame in N sees its clips N times slower
        notes.append("no record of the export was found: assuming every frame (a model "
                     "trained on one frame in N needs its record: --metadata)")
    record = record or {}
    inputs = record.get("input") or {}
    frames, height, width = input_shape
    recorded = inputs.get("frames")
    if recorded is not None and not _positive(recorded):
        raise common.Refused("{}: input.frames must be a positive integer, not {!r}".format(
            where, recorded))
    if recorded is not None and frames is not None and recorded != frames:
        raise common.Refused("{} records {} frames per clip, but the model's input takes {}: "
                             "the record of another export?".format(where, recorded, frames))
    frames = frames or recorded
    size = inputs.get("size")
    if size is not None:
        pair = [size, size] if _positive(size) else size
        if not (isinstance(pair, list) and len(pair) == 2 and all(_positive(v) for v in pair)):
            raise common.Refused("{}: input.size must be a positive integer or [height, width], "
                                 "not {!r}".format(where, size))
        if height is not None and width is not None and (height, width) != tuple(pair):
            raise common.Refused("{} records {}x{} frames, but the model's input is {}x{}: the "
                                 "record of another export?".format(where, pair[0], pair[1],
                                                                     height, width))
        height, width = height or pair[0], width or pair[1]
    if frames is None or height is None or width is None:
        raise common.Refused("the model's input does not say its clip (frames, height, width) "
                             "and {}: pass --metadata, the export's record (its .onnx.json)".format(
                                 "{} does not record it".format(where) if where else
                                 "no record of the export was found"))
    downsample = inputs.get("downsample", 1)
    if not _positive(downsample):
        raise common.Refused("{}: input.downsample must be a positive integer, not {!r}".format(
            where, downsample))
    name = os.path.basename(where) if where else "the model"
    if (record.get("engine") or {}).get("precision") == "int8":
        notes.append("warning: {} is of an engine built with --precision int8 from trtexec's placeholder "
                     "scales: its classes mean nothing (build it with --precision fp16, or "
                     "calibrate through TF-TRT)".format(name))
    normalization = None
    if not (record.get("preprocessing_included", False) or takes_frames):
        config = record.get("normalization")
        if config is None:
            config = {"mean": ORIGINAL_MEAN}
            notes.append("{} records no normalisation; assuming keras_efficient3d's preset "
                         "'original' (ActivityNet mean, 0-255 RGB)".format(name))
        normalization = _normalization(config, where)
    if labels is None:
        labels = record.get("labels")
        if labels is not None and not (isinstance(labels, list) and
                                       all(isinstance(v, str) for v in labels)):
            raise common.Refused("{}: labels must be a list of class names".format(where))
        origin = where
    else:
        origin = "--labels"
    if labels is not None and num_classes is not None and len(labels) != num_classes:
        raise common.Refused("{} names {} classes, but the model outputs {}".format(
            origin, len(labels), num_classes))
    if labels is None:
        notes.append("{} records no class names; showing class indices (pass --labels)".format(name))
    probabilities = {"probabilities": True, "logits": False}.get(record.get("output"))
    return ClipSpec(frames, height, width, downsample, normalization, labels, probabilities, notes)


# ---------------------------------------------------------------------------------------
# Frames -> model input, exactly as keras_efficient3d.predict.preprocess_frame and
# prepare_frames (tests/deploy/test_tx2_scripts.py compares the two).


def _center_box(height, width, size):
    x1 = int(round((width - size) / 2.0))
    y1 = int(round((height - size) / 2.0))
    return x1, y1


def preprocess_frame(frame, spec, cv2):
    """One RGB uint8 frame -> (height, width, 3) uint8: the shorter side scaled to the size
    and centre-cropped (validation's Scale + CenterCrop); for a non-square input, scaled to
    cover it, then centre-cropped."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    h, w = frame.shape[:2]
    if spec.height == spec.width:
        size = spec.height
        if (w <= h and w == size) or (h <= w and h == size):
            scaled = frame
        else:
            new_h, new_w = (int(size * h / w), size) if w < h else (size, int(size * w / h))
            shrink = new_h <= h and new_w <= w
            scaled = cv2.resize(frame, (new_w, new_h),
                                interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        x1, y1 = _center_box(scaled.shape[0], scaled.shape[1], size)
        return np.ascontiguousarray(scaled[y1:y1 + size, x1:x1 + size])
    factor = max(spec.height / float(h), spec.width / float(w))
    size = (max(spec.width, int(round(w * factor))), max(spec.height, int(round(h * factor))))
    scaled = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    x1 = (scaled.shape[1] - spec.width) // 2
    y1 = (scaled.shape[0] - spec.height) // 2
    return np.ascontiguousarray(scaled[y1:y1 + spec.height, x1:x1 + spec.width])


def prepare_frame(frame, spec):
    """A preprocessed uint8 frame -> float32 model input (normalised unless the model
    normalises its frames itself)."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    x = np.asarray(frame, np.float32)
    if spec.normalization is None:
        return x
    mean, inv_std, scale, bgr = spec.normalization
    if bgr:
        x = x[..., ::-1]
    if scale != 1.0:
        x = x * np.float32(1.0 / scale)
    return (x - mean) * inv_std


# ---------------------------------------------------------------------------------------
# Sliding windows, as keras_efficient3d.predict.StreamClassifier.


def _softmax(x):
    import numpy as np  # pylint: disable=import-outside-toplevel

    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max())
    return (e / e.sum()).astype(np.float32)


class Windows(object):
    """push(frame) classifies the last `spec.span` frames every `stride` frames (a window
    result, else None); finish() classifies the stream's last frames where no window had
    them, loop-padding a stream shorter than one window; summary() averages the windows."""

    def __init__(self, model, spec, cv2, stride=8, top=5):
        self.model, self.spec, self.cv2 = model, spec, cv2
        self.stride, self.top = stride, top
        self.buffer = collections.deque(maxlen=spec.span)
        self.frames_seen = self.windows = 0
        self.last_end = -1
        self.padded = False
        self.model_seconds = 0.0
        self.started = None
        self.total = None
        self.probabilities = spec.probabilities

    def push(self, frame):
        if self.started is None:
            self.started = time.perf_counter()
        self.buffer.append(prepare_frame(preprocess_frame(frame, self.spec, self.cv2), self.spec))
        self.frames_seen += 1
        span = self.spec.span
        if len(self.buffer) == span and (self.frames_seen - span) % self.stride == 0:
            clip = list(self.buffer)[::self.spec.downsample]
            return self._classify(clip, self.frames_seen - span, self.frames_seen - 1, False)
        return None

    def finish(self):
        if not self.buffer or self.last_end >= self.frames_seen - 1:
            return None
        frames = list(self.buffer)
        if self.windows:
            return self._classify(frames[::self.spec.downsample],
                                  self.frames_seen - self.spec.span, self.frames_seen - 1, False)
        order = [i % len(frames) for i in range(self.spec.span)][::self.spec.downsample]
        self.padded = True
        return self._classify([frames[i] for i in order], 0, self.frames_seen - 1, True)

    def _classify(self, frames, start, end, padded):
        import numpy as np  # pylint: disable=import-outside-toplevel

        clip = np.stack(frames)[None]
        begin = time.perf_counter()
        output = np.asarray(self.model(clip), np.float32).reshape(-1)
        elapsed = time.perf_counter() - begin
        self.model_seconds += elapsed
        if not np.all(np.isfinite(output)):
            raise common.Failed("the model's output for frames {}-{} is not finite (NaN or "
                                "infinity): an FP16 engine that overflows?".format(start, end))
        if self.spec.labels is not None and len(output) != len(self.spec.labels):
            raise common.Refused("the model outputs {} classes but {} class names are "
                                 "given".format(len(output), len(self.spec.labels)))
        if self.probabilities is None:  # told apart on the first window
            self.probabilities = bool(np.all(output >= -1e-3) and np.all(output <= 1 + 1e-3)
                                      and abs(float(output.sum()) - 1.0) < 0.02)
        if self.probabilities:
            probs = np.clip(output, 0, None)
            probs = (probs / max(float(probs.sum()), 1e-12)).astype(np.float32)
        else:
            probs = _softmax(output)
        self.total = probs.astype(np.float64) if self.total is None else self.total + probs
        result = {"window": self.windows, "start": int(start), "end": int(end),
                  "top": self._top(probs), "ms": elapsed * 1000.0, "padded": padded}
        self.windows += 1
        self.last_end = int(end)
        return result

    def _top(self, probs):
        import numpy as np  # pylint: disable=import-outside-toplevel

        labels = self.spec.labels or ["class {}".format(i) for i in range(len(probs))]
        order = np.argsort(-probs, kind="mergesort")[:self.top]
        return [{"index": int(i), "label": labels[i], "score": float(probs[i])} for i in order]

    def summary(self):
        elapsed = time.perf_counter() - self.started if self.started is not None else 0.0
        mean = (self.total / self.windows).astype("float32") if self.windows else None
        return {"frames": self.frames_seen, "windows": self.windows, "padded": self.padded,
                "top": self._top(mean) if mean is not None else [],
                "frames_per_s": self.frames_seen / elapsed if elapsed > 0 else None,
                "ms_per_clip": 1000.0 * self.model_seconds / self.windows if self.windows else None}


def top_text(top):
    return ", ".join("{} {:.3f}".format(t["label"], t["score"]) for t in top)


# ---------------------------------------------------------------------------------------
# The three runtimes: each is called with a (1, frames, height, width, 3) float32 clip and
# answers its logits; `input_shape` is (frames, height, width), None where dynamic.


def _dim(value):
    return int(value) if isinstance(value, int) and value > 0 else None


class TensorRTModel(object):
    def __init__(self, path):
        try:
            import tensorrt as trt  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise common.Missing("TensorRT's Python API (tensorrt) is not installed (JetPack: "
                                 "python3-libnvinfer); --onnx runs the ONNX file with ONNX "
                                 "Runtime instead.") from None
        import numpy as np  # pylint: disable=import-outside-toplevel

        self.name = "TensorRT {}".format(getattr(trt, "__version__", "?"))
        engine = common.load_engine(trt, path)
        self.v3, self.names, inputs = common.engine_io(trt, engine)
        if len(inputs) != 1 or len(self.names) != 2:
            raise common.Refused("--engine {}: expected one input and one output, found {} and "
                                 "{}".format(path, len(inputs), len(self.names) - len(inputs)))
        self.input = inputs[0]
        index = self.names.index(self.input)
        shape = [int(d) for d in (engine.get_tensor_shape(self.input) if self.v3
                                  else engine.get_binding_shape(index))]
        if len(shape) != 5 or shape[4] != 3:
            raise common.Refused("--engine {}: its input is {}, not a clip (batch, frames, "
                                 "height, width, 3)".format(path, shape))
        self.batch = shape[0] if shape[0] > 0 else 1
        self.input_shape = tuple(_dim(d) for d in shape[1:4])
        self.context = engine.create_execution_context()
        self.engine, self.trt, self.np = engine, trt, np
        self.cuda = common.CudaRuntime()
        self.buffers, self.host = {}, {}
        self.num_classes = None
        self._shape = None

    def _allocate(self, clip_shape):
        for ptr in self.buffers.values():
            self.cuda.free(ptr)
        self.buffers = {}
        shape = (self.batch,) + tuple(clip_shape[1:])
        index = self.names.index(self.input)
        if self.v3:
            self.context.set_input_shape(self.input, shape)
            shapes = {n: tuple(self.context.get_tensor_shape(n)) for n in self.names}
            dtypes = {n: self.engine.get_tensor_dtype(n) for n in self.names}
        else:
            if -1 in tuple(self.engine.get_binding_shape(index)):
                self.context.set_binding_shape(index, shape)
            shapes = {n: tuple(self.context.get_binding_shape(i)) for i, n in enumerate(self.names)}
            dtypes = {n: self.engine.get_binding_dtype(i) for i, n in enumerate(self.names)}
        for n in self.names:
            if any(d < 0 for d in shapes[n]):
                raise common.Refused("TensorRT refused the clip {} for the engine (outside its "
                                     "optimisation profile?)".format("x".join(str(d) for d in shape)))
            self.host[n] = self.np.zeros(shapes[n], self.trt.nptype(dtypes[n]))
            self.buffers[n] = self.cuda.malloc(max(self.host[n].nbytes, 1))
        self._shape = tuple(clip_shape)

    def __call__(self, clip):
        if self._shape != clip.shape:
            self._allocate(clip.shape)
        host = self.host[self.input]
        host[...] = clip  # a fixed batch above 1: every row the clip, the first row's logits read
        self.cuda.copy_to_device(self.buffers[self.input], host)
        if self.v3:
            for n in self.names:
                self.context.set_tensor_address(n, self.buffers[n].value)
            ran = self.context.execute_async_v3(0)
        else:
            ran = self.context.execute_v2([self.buffers[n].value for n in self.names])
        if ran is False:
            raise common.Failed("TensorRT failed to run the engine (its log above says why)")
        self.cuda.synchronize()
        output = [n for n in self.names if n != self.input][0]
        self.cuda.copy_to_host(self.host[output], self.buffers[output])
        return self.host[output][0]


class OnnxModel(object):
    def __init__(self, path):
        try:
            import onnxruntime as ort  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise common.Missing("ONNX Runtime (onnxruntime) is not installed (on a Jetson: the "
                                 "onnxruntime-gpu wheel of the Jetson Zoo).") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            # TensorRT's, then CUDA's, then the CPU: what this onnxruntime was built with
            # (a bare list of available providers starts with Azure's, which runs nothing here)
            providers = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
                         if p in ort.get_available_providers()] + ["CPUExecutionProvider"]
            self.session = ort.InferenceSession(path, options, providers=providers)
        except Exception as err:  # pylint: disable=broad-except
            raise common.Refused("--onnx {}: ONNX Runtime cannot load it ({})".format(
                path, str(err).strip().splitlines()[-1] if str(err).strip() else
                type(err).__name__)) from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 5:
            raise common.Refused("--onnx {}: expected one clip input (batch, frames, height, "
                                 "width, 3)".format(path))
        self.input = inputs[0].name
        shape = inputs[0].shape
        self.batch = _dim(shape[0]) or 1
        self.input_shape = tuple(_dim(d) for d in shape[1:4])
        self.uint8 = "uint8" in inputs[0].type
        self.name = "ONNX Runtime {} ({})".format(ort.__version__, self.session.get_providers()[0])
        classes = self.session.get_outputs()[0].shape
        self.num_classes = _dim(classes[-1]) if classes else None

    def __call__(self, clip):
        import numpy as np  # pylint: disable=import-outside-toplevel

        if self.uint8:
            clip = np.clip(np.round(clip), 0, 255).astype(np.uint8)
        if self.batch > 1:
            clip = np.repeat(clip, self.batch, axis=0)
        return self.session.run(None, {self.input: clip})[0][0]


class SavedModelModel(object):
    def __init__(self, path):
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise common.Refused("--saved-model {} is not a SavedModel folder (no "
                                 "saved_model.pb)".format(path))
        common.quiet_tensorflow()
        try:
            import tensorflow as tf  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise common.Missing("TensorFlow is not installed (JetPack: NVIDIA's tensorflow "
                                 "wheel).") from None
        loaded = common.load_saved_model(tf, path)
        self._keep = loaded
        self.function = loaded.signatures["serving_default"]
        spec = list(self.function.structured_input_signature[1].values())
        if len(spec) != 1 or len(spec[0].shape) != 5:
            raise common.Refused("--saved-model {}: expected one clip input (batch, frames, "
                                 "height, width, 3)".format(path))
        self.input = list(self.function.structured_input_signature[1])[0]
        shape = spec[0].shape.as_list()
        self.batch = _dim(shape[0]) or 1
        self.input_shape = tuple(_dim(d) for d in shape[1:4])
        outputs = list(self.function.structured_outputs.values())
        self.num_classes = _dim(outputs[0].shape.as_list()[-1]) if len(outputs) == 1 else None
        self.tf = tf
        self.name = "TensorFlow {}".format(tf.__version__)

    def __call__(self, clip):
        import numpy as np  # pylint: disable=import-outside-toplevel

        if self.batch > 1:
            clip = np.repeat(clip, self.batch, axis=0)
        outputs = self.function(**{self.input: self.tf.constant(clip)})
        return list(outputs.values())[0].numpy()[0]


def load_model(args):
    if args.engine:
        if not os.path.isfile(args.engine):
            raise common.Refused("--engine {} is not a file (build it with "
                                 "trt_build_engine.py)".format(args.engine))
        return TensorRTModel(args.engine)
    if args.onnx:
        if not os.path.isfile(args.onnx):
            raise common.Refused("--onnx {} is not a file".format(args.onnx))
        return OnnxModel(args.onnx)
    common.check_saved_model(args.saved_model)
    return SavedModelModel(args.saved_model)


# ---------------------------------------------------------------------------------------
# Frames: a video file, a frame folder, a camera, a stream.


def _natural_key(name):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def open_source(source, cv2):
    """(name, frames: an iterator of RGB uint8 frames, live: a camera or stream)."""
    if os.path.isdir(source):
        files = sorted((n for n in os.listdir(source) if n.lower().endswith(IMAGE_EXTENSIONS)
                        and not n.startswith(".")), key=_natural_key)
        if not files:
            raise common.Refused("--source {}: the folder holds no frame ({})".format(
                source, ", ".join(IMAGE_EXTENSIONS)))

        def read_files():
            for name in files:
                frame = cv2.imread(os.path.join(source, name), cv2.IMREAD_COLOR)
                if frame is None:
                    raise common.Failed("--source {}: cannot decode {}".format(source, name))
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        return source, read_files(), False
    live = True
    if re.match(r"^\d+$", source) and not os.path.exists(source):
        capture, name = cv2.VideoCapture(int(source)), "camera {}".format(source)
    elif "!" in source and "appsink" in source:
        capture, name = cv2.VideoCapture(source, cv2.CAP_GSTREAMER), "the GStreamer pipeline"
    elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source) and not os.path.exists(source):
        capture, name = cv2.VideoCapture(source), source
    else:
        if not os.path.exists(source):
            raise common.Refused("--source {}: no such file or folder".format(source))
        # a device file (/dev/video0) is a camera, read for as long as it delivers
        capture, name, live = cv2.VideoCapture(source), source, not os.path.isfile(source)
    if not capture.isOpened():
        capture.release()
        raise common.Refused("--source {}: cannot open it as {}".format(
            source, "a video (corrupt, or a codec this OpenCV lacks)" if not live else
            "a camera or stream (no such device, in use, or unreachable)"))

    def read_capture():
        try:
            while True:
                ok, frame = capture.read()
                if not ok or frame is None:
                    return
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()
    return name, read_capture(), live


def _show(cv2, frame, result, title):
    bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    lines = [("{} {:.2f}".format(t["label"], t["score"])) for t in result["top"][:3]] if result \
        else ["waiting for the first window..."]
    for i, text in enumerate(lines):
        cv2.putText(bgr, text, (8, 26 * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                    (80, 255, 80) if i == 0 and result else (240, 240, 240), 2, cv2.LINE_AA)
    cv2.imshow(title, bgr)
    return cv2.waitKey(1) & 0xFF in (ord("q"), 27)


def classify(model, spec, frames, cv2, stride=8, top=5, on_window=None, display=None):
    """Runs the windows over `frames`: (summary, window results, interrupted). `on_window`
    is called with each window's result; `display` (a window title) shows the frames."""
    windows = Windows(model, spec, cv2, stride, top)
    results, last, interrupted = [], None, False
    try:
        for frame in frames:
            result = windows.push(frame)
            if result is not None:
                results.append(result)
                last = result
                if on_window:
                    on_window(result)
            if display and _show(cv2, frame, last, display):
                break
        result = windows.finish()
    except KeyboardInterrupt:
        interrupted, result = True, None
    if result is not None:
        results.append(result)
        if on_window:
            on_window(result)
    return windows.summary(), results, interrupted


def main(argv=None):
    args = parse_args(argv)
    if args.stride < 1 or args.top < 1:
        raise common.Refused("--stride and --top must be at least 1")
    common.check_output_file(args.json, "--json")
    if args.display and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise common.Refused("--display: no display to show the frames on ($DISPLAY is not "
                             "set): run it on the Jetson's desktop or through ssh -X, or leave "
                             "--display out")
    labels = read_labels(args.labels) if args.labels else None
    where = args.metadata or default_metadata_path(args)
    record = read_record(where, args.metadata is not None)
    try:
        import cv2  # pylint: disable=import-outside-toplevel
        import numpy  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise common.Missing("{} is not installed (JetPack: python3-opencv, "
                             "python3-numpy)".format(err.name)) from None
    model = load_model(args)
    spec = resolve_spec(record, where if record is not None else None, model.input_shape,
                        model.num_classes, labels, getattr(model, "uint8", False))
    for note in spec.notes:
        print(note if note.startswith("warning: ") else "note: {}".format(note), file=sys.stderr)
    name, frames, live = open_source(args.source, cv2)
    # the first call builds what the runtime builds once (TensorFlow's trace, the engine's
    # buffers): not a window's time
    model(numpy.zeros((1, spec.frames, spec.height, spec.width, 3), numpy.float32))
    if args.display and live:
        print("note: {}: Ctrl-C, q or Esc stops".format(name), file=sys.stderr)

    def on_window(result):
        print("  frames {}-{}: {}{}".format(result["start"], result["end"], top_text(result["top"]),
                                            "  [loop-padded]" if result["padded"] else ""))
        sys.stdout.flush()

    summary, results, interrupted = classify(model, spec, frames, cv2, args.stride, args.top,
                                             on_window, "trt_classify" if args.display else None)
    if not summary["frames"]:
        raise common.Failed("--source {}: no frame decoded{}".format(
            args.source, " (a camera in use by another program?)" if live else
            " (a corrupt or empty video)"))
    step = " (one in {}, spanning {})".format(spec.downsample, spec.span) if spec.downsample > 1 else ""
    print("  {} ({} frames, {} windows of {} frames{}, stride {}{}): {}".format(
        name, summary["frames"], summary["windows"], spec.frames, step, args.stride,
        ", stopped by Ctrl-C" if interrupted else "", top_text(summary["top"])))
    speed = "{:.1f} frames/s, {:.1f} ms per clip".format(summary["frames_per_s"] or 0.0,
                                                        summary["ms_per_clip"] or 0.0)
    print("  speed: {} ({})".format(speed, model.name))
    if args.json:
        common.write_json(args.json, {"source": name, "model": model.name, "windows": [
            dict(r, ms=round(r["ms"], 3)) for r in results], "summary": summary})
        print("wrote {}".format(args.json), file=sys.stderr)
    return 130 if interrupted else 0


if __name__ == "__main__":
    common.run_main(main)
