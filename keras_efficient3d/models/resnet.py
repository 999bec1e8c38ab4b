"""3D ResNet and ResNeXt (Hara et al. 2018), the baselines of Kopuklu et al. 2019.

One generic builder, `ResNet3DBase(stack_spec, ...)`, and thin variants per depth. Shortcut
'A' subsamples and zero-pads channels (no parameters); 'B' projects with a 1x1x1 conv.
"""

import math
import re

import keras

from keras_efficient3d.layers import Conv3D, MaxPool3D, ZeroPadChannels, batch_norm
from keras_efficient3d.models import _base, _family

# depth -> (block type, blocks per stage)
RESNET_DEPTHS = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}
RESNEXT_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_EXPANSION = {"basic": 1, "bottleneck": 4, "resnext": 2}


def _shortcut(x, filters, stride, shortcut_type, prefix):
    if stride == 1 and x.shape[-1] == filters:
        return x
    if shortcut_type == "A":
        return ZeroPadChannels(filters, stride, name=f"{prefix}_downsample")(x)
    x = Conv3D(filters, 1, stride, name=f"{prefix}_downsample")(x)
    return batch_norm(f"{prefix}_downsample_bn")(x)


def _block(x, kind, planes, stride, shortcut_type, cardinality, prefix):
    filters = planes * _EXPANSION[kind]
    shortcut = _shortcut(x, filters, stride, shortcut_type, prefix)
    if kind == "basic":
        x = _base.conv_bn(x, planes, 3, stride, 1, name=f"{prefix}_conv1",
                          bn_name=f"{prefix}_bn1", act_name=f"{prefix}_relu1")
        x = _base.conv_bn(x, planes, 3, 1, 1, name=f"{prefix}_conv2", bn_name=f"{prefix}_bn2",
                          activation=None)
    else:
        mid = planes if kind == "bottleneck" else cardinality * int(planes / 32)
        groups = 1 if kind == "bottleneck" else cardinality
        x = _base.conv_bn(x, mid, 1, 1, 0, name=f"{prefix}_conv1", bn_name=f"{prefix}_bn1",
                          act_name=f"{prefix}_relu1")
        x = _base.conv_bn(x, mid, 3, stride, 1, name=f"{prefix}_conv2", groups=groups,
                          bn_name=f"{prefix}_bn2", act_name=f"{prefix}_relu2")
        x = _base.conv_bn(x, filters, 1, 1, 0, name=f"{prefix}_conv3", bn_name=f"{prefix}_bn3",
                          activation=None)
    x = keras.layers.Add(name=f"{prefix}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_out")(x)


def ResNet3DBase(
    block,
    stage_blocks,
    stage_planes,
    shortcut="B",
    cardinality=32,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    num_classes=600,
    classifier_activation=None,
    name="resnet3d",
):
    """Generic 3D ResNet/ResNeXt: 7x7x7 stem, max pool, four stages, average pool, fc."""
    num_classes = _base.validate_common(include_top, weights, pooling, num_classes, 0.0)
    if shortcut not in ("A", "B"):
        raise ValueError(f"`shortcut` must be 'A' or 'B'. Received: shortcut={shortcut!r}")
    if block == "resnext" and (not _base.is_integer(cardinality) or cardinality < 1
                               or stage_planes[0] // 32 < 1):
        raise ValueError(f"`cardinality` must be a positive integer. Received: cardinality={cardinality!r}")
    cardinality = int(cardinality)  # a NumPy integer would not serialize into the config
    inputs, x = _base.video_input(input_shape, input_tensor)

    x = _base.conv_bn(x, 64, 7, (1, 2, 2), 3, name="conv1", bn_name="conv1_bn",
                      act_name="conv1_relu")
    x = MaxPool3D(3, 2, 1, name="pool1")(x)
    for stage, (blocks, planes) in enumerate(zip(stage_blocks, stage_planes), start=1):
        for i in range(blocks):
            stride = 2 if (i == 0 and stage > 1) else 1
            x = _block(x, block, planes, stride, shortcut, cardinality, f"layer{stage}_block{i}")

    if include_top:
        last = (math.ceil(inputs.shape[1] / 16), math.ceil(inputs.shape[2] / 32),
                math.ceil(inputs.shape[3] / 32))
        if tuple(x.shape[1:4]) != last:
            raise ValueError(
                f"The original ResNet head pools {last} cells but this input leaves "
                f"{tuple(x.shape[1:4])}; use frames that are multiples of 16 and sizes that "
                f"are multiples of 32. Received: input_shape={tuple(inputs.shape[1:])}"
            )
        x = keras.layers.GlobalAveragePooling3D(data_format="channels_last", name="avg_pool")(x)
        outputs = keras.layers.Dense(num_classes, activation=classifier_activation,
                                     name="predictions")(x)
    else:
        outputs = _base.feature_pooling(x, pooling)
    return _base.finish(inputs, input_tensor, outputs, name, weights)


def ResNet3D(depth=18, shortcut="B", include_top=True, weights=None, input_tensor=None,
             input_shape=None, pooling=None, num_classes=600, classifier_activation=None,
             name=None):
    """Builds a 3D ResNet of depth 10, 18, 34, 50, 101, 152 or 200.

    Args:
        depth: network depth.
        shortcut: 'A' (subsample + zero channels, as the paper's ResNet-18/50/101 rows) or
            'B' (1x1x1 projection).
        Other arguments as in `MobileNetV1_3D` (the original's ResNets have no dropout).
    """
    if not _base.is_integer(depth) or depth not in RESNET_DEPTHS:
        raise ValueError(f"`depth` must be one of {sorted(RESNET_DEPTHS)}. Received: depth={depth!r}")
    kind, blocks = RESNET_DEPTHS[depth]
    return ResNet3DBase(kind, blocks, (64, 128, 256, 512), shortcut, 32, include_top, weights,
                        input_tensor, input_shape, pooling, num_classes, classifier_activation,
                        name or f"resnet{depth}_3d")


def ResNeXt3D(depth=101, cardinality=32, shortcut="B", include_top=True, weights=None,
              input_tensor=None, input_shape=None, pooling=None, num_classes=600,
              classifier_activation=None, name=None):
    """Builds a 3D ResNeXt of depth 50, 101 or 152 with grouped 3x3x3 convolutions.

    Args:
        depth: network depth.
        cardinality: groups of the 3x3x3 convs (32 in the paper); the bottleneck width is
            ``cardinality * int(planes / 32)`` as in the original.
        shortcut: 'A' or 'B' (the paper's ResNeXt-101 uses 'B').
        Other arguments as in `MobileNetV1_3D`.
    """
    if not _base.is_integer(depth) or depth not in RESNEXT_DEPTHS:
        raise ValueError(f"`depth` must be one of {sorted(RESNEXT_DEPTHS)}. Received: depth={depth!r}")
    return ResNet3DBase("resnext", RESNEXT_DEPTHS[depth], (128, 256, 512, 1024), shortcut,
                        cardinality, include_top, weights, input_tensor, input_shape, pooling,
                        num_classes, classifier_activation, name or f"resnext{depth}_3d")


_KEY_RULES = (
    (r"conv1", "conv1"),
    (r"conv1_bn", "bn1"),
    (r"layer(\d)_block(\d+)_(conv|bn)(\d)", r"layer\1.\2.\3\4"),
    (r"layer(\d)_block(\d+)_downsample", r"layer\1.\2.downsample.0"),
    (r"layer(\d)_block(\d+)_downsample_bn", r"layer\1.\2.downsample.1"),
    (r"predictions", "fc"),
)


def _count_blocks(state_dict, stage):
    indices = {int(m[1]) for k in state_dict for m in [re.match(rf"{stage}\.(\d+)\.", k)] if m}
    return max(indices) + 1 if indices else 0


def _infer_depth_and_shortcut(family, depths, state_dict, fixed):
    kwargs, notes = {}, []
    if "depth" not in fixed:
        blocks = tuple(_count_blocks(state_dict, f"layer{i}") for i in range(1, 5))
        matching = [depth for depth, stages in depths.items() if stages == blocks]
        if not matching:
            raise ValueError(f"No {family} depth has blocks {blocks} per stage.")
        kwargs["depth"] = matching[0]
        notes.append(f"depth {matching[0]} (from {blocks} blocks per stage)")
    if "shortcut" not in fixed:
        kwargs["shortcut"] = "B" if any(".downsample.0." in k for k in state_dict) else "A"
        notes.append(f"shortcut {kwargs['shortcut']} (from the downsample tensors)")
    return kwargs, notes


def _infer_resnet(state_dict, file_name, fixed):
    bottleneck = "layer1.0.conv3.weight" in state_dict
    depths = {depth: blocks for depth, (kind, blocks) in RESNET_DEPTHS.items()
              if (kind == "bottleneck") == bottleneck}
    return _infer_depth_and_shortcut("resnet", depths, state_dict, fixed)


def _infer_resnext(state_dict, file_name, fixed):
    kwargs, notes = _infer_depth_and_shortcut("resnext", RESNEXT_DEPTHS, state_dict, fixed)
    conv2 = state_dict.get("layer1.0.conv2.weight")
    if "cardinality" not in fixed and conv2 is not None:
        kwargs["cardinality"] = int(conv2.shape[0] // conv2.shape[1])
        notes.append(f"cardinality {kwargs['cardinality']} (from layer1.0.conv2)")
    return kwargs, notes


RESNET = _family.Family(
    name="resnet",
    builder=ResNet3D,
    variants={f"resnet{depth}": {"depth": depth} for depth in RESNET_DEPTHS},
    paper_rows={f"resnet{depth}": (f"resnet{depth}", {"shortcut": "A"}, "shortcut A")
                for depth in (18, 50, 101)},
    key_rules=_KEY_RULES,
    classifier_key="fc.weight",
    infer_config=_infer_resnet,
    counted_global_pool=True,
    small_input=(16, 32, 32, 3),
    # The paper's MFLOPs of these rows are the original code's with shortcut A (9,835 and
    # 13,664 exactly), its printed params match neither shortcut (A: +0.25% / +0.14%,
    # within the 0.5% tolerance; B: +6.5% / +3.5%). Reported as printed, not tuned.
    params_exceptions={
        "ResNet-50": "printed 44.54M; the original code gives 44.65M (shortcut A, +0.25%)",
        "ResNet-101": "printed 83.58M; the original code gives 83.70M (shortcut A, +0.14%)",
    },
)

RESNEXT = _family.Family(
    name="resnext",
    builder=ResNeXt3D,
    variants={f"resnext{depth}": {"depth": depth} for depth in RESNEXT_DEPTHS},
    paper_rows={"resnext101": ("resnext101", {"shortcut": "B", "cardinality": 32},
                               "shortcut B, cardinality 32")},
    key_rules=_KEY_RULES,
    classifier_key="fc.weight",
    infer_config=_infer_resnext,
    counted_global_pool=True,
    small_input=(16, 32, 32, 3),
)
