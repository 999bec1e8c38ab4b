"""Running a model file: Keras on any backend (BatchNorm folded, compiled), LiteRT with
XNNPACK, ONNX Runtime, OpenVINO; timing.

    from keras_efficient3d import runtime
    runner = runtime.load_runner("m_int8.tflite", threads=2)   # or .keras, .onnx, .xml (OpenVINO IR)
    logits = runner(clips)                                       # float32 (N, T, H, W, 3) -> (N, classes)
    timing = runtime.benchmark(runner, warmup=5, runs=30)        # median ms, spread, clips/s

Every runner has the same interface: ``input_spec`` (`InputSpec`: shape, dtype, quantization),
``num_classes`` (``None`` when the model does not say), ``backend``, ``path``, ``threads``,
``__call__(clips) -> float32 (N, outputs)``, which runs clip batches of any size (a model with a
fixed batch is fed chunks, the last one padded), quantizes float clips for integer inputs with
the tensor's own scale, zero point and dtype range and dequantizes integer outputs, and
``timing_step()``, one untimed-overhead-free call of the model for `benchmark`.

`TFLiteRunner` also takes TFLite bytes and checks that XNNPACK took the whole graph
(``strict``); `onnx_session` is the one place that opens an ONNX Runtime session (threads,
execution providers); `OpenVINORunner` compiles an IR for the CPU (or another OpenVINO
device) with a thread count and the latency hint; `measure` is the one timing loop
(warm-up, timed runs, median and spread); `check_close` compares an exported model's outputs with the Keras model's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
import os
import re
import sys
import time

import numpy as np

from keras_efficient3d.artifacts import ModelFileError

__all__ = [
    "ONNX_PROVIDERS",
    "InputSpec",
    "KerasRunner",
    "OPENVINO_PRECISIONS",
    "ModelFileError",
    "ONNXRunner",
    "OpenVINORunner",
    "TFLiteRunner",
    "benchmark",
    "check_close",
    "check_openvino_device",
    "normalize_openvino_device",
    "openvino_config",
    "openvino_uses_cpu",
    "check_threads",
    "choose_providers",
    "cpu_has_amx",
    "dequantize",
    "is_depthwise_model",
    "load_runner",
    "measure",
    "onnx_session",
    "openvino_module",
    "quantize",
    "quiet_stderr",
    "random_clips",
    "relative_error",
    "set_keras_threads",
    "set_tf_threads",
    "tf_thread_plan",
    "tflite_interpreter",
    "time_interleaved",
    "torch_trace",
]

# Best first: the first of these that an onnxruntime build has runs the model.
ONNX_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _one_line(err) -> str:
    return " ".join((str(err).strip() or type(err).__name__).split())


def _openvino_reason(err) -> str:
    """OpenVINO's message on one line without the C++ source locations it stacks before its
    reason ("Exception from src/inference/src/cpp/core.cpp:84:", "Check 'false' failed at
    src/frontends/common/src/frontend.cpp:53:")."""
    return re.sub(r"(Exception from|Check '.*?' failed at) \S+:\d+:\s*", "", _one_line(err)).strip()


@contextlib.contextmanager
def quiet_stderr():
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
        sys.stderr.flush()  # Python's own buffered writes (absl logging) go to /dev/null too
        os.dup2(saved, 2)
        os.close(saved)


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX int8 tiles (Linux's /proc/cpuinfo; False where unknown)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return any(line.startswith("flags") and "amx_int8" in line.split() for line in f)
    except OSError:
        return False


# The project's target for int8 (issue 14): top-1 agreement with the float model, which
# the int8 exports measure and warn below.
AGREEMENT_TARGET = 0.99


def warn_low_agreement(agreement, clips, against="the float model"):
    """The exporters' `warning:` line on stderr for an int8 top-1 `agreement` (a share, on
    `clips` clips) below `AGREEMENT_TARGET`. Nothing at or above it."""
    if agreement is not None and agreement < AGREEMENT_TARGET:
        print(f"warning: int8 top-1 agreement with {against} {100 * agreement:.1f}% on {clips} "
              f"clips, below {100 * AGREEMENT_TARGET:.0f}%", file=sys.stderr)


# ---------------------------------------------------------------------------------------
# Timing.


def measure(step, warmup=3, runs=15, batch=1, keep_times=False) -> dict:
    """Times `step()`: `warmup` untimed calls, then `runs` timed ones.

    Returns:
        ``median_ms``, ``mean_ms``, ``min_ms``, ``max_ms``, ``p90_ms``, ``spread_ms`` (the
        interquartile range), ``clips_per_s`` (``batch`` / median), ``runs``, ``warmup``,
        ``batch``; with `keep_times`, ``times_ms`` (every run's ms, in order).
    """
    if not isinstance(warmup, numbers.Integral) or warmup < 0 or \
            not isinstance(runs, numbers.Integral) or runs < 1:  # numpy's integers too
        raise ValueError(f"`warmup` must be >= 0 and `runs` >= 1. Received: warmup={warmup}, runs={runs}")
    warmup, runs = int(warmup), int(runs)  # plain ints in the (JSON) results
    for _ in range(warmup):
        step()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        step()
        times[i] = (time.perf_counter() - start) * 1000.0
    result = time_statistics(times)
    result.update(clips_per_s=batch * 1000.0 / result["median_ms"] if result["median_ms"] > 0
                  else float("inf"), runs=int(runs), warmup=int(warmup), batch=int(batch))
    if keep_times:
        result["times_ms"] = [float(t) for t in times]
    return result


def time_statistics(times):
    """``median_ms``, ``mean_ms``, ``min_ms``, ``max_ms``, ``p90_ms``, ``spread_ms`` (the
    interquartile range) of `times` (ms)."""
    times = np.asarray(times, np.float64)
    median = float(np.median(times))
    q1, q3 = np.percentile(times, [25, 75])
    return {
        "median_ms": median,
        "mean_ms": float(times.mean()),
        "min_ms": float(times.min()),
        "max_ms": float(times.max()),
        "p90_ms": float(np.percentile(times, 90)),
        "spread_ms": float(q3 - q1),
    }


def time_interleaved(steps, rounds=3, warmup=3, runs=10):
    """Times each of `steps` (label -> callable) in turn, `rounds` times over
    (`keras_efficient3d.runtime.measure`, `warmup` and `runs` per turn); returns label ->
    [median ms of each round]."""
    if rounds < 1:
        raise ValueError(f"`rounds` must be >= 1. Received: rounds={rounds}")
    times = {label: [] for label in steps}
    for _ in range(rounds):
        for label, step in steps.items():
            times[label].append(measure(step, warmup, runs)["median_ms"])
    return times


def benchmark(runner, warmup=5, runs=20, seed=0, keep_times=False) -> dict:
    """`measure` of one call of `runner`'s model on a random input of its own shape and dtype
    (the input is set once: only the model is timed). Adds ``backend`` and ``threads``."""
    step, batch = runner.timing_step(seed)
    result = measure(step, warmup, runs, batch, keep_times)
    result.update(backend=runner.backend, threads=runner.threads)
    return result


# ---------------------------------------------------------------------------------------
# Verification: an exported model against the Keras model.


def random_clips(model, batch_size=2, seed=0):
    """Deterministic normal-distributed clips shaped for `model` (verification inputs)."""
    shape = (batch_size,) + tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def relative_error(actual, expected):
    """max |actual - expected| / max |expected| (0 when both are zero)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"Shapes differ: {actual.shape} vs {expected.shape}")
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    diff = np.max(np.abs(actual - expected)) if expected.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def check_close(actual, expected, rtol=1e-4, atol=1e-6, what="export"):
    """Raises `AssertionError` unless max|a - e| <= rtol * max|e| + atol; returns the
    relative error."""
    err = relative_error(actual, expected)
    diff = float(np.max(np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64))))
    scale = float(np.max(np.abs(expected)))
    # `not <=`: a NaN or inf output fails every comparison, and must fail this check too
    if not diff <= rtol * scale + atol:
        raise AssertionError(
            f"The {what} differs from the Keras model: max abs diff {diff:.3g}, relative "
            f"{err:.3g} > rtol {rtol:g} (max |keras| = {scale:.3g})."
        )
    return err


# ---------------------------------------------------------------------------------------
# int8 tensors.


def quantize(x, scale, zero_point, dtype):
    """Float -> integer with the tensor's scale and zero point, clipped to the dtype's range."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q, scale, zero_point):
    return (np.asarray(q, np.float32) - np.float32(zero_point)) * np.float32(scale)


# ---------------------------------------------------------------------------------------
# Runners.


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The model's input tensor: ``shape`` (batch, frames, height, width, channels), ``None``
    where dynamic; ``dtype`` (numpy name); ``quantization`` (scale, zero point) for integer
    inputs; ``uint8_frames``: the model takes uint8 RGB frames (0-255) and normalises them
    itself (an OpenVINO IR exported with ``frames_input``, a TFLite int8 file of frames)."""

    shape: tuple
    dtype: str = "float32"
    quantization: tuple | None = None
    uint8_frames: bool = False

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


class _Runner:
    backend = "?"
    path = ""
    input_spec: InputSpec
    num_classes: int | None = None
    threads = None

    def _run(self, batch):
        """The model on one batch already in the input's dtype and batch size."""
        raise NotImplementedError

    def _prepare(self, chunk):
        if self.input_spec.quantization is not None:
            return quantize(chunk, *self.input_spec.quantization, self.input_spec.dtype)
        if self.input_spec.dtype != "float32":
            return chunk.astype(self.input_spec.dtype)
        return chunk

    def __call__(self, clips) -> np.ndarray:
        """Outputs (logits or probabilities, as the model gives them) for float32 clips
        ``(N, T, H, W, C)`` (a single clip without the batch axis is accepted); uint8 RGB
        frames instead for a model that normalises them itself (``input_spec.uint8_frames``).

        Raises:
            ValueError: clips that are not floating point (uint8 frames not yet normalised),
                or not uint8 for a model of frames,
                an empty batch, a shape other than ``(N, *input_spec.shape[1:])`` or values
                that are not finite (`check_clips`).
        """
        return self.outputs_unchecked(self.check_clips(clips))

    def outputs_unchecked(self, clips) -> np.ndarray:
        """The outputs for a float32 ``(N, T, H, W, C)`` batch (uint8 frames for a model of
        frames) known to be what the model takes, without `check_clips`' pass over the values
        (~1% of a small model's time at 16x112x112): for clips made from uint8 frames
        (predict's), finite by construction."""
        step = self.input_spec.batch or len(clips)
        outputs = []
        for begin in range(0, len(clips), step):
            chunk = clips[begin:begin + step]
            count = len(chunk)
            if count < step:  # fixed batch: pad with copies of the last clip
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - count, axis=0)])
            out = np.asarray(self._run(self._prepare(chunk)))
            outputs.append(out.reshape(out.shape[0], -1)[:count])
        return np.concatenate(outputs).astype(np.float32)

    def check_clips(self, clips) -> np.ndarray:
        """`clips` as a float32 ``(N, T, H, W, C)`` batch the model takes (uint8 frames for a
        model of frames, ``input_spec.uint8_frames``), or a `ValueError`
        that says what is wrong with them. The runtimes themselves would take uint8 frames
        as if they were normalised floats, and an int8 model turns NaN into confident
        scores; each reports a wrong shape its own way."""
        array = np.asarray(clips)
        if self.input_spec.uint8_frames:
            if array.dtype != np.uint8:
                raise ValueError(
                    f"{self.path}: the model takes uint8 RGB frames (0-255) and normalises them "
                    f"itself; received {array.dtype} values. Give it the uint8 frames (not "
                    "normalised clips, nor float pixels): keras_efficient3d.predict.make_clip("
                    "frames, spec) keeps them uint8 for it, with spec = resolve_spec(runner) "
                    "and each decoded frame made preprocess_frame(frame, spec).")
        elif array.dtype.kind != "f":
            raise ValueError(
                f"The runner takes normalised float clips; received {array.dtype} values. Apply "
                "the model's normalisation first: keras_efficient3d.predict.make_clip(frames, "
                "spec), with spec = resolve_spec(runner) and each decoded frame made "
                "preprocess_frame(frame, spec), or read_metadata(path).normalization.apply("
                "frames) (keras_efficient3d.artifacts).")
        expected = tuple(self.input_spec.shape[1:])
        if array.ndim == len(expected):  # a single clip
            array = array[None]
        shown = "(N, " + ", ".join("?" if d is None else str(d) for d in expected) + ")"
        if array.ndim != len(expected) + 1 or any(
                d is not None and d != a for d, a in zip(expected, array.shape[1:])):
            channels = expected[-1] if expected else None
            hint = (" (channels first? the runner takes channels-last clips)"
                    if array.ndim >= 2 and channels and array.shape[1] == channels != array.shape[-1]
                    else "")
            raise ValueError(f"The runner takes clips of shape {shown}; received shape "
                             f"{tuple(np.shape(clips))}{hint}.")
        if len(array) == 0:
            raise ValueError(f"The runner received an empty batch, shape {array.shape}; give at least one clip.")
        if self.input_spec.uint8_frames:
            return array  # every uint8 value is a pixel
        array = np.asarray(array, np.float32)
        # min/max propagate NaN and show an infinity (one pass each, like isfinite().all());
        # the timing steps of benchmark and measure call the model without this.
        if not (np.isfinite(array.min()) and np.isfinite(array.max())):
            raise ValueError("The clips hold NaN or infinite values; the model's outputs would be "
                             "meaningless (an int8 model gives confident scores for them).")
        return array

    def predict(self, clips) -> np.ndarray:
        """The same as calling the runner (Keras' name)."""
        return self(clips)

    def timing_step(self, seed=0):
        """``(step, batch)``: a call of the model on a fixed random input, for `benchmark`."""
        shape = tuple(d or 1 for d in self.input_spec.shape)
        rng = np.random.default_rng(seed)
        if np.dtype(self.input_spec.dtype).kind in "iu":
            info = np.iinfo(self.input_spec.dtype)
            x = rng.integers(info.min, int(info.max) + 1, size=shape).astype(self.input_spec.dtype)
        else:
            x = rng.normal(size=shape).astype(self.input_spec.dtype)
        return (lambda: self._run(x)), shape[0]

    def __repr__(self):
        return f"<{self.backend} runner {self.path} input {self.input_spec.shape} {self.input_spec.dtype}>"


def check_threads(threads):
    """Returns `threads` when it is None, 0 (the runtime's default) or a positive integer;
    raises ValueError otherwise. Each runtime would take a negative or fractional count its
    own way (LiteRT's -1 is its default, ``int(0.5)`` is 0 threads), and ``True`` is an int."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                or threads < 0):
        raise ValueError("`threads` must be None, 0 (the runtime's default) or a positive integer. "
                         f"Received: threads={threads!r}")
    return threads


def tf_thread_plan(threads, depthwise=False):
    """TensorFlow's ``(intra_op, inter_op)`` threads for a budget of at most `threads` busy
    threads (None for 0 or None: TensorFlow's default).

    A model with depthwise 3D convolutions (`is_depthwise_model`) runs as many thin,
    independent operations: three temporal taps per depthwise convolution, a ShuffleNet
    unit's two branches, a layer's input and weight gradients. Splitting each across two
    threads costs more than it gains, while two of them side by side keep both cores busy:
    ``threads // 2`` intra-op threads and two operations at a time (an odd budget leaves one
    thread unused; at 2 threads, one thread per operation). Measured on 2 cores only, against
    (2, 1): 1.0-2.1x, never slower (ShuffleNetV2 1.0x inference 1.8x, MobileNetV2 0.2x
    1.4-2.1x, ShuffleNetV1 1.3x, MobileNetV2 1.0x 1.0-1.1x; training: ShuffleNetV2 1.1x,
    MobileNetV2 1.0x). Dense models keep every thread on one operation: SqueezeNet 1.1 and
    ResNet-18 were 1.05-1.8x slower with the plan."""
    if not check_threads(threads):
        return None
    threads = int(threads)
    if depthwise and threads >= 2:
        return threads // 2, 2
    return threads, 1


def is_depthwise_model(model) -> bool:
    """Whether `model` (a Keras model, a `.keras` file or a registry name) has depthwise 3D
    convolutions, without building anything for a file or a name (TensorFlow's threads
    can only be set before it runs its first operation). False when it cannot tell."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not path.endswith(".keras"):
            from keras_efficient3d import registry

            family = registry.get_family(path)
            return bool(family and family.depthwise)
        from keras_efficient3d.artifacts import keras_config

        config = keras_config(path)
        return config is not None and _has_depthwise_layer(config)
    from keras_efficient3d.layers import DepthwiseConv3D

    layers = list(getattr(model, "layers", ()))
    while layers:  # a model used as a layer of another has its own layers
        layer = layers.pop()
        if isinstance(layer, DepthwiseConv3D):
            return True
        layers.extend(getattr(layer, "layers", ()))
    return False


def _has_depthwise_layer(config):
    """Whether a Keras config (nested dicts and lists) names a `DepthwiseConv3D` layer."""
    if isinstance(config, dict):
        if config.get("class_name") == "DepthwiseConv3D":
            return True
        return any(_has_depthwise_layer(v) for v in config.values())
    if isinstance(config, list):
        return any(_has_depthwise_layer(v) for v in config)
    return False


def set_keras_threads(threads, depthwise=False):
    """The threads of the Keras backend in use (0 or None: its default): TensorFlow's by
    `tf_thread_plan` (`depthwise`: the model has depthwise 3D convolutions), or PyTorch's
    intra-op threads; JAX takes its threads from ``XLA_FLAGS`` at start-up."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        set_tf_threads(threads, depthwise)
    elif backend == "torch" and threads:
        import torch

        torch.set_num_threads(int(threads))


def tf_side_by_side() -> bool:
    """Whether TensorFlow's threads run operations side by side with fewer threads each than
    the machine has (`tf_thread_plan`'s pair for a depthwise model: ``(N // 2, 2)``), where
    a training call gains from splitting its batch (`VideoModel.halves_call`), on a CPU (the
    cores this process may use). TensorFlow's default (every core on each operation) loses
    with it: ShuffleNetV2 1.0x, batch 4, 161 against 126 ms per step."""
    import tensorflow as tf

    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (inter >= 2 and 0 < intra < (cores or 1)
            and not tf.config.list_physical_devices("GPU"))


def set_tf_threads(threads, depthwise=False):
    """TensorFlow's threads for a budget of `threads` (`tf_thread_plan`; 0 or None: its
    default). Only possible before TensorFlow runs its first op, and ignored after. Returns
    the ``(intra_op, inter_op)`` pair set, or None when nothing was (no budget, too late)."""
    import tensorflow as tf

    plan = tf_thread_plan(threads, depthwise)
    if not plan:
        return None
    try:
        tf.config.threading.set_intra_op_parallelism_threads(plan[0])
        tf.config.threading.set_inter_op_parallelism_threads(plan[1])
    except RuntimeError:  # too late once TensorFlow has run ops
        return None
    return plan


class KerasRunner(_Runner):
    """A Keras model (a `.keras` path or a built model) in inference mode, with BatchNorm
    folded into the convolutions (the same function, 1.2-1.5x faster on a CPU), compiled the
    way of the Keras backend it runs on: a `tf.function` on TensorFlow, a `jax.jit` on JAX,
    and on PyTorch a frozen TorchScript trace per input shape (`torch_trace`). The JAX and
    PyTorch forms hold a snapshot of the weights: changes made to `model` afterwards are not
    seen (make a new runner). `threads` is a budget that TensorFlow spends by `tf_thread_plan`
    (a depthwise model at 2 threads: one per operation, two operations at a time); TensorFlow takes
    it only before it runs its first operation, so give a `.keras` path, or call
    `set_keras_threads` before building the model."""

    backend = "keras"

    def __init__(self, model, threads=None, fold_bn=True):
        import keras

        from keras_efficient3d.fold import inference_form

        set_keras_threads(threads, is_depthwise_model(model))
        if keras.backend.backend() != "tensorflow":
            from keras_efficient3d import import_tensorflow_quietly

            import_tensorflow_quietly()  # Keras imports it on any backend to load and fold the model
        self.threads = threads
        if isinstance(model, (str, os.PathLike)):
            self.path = os.fspath(model)
            try:
                model = keras.saving.load_model(self.path, compile=False)
            except Exception as err:  # corrupt archives raise many different types
                raise ModelFileError(f"{self.path}: cannot load the Keras model ({_one_line(err)})") from None
        else:
            self.path = getattr(model, "name", "")
        self.model = inference_form(model, fold_bn)
        shape = self.model.input_shape
        if isinstance(shape, list):
            raise ModelFileError(f"{self.path}: the model has {len(shape)} inputs; expected one clip input")
        self.input_spec = InputSpec(tuple(shape), "float32")
        self.num_classes = self.model.output_shape[-1]
        backend = keras.backend.backend()
        if backend not in _COMPILERS:  # Keras' inference-only numpy and openvino backends
            raise ValueError(f"Keras' {backend} backend does not run the project's models: set "
                             "KERAS_BACKEND to tensorflow, jax or torch")
        self._call = _COMPILERS[backend](self.model)
        from keras_efficient3d.preprocessing import VideoPreprocessing

        # a model that normalises its input itself (`with_preprocessing`) takes the frames
        self._takes_frames = any(isinstance(layer, VideoPreprocessing)
                                 for layer in self.model.layers[:3])

    def check_clips(self, clips):
        array = np.asarray(clips)
        if self._takes_frames and array.dtype == np.uint8:
            array = array.astype(np.float32)  # the 0-255 values its preprocessing layer reads
        return super().check_clips(array)

    def _run(self, batch):
        return self._call(batch)


def _tensorflow_call(net):
    import tensorflow as tf

    shape = tuple(net.input_shape[1:])
    if any(d is None for d in shape):
        call = tf.function(lambda x: net(x, training=False), reduce_retracing=True)
        return lambda batch: call(batch).numpy()
    # One function for every batch size, optimised once, here: its first run is when
    # Grappler rewrites the graph, and TF 2.21's oneDNN passes then log errors about nodes
    # they made themselves ("Relu6 has an empty op name", on folded depthwise ReLU6 layers)
    # before going on; the results are unchanged and the lines tell a user nothing.
    call = tf.function(lambda x: net(x, training=False)).get_concrete_function(
        tf.TensorSpec((None,) + shape, tf.float32))
    with quiet_stderr():
        call(tf.zeros((1,) + shape))
    return lambda batch: call(tf.constant(batch)).numpy()


def _jax_call(net):
    import jax

    # Weights as arguments, not constants folded into the program: XLA compiles faster.
    state = ([v.value for v in net.trainable_variables],
             [v.value for v in net.non_trainable_variables])

    @jax.jit
    def call(trainable, non_trainable, x):
        return net.stateless_call(trainable, non_trainable, x, training=False)[0]
    return lambda batch: np.asarray(call(*state, batch))


def torch_trace(net, example):
    """`net` (a Keras model on the PyTorch backend) traced on the tensor `example` into a
    frozen TorchScript module: the graph of PyTorch ops alone, run by TorchScript's C++
    interpreter with the weights inlined. Keras' per-layer Python work (call contexts,
    argument checks) is half an eager call of ShuffleNetV2 and gone here; the trace holds for
    inputs of `example`'s shape only."""
    import warnings

    import torch

    with torch.no_grad(), warnings.catch_warnings():
        # The layers read static shapes into Python values: constants for this shape.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(net, (example,), check_trace=False)
        return torch.jit.freeze(traced.eval())


def _torch_call(net):
    import keras
    import torch

    traces = {}

    def call(batch):
        x = keras.ops.convert_to_tensor(batch)  # on the device Keras puts the weights on
        key = (tuple(x.shape), x.dtype)  # a trace records its input's casts too
        with torch.no_grad():
            if key not in traces:
                traces[key] = torch_trace(net, x)
                # The profiling executor optimises a trace on its second run (5x a steady
                # run's CPU time for the shipped model): warmed here, as the other runners' first
                # call is, the calls that predict and benchmark time run at the steady speed.
                for _ in range(2):
                    traces[key](x)
            # float: numpy has no bfloat16 (a model under mixed_bfloat16 returns it)
            return traces[key](x).float().cpu().numpy()
    return call


_COMPILERS = {"tensorflow": _tensorflow_call, "jax": _jax_call, "torch": _torch_call}


def tflite_interpreter(model, threads=None, use_xnnpack=True):
    """A LiteRT interpreter for TFLite bytes or a path: the default resolver applies XNNPACK
    where the graph allows; ``use_xnnpack=False`` runs the builtin kernels only."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    content, path = (bytes(model), None) if isinstance(model, (bytes, bytearray)) else (None, os.fspath(model))
    resolver = OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return Interpreter(model_path=path, model_content=content, num_threads=threads or None,
                       experimental_op_resolver_type=resolver)


class TFLiteRunner(_Runner):
    """A TFLite model run by LiteRT with XNNPACK and a thread count.

    Args:
        model: TFLite bytes or a path.
        num_threads: CPU threads (``None``: LiteRT's default).
        use_xnnpack: apply the XNNPACK delegate (the default resolver).
        strict: raise if XNNPACK does not take the whole graph in one partition, instead
            of silently running parts on the slower builtin kernels.
    """

    backend = "tflite"

    def __init__(self, model, num_threads=2, use_xnnpack=True, strict=True):
        self.path = "<bytes>" if isinstance(model, (bytes, bytearray)) else os.fspath(model)
        self.threads = num_threads
        self.use_xnnpack = use_xnnpack
        try:
            with quiet_stderr():
                self.interpreter = tflite_interpreter(model, num_threads, use_xnnpack)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ModelFileError(f"{self.path}: cannot load the TFLite model ({_one_line(err)})") from None
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise ModelFileError(f"{self.path}: the model has {len(inputs)} inputs; expected one clip input")
        self.input = inputs[0]
        self.output = self.interpreter.get_output_details()[0]
        shape = tuple(int(d) for d in self.input["shape"])
        signature = self.input.get("shape_signature", self.input["shape"])
        if len(signature) and int(signature[0]) < 0:
            shape = (1,) + shape[1:]  # dynamic batch: allocated as 1, run clip by clip
        # deploy.tflite.convert(frames=...): an int8 input named frames takes the uint8 frames
        # minus 128, which _run makes of the frames it is given
        self._frames = np.dtype(self.input["dtype"]) == np.int8 and "frames" in self.input["name"]
        if self._frames:
            self.input_spec = InputSpec(shape, "uint8", uint8_frames=True)
        else:
            self.input_spec = InputSpec(shape, np.dtype(self.input["dtype"]).name,
                                        self._quantization(self.input, "input"))
        self.output_quantization = self._quantization(self.output, "output")
        self.num_classes = int(self.output["shape"][-1])
        if use_xnnpack and strict and not self.delegated():
            raise RuntimeError(f"XNNPACK did not take the whole graph "
                               f"({self.partitions()} delegate partitions).")

    def _quantization(self, detail, what):
        if np.dtype(detail["dtype"]).kind not in "iu":
            return None
        scale, zero_point = detail["quantization"]
        if not scale:
            raise ModelFileError(f"{self.path}: the {what} tensor is {np.dtype(detail['dtype']).name} "
                                 "but carries no quantization parameters")
        return float(scale), int(zero_point)

    @property
    def input_shape(self):
        return self.input_spec.shape

    def partitions(self):
        """Number of delegate partitions (1 when XNNPACK runs the whole graph)."""
        return [op["op_name"] for op in self.interpreter._get_ops_details()].count("DELEGATE")

    def delegated(self):
        """True when XNNPACK took the graph in one piece: delegation appends one DELEGATE
        node per partition after the model's own nodes."""
        return self.partitions() == 1

    def _run(self, batch):
        if self._frames:  # x - 128: the top bit flipped
            batch = np.bitwise_xor(batch, np.uint8(0x80)).view(np.int8)
        self.interpreter.set_tensor(self.input["index"], batch)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"])
        if self.output_quantization is not None:
            out = dequantize(out, *self.output_quantization)
        return out

    def timing_step(self, seed=0):
        step, batch = super().timing_step(seed)
        step()  # sets the input tensor; the timed step is the invoke alone
        return self.interpreter.invoke, batch


def choose_providers(available, requested=None):
    """The requested ONNX Runtime execution providers (all must exist), else those of
    `ONNX_PROVIDERS` that are available."""
    if isinstance(requested, str):  # one provider's name, not its characters
        requested = [requested]
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ValueError(f"Providers not in this onnxruntime build: {', '.join(missing)}. "
                             f"Available: {', '.join(available)}")
        return list(requested)
    return [p for p in ONNX_PROVIDERS if p in available] or list(available)


def onnx_session(model, threads=None, providers=("CPUExecutionProvider",), spinning=True):
    """An ONNX Runtime session for a path, serialized bytes or an `onnx.ModelProto`.

    Args:
        threads: intra-op threads (0 or None: ONNX Runtime's default), one inter-op thread.
        providers: execution providers in order of preference; ``None``: the best available
            (`choose_providers`).
        spinning: ONNX Runtime's default, worker threads that spin after each run waiting for
            the next; False when other runtimes share the cores (a benchmark timing several
            in turns: spinning workers slowed OpenVINO's next runs 1.1-1.6x on 2 cores).

    Raises:
        ModelFileError: a missing, unparsable or invalid model (ONNX Runtime's own errors).
    """
    import onnxruntime as ort

    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif not isinstance(model, (bytes, bytearray)):
        model = os.fspath(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = choose_providers(ort.get_available_providers(), providers)
    try:
        return ort.InferenceSession(model, options, providers=providers)
    except Exception as err:  # onnxruntime's own classes, not importable by a stable path
        if type(err).__name__ not in ("NoSuchFile", "InvalidProtobuf", "Fail", "InvalidGraph"):
            raise
        where = model if isinstance(model, str) else "<onnx>"
        raise ModelFileError(f"{where}: cannot load the ONNX model ({_one_line(err)})") from None


def _unquantized_input_spec(path, shape, dtype):
    """The `InputSpec` of an ONNX or OpenVINO input, which carries no scale and zero point:
    a uint8 input is frames (0-255) the model normalises itself (cast from normalised
    floats, clips would be truncated to nothing); an int8 one cannot be fed."""
    if dtype == "int8":
        raise ModelFileError(f"{path}: an int8 input without quantization parameters; "
                             "expected float clips or uint8 frames")
    return InputSpec(shape, dtype, uint8_frames=dtype == "uint8")


class ONNXRunner(_Runner):
    """An ONNX model run by ONNX Runtime (`onnx_session`)."""

    backend = "onnx"
    _DTYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8",
               "tensor(float16)": "float16"}

    def __init__(self, model, threads=None, providers=("CPUExecutionProvider",), spinning=True):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ModelFileError("ONNX models need onnxruntime: "
                                 f"{install_command('onnxruntime')}") from None
        if isinstance(model, (str, os.PathLike)):
            model = os.fspath(model)  # a Path's sidecar is found beside it, not by its name
        self.path = model if isinstance(model, str) else getattr(model, "name", "<onnx>")
        self.threads = threads
        try:
            self.session = onnx_session(model, threads, providers, spinning)
        except ValueError:
            raise
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelFileError(f"{self.path}: cannot load the ONNX model ({_one_line(err)})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelFileError(f"{self.path}: the model has {len(inputs)} inputs; expected one clip input")
        self._input_name = inputs[0].name
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in inputs[0].shape)
        dtype = self._DTYPES.get(inputs[0].type)
        if dtype is None:
            raise ModelFileError(f"{self.path}: unsupported input type {inputs[0].type}")
        self.input_spec = _unquantized_input_spec(self.path, shape, dtype)
        output = self.session.get_outputs()[0].shape
        last = output[-1] if output else None
        self.num_classes = last if isinstance(last, int) and last > 0 else None

    @property
    def providers(self):
        return self.session.get_providers()

    def _run(self, batch):
        return self.session.run(None, {self._input_name: batch})[0]


# The extra of this package that installs each optional package (by its import name): the
# one place a "not installed" message takes its pip command from.
EXTRAS = {"ai_edge_litert": "litert", "onnx": "onnx", "onnxruntime": "onnx", "tf2onnx": "onnx",
          "openvino": "openvino", "nncf": "openvino", "torch": "torch", "jax": "jax"}


def missing_packages(*packages):
    """The import names of `packages` that this environment lacks (found, not imported)."""
    import importlib.util

    def found(name):
        if sys.modules.get(name) is not None:  # imported already (or stood in for)
            return True
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent that is no package, a spec of None
            return False

    return [p for p in packages if not found(p)]


def install_command(*packages):
    """The pip command that installs `packages` (import names): this package's extras."""
    extras = ",".join(sorted({EXTRAS[p] for p in packages}))
    return f"pip install 'keras_efficient3d[{extras}]'"


OPENVINO_INSTALL = install_command("openvino")


def import_keeping_log_handlers(name):
    """``importlib.import_module(name)`` with the root logger's handlers kept: importing
    OpenVINO (its converter's logger module) removes absl's, which the command lines format
    ("warning: ..."); without it Python writes a warning's text alone and drops INFO lines."""
    import importlib
    import logging

    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        return importlib.import_module(name)
    finally:
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)


def openvino_module():
    """``openvino``, or an `ImportError` that says how to install it."""
    try:
        return import_keeping_log_handlers("openvino")
    except ImportError:
        raise ImportError(f"OpenVINO is not installed: {OPENVINO_INSTALL}") from None


# Devices that run a model on others (`check_openvino_device`): "AUTO" alone, or with a list.
_OPENVINO_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


def normalize_openvino_device(device):
    """`device` as OpenVINO spells it: upper case, no spaces ("auto: gpu, cpu" ->
    "AUTO:GPU,CPU")."""
    return "".join(device.split()).upper()


def _parse_openvino_device(device):
    """A (normalized) OpenVINO device string as ``(virtual, names, excluded)``: the virtual
    device (AUTO, MULTI, HETERO, BATCH) or None for one physical device; the physical devices
    it names to run on, in order, without BATCH's batch size ("GPU", "AUTO:GPU,CPU",
    "HETERO:GPU.1,CPU", "BATCH:GPU(4)"); and those AUTO excludes ("AUTO:-GPU")."""
    head, _, rest = device.partition(":")
    if head not in _OPENVINO_VIRTUAL_DEVICES:
        return None, [device], []
    entries = [entry.split("(")[0] for entry in rest.split(",") if entry]
    return (head, [entry for entry in entries if not entry.startswith("-")],
            [entry[1:] for entry in entries if entry.startswith("-")])


def _listed(name, available):
    """Whether device `name` ("GPU", "GPU.1", a tile "GPU.0.1") is one of `available`
    (OpenVINO lists a lone GPU as "GPU", which "GPU.0" also names)."""
    kind, _, index = name.partition(".")
    index = index.split(".")[0]
    for entry in available:
        entry_kind, _, entry_index = entry.partition(".")
        if entry_kind == kind and (not index or index == (entry_index or "0")):
            return True
    return False


def check_openvino_device(device, available=None):
    """Raises ValueError, naming the devices OpenVINO sees, unless every device `device` names
    is one of them (``"GPU"`` matches ``"GPU.0"``; ``"AUTO"`` alone lets OpenVINO choose)."""
    if not isinstance(device, str) or not device.strip():
        raise ValueError(f"`device` must be an OpenVINO device name such as CPU, GPU, NPU or AUTO. "
                         f"Received: device={device!r}")
    device = normalize_openvino_device(device)
    if available is None:
        available = openvino_module().Core().available_devices
    missing = [name for name in _parse_openvino_device(device)[1] if not _listed(name, available)]
    if missing:
        devices = "device " + missing[0] + " is" if len(missing) == 1 else f"devices {', '.join(missing)} are"
        raise ValueError(f"OpenVINO {devices} not available here (OpenVINO sees: "
                         f"{', '.join(available) or 'none'})")


def _uses(device, kind):
    """Whether `device` may run on devices of `kind` ("CPU", "GPU"): AUTO alone, or with
    exclusions only ("AUTO:-GPU"), may pick any device it does not exclude."""
    _, names, excluded = _parse_openvino_device(device)
    if names:
        return kind in [name.split(".")[0] for name in names]
    return kind not in [name.split(".")[0] for name in excluded]


def openvino_uses_cpu(device):
    """Whether the (normalized) OpenVINO `device` may run on the CPU, where thread counts apply."""
    return _uses(device, "CPU")


def openvino_config(device, threads=None, inference_precision="f32"):
    """The compile configuration of `OpenVINORunner`: the latency hint; the CPU's threads,
    one stream and `inference_precision`; the GPU's `inference_precision` (an Intel GPU
    computes in f16 unless told); each passed to its device inside a virtual one (AUTO,
    HETERO, MULTI), and AUTO kept from starting on the CPU while the GPU compiles (its
    timings and reported device are then of one device)."""
    cpu = {"NUM_STREAMS": 1}
    if threads:
        cpu["INFERENCE_NUM_THREADS"] = int(threads)
    gpu = {}
    if inference_precision:
        cpu["INFERENCE_PRECISION_HINT"] = gpu["INFERENCE_PRECISION_HINT"] = inference_precision
    config = {"PERFORMANCE_HINT": "LATENCY"}
    virtual = _parse_openvino_device(device)[0]
    if virtual is None:  # one physical device
        config.update({"CPU": cpu, "GPU": gpu}.get(device.split(".")[0], {}))
        return config
    properties = {}
    if _uses(device, "CPU"):
        properties["CPU"] = cpu
    if gpu and _uses(device, "GPU"):
        properties["GPU"] = gpu
    if properties:
        config["DEVICE_PROPERTIES"] = properties
    if virtual == "AUTO":
        config["ENABLE_STARTUP_FALLBACK"] = False
    return config


class OpenVINORunner(_Runner):
    """An OpenVINO model (IR ``.xml`` with its ``.bin``, or an ``openvino.Model``) compiled
    for `device` with the latency hint, one stream and `threads` CPU threads.

    ``device``: ``"CPU"``, ``"GPU"``, ``"NPU"``, or a virtual device over several, such as
    ``"AUTO"`` or ``"AUTO:GPU,CPU"`` (`check_openvino_device`). ``threads`` is the CPU's
    setting (None on a device without it); ``inference_precision`` the CPU's and the GPU's
    (`openvino_config`); an NPU runs at its own.

    ``inference_precision`` is the CPU's ``INFERENCE_PRECISION_HINT``: ``"f32"`` by default,
    so that float IR computes what the Keras model computes (CPUs with bf16 or fp16
    units would otherwise pick those); ``None`` leaves the device's choice. int8 layers of a
    quantized IR run in int8 either way.
    """

    backend = "openvino"
    _DTYPES = {"f32": "float32", "f16": "float16", "u8": "uint8", "i8": "int8"}

    def __init__(self, model, threads=None, device="CPU", inference_precision="f32"):
        try:
            ov = openvino_module()
        except ImportError as err:
            raise ModelFileError(f"OpenVINO models need openvino ({err})") from None
        core = ov.Core()
        check_openvino_device(device, core.available_devices)
        device = normalize_openvino_device(device)
        self.threads = threads if openvino_uses_cpu(device) else None  # the CPU's setting only
        self.device = device
        if isinstance(model, (str, os.PathLike)):
            self.path = os.fspath(model)
            weights = os.path.splitext(self.path)[0] + ".bin"
            if not os.path.isfile(weights):
                raise ModelFileError(f"{self.path}: its weights {weights} are missing (an OpenVINO IR is "
                                     "an .xml graph and a .bin of the same name)")
            try:
                with quiet_stderr():
                    model = core.read_model(self.path, weights)
            except RuntimeError as err:
                reason = _openvino_reason(err)
                if "Incorrect weights in bin file" in reason:  # the graph read, its weights not
                    raise ModelFileError(
                        f"{self.path}: cannot load the OpenVINO model: its weights {weights} do "
                        "not fit its graph (the .bin of another export? an IR is the .xml and "
                        f".bin that one export wrote; OpenVINO: {reason})") from None
                raise ModelFileError(f"{self.path}: cannot load the OpenVINO model, not an OpenVINO IR "
                                     f"({reason})") from None
        else:
            self.path = getattr(model, "friendly_name", "<openvino>")
        if len(model.inputs) != 1:
            raise ModelFileError(f"{self.path}: the model has {len(model.inputs)} inputs; expected one clip input")
        try:
            with quiet_stderr():
                self.compiled = core.compile_model(model, device,
                                                   openvino_config(device, threads, inference_precision))
        except RuntimeError as err:
            raise ModelFileError(f"{self.path}: OpenVINO cannot compile the model for {device} "
                                 f"({_openvino_reason(err)})") from None
        self.request = self.compiled.create_infer_request()
        port = self.compiled.inputs[0]
        shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
        dtype = self._DTYPES.get(port.get_element_type().get_type_name())
        if dtype is None:
            raise ModelFileError(f"{self.path}: unsupported input type {port.get_element_type()}")
        # the IR's only integer input is frames_input's (openvino_export.uint8_frames_input)
        self.input_spec = _unquantized_input_spec(self.path, shape, dtype)
        output = self.compiled.outputs[0].get_partial_shape()
        last = output[len(output) - 1] if output.rank.is_static and len(output) else None
        self.num_classes = last.get_length() if last is not None and last.is_static else None

    @property
    def inference_precision(self):
        """The precision float layers run at ('f32', 'bf16', 'f16'); None on a virtual device
        (AUTO, HETERO...), which has none of its own."""
        try:
            return self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        except RuntimeError:
            return None

    @property
    def execution_devices(self):
        """The devices the model runs on (what AUTO chose)."""
        return list(self.compiled.get_property("EXECUTION_DEVICES"))

    def runtime_precisions(self):
        """Counts of (layer type, runtime precision) in the compiled model's execution graph
        (which layers run in int8; constants left out)."""
        counts = {}
        for node in self.compiled.get_runtime_model().get_ops():
            info = node.get_rt_info()
            kind = info["layerType"].astype(str)
            if kind != "Const":
                key = (kind, info["runtimePrecision"].astype(str))
                counts[key] = counts.get(key, 0) + 1
        return counts

    def _run(self, batch):
        self.request.infer({0: batch})
        return self.request.get_output_tensor(0).data.copy()

    def timing_step(self, seed=0):
        step, batch = super().timing_step(seed)
        step()  # sets the input tensor; the timed step is the inference alone
        return self.request.infer, batch


_RUNNERS = {".keras": KerasRunner, ".tflite": TFLiteRunner, ".onnx": ONNXRunner,
            ".xml": OpenVINORunner}


def _check_clip_input(shape, path):
    if len(shape) != 5:
        raise ModelFileError(
            f"{path}: the model's input has shape {tuple(shape)}; expected a 5-D clip tensor "
            "(batch, frames, height, width, channels)")
    if shape[4] not in (None, 3):
        raise ModelFileError(f"{path}: the model's input has {shape[4]} channels; expected 3 (RGB)")


# OpenVINO's float precision for load_runner: what Keras computes, or the CPU's default.
OPENVINO_PRECISIONS = ("f32", "auto")


def load_runner(path, threads: int | None = 2, openvino_precision: str = "f32",
                openvino_device: str = "CPU"):
    """A runner for a ``.keras``, ``.tflite``, ``.onnx`` or OpenVINO ``.xml`` clip model (see
    the module docstring); TFLite runs on XNNPACK where the graph allows, without requiring
    all of it. ``openvino_precision`` (``.xml`` only): ``"f32"``, what the Keras model
    computes, or ``"auto"``, the CPU's default (bf16 on CPUs with bf16 units: AVX512_BF16,
    AMX; 1.5-2.4x faster there, ~1e-2 from fp32). ``openvino_device`` (``.xml`` only): CPU,
    GPU, NPU, AUTO... (`OpenVINORunner`).

    Raises:
        ModelFileError: missing file, unknown format, unloadable model, not a clip model.
        ValueError: a thread count that is not None, 0 or a positive integer (`check_threads`);
            an OpenVINO device this machine does not have (`check_openvino_device`).
    """
    check_threads(threads)
    if openvino_precision not in OPENVINO_PRECISIONS:
        raise ValueError(f"`openvino_precision` must be one of {', '.join(OPENVINO_PRECISIONS)}. "
                         f"Received: openvino_precision={openvino_precision!r}")
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in _RUNNERS:
        raise ModelFileError(
            f"{path}: unsupported model format '{ext or path}' (expected .keras, .tflite, .onnx or .xml)")
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: model file not found")
    if os.path.getsize(path) == 0:
        raise ModelFileError(f"{path}: model file is empty (0 bytes)")
    if ext == ".keras" and not path.endswith(".keras"):
        raise ModelFileError(f"{path}: Keras reads the .keras extension in lower case only; "
                             "rename the file")
    if ext == ".tflite":
        runner = TFLiteRunner(path, num_threads=threads, strict=False)
    elif ext == ".xml":
        runner = OpenVINORunner(path, threads, device=openvino_device, inference_precision=(
            None if openvino_precision == "auto" else openvino_precision))
    else:
        runner = _RUNNERS[ext](path, threads)
    _check_clip_input(runner.input_spec.shape, path)
    return runner
