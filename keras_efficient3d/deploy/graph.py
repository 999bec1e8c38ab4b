"""The deployment graph: a Keras model re-expressed with the ops TFLite runs natively, in int8
and under XNNPACK.

`DeploymentGraph(model)` folds BatchNorm (`keras_efficient3d.fold.inference_form`) and walks
the functional model layer by layer, each layer class mapped to its handler by a table
(`_HANDLERS`), emitting TensorFlow ops on 4-D tensors only. The 3D layers are computed by
the same 2D-tap functions as the Keras layers (`keras_efficient3d.layers.taps`), in the form
that `keras_efficient3d.layers.forms.FORMS["tflite"]` names:

* a clip of a fixed batch ``B`` travels as ``(B * frames, H, W, C)``; at batch 1 (the export
  default) that is ``(frames, H, W, C)``, so temporal taps are pads and slices on axis 0;
* a 3D convolution is one 2D convolution over its temporal taps stacked as channels (a
  ``kt`` times deeper kernel), a depthwise 3D convolution the sum of ``kt`` depthwise 2D
  convolutions, grouped convolutions are split per group (a ReLU after them per group, so
  that it fuses into each CONV_2D);
* 3D pooling is separable: a 2D pool over (H, W), then a ``(kt, 1)`` 2D pool over
  ``(B, frames, H * W, C)``;
* channel shuffles are 3-D reshape/transpose/reshape, global pooling a MEAN over a 4-D view.

There are no 5-D tensors besides the input (reshaped once) and no dynamic shapes in an
exported graph, which is what XNNPACK needs to take a full-int8 model (it refused the
5-D PAD/SLICE graph with a dynamic batch).

Narrow models start in the time-packed layout instead (`keras_efficient3d.deploy.packed`:
``(B, H, W, frames * C)``, one 5-D TRANSPOSE of the input), and leave it by one TRANSPOSE
where they widen (`DeploymentGraph(pack_channels=...)`, `PACK_WIDTH`). The form depends on
the precision the graph is emitted for (``int8``): int8 packs wider stems (wider still
on CPUs with AMX, `default_pack_channels`) and computes packed pointwise convolutions as
block-diagonal matrix products; float keeps the cheaper forms. Both are the same function.

The same emitter serves three purposes through a `hooks` object: plain float export
(constants), quantization-aware training (trainable variables seen through fake-quant ops,
see `keras_efficient3d.deploy.quantize`) and int8 export after QAT (constants with frozen
fake-quant ranges). Parameters and activation quantization points have stable string keys.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_efficient3d import layers as k3d
from keras_efficient3d import runtime
from keras_efficient3d.deploy import packed
from keras_efficient3d.fold import (
    RELU_LIKE,
    Folded,
    activation_name,
    batchnorm_affine,
    inference_form,
    normalises_channels,
)
from keras_efficient3d.layers import forms, taps

__all__ = ["DeploymentGraph", "FloatHooks", "build_deployment_graph", "default_pack_channels"]

_FORM = forms.FORMS["tflite"]
# See `DeploymentGraph`: the widest first convolution (channels per frame) that starts the
# packed layout, for float graphs, for int8 graphs, and for int8 graphs exported on a CPU
# with AMX int8 tiles (`default_pack_channels`), and the widest layer (frames x channels)
# that stays in it. Measured on MobileNetV2 0.2x/0.45x/0.7x/1.0x, MobileNetV1 0.5x/1.0x,
# ShuffleNetV1/V2 1.0x and SqueezeNet 1.1 (README, Deployment): with AMX every int8 file up
# to SqueezeNet's 64-channel stem ran 12-57% faster packed; with AVX-512 VNNI alone the
# 8- and 16-channel stems gained (MobileNetV2 0.2x 3.11 -> 1.99 ms), the 24-channel ones
# broke even and the 32- and 64-channel ones lost 23-51% (SqueezeNet 1.1 4.76 -> 7.19).
PACK_CHANNELS = {"float": 8, "int8": 16, "int8-amx": 64}
PACK_WIDTH = 320
# In int8, a depthwise layer without a temporal stride stays packed up to this width: it is
# the same 2D depthwise op on a wider tensor, and unpacking first is a TRANSPOSE of its whole
# input (MobileNetV2 1.0x int8 7.95 -> 7.64 ms, 0.7x 6.72 -> 5.89). A temporally strided one
# reads phases of the channel axis packed (MobileNetV1 1.0x 6% slower at 512): it unpacks.
PACK_WIDTH_DEPTHWISE = 512
# Float and post-training int8 graphs stack the temporal taps of convolutions at most this
# wide (RGB stems) with a 0/1 convolution (`taps.stacked_taps`) rather than slices and a
# concat (`_Emitter._stacks_exactly`).
STACK_CHANNELS = 4


def take_rows(array, keep):
    """`array`'s input rows (axis 2 of a 2D kernel) at `keep` (indices), or all where None."""
    return array if keep is None else np.take(array, keep, axis=2)


class FloatHooks:
    """Hooks of the plain float graph: parameters are constants, activations untouched."""

    def __init__(self, params):
        self._params = params

    def param(self, key, keep=None):
        """The parameter; `keep`: the indices of a kernel's input rows (axis 2) to keep."""
        return tf.constant(take_rows(self._params[key], keep))

    def array(self, key):
        """The parameter as numpy, for kernels the graph lays out anew (`_Emitter._array`)."""
        return self._params[key]

    def act(self, key, x):
        return x


class _Video:
    """A clip tensor ``(batch * frames, H, W, C)`` with its number of frames, or, `packed`,
    ``(batch, H, W, frames * C)`` (`keras_efficient3d.deploy.packed`)."""

    __slots__ = ("x", "frames", "nonneg", "remap", "parts", "packed")

    def __init__(self, x, frames, nonneg=False, remap=None, parts=None, packed=False):
        self.x, self.frames, self.nonneg = x, int(frames), bool(nonneg)
        self.packed = bool(packed)
        # For a channel concatenation: the videos concatenated (a ReLU moves onto them).
        self.parts = parts
        # For a frame-wise result (pointwise conv, activation) at batch 1: a function of a
        # frame selector ``f(video) -> video`` that re-emits the value on the selected frames
        # of its input, so that the selection (a copy) happens on the smaller input.
        self.remap = remap


class _Flat:
    """Any other tensor (batch, ...): pooled features, logits."""

    __slots__ = ("x",)

    def __init__(self, x):
        self.x = x


def _apply_activation(fn, x):
    name = activation_name(fn)
    if name == "linear":
        return x
    if name == "relu":
        return tf.nn.relu(x)
    if name == "relu6":
        return tf.nn.relu6(x)
    if name == "softmax":
        return tf.nn.softmax(x, axis=-1)
    if name == "sigmoid":
        return tf.math.sigmoid(x)
    return tf.convert_to_tensor(fn(x))


def default_pack_channels(int8=False):
    """`DeploymentGraph`'s default ``pack_channels`` for a graph emitted in float or in
    `int8` on this CPU (`PACK_CHANNELS`; int8 packs wider stems where the CPU has AMX)."""
    if not int8:
        return PACK_CHANNELS["float"]
    return PACK_CHANNELS["int8-amx" if runtime.cpu_has_amx() else "int8"]


class DeploymentGraph:
    """A trained Keras model as a TFLite-friendly graph (see the module docstring).

    Args:
        model: a functional model from the registry (raw or already folded).
        fold: fold BatchNorm first (a no-op for a folded model).
        pack_channels: run the model's first layers in the time-packed layout
            (`keras_efficient3d.deploy.packed`) when its first convolution is at most this
            many channels wide, and the layers after it while they are at most `PACK_WIDTH`
            frames x channels wide; 0: never. The default (`default_pack_channels`)
            depends on the precision the graph is emitted for and, for int8, on this CPU:
            int8 kernels need wide matrix products, which the packed layout makes
            (MobileNetV2 0.2x int8 2.0 against 3.1 ms), where float pays for its extra
            multiplications (MobileNetV1 1.0x 11.2 against 5.9 ms); AMX's 64-deep int8
            tiles gain from packing stems up to 64 channels, AVX-512 VNNI only up to 16.
            A file exported for another CPU than the exporting one: give it.
        stack_channels: float graphs (and int8 ones after post-training quantization)
            stack the temporal taps of an ungrouped convolution
            at most this many channels wide (the RGB stem) with one 0/1 convolution
            (`taps.stacked_taps`) instead of slices and a concat; 0: never. Default
            `STACK_CHANNELS` (MobileNetV1 1.0x fp32 4.1 against 5.1 ms).

    Attributes:
        model: the folded Keras model that the graph reproduces.
        input_shape: ``(frames, height, width, channels)``.
        params: parameter key -> float32 array, in the layout the emitted ops use.
        param_kinds: key -> ``'conv'`` (per-channel over the last axis), ``'depthwise'``
            (per-channel over axis 2), ``'dense'``, ``'bias'`` or ``'const'``.
    """

    def __init__(self, model, fold=True, pack_channels=None, stack_channels=None):
        model = inference_form(model, fold_bn=fold)
        self.pack_channels = None if pack_channels is None else int(pack_channels)
        self.stack_channels = STACK_CHANNELS if stack_channels is None else int(stack_channels)
        for name, value in (("pack_channels", self.pack_channels), ("stack_channels", self.stack_channels)):
            if value is not None and value < 0:
                raise ValueError(f"`{name}` must be >= 0. Received: {name}={value}")
        if len(model.inputs) != 1:
            raise ValueError("Expected a model with one input. "
                             f"Received: {len(model.inputs)} inputs")
        from keras_efficient3d.preprocessing import VideoPreprocessing

        if any(isinstance(layer, VideoPreprocessing) for layer in model.layers):
            raise ValueError(
                "the model normalises its frames itself (a VideoPreprocessing layer: converted "
                "with --with_preprocessing), which a TFLite export does not take: convert the "
                "checkpoint without it, and export with --precision=int8 --frames_input for a "
                "file that takes the decoder's frames")
        self.model = model
        shape = tuple(model.inputs[0].shape[1:])
        if len(shape) != 4 or None in shape:
            raise ValueError("Expected a video model with a static (frames, height, width, "
                             f"channels) input. Received: input_shape={shape}")
        self.input_shape = tuple(int(s) for s in shape)
        self.params = {}
        self.param_kinds = {}
        self._steps = []
        consumers = {}
        for layer in model.layers:
            for node in layer._inbound_nodes:
                for t in node.input_tensors:
                    consumers.setdefault(id(t), []).append(layer)
        self._consumers = consumers
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if len(layer._inbound_nodes) != 1:
                raise ValueError(f"Shared layer '{layer.name}' is not supported.")
            _check_layer(layer)
            self._steps.append((layer, layer._inbound_nodes[0]))
            self._collect_params(layer)

    # ---------------------------------------------------------------- parameters
    def _add(self, key, value, kind):
        self.params[key] = np.ascontiguousarray(np.asarray(value, np.float32))
        self.param_kinds[key] = kind

    def _collect_params(self, layer):
        for cls in type(layer).__mro__:
            if cls in _PARAMS:
                return _PARAMS[cls](self, layer)
        if type(layer).__name__ == "QuantizedGraph":
            # a quantization-aware model is its own deployment graph, with its ranges
            raise ValueError("A quantization-aware model (deploy.quantize_model's) is converted "
                             "with deploy.convert_qat(model), not convert or a DeploymentGraph; "
                             "quantize_model takes the float model.")
        if layer.weights:
            raise ValueError(f"Layer '{layer.name}' ({type(layer).__name__}) with weights is "
                             "not supported by the deployment graph.")
        return None

    def set_conv_weights(self, name, kernel, bias):
        """Emits Conv3D layer `name` with `kernel` and `bias` (Keras' layout; None: its own)
        instead of its own weights (a frames input's stem)."""
        layer = self.model.get_layer(name)
        if not isinstance(layer, k3d.Conv3D):
            raise ValueError(f"Layer '{name}' is a {type(layer).__name__}, not a Conv3D.")
        if kernel is not None and tuple(np.shape(kernel)) != tuple(layer.kernel.shape):
            raise ValueError(f"Layer '{name}': the kernel must have shape "
                             f"{tuple(layer.kernel.shape)}. Received: {tuple(np.shape(kernel))}")
        if bias is not None and not layer.use_bias:
            raise ValueError(f"Layer '{name}' has no bias to replace.")
        if bias is not None and tuple(np.shape(bias)) != (layer.filters,):
            raise ValueError(f"Layer '{name}': the bias must have shape ({layer.filters},). "
                             f"Received: {tuple(np.shape(bias))}")
        _conv_params(self, layer, kernel, bias)

    # ---------------------------------------------------------------- emission
    def __call__(self, clips, batch=None, hooks=None, int8=False):
        """Emits the graph on `clips` (B, T, H, W, C) and returns the model's output(s).

        Args:
            clips: a float32 tensor.
            batch: the static batch size the graph is specialised for (1 for export), or
                None for any batch (training, evaluation).
            hooks: parameter and activation hooks; default `FloatHooks(self.params)`.
            int8: emit the form for int8 kernels: the packed layout's pointwise
                convolutions as block-diagonal matrix products (`packed.pointwise`). The
                same numbers; float runs the default form faster.
        """
        hooks = hooks or FloatHooks(self.params)
        emitter = _Emitter(self, batch, hooks, int8)
        return emitter.run(clips)

    def packs(self, int8=False):
        """Whether the graph emitted for float (or `int8`) starts in the packed layout."""
        return _Emitter(self, 1, FloatHooks(self.params), int8)._pack_input()

    def as_function(self, batch=1, hooks=None, int8=False, input_name="clips"):
        """A `tf.function` with a fixed input signature (batch, T, H, W, C)."""
        spec = tf.TensorSpec((batch,) + self.input_shape, tf.float32, name=input_name)

        @tf.function(input_signature=[spec])
        def serve(clips):
            return self(clips, batch=batch, hooks=hooks, int8=int8)

        return serve

    def predict(self, clips):
        """Runs the float graph eagerly on a numpy batch (for checks): the output as a
        numpy array, or a list of them for a model of several outputs."""
        clips = np.asarray(clips, np.float32)
        out = self(tf.constant(clips), batch=clips.shape[0])
        return [np.asarray(o) for o in out] if isinstance(out, list) else np.asarray(out)


def build_deployment_graph(model, fold=True, pack_channels=None, stack_channels=None):
    """Returns `DeploymentGraph(model, fold, pack_channels, stack_channels)`."""
    return DeploymentGraph(model, fold=fold, pack_channels=pack_channels,
                           stack_channels=stack_channels)



def _check_layer(layer):
    """Refuses settings of a supported layer class that the graph does not emit (which it
    would otherwise emit as the channels-last default, silently wrong)."""
    problem = None
    if isinstance(layer, keras.layers.BatchNormalization):
        if not normalises_channels(layer):
            problem = f"normalises axis {layer.axis}, not the channels (-1)"
    elif isinstance(layer, (keras.layers.GlobalAveragePooling3D, keras.layers.GlobalMaxPooling3D)):
        if layer.data_format != "channels_last":
            problem = f"data_format={layer.data_format!r} (the graph is channels-last)"
        elif layer.keepdims:
            problem = "keepdims=True"
    elif isinstance(layer, keras.layers.Dense) and len(layer.input.shape) != 2:
        problem = (f"takes a {len(layer.input.shape)}-D input (a Dense layer of the graph "
                   "follows a global pooling or a Flatten)")
    if problem:
        raise ValueError(f"Layer '{layer.name}' ({type(layer).__name__}) is not supported by "
                         f"the deployment graph: {problem}.")


# Keras' activations that act on each value alone (softmax and log_softmax do not).
_ELEMENTWISE = ("linear", "relu", "relu6", "sigmoid", "tanh", "silu", "gelu", "elu", "selu",
                "softplus", "softsign", "hard_sigmoid", "hard_silu", "leaky_relu", "mish",
                "exponential")


def _elementwise(layer):
    """Whether `layer`'s activation acts on each value alone, as the packed layout needs
    (its channel axis holds every frame's channels: a softmax would normalise across
    them). A function of one's own is not known to: it gets frames tensors."""
    if isinstance(layer, keras.layers.ReLU):
        return True
    fn = layer.activation
    return any(fn is keras.activations.get(name) for name in _ELEMENTWISE
               if hasattr(keras.activations, name))


# ---------------------------------------------------------------- parameters, per layer class
def _conv_params(graph, layer, kernel=None, bias=None):
    """A Conv3D's parameters, its own or the (kernel, bias) given in Keras' layout."""
    kt, kh, kw = layer.kernel_size
    kernel = layer.kernel.numpy() if kernel is None else np.asarray(kernel, np.float32)
    if bias is None and layer.use_bias:
        bias = layer.bias.numpy()
    cin = kernel.shape[3]
    cout = layer.filters // layer.groups
    for g in range(layer.groups):
        kg = kernel[..., g * cout:(g + 1) * cout]
        # (kt, kh, kw, cin, cout) -> (kh, kw, kt * cin, cout): taps stacked as channels.
        kg = np.transpose(kg, (1, 2, 0, 3, 4)).reshape(kh, kw, kt * cin, cout)
        graph._add(f"{layer.name}/kernel{g}", kg, "conv")
        if layer.use_bias:
            graph._add(f"{layer.name}/bias{g}", np.asarray(bias)[g * cout:(g + 1) * cout], "bias")


def _depthwise_params(graph, layer):
    kernel = layer.kernel.numpy()
    # Only the taps that meet real frames: the others are never emitted, and as QAT
    # variables they would get no gradient.
    frames = layer._inbound_nodes[0].input_tensors[0].shape[1]
    for i in taps.live_taps(frames, kernel.shape[0], layer.strides[0], layer.padding[0]):
        graph._add(f"{layer.name}/kernel{i}", kernel[i], "depthwise")
    if layer.use_bias:
        graph._add(f"{layer.name}/bias", layer.bias.numpy(), "bias")


def _dense_params(graph, layer):
    graph._add(f"{layer.name}/kernel", layer.kernel.numpy(), "dense")
    if layer.use_bias:
        graph._add(f"{layer.name}/bias", layer.bias.numpy(), "bias")


def _batchnorm_params(graph, layer):
    scale, shift = batchnorm_affine(layer)
    graph._add(f"{layer.name}/scale", scale, "const")
    graph._add(f"{layer.name}/shift", shift, "const")


_PARAMS = {
    k3d.Conv3D: _conv_params,
    k3d.DepthwiseConv3D: _depthwise_params,
    keras.layers.Dense: _dense_params,
    keras.layers.BatchNormalization: _batchnorm_params,
}


class _Emitter:
    def __init__(self, graph, batch, hooks, int8=False):
        self.g = graph
        self.int8 = bool(int8)
        self.batch = batch
        self.hooks = hooks
        self.b = -1 if batch is None else int(batch)
        self._phases = {}
        self._unpacked = {}
        self._keep = []
        self.pack = graph.pack_channels
        if self.pack is None:
            self.pack = default_pack_channels(self.int8)
        self._input = None

    # -- helpers
    def _shape(self, x):
        return [int(d) if d is not None else None for d in x.shape]

    def _feeds_activation_only(self, layer, node, relu_only=False):
        """True when the layer's single output goes to exactly one ReLU-like layer, so that
        its quantization point is taken after that activation."""
        outs = node.output_tensors
        if len(outs) != 1:
            return False
        users = self.g._consumers.get(id(outs[0]), [])
        if len(users) != 1:
            return False
        user = users[0]
        if isinstance(user, keras.layers.Concatenate) and not isinstance(self.hooks, FloatHooks):
            # a concatenation that only a ReLU reads: that ReLU is taken part by part, each
            # part's point after it (`activation`)
            return self._feeds_activation_only(user, user._inbound_nodes[0], relu_only=True)
        return isinstance(user, (keras.layers.ReLU, keras.layers.Activation)) and \
            activation_name(user) in (("relu",) if relu_only else RELU_LIKE + ("linear",))

    def _phase(self, v, st, phase):
        """Frames ``phase, phase + st, ...`` of a batch-1 clip as a video (`taps.phase`).
        The selection moves up through frame-wise producers (`_Video.remap`), so that e.g.
        MobileNetV2 selects frames before its expansion, not after."""
        if st == 1:
            return v
        key = (id(v), st, phase)
        if key not in self._phases:
            self._keep.append(v)
            if v.remap is not None:
                out = v.remap(lambda u: self._phase(u, st, phase))
            else:
                out = _Video(*taps.phase(v.x, v.frames, 1, st, phase), v.nonneg)
            self._phases[key] = out
        return self._phases[key]

    def _output(self, layer, y, t_out, nonneg, packed=False):
        if not self._feeds_activation_only(layer, layer._inbound_nodes[0]):
            y = self.hooks.act(layer.name, y)
        return _Video(y, t_out, nonneg, packed=packed)

    def _packed_frames(self, v, step, phase, start, stop):
        """Frames ``phase + step * (start .. stop - 1)`` of a packed video. A phase stream
        (``step > 1``) is selected as far up through frame-wise producers as
        `_Video.remap` goes (as `_phase`), once per phase; the range is sliced from it."""
        if step > 1:
            n = len(range(phase, v.frames, step))
            key = ("packed", id(v), step, phase)
            if key not in self._phases:
                self._keep.append(v)
                if v.remap is not None:
                    stream = v.remap(lambda u: self._packed_frames(u, step, phase, 0, n))
                else:
                    stream = _Video(packed.select(v.x, v.frames, step, phase, 0, n), n,
                                    v.nonneg, packed=True)
                self._phases[key] = stream
            v, step, phase = self._phases[key], 1, 0
        if start == 0 and stop == v.frames:
            return v
        return _Video(packed.select(v.x, v.frames, 1, 0, start, stop), stop - start, v.nonneg,
                      packed=True)

    def _unpack(self, v):
        """`v` as a frames tensor (one transpose per packed value, shared by its users)."""
        if not (isinstance(v, _Video) and v.packed):
            return v
        if id(v) not in self._unpacked:
            self._keep.append(v)
            self._unpacked[id(v)] = _Video(packed.unpack(v.x, v.frames), v.frames, v.nonneg)
        return self._unpacked[id(v)]

    def _array(self, key):
        """A parameter that the packed layout lays out anew (tiles, bands): a numpy array
        where the hooks have constants (`array`; on the int8 grid after QAT), so that the
        new kernel is a constant in the converted model (a TILE of an int8 kernel is an op
        XNNPACK does not take, and its convolution then has no static weights), else the
        hooks' tensor (QAT training: a variable seen through fake quantization)."""
        array = getattr(self.hooks, "array", None)
        return array(key) if array is not None else self.hooks.param(key)

    # -- layers
    def identity(self, layer, node, ins):
        return ins[0]

    def conv3d(self, layer, node, ins):
        v = ins[0]
        if v.packed:
            out = self._packed_conv3d(layer, v)
            if out is not None:
                return out
            v = self._unpack(v)
        out = self._conv3d(layer, v)
        # select frames where they are fewer bytes
        if self.batch == 1 and self._pointwise(layer) and v.x.shape[-1] <= out.x.shape[-1]:
            out.remap = lambda select: self._conv3d(layer, select(v))
        return out

    def _packed_conv3d(self, layer, v):
        """The convolution in the packed layout, or None where it leaves it (grouped, or
        wider than `pack_channels`)."""
        if layer.groups != 1 or not _elementwise(layer):
            return None
        t_out = taps.out_len(v.frames, layer.kernel_size[0], layer.strides[0], layer.padding[0])
        if t_out * layer.filters > PACK_WIDTH and v is not self._input:
            return None
        name = layer.name
        bias = self._array(f"{name}/bias0") if layer.use_bias else None
        if self._pointwise(layer):
            kernel = (self._array if self.int8 else self.hooks.param)(f"{name}/kernel0")
            y = packed.pointwise(v.x, v.frames, kernel, bias, block_diagonal=self.int8)
            t_out = v.frames
        else:
            y, t_out = packed.conv(v.x, v.frames, self._array(f"{name}/kernel0"), bias,
                                   layer.kernel_size, layer.strides, layer.padding)
        y = _apply_activation(layer.activation, y)
        out = self._output(layer, y, t_out, activation_name(layer) in RELU_LIKE, packed=True)
        if t_out == v.frames and v.x.shape[-1] <= y.shape[-1] and self._pointwise(layer):
            out.remap = lambda select: self._packed_conv3d(layer, select(v))
        return out

    @staticmethod
    def _pointwise(layer):
        return tuple(layer.kernel_size) == (1, 1, 1) and tuple(layer.strides) == (1, 1, 1) \
            and tuple(layer.padding) == (0, 0, 0)

    def _conv3d(self, layer, v):
        name = layer.name
        kt = layer.kernel_size[0]
        cin = v.x.shape[-1] // layer.groups

        def kernel(g, live):
            if len(live) == kt:
                return self.hooks.param(f"{name}/kernel{g}")
            # The kernel rows of taps that see only padding are dropped before quantization:
            # QAT then trains the kernel the int8 file holds, and a per-channel fake quant
            # stays on a constant (the converter cannot quantize through a concat after it)
            keep = np.concatenate([np.arange(i * cin, (i + 1) * cin) for i in live])
            return self.hooks.param(f"{name}/kernel{g}", keep)

        parts, t_out = taps.convolution(
            v.x, v.frames, self.batch, kernel, layer.kernel_size, layer.strides, layer.padding,
            layer.groups, split_groups=not _FORM.native,
            bias=(lambda g: self.hooks.param(f"{name}/bias{g}")) if layer.use_bias else None,
            pad_input=_FORM.xnnpack,
            stack_by_conv=cin <= self.g.stack_channels and self._stacks_exactly())
        relu = activation_name(layer) in RELU_LIKE
        if relu:
            # per group, so that it fuses into each CONV_2D (XNNPACK takes no int8 RELU)
            parts = [_apply_activation(layer.activation, p) for p in parts]
        # ResNeXt's 32 groups: four at a time, as XNNPACK takes them
        y = parts[0] if len(parts) == 1 else taps.concatenate_channels(parts)
        if not relu:
            y = _apply_activation(layer.activation, y)
        out = self._output(layer, y, t_out, relu)
        if len(parts) > 1 and activation_name(layer) == "linear":
            out.parts = [_Video(p, t_out) for p in parts]
        return out

    def _stacks_exactly(self):
        """Whether the 0/1 convolution that stacks a stem's taps copies them exactly: in
        float, and in int8 after post-training quantization, where the converter gives
        the stacked taps the clip's own range (its int8 file is bit for bit the slices'
        output, MobileNetV1 1.0x int8 2.63 -> 2.17 ms on the AVX-512 EPYC). A QAT graph's
        int8 form has no range for that tensor: it keeps slices and a concat."""
        return not self.int8 or isinstance(self.hooks, FloatHooks)

    def depthwise3d(self, layer, node, ins):
        v = ins[0]
        name = layer.name
        st = layer.strides[0]
        if v.packed and (not _elementwise(layer) or v.x.shape[-1] > PACK_WIDTH and not (
                self.int8 and st == 1 and v.x.shape[-1] <= PACK_WIDTH_DEPTHWISE)):
            v = self._unpack(v)
        if v.packed:
            y, t_out = packed.depthwise(
                v.x, v.frames, lambda i: self._array(f"{name}/kernel{i}"),
                self._array(f"{name}/bias") if layer.use_bias else None,
                layer.kernel_size, layer.strides, layer.padding, point=self.hooks.act,
                name=name, select_frames=lambda *w: self._packed_frames(v, *w).x)
            y = _apply_activation(layer.activation, y)
            return self._output(layer, y, t_out, activation_name(layer) in RELU_LIKE,
                                packed=True)
        stream = None
        if self.batch == 1:
            def stream(p):
                u = self._phase(v, st, p)
                return u.x, u.frames
        y, t_out = taps.depthwise(
            v.x, v.frames, self.batch, lambda i: self.hooks.param(f"{name}/kernel{i}"),
            self.hooks.param(f"{name}/bias") if layer.use_bias else None,
            layer.kernel_size, layer.strides, layer.padding, point=self.hooks.act, name=name,
            stream=stream)
        y = _apply_activation(layer.activation, y)
        return self._output(layer, y, t_out, activation_name(layer) in RELU_LIKE)

    def max_pool3d(self, layer, node, ins):
        return self._pool3d(layer, ins[0], "max")

    def avg_pool3d(self, layer, node, ins):
        return self._pool3d(layer, ins[0], "avg")

    def _pool3d(self, layer, v, kind):
        x, t_out = taps.pool(v.x, v.frames, self.batch, kind, layer.pool_size, layer.strides,
                             layer.padding, xnnpack=_FORM.xnnpack, nonneg=v.nonneg,
                             point=self.hooks.act, name=layer.name)
        if kind == "avg":
            x = self.hooks.act(layer.name, x)
        return _Video(x, t_out, v.nonneg)

    def shuffle(self, layer, node, ins):
        v = ins[0]
        if layer.groups == 1:
            return v
        return _Video(taps.shuffle(v.x, v.frames, self.batch, layer.groups), v.frames, v.nonneg)

    def split(self, layer, node, ins):
        v = ins[0]
        return [_Video(x, v.frames, v.nonneg) for x in taps.split(v.x)]

    def zero_pad_channels(self, layer, node, ins):
        v = ins[0]
        x, t = taps.zero_pad_channels(v.x, v.frames, self.batch, layer.filters, layer.strides,
                                      xnnpack=_FORM.xnnpack)
        return _Video(x, t, v.nonneg)

    def global_pool(self, layer, node, ins):
        v = ins[0]
        _, h, w, c = self._shape(v.x)
        if v.packed:  # (B, H, W * T, C): the same cells
            x = tf.reshape(v.x, [self.b, h, w * v.frames, c // v.frames])
        else:
            x = tf.reshape(v.x, [self.b, v.frames * h, w, c])
        if isinstance(layer, keras.layers.GlobalAveragePooling3D):
            return _Flat(self.hooks.act(layer.name, tf.reduce_mean(x, axis=[1, 2])))
        return _Flat(tf.reduce_max(x, axis=[1, 2]))

    def dense(self, layer, node, ins):
        name = layer.name
        y = tf.matmul(ins[0].x, self.hooks.param(f"{name}/kernel"))
        if layer.use_bias:
            y = tf.nn.bias_add(y, self.hooks.param(f"{name}/bias"))
        y = _apply_activation(layer.activation, y)
        return _Flat(self.hooks.act(name, y))

    def add(self, layer, node, ins):
        if len({getattr(v, "packed", False) for v in ins}) > 1:
            ins = [self._unpack(v) for v in ins]
        y = ins[0].x
        for other in ins[1:]:
            y = y + other.x
        nonneg = all(getattr(v, "nonneg", False) for v in ins)
        if not self._feeds_activation_only(layer, node):
            y = self.hooks.act(layer.name, y)
        if isinstance(ins[0], _Video):
            return _Video(y, ins[0].frames, nonneg, packed=ins[0].packed)
        return _Flat(y)

    def concatenate(self, layer, node, ins):
        axis = layer.axis
        rank = len(node.output_tensors[0].shape)
        if axis not in (-1, rank - 1):
            raise ValueError(f"'{layer.name}': only channel concatenation is supported. "
                             f"Received: axis={axis}")
        y = tf.concat([v.x for v in ins], axis=-1)
        nonneg = all(getattr(v, "nonneg", False) for v in ins)
        if isinstance(ins[0], _Video):
            return _Video(y, ins[0].frames, nonneg, parts=list(ins))
        return _Flat(y)

    def _relu_of_parts(self, v, key):
        """ReLU of a channel concatenation as the concatenation of the ReLUs of its parts:
        a ReLU on a convolution fuses into it and one on a non-negative part vanishes
        (XNNPACK takes no standalone int8 RELU, e.g. after ShuffleNetV1's concat). A QAT
        graph quantizes each part after its ReLU (``key/part<i>``): its producers skip
        their own points (`_feeds_activation_only`)."""
        if v.nonneg:
            return v.x
        if v.parts:
            return tf.concat([self._relu_of_parts(p, f"{key}/part{i}")
                              for i, p in enumerate(v.parts)], axis=-1)
        y = tf.nn.relu(v.x)
        return y if isinstance(self.hooks, FloatHooks) else self.hooks.act(key, y)

    def activation(self, layer, node, ins):
        v = ins[0]
        if not _elementwise(layer):
            v = self._unpack(v)
        if isinstance(v, _Video) and v.parts and activation_name(layer) == "relu":
            y = self.hooks.act(layer.name, self._relu_of_parts(v, layer.name))
            out = _Video(y, v.frames, True)
            if self.batch == 1:
                out.remap = lambda select: self.activation(layer, node, [select(v)])
            return out
        if isinstance(layer, keras.layers.ReLU):
            act = activation_name(layer)
            y = tf.convert_to_tensor(layer(v.x)) if act is None else \
                _apply_activation(keras.activations.get(act), v.x)
        else:
            y = _apply_activation(layer.activation, v.x)
        y = self.hooks.act(layer.name, y)
        if not isinstance(v, _Video):
            return _Flat(y)
        out = _Video(y, v.frames, activation_name(layer) in RELU_LIKE, packed=v.packed)
        if self.batch == 1 or v.packed:
            out.remap = lambda select: self.activation(layer, node, [select(v)])
        return out

    def batch_norm(self, layer, node, ins):
        v = ins[0]
        name = layer.name
        if getattr(v, "packed", False):
            scale = packed.tile(self._array(f"{name}/scale"), v.frames)
            shift = packed.tile(self._array(f"{name}/shift"), v.frames)
        else:
            scale, shift = self.hooks.param(f"{name}/scale"), self.hooks.param(f"{name}/shift")
        y = self.hooks.act(name, v.x * scale + shift)
        if isinstance(v, _Video):
            return _Video(y, v.frames, packed=v.packed)
        return _Flat(y)

    def permute(self, layer, node, ins):
        v = ins[0]
        _, h, w, c = self._shape(v.x)
        if tuple(layer.dims) == (4, 1, 2, 3):  # channels first, as C3D flattens
            x3 = tf.reshape(v.x, [self.b, v.frames * h * w, c])
            return _Flat(tf.transpose(x3, [0, 2, 1]))
        x5 = tf.reshape(v.x, [self.b, v.frames, h, w, c])
        return _Flat(tf.transpose(x5, (0,) + tuple(layer.dims)))

    def flatten(self, layer, node, ins):
        v = ins[0]
        if isinstance(v, _Video):
            _, h, w, c = self._shape(v.x)
            n = v.frames * h * w * c
        else:
            n = int(np.prod(v.x.shape[1:]))
        return _Flat(tf.reshape(v.x, [self.b, n]))

    def run(self, clips):
        clips = tf.convert_to_tensor(clips, tf.float32)
        t, h, w, c = self.g.input_shape
        if self._pack_input():
            x = self.hooks.act("input", packed.pack(tf.reshape(clips, [self.b, t, h, w, c])))
            start = self._input = _Video(x, t, packed=True)
        else:
            x = tf.reshape(clips, [-1 if self.batch is None else self.b * t, h, w, c])
            start = _Video(self.hooks.act("input", x), t)
        values = {id(self.g.model.inputs[0]): start}
        for layer, node in self.g._steps:
            ins = [values[id(tensor)] for tensor in node.input_tensors]
            out = self.layer(layer, node, ins)
            outs = out if isinstance(out, (list, tuple)) else [out]
            for tensor, value in zip(node.output_tensors, outs):
                values[id(tensor)] = value
        results = []
        for tensor in self.g.model.outputs:
            value = values[id(tensor)]
            if isinstance(value, _Video) and value.packed:
                results.append(packed.to_clip(value.x, value.frames))
            elif isinstance(value, _Video):
                _, hh, ww, cc = self._shape(value.x)
                results.append(tf.reshape(value.x, [self.b, value.frames, hh, ww, cc]))
            else:
                results.append(value.x)
        return results[0] if len(results) == 1 else results

    def _pack_input(self):
        """Pack when every first layer is a convolution the packed layout takes: at most
        `pack` channels, a temporal kernel of at most 3 and a spatial stride (the banded
        kernel multiplies ``(T + 2) / 3`` times the work; a 7-frame kernel (ResNets) or a
        full-resolution output (C3D) would make that the model's largest layer)."""
        users = self.g._consumers.get(id(self.g.model.inputs[0]), [])
        return bool(self.pack) and bool(users) and all(
            isinstance(u, k3d.Conv3D) and u.groups == 1 and u.filters <= self.pack and
            u.kernel_size[0] <= 3 and min(u.strides[1:]) > 1 for u in users)

    def layer(self, layer, node, ins):
        for cls in type(layer).__mro__:
            if cls in _HANDLERS:
                handler = _HANDLERS[cls]
                if handler not in _TAKES_PACKED:
                    ins = [self._unpack(v) for v in ins]
                return handler(self, layer, node, ins)
        raise ValueError(f"Layer '{layer.name}' ({type(layer).__name__}) is not supported by "
                         "the deployment graph.")


# Layer class -> handler; a subclass takes its nearest registered base's handler.
_HANDLERS = {
    Folded: _Emitter.identity,
    keras.layers.Dropout: _Emitter.identity,
    keras.layers.InputLayer: _Emitter.identity,
    keras.layers.SpatialDropout3D: _Emitter.identity,
    keras.layers.GaussianNoise: _Emitter.identity,
    k3d.Conv3D: _Emitter.conv3d,
    k3d.DepthwiseConv3D: _Emitter.depthwise3d,
    k3d.MaxPool3D: _Emitter.max_pool3d,
    k3d.AvgPool3D: _Emitter.avg_pool3d,
    k3d.ChannelShuffle: _Emitter.shuffle,
    k3d.ChannelSplit: _Emitter.split,
    k3d.ZeroPadChannels: _Emitter.zero_pad_channels,
    keras.layers.GlobalAveragePooling3D: _Emitter.global_pool,
    keras.layers.GlobalMaxPooling3D: _Emitter.global_pool,
    keras.layers.Dense: _Emitter.dense,
    keras.layers.Add: _Emitter.add,
    keras.layers.Concatenate: _Emitter.concatenate,
    keras.layers.ReLU: _Emitter.activation,
    keras.layers.Activation: _Emitter.activation,
    keras.layers.BatchNormalization: _Emitter.batch_norm,
    keras.layers.Permute: _Emitter.permute,
    keras.layers.Flatten: _Emitter.flatten,
}

# Handlers that take values in the packed layout (the others get frames tensors).
_TAKES_PACKED = {_Emitter.identity, _Emitter.conv3d, _Emitter.depthwise3d, _Emitter.add,
                 _Emitter.activation, _Emitter.batch_norm, _Emitter.global_pool}
