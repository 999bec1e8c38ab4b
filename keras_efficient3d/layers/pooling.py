"""3D max and average pooling with PyTorch's padding semantics (separable, see
`keras_efficient3d.layers.taps.pool`)."""

import keras

from keras_efficient3d.layers import native, taps
from keras_efficient3d.layers._video import (
    PACKAGE,
    check_input,
    check_window,
    to_frames,
    to_video,
    triple,
)


class _Pool3D(keras.layers.Layer):
    def __init__(self, pool_size, strides=None, padding=0, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = triple(pool_size, "pool_size", minimum=1)
        self.strides = triple(strides if strides is not None else pool_size, "strides", minimum=1)
        self.padding = triple(padding, "padding", minimum=0)
        if any(2 * p > k for p, k in zip(self.padding, self.pool_size)):
            raise ValueError(
                "Padding must be at most half the pool size, as in PyTorch. Received: "
                f"pool_size={self.pool_size}, padding={self.padding}"
            )

    def build(self, input_shape):
        check_input(self, input_shape)
        check_window(self, input_shape, self.pool_size, self.padding)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(
            taps.out_len(input_shape[i + 1], self.pool_size[i], self.strides[i], self.padding[i])
            for i in range(3)
        ) + (input_shape[4],)

    def _pool(self, inputs, kind):
        if native.backend_pools(kind):
            return native.pool5d(inputs, kind, self.pool_size, self.strides, self.padding)
        x, t, batch = to_frames(inputs)
        y, t_out = taps.pool(x, t, batch, kind, self.pool_size, self.strides, self.padding)
        return to_video(y, t_out)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"pool_size": self.pool_size, "strides": self.strides, "padding": self.padding}
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaxPool3D(_Pool3D):
    """``torch.nn.MaxPool3d(kernel, stride, padding)``: padded cells never win."""

    def call(self, inputs):
        return self._pool(inputs, "max")


@keras.saving.register_keras_serializable(package=PACKAGE)
class AvgPool3D(_Pool3D):
    """``torch.nn.AvgPool3d(kernel, stride, padding)``: padded zeros count in the mean."""

    def call(self, inputs):
        return self._pool(inputs, "avg")
