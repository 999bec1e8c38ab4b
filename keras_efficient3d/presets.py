"""Presets in keras-hub's layout: the paper's published models and the shipped one.

    import keras_efficient3d as k3
    k3.presets.list_presets("*jester*")                  # the paper's published configurations
    model = k3.MobileNetV2_3D.from_preset("mobilenetv2_1.0x_jester")   # made on first use
    model = k3.MobileNetV2_3D.from_preset("synthetic_gestures")        # the shipped model
    model.save_to_preset("my_preset")                     # your own, in the same layout
    model = k3.presets.from_preset("my_preset")           # any family
    meta = k3.presets.preset_metadata("my_preset")        # frames, size, normalisation, labels

A preset directory holds, as keras-hub's do, ``config.json`` (the serialized model),
``model.weights.h5`` and ``metadata.json`` (keras-hub's fields, and ``model_metadata``: the
input the model expects, its normalisation and labels, as `keras_efficient3d.artifacts`
records them). It loads on every Keras backend.

The published presets are made on first use from the authors' checkpoint, which the user
downloads (the file name as the authors distribute it; see `PUBLISHED`): it is looked for in
the ``checkpoint=`` argument, then in ``<home>/checkpoints`` (home: ``$KERAS_EFFICIENT3D_HOME``,
default ``~/.keras/keras_efficient3d``), converted with `keras_efficient3d.convert` (no
PyTorch needed) and cached in ``<home>/presets/<name>``.
"""

import csv
import dataclasses
import datetime
import fnmatch
import functools
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import warnings

import keras

from keras_efficient3d import __version__, registry
from keras_efficient3d.artifacts import (
    CHECKPOINT_DIGEST,
    ModelMetadata,
    atomic_write_json,
    metadata_misfits,
    move_entries,
    read_metadata,
    resaved_metadata,
)
from keras_efficient3d.atomic import replace_folder
from keras_efficient3d.models import _base

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
FAMILY_FIELD = "keras_efficient3d_family"  # in metadata.json; None for a model of no family
SOURCE = ("the authors' Efficient-3DCNNs release (github.com/okankop/Efficient-3DCNNs, "
          "README 'Pretrained models')")


@dataclasses.dataclass(frozen=True)
class PublishedPreset:
    """One published configuration of the paper.

    Attributes:
        name: preset name ('mobilenetv2_1.0x_jester').
        model: registry configuration name ('mobilenetv2_1.0x').
        dataset: 'kinetics600' or 'jester'.
        checkpoint: the authors' file name ('jester_mobilenetv2_1.0x_RGB_16_best.pth').
        num_classes: classes of the head.
        normalization: `keras_efficient3d.data.Normalization` preset name of its input.
        frames, size, downsample: the clip the model was trained on.
        top1: Table 8's top-1 video accuracy (%) on the dataset.
        labels: a shipped label set (`keras_efficient3d.label_sets.LABEL_SETS`) or None.
        expected: (key, value) pairs of the model the checkpoint must hold: ``model`` (the
            family) and the builder arguments the paper's row fixes, ``num_classes``
            included (`keras_efficient3d.convert.check_expected`).
    """

    name: str
    model: str
    dataset: str
    checkpoint: str
    num_classes: int
    normalization: str
    frames: int
    size: int
    downsample: int
    top1: float
    labels: str | None
    expected: tuple = ()


_DATASETS = {
    # dataset: (file prefix, classes, normalisation preset, temporal downsample, labels)
    "kinetics600": ("kinetics", 600, "kinetics", 1, None),
    "jester": ("jester", 27, "original", 2, "jester_original"),  # the checkpoints' order
}


def _published():
    from importlib import resources

    text = resources.files("keras_efficient3d").joinpath("resources/table8.csv").read_text(
        encoding="utf-8")
    rows = csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#"))
    out = {}
    for row in rows:
        family = registry.get_family(row["arch"])
        # the authors' file names spell depths apart: kinetics_resnet_18_...
        match = re.fullmatch(r"(resnet|resnext)(\d+)", row["arch"])
        arch, depth = (match[1], match[2]) if match else (row["arch"], "")
        width = f"_{row['width_mult']}x" if row["width_mult"] else ""
        groups = f"_g{row['groups']}" if row["groups"] else ""
        model = f"{row['arch'] if depth else family.name}{width}{groups}"
        registry_name, named = registry.resolve_name(model)
        fixed = dict(family.registry_names().get(registry_name, {}), **named,
                     **family.paper_rows.get(row["arch"], (None, {}, ""))[1])
        stem = (f"{arch}{'_' + depth if depth else ''}{width}"
                f"{'_G' + row['groups'] if row['groups'] else ''}_RGB_16_best.pth")
        for dataset, (prefix, classes, norm, downsample, labels) in _DATASETS.items():
            if depth and dataset != "kinetics600":
                continue  # the ResNets/ResNeXt were published for Kinetics only
            name = f"{model}_{dataset}"
            expected = dict(fixed, model=family.name, num_classes=classes)
            out[name] = PublishedPreset(name, model, dataset, f"{prefix}_{stem}", classes, norm,
                                        16, 112, downsample, float(row[f"acc_{dataset}"]), labels,
                                        tuple(sorted(expected.items())))
    return out


PUBLISHED = _published()
BUILTIN = {"synthetic_gestures": "synthetic_gestures.keras"}  # shipped in saved_models/


def list_presets(pattern=None):
    """Names of the published and built-in presets (shell-style `pattern`)."""
    names = sorted(PUBLISHED) + sorted(BUILTIN)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def home():
    """Where presets are cached and downloaded checkpoints looked for."""
    return os.environ.get("KERAS_EFFICIENT3D_HOME",
                          os.path.join(os.path.expanduser("~"), ".keras", "keras_efficient3d"))


def _shipped_dir():
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "saved_models")


# ---------------------------------------------------------------------------------------
# The layout.


def save_to_preset(model, preset_dir, metadata=None):
    """Writes `model` as a preset directory: ``config.json``, ``model.weights.h5`` and
    ``metadata.json`` (`metadata`: a `ModelMetadata` or its dict: input, normalisation,
    labels; default: what the model records, read with it from its ``.keras`` file or
    preset). Metadata of another clip or class count than the model's is refused. Returns
    `preset_dir`."""
    preset_dir = os.fspath(preset_dir)
    if os.path.exists(preset_dir) and not os.path.isdir(preset_dir):
        raise ValueError(f"`preset_dir` must be a directory. Received: preset_dir={preset_dir}")
    given = metadata is not None
    if metadata is None:
        metadata = getattr(model, "_recorded_metadata", None)
    if metadata is not None:
        _check_fits(model, ModelMetadata.from_dict(metadata), given)
    os.makedirs(preset_dir, exist_ok=True)
    meta = {
        "keras_version": keras.__version__,
        "keras_efficient3d_version": __version__,
        FAMILY_FIELD: model_family(model),
        "parameter_count": int(model.count_params()),
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
    }
    if metadata is not None:
        meta["model_metadata"] = ModelMetadata.from_dict(metadata).to_dict()
    # All three written in a folder inside first, then moved in (the config last): a save
    # that fails (a full disk, a model Keras cannot save) leaves the preset there whole,
    # not the new config over the old weights.
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=preset_dir,
                                     ignore_cleanup_errors=True) as staging:
        model.save_weights(os.path.join(staging, WEIGHTS_FILE))
        atomic_write_json(os.path.join(staging, METADATA_FILE), meta)
        atomic_write_json(os.path.join(staging, CONFIG_FILE),
                          keras.saving.serialize_keras_object(model))
        move_entries(staging, preset_dir, (WEIGHTS_FILE, METADATA_FILE, CONFIG_FILE))
    return preset_dir


def _check_fits(model, metadata, given):
    """Refuses metadata that describes another model (`artifacts.metadata_misfits`): another
    preset's, given as `metadata=`, was written as it was, and predict then fed the model
    clips of that preset's size."""
    misfits = metadata_misfits(model, metadata)
    if misfits:
        fix = ("give this model's (a model loaded from its .keras file or preset brings its own)"
               if given else "the model was changed since it was loaded: give its metadata=")
        raise ValueError(f"the metadata describes another model: {'; '.join(misfits)}; {fix}")


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable preset file ({err}).") from None


def _read_metadata(directory):
    """The preset's metadata file as a dict; {} where it has none (a preset of config and
    weights alone loads all the same)."""
    path = os.path.join(directory, METADATA_FILE)
    return _read_json(path) if os.path.exists(path) else {}


def preset_metadata(preset, **kwargs):
    """The `ModelMetadata` of a preset (name or directory), or None when none is recorded.

    A published preset not made yet is described without its checkpoint (the paper's
    configuration: input, normalisation, labels, the file it is made from), so that what it
    takes and predicts can be read before the download; ``checkpoint=`` makes it first."""
    name = preset_name(preset)
    spec = PUBLISHED.get(name)
    if spec is not None and kwargs.get("checkpoint") is None and not os.path.isdir(name) and \
            not _is_made(os.path.join(home(), "presets", name)):
        return _published_metadata(spec)
    data = _read_metadata(resolve_preset(preset, **kwargs))
    recorded = data.get("model_metadata")
    return None if recorded is None else ModelMetadata.from_dict(recorded)


def load_preset_dir(preset_dir):
    """The model of a preset directory (any family)."""
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not os.path.isfile(os.path.join(preset_dir, name)):
            raise ValueError(f"{preset_dir}: not a preset directory (no {name}).")
    config = _read_json(os.path.join(preset_dir, CONFIG_FILE))
    import keras_efficient3d  # noqa: F401  registers the package's layers for the config

    model = keras.saving.deserialize_keras_object(config)
    weights = os.path.join(preset_dir, WEIGHTS_FILE)
    try:
        with warnings.catch_warnings():  # Keras' warning per layer that a mismatch left out
            warnings.simplefilter("ignore")
            model.load_weights(weights)
    except (OSError, ValueError) as err:  # h5py's "truncated file", Keras' "55 objects"
        detail = " ".join(str(err).split())
        raise ValueError(f"{weights}: not weights of the model its {CONFIG_FILE} describes "
                         f"(a truncated file, or another model's: {detail[:200]})") from None
    model = _base.video_model(model)
    recorded = _read_metadata(preset_dir).get("model_metadata")
    if recorded is not None and isinstance(model, _base.VideoModel):
        # outside Keras' attribute tracking: `VideoModel.save` writes it into .keras files,
        # less the figures and digest of the preset's own file (a saved model is another)
        object.__setattr__(model, "_recorded_metadata",
                           resaved_metadata(ModelMetadata.from_dict(recorded)))
    return model


# ---------------------------------------------------------------------------------------
# Named presets, made on first use.


def preset_name(preset):
    """`preset` as a path, or as the name of `list_presets` it names in any case (as model
    names are looked up)."""
    preset = os.fspath(preset)
    if not os.path.isdir(preset) and preset.lower() in (*PUBLISHED, *BUILTIN):
        return preset.lower()
    return preset


def resolve_preset(preset, checkpoint=None, log=print):
    """The directory of `preset`: a preset directory, or a name of `list_presets` (made in
    the cache on first use, and again when `checkpoint` is not the file the cached one was
    made from). Raises FileNotFoundError (one line: where the checkpoint
    comes from) when a published preset's checkpoint is not on this machine."""
    preset = preset_name(preset)
    if checkpoint is not None and preset not in PUBLISHED:
        # only a published preset is made from a checkpoint: another's weights are its own,
        # and a checkpoint= would be dropped while the caller takes them for its file's
        what = "a preset directory" if os.path.isdir(preset) else (
            f"made from {BUILTIN[preset]}" if preset in BUILTIN else None)
        if what is not None:
            raise ValueError(f"Preset '{preset}' is {what}, not made from a checkpoint: give "
                             "no checkpoint (a published preset's name takes one; convert "
                             f"the file with python -m keras_efficient3d.convert). Received: "
                             f"checkpoint={checkpoint}")
    if os.path.isdir(preset):
        return preset
    if preset not in PUBLISHED and preset not in BUILTIN:
        import difflib

        names = list_presets()
        # the closest names (a typo's), else the first few
        near = difflib.get_close_matches(preset, names, n=3, cutoff=0.6) or names[:3]
        raise ValueError(f"Unknown preset '{preset}': not a directory, and not one of "
                         f"list_presets() ({len(names)} names, e.g. {', '.join(near)}). "
                         f"Received: preset={preset}")
    cached = os.path.join(home(), "presets", preset)
    remake = False
    source = None
    if preset in BUILTIN:
        # made from the repository's file, which a demo run with --publish=saved_models
        # rewrites: the cache is that file's, or is remade
        source = os.path.join(_shipped_dir(), BUILTIN[preset])
        if not os.path.isfile(source):
            if _is_made(cached):  # what there is
                return cached
            raise FileNotFoundError(f"Preset '{preset}' is made from {source}, which ships "
                                    "with the repository (saved_models/); it is missing.")
        checkpoint = source
    if _is_made(cached):
        if checkpoint is None:
            if source is None:
                _correct_labels(PUBLISHED[preset], cached, log)
            return cached
        # checkpoint= names the file to make it from: the cache is that file's, or is remade.
        if os.path.isfile(checkpoint) and _made_from(cached) == _digest(checkpoint):
            return cached
        remake = True
    if source is not None:
        _make_builtin(source, cached, remake)
    else:
        _make_published(PUBLISHED[preset], cached, checkpoint, log, remake)
    if remake:
        changed = "that file has changed since" if source is not None else "another file"
        log(f"preset '{preset}' remade from {checkpoint} (the cached one was made from "
            f"{changed}), saved in {cached}")
    else:
        log(f"preset '{preset}' saved in {cached}")
    return cached


def _make_builtin(source, cached, replace):
    """The preset of a shipped `.keras` file, recording the digest of the bytes it was loaded
    from: a file rewritten meanwhile (a demo run) leaves no cache that looks up to date."""
    with tempfile.TemporaryDirectory(prefix="keras_efficient3d-preset-") as tmp:
        snapshot = os.path.join(tmp, os.path.basename(source))
        shutil.copyfile(source, snapshot)
        model = keras.saving.load_model(snapshot, compile=False)
        metadata = read_metadata(snapshot) or ModelMetadata()
        digest = _digest(snapshot)
    metadata = dataclasses.replace(metadata, extra=dict(metadata.extra, **{CHECKPOINT_DIGEST: digest}))
    _make(cached, model, metadata, replace)


def _correct_labels(spec, cached, log):
    """A Jester preset made before version 0.1.0's fix recorded jester-v1-labels.csv's order,
    not the order the original numbers the classes in (its outputs'): its metadata is
    rewritten with the right names (the weights are right as they are)."""
    meta = _read_metadata(cached)
    recorded = meta.get("model_metadata") or {}
    labels = _published_labels(spec)
    if not labels or recorded.get("labels") in (None, labels):
        return
    meta["model_metadata"] = dict(recorded, labels=labels)
    atomic_write_json(os.path.join(cached, METADATA_FILE), meta)
    log(f"preset '{spec.name}': its class names rewritten in the order its outputs follow (the "
        "original's; it was made with jester-v1-labels.csv's order)")


def _is_made(cached):
    # metadata.json is written last: a folder without it is half-made
    return os.path.isfile(os.path.join(cached, METADATA_FILE))


def _digest(path):
    """SHA-256 of a file, hex."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _made_from(cached):
    """The digest of the checkpoint a cached published preset was made from (None: not
    recorded, as in presets made before it was)."""
    try:
        recorded = _read_metadata(cached).get("model_metadata")
        return None if recorded is None else ModelMetadata.from_dict(recorded).extra.get(
            CHECKPOINT_DIGEST)
    except ValueError:  # a damaged metadata file: remade
        return None


def _make(cached, model, metadata, replace=False):
    """Writes the preset beside `cached`, then renames it there: no half-made preset.
    `replace`: a made preset there is replaced (else one made meanwhile is kept)."""
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".staging-", dir=os.path.dirname(cached))
    try:
        save_to_preset(model, staging, metadata)
        if _is_made(cached) and not replace:
            return  # another process made it meanwhile: theirs stays, in use or not
        try:  # a half-made one there, or the one replaced, is moved aside first
            replace_folder(staging, cached)
        except OSError:  # another process's rename came first
            if not _is_made(cached):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _make_published(spec, cached, checkpoint, log, replace=False):
    from keras_efficient3d import convert

    path = checkpoint or os.path.join(home(), "checkpoints", spec.checkpoint)
    if checkpoint and not os.path.isfile(path):
        what = "a folder, not a file" if os.path.isdir(path) else "no such file"
        raise FileNotFoundError(f"Preset '{spec.name}': checkpoint={checkpoint}: {what} "
                                f"(the preset is made from {spec.checkpoint}, from {SOURCE}).")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Preset '{spec.name}' is made from {spec.checkpoint}, from {SOURCE}: download it "
            f"to {path} or pass checkpoint=PATH.")
    try:
        model, metadata = convert.build_converted(
            path, spec.frames, spec.size, normalization=spec.normalization,
            labels=_published_labels(spec), log=log, expected=dict(spec.expected))
    except convert.ConversionError as err:
        raise convert.ConversionError(f"Preset '{spec.name}' cannot be made from {path}: "
                                      f"{err}") from None
    metadata = dataclasses.replace(
        metadata, downsample=spec.downsample,
        extra=dict(metadata.extra, **_published_extra(spec), **{CHECKPOINT_DIGEST: _digest(path)}))
    _make(cached, model, metadata, replace)


def _published_labels(spec):
    if not spec.labels:
        return None
    from keras_efficient3d.label_sets import shipped_labels

    return shipped_labels(spec.labels)


def _published_extra(spec):
    return {"preset": spec.name, "dataset": spec.dataset, "paper_top1": spec.top1}


def _converted_model_field(spec):
    # as `convert.convert_checkpoint` records it: ResNets by depth ("resnet18"), not a family
    expected = dict(spec.expected)
    name, kwargs = registry.resolve_name(expected.pop("model"), **expected)
    return dict(kwargs, model=name)


def _published_metadata(spec):
    """What a published preset's metadata will be once made, less what only its checkpoint
    says (the epoch, the file's digest): `source` is the authors' file name."""
    from keras_efficient3d.data.normalization import Normalization

    return ModelMetadata(
        frames=spec.frames, size=spec.size, downsample=spec.downsample, layout="NDHWC",
        normalization=Normalization.coerce(spec.normalization), labels=_published_labels(spec),
        model=_converted_model_field(spec), dtype="float32, already normalised",
        extra={"source": spec.checkpoint, **_published_extra(spec)})


def from_preset(preset, checkpoint=None, log=print):
    """The model of `preset` (a name of `list_presets` or a preset directory), any family.

    Args:
        preset: preset name or directory.
        checkpoint: for a published preset: the downloaded ``.pth`` to make it from (a
            preset cached from another file, by its SHA-256, is remade from this one).
        log: where progress lines go (conversion notes, the cache path).
    """
    return load_preset_dir(resolve_preset(preset, checkpoint, log))


def _family_name(model_name):
    family = registry.get_family(model_name)
    return None if family is None else family.name


def model_family(model):
    """The family name of `model` read from its layers (whose layer names map onto the
    original's modules), not from its name, which the user may have chosen; None when no
    family, or more than one, fits."""
    fits = []
    for family in registry.families():
        try:
            family.torch_paths(model)
        except (ValueError, KeyError, IndexError, AttributeError, TypeError):
            continue
        fits.append(family.name)
    if set(fits) == {"resnet", "resnext"}:
        # Same layer names; ResNeXt's blocks have grouped convolutions.
        grouped = any(getattr(layer, "groups", 1) > 1 for layer in model.layers)
        fits = ["resnext" if grouped else "resnet"]
    return fits[0] if len(fits) == 1 else None


def builder_from_preset(builder, preset, checkpoint=None, log=print):
    """`from_preset` that checks the preset holds a model of `builder`'s family: the one its
    layers show, else the family recorded in its metadata."""
    wanted = {f.name for f in registry.families() if f.builder is builder}
    preset = preset_name(preset)
    spec = PUBLISHED.get(preset)
    if spec is not None and not os.path.isdir(os.fspath(preset)):
        # known before its checkpoint is looked for: no "download it" for a preset refused after
        _refuse_family(preset, dict(spec.expected)["model"], wanted, builder)
    directory = resolve_preset(preset, checkpoint, log)
    data = _read_metadata(directory)
    meta = data.get("model_metadata") or {}
    recorded = data.get(FAMILY_FIELD) or (meta.get("model") or {}).get("model")
    model = load_preset_dir(directory)
    # metadata.json is a file a user may have copied from another preset: the model is what
    # config.json and the weights hold, where its layers tell (a folded or preprocessing
    # model's may not: then the record)
    _refuse_family(preset, model_family(model) or recorded, wanted, builder)
    return model


def _refuse_family(preset, recorded, wanted, builder):
    if recorded and _family_name(recorded) not in wanted:
        raise ValueError(f"Preset '{preset}' holds a {recorded} model, not a "
                         f"{builder.__name__}; use keras_efficient3d.presets.from_preset. "
                         f"Received: preset={preset}")


def attach_to_builders():
    """``Builder.from_preset(preset, checkpoint=None)`` on every family's builder."""
    for family in registry.families():
        family.builder.from_preset = functools.partial(builder_from_preset, family.builder)
