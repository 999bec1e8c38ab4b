"""What the Keras layers share: argument checks and the 5-D <-> frames-tensor views."""

import keras
from keras import ops

PACKAGE = "keras_efficient3d"  # serialization package of every layer: saved files load


def triple(value, name):
    if isinstance(value, int):
        return (value, value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise ValueError(
            f"`{name}` must be an int or a tuple of 3 ints (time, height, width). "
            f"Received: {name}={value}"
        )
    return value


def check_input(layer, input_shape):
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


def reshape(x, shape):
    """`ops.reshape`; on PyTorch the tensor's own ``reshape``: keras.ops checks every call
    for symbolic tensors through torch's pytree (~25 us), and the layers reshape ~170
    times in one eager ShuffleNetV2 forward pass."""
    if keras.backend.backend() == "torch":
        return x.reshape(shape)
    return ops.reshape(x, shape)


def to_frames(x):
    """(B, T, H, W, C) -> the frames tensor (B * T, H, W, C), its frames and static batch
    (a metadata-only reshape)."""
    return reshape(x, (-1,) + tuple(x.shape[2:])), x.shape[1], x.shape[0]


def to_video(x, t):
    """(B * T, H, W, C) -> (B, T, H, W, C)."""
    return reshape(x, (-1, t) + tuple(x.shape[1:]))
