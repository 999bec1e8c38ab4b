"""Argument handling and heads shared by every architecture builder."""

import os
import types

import keras

from keras_efficient3d.layers import Conv3D, batch_norm

DEFAULT_INPUT_SHAPE = (16, 112, 112, 3)


def validate_common(include_top, weights, pooling, num_classes, dropout):
    if not isinstance(include_top, bool):
        raise ValueError(f"`include_top` must be True or False. Received: include_top={include_top}")
    if weights is not None and not (isinstance(weights, (str, os.PathLike)) and os.path.exists(weights)):
        raise ValueError(
            "`weights` must be None (random initialization) or the path to an existing "
            f"weights file (.weights.h5 or .keras). Received: weights={weights}"
        )
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be None, 'avg' or 'max'. Received: pooling={pooling}")
    if include_top and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(
            f"`num_classes` must be a positive integer. Received: num_classes={num_classes}"
        )
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout}")


def video_input(input_shape, input_tensor, min_frames=1, min_size=16):
    """Returns (inputs, x) for a channels-last video input of static shape."""
    if input_tensor is not None:
        shape = tuple(input_tensor.shape[1:])
    else:
        shape = tuple(input_shape) if input_shape is not None else DEFAULT_INPUT_SHAPE
    if len(shape) != 4 or any(s is None for s in shape):
        raise ValueError(
            "`input_shape` must be a fully defined (frames, height, width, channels) tuple. "
            f"Received: input_shape={shape}"
        )
    frames, height, width, channels = (int(s) for s in shape)
    if channels != 3:
        raise ValueError(f"Models take RGB clips (3 channels). Received: input_shape={shape}")
    if frames < min_frames or height < min_size or width < min_size:
        raise ValueError(
            f"This model needs at least {min_frames} frames of {min_size}x{min_size} pixels. "
            f"Received: input_shape={shape}"
        )
    if input_tensor is None:
        inputs = keras.Input(shape=(frames, height, width, channels), name="input")
        return inputs, inputs
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor, input_tensor
    inputs = keras.Input(tensor=input_tensor, shape=shape, name="input")
    return inputs, inputs


def conv_bn(x, filters, kernel_size, strides, padding, name, activation="relu", groups=1,
            use_bias=False, bn_name=None, act_name=None):
    """Conv3D -> BatchNorm -> activation, each layer named after `name`."""
    x = Conv3D(filters, kernel_size, strides, padding, groups=groups, use_bias=use_bias,
               name=name)(x)
    x = batch_norm(bn_name or f"{name}_bn")(x)
    if activation is not None:
        x = keras.layers.Activation(activation, name=act_name or f"{name}_{activation}")(x)
    return x


def pooled_head(x, include_top, pooling, num_classes, dropout, classifier_activation):
    """Global average pool -> dropout -> Dense, the head of every efficient model.

    The original pools with ``avg_pool3d(x, x.size()[-3:])``, a global average."""
    if include_top:
        x = keras.layers.GlobalAveragePooling3D(name="avg_pool")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="dropout")(x)
        return keras.layers.Dense(num_classes, activation=classifier_activation,
                                  name="predictions")(x)
    return feature_pooling(x, pooling)


def feature_pooling(x, pooling):
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling3D(name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling3D(name="max_pool")(x)
    return x


def finish(inputs, input_tensor, outputs, name, weights):
    if input_tensor is not None and not keras.backend.is_keras_tensor(input_tensor):
        inputs = keras.utils.get_source_inputs(input_tensor)
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        model.load_weights(weights)
    return with_preset_methods(model)


def _save_to_preset(model, preset_dir, metadata=None):
    from keras_efficient3d import presets

    return presets.save_to_preset(model, preset_dir, metadata)


def with_preset_methods(model):
    """Gives `model` keras-hub's ``model.save_to_preset(preset_dir, metadata=None)``
    (`keras_efficient3d.presets.save_to_preset`); the models are plain functional models,
    so the method is set on the instance (outside Keras' attribute tracking)."""
    object.__setattr__(model, "save_to_preset", types.MethodType(_save_to_preset, model))
    return model
