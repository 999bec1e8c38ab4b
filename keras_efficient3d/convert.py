"""Published PyTorch checkpoints of Efficient-3DCNNs -> Keras models.

    python -m keras_efficient3d.convert --checkpoint kinetics_mobilenetv2_1.0x_RGB_16_best.pth \\
        --output mobilenetv2_1.0x_kinetics.keras --with_preprocessing --labels kinetics600_labels.txt

The checkpoint is read by `keras_efficient3d.torch_checkpoint` (no PyTorch, no code run
from the file). The architecture, width, groups, shortcut, cardinality and classes are
inferred from the file name and the tensor shapes unless given; every tensor must find its
layer and every layer its tensors, else the conversion stops and lists the differences.

Layouts: PyTorch ``Conv3d`` weights (out, in/groups, kt, kh, kw) become Keras (kt, kh, kw,
in/groups, out); depthwise weights (C, 1, kt, kh, kw) become (kt, kh, kw, C, 1); ``Linear``
weights are transposed; BatchNorm keeps (gamma, beta, running mean, running variance).
"""

import functools
import os
import re

import keras
import numpy as np
from absl import flags

from keras_efficient3d import registry
from keras_efficient3d.artifacts import ModelMetadata, save_model
from keras_efficient3d.layers import Conv3D, DepthwiseConv3D
from keras_efficient3d.preprocessing import with_preprocessing
from keras_efficient3d.torch_checkpoint import load_checkpoint


class ConversionError(ValueError):
    """The checkpoint does not fit the requested model."""


class LabelCountError(ConversionError):
    """Class names given for another number of classes than the checkpoint's."""

    def __init__(self, given, classes, checkpoint_path):
        super().__init__(f"{given} labels for the {classes} classes of "
                         f"{os.path.basename(checkpoint_path)}")
        self.given, self.classes = given, classes


def torch_paths(model, family):
    """Keras layer name -> PyTorch module path, for every layer of `model` with weights;
    `family` is a family name or the original's --model name ('mobilenet')."""
    try:
        return _family(family).torch_paths(model)
    except ValueError as err:
        raise ConversionError(str(err)) from None


def _family(name):
    family = registry.get_family(name)
    if family is None:
        raise ConversionError(f"Unknown architecture '{name}'. Known: "
                              f"{', '.join(f.name for f in registry.families())}.")
    return family


def _layer_arrays(layer, state, path):
    """The Keras weights of `layer` from the PyTorch tensors under `path`, and the keys used."""
    if isinstance(layer, keras.layers.BatchNormalization):
        keys = [f"{path}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        arrays = [state.get(k) for k in keys]
        used = keys + [f"{path}.num_batches_tracked"]
    elif isinstance(layer, (Conv3D, DepthwiseConv3D, keras.layers.Dense)):
        keys = [f"{path}.weight"] + ([f"{path}.bias"] if layer.use_bias else [])
        arrays = [state.get(k) for k in keys]
        rank = 2 if isinstance(layer, keras.layers.Dense) else 5
        # A tensor of another rank (another architecture's file) is left as it is: the shape
        # check reports it beside the others, not numpy's "axes don't match array".
        if arrays[0] is not None and np.ndim(arrays[0]) == rank:
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
            mismatched.append(f"{layer.name} <- {paths[layer.name]}: Keras {expected} vs "
                              f"checkpoint {got}")
            continue
        assignments.append((layer, arrays))
    unexpected = [k for k in state_dict if k not in used]
    if missing or unexpected or mismatched:
        lines = []
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", mismatched)):
            if items:
                shown = items[:12] + ([f"... and {len(items) - 12} more"] if len(items) > 12 else [])
                # "; " parts the sections once the message is on one line (cli.error_line)
                lines.append(f"{title} ({len(items)}): " + ", ".join(shown))
        raise ConversionError(
            f"The checkpoint does not fit model '{model.name}':\n  " + "\n  ".join(lines))
    for layer, arrays in assignments:
        layer.set_weights([a.astype(np.float32) for a in arrays])
    return model


# ---------------------------------------------------------------------------------------
# Inferring the configuration.


def _name_tokens(filename):
    """The words of a file name: 'Copy of jester_mobilenetv2_0.2x_RGB_16_best.pth' (a Drive
    copy's) has 'jester' and 'mobilenetv2' as 'pretrained_kinetics_...' has 'kinetics'."""
    return [t for t in re.split(r"[_\-.\s]+", os.path.basename(filename).lower()) if t]


def _family_from(arch, filename):
    """The family named by the checkpoint's arch field ('resnext-101') or a token of the
    file name ('kinetics_mobilenetv2_1.0x_RGB_16_best.pth')."""
    tokens = [str(arch).lower().split("-")[0]] if arch else []
    tokens += _name_tokens(filename)
    for token in tokens:
        family = registry.get_family(token)
        if family is not None and token in (family.name, *family.aliases):
            return family
    return None


@functools.cache
def _module_shapes(family_name):
    """The module paths of a model of the family, digits as '#' ('features.#.conv.#'):
    what the key names of its state dicts look like."""
    family = _family(family_name)
    model = registry.create_model(next(iter(family.registry_names())),
                                  input_shape=family.small_input, num_classes=2)
    return frozenset(re.sub(r"\d+", "#", p) for p in family.torch_paths(model).values())


def _families_by_keys(state, likely=None):
    """The families whose module paths the state dict's key names follow best (ResNet and
    ResNeXt share theirs), `likely` alone where they are all among its; none where no
    family's fit half of them."""
    shapes = frozenset(re.sub(r"\d+", "#", key.rsplit(".", 1)[0]) for key in state)
    if not shapes:
        return []
    if likely is not None and shapes <= _module_shapes(likely.name):
        return [likely]
    fit = [len(shapes & _module_shapes(f.name)) / len(shapes | _module_shapes(f.name))
           for f in registry.families()]
    return [f for f, score in zip(registry.families(), fit) if score == max(fit) >= 0.5]


def infer_config(checkpoint, filename, overrides=None):
    """Returns (family name, builder kwargs, notes) from the file name and tensor shapes;
    `overrides` (flag values, None = infer) win."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    state = checkpoint.state_dict
    notes = []
    requested = overrides.pop("model", None)
    base = os.path.basename(filename)
    # The arch field the original writes (not the file name, which a user may have chosen)
    # says what the file holds; without one, the key names do.
    by_arch = _family_from(checkpoint.arch, "") if checkpoint.arch else None
    if requested:
        family = _family(requested)
        if by_arch is not None and by_arch.name != family.name:
            raise ConversionError(
                f"{base} holds a {by_arch.name} model (its arch field: {checkpoint.arch!r}), "
                f"not --model={requested}; leave --model unset to take the file's")
        held = [] if by_arch is not None else _families_by_keys(state, family)
        if held and family not in held:
            raise ConversionError(
                f"{base} holds a {' or '.join(f.name for f in held)} model (its key names), "
                f"not --model={requested}; leave --model unset to take the file's")
    else:
        family = _family_from(checkpoint.arch, filename)
        held = [] if by_arch is not None else _families_by_keys(state, family)
        if held and family not in held:
            if len(held) > 1:
                raise ConversionError(
                    f"{base}: its key names are those of a {' or '.join(f.name for f in held)} "
                    "model; pass --model")
            notes.append(f"architecture '{held[0].name}' (from its key names"
                         + (f"; the file name says {family.name})" if family else ")"))
            family = held[0]
        elif family is None:
            raise ConversionError(
                f"Cannot tell the architecture: no arch field naming a family "
                f"(arch={checkpoint.arch!r}), nor a family in the file name or its key names; "
                "pass --model")
        else:
            notes.append(f"architecture '{family.name}' (from the checkpoint's "
                         f"{'arch field' if by_arch else 'file name'})")
    kwargs = {}
    # Classes: the classifier's output rows.
    head = family.classifier_key
    if head in state and np.ndim(state[head]) < 2:
        raise ConversionError(f"{os.path.basename(filename)}: {head} is a tensor of shape "
                              f"{tuple(np.shape(state[head]))}, not a classifier's "
                              "weights (one row per class)")
    named_args = _named_arguments(requested, family, overrides) if requested else {}
    _refuse_contradictions(state, filename, family, requested, named_args, overrides)
    overrides = dict(named_args, **overrides)
    if "num_classes" not in overrides and head in state:
        kwargs["num_classes"] = int(state[head].shape[0])
        notes.append(f"{kwargs['num_classes']} classes (from {head})")
    # A file name of another family (a renamed file) says nothing of this one's width:
    # read from the tensors, not from it ("the file name says 0.5x" of a ShuffleNet name)
    named = _family_from(None, filename)
    infer_name = os.path.basename(filename)
    if named is not None and named.name != family.name:
        notes.append(f"the width from the tensors, not the file name, which names another "
                     f"family ({named.name}; the file holds {family.name})")
        infer_name = ""
    try:
        inferred, family_notes = family.infer(state, infer_name, overrides)
    except ValueError as err:
        raise ConversionError(str(err)) from None
    except (IndexError, TypeError) as err:  # a tensor of an unexpected rank
        raise ConversionError(f"{os.path.basename(filename)}: its tensors are not those of a "
                              f"{family.name} model ({err})") from None
    kwargs.update(inferred)
    notes.extend(family_notes)
    kwargs.update(overrides)
    return family.name, kwargs, notes


def _named_arguments(requested, family, flags):
    """The builder arguments a --model configuration name fixes (resnet50: depth 50,
    shufflenet_2.0x_g8: width 2.0, groups 8); none for a family name or alias."""
    if str(requested).strip().lower() in (family.name, *family.aliases):
        return {}
    try:
        registry.resolve_name(requested, **flags)  # --model=resnet18 --depth=34
        return registry.named_arguments(requested)[1]
    except ValueError as err:
        raise ConversionError(f"--model={requested}: {err}") from None


def _refuse_contradictions(state, filename, family, requested, named_args, flags):
    """Refuses, in one line naming what the file holds, the arguments (flags, and those a
    --model configuration name fixes) that the model cannot take or that its tensors
    contradict: compared before building, not left to a hundred shape mismatches or the
    builder's own error."""
    given = dict(named_args, **flags)
    base = os.path.basename(filename)

    def said(keys):
        """How the user said `keys`: the flags, or the --model name that fixes them."""
        parts = [f"--{k}={flags[k]}" for k in keys if k in flags]
        from_name = [f"{k}={named_args[k]}" for k in keys if k not in flags]
        return parts + ([f"--model={requested} ({' '.join(from_name)})"] if from_name else [])

    unknown = registry.unknown_arguments(family.builder, given)
    if unknown:
        raise ConversionError(f"{base} holds a {family.name} model, which takes no "
                              f"{', '.join(said(unknown))}: leave it unset")
    try:  # what the tensors alone say (a misnamed file's name says another width)
        held, _ = family.infer(state, "", ())
    except (ValueError, IndexError, TypeError):  # said by the inference that follows
        held = {}
    head = state.get(family.classifier_key)
    if head is not None:
        held["num_classes"] = int(head.shape[0])
    wrong = [k for k in given if k in held and not _same(held[k], given[k])]
    if not wrong:
        return
    fixes = [f"--{k}={held[k]}" for k in wrong if k in flags]
    if any(k not in flags for k in wrong):
        fixes.append(f"--model={registry.configuration_name(family.name, **held)}")
    holds = " ".join(f"{k}={held[k]}" for k in wrong)
    # the values to pass, not "leave it unset": a misnamed file's name says another
    raise ConversionError(f"{base} holds a {family.name} model of {holds}, not "
                          f"{', '.join(said(wrong))}: pass {' '.join(fixes)} (what its "
                          "tensors fit)")


# ---------------------------------------------------------------------------------------
# Building and saving.


def _describe(family, kwargs):
    parts = [family] + [f"{k}={kwargs[k]}" for k in sorted(kwargs)]
    return " ".join(parts)


def _same(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return str(a).upper() == str(b).upper()  # shortcut 'a' is 'A


def check_expected(checkpoint, filename, expected, overrides=None):
    """(family, kwargs, notes) of `infer_config` when the checkpoint is the model that
    `expected` describes (``model``: a family or registry name, and builder kwargs such as
    ``width_mult`` or ``num_classes``); raises a one-line ConversionError naming what the
    file holds otherwise. What the file holds is read from the file itself first, so that a
    checkpoint of another architecture is named as such, not listed key by key."""
    expected = {k: v for k, v in expected.items() if v is not None}
    wanted = _family(expected.get("model")).name if expected.get("model") else None
    try:
        family, kwargs, notes = infer_config(checkpoint, filename, overrides)
    except ConversionError:
        if wanted is None:
            raise
        # The file does not name its architecture (a renamed file): the tensors decide.
        family, kwargs, notes = infer_config(checkpoint, filename,
                                             dict(overrides or {}, model=wanted))
    fixed = {k: v for k, v in expected.items() if k != "model"}
    differ = [k for k, v in fixed.items() if k in kwargs and not _same(kwargs[k], v)]
    if (wanted is not None and family != wanted) or differ:
        keys = sorted(fixed) if wanted is not None and family != wanted else differ
        found = {k: kwargs[k] for k in keys if k in kwargs}
        raise ConversionError(
            f"{os.path.basename(filename)} holds a {_describe(family, found)} model, not the "
            f"expected {_describe(wanted or family, {k: fixed[k] for k in keys})}.")
    kwargs.update(fixed)
    return family, kwargs, notes


def convert_checkpoint(checkpoint_path, frames=16, size=112, overrides=None, log=print,
                       expected=None):
    """Reads a checkpoint and returns (Keras model with its weights, config kwargs, family).

    `expected` (``model`` and builder kwargs, as a preset knows them): the configuration
    the file must hold; a file that holds another is refused in one line
    (`check_expected`) before anything is built."""
    checkpoint = load_checkpoint(checkpoint_path)
    if expected:
        family, kwargs, notes = check_expected(checkpoint, checkpoint_path, expected, overrides)
    else:
        family, kwargs, notes = infer_config(checkpoint, checkpoint_path, overrides)
    for note in notes:
        log(f"inferred {note}")
    try:
        name, kwargs = registry.resolve_name(family, **kwargs)
        model = registry.create_model(name, input_shape=(frames, size, size, 3), **kwargs)
    except ValueError as err:
        raise ConversionError(f"Cannot build {family} with {kwargs}: {err}") from None
    load_torch_weights(model, checkpoint.state_dict, family)
    return model, dict(kwargs, model=name), checkpoint


# The datasets the original trains on -> (name, classes, input normalisation). It names a
# checkpoint after the dataset of the run that wrote it ({dataset}_{model}_..._best.pth, from
# --dataset: a UCF-101 fine-tune of a Kinetics model is ucf101_...), and decoded Kinetics
# videos with OpenCV (BGR), Jester and UCF-101 JPEGs with PIL (RGB), all less the ActivityNet
# mean in 0-255.
DATASETS = {
    "kinetics": ("Kinetics-600", 600, "kinetics"),
    "jester": ("Jester", 27, "original"),
    "ucf101": ("UCF-101", 101, "original"),
}
_DATASET_WORDS = {"kinetics": "kinetics", "kinetics600": "kinetics", "jester": "jester",
                  "ucf101": "ucf101", "ucf": "ucf101"}


def infer_dataset(checkpoint_path, num_classes=None):
    """(key of `DATASETS` or None, where it was read from, a warning or None) of a checkpoint
    from a word of its file name and its class count. The class count decides where the two
    disagree: the classifier is what the file was last trained on, and the original names
    its files after that dataset, so a name that says another is a renamed file (the
    warning says so); where the name names none, the class count does."""
    # kinetics400_..., kinetics700_...: Kinetics' input (BGR) too, of another class count
    words = ["kinetics" if re.fullmatch(r"kinetics\d*", t) else t
             for t in _name_tokens(checkpoint_path)]
    named = list(dict.fromkeys(_DATASET_WORDS[t] for t in words if t in _DATASET_WORDS))
    counted = next((key for key, (_, classes, _) in DATASETS.items() if classes == num_classes),
                   None)
    if counted is None:
        return (named[0], "from the file name", None) if named else (None, None, None)
    if not named:
        return counted, f"from its {num_classes} classes; the file name names none", None
    if counted in named:
        return counted, f"from the file name and its {num_classes} classes", None
    said = DATASETS[named[0]][0]
    name = DATASETS[counted][0]
    return counted, f"from its {num_classes} classes", (
        f"{os.path.basename(checkpoint_path)}: the file name says {said} but its "
        f"{num_classes} classes are {name}'s: converted as {name} (its classifier's; the "
        "original names a file after that dataset); pass --normalization and --labels to say "
        "otherwise")


def build_converted(checkpoint_path, frames=16, size=112, preprocessing=False,
                    normalization=None, labels=None, overrides=None, log=print, expected=None):
    """The Keras model of a checkpoint file and its `ModelMetadata`, not saved (`convert`
    saves them; presets keep them in their own layout).

    `normalization` (a preset name, `Normalization` or its config) defaults to the dataset's (`infer_dataset`;
    'original', RGB, where nothing says which);
    `expected`: see `convert_checkpoint`. A Jester checkpoint (`infer_dataset`) gets, unless
    `labels` are given, Jester's class names in the order the original numbers them
    (`label_sets.LABEL_SETS`' ``jester_original``), and the every-2nd-frame clips it was
    trained on (``downsample`` 2)."""
    from keras_efficient3d.data.normalization import Normalization
    norm = None if normalization is None else Normalization.coerce(normalization)
    model, config, checkpoint = convert_checkpoint(checkpoint_path, frames, size, overrides, log,
                                                   expected)
    if labels is not None and len(labels) != config.get("num_classes", len(labels)):
        raise LabelCountError(len(labels), config["num_classes"], checkpoint_path)
    # said once the file has read as a checkpoint, not before a refusal
    dataset, source, warning = infer_dataset(checkpoint_path, config.get("num_classes"))
    if warning:
        log(f"warning: {warning}")
    if dataset:
        log(f"inferred dataset {DATASETS[dataset][0]} ({source})")
    if norm is None:
        inferred = DATASETS[dataset][2] if dataset else "original"
        norm = Normalization.coerce(inferred)
        if dataset:
            log(f"inferred normalisation '{inferred}' ({DATASETS[dataset][0]}'s input)")
    if dataset is None:
        assumed = ("every frame" if normalization is not None else
                   "RGB input (normalisation 'original') and every frame")
        log(f"note: neither the file name nor its {config.get('num_classes')} classes say "
            f"which dataset {os.path.basename(checkpoint_path)} was trained on ("
            f"{'/'.join(DATASETS)} in the name, "
            f"{'/'.join(str(c) for _, c, _ in DATASETS.values())} classes): assumed "
            f"{assumed}")
    downsample = None
    if dataset == "jester":
        from keras_efficient3d.label_sets import LABEL_SETS, shipped_labels

        downsample = 2
        log("inferred Jester's clips of every 2nd frame")
        if labels is None and config.get("num_classes") == LABEL_SETS["jester_original"]:
            labels = shipped_labels("jester_original")
            log("inferred Jester's 27 class names, in the order the original numbers them")
    metadata = ModelMetadata(
        frames=frames, size=size, downsample=downsample, layout="NDHWC", normalization=norm,
        preprocessing_included=bool(preprocessing), labels=None if labels is None else list(labels),
        model=config, extra={"source": os.path.basename(checkpoint_path), "epoch": checkpoint.epoch},
        dtype="uint8 or float32 0-255, RGB" if preprocessing else "float32, already normalised")
    if preprocessing:
        model = with_preprocessing(model, norm)
    return model, metadata


def convert(checkpoint_path, output_path, frames=16, size=112, preprocessing=False,
            normalization=None, labels=None, overrides=None, log=print, expected=None):
    """Converts a checkpoint file into a .keras file (`build_converted`); returns the output
    path."""
    model, metadata = build_converted(checkpoint_path, frames, size, preprocessing,
                                      normalization, labels, overrides, log, expected)
    save_model(model, output_path, metadata)
    if metadata.labels is None:  # predict would show "class 18"
        log(f"note: {os.path.basename(checkpoint_path)} records no class names: --labels=FILE "
            f"gives them (one a line, in the order of its {metadata.model.get('num_classes')} "
            "outputs)")
    config = dict(metadata.model)
    log(f"wrote {output_path} ({registry.configuration_name(config.pop('model'), **config)}, "
        f"{model.count_params():,} parameters)")
    return output_path


def define_flags(flag_values=flags.FLAGS):
    """Flags of the command line; defined on demand so that importing this module (tests,
    other CLIs) never registers them."""
    from keras_efficient3d import cli

    fv = {"flag_values": flag_values}
    cli.define("checkpoint", None, required=True, **fv)
    cli.define("output", None, "The .keras file.", required=True, check=cli.keras_output, **fv)
    cli.define("model", None, "Inferred when unset: mobilenet, mobilenetv2, shufflenet, "
               "shufflenetv2, squeezenet, resnet, resnext, c3d.", **fv)
    for name in ("width_mult", "groups", "shortcut", "cardinality", "depth"):
        cli.define(name, None, "(inferred when unset)", **fv)
    cli.define("num_classes", None, "(inferred from the classifier when unset)", **fv)
    cli.define("frames", 16, **fv)
    cli.define("size", 112, **fv)
    flags.DEFINE_bool("with_preprocessing", False, "Prepend the normalisation: the model then "
                      "takes raw RGB frames.", **fv)
    cli.define("normalization", None, "The checkpoint's: default kinetics for a Kinetics file "
               "(its name or 600 classes), else original.", **fv)
    cli.define("labels", None, "Recorded in the model.", check=cli.existing_file, **fv)


def main(argv, flag_values=flags.FLAGS):
    del argv
    f = flag_values
    from keras_efficient3d import cli

    # A folder that cannot be made (a file on the path) before the conversion, not after;
    # a missing one is made (ucf101.flags' pretrained/ folder).
    cli.writable_folder(os.path.dirname(os.path.abspath(f.output)))
    labels = None
    if f.labels:
        try:
            with open(f.labels, encoding="utf-8-sig") as handle:
                labels = [line.strip() for line in handle if line.strip()]
        except UnicodeDecodeError:
            raise cli.UsageError(f"--labels={f.labels}: not UTF-8 text (one class name "
                                 "per line)") from None
    overrides = {"model": f.model, "width_mult": f.width_mult, "groups": f.groups,
                 "shortcut": f.shortcut, "cardinality": f.cardinality, "depth": f.depth,
                 "num_classes": f.num_classes}
    try:
        convert(f.checkpoint, f.output, f.frames, f.size, f.with_preprocessing,
                f.normalization, labels, overrides)
    except LabelCountError as err:  # in the flag's terms, the file named once
        raise cli.UsageError(f"--labels={f.labels}: {err.given} names for the {err.classes} "
                             f"classes of {os.path.basename(f.checkpoint)}") from None
    except ConversionError as err:
        # "does not fit" and the other findings name the file they are about
        name = os.path.basename(f.checkpoint)
        raise ConversionError(str(err) if str(err).startswith(name) else
                              f"{f.checkpoint}: {err}") from None


if __name__ == "__main__":
    from keras_efficient3d import cli

    cli.run(main, define_flags)
