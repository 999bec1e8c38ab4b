"""3D MobileNetV2 (Sandler et al. 2018), as 3D-fied by Kopuklu et al. 2019.

Inverted residual blocks (1x1x1 expand, depthwise 3x3x3, linear 1x1x1 project) with ReLU6.
"""

import re

import keras

from keras_efficient3d.layers import Conv3D, DepthwiseConv3D, batch_norm
from keras_efficient3d.models import _base, _family

# (expansion t, output channels c, repeats n, stride s of the first block).
BLOCK_SPECS = (
    (1, 16, 1, (1, 1, 1)),
    (6, 24, 2, (2, 2, 2)),
    (6, 32, 3, (2, 2, 2)),
    (6, 64, 4, (2, 2, 2)),
    (6, 96, 3, (1, 1, 1)),
    (6, 160, 3, (2, 2, 2)),
    (6, 320, 1, (1, 1, 1)),
)
WIDTHS = (0.2, 0.45, 0.7, 1.0)  # the widths of the paper


def _inverted_res_block(x, expansion, stride, filters, block_id):
    in_channels = x.shape[-1]
    # Python's round() (banker's rounding), exactly as the original computes hidden_dim.
    hidden = round(in_channels * expansion)
    prefix = f"block_{block_id}"
    inputs = x
    if expansion != 1:
        x = Conv3D(hidden, 1, name=f"{prefix}_expand")(x)
        x = batch_norm(f"{prefix}_expand_BN")(x)
        x = keras.layers.ReLU(6.0, name=f"{prefix}_expand_relu")(x)
    x = DepthwiseConv3D(3, stride, 1, name=f"{prefix}_depthwise")(x)
    x = batch_norm(f"{prefix}_depthwise_BN")(x)
    x = keras.layers.ReLU(6.0, name=f"{prefix}_depthwise_relu")(x)
    x = Conv3D(filters, 1, name=f"{prefix}_project")(x)
    x = batch_norm(f"{prefix}_project_BN")(x)
    if tuple(stride) == (1, 1, 1) and in_channels == filters:
        x = keras.layers.Add(name=f"{prefix}_add")([inputs, x])
    return x


def MobileNetV2_3D(
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
    """Builds a 3D MobileNetV2.

    Args:
        width_mult: channel multiplier; block channels are ``int(c * width_mult)`` and the
            last conv keeps 1280 channels unless ``width_mult > 1`` (no width applied to it,
            as in the original). The paper uses 0.2, 0.45, 0.7 and 1.0.
        include_top, weights, input_tensor, input_shape, pooling, num_classes, dropout,
        classifier_activation, name: as in `MobileNetV1_3D`.

    Returns:
        A `keras.Model`.
    """
    num_classes = _base.validate_common(include_top, weights, pooling, num_classes, dropout)
    width_mult = _base.check_width(width_mult)
    if int(16 * width_mult) < 1:
        raise ValueError(f"`width_mult` is too small for any channel. Received: width_mult={width_mult!r}")
    inputs, x = _base.video_input(input_shape, input_tensor)

    x = _base.conv_bn(x, int(32 * width_mult), 3, (1, 2, 2), 1, name="conv1",
                      bn_name="conv1_bn", activation=None)
    x = keras.layers.ReLU(6.0, name="conv1_relu")(x)
    block_id = 1
    for expansion, channels, repeats, stride in BLOCK_SPECS:
        for i in range(repeats):
            x = _inverted_res_block(x, expansion, stride if i == 0 else (1, 1, 1),
                                    int(channels * width_mult), block_id)
            block_id += 1
    last_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
    x = Conv3D(last_channels, 1, name="conv_last")(x)
    x = batch_norm("conv_last_bn")(x)
    x = keras.layers.ReLU(6.0, name="out_relu")(x)
    outputs = _base.pooled_head(x, include_top, pooling, num_classes, dropout, classifier_activation)
    return _base.finish(inputs, input_tensor, outputs, name or f"mobilenetv2_3d_{width_mult}x", weights)


def _torch_path(name, expands):
    """The original's nn.Sequential indices depend on whether a block expands."""
    if name == "conv1":
        return "features.0.0"
    if name == "conv1_bn":
        return "features.0.1"
    if name in ("conv_last", "conv_last_bn"):
        return f"features.{len(expands) + 1}.{0 if name == 'conv_last' else 1}"
    if name == "predictions":
        return "classifier.1"
    match = re.fullmatch(r"block_(\d+)_(expand|depthwise|project)(_BN)?", name)
    if not match:
        return None
    block, part, bn = int(match[1]), match[2], match[3]
    order = ["expand", "depthwise", "project"] if expands[block] else ["depthwise", "project"]
    index = order.index(part) * 3 + (1 if bn else 0)
    return f"features.{block}.conv.{index}"


def _key_mapping(model):
    names = {layer.name for layer in model.layers}
    expands = {}
    for name in names:
        match = re.fullmatch(r"block_(\d+)_depthwise", name)
        if match:
            expands[int(match[1])] = f"block_{match[1]}_expand" in names
    return {layer.name: _torch_path(layer.name, expands) for layer in model.layers
            if layer.weights}


FAMILY = _family.Family(
    name="mobilenetv2",
    builder=MobileNetV2_3D,
    depthwise=True,
    paper_rows={"mobilenetv2": ("mobilenetv2", {}, "")},
    key_mapping=_key_mapping,
    infer_config=_family.stem_width_inference("features.0.0.weight", 32),
)
