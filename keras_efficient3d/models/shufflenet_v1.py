"""3D ShuffleNetV1 (Zhang et al. 2018), as 3D-fied by Kopuklu et al. 2019.

Bottlenecks of grouped 1x1x1 convs around a depthwise 3x3x3, with a channel shuffle after
the first; downsampling units concatenate an average-pooled shortcut.
"""

import keras

from keras_efficient3d.layers import AvgPool3D, ChannelShuffle, Conv3D, DepthwiseConv3D, MaxPool3D, batch_norm
from keras_efficient3d.models import _base, _family

# Stage output channels per group count; index 0 is the stem.
STAGE_CHANNELS = {
    1: (24, 144, 288, 567),
    2: (24, 200, 400, 800),
    3: (24, 240, 480, 960),
    4: (24, 272, 544, 1088),
    8: (24, 384, 768, 1536),
}
STAGE_REPEATS = (4, 8, 4)
WIDTHS = (0.5, 1.0, 1.5, 2.0)  # the widths of the paper, all with groups=3


def _bottleneck(x, out_channels, stride, groups, prefix):
    in_channels = x.shape[-1]
    mid = out_channels // 4
    if stride == 2:
        out_channels -= in_channels
    # The original leaves the very first 1x1x1 conv ungrouped only when it sees exactly 24
    # input channels (the stem at width 1.0); kept as is so that checkpoints load.
    first_groups = 1 if in_channels == 24 else groups
    shortcut = x
    x = Conv3D(mid, 1, groups=first_groups, name=f"{prefix}_conv1")(x)
    x = batch_norm(f"{prefix}_bn1")(x)
    x = keras.layers.ReLU(name=f"{prefix}_relu1")(x)
    x = ChannelShuffle(groups, name=f"{prefix}_shuffle")(x)
    x = DepthwiseConv3D(3, stride, 1, name=f"{prefix}_conv2")(x)
    x = batch_norm(f"{prefix}_bn2")(x)
    x = Conv3D(out_channels, 1, groups=groups, name=f"{prefix}_conv3")(x)
    x = batch_norm(f"{prefix}_bn3")(x)
    if stride == 2:
        shortcut = AvgPool3D((2, 3, 3), 2, (0, 1, 1), name=f"{prefix}_shortcut")(shortcut)
        x = keras.layers.Concatenate(name=f"{prefix}_concat")([x, shortcut])
    else:
        x = keras.layers.Add(name=f"{prefix}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_out")(x)


def _check_channels(channels, width_mult, groups):
    """Raises the builder's ValueError for a width whose channels a grouped 1x1x1 convolution
    cannot split into `groups` (the layer's own error would name a block, not the width),
    following each unit's channels as `_bottleneck` computes them."""
    def refuse(stage, what, count):
        raise ValueError(
            f"width_mult={width_mult} with groups={groups} gives stage {stage} {what} of {count} "
            f"channels, not divisible into {groups} groups. Received: width_mult={width_mult}, "
            f"groups={groups}")

    if channels[0] < 1:  # the stem, int(24 * width_mult)
        raise ValueError(f"width_mult={width_mult} gives the stem {channels[0]} channels: too "
                         f"small for any channel. Received: width_mult={width_mult}")
    in_channels = channels[0]
    for stage, repeats in enumerate(STAGE_REPEATS, start=1):
        mid = channels[stage] // 4
        if mid < groups or mid % groups:
            refuse(stage, "a bottleneck", mid)
        for i in range(repeats):
            if in_channels != 24 and in_channels % groups:
                refuse(stage, "an input", in_channels)
            out_channels = channels[stage] - (in_channels if i == 0 else 0)
            if out_channels < groups or out_channels % groups:
                refuse(stage, "a grouped branch", out_channels)
            in_channels = channels[stage]


def _check_frames(frames, shape):
    # Downsampling units concatenate a depthwise branch (kernel 3, padding 1) with an
    # average-pooled shortcut (kernel 2, no temporal padding): their lengths agree only for
    # an even number of frames of at least 2 at every stage, e.g. 16 or 32 input frames.
    t = (frames - 1) // 2 + 1
    for _ in STAGE_REPEATS:
        if t < 2 or t % 2:
            raise ValueError(
                "ShuffleNetV1's downsampling units need an even number of frames (>= 2) at "
                "every stage, as in the original: use 16 or 32 frames. "
                f"Received: input_shape={tuple(shape)}"
            )
        t //= 2


def ShuffleNetV1_3D(
    width_mult=1.0,
    groups=3,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    num_classes=600,
    dropout=0.2,
    classifier_activation=None,
    name=None,
):
    """Builds a 3D ShuffleNetV1.

    Args:
        width_mult: channel multiplier (``int(c * width_mult)``, stem included); the paper
            uses 0.5, 1.0, 1.5 and 2.0 with 3 groups.
        groups: groups of the 1x1x1 convolutions: 1, 2, 3, 4 or 8.
        include_top, weights, input_tensor, input_shape, pooling, num_classes, dropout,
        classifier_activation, name: as in `MobileNetV1_3D`.

    Returns:
        A `keras.Model`.
    """
    num_classes = _base.validate_common(include_top, weights, pooling, num_classes, dropout)
    if not _base.is_integer(groups) or groups not in STAGE_CHANNELS:
        raise ValueError(f"`groups` must be one of {sorted(STAGE_CHANNELS)}. Received: groups={groups!r}")
    groups = int(groups)  # a NumPy integer would not serialize into the config
    width_mult = _base.check_width(width_mult)
    channels = [int(c * width_mult) for c in STAGE_CHANNELS[groups]]
    _check_channels(channels, width_mult, groups)
    inputs, x = _base.video_input(input_shape, input_tensor)
    _check_frames(inputs.shape[1], inputs.shape[1:])

    x = _base.conv_bn(x, channels[0], 3, (1, 2, 2), 1, name="conv1", bn_name="conv1_bn",
                      act_name="conv1_relu")
    x = MaxPool3D(3, 2, 1, name="pool1")(x)
    for stage, repeats in enumerate(STAGE_REPEATS, start=1):
        for i in range(repeats):
            x = _bottleneck(x, channels[stage], 2 if i == 0 else 1, groups, f"stage{stage}_block{i}")
    outputs = _base.pooled_head(x, include_top, pooling, num_classes, dropout, classifier_activation)
    return _base.finish(inputs, input_tensor, outputs,
                        name or f"shufflenetv1_3d_{width_mult}x_g{groups}", weights)


def _infer_config(state_dict, file_name, fixed):
    kwargs, notes = _family.infer_width(
        file_name, fixed,
        lambda: _family.width_from_stem(state_dict, "conv1.0.weight", STAGE_CHANNELS[3][0]))
    conv2, conv3 = state_dict.get("layer1.0.conv2.weight"), state_dict.get("layer1.0.conv3.weight")
    if "groups" not in fixed and conv2 is not None and conv3 is not None:
        kwargs["groups"] = int(conv2.shape[0] // conv3.shape[1])
        notes.append(f"groups {kwargs['groups']} (from layer1.0.conv3)")
    return kwargs, notes


FAMILY = _family.Family(
    name="shufflenetv1",
    builder=ShuffleNetV1_3D,
    depthwise=True,
    aliases=("shufflenet",),
    paper_rows={"shufflenet": ("shufflenetv1", {}, "groups=3")},
    key_rules=(
        (r"conv1", "conv1.0"),
        (r"conv1_bn", "conv1.1"),
        (r"stage(\d)_block(\d+)_(conv|bn)(\d)", r"layer\1.\2.\3\4"),
        (r"predictions", "classifier.1"),
    ),
    infer_config=_infer_config,
    int_kernel_pools=True,
    small_input=(16, 32, 32, 3),
)
