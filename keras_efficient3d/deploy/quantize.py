"""Quantization-aware training (QAT) without tensorflow-model-optimization.

``quantize_model(model, representative_data)`` returns a Keras model whose one layer,
`QuantizedGraph`, runs the deployment graph of `model` (BatchNorm folded, 2D ops over
temporal taps, see `keras_efficient3d.deploy.graph`) with TensorFlow's fake-quant ops:

* weights: symmetric per output channel (int8 in [-127, 127]), ranges taken from the
  current weights at every step (straight-through gradients);
* activations: asymmetric per tensor at every point TFLite keeps an int8 tensor with its
  own scale (each convolution/partial sum/add/pool/dense output, after a fused ReLU),
  ranges calibrated on representative clips, then tracked by an exponential moving
  average while training (``ranges='ema'``) or learned by gradient (``ranges='learned'``).

The model takes the same (B, T, H, W, 3) clips as the float model, so it compiles and fits
on the training pipeline; ``convert_qat(qat_model)`` then writes a full-int8 TFLite model
whose convolutions are true int8 ops XNNPACK runs.

    qat = quantize_model(model, train_ds, num_calibration=64)
    qat.compile(keras.optimizers.SGD(1e-3, momentum=0.9),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    qat.fit(train_ds, validation_data=val_ds, epochs=2)
    blob = convert_qat(qat)                # bytes of a full-int8 .tflite
"""

import keras
import numpy as np
import tensorflow as tf

from keras_efficient3d.backends import require_tensorflow_backend
from keras_efficient3d.deploy.graph import DeploymentGraph, take_rows
from keras_efficient3d.deploy.tflite import convert_function, representative_dataset

__all__ = ["QuantizedGraph", "activation_range", "calibrate_ranges", "convert_qat", "quantize_model"]

_PACKAGE = "keras_efficient3d"


def _fq_weight(w, kind):
    """Symmetric int8 fake quantization of a kernel (per output channel but for dense)."""
    if kind == "conv":
        m = tf.stop_gradient(tf.reduce_max(tf.abs(w), axis=[0, 1, 2]))
        m = tf.maximum(m, 1e-8)
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(
            w, -m, m, num_bits=8, narrow_range=True)
    if kind == "depthwise":
        kh, kw, c, mult = w.shape
        w2 = tf.reshape(w, [kh * kw, c * mult])
        m = tf.maximum(tf.stop_gradient(tf.reduce_max(tf.abs(w2), axis=0)), 1e-8)
        w2 = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            w2, -m, m, num_bits=8, narrow_range=True)
        return tf.reshape(w2, [kh, kw, c, mult])
    if kind == "dense":
        m = tf.maximum(tf.stop_gradient(tf.reduce_max(tf.abs(w))), 1e-8)
        return tf.quantization.fake_quant_with_min_max_vars(w, -m, m, num_bits=8, narrow_range=True)
    return w


def _np_fq_symmetric(w, axis):
    """Numpy twin of the per-channel symmetric fake quantization along `axis`."""
    other = tuple(i for i in range(w.ndim) if i != axis)
    m = np.maximum(np.abs(w).max(axis=other, keepdims=True), 1e-8)
    scale = m / 127.0
    return (np.clip(np.round(w / scale), -127, 127) * scale).astype(np.float32)


def activation_range(lo, hi):
    """The range an activation is fake-quantized over (8 bits, not narrow): the tracked or
    learned (lo, hi), widened to hold 0 and never empty. The ONNX export reads it too."""
    lo = tf.minimum(lo, 0.0)
    hi = tf.maximum(hi, lo + 1e-6)
    return lo, tf.maximum(hi, 0.0)


def _fq_act(x, lo, hi):
    lo, hi = activation_range(lo, hi)
    return tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=8, narrow_range=False)


class _RangeRecorder:
    """Float graph that records each quantization point's min and max."""

    def __init__(self, params):
        self.params = params
        self.ranges = {}

    def param(self, key, keep=None):
        return tf.constant(take_rows(self.params[key], keep))

    def array(self, key):
        return self.params[key]

    def act(self, key, x):
        self.ranges[key] = (tf.reduce_min(x), tf.reduce_max(x))
        return x


def calibrate_ranges(graph, data, num_samples=64, batch_size=8):
    """Activation ranges (key -> (min, max)) of the float `graph` over representative clips.

    Args:
        graph: a `DeploymentGraph`.
        data: what `keras_efficient3d.deploy.tflite.representative_dataset` accepts.
        num_samples: clips to look at.
    """
    recorder = _RangeRecorder(graph.params)
    clips = [c[0][0] for c in representative_dataset(data, num_samples, graph.input_shape)()]
    lo, hi = {}, {}
    # Eagerly: a few batches, and tracing the graph with its hooks cost 40x a batch's run
    # (ShuffleNetV2 0.25x on 8x32x32: 20 s traced, 0.4 s eager).
    for i in range(0, len(clips), batch_size):
        recorder.ranges = {}
        graph(tf.constant(np.stack(clips[i:i + batch_size])), batch=None, hooks=recorder)
        for key, (mn, mx) in recorder.ranges.items():
            lo[key] = min(lo.get(key, np.inf), float(mn))
            hi[key] = max(hi.get(key, -np.inf), float(mx))
    return {key: (lo[key], hi[key]) for key in lo}


class _QATHooks:
    def __init__(self, layer, training):
        self.layer = layer
        self.training = training

    def param(self, key, keep=None):
        var = self.layer._param_vars[key]
        if keep is not None:
            var = tf.gather(var, keep, axis=2)
        return _fq_weight(var, self.layer.graph.param_kinds[key])

    def act(self, key, x):
        layer = self.layer
        if key not in layer._range_vars:
            raise KeyError(f"No calibrated range for quantization point '{key}'.")
        lo, hi = layer._range_vars[key]
        if self.training and layer.ranges == "ema":
            d = layer.ema_decay
            lo = lo.assign(d * lo + (1.0 - d) * tf.reduce_min(x))
            hi = hi.assign(d * hi + (1.0 - d) * tf.reduce_max(x))
        return _fq_act(x, lo, hi)


class _FrozenHooks:
    """Constants and fixed ranges: what `convert_qat` traces."""

    def __init__(self, params, kinds, ranges):
        self.params, self.kinds, self.ranges = params, kinds, ranges

    def param(self, key, keep=None):
        kind, value = self.kinds[key], take_rows(self.params[key], keep)
        if kind == "depthwise":
            # The converter cannot carry a per-channel fake quant through the reshape of
            # the depthwise layout; the kernel is put on its int8 grid here instead, and
            # the converter's own per-channel max-abs quantization reproduces that grid.
            return tf.constant(_np_fq_symmetric(value, axis=2))
        return _fq_weight(tf.constant(value), kind)

    def array(self, key):
        """A kernel that the graph lays out anew (tiled, banded over frames, block-diagonal:
        `keras_efficient3d.deploy.packed`) as numpy, on its int8 grid: each output channel
        of the new kernel holds all of the original channel's weights, so the converter's
        per-channel max-abs scale is that channel's and reproduces the grid."""
        kind = self.kinds[key]
        if kind in ("conv", "depthwise"):
            return _np_fq_symmetric(self.params[key], axis=3 if kind == "conv" else 2)
        return self.params[key]

    def act(self, key, x):
        lo, hi = self.ranges[key]
        return _fq_act(x, tf.constant(lo, tf.float32), tf.constant(hi, tf.float32))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizedGraph(keras.layers.Layer):
    """The deployment graph of a model with fake quantization (see the module docstring).

    Args:
        graph: a `DeploymentGraph`.
        act_ranges: calibrated activation ranges (`calibrate_ranges`).
        ranges: 'ema' (tracked) or 'learned' (trainable min/max).
        ema_decay: decay of the moving ranges.
    """

    def __init__(self, graph, act_ranges, ranges="ema", ema_decay=0.999, **kwargs):
        super().__init__(**kwargs)
        if ranges not in ("ema", "learned"):
            raise ValueError(f"`ranges` must be 'ema' or 'learned'. Received: ranges={ranges!r}")
        self.graph = graph
        self.act_ranges = dict(act_ranges)
        self.ranges = ranges
        self.ema_decay = float(ema_decay)
        self._param_vars = {}
        self._range_vars = {}

    def build(self, input_shape):
        for key, value in self.graph.params.items():
            kind = self.graph.param_kinds[key]
            self._param_vars[key] = self.add_weight(
                name=key.replace("/", "__"), shape=value.shape,
                initializer=keras.initializers.Constant(value), trainable=kind != "const")
        for key, (lo, hi) in self.act_ranges.items():
            name = key.replace("/", "__")
            trainable = self.ranges == "learned"
            self._range_vars[key] = (
                self.add_weight(name=f"{name}__min", shape=(), trainable=trainable,
                                initializer=keras.initializers.Constant(lo)),
                self.add_weight(name=f"{name}__max", shape=(), trainable=trainable,
                                initializer=keras.initializers.Constant(hi)))

    def call(self, clips, training=None):
        return self.graph(clips, batch=None, hooks=_QATHooks(self, bool(training)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:1]) + tuple(self.graph.model.outputs[0].shape[1:])

    def frozen_hooks(self):
        """The current weights and ranges as constants (for export)."""
        params = {k: np.asarray(v.numpy(), np.float32) for k, v in self._param_vars.items()}
        ranges = {k: (float(lo.numpy()), float(hi.numpy())) for k, (lo, hi) in self._range_vars.items()}
        return _FrozenHooks(params, self.graph.param_kinds, ranges)

    def get_config(self):
        # Without this refusal Keras writes a .keras file that it cannot load again.
        raise NotImplementedError(_NOT_SAVED_WHOLE)


_NOT_SAVED_WHOLE = (
    "A quantization-aware model is not saved whole (.keras): its graph is built from the "
    "float model. Save its weights (`qat.save_weights('qat.weights.h5')`) beside the float "
    "model, and rebuild it with `quantize_model(float_model, clips)` and "
    "`load_weights('qat.weights.h5')`.")


class _QuantizationAwareModel(keras.Model):
    """The functional model `quantize_model` returns: its `save` refuses before Keras opens
    the file (Keras would leave an empty one behind `get_config`'s refusal)."""

    def save(self, filepath, *args, **kwargs):
        raise NotImplementedError(_NOT_SAVED_WHOLE)


def quantize_model(model, representative_data, num_calibration=64, ranges="ema",
                   ema_decay=0.999, name=None):
    """Returns a trainable fake-quantized Keras model of `model` (see the module docstring).

    Args:
        model: a trained registry model (BatchNorm is folded) or a `DeploymentGraph`.
        representative_data: clips to calibrate the activation ranges: the training
            `tf.data` pipeline of (clips, labels), an array of clips, or an iterable.
        num_calibration: calibration clips.
        ranges: 'ema' or 'learned' activation ranges.
        ema_decay: decay of the moving ranges ('ema').
        name: model name; default '<model name>_qat'.
    """
    require_tensorflow_backend("Quantization-aware training (fake-quant)")
    graph = model if isinstance(model, DeploymentGraph) else DeploymentGraph(model)
    act_ranges = calibrate_ranges(graph, representative_data, num_calibration)
    inputs = keras.Input(graph.input_shape, name="input")
    layer = QuantizedGraph(graph, act_ranges, ranges=ranges, ema_decay=ema_decay,
                           name="quantized_graph")
    outputs = layer(inputs)
    return _QuantizationAwareModel(inputs, outputs, name=name or f"{graph.model.name}_qat")


def _qat_layer(qat_model):
    if isinstance(qat_model, QuantizedGraph):
        return qat_model
    for layer in qat_model.layers:
        if isinstance(layer, QuantizedGraph):
            return layer
    raise ValueError("Expected a model from `quantize_model`.")


def convert_qat(qat_model, batch=1, int8_io=False):
    """Converts a model from `quantize_model` (after `fit`) to full-int8 TFLite bytes."""
    layer = _qat_layer(qat_model)
    graph = layer.graph
    hooks = layer.frozen_hooks()
    fn = graph.as_function(batch=batch, hooks=hooks, int8=True).get_concrete_function()
    return convert_function(fn, "int8", int8_io=int8_io, input_shape=graph.input_shape,
                            quantized_graph=True)


class _KeepBest(keras.callbacks.Callback):
    """Keeps the weights (fake-quant ranges included) of the epoch with the best validation
    accuracy, as training keeps best.keras, the QAT model's before its first epoch
    included; restores them at the end."""

    def __init__(self, accuracy):
        super().__init__()
        self.best, self.epoch, self.weights = accuracy, 0, None
        self.accuracies = [accuracy]  # before the first epoch, then after each

    def set_model(self, model):
        super().set_model(model)
        if self.weights is None:
            self.weights = model.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        accuracy = (logs or {}).get("val_accuracy", -1.0)
        self.accuracies.append(accuracy)
        if accuracy >= self.best:  # a tie keeps the later, more trained, epoch
            self.best, self.epoch, self.weights = accuracy, epoch + 1, self.model.get_weights()

    def on_train_end(self, logs=None):
        self.model.set_weights(self.weights)


def fine_tune_qat(qat, train_ds, val_ds, epochs, learning_rate=1e-4):
    """Quantization-aware fine-tuning of `qat` (`quantize.quantize_model`'s) for `epochs`,
    keeping the epoch of best validation accuracy (0: the calibrated model as it came);
    returns that epoch and the validation accuracies (before the first epoch, then after
    each). A QAT run's data order alone cost 2 of the 160 validation videos
    in some demo runs, whose PTQ, the calibrated model untrained, lost none."""
    from keras_efficient3d.data.pipeline import quiet_end_of_data
    from keras_efficient3d.models._base import build_for_fit

    qat.compile(optimizer=keras.optimizers.Adam(learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    build_for_fit(qat, train_ds)
    with quiet_end_of_data():
        keep = _KeepBest(qat.evaluate(val_ds, verbose=0, return_dict=True)["accuracy"])
        qat.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=2, shuffle=False,
                callbacks=[keep])  # the pipeline shuffles itself
    return keep.epoch, keep.accuracies
