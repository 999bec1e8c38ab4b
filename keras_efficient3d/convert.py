"""Published PyTorch checkpoints of Efficient-3DCNNs -> Keras models.

    python -m keras_efficient3d.convert --checkpoint kinetics_mobilenetv2_1.0x_RGB_16_best.pth \\
        --output mobilenetv2_1.0x_kinetics.keras --with-preprocessing --labels kinetics600

The checkpoint is read by `keras_efficient3d.torch_checkpoint` (no PyTorch, no code run
from the file). The architecture, width, groups, shortcut, cardinality and classes are
inferred from the file name and the tensor shapes unless given; every tensor must find its
layer and every layer its tensors, else the conversion stops and lists the differences.

Layouts: PyTorch ``Conv3d`` weights (out, in/groups, kt, kh, kw) become Keras (kt, kh, kw,
in/groups, out); depthwise weights (C, 1, kt, kh, kw) become (kt, kh, kw, C, 1); ``Linear``
weights are transposed; BatchNorm keeps (gamma, beta, running mean, running variance).
"""

import os
import re
import sys

import keras
import numpy as np
from absl import app, flags

from keras_efficient3d import registry
from keras_efficient3d.artifacts import ModelMetadata, save_model
from keras_efficient3d.layers import Conv3D, DepthwiseConv3D
from keras_efficient3d.preprocessing import with_preprocessing
from keras_efficient3d.torch_checkpoint import CheckpointError, load_checkpoint


# The original's `arch` values ('resnet', 'resnext' carry no depth) -> registry families.
_ARCH_FAMILIES = {
    "mobilenet": "mobilenetv1",
    "mobilenetv1": "mobilenetv1",
    "mobilenetv2": "mobilenetv2",
    "shufflenet": "shufflenetv1",
    "shufflenetv1": "shufflenetv1",
    "shufflenetv2": "shufflenetv2",
    "squeezenet": "squeezenet",
    "resnet": "resnet",
    "resnext": "resnext",
    "c3d": "c3d",
}

# Keras layer name -> PyTorch module path, per family: (pattern, template) pairs tried in
# order; templates use the pattern's groups.
_RULES = {
    "mobilenetv1": [
        (r"conv1", "features.0.0"),
        (r"conv1_bn", "features.0.1"),
        (r"block_(\d+)_depthwise", r"features.\1.conv1"),
        (r"block_(\d+)_depthwise_BN", r"features.\1.bn1"),
        (r"block_(\d+)_pointwise", r"features.\1.conv2"),
        (r"block_(\d+)_pointwise_BN", r"features.\1.bn2"),
        (r"predictions", "classifier.1"),
    ],
    "shufflenetv1": [
        (r"conv1", "conv1.0"),
        (r"conv1_bn", "conv1.1"),
        (r"stage(\d)_block(\d+)_(conv|bn)(\d)", r"layer\1.\2.\3\4"),
        (r"predictions", "classifier.1"),
    ],
    "shufflenetv2": [
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
    ],
    "squeezenet": [
        (r"conv1", "features.0"),
        (r"conv1_bn", "features.1"),
        (r"fire(\d+)_(\w+)", r"features.\1.\2"),
        (r"predictions", "classifier.1"),
    ],
    "resnet": [
        (r"conv1", "conv1"),
        (r"conv1_bn", "bn1"),
        (r"layer(\d)_block(\d+)_(conv|bn)(\d)", r"layer\1.\2.\3\4"),
        (r"layer(\d)_block(\d+)_downsample", r"layer\1.\2.downsample.0"),
        (r"layer(\d)_block(\d+)_downsample_bn", r"layer\1.\2.downsample.1"),
        (r"predictions", "fc"),
    ],
    "c3d": [
        (r"conv(\d)", r"group\1.0"),
        (r"conv(\d)_bn", r"group\1.1"),
        (r"conv(\d)a", r"group\1.0"),
        (r"conv(\d)a_bn", r"group\1.1"),
        (r"conv(\d)b", r"group\1.3"),
        (r"conv(\d)b_bn", r"group\1.4"),
        (r"fc6", "fc1.0"),
        (r"fc7", "fc2.0"),
        (r"predictions", "fc.0"),
    ],
}
_RULES["resnext"] = _RULES["resnet"]


class ConversionError(ValueError):
    """The checkpoint does not fit the requested model."""


def _mobilenetv2_path(name, expands):
    """MobileNetV2's nn.Sequential indices depend on whether a block expands."""
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


def torch_paths(model, family):
    """Keras layer name -> PyTorch module path, for every layer of `model` with weights."""
    paths = {}
    if family == "mobilenetv2":
        expands = {}
        for layer in model.layers:
            match = re.fullmatch(r"block_(\d+)_depthwise", layer.name)
            if match:
                expands[int(match[1])] = any(
                    l.name == f"block_{match[1]}_expand" for l in model.layers)
    for layer in model.layers:
        if not layer.weights:
            continue
        if family == "mobilenetv2":
            path = _mobilenetv2_path(layer.name, expands)
        else:
            path = None
            for pattern, template in _RULES[family]:
                if re.fullmatch(pattern, layer.name):
                    path = re.sub(pattern, template, layer.name)
                    break
        if path is None:
            raise ConversionError(f"No PyTorch counterpart is known for layer '{layer.name}'.")
        paths[layer.name] = path
    return paths


def _layer_arrays(layer, state, path):
    """The Keras weights of `layer` from the PyTorch tensors under `path`, and the keys used."""
    if isinstance(layer, keras.layers.BatchNormalization):
        keys = [f"{path}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        arrays = [state.get(k) for k in keys]
        used = keys + [f"{path}.num_batches_tracked"]
    elif isinstance(layer, (Conv3D, DepthwiseConv3D, keras.layers.Dense)):
        keys = [f"{path}.weight"] + ([f"{path}.bias"] if layer.use_bias else [])
        arrays = [state.get(k) for k in keys]
        if arrays[0] is not None:
            w = arrays[0]
            if isinstance(layer, DepthwiseConv3D):
                arrays[0] = w.transpose(2, 3, 4, 0, 1)
            elif isinstance(layer, Conv3D):
                arrays[0] = w.transpose(2, 3, 4, 1, 0)
            else:
                arrays[0] = w.T
        used = keys
    else:
        raise ConversionError(f"Layer '{layer.name}' ({type(layer).__name__}) has no converter.")
    missing = [k for k, a in zip(keys, arrays) if a is None]
    return arrays, used, missing


def load_torch_weights(model, state_dict, family):
    """Copies a PyTorch state dict (prefix already stripped) into `model`.

    Raises ConversionError listing missing keys, unexpected keys and shape mismatches."""
    paths = torch_paths(model, family)
    used, missing, mismatched, assignments = set(), [], [], []
    for layer in model.layers:
        if layer.name not in paths:
            continue
        arrays, keys, miss = _layer_arrays(layer, state_dict, paths[layer.name])
        used.update(keys)
        if miss:
            missing.extend(miss)
            continue
        expected = [tuple(w.shape) for w in layer.get_weights()]
        got = [tuple(a.shape) for a in arrays]
        if expected != got:
            mismatched.append(f"{layer.name} <- {paths[layer.name]}: Keras {expected}, checkpoint {got}")
            continue
        assignments.append((layer, arrays))
    unexpected = [k for k in state_dict if k not in used]
    if missing or unexpected or mismatched:
        lines = []
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", mismatched)):
            if items:
                shown = items[:12] + ([f"... and {len(items) - 12} more"] if len(items) > 12 else [])
                lines.append(f"{title} ({len(items)}): " + "; ".join(shown))
        raise ConversionError(
            f"The checkpoint does not fit model '{model.name}':\n  " + "\n  ".join(lines))
    for layer, arrays in assignments:
        layer.set_weights([a.astype(np.float32) for a in arrays])
    return model


# ---------------------------------------------------------------------------------------
# Inferring the configuration.


def _family_from(arch, filename):
    if arch:
        key = str(arch).lower().split("-")[0]
        if key in _ARCH_FAMILIES:
            return _ARCH_FAMILIES[key]
    stem = os.path.basename(filename).lower()
    for token in re.split(r"[_\-.]", stem):
        if token in _ARCH_FAMILIES:
            return _ARCH_FAMILIES[token]
    return None


def _count_blocks(state, layer):
    indices = {int(m[1]) for k in state for m in [re.match(rf"{layer}\.(\d+)\.", k)] if m}
    return max(indices) + 1 if indices else 0


def infer_config(checkpoint, filename, overrides=None):
    """Returns (registry name, builder kwargs, notes) from the file name and tensor shapes;
    `overrides` (flag values, None = infer) win."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    state = checkpoint.state_dict
    notes = []
    family = overrides.pop("model", None)
    if family:
        family = _ARCH_FAMILIES.get(family.lower().rstrip("0123456789"), family.lower())
    else:
        family = _family_from(checkpoint.arch, filename)
        if family is None:
            raise ConversionError(
                f"Cannot tell the architecture of '{filename}' (arch={checkpoint.arch!r}); "
                "pass --model.")
        notes.append(f"architecture '{family}' (from the checkpoint's arch field / file name)")
    base = os.path.basename(filename)
    kwargs = {}
    # Classes: the classifier's output rows.
    head = {"resnet": "fc.weight", "resnext": "fc.weight", "c3d": "fc.0.weight"}.get(
        family, "classifier.1.weight")
    if "num_classes" not in overrides and head in state:
        kwargs["num_classes"] = int(state[head].shape[0])
        notes.append(f"{kwargs['num_classes']} classes (from {head})")
    width = re.search(r"(\d+(?:\.\d+)?)x", base)
    if family in ("mobilenetv1", "mobilenetv2", "shufflenetv1", "shufflenetv2"):
        if "width_mult" not in overrides:
            stem = state.get("features.0.0.weight", state.get("conv1.0.weight"))
            if width:
                kwargs["width_mult"] = float(width[1])
                notes.append(f"width {kwargs['width_mult']}x (from the file name)")
            elif stem is not None:
                kwargs["width_mult"] = _width_from_stem(family, state, stem.shape[0])
                notes.append(f"width {kwargs['width_mult']}x (from the tensor shapes)")
    if family == "shufflenetv1" and "groups" not in overrides:
        w = state.get("layer1.0.conv3.weight")
        mid = state.get("layer1.0.conv2.weight")
        if w is not None and mid is not None:
            kwargs["groups"] = int(mid.shape[0] // w.shape[1])
            notes.append(f"groups {kwargs['groups']} (from layer1.0.conv3)")
    if family == "squeezenet" and "version" not in overrides:
        w = state.get("features.0.weight")
        if w is not None:
            kwargs["version"] = 1.0 if w.shape[-1] == 7 else 1.1
            notes.append(f"version {kwargs['version']} (from the stem kernel)")
    if family in ("resnet", "resnext"):
        blocks = tuple(_count_blocks(state, f"layer{i}") for i in range(1, 5))
        bottleneck = "layer1.0.conv3.weight" in state
        if "depth" not in overrides:
            from keras_efficient3d.models.resnet import RESNET_DEPTHS, RESNEXT_DEPTHS
            table = ({d: b for d, b in RESNEXT_DEPTHS.items()} if family == "resnext" else
                     {d: b for d, (k, b) in RESNET_DEPTHS.items()
                      if (k == "bottleneck") == bottleneck})
            depths = [d for d, b in table.items() if b == blocks]
            if not depths:
                raise ConversionError(f"No {family} depth has blocks {blocks} per stage.")
            kwargs["depth"] = depths[0]
            notes.append(f"depth {depths[0]} (from {blocks} blocks per stage)")
        if "shortcut" not in overrides:
            kwargs["shortcut"] = "B" if any(".downsample.0." in k for k in state) else "A"
            notes.append(f"shortcut {kwargs['shortcut']} (from the downsample tensors)")
        if family == "resnext" and "cardinality" not in overrides:
            w = state.get("layer1.0.conv2.weight")
            if w is not None:
                kwargs["cardinality"] = int(w.shape[0] // w.shape[1])
                notes.append(f"cardinality {kwargs['cardinality']} (from layer1.0.conv2)")
    kwargs.update(overrides)
    return family, kwargs, notes


def _width_from_stem(family, state, stem_channels):
    from keras_efficient3d.models import shufflenet_v2
    if family == "shufflenetv2":
        last = state.get("features.0.banch2.0.weight")
        for w, chans in shufflenet_v2.STAGE_CHANNELS.items():
            if last is not None and chans[1] // 2 == last.shape[0]:
                return w
    base = 24 if family == "shufflenetv1" else 32
    for w in (0.2, 0.25, 0.45, 0.5, 0.7, 1.0, 1.5, 2.0):
        if int(base * w) == stem_channels:
            return w
    raise ConversionError(f"Cannot infer the width from a {stem_channels}-channel stem; pass --width-mult.")


# ---------------------------------------------------------------------------------------
# Building and saving.


def convert_checkpoint(checkpoint_path, frames=16, size=112, overrides=None, log=print):
    """Reads a checkpoint and returns (Keras model with its weights, config kwargs, family)."""
    checkpoint = load_checkpoint(checkpoint_path)
    family, kwargs, notes = infer_config(checkpoint, checkpoint_path, overrides)
    for note in notes:
        log(f"inferred {note}")
    name = family
    if family in ("resnet", "resnext"):
        name = f"{family}{kwargs.pop('depth')}"
    try:
        model = registry.create_model(name, input_shape=(frames, size, size, 3), **kwargs)
    except ValueError as err:
        raise ConversionError(f"Cannot build {name} with {kwargs}: {err}") from None
    load_torch_weights(model, checkpoint.state_dict, family)
    return model, dict(kwargs, model=name), checkpoint


def infer_normalization(checkpoint_path):
    """The preset a published checkpoint was trained with, from its file name: the original
    decoded Kinetics videos with OpenCV (BGR) and Jester/UCF-101 JPEGs with PIL (RGB), both
    with the ActivityNet mean in 0-255."""
    return "kinetics" if os.path.basename(checkpoint_path).lower().startswith("kinetics") else "original"


def convert(checkpoint_path, output_path, frames=16, size=112, preprocessing=False,
            normalization=None, labels=None, overrides=None, log=print):
    """Converts a checkpoint file into a .keras file; returns the output path.

    `normalization` (a preset name or `Normalization`) defaults to `infer_normalization`."""
    from keras_efficient3d.data.normalization import Normalization
    if normalization is None:
        normalization = infer_normalization(checkpoint_path)
        log(f"inferred normalisation '{normalization}' (from the file name)")
    norm = (normalization if isinstance(normalization, Normalization)
            else Normalization.preset(normalization))
    model, config, checkpoint = convert_checkpoint(checkpoint_path, frames, size, overrides, log)
    metadata = ModelMetadata(
        frames=frames, size=size, layout="NDHWC", normalization=norm,
        preprocessing_included=bool(preprocessing), labels=None if labels is None else list(labels),
        model=config, extra={"source": os.path.basename(checkpoint_path), "epoch": checkpoint.epoch},
        dtype="uint8 or float32 0-255, RGB" if preprocessing else "float32, already normalised")
    if preprocessing:
        model = with_preprocessing(model, norm)
    save_model(model, output_path, metadata)
    log(f"wrote {output_path} ({config['model']}, {model.count_params():,} parameters)")
    return output_path


FLAGS = flags.FLAGS


def define_flags():
    """Flags of the command line; defined on demand so that importing this module (tests,
    other CLIs) never registers them twice."""
    flags.DEFINE_string("checkpoint", None, "PyTorch checkpoint (.pth) written by Efficient-3DCNNs.")
    flags.DEFINE_string("output", None, "Output .keras file.")
    flags.DEFINE_string("model", None, "Architecture (inferred when unset): mobilenet, mobilenetv2, "
                        "shufflenet, shufflenetv2, squeezenet, resnet, resnext, c3d.")
    flags.DEFINE_float("width_mult", None, "Width multiplier (inferred when unset).")
    flags.DEFINE_integer("groups", None, "ShuffleNetV1 groups (inferred when unset).")
    flags.DEFINE_enum("shortcut", None, ["A", "B"], "ResNet/ResNeXt shortcut (inferred when unset).")
    flags.DEFINE_integer("cardinality", None, "ResNeXt cardinality (inferred when unset).")
    flags.DEFINE_integer("depth", None, "ResNet/ResNeXt depth (inferred when unset).")
    flags.DEFINE_integer("num_classes", None, "Classes (inferred from the classifier when unset).")
    flags.DEFINE_integer("frames", 16, "Frames per clip.")
    flags.DEFINE_integer("size", 112, "Frame height and width.")
    flags.DEFINE_bool("with_preprocessing", False, "Prepend the normalisation: the model then takes raw RGB frames.")
    flags.DEFINE_string("normalization", None, "Normalisation the checkpoint was trained with: a preset "
                        "(original = ActivityNet mean, 0-255, RGB; kinetics = the same in BGR, as the original's "
                        "OpenCV-decoded Kinetics videos). Default: kinetics for kinetics_* files, else original.")
    flags.DEFINE_string("labels", None, "Text file of class names, one per line, to record in the model.")


def main(argv):
    del argv
    if not FLAGS.checkpoint or not FLAGS.output:
        raise app.UsageError("--checkpoint and --output are required.")
    labels = None
    if FLAGS.labels:
        try:
            with open(FLAGS.labels, encoding="utf-8") as handle:
                labels = [line.strip() for line in handle if line.strip()]
        except OSError as err:
            print(f"error: cannot read the labels file: {err}", file=sys.stderr)
            return 1
    overrides = {"model": FLAGS.model, "width_mult": FLAGS.width_mult, "groups": FLAGS.groups,
                 "shortcut": FLAGS.shortcut, "cardinality": FLAGS.cardinality,
                 "depth": FLAGS.depth, "num_classes": FLAGS.num_classes}
    try:
        convert(FLAGS.checkpoint, FLAGS.output, FLAGS.frames, FLAGS.size,
                FLAGS.with_preprocessing, FLAGS.normalization, labels, overrides)
    except (CheckpointError, ConversionError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
