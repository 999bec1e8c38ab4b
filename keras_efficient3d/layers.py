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

import threading
from typing import NamedTuple

import keras
from keras import ops

_PACKAGE = "keras_efficient3d"


def _bias_add(x, bias):
    """Adds a per-channel bias; on TensorFlow as a BiasAdd op, the form its graph optimizer
    fuses into the preceding convolution (with the activation after it)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        return tf.nn.bias_add(x, bias)
    return ops.add(x, bias)


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


def live_taps(t, kt, st, pt):
    """Temporal taps that read at least one real frame of a ``t``-frame clip; the others
    see only padding and add nothing (the last stages of a 16-frame clip have one frame)."""
    t_out = (t + 2 * pt - kt) // st + 1
    return [i for i in range(kt) if any(pt <= i + st * j < pt + t for j in range(t_out))]


def tap_windows(t, kt, st, pt):
    """Where each temporal tap reads, without padding the input.

    Tap ``i`` reads frames ``i - pt + st * j`` (``j < t_out``), that is frames ``offset + j``
    of the phase stream ``x[phase::st]``. Returns t_out and, per tap, None (a dead tap, see
    `live_taps`) or ``(phase, start, stop, lead, trail)``: the tap is the 2D operation on
    ``x[phase::st][start:stop]`` with ``lead`` zero frames before and ``trail`` after."""
    t_out = (t + 2 * pt - kt) // st + 1
    if t_out < 1:
        raise ValueError(f"A temporal kernel of {kt} with padding {pt} does not fit {t} frames.")
    live = live_taps(t, kt, st, pt)
    out = []
    for i in range(kt):
        if i not in live:
            out.append(None)
            continue
        phase, offset = (i - pt) % st, (i - pt) // st
        n = len(range(phase, t, st))
        start, stop = max(0, offset), min(n, offset + t_out)
        out.append((phase, start, stop, start - offset, offset + t_out - stop))
    return t_out, out


class DepthwiseTap(NamedTuple):
    """One live temporal tap of a depthwise 3D kernel (see `depthwise_plan`)."""

    index: int
    phase: int
    before: tuple | None  # (start, size): frames of the phase stream the 2D op reads
    after: tuple | None  # (start, size): frames of the 2D op's output that are kept
    lead: int
    trail: int


def depthwise_plan(t, kt, st, pt, spatial_stride):
    """How a depthwise 3D kernel is computed on a ``t``-frame clip without a padded copy:
    t_out and, for each live tap (`tap_windows`), the 2D depthwise op on the phase stream
    ``x[phase::st]``, with its frames selected on the input (``before``), or on the output
    when a spatial stride makes the output the smaller (``after``), then ``lead`` and
    ``trail`` zero frames; the taps' results are summed. The Keras layer and the deployment
    graph both follow it."""
    t_out, windows = tap_windows(t, kt, st, pt)
    plan = []
    for i, window in enumerate(windows):
        if window is None:
            continue
        phase, start, stop, lead, trail = window
        partial = (start, stop - start) if start or stop < len(range(phase, t, st)) else None
        plan.append(DepthwiseTap(i, phase, None if spatial_stride else partial,
                                 partial if spatial_stride else None, lead, trail))
    return t_out, plan


def bias_tap(t, kt, st, pt):
    """The first tap whose output covers every frame (it carries the bias), or None."""
    for i, w in enumerate(tap_windows(t, kt, st, pt)[1]):
        if w is not None and not (w[3] or w[4]):
            return i
    return None


def _same_padding(kernel_hw, strides_hw, padding_hw):
    """True when PyTorch's symmetric padding equals TensorFlow's SAME (stride 1, odd
    kernel, half padding): the convolution then pads internally, without a padded copy."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_hw, strides_hw, padding_hw
    return sh == sw == 1 and kh % 2 == kw % 2 == 1 and 2 * ph == kh - 1 and 2 * pw == kw - 1


def _to_frames(x):
    """(B, T, H, W, C) -> (B * T, H, W, C)."""
    return ops.reshape(x, (-1,) + tuple(x.shape[2:]))


def _to_video(x, t):
    """(B * T, H, W, C) -> (B, T, H, W, C)."""
    return ops.reshape(x, (-1, t) + tuple(x.shape[1:]))


def _pad_hw(x, ph, pw, value=0.0):
    """Spatial padding of a 4D (N, H, W, C) tensor."""
    if not (ph or pw):
        return x
    return ops.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]], constant_values=value)


def _pad_frames(x, lead, trail, value=0.0):
    """Adds frames before/after a 5D clip, padding a (B, T, H*W*C) view: a rank-3 pad is
    a plain block copy, cheaper than TensorFlow's general 5D pad."""
    if not (lead or trail):
        return x
    _, t, h, w, c = x.shape
    x3 = ops.pad(ops.reshape(x, (-1, t, h * w * c)), [[0, 0], [lead, trail], [0, 0]],
                 constant_values=value)
    return ops.reshape(x3, (-1, t + lead + trail, h, w, c))


def _frames(x, start, size):
    """Frames ``start:start + size`` of a 5D clip."""
    if start == 0 and size == x.shape[1]:
        return x
    if x.shape[0] == 1:
        # A slice of the leading axis of a (T, H, W, C) view shares the input's buffer in
        # TensorFlow; slicing axis 1 of the 5D tensor copies.
        x4 = ops.slice(_to_frames(x), (start, 0, 0, 0), (size,) + tuple(x.shape[2:]))
        return ops.reshape(x4, (1,) + tuple(x4.shape))
    return ops.slice(x, (0, start, 0, 0, 0), (-1, size) + tuple(x.shape[2:]))


def _phase(x, st, phase):
    """Frames ``phase, phase + st, ...`` of a 5D clip, through a (B, T / st, st, ...) view
    (``ops.slice`` and reshapes only: Python strided slices on the time axis broke
    TensorFlow's graph optimizer inside ``model.predict``)."""
    if st == 1:
        return x
    _, t, h, w, c = x.shape
    n = -(-t // st)
    x = _pad_frames(x, 0, n * st - t)
    x = ops.reshape(x, (-1, n, st, h * w * c))
    x = ops.slice(x, (0, 0, phase, 0), (-1, n, 1, h * w * c))
    x = ops.reshape(x, (-1, n, h, w, c))
    return _frames(x, 0, len(range(phase, t, st)))


def temporal_taps(x, kt, st, pt):
    """One 5D (B, t_out, H, W, C) tensor per temporal tap (None for the dead taps of
    `live_taps`), each holding the frames that tap meets, with zero frames where it
    reads outside the clip; and t_out. A ``kt``-tap temporal filter is the sum (or max)
    over taps of a 2D operation."""
    t_out, windows = tap_windows(x.shape[1], kt, st, pt)
    phases = {}
    taps = []
    for window in windows:
        if window is None:
            taps.append(None)
            continue
        phase, start, stop, lead, trail = window
        if phase not in phases:
            phases[phase] = _phase(x, st, phase)
        taps.append(_pad_frames(_frames(phases[phase], start, stop - start), lead, trail))
    return taps, t_out


_PORTABLE = threading.local()  # per thread: an export does not slow other threads down
_NATIVE = []  # the answer of `native_kernels`, once per process


class portable_ops:
    """Within this context the layers trace only the ops that every TensorFlow runtime and
    converter takes (2D kernels over temporal taps, grouped convolutions split per group):
    exports enter it.

        with layers.portable_ops():
            concrete = tf.function(model).get_concrete_function(spec)
    """

    def __enter__(self):
        _PORTABLE.depth = getattr(_PORTABLE, "depth", 0) + 1
        return self

    def __exit__(self, *exc):
        _PORTABLE.depth -= 1
        return False


def native_kernels():
    """Whether TensorFlow's own Conv3D and grouped Conv2D kernels are the fast path here.

    With oneDNN's CPU kernels (on by default with this package, see `keras_efficient3d`)
    a dense 3D convolution is 1.2-3.5x faster as one Conv3D than as 2D convolutions over its
    temporal taps (the 3-channel stems most), and a grouped convolution 1.2-1.6x faster as
    one grouped Conv2D than split per group; cuDNN takes both. TensorFlow's Eigen CPU
    kernels take them too but are slower than the 2D forms (grouped Conv2D 9x). Always
    False inside `portable_ops`."""
    if getattr(_PORTABLE, "depth", 0) or keras.backend.backend() != "tensorflow":
        return False
    if not _NATIVE:
        import tensorflow as tf

        try:
            from tensorflow.python.util import _pywrap_util_port
            onednn = bool(_pywrap_util_port.IsMklEnabled())
        except (ImportError, AttributeError):
            onednn = False
        _NATIVE.append(onednn or bool(tf.config.list_physical_devices("GPU")))
    return _NATIVE[0]


def _pad_5d(x, pads, fusable):
    """Zero padding of a 5D clip before a VALID Conv3D (which has no explicit padding).
    ``fusable``: as a Pad op, which TensorFlow fuses into the convolution; otherwise as
    concatenated zeros, for training graphs, where Grappler's remapper fails on the fused
    pattern's gradient (and then skips every other fusion of the graph)."""
    if not any(pads):
        return x
    if fusable:
        return ops.pad(x, [[0, 0]] + [[p, p] for p in pads] + [[0, 0]])
    for axis, p in enumerate(pads, start=1):
        if p:
            shape = [ops.shape(x)[0]] + [p if a == axis else x.shape[a] for a in range(1, 5)]
            zeros = ops.zeros(shape, dtype=x.dtype)
            x = ops.concatenate([zeros, x, zeros], axis=axis)
    return x


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

    def _finish(self, y, t_out):
        """Bias and activation on the convolution's output, where TensorFlow's graph
        optimizer fuses conv + bias + activation (the folded inference form), then video:
        `y` is (B * t_out, H, W, C), or already 5D when `t_out` is None."""
        if self.bias is not None:
            y = _bias_add(y, self.bias)
        y = self.activation(y)
        return y if t_out is None else _to_video(y, t_out)

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

    def call(self, inputs, training=None):
        native = native_kernels()
        if self.groups == 1 and native and self._whole_kernel_live(inputs.shape[1]):
            return self._finish(self._conv3d(inputs, training), None)
        if self.groups == 1 or native:
            y, t_out = self._convolve(inputs, self.kernel, self.groups)
            return self._finish(y, t_out)
        # One 2D convolution per group where the runtime has no fast grouped kernel: grouped
        # convolutions in Keras' TF backend go through XLA, slow on CPU and not exportable.
        _, t, h, w, channels = inputs.shape
        cin, cout = channels // self.groups, self.filters // self.groups
        parts = []
        for g in range(self.groups):
            xg = ops.slice(inputs, (0, 0, 0, 0, g * cin), (-1, t, h, w, cin))
            yg, t_out = self._convolve(xg, self.kernel[..., g * cout:(g + 1) * cout], 1)
            parts.append(yg)
        return self._finish(ops.concatenate(parts, axis=-1), t_out)

    def _whole_kernel_live(self, t):
        """A 3D kernel (not 1x1x1) all of whose temporal taps meet real frames: one Conv3D
        then wastes nothing (the 2D form drops the taps that read only padding)."""
        kt = self.kernel_size[0]
        return (self.kernel_size != (1, 1, 1)
                and len(live_taps(t, kt, self.strides[0], self.padding[0])) == kt)

    def _conv3d(self, inputs, training):
        """One TensorFlow Conv3D (see `native_kernels`), PyTorch's padding made explicit
        unless it equals SAME (stride 1, odd kernel, half padding, every axis)."""
        import tensorflow as tf

        same = all(s == 1 and k % 2 and 2 * p == k - 1
                   for k, s, p in zip(self.kernel_size, self.strides, self.padding))
        x = inputs if same else _pad_5d(inputs, self.padding, fusable=not training)
        return tf.nn.conv3d(x, self.kernel, (1,) + self.strides + (1,),
                            "SAME" if same else "VALID")

    def _convolve(self, inputs, kernel, groups):
        """The (B * t_out, H, W, filters) convolution of `inputs` by `kernel`, `groups`
        > 1 only where `native_kernels` says the runtime has a fast grouped kernel."""
        kt, kh, kw = self.kernel_size
        st, sh, sw = self.strides
        pt, ph, pw = self.padding
        same = _same_padding((kh, kw), (sh, sw), (ph, pw))
        taps, t_out = temporal_taps(inputs, kt, st, pt)
        live = [i for i, tap in enumerate(taps) if tap is not None]

        def conv2d(x5, k):
            x4 = _to_frames(x5)
            if not same:
                x4 = _pad_hw(x4, ph, pw)
            padding = "SAME" if same else "VALID"
            if groups == 1:
                return ops.conv(x4, k, strides=(sh, sw), padding=padding.lower())
            import tensorflow as tf  # Keras' ops.conv would route groups through XLA
            return tf.nn.conv2d(x4, k, strides=(1, sh, sw, 1), padding=padding)

        if len(live) == 1:
            return conv2d(taps[live[0]], kernel[live[0]]), t_out
        if groups == 1:
            # Temporal taps stacked as channels make one 2D convolution with a deeper
            # kernel: larger matrix products than a sum of kt convolutions, which matters
            # most for the 3-channel stem (1.7x faster measured).
            x5 = ops.concatenate([taps[i] for i in live], axis=-1)
            return conv2d(x5, ops.concatenate([kernel[i] for i in live], axis=2)), t_out
        # Stacking would interleave the groups' channels: sum one grouped conv per tap.
        y = None
        for i in live:
            yi = conv2d(taps[i], kernel[i])
            y = yi if y is None else ops.add(y, yi)
        return y, t_out

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
        # The sum of one depthwise 2D convolution per live temporal tap. Each tap reads the
        # clip (or its frames phase::st) in place, and the output frames that it does not
        # reach are zero frames padded onto its smaller output: no padded copy of the
        # input, the dominant cost of depthwise layers on CPU.
        kt, kh, kw = self.kernel_size
        st, sh, sw = self.strides
        pt, ph, pw = self.padding
        t = inputs.shape[1]
        same = _same_padding((kh, kw), (sh, sw), (ph, pw))
        t_out, plan = depthwise_plan(t, kt, st, pt, sh * sw > 1)
        with_bias = bias_tap(t, kt, st, pt) if self.bias is not None else None
        phases = {}
        y = None
        for tap in plan:
            if tap.phase not in phases:
                phases[tap.phase] = _phase(inputs, st, tap.phase)
            xi = phases[tap.phase]
            if tap.before:
                xi = _frames(xi, *tap.before)
            x4 = _to_frames(xi)
            if not same:
                x4 = _pad_hw(x4, ph, pw)
            yi = ops.depthwise_conv(x4, self.kernel[tap.index], strides=(sh, sw),
                                    padding="same" if same else "valid")
            if tap.index == with_bias:
                yi = _bias_add(yi, self.bias)
            yi = _to_video(yi, xi.shape[1])
            if tap.after:
                yi = _frames(yi, *tap.after)
            yi = _pad_frames(yi, tap.lead, tap.trail)
            y = yi if y is None else ops.add(y, yi)
        if self.bias is not None and with_bias is None:
            y = ops.add(y, self.bias)
        return self.activation(y)

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

    def _pool(self, inputs, pool, pad_value):
        """A separable 3D pool (max and mean over a box are both separable): a 2D pool of
        every frame, then a (kt, 1) pool over a (B, T, H*W, C) view."""
        kt, kh, kw = self.pool_size
        st, sh, sw = self.strides
        pt, ph, pw = self.padding
        x = inputs
        if kh > 1 or kw > 1 or sh > 1 or sw > 1:
            x4 = _pad_hw(_to_frames(x), ph, pw, pad_value)
            x = _to_video(pool(x4, (kh, kw), strides=(sh, sw), padding="valid"), x.shape[1])
        if kt > 1 or st > 1:
            x = _pad_frames(x, pt, pt, pad_value)
            _, t, h, w, c = x.shape
            x3 = pool(ops.reshape(x, (-1, t, h * w, c)), (kt, 1), strides=(st, 1),
                      padding="valid")
            x = ops.reshape(x3, (-1, x3.shape[1], h, w, c))
        return x

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
        return self._pool(inputs, ops.max_pool, float("-inf"))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AvgPool3D(_Pool3D):
    """``torch.nn.AvgPool3d(kernel, stride, padding)``: padded zeros count in the mean."""

    def call(self, inputs):
        return self._pool(inputs, ops.average_pool, 0.0)


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
            x = _phase(x, st, 0)
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


def _batch_norm_train(x, gamma, beta, epsilon):
    """Training-mode batch normalisation over all axes but the last, on TensorFlow, with a
    hand-written gradient; returns (y, batch mean, biased batch variance).

    Keras' layer leaves the gradient to autodiff through its moments (broadcasts, Tile,
    squared differences): at MobileNetV2 0.2x width BatchNorm was 43% of a training step.
    Here the backward pass is two channel reductions and one fused-form update of dx."""
    import tensorflow as tf

    channels = x.shape[-1]

    @tf.custom_gradient
    def normalize(x, gamma, beta):
        x2 = tf.reshape(x, [-1, channels])
        mean, variance = tf.nn.moments(x2, [0])
        inv = tf.math.rsqrt(variance + epsilon)
        scale = gamma * inv
        y = tf.reshape(x2 * scale + (beta - mean * scale), tf.shape(x))

        def grad(dy, _dmean, _dvariance):
            dy2 = tf.reshape(dy, [-1, channels])
            n = tf.cast(tf.shape(dy2)[0], dy2.dtype)
            dbeta = tf.reduce_sum(dy2, 0)
            # sum(dy * xhat) with xhat = (x - mean) * inv, without materialising xhat
            dgamma = (tf.reduce_sum(dy2 * x2, 0) - mean * dbeta) * inv
            # dx = scale * (dy - dbeta / n - xhat * dgamma / n), as dy * a - x * k + c
            k = scale * inv * dgamma / n
            dx = dy2 * scale - x2 * k + (k * mean - scale * dbeta / n)
            return tf.reshape(dx, tf.shape(x)), dgamma, dbeta

        return (y, mean, variance), grad

    return normalize(x, gamma, beta)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BatchNorm(keras.layers.BatchNormalization):
    """Keras' BatchNormalization (same weights, statistics and results) whose training
    step on TensorFlow takes `_batch_norm_train`'s cheaper gradient. Masks, renorm,
    synchronized statistics, other backends and inference take Keras' own path."""

    def _fast_path(self, inputs, training, mask):
        rank = len(inputs.shape)
        return (keras.backend.backend() == "tensorflow" and bool(training) and self.trainable
                and mask is None and not self.renorm and not self.synchronized
                and self.axis in (-1, rank - 1) and inputs.shape[-1] is not None)

    def call(self, inputs, training=None, mask=None):
        if not self._fast_path(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        x = ops.cast(inputs, "float32")  # as Keras does: statistics in float32
        gamma = ops.cast(self.gamma, "float32") if self.scale else ops.ones((channels,))
        beta = ops.cast(self.beta, "float32") if self.center else ops.zeros((channels,))
        y, mean, variance = _batch_norm_train(x, gamma, beta, self.epsilon)
        self.moving_mean.assign(
            self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return ops.cast(y, self.compute_dtype)


def batch_norm(name):
    """BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.1 == Keras' 0.9)."""
    return BatchNorm(axis=-1, momentum=0.9, epsilon=1e-5, name=name)
