"""3D convolutions with PyTorch semantics (symmetric explicit padding, groups), computed
in the form `keras_efficient3d.layers.forms` chooses: natively (one Conv3D / grouped
Conv2D) or as 2D convolutions over temporal taps."""

import keras
from keras import ops

from keras_efficient3d.layers import forms, native, taps
from keras_efficient3d.layers._video import (
    PACKAGE,
    check_input,
    check_window,
    to_frames,
    to_video,
    triple,
    whole,
)


def check_taps(layer, input_shape):
    """Refuses a convolution none of whose temporal taps meets a frame of the clip (padding
    at least the kernel, at a stride that steps over the frames): every output would be
    padding alone."""
    t = input_shape[1]
    kt, st, pt = layer.kernel_size[0], layer.strides[0], layer.padding[0]
    if t is not None and t + 2 * pt >= kt and not taps.live_taps(t, kt, st, pt):
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}': no temporal tap of a kernel of {kt} "
            f"frames at stride {st} with padding {pt} meets one of the {t} input frames; "
            f"every output would be padding. Received: input_shape={tuple(input_shape)}")


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
        self.kernel_size = triple(kernel_size, "kernel_size")
        self.strides = triple(strides, "strides")
        self.padding = triple(padding, "padding")
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

    def _check_fits(self, input_shape):
        check_input(self, input_shape)
        check_window(self, input_shape, self.kernel_size, self.padding)
        check_taps(self, input_shape)

    def _output_shape(self, input_shape, channels):
        kt, kh, kw = self.kernel_size
        st, sh, sw = self.strides
        pt, ph, pw = self.padding
        return (
            input_shape[0],
            taps.out_len(input_shape[1], kt, st, pt),
            taps.out_len(input_shape[2], kh, sh, ph),
            taps.out_len(input_shape[3], kw, sw, pw),
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
        """The activation on the convolution's output (its bias added), where TensorFlow's
        graph optimizer fuses conv + bias + activation (the folded inference form), then
        video: `y` is (B * t_out, H, W, C), or already 5D when `t_out` is None."""
        y = self.activation(y)
        return y if t_out is None else to_video(y, t_out)

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



@keras.saving.register_keras_serializable(package=PACKAGE)
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
        self.filters = whole(filters, "filters")
        self.groups = whole(groups, "groups")
        if self.filters % self.groups:
            raise ValueError(
                "`filters` must be a positive multiple of `groups`. "
                f"Received: filters={filters}, groups={groups}"
            )

    def build(self, input_shape):
        self._check_fits(input_shape)
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
        if native.backend_takes(self.kernel_size, self.groups, inputs.shape[-1]):
            return self._finish(native.conv5d(inputs, self.kernel, self.bias, self.strides,
                                              self.padding, self.groups), None)
        form = forms.current(bool(training))
        if form.native and self.groups == 1 and self._whole_kernel_live(inputs.shape[1]):
            y = native.conv3d(inputs, self.kernel, self.strides, self.padding, training)
            if self.bias is not None:
                y = taps.bias_add(y, self.bias)
            return self._finish(y, None)
        x, t, batch = to_frames(inputs)
        split = self.groups > 1 and not form.native
        cout = self.filters // self.groups

        def kernel(g, live):
            k = self.kernel if g is None or not split else self.kernel[..., g * cout:(g + 1) * cout]
            return k[live[0]] if len(live) == 1 else ops.concatenate([k[i] for i in live], axis=2)

        def bias(g):
            return self.bias if g is None or not split else self.bias[g * cout:(g + 1) * cout]

        parts, t_out = taps.convolution(
            x, t, batch, kernel, self.kernel_size, self.strides, self.padding, self.groups,
            split_groups=split, bias=None if self.bias is None else bias)
        return self._finish(parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1),
                            t_out)

    def _whole_kernel_live(self, t):
        """A 3D kernel (not 1x1x1) all of whose temporal taps meet real frames: one Conv3D
        then wastes nothing (the 2D form drops the taps that read only padding)."""
        kt = self.kernel_size[0]
        return (self.kernel_size != (1, 1, 1)
                and len(taps.live_taps(t, kt, self.strides[0], self.padding[0])) == kt)

    def compute_output_shape(self, input_shape):
        return self._output_shape(input_shape, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "groups": self.groups})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class DepthwiseConv3D(_Conv3DBase):
    """Depthwise 3D convolution (PyTorch ``Conv3d(C, C, k, groups=C)``).

    The kernel is stored as ``(kt, kh, kw, channels, 1)``, the 2D depthwise layout with a
    leading temporal axis; a PyTorch weight ``(C, 1, kt, kh, kw)`` maps to it by
    ``transpose(2, 3, 4, 0, 1)``.
    """

    def build(self, input_shape):
        self._check_fits(input_shape)
        channels = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.kernel_size + (channels, 1),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self._add_bias(channels)

    def call(self, inputs):
        if native.backend_takes():
            return self.activation(native.depthwise5d(inputs, self.kernel, self.bias,
                                                      self.strides, self.padding))
        x, t, batch = to_frames(inputs)
        # A kernel of several live temporal taps gets its bias on their sum, not on one tap:
        # TensorFlow's grappler remapper (with oneDNN) matches DepthwiseConv2dNative +
        # BiasAdd + Add (+ an activation): a tap's biased output summed last. It builds a
        # fused node without an op for it (it only knows Conv2D/Conv3D there), and the whole
        # function then runs unoptimized: no convolution of the model keeps its fused
        # bias and activation (MobileNetV1's folded form 6-18% slower).
        on_sum = self.bias is not None and len(taps.live_taps(
            t, self.kernel_size[0], self.strides[0], self.padding[0])) > 1
        y, t_out = taps.depthwise(x, t, batch, lambda i: self.kernel[i],
                                  None if on_sum else self.bias,
                                  self.kernel_size, self.strides, self.padding)
        if on_sum:
            y = taps.bias_add(y, self.bias)
        return to_video(self.activation(y), t_out)

    def compute_output_shape(self, input_shape):
        return self._output_shape(input_shape, input_shape[-1])


