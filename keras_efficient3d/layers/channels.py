"""Channel operations of ShuffleNet and ResNet's shortcut A, on 5-D clips."""

import keras

from keras_efficient3d.layers import taps
from keras_efficient3d.layers._video import (
    PACKAGE,
    check_input,
    to_frames,
    to_video,
    triple,
    whole,
)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet's channel shuffle: channel ``g * (C // groups) + j`` moves to
    ``j * groups + g``, exactly as the PyTorch view-permute-view on NCDHW."""

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        self.groups = whole(groups, "groups")

    def build(self, input_shape):
        check_input(self, input_shape)
        if input_shape[-1] % self.groups:
            raise ValueError(
                f"Channels ({input_shape[-1]}) of '{self.name}' must be divisible by groups. "
                f"Received: groups={self.groups}"
            )

    def call(self, inputs):
        x, t, batch = to_frames(inputs)
        return to_video(taps.shuffle(x, t, batch, self.groups), t)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["groups"] = self.groups
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelSplit(keras.layers.Layer):
    """Splits the channels into two halves (ShuffleNetV2's stride-1 unit); the first half
    gets ``C // 2`` channels, as ``x[:, :C//2]`` does in PyTorch."""

    def build(self, input_shape):
        check_input(self, input_shape)

    def call(self, inputs):
        x, t, _ = to_frames(inputs)
        first, second = taps.split(x)
        return to_video(first, t), to_video(second, t)

    def compute_output_shape(self, input_shape):
        c = input_shape[-1]
        return (tuple(input_shape[:-1]) + (c // 2,), tuple(input_shape[:-1]) + (c - c // 2,))


@keras.saving.register_keras_serializable(package=PACKAGE)
class ZeroPadChannels(keras.layers.Layer):
    """ResNet shortcut A: ``avg_pool3d(kernel 1, stride)`` (a strided subsample) followed
    by zero channels up to ``filters``."""

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = whole(filters, "filters")
        self.strides = triple(strides, "strides", minimum=1)

    def build(self, input_shape):
        check_input(self, input_shape)
        if input_shape[-1] > self.filters:
            raise ValueError(
                f"'{self.name}' cannot pad {input_shape[-1]} channels down to "
                f"{self.filters}. Received: filters={self.filters}"
            )

    def call(self, inputs):
        x, t, batch = to_frames(inputs)
        return to_video(*taps.zero_pad_channels(x, t, batch, self.filters, self.strides))

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(
            taps.out_len(input_shape[i + 1], 1, self.strides[i], 0) for i in range(3)
        ) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "strides": self.strides})
        return config
