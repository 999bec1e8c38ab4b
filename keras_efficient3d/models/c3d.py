"""C3D with BatchNorm (Tran et al. 2015), the heavy baseline of Kopuklu et al. 2019."""

import math

import keras

from keras_efficient3d.layers import MaxPool3D
from keras_efficient3d.models import _base, _family

# (conv names, channels, pool kernel, pool stride, pool padding) per group.
_GROUPS = (
    (("conv1",), 64, (2, 2, 2), (1, 2, 2), 0),
    (("conv2",), 128, (2, 2, 2), (2, 2, 2), 0),
    (("conv3a", "conv3b"), 256, (2, 2, 2), (2, 2, 2), 0),
    (("conv4a", "conv4b"), 512, (2, 2, 2), (2, 2, 2), 0),
    (("conv5a", "conv5b"), 512, (1, 2, 2), (2, 2, 2), (0, 1, 1)),
)


def _cells(n, axis):
    """What the pools leave of `n` cells along `axis` (0 frames, 1 height, 2 width)."""
    for _, _, pool, stride, padding in _GROUPS:
        pad = padding if isinstance(padding, int) else padding[axis]
        n = (n + 2 * pad - pool[axis]) // stride[axis] + 1
    return n


def C3D(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
        num_classes=600, dropout=0.5, classifier_activation=None, name=None):
    """Builds C3D with BatchNorm after every conv and two 4096-unit fully connected layers.

    The flattened features are ordered (channels, frames, height, width) as in PyTorch, so
    that converted checkpoints keep their fc6 weights. Other arguments as in
    `MobileNetV1_3D`.
    """
    num_classes = _base.validate_common(include_top, weights, pooling, num_classes, dropout)
    inputs, x = _base.video_input(input_shape, input_tensor, min_frames=16, min_size=32)
    for index, (convs, channels, pool, stride, padding) in enumerate(_GROUPS, start=1):
        for conv in convs:
            x = _base.conv_bn(x, channels, 3, 1, 1, name=conv, use_bias=True,
                              bn_name=f"{conv}_bn", act_name=f"{conv}_relu")
        x = MaxPool3D(pool, stride, padding, name=f"pool{index}")(x)
    if not include_top:
        return _base.finish(inputs, input_tensor, _base.feature_pooling(x, pooling), name or "c3d", weights)
    expected = (math.floor(inputs.shape[1] / 16), math.ceil(inputs.shape[2] / 32),
                math.ceil(inputs.shape[3] / 32))
    if tuple(x.shape[1:4]) != expected:
        if x.shape[1] != expected[0]:
            fits = [n for n in range(16, 65) if _cells(n, 0) == n // 16]
            which = "frames"
        else:
            fits = [n for n in range(32, 257, 16) if _cells(n, 1) == math.ceil(n / 32)]
            which = "height and width (not a multiple of 32)"
        raise ValueError(
            f"The original C3D head expects {expected} cells but this input leaves "
            f"{tuple(x.shape[1:4])}: its {which} must fit the head, e.g. "
            f"{', '.join(map(str, fits[:6]))} (the paper's: 16 frames of 112x112), or build it "
            f"with include_top=False. Received: input_shape={tuple(inputs.shape[1:])}"
        )
    x = keras.layers.Permute((4, 1, 2, 3), name="to_channels_first")(x)
    x = keras.layers.Flatten(data_format="channels_last", name="flatten")(x)
    for fc in ("fc6", "fc7"):
        x = keras.layers.Dense(4096, activation="relu", name=fc)(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{fc}_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation=classifier_activation, name="predictions")(x)
    return _base.finish(inputs, input_tensor, outputs, name or "c3d", weights)


FAMILY = _family.Family(
    name="c3d",
    builder=C3D,
    key_rules=(
        (r"conv(\d)", r"group\1.0"),
        (r"conv(\d)_bn", r"group\1.1"),
        (r"conv(\d)a", r"group\1.0"),
        (r"conv(\d)a_bn", r"group\1.1"),
        (r"conv(\d)b", r"group\1.3"),
        (r"conv(\d)b_bn", r"group\1.4"),
        (r"fc6", "fc1.0"),
        (r"fc7", "fc2.0"),
        (r"predictions", "fc.0"),
    ),
    classifier_key="fc.0.weight",
    small_input=(16, 112, 112, 3),
)
