"""The normalisation as a layer, so that a saved model can take raw RGB frames.

    from keras_efficient3d.preprocessing import with_preprocessing
    model = with_preprocessing(model, Normalization.preset("kinetics"))   # uint8 RGB in
"""

import keras
import numpy as np

__all__ = ["VideoPreprocessing", "with_preprocessing"]


@keras.saving.register_keras_serializable(package="keras_efficient3d")
class VideoPreprocessing(keras.layers.Layer):
    """Raw RGB frames (uint8 or 0-255 floats) -> the normalised input a model was trained
    on: optional RGB->BGR, scaling to the value range, mean subtraction, std division."""

    def __init__(self, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), value_range="0-255",
                 channel_order="RGB", **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]
        self.value_range = value_range
        self.channel_order = channel_order
        if value_range not in ("0-255", "0-1") or channel_order not in ("RGB", "BGR"):
            raise ValueError(
                "value_range must be '0-255' or '0-1' and channel_order 'RGB' or 'BGR'. "
                f"Received: value_range={value_range}, channel_order={channel_order}")

    def call(self, inputs):
        x = keras.ops.cast(inputs, "float32")
        if self.channel_order == "BGR":
            x = keras.ops.flip(x, axis=-1)
        scale = 1.0 if self.value_range == "0-255" else 1.0 / 255.0
        # As backend tensors: a torch tensor minus a numpy array is numpy's subtraction of
        # the tensor's values, which a TorchScript trace records as a constant (the traced
        # model then gave one output for every clip).
        mean = keras.ops.convert_to_tensor(np.asarray(self.mean, np.float32))
        inv_std = keras.ops.convert_to_tensor(1.0 / np.asarray(self.std, np.float32))
        return keras.ops.multiply(keras.ops.subtract(x * scale, mean), inv_std)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mean": self.mean, "std": self.std, "value_range": self.value_range,
                       "channel_order": self.channel_order})
        return config


def with_preprocessing(model, normalization):
    """Prepends `VideoPreprocessing` so that `model` takes raw RGB frames; the result is a
    `VideoModel`, as the builders' models are. `normalization`: a `Normalization`, a preset
    name ('kinetics') or its config."""
    from keras_efficient3d.data.normalization import Normalization
    from keras_efficient3d.models._base import VideoModel

    normalization = Normalization.coerce(normalization)

    inputs = keras.Input(shape=model.input_shape[1:], name="frames")
    x = VideoPreprocessing(**normalization.to_config(), name="preprocessing")(inputs)
    return VideoModel(inputs, model(x), name=model.name)
