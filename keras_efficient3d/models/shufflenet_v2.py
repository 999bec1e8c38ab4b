"""3D ShuffleNetV2 (Ma et al. 2018), as 3D-fied by Kopuklu et al. 2019.

Units split the channels (stride 1) or duplicate the input into two branches (stride 2),
concatenate, then shuffle with two groups.
"""

import keras

from keras_efficient3d.layers import ChannelShuffle, ChannelSplit, Conv3D, DepthwiseConv3D, MaxPool3D, batch_norm
from keras_efficient3d.models import _base, _family

# Stage output channels per width: stem, three stages, last conv.
STAGE_CHANNELS = {
    0.25: (24, 32, 64, 128, 1024),
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 224, 488, 976, 2048),
}
STAGE_REPEATS = (4, 8, 4)
WIDTHS = (0.25, 1.0, 1.5, 2.0)  # the widths of the paper's Table 8


def _dw_pw(x, filters, stride, prefix):
    """Depthwise 3x3x3 + BN, then 1x1x1 + BN + ReLU (branch 1 of a downsampling unit)."""
    x = DepthwiseConv3D(3, stride, 1, name=f"{prefix}_dw")(x)
    x = batch_norm(f"{prefix}_dw_bn")(x)
    x = Conv3D(filters, 1, name=f"{prefix}_pw")(x)
    x = batch_norm(f"{prefix}_pw_bn")(x)
    return keras.layers.ReLU(name=f"{prefix}_relu")(x)


def _pw_dw_pw(x, filters, stride, prefix):
    """1x1x1 + BN + ReLU, depthwise 3x3x3 + BN, 1x1x1 + BN + ReLU (branch 2)."""
    x = Conv3D(filters, 1, name=f"{prefix}_pw1")(x)
    x = batch_norm(f"{prefix}_pw1_bn")(x)
    x = keras.layers.ReLU(name=f"{prefix}_pw1_relu")(x)
    return _dw_pw(x, filters, stride, prefix)


def _unit(x, out_channels, stride, prefix):
    half = out_channels // 2
    if stride == 1:
        left, right = ChannelSplit(name=f"{prefix}_split")(x)
        x = keras.layers.Concatenate(name=f"{prefix}_concat")(
            [left, _pw_dw_pw(right, half, 1, f"{prefix}_branch2")])
    else:
        x = keras.layers.Concatenate(name=f"{prefix}_concat")(
            [_dw_pw(x, half, stride, f"{prefix}_branch1"),
             _pw_dw_pw(x, half, stride, f"{prefix}_branch2")])
    return ChannelShuffle(2, name=f"{prefix}_shuffle")(x)


def ShuffleNetV2_3D(
    width_mult=1.0,
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
    """Builds a 3D ShuffleNetV2.

    Args:
        width_mult: one of 0.25, 0.5, 1.0, 1.5, 2.0 (the original's fixed channel tables).
        include_top, weights, input_tensor, input_shape, pooling, num_classes, dropout,
        classifier_activation, name: as in `MobileNetV1_3D`.

    Returns:
        A `keras.Model`.
    """
    num_classes = _base.validate_common(include_top, weights, pooling, num_classes, dropout)
    if not _base.is_number(width_mult) or width_mult not in STAGE_CHANNELS:
        raise ValueError(
            f"`width_mult` must be one of {sorted(STAGE_CHANNELS)}. Received: width_mult={width_mult!r}"
        )
    width_mult = float(width_mult)  # 1 and 1.0 name the same model
    channels = STAGE_CHANNELS[width_mult]
    inputs, x = _base.video_input(input_shape, input_tensor)

    x = _base.conv_bn(x, channels[0], 3, (1, 2, 2), 1, name="conv1", bn_name="conv1_bn",
                      act_name="conv1_relu")
    x = MaxPool3D(3, 2, 1, name="pool1")(x)
    block_id = 0
    for stage, repeats in enumerate(STAGE_REPEATS, start=1):
        for i in range(repeats):
            x = _unit(x, channels[stage], 2 if i == 0 else 1, f"block_{block_id}")
            block_id += 1
    x = _base.conv_bn(x, channels[-1], 1, 1, 0, name="conv_last", bn_name="conv_last_bn",
                      act_name="out_relu")
    outputs = _base.pooled_head(x, include_top, pooling, num_classes, dropout, classifier_activation)
    return _base.finish(inputs, input_tensor, outputs, name or f"shufflenetv2_3d_{width_mult}x", weights)


def _width_from_shapes(state_dict):
    if "conv1.0.weight" not in state_dict:
        return None
    # Every width has a 24-channel stem: the width shows in the first unit's branches.
    branch = state_dict.get("features.0.banch2.0.weight")
    for width, channels in STAGE_CHANNELS.items():
        if branch is not None and channels[1] // 2 == branch.shape[0]:
            return width
    raise ValueError("Cannot infer the width from the tensor shapes; pass --width_mult.")


def _infer_config(state_dict, file_name, fixed):
    return _family.infer_width(file_name, fixed, lambda: _width_from_shapes(state_dict))


FAMILY = _family.Family(
    name="shufflenetv2",
    builder=ShuffleNetV2_3D,
    depthwise=True,
    paper_rows={"shufflenetv2": ("shufflenetv2", {}, "")},
    key_rules=(
        (r"conv1", "conv1.0"),
        (r"conv1_bn", "conv1.1"),
        (r"block_(\d+)_branch1_dw", r"features.\1.banch1.0"),
        (r"block_(\d+)_branch1_dw_bn", r"features.\1.banch1.1"),
        (r"block_(\d+)_branch1_pw", r"features.\1.banch1.2"),
        (r"block_(\d+)_branch1_pw_bn", r"features.\1.banch1.3"),
        (r"block_(\d+)_branch2_pw1", r"features.\1.banch2.0"),
        (r"block_(\d+)_branch2_pw1_bn", r"features.\1.banch2.1"),
        (r"block_(\d+)_branch2_dw", r"features.\1.banch2.3"),
        (r"block_(\d+)_branch2_dw_bn", r"features.\1.banch2.4"),
        (r"block_(\d+)_branch2_pw", r"features.\1.banch2.5"),
        (r"block_(\d+)_branch2_pw_bn", r"features.\1.banch2.6"),
        (r"conv_last", "conv_last.0"),
        (r"conv_last_bn", "conv_last.1"),
        (r"predictions", "classifier.1"),
    ),
    infer_config=_infer_config,
    int_kernel_pools=True,
)
