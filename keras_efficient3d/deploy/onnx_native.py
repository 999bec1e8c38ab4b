"""ONNX written directly from the Keras layer graph, in the form ONNX runtimes optimise.

`native_onnx(model)` folds BatchNorm (`keras_efficient3d.fold.inference_form`) and walks
the functional model layer by layer, each layer class mapped to its handler by a table
(`_HANDLERS`, as `keras_efficient3d.deploy.graph` does for TFLite), emitting ONNX nodes:

* the clip input ``input`` (batch, frames, H, W, 3) is channels-last as in Keras (every
  consumer feeds it so); one Transpose makes it NCDHW, the layout of ONNX's Conv and pools;
* a 3D convolution is one 5-D ``Conv`` with PyTorch's symmetric explicit ``pads``, a
  grouped one (ShuffleNetV1's 1x1x1, ResNeXt) one ``Conv`` with ``group``, a depthwise one
  one ``Conv`` with ``group`` = channels; folded BatchNorm is in its weights and bias, a
  folded ReLU a ``Relu`` and ReLU6 a ``Clip`` (both fused into the Conv by the runtimes);
* 3D pools are ``MaxPool``/``AveragePool`` (``count_include_pad``, as PyTorch's), global
  pooling ``GlobalAveragePool``/``GlobalMaxPool``, Dense a ``Gemm``;
* channel shuffle is Reshape/Transpose/Reshape on the channel axis, channel split one
  ``Split``, channel concatenation ``Concat``, residuals ``Add``; dropout vanishes. A shuffle
  whose input an ungrouped convolution alone computes (through ReLUs: ShuffleNetV1's first
  block) is no op at all: that convolution's output channels come out shuffled
  (`shuffles_into_convolutions`);
* with ``merge_pointwise`` (int8 on OpenVINO), a linear pointwise convolution and the
  pointwise one that alone reads it are one ``Conv`` (`pointwise_pairs`);
* with ``stem_fold=f`` (int8 on CPUs with AMX, `openvino_export`), the stem convolution
  reads the clip as Keras holds it, f adjacent columns viewed as channels, and writes its
  output the same way (`_folded_conv3d`): Reshape, no Transpose of the input. A narrow
  depthwise layer after it reads that output folded (`_folded_depthwise3d`);
* with ``stem_output_fold=q`` (OpenVINO, a stem of at most 8 channels), the stem reads
  the clip as it is and writes q adjacent output columns per position as channels
  (`_output_folded_conv3d`), the same memory as its output;
* with ``frames`` (a `Normalization`; int8 OpenVINO IR that takes uint8 frames,
  `openvino_export`), the input is the frames themselves, RGB 0-255, and the graph
  normalises them: one scalar Subtract and Multiply, the per-channel rest (scale, channel
  order, what the scalar mean leaves of each channel's) in the stem's weights and bias
  (`_FramesInput`).

This is what ONNX Runtime, OpenVINO and TensorRT take as their fast path: no per-frame tap
slicing (the 2D-tap graph tf2onnx converts is 2-3x slower there, `forms.FORMS["onnx"]`).
Values are 5-D NCDHW tensors for clips and as in Keras for the rest (pooled features,
logits); a Permute/Flatten of a clip (C3D's head) reorders from NCDHW accordingly.

A quantization-aware model (`keras_efficient3d.deploy.quantize.quantize_model`, one
`QuantizedGraph` layer over the 2D-tap deployment graph) is written as the native graph of
its float model with the QAT weights and QuantizeLinear/DequantizeLinear pairs:

* activations, uint8 (int8 with zero point 0 where the range is symmetric), at every
  quantization point of the QAT graph that is a layer's output here (keyed by layer name:
  the input, convolution/activation/add/average-pool/dense outputs), over the frozen range
  as TensorFlow nudges it (`qdq_params`); the depthwise taps' own points (``name/tap{i}``,
  ``name/sum{i}``, per-tap partial sums) have no tensor in a 5-D Conv and are dropped;
* convolution weights symmetric int8 per output channel over the whole 3-D kernel (zero
  point 0, narrow range: the form OpenVINO and TensorRT take). For a Conv3D that is the
  QAT grid itself; a depthwise kernel was fake-quantized per temporal tap in QAT and gets
  one scale per channel here. Dense weights per tensor, as in QAT. ``weight_bits=7`` keeps
  the weights in [-63, 63] (NNCF's overflow fix, ONNX Runtime's ``reduce_range``): x86
  CPUs without VNNI (AVX2, AVX-512 before Cascade Lake) multiply u8 by s8 in int16 pairs
  that saturate at 8 bits, and OpenVINO's CPU plugin runs them so (on this AVX2 machine the
  shipped model's int8 top-1 agreement with float went from 95.0% to 99.6% with it).

The int8 graph matches the fake-quantized Keras model to within a few quantization steps,
not to float precision; what counts is top-1 agreement (`onnx_export.export_onnx` measures
it).

    from keras_efficient3d.deploy.onnx_native import native_onnx
    proto = native_onnx(create_model("mobilenetv2_0.2x", num_classes=27), opset=13)
    qdq = native_onnx(quantize_model(model, train_ds), weight_bits=7)   # int8 for OpenVINO
"""

import keras
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from keras_efficient3d import layers as k3d
from keras_efficient3d.deploy.frames import FramesInput as _FramesInput
from keras_efficient3d.deploy.frames import stem_layer as _stem
from keras_efficient3d.deploy.quantize import QuantizedGraph, activation_range
from keras_efficient3d.deploy.savedmodel import INPUT_NAME, OUTPUT_NAME
from keras_efficient3d.fold import (
    Folded,
    _consumers,
    _producer,
    activation_name,
    batchnorm_affine,
    inference_form,
    normalises_channels,
)

__all__ = ["native_onnx", "nudged_range", "pointwise_pairs", "qat_layer", "qdq_params",
           "shuffles_into_convolutions", "stem_fold_factors", "stem_output_fold_factors", "supports"]

_TO_NCDHW = (0, 4, 1, 2, 3)
_TO_NDHWC = (0, 2, 3, 4, 1)
# A folded stem's depthwise reader runs folded up to this many channels (`_folded_depthwise3d`).
FOLDED_DEPTHWISE_CHANNELS = 16


class _Clip:
    """A Keras clip tensor (B, T, H, W, C) held as NCDHW; `shape` is Keras' (T, H, W, C).
    `channels_last`: held as Keras holds it (only the clip input, for a width-folded stem).
    `fold` q > 1: held as (B, q * C, T, H, W / q), q adjacent columns as channels (a folded
    stem's output, for `_folded_depthwise3d`)."""

    __slots__ = ("name", "shape", "channels_last", "fold")

    def __init__(self, name, shape, channels_last=False, fold=1):
        self.name, self.shape = name, tuple(int(s) for s in shape)
        self.channels_last, self.fold = channels_last, fold


class _Plain:
    """Any other tensor, in Keras' own layout (pooled features, logits)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


def _handler(layer):
    """The handler of `layer`, None where it has no native form: its class has none, or its
    settings are not those the handler writes (the clip is NCDHW here, whatever Keras held)."""
    if isinstance(layer, (keras.layers.GlobalAveragePooling3D, keras.layers.GlobalMaxPooling3D)) \
            and layer.data_format != "channels_last":
        return None
    for cls in type(layer).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    return None


def _layers(model):
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def qat_layer(model):
    """The `QuantizedGraph` of a quantization-aware model (`quantize.quantize_model`), else None."""
    if not isinstance(model, keras.Model):
        return None
    layers = _layers(model)
    if len(layers) == 1 and isinstance(layers[0], QuantizedGraph):
        return layers[0]
    return None


def supports(model):
    """Whether every layer of `model` has a native ONNX handler (the registry's models and
    their quantization-aware forms do)."""
    qat = qat_layer(model)
    if qat is not None:
        return supports(qat.graph.model)
    return isinstance(model, keras.Model) and len(model.inputs) == 1 and all(
        _handler(layer) is not None for layer in _layers(model))


def nudged_range(min_value, max_value, num_bits=8, narrow_range=False):
    """TensorFlow's FakeQuant nudging (fake_quant_ops_functor.h): (scale, zero point,
    lowest level), elementwise for per-channel ranges."""
    quant_min = 1.0 if narrow_range else 0.0
    quant_max = float(2 ** num_bits - 1)
    min_value = np.asarray(min_value, np.float32)
    max_value = np.asarray(max_value, np.float32)
    scale = ((max_value - min_value) / np.float32(quant_max - quant_min)).astype(np.float32)
    if np.any(scale <= 0):
        raise ValueError(f"Fake-quant range must have max > min. Received: min={min_value}, max={max_value}")
    zero_from_min = np.float32(quant_min) - min_value / scale
    zero_point = np.where(
        zero_from_min < quant_min, quant_min,
        np.where(zero_from_min > quant_max, quant_max, np.floor(zero_from_min + 0.5)))
    return scale, zero_point.astype(np.int64), int(quant_min)


def qdq_params(min_value, max_value, num_bits=8, narrow_range=False):
    """The QuantizeLinear/DequantizeLinear (scale, zero point) of a TensorFlow FakeQuant
    over [min_value, max_value]: its nudged grid, as int8 with zero point 0 where that grid
    is symmetric (nudged zero point 128: the form TensorRT's explicit INT8 mode requires),
    else uint8 with the nudged zero point (ONNX Runtime and OpenVINO run it)."""
    if num_bits != 8:
        raise ValueError(f"Only 8-bit fake quantization exports to ONNX. Received: num_bits={num_bits}")
    scale, zero_point, quant_min = nudged_range(min_value, max_value, num_bits, narrow_range)
    if np.all(zero_point == 128):
        # levels k - 128 for k in [quant_min, 255] are int8 with zero point 0
        return scale, np.zeros(zero_point.shape, np.int8)
    return scale, (zero_point - quant_min).astype(np.uint8)


class _FloatWeights:
    """Kernels and biases of the Keras layers themselves, in Keras' layout."""

    def kernel(self, layer):
        return keras.ops.convert_to_numpy(layer.kernel)

    def bias(self, layer):
        return keras.ops.convert_to_numpy(layer.bias)


class _FramesWeights:
    """The weights with the stem's changed for a frames input (`_FramesInput`)."""

    def __init__(self, weights, frames):
        self.base, self.frames = weights, frames

    def kernel(self, layer):
        kernel = self.base.kernel(layer)
        return self.frames.kernel(kernel) if layer.name == self.frames.stem else kernel

    def bias(self, layer):
        if layer.name != self.frames.stem:
            return self.base.bias(layer)
        bias = self.base.bias(layer) if layer.use_bias else np.zeros(layer.filters, np.float32)
        return self.frames.bias(self.base.kernel(layer), bias)


class _QATWeights:
    """The trained weights of a `QuantizedGraph` (2D-tap layout, `deploy.graph`) put back into
    Keras' layout, and its frozen activation ranges."""

    def __init__(self, qat):
        hooks = qat.frozen_hooks()
        self.params, self.ranges = hooks.params, hooks.ranges

    def kernel(self, layer):
        if isinstance(layer, k3d.DepthwiseConv3D):
            # a depthwise tap that meets no real frame has no QAT weight: zero (it adds
            # nothing and does not widen the channel's weight range)
            kernel = np.zeros(layer.kernel.shape, np.float32)
            for i in range(kernel.shape[0]):
                kernel[i] = self.params.get(f"{layer.name}/kernel{i}", 0.0)
            return kernel
        if isinstance(layer, k3d.Conv3D):
            kt, kh, kw = layer.kernel_size
            # per group (kh, kw, kt * cin, cout) -> (kt, kh, kw, cin, cout), groups on the last axis
            cout = layer.filters // layer.groups
            return np.concatenate([
                np.transpose(self.params[f"{layer.name}/kernel{g}"].reshape(kh, kw, kt, -1, cout), (2, 0, 1, 3, 4))
                for g in range(layer.groups)], axis=-1)
        return self.params[f"{layer.name}/kernel"]

    def bias(self, layer):
        if isinstance(layer, k3d.Conv3D):
            return np.concatenate([self.params[f"{layer.name}/bias{g}"] for g in range(layer.groups)])
        return self.params[f"{layer.name}/bias"]


def stem_fold_factors(model):
    """The width folds (`native_onnx`'s ``stem_fold``) the convolution that reads `model`'s
    clip input takes, beyond 1 (none): empty where the input feeds anything else."""
    qat = qat_layer(model)
    layer = _stem(model if qat is None else qat.graph.model)
    if layer is None:
        return ()
    width, stride, pad, size = (int(layer._inbound_nodes[0].input_tensors[0].shape[3]), layer.strides[2],
                                layer.padding[2], layer.kernel_size[2])
    out = (width + 2 * pad - size) // stride + 1
    return tuple(f for f in (2, 4, 8, 16) if f % stride == 0 and width % f == 0
                 and out == (f // stride) * (width // f))


def shuffles_into_convolutions(model):
    """Channel shuffle -> (the ungrouped Conv3D that alone computes its input, through
    channelwise activations, the channel order it writes instead) by layer names."""
    consumers, folds = _consumers(model), {}
    for layer in _layers(model):
        if not isinstance(layer, k3d.ChannelShuffle) or layer.groups == 1:
            continue
        source = _producer(layer)
        while isinstance(source, (Folded, keras.layers.ReLU, keras.layers.Activation)) \
                and len(consumers[source.name]) == 1:
            source = _producer(source)
        if type(source) is k3d.Conv3D and source.groups == 1 and len(consumers[source.name]) == 1:
            c, g = source.filters, layer.groups
            # output channel i * g + j of the shuffle is its input channel j * (c / g) + i
            folds[layer.name] = (source.name, np.arange(c).reshape(g, c // g).T.reshape(-1))
    return folds


def _pointwise(layer):
    return (type(layer) is k3d.Conv3D and layer.groups == 1 and tuple(layer.kernel_size) == (1, 1, 1)
            and not any(layer.padding))


def _lone_reader(model, consumers, layer):
    """The layer that alone reads `layer`'s output through folded layers only, else None."""
    reader = layer
    while reader is not None and (reader is layer or isinstance(reader, Folded)):
        readers = consumers[reader.name]
        reader = model.get_layer(readers[0]) if len(readers) == 1 else None
    return reader


def stem_feeds_a_depthwise_layer(model):
    """Whether the layer that alone reads `model`'s stem (through BatchNorm and activations)
    is a depthwise convolution (the MobileNets; ShuffleNetV1's stem feeds a max pool)."""
    folded = inference_form(model) if qat_layer(model) is None else None
    stem = None if folded is None else _stem(folded)
    return stem is not None and isinstance(_lone_reader(folded, _consumers(folded), stem), k3d.DepthwiseConv3D)


def pointwise_pairs(model):
    """Second -> first of the linear pointwise convolutions `native_onnx` writes as one with
    ``merge_pointwise``, by layer names (in `model`'s folded inference form): an unpadded
    ungrouped 1x1x1 Conv3D without activation, not reading the clip input, whose output
    (through folded layers) only an unstrided unpadded ungrouped 1x1x1 Conv3D reads, through
    fewer channels than either has. MobileNetV2's first block's projection (32 -> 16) and
    the second block's expansion (16 -> 96) become one 32 -> 96 product; its last
    projection and ``conv_last`` (960 -> 320 -> 1280) too.

    Why: the int8 kernels of such thin layers are bound by the elements they write and
    read, not by their multiplications. OpenVINO int8 on an AMX CPU, 16x112x112, the whole
    model (`openvino_export`, five interleaved rounds): MobileNetV2 1.0x 2.94 -> 2.85 ms,
    0.2x (6 -> 3 -> 18) 1.28 -> 1.18; per layer, 1.0x's pair 0.53 ms against the product's
    0.45 (1.5 times the multiplications). In fp32 the 1.0x model measured no faster (the
    multiplications count there). The product is bounded at twice the pair's
    multiplications."""
    consumers, pairs = _consumers(model), {}
    for layer in _layers(model):
        if not _pointwise(layer) or activation_name(layer.activation) != "linear" or \
                isinstance(_producer(layer), keras.layers.InputLayer):  # a stem may read the clip folded
            continue
        reader = _lone_reader(model, consumers, layer)
        if reader is None or not _pointwise(reader) or any(s != 1 for s in reader.strides):
            continue
        i, m = layer.kernel.shape[3], layer.filters
        o = reader.filters
        # strictly narrower: no layer is both the second of one pair and the first of another
        if m < min(i, o) and i * o <= 2 * m * (i + o):
            pairs[reader.name] = layer.name
    return pairs


def _folded_depthwise(model, stem_fold):
    """The depthwise layer that alone reads the output of the stem `native_onnx` folds by
    `stem_fold`, where it runs folded (`_folded_depthwise3d`), else None."""
    stem = _stem(model)
    if stem is None or stem_fold == 1:
        return None
    reader, q = _lone_reader(model, _consumers(model), stem), stem_fold // stem.strides[2]
    # width-preserving only: the folded convolution writes W / q groups of q columns
    if not isinstance(reader, k3d.DepthwiseConv3D) or reader.strides[2] != 1 or q == 1 or \
            2 * reader.padding[2] != reader.kernel_size[2] - 1 or \
            q * stem.filters > FOLDED_DEPTHWISE_CHANNELS:
        return None
    return reader.name


def _output_fold_padding(layer, width, q):
    """The right padding of a stem that writes `q` output columns per position
    (`_output_folded_conv3d`) over `width` input columns, or None where no padding gives the
    layer's own output width."""
    (sw,), (pw,), (kw,) = layer.strides[2:], layer.padding[2:], layer.kernel_size[2:]
    out = (width + 2 * pw - kw) // sw + 1
    span = sw * (q - 1) + kw
    if out % q:
        return None
    pad = max(0, (out // q - 1) * q * sw + span - width - pw)
    if (width + pw + pad - span) // (q * sw) + 1 != out // q:
        return None
    return pad


def stem_output_fold_factors(model):
    """The output folds (`native_onnx`'s ``stem_output_fold``) `model`'s stem takes beyond 1:
    empty for a quantization-aware model, or where no ungrouped Conv3D alone reads the clip
    input."""
    layer = _stem(model) if qat_layer(model) is None else None
    if layer is None:
        return ()
    width = int(layer._inbound_nodes[0].input_tensors[0].shape[3])
    return tuple(q for q in (2, 4) if _output_fold_padding(layer, width, q) is not None)


class _Writer:
    def __init__(self, model, batch_size, qat=None, weight_bits=8, stem_fold=1, merge_pointwise=False,
                 frames=None, stem_output_fold=1):
        self.model = model
        self.stem_fold = stem_fold
        self.stem_output_fold = stem_output_fold
        self.stem = _stem(model)
        self.shuffled = shuffles_into_convolutions(model)
        self.channel_order = dict(self.shuffled.values())  # conv name -> its output channels' order
        # Float (and PTQ) graphs only: a QAT graph has a quantization point between a pair,
        # and its folded depthwise form is untested.
        self.merged = pointwise_pairs(model) if merge_pointwise and qat is None else {}
        self.folded_depthwise = None if qat is not None else _folded_depthwise(model, stem_fold)
        self.batch = "batch" if batch_size is None else int(batch_size)
        self.nodes, self.initializers = [], []
        self._names = {INPUT_NAME, OUTPUT_NAME}  # the graph's own: no layer takes them
        self.weights = _FloatWeights() if qat is None else _QATWeights(qat)
        self.frames = None
        if frames is not None:
            if self.stem is None or qat is not None:
                raise ValueError("A frames input needs a float model whose clip input one ungrouped "
                                 f"Conv3D alone reads (its stem). '{model.name}' has none.")
            self.frames = _FramesInput(frames, self.stem)
            self.weights = _FramesWeights(self.weights, self.frames)
        self.quantized = qat is not None
        # the symmetric range whose nudged narrow 8-bit grid has levels in [-63, 63] (7 bits)
        self.weight_widen = 127.0 / 63.0 if weight_bits == 7 else 1.0

    def unique(self, name):
        base, n = name, 1
        while name in self._names:
            name, n = f"{base}_{n}", n + 1
        self._names.add(name)
        return name

    def const(self, name, value, dtype=np.float32):
        name = self.unique(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype), name))
        return name

    def node(self, op, inputs, name, outputs=1, **attrs):
        outs = [self.unique(name if outputs == 1 else f"{name}:{i}") for i in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=self.unique(f"{name}/{op}"),
                                           **attrs))
        return outs[0] if outputs == 1 else outs

    def activation(self, layer_or_fn, x, name, channel_axis):
        act = activation_name(layer_or_fn)
        if act is None:
            raise ValueError(f"'{name}': activation {layer_or_fn!r} has no ONNX form here.")
        if act == "linear":
            return x
        if act == "relu":
            return self.node("Relu", [x], f"{name}/relu")
        if act == "relu6":
            return self.node("Clip", [x, self.const(f"{name}/zero", 0.0), self.const(f"{name}/six", 6.0)],
                             f"{name}/relu6")
        if act == "sigmoid":
            return self.node("Sigmoid", [x], f"{name}/sigmoid")
        return self.node("Softmax", [x], f"{name}/softmax", axis=channel_axis)

    def qdq(self, x, name, scale, zero, axis=None):
        """QuantizeLinear -> DequantizeLinear of `x` (per channel on `axis` when given)."""
        attrs = {} if axis is None else {"axis": axis}
        scale = self.const(f"{name}/scale", scale)
        zero = self.const(f"{name}/zero_point", zero, zero.dtype)
        q = self.node("QuantizeLinear", [x, scale, zero], f"{name}/quantize", **attrs)
        return self.node("DequantizeLinear", [q, scale, zero], f"{name}/dequantize", **attrs)

    def quantize_activation(self, key, value):
        """`value` (a `_Clip`/`_Plain`) through its QAT range's Q/DQ, when `key` has one."""
        if not self.quantized or key not in self.weights.ranges:
            return value
        lo, hi = (float(v) for v in activation_range(*self.weights.ranges[key]))
        name = self.qdq(value.name, f"{key}/act", *qdq_params(lo, hi))
        if isinstance(value, _Clip):
            return _Clip(name, value.shape, value.channels_last, value.fold)
        return _Plain(name)

    def weight(self, name, value, axis=None):
        """A weight constant; in a QAT export, symmetric int8 (narrow range) per output
        channel on `axis` over all the other axes, or per tensor when `axis` is None."""
        const = self.const(name, value)
        if not self.quantized:
            return const
        other = tuple(i for i in range(value.ndim) if i != axis) if axis is not None else None
        amax = np.maximum(np.abs(value).max(axis=other), 1e-8) * self.weight_widen  # as quantize._fq_weight
        return self.qdq(const, name, *qdq_params(-amax, amax, narrow_range=True), axis=axis)

    def to_keras_layout(self, v, name):
        """A clip as Keras holds it (channels-last); other values are already."""
        if isinstance(v, _Clip):
            return self.node("Transpose", [v.name], f"{name}/to_channels_last", perm=_TO_NDHWC)
        return v.name

    def has_bias(self, layer):
        return layer.use_bias or (self.frames is not None and layer.name == self.frames.stem)

    def run(self):
        t, h, w, c = (int(s) for s in self.model.inputs[0].shape[1:])
        source = INPUT_NAME
        if self.frames is not None:
            source = self.node("Sub", [source, self.const("input/zero_point", self.frames.zero_point)],
                               "input/zero_point")
            source = self.node("Mul", [source, self.const("input/scale", self.frames.scale)], "input/scale")
        if self.stem_fold > 1:
            # the stem reads the clip as Keras holds it (`_folded_conv3d`)
            clip = self.quantize_activation("input", _Clip(source, (t, h, w, c), channels_last=True))
        else:
            x = self.node("Transpose", [source], "input/to_ncdhw", perm=_TO_NCDHW)
            clip = self.quantize_activation("input", _Clip(x, (t, h, w, c)))
        values = {id(self.model.inputs[0]): clip}
        for layer in _layers(self.model):
            if len(layer._inbound_nodes) != 1:
                raise ValueError(f"Shared layer '{layer.name}' is not supported.")
            node = layer._inbound_nodes[0]
            handler = _handler(layer)
            if handler is None:
                raise ValueError(f"Layer '{layer.name}' ({type(layer).__name__}) has no native "
                                 "ONNX form; export it with form='taps'.")
            ins = [values[id(tensor)] for tensor in node.input_tensors]
            out = handler(self, layer, node, ins)
            if not isinstance(out, (list, tuple)):
                # the QAT graph's point after this layer (`deploy.graph` keys by layer name)
                out = self.quantize_activation(layer.name, out)
            outs = out if isinstance(out, (list, tuple)) else [out]
            for tensor, value in zip(node.output_tensors, outs):
                values[id(tensor)] = value
        if len(self.model.outputs) != 1:
            raise ValueError(f"Export expects one output. Received: {len(self.model.outputs)}")
        result = values[id(self.model.outputs[0])]
        self.nodes.append(helper.make_node("Identity", [self.to_keras_layout(result, "output")],
                                           [OUTPUT_NAME], name=self.unique("output/Identity")))
        shape = tuple(self.model.outputs[0].shape[1:])
        return helper.make_graph(
            self.nodes, self.model.name,
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [self.batch, t, h, w, c])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [self.batch, *shape])],
            self.initializers)


def _pads(padding):
    return list(padding) * 2  # begins then ends, symmetric as PyTorch's


def _out_clip(node, name):
    return _Clip(name, node.output_tensors[0].shape[1:])


# ---------------------------------------------------------------- handlers, per layer class
def _identity(w, layer, node, ins):
    return ins[0]


def _conv(w, layer, node, ins, kernel, groups):
    order = w.channel_order.get(layer.name, slice(None))
    inputs = [ins[0].name, w.weight(f"{layer.name}/kernel", kernel[order], axis=0)]
    if w.has_bias(layer):
        inputs.append(w.const(f"{layer.name}/bias", w.weights.bias(layer)[order]))
    y = w.node("Conv", inputs, layer.name, kernel_shape=list(layer.kernel_size),
               strides=list(layer.strides), pads=_pads(layer.padding), group=groups)
    return _out_clip(node, w.activation(layer, y, layer.name, 1))


def _conv3d(w, layer, node, ins):
    if layer.name in w.merged.values():
        return ins[0]  # its single reader writes both (`pointwise_pairs`)
    if layer.name in w.merged:
        return _merged_pointwise(w, layer, node, ins)
    if ins[0].channels_last:
        return _folded_conv3d(w, layer, node, ins[0])
    if w.stem_output_fold > 1 and layer is w.stem:
        return _output_folded_conv3d(w, layer, node, ins[0])
    # (kt, kh, kw, in / groups, out) -> ONNX's (out, in / groups, kt, kh, kw)
    kernel = np.transpose(w.weights.kernel(layer), (4, 3, 0, 1, 2))
    return _conv(w, layer, node, ins, kernel, layer.groups)


def _merged_pointwise(w, layer, node, ins):
    """`layer` and the pointwise convolution before it (`pointwise_pairs`) as one Conv:
    x A1 + b1, then times A2 plus b2, is x (A1 A2) + (b1 A2 + b2), at the first's strides."""
    first = w.model.get_layer(w.merged[layer.name])
    a1, a2 = (w.weights.kernel(conv)[0, 0, 0].astype(np.float64) for conv in (first, layer))
    b1, b2 = (w.weights.bias(conv) if conv.use_bias else np.zeros(conv.filters) for conv in (first, layer))
    order = w.channel_order.get(layer.name, slice(None))
    kernel = (a1 @ a2)[:, order].T.reshape(layer.filters, -1, 1, 1, 1)
    bias = (np.asarray(b1, np.float64) @ a2 + b2)[order]
    y = w.node("Conv", [ins[0].name, w.const(f"{layer.name}/kernel", kernel), w.const(f"{layer.name}/bias", bias)],
               layer.name, kernel_shape=[1, 1, 1], strides=list(first.strides), pads=[0] * 6, group=1)
    return _out_clip(node, w.activation(layer, y, layer.name, 1))


def _column_spans(q, stride, fold, pad, width):
    """Where a width-`width` kernel's taps fall for a convolution that reads `fold` columns
    and writes `q` columns per group: ``{(j, d): (off, i)}``, output column q*g + j's tap d
    reading input column fold*g + (stride*j - pad + d) = fold*(g + off) + i, with the least
    and greatest group offset (the folded kernel spans hi - lo + 1 groups)."""
    spans = {(j, d): divmod(stride * j - pad + d, fold) for j in range(q) for d in range(width)}
    offsets = [off for off, _ in spans.values()]
    return spans, min(offsets), max(offsets)


def _folded_conv3d(w, layer, node, clip):
    """The stem over the clip with `w.stem_fold` (f) adjacent columns as channels.

    Why: a 3-channel input gives the CPU's int8 matrix units (AMX: 64-deep products) a
    3-deep one per kernel point; OpenVINO ran MobileNetV2's stem at a tenth of their speed.
    (B, T, H, W, C) viewed as (B, T, H, W/f, f*C) is the same memory; a convolution over that
    with q = f / stride output columns per group as channels, (B, T, H', W/f, q*O), writes
    (B, T, H', W', O) in the same memory again. Its kernel spans the groups holding the
    original's taps (two for a 3-wide kernel, zero weights elsewhere): 2f/3 times the
    multiplications, in products 3f deep."""
    f, (t, h, wd, c) = w.stem_fold, clip.shape
    ot, oh, ow, cout = (int(d) for d in node.output_tensors[0].shape[1:])
    kt, kh, kw = layer.kernel_size
    st, sh, sw = layer.strides
    pt, ph, pw = layer.padding
    q, groups = f // sw, wd // f
    spans, lo, hi = _column_spans(q, sw, f, pw, kw)
    order = w.channel_order.get(layer.name, slice(None))
    kernel = w.weights.kernel(layer)[..., order]  # (kt, kh, kw, C, O)
    folded = np.zeros((q, cout, f, c, kt, kh, hi - lo + 1), np.float32)
    for (j, d), (off, i) in spans.items():
        folded[j, :, i, :, :, :, off - lo] = np.transpose(kernel[:, :, d], (3, 2, 0, 1))
    x = w.node("Reshape", [clip.name, w.const(f"{layer.name}/fold", [0, t, h, groups, f * c], np.int64)],
               f"{layer.name}/fold")
    x = w.node("Transpose", [x], f"{layer.name}/fold_ncdhw", perm=_TO_NCDHW)
    inputs = [x, w.weight(f"{layer.name}/kernel", folded.reshape(q * cout, f * c, kt, kh, -1), axis=0)]
    if w.has_bias(layer):
        inputs.append(w.const(f"{layer.name}/bias", np.tile(w.weights.bias(layer)[order], q)))
    y = w.node("Conv", inputs, layer.name, kernel_shape=[kt, kh, hi - lo + 1], strides=[st, sh, 1],
               pads=[pt, ph, -lo, pt, ph, hi])
    y = w.activation(layer, y, layer.name, 1)
    if w.folded_depthwise is not None:  # its reader takes it folded
        return _Clip(y, (ot, oh, ow, cout), fold=q)
    return _unfold(w, y, layer.name, node, cout)


def _output_folded_conv3d(w, layer, node, clip):
    """The stem writing q = `w.stem_output_fold` adjacent output columns per position as
    channels, (B, q * O, T, H', W' / q), unfolded after it (`_unfold`: in OpenVINO's
    channels-last layout the same memory, no reorder of the values).

    Why: OpenVINO's convolutions vectorise over output channels, 16 int32 or fp32 lanes; a
    stem of 6 channels (MobileNetV2 0.2x) used 6 of them. Its kernel is q copies of the
    stem's, `stride` columns apart in a window of stride * (q - 1) + width columns at q
    times the stride: 12 lanes in use, the clip's 3-channel rows read once per q columns
    (int8 1.055 -> 1.025 ms, fp32 1.60 -> 1.54 for the whole model, 2 threads)."""
    q = w.stem_output_fold
    kt, kh, kw = layer.kernel_size
    st, sh, sw = layer.strides
    pt, ph, pw = layer.padding
    cout = int(node.output_tensors[0].shape[4])
    order = w.channel_order.get(layer.name, slice(None))
    kernel = np.transpose(w.weights.kernel(layer)[..., order], (4, 3, 0, 1, 2))  # (O, C, kt, kh, kw)
    folded = np.zeros((q,) + kernel.shape[:4] + (sw * (q - 1) + kw,), np.float32)
    for j in range(q):
        folded[j, ..., sw * j:sw * j + kw] = kernel
    inputs = [clip.name, w.weight(f"{layer.name}/kernel", folded.reshape((q * cout,) + folded.shape[2:]), axis=0)]
    if w.has_bias(layer):
        inputs.append(w.const(f"{layer.name}/bias", np.tile(w.weights.bias(layer)[order], q)))
    pad = _output_fold_padding(layer, clip.shape[2], q)
    y = w.node("Conv", inputs, layer.name, kernel_shape=[kt, kh, folded.shape[-1]], strides=[st, sh, q * sw],
               pads=[pt, ph, pw, pt, ph, pad])
    return _unfold(w, w.activation(layer, y, layer.name, 1), layer.name, node, cout)


def _unfold(w, y, name, node, cout):
    """(B, q * C, T, H, W / q) -> NCDHW (B, C, T, H, W) for `node`'s output shape."""
    ot, oh, ow = (int(d) for d in node.output_tensors[0].shape[1:4])
    y = w.node("Transpose", [y], f"{name}/unfold_ndhwc", perm=_TO_NDHWC)
    y = w.node("Reshape", [y, w.const(f"{name}/unfold", [0, ot, oh, ow, cout], np.int64)], f"{name}/unfold")
    return _Clip(w.node("Transpose", [y], f"{name}/unfold_ncdhw", perm=_TO_NCDHW), (ot, oh, ow, cout))


def _folded_depthwise3d(w, layer, node, x):
    """A depthwise layer over a folded stem's output `x` (q columns as channels), as one
    ungrouped convolution: output column q*g + j, channel c, reads input columns q*(g + o)
    + i of channel c alone, so the kernel is the depthwise one spread over (j, c) x (i, c)
    with zeros elsewhere: q*C times the multiplications for a 3-wide kernel, in products q*C
    deep. Width-preserving layers only (`_folded_depthwise`).

    Why: OpenVINO's depthwise kernels work on 16 channels at a time. MobileNetV2 0.2x's
    first depthwise layer (6 channels, 16x56x56) took 0.21 ms in int8 on an AMX CPU, the
    same layer folded (12 channels, 0.1 G multiplications) 0.13 ms and no unfold of the
    stem's output: the whole int8 model 1.15 -> 1.06 ms (5 interleaved rounds). MobileNetV2
    1.0x's (32 channels, folded 64) took 0.81 against 0.42 ms: only up to
    `FOLDED_DEPTHWISE_CHANNELS`."""
    q, c = x.fold, x.shape[3]
    kt, kh, kw = layer.kernel_size
    st, sh, _ = layer.strides
    pt, ph, pw = layer.padding
    kernel = w.weights.kernel(layer)[..., 0]  # (kt, kh, kw, C)
    spans, lo, hi = _column_spans(q, 1, q, pw, kw)
    folded = np.zeros((q, c, q, c, kt, kh, hi - lo + 1), np.float32)
    for (j, d), (off, i) in spans.items():
        folded[j, np.arange(c), i, np.arange(c), :, :, off - lo] = np.transpose(kernel[:, :, d], (2, 0, 1))
    inputs = [x.name, w.weight(f"{layer.name}/kernel", folded.reshape(q * c, q * c, kt, kh, -1), axis=0)]
    if layer.use_bias:
        inputs.append(w.const(f"{layer.name}/bias", np.tile(w.weights.bias(layer), q)))
    y = w.node("Conv", inputs, layer.name, kernel_shape=[kt, kh, hi - lo + 1], strides=[st, sh, 1],
               pads=[pt, ph, -lo, pt, ph, hi])
    y = w.activation(layer, y, layer.name, 1)
    return _unfold(w, y, layer.name, node, c)


def _depthwise3d(w, layer, node, ins):
    if ins[0].fold > 1:
        return _folded_depthwise3d(w, layer, node, ins[0])
    # (kt, kh, kw, C, 1) -> (C, 1, kt, kh, kw), one group per channel
    kernel = np.transpose(w.weights.kernel(layer), (3, 4, 0, 1, 2))
    return _conv(w, layer, node, ins, kernel, kernel.shape[0])


def _max_pool3d(w, layer, node, ins):
    # ONNX's MaxPool pads never win, as PyTorch's
    y = w.node("MaxPool", [ins[0].name], layer.name, kernel_shape=list(layer.pool_size),
               strides=list(layer.strides), pads=_pads(layer.padding))
    return _out_clip(node, y)


def _avg_pool3d(w, layer, node, ins):
    y = w.node("AveragePool", [ins[0].name], layer.name, kernel_shape=list(layer.pool_size),
               strides=list(layer.strides), pads=_pads(layer.padding), count_include_pad=1)
    return _out_clip(node, y)


def _shuffle(w, layer, node, ins):
    v, g = ins[0], layer.groups
    if g == 1 or layer.name in w.shuffled:  # the convolution before wrote it shuffled
        return v
    t, h, wd, c = v.shape
    # (B, g, C/g, THW) -> (B, C/g, g, THW): the PyTorch view-permute-view on NCDHW. Not one
    # Gather of the channels: NNCF quantizes through a Gather (int8 ShuffleNetV1 ~9% faster in
    # OpenVINO), but OpenVINO 2026.4's CPU plugin computed ShuffleNetV2 wrongly with it at a
    # fixed batch (relative error 1.2 against ONNX Runtime).
    x = w.node("Reshape", [v.name, w.const(f"{layer.name}/grouped", [0, g, c // g, t * h * wd], np.int64)],
               f"{layer.name}/grouped")
    x = w.node("Transpose", [x], f"{layer.name}/swap", perm=[0, 2, 1, 3])
    x = w.node("Reshape", [x, w.const(f"{layer.name}/shape", [0, c, t, h, wd], np.int64)], layer.name)
    return _Clip(x, v.shape)


def _split(w, layer, node, ins):
    v = ins[0]
    c = v.shape[-1]
    halves = w.node("Split", [v.name, w.const(f"{layer.name}/sizes", [c // 2, c - c // 2], np.int64)],
                    layer.name, outputs=2, axis=1)
    return [_Clip(name, out.shape[1:]) for name, out in zip(halves, node.output_tensors)]


def _zero_pad_channels(w, layer, node, ins):
    x = ins[0].name
    if any(s > 1 for s in layer.strides):
        # avg_pool3d(kernel 1, stride), as the original: a strided subsample
        x = w.node("AveragePool", [x], f"{layer.name}/subsample", kernel_shape=[1, 1, 1],
                   strides=list(layer.strides))
    extra = layer.filters - ins[0].shape[-1]
    if extra:
        pads = [0, 0, 0, 0, 0, 0, extra, 0, 0, 0]
        x = w.node("Pad", [x, w.const(f"{layer.name}/pads", pads, np.int64)], layer.name)
    return _out_clip(node, x)


def _global_pool(w, layer, node, ins):
    op = "GlobalAveragePool" if isinstance(layer, keras.layers.GlobalAveragePooling3D) else "GlobalMaxPool"
    y = w.node(op, [ins[0].name], layer.name)
    if layer.get_config().get("keepdims"):
        return _out_clip(node, y)
    return _Plain(w.node("Flatten", [y], f"{layer.name}/flatten", axis=1))


def _dense(w, layer, node, ins):
    if not isinstance(ins[0], _Plain) or len(node.input_tensors[0].shape) != 2:
        raise ValueError(f"'{layer.name}': Dense needs a flat (batch, features) input. "
                         f"Received: input_shape={tuple(node.input_tensors[0].shape)}")
    inputs = [ins[0].name, w.weight(f"{layer.name}/kernel", w.weights.kernel(layer))]
    if layer.use_bias:
        inputs.append(w.const(f"{layer.name}/bias", w.weights.bias(layer)))
    y = w.node("Gemm", inputs, layer.name)
    return _Plain(w.activation(layer, y, layer.name, -1))


def _like(ins, name, node):
    return _out_clip(node, name) if isinstance(ins[0], _Clip) else _Plain(name)


def _add(w, layer, node, ins):
    y = ins[0].name
    for i, other in enumerate(ins[1:]):
        y = w.node("Add", [y, other.name], layer.name if i == len(ins) - 2 else f"{layer.name}/{i}")
    return _like(ins, y, node)


def _keras_axis_to_ncdhw(axis, rank):
    axis = axis % rank
    return 1 if axis == 4 else (axis + 1 if axis else 0)


def _concatenate(w, layer, node, ins):
    if isinstance(ins[0], _Clip) != isinstance(ins[-1], _Clip):
        raise ValueError(f"'{layer.name}': mixed clip and flat inputs are not supported.")
    axis = layer.axis
    if isinstance(ins[0], _Clip):
        axis = _keras_axis_to_ncdhw(axis, 5)
    y = w.node("Concat", [v.name for v in ins], layer.name, axis=axis)
    return _like(ins, y, node)


def _activation(w, layer, node, ins):
    v = ins[0]
    y = w.activation(layer, v.name, layer.name, 1 if isinstance(v, _Clip) else -1)
    return _like(ins, y, node)


def _batch_norm(w, layer, node, ins):
    v = ins[0]
    scale, shift = batchnorm_affine(layer)
    shape = (-1, 1, 1, 1) if isinstance(v, _Clip) else (-1,)
    if isinstance(v, _Clip) and not normalises_channels(layer):
        raise ValueError(f"'{layer.name}': only channel BatchNorm is supported. Received: axis={layer.axis}")
    y = w.node("Mul", [v.name, w.const(f"{layer.name}/scale", np.reshape(scale, shape))], f"{layer.name}/scale")
    y = w.node("Add", [y, w.const(f"{layer.name}/shift", np.reshape(shift, shape))], layer.name)
    return _like(ins, y, node)


def _permute(w, layer, node, ins):
    v = ins[0]
    dims = (0,) + tuple(layer.dims)
    if isinstance(v, _Clip):
        # Keras' axis d of the clip is ONNX axis _TO_NDHWC[d] of the NCDHW tensor
        perm = [_TO_NDHWC[d] for d in dims]
    else:
        perm = list(dims)
    if perm == sorted(perm):
        return _Plain(v.name)
    return _Plain(w.node("Transpose", [v.name], layer.name, perm=perm))


def _flatten(w, layer, node, ins):
    return _Plain(w.node("Flatten", [w.to_keras_layout(ins[0], layer.name)], layer.name, axis=1))


# Layer class -> handler; a subclass takes its nearest registered base's handler.
_HANDLERS = {
    Folded: _identity,
    keras.layers.Dropout: _identity,
    keras.layers.SpatialDropout3D: _identity,
    keras.layers.GaussianNoise: _identity,
    k3d.Conv3D: _conv3d,
    k3d.DepthwiseConv3D: _depthwise3d,
    k3d.MaxPool3D: _max_pool3d,
    k3d.AvgPool3D: _avg_pool3d,
    k3d.ChannelShuffle: _shuffle,
    k3d.ChannelSplit: _split,
    k3d.ZeroPadChannels: _zero_pad_channels,
    keras.layers.GlobalAveragePooling3D: _global_pool,
    keras.layers.GlobalMaxPooling3D: _global_pool,
    keras.layers.Dense: _dense,
    keras.layers.Add: _add,
    keras.layers.Concatenate: _concatenate,
    keras.layers.ReLU: _activation,
    keras.layers.Activation: _activation,
    keras.layers.BatchNormalization: _batch_norm,
    keras.layers.Permute: _permute,
    keras.layers.Flatten: _flatten,
}


def native_onnx(model, opset=13, batch_size=None, fold_bn=True, weight_bits=8, stem_fold=1,
                merge_pointwise=False, frames=None, stem_output_fold=1):
    """`model` as an `onnx.ModelProto` in the native form (module docstring), checked by
    `onnx.checker` (not verified against Keras; see `onnx_export.export_onnx`).

    Args:
        model: a built functional `keras.Model` with one clip input (batch, T, H, W, 3), or
            its quantization-aware form (`quantize.quantize_model`; Q/DQ, module docstring).
        opset: ONNX opset of the graph (>= 13).
        batch_size: None for a dynamic ``batch`` axis, or a fixed batch.
        fold_bn: fold BatchNorm into the convolutions (else Mul/Add per BatchNorm).
        weight_bits: of a quantization-aware model's weights: 8, or 7 for x86 CPUs without
            VNNI (module docstring).
        stem_fold: adjacent input columns the stem convolution takes as channels (1: none;
            one of `stem_fold_factors(model)`): int8 on CPUs with AMX (`_folded_conv3d`).
        merge_pointwise: write each of `pointwise_pairs` as one convolution: for int8 on
            OpenVINO (in fp32 on AMX, MobileNetV2 1.0x measured no faster); a QAT model's
            pairs stay apart (a quantization grid between them).
        frames: a `keras_efficient3d.data.Normalization`: the graph takes RGB 0-255 frames
            (float here; `openvino_export` makes them uint8) and normalises them as this one
            does (`_FramesInput`: exact where every channel has one mean). Float models.
        stem_output_fold: output columns the stem writes per position as channels (1: none;
            one of `stem_output_fold_factors(model)`, with no `stem_fold`; float models):
            OpenVINO, for a stem of few channels (`_output_folded_conv3d`).
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a built keras.Model. Received: model={model!r}")
    if weight_bits not in (7, 8):
        raise ValueError(f"`weight_bits` must be 7 or 8. Received: weight_bits={weight_bits!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError("`batch_size` must be None (dynamic) or a positive integer. "
                         f"Received: batch_size={batch_size}")
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 5 or \
            any(s is None for s in model.inputs[0].shape[1:]):
        raise ValueError("Expected one clip input of static shape (frames, height, width, "
                         f"channels). Received: inputs={[tuple(t.shape) for t in model.inputs]}")
    if stem_fold != 1 and stem_fold not in stem_fold_factors(model):
        raise ValueError(f"`stem_fold` must be 1 or one of {stem_fold_factors(model)} for "
                         f"'{model.name}'. Received: stem_fold={stem_fold!r}")
    qat = qat_layer(model)
    if stem_output_fold != 1 and (stem_fold != 1 or stem_output_fold not in stem_output_fold_factors(model)):
        raise ValueError(f"`stem_output_fold` must be 1 or one of {stem_output_fold_factors(model)} for "
                         f"'{model.name}' (a float model's stem, without `stem_fold`). Received: "
                         f"stem_output_fold={stem_output_fold!r}, stem_fold={stem_fold!r}")
    if qat is not None:  # its graph's model is the folded float model
        if frames is not None:
            raise ValueError("A frames input is written for float models; a quantization-aware "
                             "model's input range was learned on normalised clips.")
        graph = _Writer(qat.graph.model, batch_size, qat, weight_bits, stem_fold, merge_pointwise).run()
    else:
        graph = _Writer(inference_form(model, fold_bn), batch_size, stem_fold=stem_fold,
                        merge_pointwise=merge_pointwise, frames=frames,
                        stem_output_fold=stem_output_fold).run()
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="keras_efficient3d",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(proto)
    return proto
