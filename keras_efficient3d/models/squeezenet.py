"""3D SqueezeNet (Iandola et al. 2016), as 3D-fied by Kopuklu et al. 2019.

Fire modules (squeeze 1x1x1, expand 1x1x1 and 3x3x3, each with BatchNorm) with simple
bypasses on every second module; the classifier is a 1x1x1 conv, ReLU and average pool.
"""

import math

import keras

from keras_efficient3d.layers import Conv3D, MaxPool3D, batch_norm
from keras_efficient3d.models import _base, _family

# Layer plans of `features` (index in the original's nn.Sequential -> layer), per version.
# ("fire", squeeze, expand, bypass) or ("pool",).
_FIRES = {
    1.0: {4: (16, 64, False), 5: (16, 64, True), 7: (32, 128, False), 8: (32, 128, True),
          10: (48, 192, False), 11: (48, 192, True), 12: (64, 256, False), 14: (64, 256, True)},
    1.1: {4: (16, 64, False), 5: (16, 64, True), 7: (32, 128, False), 8: (32, 128, True),
          10: (48, 192, False), 11: (48, 192, True), 13: (64, 256, False), 14: (64, 256, True)},
}
_POOLS = {1.0: (3, 6, 9, 13), 1.1: (3, 6, 9, 12)}
VERSIONS = (1.0, 1.1)


def _fire(x, squeeze, expand, bypass, prefix):
    # The original's Fire convs keep PyTorch's default bias, followed by BatchNorm.
    s = _base.conv_bn(x, squeeze, 1, 1, 0, name=f"{prefix}_squeeze", use_bias=True,
                      bn_name=f"{prefix}_squeeze_bn", act_name=f"{prefix}_squeeze_relu")
    e1 = Conv3D(expand, 1, use_bias=True, name=f"{prefix}_expand1x1")(s)
    e1 = batch_norm(f"{prefix}_expand1x1_bn")(e1)
    e3 = Conv3D(expand, 3, padding=1, use_bias=True, name=f"{prefix}_expand3x3")(s)
    e3 = batch_norm(f"{prefix}_expand3x3_bn")(e3)
    out = keras.layers.Concatenate(name=f"{prefix}_concat")([e1, e3])
    if bypass:
        out = keras.layers.Add(name=f"{prefix}_add")([out, x])
    return keras.layers.ReLU(name=f"{prefix}_relu")(out)


def SqueezeNet_3D(
    version=1.1,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    num_classes=600,
    dropout=0.5,
    classifier_activation=None,
    name=None,
):
    """Builds a 3D SqueezeNet (version 1.0 or 1.1; the paper uses 1.1).

    The head is the original's: dropout, 1x1x1 conv to the classes (layer 'predictions'),
    ReLU, then an average pool over the ``ceil(frames / 16) x ceil(size / 32)^2`` cells
    that remain. Other arguments as in `MobileNetV1_3D`.

    Returns:
        A `keras.Model`.
    """
    num_classes = _base.validate_common(include_top, weights, pooling, num_classes, dropout)
    if not _base.is_number(version) or version not in VERSIONS:
        raise ValueError(f"`version` must be 1.0 or 1.1. Received: version={version!r}")
    # the table's own value: a NumPy float equals 1.1 but hashes apart from it, and 1 would
    # name the model squeezenet_3d_1
    version = next(v for v in VERSIONS if v == version)
    inputs, x = _base.video_input(input_shape, input_tensor)

    if version == 1.0:
        x = _base.conv_bn(x, 96, 7, (1, 2, 2), 3, name="conv1", use_bias=True,
                          bn_name="conv1_bn", act_name="conv1_relu")
    else:
        x = _base.conv_bn(x, 64, 3, (1, 2, 2), 1, name="conv1", use_bias=True,
                          bn_name="conv1_bn", act_name="conv1_relu")
    for index in range(3, 15):
        if index in _POOLS[version]:
            x = MaxPool3D(3, 2, 1, name=f"pool{index}")(x)
        else:
            squeeze, expand, bypass = _FIRES[version][index]
            x = _fire(x, squeeze, expand, bypass, f"fire{index}")

    if include_top:
        frames, size = x.shape[1], x.shape[2]
        in_frames, in_size = inputs.shape[1], inputs.shape[2]
        last = (math.ceil(in_frames / 16), math.ceil(in_size / 32), math.ceil(inputs.shape[3] / 32))
        if (frames, size, x.shape[3]) != last:
            raise ValueError(
                f"The original SqueezeNet head pools {last} cells but this input leaves "
                f"{(frames, size, x.shape[3])}; use frames that are multiples of 16 and sizes "
                f"that are multiples of 32. Received: input_shape={tuple(inputs.shape[1:])}"
            )
        if dropout:
            x = keras.layers.Dropout(dropout, name="dropout")(x)
        x = Conv3D(num_classes, 1, use_bias=True, name="predictions")(x)
        x = keras.layers.ReLU(name="predictions_relu")(x)
        x = keras.layers.GlobalAveragePooling3D(data_format="channels_last", name="avg_pool")(x)
        if classifier_activation:
            x = keras.layers.Activation(classifier_activation, name="predictions_activation")(x)
        outputs = x
    else:
        outputs = _base.feature_pooling(x, pooling)
    return _base.finish(inputs, input_tensor, outputs, name or f"squeezenet_3d_{version}", weights)


def _infer_config(state_dict, file_name, fixed):
    stem = state_dict.get("features.0.weight")
    if "version" in fixed or stem is None:
        return {}, []
    version = 1.0 if stem.shape[-1] == 7 else 1.1
    return {"version": version}, [f"version {version} (from the stem kernel)"]


FAMILY = _family.Family(
    name="squeezenet",
    builder=SqueezeNet_3D,
    paper_rows={"squeezenet": ("squeezenet", {"version": 1.1}, "version 1.1")},
    key_rules=(
        (r"conv1", "features.0"),
        (r"conv1_bn", "features.1"),
        (r"fire(\d+)_(\w+)", r"features.\1.\2"),
        (r"predictions", "classifier.1"),
    ),
    infer_config=_infer_config,
    counted_global_pool=True,
    int_kernel_pools=True,
    small_input=(16, 32, 32, 3),
)
