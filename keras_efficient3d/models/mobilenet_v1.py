"""3D MobileNetV1 (Howard et al. 2017), as 3D-fied by Kopuklu et al. 2019.

Depthwise 3x3x3 + pointwise blocks with ReLU; the stem keeps every frame (stride 1, 2, 2)
and the four downsampling blocks halve time and space.
"""

import keras

from keras_efficient3d.layers import Conv3D, DepthwiseConv3D, batch_norm
from keras_efficient3d.models import _base, _family

# (output channels, repeats, stride of the first block) of the original's cfg.
BLOCK_SPECS = (
    (64, 1, (2, 2, 2)),
    (128, 2, (2, 2, 2)),
    (256, 2, (2, 2, 2)),
    (512, 6, (2, 2, 2)),
    (1024, 2, (1, 1, 1)),
)
WIDTHS = (0.5, 1.0, 1.5, 2.0)  # the widths of the paper


def _depthwise_block(x, filters, strides, block_id):
    prefix = f"block_{block_id}"
    x = DepthwiseConv3D(3, strides, 1, name=f"{prefix}_depthwise")(x)
    x = batch_norm(f"{prefix}_depthwise_BN")(x)
    x = keras.layers.ReLU(name=f"{prefix}_depthwise_relu")(x)
    x = Conv3D(filters, 1, name=f"{prefix}_pointwise")(x)
    x = batch_norm(f"{prefix}_pointwise_BN")(x)
    return keras.layers.ReLU(name=f"{prefix}_pointwise_relu")(x)


def MobileNetV1_3D(
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
    """Builds a 3D MobileNetV1.

    Args:
        width_mult: channel multiplier; channels are ``int(c * width_mult)`` as in the
            original (the paper uses 0.5, 1.0, 1.5 and 2.0).
        include_top: whether to add the average-pool, dropout and Dense classifier.
        weights: None, or a path to weights saved from this architecture.
        input_tensor: optional Keras tensor to use as the input.
        input_shape: (frames, height, width, 3); default (16, 112, 112, 3).
        pooling: with ``include_top=False``: None (5D features), 'avg' or 'max'.
        num_classes: classes of the classifier (600 for Kinetics-600, 27 for Jester).
        dropout: dropout rate before the classifier (the original's 0.2).
        classifier_activation: None returns logits, as the original does; or 'softmax'.
        name: model name; default 'mobilenetv1_3d_{width}x'.

    Returns:
        A `keras.Model`.
    """
    num_classes = _base.validate_common(include_top, weights, pooling, num_classes, dropout)
    width_mult = _base.check_width(width_mult)
    if int(32 * width_mult) < 1:
        raise ValueError(f"`width_mult` is too small for any channel. Received: width_mult={width_mult!r}")
    inputs, x = _base.video_input(input_shape, input_tensor)

    x = _base.conv_bn(x, int(32 * width_mult), 3, (1, 2, 2), 1, name="conv1",
                      bn_name="conv1_bn", act_name="conv1_relu")
    block_id = 1
    for channels, repeats, stride in BLOCK_SPECS:
        for i in range(repeats):
            x = _depthwise_block(x, int(channels * width_mult), stride if i == 0 else 1, block_id)
            block_id += 1
    outputs = _base.pooled_head(x, include_top, pooling, num_classes, dropout, classifier_activation)
    return _base.finish(inputs, input_tensor, outputs, name or f"mobilenetv1_3d_{width_mult}x", weights)


FAMILY = _family.Family(
    name="mobilenetv1",
    builder=MobileNetV1_3D,
    depthwise=True,
    aliases=("mobilenet",),
    paper_rows={"mobilenet": ("mobilenetv1", {}, "")},
    key_rules=(
        (r"conv1", "features.0.0"),
        (r"conv1_bn", "features.0.1"),
        (r"block_(\d+)_depthwise", r"features.\1.conv1"),
        (r"block_(\d+)_depthwise_BN", r"features.\1.bn1"),
        (r"block_(\d+)_pointwise", r"features.\1.conv2"),
        (r"block_(\d+)_pointwise_BN", r"features.\1.bn2"),
        (r"predictions", "classifier.1"),
    ),
    infer_config=_family.stem_width_inference("features.0.0.weight", 32),
    # The blocks' ReLUs are F.relu calls in the original's forward.
    functional_relu=r"^block_\d+_(depthwise|pointwise)(_relu)?$",
)
