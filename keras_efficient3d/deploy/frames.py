"""A model that takes the decoder's RGB 0-255 frames and normalises them itself: the model's
normalisation as one scalar zero point and scale before the stem convolution, the rest in the
stem's weights (`FramesInput`). The OpenVINO IR of ``frames_input`` (`onnx_native`) and the
TFLite int8 file of frames (`tflite`) both build on it."""

import keras
import numpy as np

from keras_efficient3d import layers as k3d

__all__ = ["FramesInput", "frames_input_affine", "stem_layer"]


def stem_layer(model):
    """The one ungrouped Conv3D that alone reads the clip input, else None."""
    consumers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
                 if any(t is model.inputs[0] for t in layer._inbound_nodes[0].input_tensors)]
    if len(consumers) == 1 and type(consumers[0]) is k3d.Conv3D and consumers[0].groups == 1:
        return consumers[0]
    return None


class FramesInput:
    """The model's normalisation, ``x_n[c] = (x[p(c)] / v - mean[c]) / std[c]`` (p: the channel
    order, v: 1 or 255), as what the graph does to RGB 0-255 frames x: ``u = (x - z) * s``
    with a scalar (integer) zero point z and a scalar scale s, then the stem convolution with
    its kernel's input channels scaled by ``a[c] / s`` (a = 1 / (v * std)) and reordered to
    RGB, and its bias plus ``sum(kernel[..., c, :] * delta[c])``,
    ``delta[c] = a[c] * z - mean[c] / std[c]``.

    Why scalars: OpenVINO's int8 convolutions take one zero point and one scale for their
    input (per-channel ones ran the stem in f32, 1.7 against 1.15 ms for MobileNetV2 0.2x).
    The u8 frames then feed the stem as they are: no quantization pass over the clip.

    Exact where delta is 0: every channel's mean the same whole 0-255 pixel value, whatever
    the stds (the ``unit`` and ``none`` presets). Otherwise the interior is exact and the
    stem's zero padding, which stands for each channel's mean, reads the common z instead: the frame border (and the
    first and last frames, for a temporal pad) is off by the padded taps times delta
    (ActivityNet's means: delta within 8 of 255); int8 top-1 agreement measures it."""

    def __init__(self, normalization, stem):
        v = normalization.scale
        std, mean = np.asarray(normalization.std, np.float64), np.asarray(normalization.mean, np.float64)
        a, b = 1.0 / (v * std), mean / std
        self.zero_point = float(np.clip(np.round(np.dot(a, b) / np.dot(a, a)), 0, 255))
        self.scale = float(np.mean(a))
        self.factors = a / self.scale
        self.delta = a * self.zero_point - b
        self.reverse = normalization.channel_order == "BGR"
        self.stem = None if stem is None else stem.name

    @property
    def exact(self):
        # delta = a * z - b, each term up to ~255 a: rounding of the normalisation's floats
        return bool(np.all(np.abs(self.delta) <= 1e-6 * np.max(np.abs(self.delta) + self.scale * 255)))

    def kernel(self, kernel):
        """(kt, kh, kw, C, O) in the model's channel order -> the frames' (RGB) kernel."""
        kernel = kernel * self.factors[:, None].astype(np.float32)
        return kernel[:, :, :, ::-1] if self.reverse else kernel

    def bias(self, kernel, bias):
        return (np.asarray(bias, np.float64)
                + np.einsum("thwco,c->o", kernel.astype(np.float64), self.delta)).astype(np.float32)


def frames_input_affine(normalization):
    """What a frames input (`native_onnx`'s ``frames``) does before the stem:
    ``{"zero_point", "scale", "exact", "border_offset"}`` (exact: every channel's mean is
    the zero point, a whole pixel value, so the stem's zero padding is the model's;
    border_offset: how far, in 0-255 pixel values, the padding's stand-in is from a channel's
    mean at most)."""
    frames = FramesInput(normalization, None)
    offset = float(np.max(np.abs(frames.delta) / (frames.factors * frames.scale)))
    return {"zero_point": frames.zero_point, "scale": frames.scale, "exact": frames.exact,
            "border_offset": 0.0 if frames.exact else round(offset, 4)}
