"""What the Keras layers share: argument checks and the 5-D <-> frames-tensor views."""

import keras
import numpy as np
from keras import ops

PACKAGE = "keras_efficient3d"  # serialization package of every layer: saved files load


def whole(value, name, minimum=1):
    """`value` as a Python int of at least `minimum`; one `ValueError` naming the argument
    otherwise (`int()` would truncate 4.7 filters to 4 without a word)."""
    if isinstance(value, (bool, str)) or not isinstance(
            value, (int, float, np.integer, np.floating)) or not float(value).is_integer() \
            or value < minimum:
        raise ValueError(f"`{name}` must be an integer of at least {minimum}. "
                         f"Received: {name}={value!r}")
    return int(value)


def triple(value, name, minimum=None):
    """`value` (an int, or 3 ints: time, height, width) as 3 Python ints, each at least
    `minimum` where given; one `ValueError` naming the argument otherwise. Padding is
    PyTorch's explicit padding: numbers, not Keras' "same"/"valid"."""
    def whole(v):
        if isinstance(v, (bool, str)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not float(v).is_integer():
            raise TypeError
        return int(v)

    try:
        values = (whole(value),) * 3 if np.ndim(value) == 0 else tuple(whole(v) for v in value)
    except (TypeError, ValueError, OverflowError):
        values = None
    padding = " (PyTorch's explicit padding, not 'same' or 'valid')" if name == "padding" else ""
    if values is None or len(values) != 3:
        raise ValueError(f"`{name}` must be an int or a tuple of 3 ints (time, height, width)"
                         f"{padding}. Received: {name}={value!r}")
    if minimum is not None and min(values) < minimum:
        raise ValueError(f"`{name}` must be at least {minimum} on each axis. "
                         f"Received: {name}={value!r}")
    return values


def check_window(layer, input_shape, size, padding):
    """Refuses a window (kernel or pool) that does not fit the padded input on some axis, as
    PyTorch does; backends would otherwise disagree (an empty tensor, a division by zero, a
    kernel error)."""
    for axis, label in enumerate(("frames", "height", "width")):
        n = input_shape[axis + 1]
        if n is not None and n + 2 * padding[axis] < size[axis]:
            raise ValueError(
                f"{type(layer).__name__} '{layer.name}': a window of {size[axis]} with padding "
                f"{padding[axis]} does not fit {n} {label}. Received: input_shape="
                f"{tuple(input_shape)}, size={tuple(size)}, padding={tuple(padding)}")


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
