"""TFLite conversion of the deployment graph and a LiteRT runner with XNNPACK.

    from keras_efficient3d.deploy import tflite
    blob = tflite.convert(model, "fp32")                          # or fp16, dynamic
    blob = tflite.convert(model, "int8", representative_data=ds)  # post-training, full int8
    runner = tflite.TFLiteRunner(blob, num_threads=2)             # XNNPACK (keras_efficient3d.runtime)
    logits = runner(clips)                                        # (1, T, H, W, 3) float32

Precisions: ``fp32``; ``fp16`` (float16 weights, float compute; XNNPACK may run it in fp16
where the CPU supports it); ``dynamic`` (int8 weights, float activations); ``int8`` (full
integer: int8 weights per channel, int8 activations calibrated on representative clips, the
input quantized and the output dequantized inside the model unless ``int8_io``). Models are
specialised to one batch size (1 by default) with static shapes, which XNNPACK needs.
"""

import contextlib
import logging
import warnings

import numpy as np
import tensorflow as tf

from keras_efficient3d import runtime
from keras_efficient3d.artifacts import atomic_write
from keras_efficient3d.backends import require_tensorflow_backend
from keras_efficient3d.deploy.graph import DeploymentGraph
from keras_efficient3d.runtime import TFLiteRunner, tflite_interpreter

__all__ = [
    "PRECISIONS",
    "NoClipError",
    "TFLiteRunner",
    "convert",
    "convert_function",
    "export_tflite",
    "op_summary",
    "float_op_types",
    "file_precision",
    "frames_graph",
    "benchmark",
    "naming_the_data",
    "representative_dataset",
    "verify_tflite",
]

PRECISIONS = ("fp32", "fp16", "dynamic", "int8")
# Ops that must not stay float in a full-int8 model.
_COMPUTE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_3D", "BATCH_MATMUL",
                "TRANSPOSE_CONV")


def _as_graph(model):
    return model if isinstance(model, DeploymentGraph) else DeploymentGraph(model)


class NoClipError(ValueError):
    """The data for an int8 calibration or check yielded no clip (`purpose` says which):
    every video failed to decode (the pipeline warns of each)."""

    def __init__(self, purpose):
        super().__init__(f"The data for the {purpose} yielded no clip.")
        self.purpose = purpose


@contextlib.contextmanager
def naming_the_data(data_root):
    """Inside, a `NoClipError` becomes a ValueError that names `data_root`, the folder whose
    clips were drawn (the exporters' --data_root)."""
    try:
        yield
    except NoClipError as err:
        raise ValueError(f"{data_root}: no clip for the {err.purpose}: none of the videos it "
                         "was drawn from could be decoded (the warnings above name each)"
                         ) from None


def representative_dataset(data, num_samples=64, input_shape=None, batch=1,
                           purpose="int8 calibration", wanted="asked for"):
    """Returns a generator function yielding ``[clips (batch, T, H, W, C) float32]``.

    Args:
        data: a `tf.data.Dataset` of ``clips`` or ``(clips, labels, ...)`` batches (the
            training pipeline), a numpy array of clips (N, T, H, W, C), or any iterable of
            such batches.
        num_samples: clips to yield (fewer where `data` has fewer: a warning says so).
        input_shape: optional (T, H, W, C) to check against.
        batch: clips per sample, the static batch of the graph calibrated (the converter
            feeds each sample to it whole); a last partial sample is filled with its first
            clips again.
        purpose: what the clips are for, in the warning (validation clips are sampled here
            too).
        wanted: who wants `num_samples`, in the warning ("asked for": the caller's count;
            a fixed count is worded as such).
    """
    batch = int(batch)
    if batch < 1:
        raise ValueError(f"`batch` must be a positive integer. Received: batch={batch}")

    def clips_of():
        count = 0
        iterable = data.as_numpy_iterator() if isinstance(data, tf.data.Dataset) else (
            [data] if isinstance(data, np.ndarray) else data)
        for item in iterable:
            clips = item[0] if isinstance(item, (tuple, list)) else item
            clips = np.asarray(clips)
            if clips.dtype.kind != "f":
                # uint8 frames calibrate 0-255 ranges for a model that takes normalised clips:
                # the file is written, its int8 outputs mostly noise
                raise ValueError(
                    f"The clips for {purpose} must be normalised float clips, the model's own "
                    f"input (what the training pipeline yields); received {clips.dtype} values. "
                    "Normalise them as the model was trained first: "
                    "keras_efficient3d.data.Normalization.coerce(NAME).apply(frames).")
            clips = clips.astype(np.float32, copy=False)
            if clips.ndim == 4:
                clips = clips[None]
            for clip in clips:
                if input_shape is not None and tuple(clip.shape) != tuple(input_shape):
                    raise ValueError(f"Representative clips must have shape {tuple(input_shape)}. "
                                     f"Received: shape={clip.shape}")
                yield clip
                count += 1
                if count >= num_samples:
                    return
        if count == 0:
            raise NoClipError(purpose)
        logging.getLogger(__name__).warning(
            "%s on %d clips: the data has fewer than the %d %s", purpose, count,
            num_samples, wanted)

    def gen():
        held = []
        for clip in clips_of():
            held.append(clip)
            if len(held) == batch:
                yield [np.stack(held)]
                held = []
        if held:
            yield [np.stack((held * batch)[:batch])]

    return gen


def convert_function(concrete_fn, precision="fp32", representative_data=None,
                     num_calibration=64, int8_io=False, input_shape=None, quantized_graph=False,
                     int8_input=False, batch=1):
    """Converts a concrete function to a TFLite flatbuffer (bytes).

    ``quantized_graph=True`` means that the function already carries fake-quant ops (after
    quantization-aware training); then no representative data is needed for ``int8``.
    ``int8_input``: an int8 input tensor and a float output (a frames input, `convert`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}. Received: precision={precision!r}")
    # Without a trackable object the converter warns of a deprecation that does not apply to
    # a function traced from a live model.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_fn], concrete_fn)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if not quantized_graph:
            _require_calibration(representative_data)
            converter.representative_dataset = (
                representative_data if callable(representative_data) else
                representative_dataset(representative_data, num_calibration, input_shape,
                                       batch))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io or int8_input:
            converter.inference_input_type = tf.int8
        if int8_io:
            converter.inference_output_type = tf.int8
    # The converter's notices (the quantizer's settings line, the missing-statistics and
    # trackable_obj warnings) tell a user nothing; its errors still raise ConverterError
    # with their diagnostics in the message. The project's own warnings, logged while the
    # converter draws the calibration clips (fewer clips than asked for, the pipeline's
    # videos that fail to decode), are said once it is done: inside, they went to /dev/null
    # with its notices.
    with _held_records(logging.getLogger("keras_efficient3d")):
        with warnings.catch_warnings(), runtime.quiet_stderr():
            warnings.simplefilter("ignore")
            return converter.convert()


@contextlib.contextmanager
def _held_records(logger):
    """Holds what `logger` logs inside the block, and logs it when the block ends (returns
    or raises)."""
    held = []

    class Hold(logging.Handler):
        def emit(self, record):
            held.append(record)

    hold, propagate = Hold(), logger.propagate
    logger.addHandler(hold)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(hold)
        logger.propagate = propagate
        for record in held:
            logger.handle(record)


def convert(model, precision="fp32", representative_data=None, num_calibration=64, batch=1,
            int8_io=False, frames=None):
    """Converts a Keras model (or a `DeploymentGraph`) to TFLite bytes.

    Args:
        model: a registry model (BatchNorm is folded here) or a `DeploymentGraph`.
        precision: one of `PRECISIONS`.
        representative_data: for ``int8``: a `tf.data.Dataset` of (clips, labels) batches,
            an array of clips or a generator function (see `representative_dataset`).
        num_calibration: clips used for calibration.
        batch: the static batch size of the TFLite model.
        int8_io: for ``int8``, int8 input and output tensors instead of float ones.
        frames: for ``int8`` (a `keras_efficient3d.data.Normalization`, the model's): the
            file takes the decoder's frames and normalises them itself (`frames_graph`).
            Its input, named ``frames``, is int8: the uint8 frames minus 128
            (``frames ^ 0x80`` viewed as int8; `runtime.TFLiteRunner` takes the uint8 frames
            and does it), quantized with the normalisation's scalar scale and zero point, so
            that no conversion pass runs in the model (MobileNetV2 0.2x 1.78 against 1.92
            ms with float clips; a uint8 input took 2.23: the converter's uint8 -> int8 op).
            The representative clips stay normalised, as the pipeline gives them.
    """
    require_tensorflow_backend("TFLite conversion")
    if frames is not None:
        if precision != "int8" or int8_io:
            raise ValueError("`frames` is for full int8 with a float output (precision='int8', "
                             f"int8_io=False). Received: precision={precision!r}, int8_io={int8_io}")
        return _convert_frames(model, frames, representative_data, num_calibration, batch)
    graph = _as_graph(model)
    fn = graph.as_function(batch=batch, int8=precision == "int8").get_concrete_function()
    return convert_function(fn, precision, representative_data, num_calibration, int8_io,
                            graph.input_shape, batch=batch)


def frames_graph(model, normalization):
    """The deployment graph of `model` (a Keras model, or a `DeploymentGraph` whose settings
    it keeps) that takes ``u = (frames - z) * s`` (the scalar zero
    point z and scale s of `normalization`, `deploy.frames.FramesInput`) for the clips that
    `normalization` gives: its stem's weights take the per-channel rest. Returns
    ``(graph, FramesInput)``."""
    from keras_efficient3d.deploy.frames import FramesInput, stem_layer

    # a graph of its own (its stem's weights change), with a given graph's settings
    graph = (DeploymentGraph(model.model, fold=False, pack_channels=model.pack_channels,
                             stack_channels=model.stack_channels)
             if isinstance(model, DeploymentGraph) else DeploymentGraph(model))
    stem = stem_layer(graph.model)
    if stem is None:
        raise ValueError(f"`frames`: model '{graph.model.name}' has no single ungrouped Conv3D reading its "
                         "input, whose weights could take the normalisation")
    frames = FramesInput(normalization, stem)
    kernel = stem.kernel.numpy()
    if stem.use_bias:
        graph.set_conv_weights(stem.name, frames.kernel(kernel), frames.bias(kernel, stem.bias.numpy()))
    elif frames.exact:  # the zero point is every channel's mean: only the scales move
        graph.set_conv_weights(stem.name, frames.kernel(kernel), None)
    else:
        raise ValueError(f"`frames`: the stem '{stem.name}' has no bias to take the normalisation's "
                         "per-channel means")
    return graph, frames


def _require_calibration(representative_data):
    if representative_data is None:
        raise ValueError("Full int8 post-training quantization needs `representative_data` "
                         "(clips from the training pipeline).")


def _convert_frames(model, normalization, representative_data, num_calibration, batch):
    _require_calibration(representative_data)  # before the graph is built
    graph, frames = frames_graph(model, normalization)
    normalised = np.concatenate([c[0] for c in representative_dataset(
        representative_data, num_calibration, graph.input_shape)()])
    pixels = normalization.frames(normalised).astype(np.float32)
    # One black and one white pixel, so that the input's calibrated range is the whole 0-255
    # grid: the quantization is then exactly frames - 128 (scale s, zero point z - 128).
    pixels[0, 0, 0, 0], pixels[0, 0, 0, 1] = 0.0, 255.0
    clips = (pixels - np.float32(frames.zero_point)) * np.float32(frames.scale)
    fn = graph.as_function(batch=batch, int8=True, input_name="frames").get_concrete_function()
    blob = convert_function(fn, "int8", clips, len(clips), input_shape=graph.input_shape,
                            int8_input=True, batch=batch)
    detail = tflite_interpreter(blob, use_xnnpack=False).get_input_details()[0]
    scale, zero_point = detail["quantization"]
    if zero_point != int(frames.zero_point) - 128 or not np.isclose(scale, frames.scale, rtol=1e-4):
        raise RuntimeError(f"The converter quantized the frames input with scale {scale} and zero "
                           f"point {zero_point}; expected {frames.scale} and {int(frames.zero_point) - 128}")
    return blob


def export_tflite(model, path, precision="fp32", **kwargs):
    """Converts (see `convert`) and writes to `path` atomically; returns the file size in bytes."""
    blob = convert(model, precision, **kwargs)
    atomic_write(path, blob)
    return len(blob)


def tensor_records(model_file):
    """What an app feeding a TFLite file needs of its input and output tensors (bytes or a
    path): ``({"name", "dtype", "shape"[, "scale", "zero_point"]}, the same of the output)``,
    with the quantization of an integer tensor."""
    interpreter = tflite_interpreter(model_file)

    def record(details):
        out = {"name": details["name"], "dtype": np.dtype(details["dtype"]).name,
               "shape": [int(d) for d in details.get("shape_signature", details["shape"])]}
        scale, zero_point = details["quantization"]
        if np.issubdtype(np.dtype(details["dtype"]), np.integer) and scale:
            out.update(scale=float(scale), zero_point=int(zero_point))
        return out

    return record(interpreter.get_input_details()[0]), record(interpreter.get_output_details()[0])


def sidecar_metadata(model_file, metadata):
    """`metadata` (a `ModelMetadata`) as a TFLite file's sidecar records it: its tensors
    (`tensor_records`: ``input.tensor``, ``output_tensor``), and an integer input's values
    in words. The file of frames takes the uint8 frames minus 128 in an int8 tensor (an app
    that copied a camera's bytes in as they are fed every pixel of 128 or more as negative);
    an --int8_io file takes the normalised clip quantized."""
    import dataclasses

    from keras_efficient3d.artifacts import FRAMES_DTYPE

    tensor, output = tensor_records(model_file)
    extra = {**metadata.extra, "_input": {**metadata.extra.get("_input", {}), "tensor": tensor},
             "output_tensor": output}
    dtype = metadata.dtype
    if tensor["dtype"] == "int8" and dtype and dtype.startswith(FRAMES_DTYPE.split(",")[0]):
        dtype += "; fed to the int8 tensor minus 128 (each byte's top bit flipped)"
    elif tensor["dtype"] in ("int8", "uint8"):
        # a model that normalises its frames itself takes 0-255 pixels, quantized
        what = "0-255 RGB pixels" if metadata.preprocessing_included else "normalised clip"
        dtype = (f"{tensor['dtype']}: the {what} quantized (real = scale x (q - zero point), "
                 "the tensor's)")
    return dataclasses.replace(metadata, dtype=dtype, extra=extra)


# How far a float file may stray from the Keras model, relative to the largest logit: fp32
# is the same arithmetic in another order; fp16 weights (and fp16 compute, where XNNPACK
# uses the CPU's fp16 units) keep about three significant digits.
VERIFY_RTOL = {"fp32": 1e-4, "fp16": 1e-2}


def verify_tflite(model_file, model, precision="fp32", clips=None, num_threads=2):
    """Runs the TFLite `model_file` (bytes or a path) on `clips` (random by default) and
    compares it with the Keras `model` in inference mode, as the ONNX and SavedModel exports
    are checked. Returns the relative error max|tflite - keras| / max|keras|; raises
    `AssertionError` beyond `VERIFY_RTOL` of the precision. ``dynamic`` and ``int8`` files
    approximate the model by design: None, nothing checked."""
    if precision not in VERIFY_RTOL:
        return None
    runner = TFLiteRunner(model_file, num_threads=num_threads, strict=False)
    if clips is None:
        clips = runtime.random_clips(model, 2)
    expected = np.asarray(model(clips, training=False))
    return runtime.check_close(runner(clips), expected, rtol=VERIFY_RTOL[precision], atol=1e-6,
                               what=f"TFLite {precision} model")


def calibration_clips(data, num_samples=64, input_shape=None, purpose="int8 calibration",
                      wanted="asked for"):
    """Up to `num_samples` clips (N, T, H, W, C) float32 from what `representative_dataset`
    accepts."""
    clips = [item[0][0] for item in representative_dataset(data, num_samples, input_shape,
                                                           purpose=purpose, wanted=wanted)()]
    return np.stack(clips).astype(np.float32)


def eager_outputs(model, clips, batch_size=8):
    """`model`'s outputs in batches, called eagerly: `predict` traces and optimises a graph
    first, which costs more than these few batches."""
    import keras

    return np.concatenate([keras.ops.convert_to_numpy(model(clips[i:i + batch_size], training=False))
                           for i in range(0, len(clips), batch_size)])


def top1_agreement(actual, expected):
    """The share of rows whose top class is the same in `actual` and `expected`."""
    return float(np.mean(np.argmax(actual, axis=-1) == np.argmax(expected, axis=-1)))


def int8_agreement(model_file, model, data, num_clips=64, frames=None, num_threads=2):
    """Top-1 agreement of the int8 TFLite `model_file` with the float Keras `model` on up to
    `num_clips` clips of `data` (`representative_dataset`'s kinds; validation clips), the
    file fed uint8 frames where it takes them (`frames`: the `Normalization` it applies), as
    `openvino_export.verify_openvino` measures an int8 IR. Returns ``{"top1_agreement",
    "clips"}``."""
    runner = TFLiteRunner(model_file, num_threads=num_threads, strict=False)
    clips = calibration_clips(data, num_clips, tuple(model.inputs[0].shape[1:]),
                              purpose="int8 agreement check", wanted="the check takes")
    fed = clips
    if frames is not None:
        fed = frames.frames(clips)
        clips = frames.apply(fed.astype(np.float32))
    return {"top1_agreement": top1_agreement(runner(fed), eager_outputs(model, clips)),
            "clips": int(len(clips))}


def op_summary(model):
    """The model's ops as (op type, [input tensor dtypes], [output tensor dtypes]) tuples,
    read before any delegate is applied."""
    interp = tflite_interpreter(model, use_xnnpack=False)
    details = {d["index"]: d for d in interp.get_tensor_details()}

    def dtype(i):
        return np.dtype(details[i]["dtype"]).name if i in details else "none"

    ops = []
    for op in interp._get_ops_details():
        ops.append((op["op_name"], [dtype(i) for i in op["inputs"] if i >= 0],
                    [dtype(i) for i in op["outputs"]]))
    return ops


def file_precision(model):
    """What a .tflite file computes in, read from its ops: ``"int8"`` (integer activations
    and weights), ``"dynamic"`` (int8 weights, float activations), ``"fp16"`` (float16
    weights dequantized) or ``"fp32"``."""
    ops = op_summary(model)
    compute = [set(ins) for name, ins, _ in ops if name in _COMPUTE_OPS]
    if any(not any(t.startswith("float") for t in types) for types in compute):
        return "int8"
    if any("int8" in types and any(t.startswith("float") for t in types) for types in compute):
        return "dynamic"
    if any(name == "DEQUANTIZE" and "float16" in ins for name, ins, _ in ops):
        return "fp16"
    return "fp32"


def float_op_types(model):
    """Compute ops (convolutions, fully connected) that run in floating point."""
    bad = []
    for name, ins, outs in op_summary(model):
        if name in _COMPUTE_OPS and any(t.startswith("float") for t in ins + outs):
            bad.append(name)
    return bad


def benchmark(model, num_threads=2, warmup=5, runs=20, use_xnnpack=True, seed=0):
    """Latency of one invoke (`keras_efficient3d.runtime.benchmark`): median/mean/min/p90
    milliseconds, spread and clips/s, with the thread count and XNNPACK's partitions.

    Args:
        model: TFLite bytes, a path, or a `TFLiteRunner`.
    """
    runner = model if isinstance(model, TFLiteRunner) else TFLiteRunner(
        model, num_threads, use_xnnpack, strict=False)
    result = runtime.benchmark(runner, warmup, runs, seed)
    result.update(threads=int(num_threads), xnnpack=bool(use_xnnpack),
                  xnnpack_partitions=runner.partitions() if use_xnnpack else 0)
    return result
