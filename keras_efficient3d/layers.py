"""3D building blocks with PyTorch semantics, computed with 2D kernels.

Every layer takes and returns channels-last video tensors (batch, frames, height, width,
channels). Internally a 3D kernel of temporal extent ``kt`` is evaluated as the sum of
``kt`` 2D convolutions, one per temporal tap, over frames folded into the batch axis
(batch * frames, height, width, channels). Three reasons:

* TensorFlow's CPU Conv3D rejects grouped filters and Keras routes grouped convolutions
  through XLA, about 100x slower on CPU than depthwise 2D kernels over temporal taps;
* TFLite's CONV_3D is float-only and ungrouped, while its 2D kernels run in int8 under
  XNNPACK;
* the same graph exports to plain ONNX operators.

Padding is explicit and symmetric as in ``torch.nn.Conv3d(padding=p)``; average pooling
counts padded zeros (PyTorch's ``count_include_pad=True`` default) and max pooling ignores
them, so converted PyTorch checkpoints compute the same numbers.
"""

import keras
from keras import ops

_PACKAGE = "keras_efficient3d"


def _triple(value, name):
    if isinstance(value, int):
        return (value, value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise ValueError(
            f"`{name}` must be an int or a tuple of 3 ints (time, height, width). "
            f"Received: {name}={value}"
        )
    return value


def _out_len(size, kernel, stride, pad):
    if size is None:
        return None
    return (size + 2 * pad - kernel) // stride + 1


def _check_input(layer, input_shape):
    if len(input_shape) != 5:
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}' expects 5D input (batch, frames, height, "
            f"width, channels). Received: input_shape={tuple(input_shape)}"
        )
    for axis, label in ((1, "frames"), (2, "height"), (3, "width"), (4, "channels")):
        if input_shape[axis] is None:
            raise ValueError(
                f"{type(layer).__name__} '{layer.name}' needs a static number of {label}. "
                f"Received: input_shape={tuple(input_shape)}"
            )


def temporal_taps(x, kernel_t, stride_t, pad_t, pad_hw=(0, 0), pad_value=0.0):
    """Pads a 5D tensor and returns one 4D (batch*frames_out, H, W, C) view per temporal tap.

    Tap ``i`` holds input frames ``i, i + stride_t, ...`` of the padded clip, so that a
    ``kernel_t``-tap temporal filter is the sum (or max) over taps of a 2D operation.
    Slicing uses ``ops.slice`` and reshapes only: Python strided slices on the time axis
    broke TensorFlow's graph optimizer inside ``model.predict``.
    """
    _, t, h, w, c = x.shape
    ph, pw = pad_hw
    if pad_t or ph or pw:
        x = ops.pad(
            x, [[0, 0], [pad_t, pad_t], [ph, ph], [pw, pw], [0, 0]], constant_values=pad_value
        )
    t_pad, h_pad, w_pad = t + 2 * pad_t, h + 2 * ph, w + 2 * pw
    t_out = (t_pad - kernel_t) // stride_t + 1
    if t_out < 1:
        raise ValueError(
            f"A temporal kernel of {kernel_t} with padding {pad_t} does not fit {t} frames."
        )
    taps = []
    for i in range(kernel_t):
        if stride_t == 1:
            xi = ops.slice(x, (0, i, 0, 0, 0), (-1, t_out, h_pad, w_pad, c)) if (
                kernel_t > 1 or t_out != t_pad) else x
        else:
            # Take stride_t * t_out frames from tap i (padding one more if needed) and keep
            # the first of every stride_t of them.
            span = stride_t * t_out
            avail = t_pad - i
            xi = x
            if avail < span:
                xi = ops.pad(xi, [[0, 0], [0, span - avail], [0, 0], [0, 0], [0, 0]])
            xi = ops.slice(xi, (0, i, 0, 0, 0), (-1, span, h_pad, w_pad, c))
            xi = ops.reshape(xi, (-1, t_out, stride_t, h_pad * w_pad * c))
            xi = ops.slice(xi, (0, 0, 0, 0), (-1, t_out, 1, h_pad * w_pad * c))
        taps.append(ops.reshape(xi, (-1, h_pad, w_pad, c)))
    return taps, t_out


class _Conv3DBase(keras.layers.Layer):
    """Shared argument handling of the convolutions below."""

    def __init__(
        self,
        kernel_size,
        strides=1,
        padding=0,
        use_bias=False,
        kernel_initializer="he_normal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        activation=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.activation = keras.activations.get(activation)
        self.kernel_size = _triple(kernel_size, "kernel_size")
        self.strides = _triple(strides, "strides")
        self.padding = _triple(padding, "padding")
        if self.strides[1] != self.strides[2]:
            raise ValueError(
                "Spatial strides must be equal (TensorFlow's depthwise kernels require it). "
                f"Received: strides={self.strides}"
            )
        if min(self.kernel_size) < 1 or min(self.strides) < 1 or min(self.padding) < 0:
            raise ValueError(
                "kernel_size and strides must be >= 1 and padding >= 0. Received: "
                f"kernel_size={self.kernel_size}, strides={self.strides}, padding={self.padding}"
            )
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def _output_shape(self, input_shape, channels):
        kt, kh, kw = self.kernel_size
        st, sh, sw = self.strides
        pt, ph, pw = self.padding
        return (
            input_shape[0],
            _out_len(input_shape[1], kt, st, pt),
            _out_len(input_shape[2], kh, sh, ph),
            _out_len(input_shape[3], kw, sw, pw),
            channels,
        )

    def _add_bias(self, channels):
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(channels,), initializer=self.bias_initializer
            )
        else:
            self.bias = None

    def _finish(self, taps_out, t_out):
        y = taps_out[0]
        for extra in taps_out[1:]:
            y = ops.add(y, extra)
        if self.bias is not None:
            y = ops.add(y, self.bias)
        # Applied on the 4D tensor, before the reshape back to video, so that TensorFlow's
        # graph optimizer can fuse conv + bias + activation (the folded inference form).
        y = self.activation(y)
        _, h, w, c = y.shape
        return ops.reshape(y, (-1, t_out, h, w, c))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "activation": keras.activations.serialize(self.activation),
            }
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Conv3D(_Conv3DBase):
    """3D convolution, optionally grouped, with PyTorch's symmetric explicit padding.

    The kernel has Keras' Conv3D layout ``(kt, kh, kw, in_channels // groups, filters)``;
    a PyTorch ``Conv3d`` weight ``(filters, in // groups, kt, kh, kw)`` maps to it by
    ``transpose(2, 3, 4, 1, 0)``.

    Args:
        filters: number of output channels.
        kernel_size: int or (kt, kh, kw).
        strides: int or (st, sh, sw); sh must equal sw.
        padding: int or (pt, ph, pw) zeros added on both sides, as in PyTorch.
        groups: channel groups (ShuffleNetV1's grouped 1x1x1, ResNeXt's cardinality).
        use_bias: whether to add a bias.
        activation: optional activation applied to the output (used by the folded
            inference form, where BatchNorm and ReLU merge into the convolution).
    """

    def __init__(self, filters, kernel_size, strides=1, padding=0, groups=1, use_bias=False,
                 **kwargs):
        super().__init__(kernel_size, strides, padding, use_bias, **kwargs)
        self.filters = int(filters)
        self.groups = int(groups)
        if self.filters < 1 or self.groups < 1 or self.filters % self.groups:
            raise ValueError(
                "`filters` must be a positive multiple of `groups`. "
                f"Received: filters={filters}, groups={groups}"
            )

    def build(self, input_shape):
        _check_input(self, input_shape)
        channels = input_shape[-1]
        if channels % self.groups:
            raise ValueError(
                f"Input channels ({channels}) of '{self.name}' must be divisible by "
                f"groups. Received: groups={self.groups}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.kernel_size + (channels // self.groups, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self._add_bias(self.filters)

    def call(self, inputs):
        kt, _, _ = self.kernel_size
        st, sh, sw = self.strides
        pt, ph, pw = self.padding
        _, t, h, w, channels = inputs.shape
        cin = channels // self.groups
        cout = self.filters // self.groups
        parts = []
        t_out = None
        # One 2D convolution per group: grouped convolutions in Keras' TF backend go through
        # XLA, which is slow on CPU and does not export.
        for g in range(self.groups):
            xg = inputs if self.groups == 1 else ops.slice(
                inputs, (0, 0, 0, 0, g * cin), (-1, t, h, w, cin))
            taps, t_out = temporal_taps(xg, kt, st, pt, (ph, pw))
            kernel = self.kernel if self.groups == 1 else self.kernel[..., g * cout:(g + 1) * cout]
            if kt > 1:
                # Temporal taps stacked as channels make one 2D convolution with a kt times
                # deeper kernel: larger matrix products than a sum of kt convolutions, which
                # matters most for the 3-channel stem (1.7x faster measured).
                x2d = ops.concatenate(taps, axis=-1)
                kernel = ops.reshape(ops.transpose(kernel, (1, 2, 0, 3, 4)),
                                     (kernel.shape[1], kernel.shape[2], kt * cin, cout))
            else:
                x2d, kernel = taps[0], kernel[0]
            parts.append(ops.conv(x2d, kernel, strides=(sh, sw), padding="valid"))
        y = parts[0] if self.groups == 1 else ops.concatenate(parts, axis=-1)
        return self._finish([y], t_out)

    def compute_output_shape(self, input_shape):
        return self._output_shape(input_shape, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "groups": self.groups})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DepthwiseConv3D(_Conv3DBase):
    """Depthwise 3D convolution (PyTorch ``Conv3d(C, C, k, groups=C)``).

    The kernel is stored as ``(kt, kh, kw, channels, 1)``, the 2D depthwise layout with a
    leading temporal axis; a PyTorch weight ``(C, 1, kt, kh, kw)`` maps to it by
    ``transpose(2, 3, 4, 0, 1)``.
    """

    def build(self, input_shape):
        _check_input(self, input_shape)
        channels = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.kernel_size + (channels, 1),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self._add_bias(channels)

    def call(self, inputs):
        kt, _, _ = self.kernel_size
        st, sh, sw = self.strides
        pt, ph, pw = self.padding
        taps, t_out = temporal_taps(inputs, kt, st, pt, (ph, pw))
        outs = [
            ops.depthwise_conv(xi, self.kernel[i], strides=(sh, sw), padding="valid")
            for i, xi in enumerate(taps)
        ]
        return self._finish(outs, t_out)

    def compute_output_shape(self, input_shape):
        return self._output_shape(input_shape, input_shape[-1])


class _Pool3D(keras.layers.Layer):
    def __init__(self, pool_size, strides=None, padding=0, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _triple(pool_size, "pool_size")
        self.strides = _triple(strides if strides is not None else pool_size, "strides")
        self.padding = _triple(padding, "padding")
        if any(2 * p > k for p, k in zip(self.padding, self.pool_size)):
            raise ValueError(
                "Padding must be at most half the pool size, as in PyTorch. Received: "
                f"pool_size={self.pool_size}, padding={self.padding}"
            )

    def build(self, input_shape):
        _check_input(self, input_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(
            _out_len(input_shape[i + 1], self.pool_size[i], self.strides[i], self.padding[i])
            for i in range(3)
        ) + (input_shape[4],)

    def _taps(self, inputs, pad_value):
        kt, _, _ = self.pool_size
        st, _, _ = self.strides
        pt, ph, pw = self.padding
        return temporal_taps(inputs, kt, st, pt, (ph, pw), pad_value=pad_value)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"pool_size": self.pool_size, "strides": self.strides, "padding": self.padding}
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaxPool3D(_Pool3D):
    """``torch.nn.MaxPool3d(kernel, stride, padding)``: padded cells never win."""

    def call(self, inputs):
        _, kh, kw = self.pool_size
        _, sh, sw = self.strides
        taps, t_out = self._taps(inputs, float("-inf"))
        y = None
        for xi in taps:
            yi = ops.max_pool(xi, (kh, kw), strides=(sh, sw), padding="valid")
            y = yi if y is None else ops.maximum(y, yi)
        _, h, w, c = y.shape
        return ops.reshape(y, (-1, t_out, h, w, c))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AvgPool3D(_Pool3D):
    """``torch.nn.AvgPool3d(kernel, stride, padding)``: padded zeros count in the mean."""

    def call(self, inputs):
        kt, kh, kw = self.pool_size
        _, sh, sw = self.strides
        taps, t_out = self._taps(inputs, 0.0)
        y = None
        for xi in taps:
            yi = ops.average_pool(xi, (kh, kw), strides=(sh, sw), padding="valid")
            y = yi if y is None else ops.add(y, yi)
        if kt > 1:
            y = ops.multiply(y, 1.0 / kt)
        _, h, w, c = y.shape
        return ops.reshape(y, (-1, t_out, h, w, c))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet's channel shuffle: channel ``g * (C // groups) + j`` moves to
    ``j * groups + g``, exactly as the PyTorch view-permute-view on NCDHW."""

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)
        if self.groups < 1:
            raise ValueError(f"`groups` must be >= 1. Received: groups={groups}")

    def build(self, input_shape):
        _check_input(self, input_shape)
        if input_shape[-1] % self.groups:
            raise ValueError(
                f"Channels ({input_shape[-1]}) of '{self.name}' must be divisible by groups. "
                f"Received: groups={self.groups}"
            )

    def call(self, inputs):
        if self.groups == 1:
            return inputs
        _, t, h, w, c = inputs.shape
        x = ops.reshape(inputs, (-1, self.groups, c // self.groups))
        x = ops.transpose(x, (0, 2, 1))
        return ops.reshape(x, (-1, t, h, w, c))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["groups"] = self.groups
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChannelSplit(keras.layers.Layer):
    """Splits the channels into two halves (ShuffleNetV2's stride-1 unit); the first half
    gets ``C // 2`` channels, as ``x[:, :C//2]`` does in PyTorch."""

    def build(self, input_shape):
        _check_input(self, input_shape)

    def call(self, inputs):
        _, t, h, w, c = inputs.shape
        half = c // 2
        first = ops.slice(inputs, (0, 0, 0, 0, 0), (-1, t, h, w, half))
        second = ops.slice(inputs, (0, 0, 0, 0, half), (-1, t, h, w, c - half))
        return first, second

    def compute_output_shape(self, input_shape):
        c = input_shape[-1]
        return (tuple(input_shape[:-1]) + (c // 2,), tuple(input_shape[:-1]) + (c - c // 2,))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ZeroPadChannels(keras.layers.Layer):
    """ResNet shortcut A: ``avg_pool3d(kernel 1, stride)`` (a strided subsample) followed
    by zero channels up to ``filters``."""

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = _triple(strides, "strides")

    def build(self, input_shape):
        _check_input(self, input_shape)
        if input_shape[-1] > self.filters:
            raise ValueError(
                f"'{self.name}' cannot pad {input_shape[-1]} channels down to "
                f"{self.filters}. Received: filters={self.filters}"
            )

    def call(self, inputs):
        st, sh, sw = self.strides
        x = inputs
        if st > 1:
            taps, t_out = temporal_taps(x, 1, st, 0)
            x = ops.reshape(taps[0], (-1, t_out) + tuple(x.shape[2:]))
        if sh > 1 or sw > 1:
            _, t, h, w, c = x.shape
            x4 = ops.reshape(x, (-1, h, w, c))
            # A 1x1 pool with stride picks pixels 0, s, 2s, ... as PyTorch's does.
            x4 = ops.max_pool(x4, (1, 1), strides=(sh, sw), padding="valid")
            x = ops.reshape(x4, (-1, t) + tuple(x4.shape[1:]))
        extra = self.filters - x.shape[-1]
        if extra:
            x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, 0], [0, extra]])
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(
            _out_len(input_shape[i + 1], 1, self.strides[i], 0) for i in range(3)
        ) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "strides": self.strides})
        return config


def batch_norm(name):
    """BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.1 == Keras' 0.9)."""
    return keras.layers.BatchNormalization(axis=-1, momentum=0.9, epsilon=1e-5, name=name)
