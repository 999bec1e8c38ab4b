"""Training with ``model.fit`` on the tf.data video pipelines, as the original trains.

`TrainConfig` holds every option (the original's, in Python style); `train(config)` builds
the data, model, optimizer and callbacks and fits; the CLI `training/train.py` only maps
absl flags onto a `TrainConfig`. Output directory layout::

    OUT/config.json          the effective configuration
    OUT/last.keras           written every `checkpoint_every` epochs (atomically)
    OUT/best.keras           best validation clip accuracy so far
    OUT/train_state.json     epoch, best accuracy, learning rate: what `resume` needs
    OUT/log.csv              per-epoch metrics; OUT/curves.png; OUT/tensorboard/
"""

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import numbers
import operator
import os
import shutil
import signal
import sys
import threading
import time
import warnings

import keras

from keras_efficient3d import registry, runtime
from keras_efficient3d._tf import tf
from keras_efficient3d.artifacts import (
    BEST_CHECKPOINT,
    TRAINED_ON,
    TRAINING_STATE,
    ModelFileError,
    ModelMetadata,
    atomic_write,
    atomic_write_json,
    checkpoint_epoch,
    keras_config,
    keras_model_file,
    load_model,
    read_metadata,
    save_model,
)
from keras_efficient3d.data.normalization import PRESETS, Normalization
from keras_efficient3d.data.pipeline import quiet_end_of_data
from keras_efficient3d.data.spatial import TRAIN_CROPS
from keras_efficient3d.evaluation import top5_can_miss
from keras_efficient3d.label_sets import class_key
from keras_efficient3d.models._base import VideoModel, single_input
from keras_efficient3d.optim import TopKAccuracy, TorchSGD

DATASETS = ("jester", "kinetics600", "ucf101", "folders", "synthetic")
SCHEDULES = ("steps", "plateau", "cosine", "constant")
DISTRIBUTIONS = ("none", "mirrored", "multiworker")


# The options of a fixed set of values, each with its values (train.py checks its flags
# against them as absl parses them, so that a flagfile's bad value names its line).
CHOICES = {"dataset": DATASETS, "lr_schedule": SCHEDULES, "optimizer": ("sgd", "adam"),
           "ft_portion": ("complete", "last_layer"), "distribution": DISTRIBUTIONS,
           "crop": TRAIN_CROPS}


def _whole(minimum, optional=False):
    def ok(value):
        if value is None:
            return optional
        try:
            return operator.index(value) >= minimum  # an int, a NumPy integer: not 1.5
        except TypeError:
            return False
    return ok


def _number(test, optional=False):
    def ok(value):
        if value is None:
            return optional
        # NaN fails every test (and would train an epoch): isfinite first
        return isinstance(value, numbers.Real) and math.isfinite(value) and test(value)
    return ok


_POSITIVE = "a positive integer"
# The options checked one at a time, each with what it expects (train.py checks its flags
# against them as absl parses them, as CHOICES, so that a flagfile's bad value names its
# line); TrainConfig.validate checks them too, with the checks that read two options.
RANGES = {
    "ucf101_fold": (lambda v: v in (1, 2, 3), "1, 2 or 3"),
    **{name: (_whole(1), _POSITIVE) for name in ("frames", "size", "downsample", "batch_size",
                                                  "epochs", "checkpoint_every")},
    "threads": (_whole(0), "0 (the default) or a positive integer"),
    "learning_rate": (_number(lambda v: v > 0), "a positive number"),
    "weight_decay": (_number(lambda v: v >= 0), "0 or a positive number"),
    "steps_per_epoch": (_whole(1, optional=True),
                        "a positive integer (or none: one pass over the training split)"),
    "max_decode_failures": (_whole(0, optional=True), "0 or a positive integer"),
    "verbose": (lambda v: v in (0, 1, 2),
                "0 (silent), 1 (a progress bar) or 2 (one line per epoch)"),
    "cpu_devices": (_whole(0), "0 (the CPU as one device) or a positive integer"),
    "lr_patience": (_whole(0), "0 or a positive integer"),
    # a rate multiplied by 0 or less trains nothing, or climbs, without a word
    "lr_gamma": (_number(lambda v: v > 0), "a positive number"),
    # TorchSGD refuses momentum 1 or more, but only once the data is indexed; a dampening
    # outside 0-1 turns the step against the gradient, or past it, without a word
    "momentum": (_number(lambda v: 0 <= v < 1), "a number from 0 up to 1 (not 1)"),
    "dampening": (_number(lambda v: 0 <= v <= 1), "a number from 0 to 1"),
    "dropout": (_number(lambda v: 0 <= v < 1, optional=True), "a rate from 0 up to 1 (not 1)"),
    "num_classes": (_whole(1, optional=True), "a positive integer (or none: the dataset's)"),
}


@dataclasses.dataclass
class TrainConfig:
    """Every training option; defaults are the original's (opts.py, run-jester.sh)."""

    # Data
    dataset: str = "jester"
    data_root: str = ""  # synthetic: "" is the demo's set (data.synthetic.cached_gestures)
    # CSV folder / JSON (Jester); CSV folder, CSV or comma-separated CSVs (Kinetics); list
    # folder (UCF-101)
    annotations: str | None = None
    ucf101_fold: int = 1
    frames: int = 16  # the original's sample_duration
    size: int = 112  # sample_size
    downsample: int = 1
    crop: str = "random"
    hflip: bool | None = None  # None: off for Jester and the synthetic gestures, on otherwise
    normalization: str = "original"
    cache: bool = False
    max_decode_failures: int = 100
    # Model
    model: str = "mobilenetv2"
    width_mult: float | None = None
    groups: int | None = None
    version: float | None = None
    depth: int | None = None
    shortcut: str | None = None
    cardinality: int | None = None
    dropout: float | None = None
    num_classes: int | None = None  # None: the dataset's
    # Optimisation: "sgd" is torch.optim.SGD, as the original; "adam" converges faster from
    # scratch on small data (the synthetic demo). `weight_decay` is SGD's L2 term through the
    # gradient (PyTorch's), and Adam's decoupled decay (AdamW: an L2 term through Adam's
    # moments would be scaled down wherever gradients are large).
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    lr_schedule: str = "steps"
    lr_steps: tuple = (40, 55, 65, 70, 200, 250)
    lr_gamma: float = 0.1
    lr_patience: int = 10
    # Epochs over which the rate rises linearly, batch by batch, from near 0 to the
    # schedule's (steps, cosine and constant schedules).
    warmup_epochs: int = 0
    momentum: float = 0.9
    dampening: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-3
    batch_size: int = 16
    epochs: int = 250
    steps_per_epoch: int | None = None  # None: one pass over the training split
    # Initialisation and fine-tuning
    resume: bool = False
    pretrained: str | None = None  # a .keras model (e.g. converted Kinetics) to start from
    ft_portion: str = "complete"  # or "last_layer"
    # Bookkeeping
    output_dir: str = "runs/train"
    checkpoint_every: int = 1
    seed: int | None = 0
    mixed_precision: bool = False  # float16 compute on GPUs
    distribution: str = "none"
    cpu_devices: int = 0  # >1 splits the CPU into logical devices (testing MirroredStrategy)
    # CPU threads for TensorFlow, spent by runtime.tf_thread_plan (a depthwise model: half per
    # op, two ops at a time); 0: TensorFlow's default. The default stays: the demo's epochs,
    # fed by its tf.data pipeline, took the same 10-11 s either way.
    threads: int = 0
    verbose: int = 1

    def validate(self):
        def bad(name, expected):
            raise ValueError(f"Invalid training option `{name}`: expected {expected}. "
                             f"Received: {name}={getattr(self, name)!r}")

        for name, values in CHOICES.items():
            if getattr(self, name) not in values:
                bad(name, f"one of {values}")
        if not self.data_root and self.dataset != "synthetic":  # synthetic: the cached set
            bad("data_root", "the dataset's folder")
        # The pipeline would refuse these too, but only after the dataset is indexed and
        # config.json is written.
        try:
            Normalization.coerce(self.normalization)
        except ValueError:
            bad("normalization", f"one of {tuple(sorted(PRESETS))}, a Normalization or its config")
        for name, (ok, expected) in RANGES.items():
            if not ok(getattr(self, name)):
                bad(name, expected)
        if not 0 <= int(self.warmup_epochs) < int(self.epochs):
            bad("warmup_epochs", "an integer from 0 to epochs - 1")
        if self.warmup_epochs and self.lr_schedule == "plateau":
            bad("warmup_epochs", "0 with the plateau schedule (it sets the rate itself)")
        if self.pretrained and not self.resume and os.path.dirname(os.path.abspath(self.pretrained)) == \
                os.path.abspath(self.output_dir) and os.path.basename(self.pretrained) in _RUN_FILES:
            bad("pretrained", "a file outside --output (a new run there moves the files of the "
                "run before it into previous/; copy it out first)")
        if self.lr_schedule == "plateau" and not self.lr_gamma < 1:
            bad("lr_gamma", "a number below 1 with the plateau schedule (it lowers the rate)")
        # An unknown model name fails here, before the dataset is indexed.
        registry.resolve_name(self.model, depth=self.depth)
        return self

    def to_json(self):
        """config.json's text, its paths absolute: evaluate.py reads the run's data from
        wherever it is run (a relative --data_root named a folder of the training's cwd)."""
        values = dataclasses.asdict(self)
        # not --pretrained: a resumed run's (the flagfile's) is compared with it, from
        # wherever the project is checked out
        for key in ("data_root", "annotations"):
            if values[key]:
                several = (key == "annotations" and self.dataset == "kinetics600"
                           and not os.path.isdir(values[key]))  # TRAIN.csv,VAL.csv
                parts = values[key].split(",") if several else [values[key]]
                values[key] = ",".join(os.path.abspath(part.strip()) for part in parts
                                       if part.strip())
        return json.dumps(values, indent=2, sort_keys=True)


# ---------------------------------------------------------------------------------------
# Data


def load_split(config, split, classes=None):
    """(records, class names) of `split` ('train' or 'validation') of the configured dataset.

    `classes`: the class names that the labels index (the training split's, or a model's);
    Kinetics and the folder layout otherwise take them from the split itself, and a split
    lacking a class would shift every label after it. A label outside them is a DataError."""
    from keras_efficient3d import data

    root = config.data_root
    if not os.path.isdir(root):
        raise ValueError(f"The data folder does not exist: {root}")
    if config.dataset in ("jester", "synthetic"):
        return data.index_jester(root, split, config.annotations, name=config.dataset)
    if config.dataset == "kinetics600":
        return data.index_kinetics(root, kinetics_csvs(config, split),
                                   "train" if split == "train" else "validate", classes=classes)
    if config.dataset == "ucf101":
        return data.index_ucf101(root, "train" if split == "train" else "test",
                                 config.ucf101_fold, config.annotations)
    return data.index_folders(root, "train" if split == "train" else "val", classes=classes)


# The names each split's CSV goes by: DeepMind's release (train.csv, validate.csv), CVDF's
# copy (val.csv) and the ActivityNet crawler's (kinetics-600_val.csv).
_KINETICS_CSV_NAMES = {
    "train": ("train.csv", "kinetics-600_train.csv", "kinetics_600_train.csv"),
    "validation": ("validate.csv", "val.csv", "validation.csv", "kinetics-600_val.csv",
                   "kinetics_600_val.csv", "kinetics-600_validate.csv",
                   "kinetics_600_validate.csv"),
}


def kinetics_csvs(config, split):
    """The Kinetics CSVs of `split`: --annotations is a folder holding the split's CSV
    (`_KINETICS_CSV_NAMES`; default: --data_root), one CSV or comma-separated CSVs (their rows
    are taken by their split column)."""
    from keras_efficient3d.data import DataError

    where = config.annotations or config.data_root
    if os.path.isdir(where):
        names = _KINETICS_CSV_NAMES["train" if split == "train" else "validation"]
        for name in names:
            if os.path.isfile(os.path.join(where, name)):
                return [os.path.join(where, name)]
        raise DataError(f"no {'training' if split == 'train' else 'validation'} CSV (looked for "
                        f"{', '.join(names)}): name the CSVs with --annotations=TRAIN.csv,"
                        "VAL.csv", where)
    return [path.strip() for path in where.split(",") if path.strip()]


def load_splits(config):
    """(training records, validation records, class names): the validation split is indexed
    with the training split's classes, so that its labels mean the same outputs."""
    if config.dataset == "kinetics600":
        kinetics_csvs(config, "validation")  # a CSV not found: said before minutes of indexing
    train_records, classes = load_split(config, "train")
    if not train_records:
        raise ValueError(f"No training videos found under {config.data_root}.")
    if len(classes) < 2:  # nothing to learn (the loss is 0 from the start): a wrong folder?
        where = None
        if config.dataset == "folders":
            where = "is --data_root the folder above the class folders?"
        elif config.dataset == "kinetics600":  # its classes are those its CSV names
            where = f"its training CSV names one: {', '.join(kinetics_csvs(config, 'train'))}"
        raise ValueError(f"{config.data_root}: the dataset has one class ({classes[0]}); a "
                         "classifier needs two or more" + (f" ({where})" if where else ""))
    seen = {record.label for record in train_records}
    unseen = [name for i, name in enumerate(classes) if i not in seen]
    if unseen:
        # a class folder missing or empty: the model is still given its output, never trained
        shown = ", ".join(unseen[:5]) + (", ..." if len(unseen) > 5 else "")
        print(f"warning: {len(unseen)} of the {len(classes)} classes have no training video "
              f"({shown})", file=sys.stderr)
    val_records, _ = load_split(config, "validation", classes)
    # abspath: no system call per video (realpath stats each: 15 s for Kinetics' 400k)
    trained = {os.path.abspath(record.path) for record in train_records}
    both = [record.path for record in val_records if os.path.abspath(record.path) in trained]
    if both:  # validation accuracy of videos trained on: a list or a folder mixed up?
        print(f"warning: {len(both)} of the {len(val_records)} validation videos are training "
              f"videos too (first: {both[0]}): their accuracy is not a validation's",
              file=sys.stderr)
    if not val_records:
        # Checked before training: without validation clips best.keras has nothing to go by,
        # and the run would only fail at its end.
        raise ValueError(f"No validation videos in the {config.dataset} dataset's validation "
                         f"split (looked in {_split_source(config)}); training needs them to "
                         "choose best.keras")
    return train_records, val_records, classes


def _split_source(config):
    """Where the validation split is listed, in words, for an error message."""
    if config.dataset == "kinetics600":
        return ", ".join(kinetics_csvs(config, "validation"))
    if config.dataset == "ucf101":
        return os.path.join(config.annotations or config.data_root,
                            f"testlist0{config.ucf101_fold}.txt")
    if config.dataset == "folders":
        return os.path.join(config.data_root, "val")
    return config.annotations or config.data_root



@contextlib.contextmanager
def progress_line_ended_on_error(verbose):
    """Keras' progress bar (``verbose=1``) redraws its line with "\r" and ends it only with
    its epoch (Keras draws so on every POSIX system, terminal or not): an error or a Ctrl-C
    in the middle of an epoch printed its one line after the bar, on the same line."""
    try:
        yield
    except BaseException:
        if verbose == 1:
            # a stdout that fails too (a closed pipe, a full disk) leaves the error as it was
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.write("\n")
                sys.stdout.flush()
        raise


def _hflip(config):
    if config.hflip is not None:
        return config.hflip
    # The original does not flip Jester (a flip turns "Swiping Left" into "Swiping Right").
    return config.dataset not in ("jester", "synthetic")


def _flip_options(config, classes):
    """The pipeline's flip arguments: a flipped clip of a class with a direction in its name
    takes the mirror class (`spatial.mirror_labels`)."""
    from keras_efficient3d.data import spatial

    hflip = _hflip(config)
    return {"hflip": hflip, "hflip_labels": spatial.mirror_labels(classes) if hflip else None}


def _pipeline_options(config, batch_size, classes=()):
    from keras_efficient3d import data

    # One count of undecodable videos for the training and validation pipelines alike:
    # --max_decode_failures is the run's.
    return dict(sample_duration=config.frames, downsample=config.downsample,
                sample_size=config.size, batch_size=batch_size,
                normalization=config.normalization, cache=config.cache,
                failures=data.DecodeFailures(config.max_decode_failures, classes or None))


def make_datasets(config, train_records, val_records, classes=()):
    """The training and validation pipelines; `classes`, the class names, let flips swap the
    labels of mirrored gestures (`_flip_options`)."""
    from keras_efficient3d import data

    common = _pipeline_options(config, config.batch_size, classes)
    train = data.make_dataset(train_records, "train", crop=config.crop, seed=config.seed,
                              **_flip_options(config, classes), **common)
    val = data.make_dataset(val_records, "val", **common) if val_records else None
    return train, val


# ---------------------------------------------------------------------------------------
# Model and optimiser


def model_kwargs(config, num_classes):
    kwargs = {"width_mult": config.width_mult, "groups": config.groups,
              "version": config.version, "shortcut": config.shortcut,
              "cardinality": config.cardinality, "dropout": config.dropout}
    name = config.model
    if config.depth is not None and name in ("resnet", "resnext"):
        name = f"{name}{config.depth}"
    kwargs.update(num_classes=num_classes, input_shape=(config.frames, config.size, config.size, 3))
    return name, kwargs


def replace_head(model, num_classes, dropout=0.9):
    """Swaps the classifier for `num_classes` outputs (fine-tuning), as the original does
    after loading a pretrained model (dropout 0.9 for the efficient models)."""
    names = [layer.name for layer in model.layers]
    if "predictions" not in names:
        raise ValueError(f"Model '{model.name}' has no 'predictions' layer to replace.")
    head = model.get_layer("predictions")
    if isinstance(head, keras.layers.Dense):
        features = head.input
        if "avg_pool" in names:
            features = model.get_layer("avg_pool").output
            x = keras.layers.Dropout(dropout, name="dropout_ft")(features) if dropout else features
        else:
            x = features
        outputs = keras.layers.Dense(num_classes, name="predictions")(x)
    else:  # SqueezeNet's convolutional classifier
        from keras_efficient3d.layers import Conv3D
        x = head.input
        x = Conv3D(num_classes, 1, use_bias=True, name="predictions")(x)
        x = keras.layers.ReLU(name="predictions_relu")(x)
        outputs = keras.layers.GlobalAveragePooling3D(data_format="channels_last", name="avg_pool")(x)
    return VideoModel(single_input(model), outputs, name=model.name)


def check_model_fits(model, num_classes=None, frames=None, size=None, what=None):
    """Raises ValueError (one line naming the flags) when `model`'s outputs are not
    `num_classes` or its fixed input is not `frames` x `size` x `size`: checked before
    training or evaluation starts, not discovered in a TensorFlow error after the first steps
    (or, for the class count, never: a smaller head scores fine and means nothing)."""
    what = what or f"model '{model.name}'"
    outputs = model.output_shape[-1]
    if num_classes is not None and outputs is not None and outputs != num_classes:
        raise ValueError(f"{what} has {outputs} outputs but the dataset has {num_classes} "
                         f"classes (--num_classes, --dataset, --data_root)")
    _check_clip_shape(tuple(model.input_shape[1:4]), frames, size, what)
    return model


def _check_clip_shape(shape, frames, size, what):
    """Raises ValueError (one line) when clips of `shape` (frames, height, width; None where
    any) are not `frames` x `size` x `size` (None: any)."""
    wanted = (frames, size, size)
    if len(shape) == 3 and any(have is not None and want is not None and have != want
                               for have, want in zip(shape, wanted)):
        show = "x".join("?" if v is None else str(v) for v in shape)
        raise ValueError(f"{what} takes {show} clips (frames x height x width); --frames={frames} "
                         f"--size={size} do not match")


def _named(normalization):
    name = normalization.preset_name
    shown = f"{normalization.value_range} {normalization.channel_order}, mean {normalization.mean}"
    return f"'{name}' ({shown})" if name else shown


def another_architecture(config):
    """A ``note:`` line where --model names another architecture (family, depth, groups)
    than the --pretrained file records, whose architecture is trained (config.json keeps
    the flags given); None where they agree or the file records none. For a --model the
    user gave (the flag has a default)."""
    metadata = read_metadata(config.pretrained) if config.pretrained and \
        os.path.isfile(config.pretrained) else None
    recorded = (metadata.model if metadata is not None else None) or {}
    if "model" not in recorded:
        return None
    try:
        ours = registry.resolve_name(config.model, **{
            key: getattr(config, key) for key in ("depth", "groups")
            if getattr(config, key, None) is not None})
        theirs = registry.resolve_name(recorded["model"], **{
            key: recorded[key] for key in ("depth", "groups") if key in recorded})
    except ValueError:
        return None
    keys = ("depth", "groups")
    if ours[0] == theirs[0] and all(ours[1].get(k) in (None, theirs[1].get(k)) for k in keys):
        return None
    shown = " ".join(f"{key}={value}" for key, value in recorded.items()
                     if key in ("model", "width_mult", "groups", "depth"))
    return (f"note: --model={config.model} is not used: --pretrained={config.pretrained} holds "
            f"{shown}, which is trained")


def adopt_pretrained_normalization(config):
    """Where --normalization was not given: the normalisation the --pretrained file records
    (its features learnt on such clips), set on `config`, with a ``note:`` line; None where
    the file records none, or the same as the default's."""
    path = config.pretrained
    try:
        metadata = read_metadata(path) if path and os.path.isfile(path) else None
    except ValueError:  # a file that is no model: check_pretrained says what is wrong with it
        return None
    if metadata is None or metadata.normalization is None or metadata.preprocessing_included:
        return None
    recorded = metadata.normalization
    if recorded == Normalization.coerce(config.normalization):
        return None
    config.normalization = recorded.preset_name or recorded.to_config()
    return (f"note: clips are normalised as --pretrained={path} was trained: "
            f"{_named(recorded)}; --normalization sets another")


# Not the run's but the machine's and the session's: a run trained on 16 cores or a cluster
# resumes on a laptop with its defaults.
_OF_THE_SESSION = ("resume", "output_dir", "distribution", "cpu_devices", "threads", "verbose",
                   "cache")


def take_run_options(config, given):
    """`--resume`: the options of `config` not in `given` (field names the user gave, on
    the command line or in a flagfile) set to the run's own, from its config.json (a rate
    left out resumed at the default's, 0.1 for a run trained at 0.01, without a word).
    Returns ``{name: value}`` of those taken that differ from `config`'s; nothing where the
    run has no readable config.json (`_check_same_run` names a damaged one)."""
    path = os.path.join(config.output_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict):
        return {}
    skipped = set(_OF_THE_SESSION)
    if given & {"dataset", "data_root"}:  # the run's lists were of its own data
        skipped.add("annotations")
    if saved.get("dataset") == "synthetic" and not os.path.isdir(saved.get("data_root") or ""):
        skipped.add("data_root")  # the demo's cached set, made again where it is not
    taken = {}
    for field in dataclasses.fields(TrainConfig):
        name = field.name
        if name in given or name in skipped or name not in saved:
            continue
        value = tuple(saved[name]) if name == "lr_steps" and isinstance(saved[name], list) \
            else saved[name]
        if value != getattr(config, name):
            taken[name] = value
            setattr(config, name, value)
    return taken


def check_pretrained(config):
    """Refuses a `--pretrained` file that cannot be fine-tuned on the run's clips (a model
    with its preprocessing inside takes raw frames, and would normalise the normalised clips
    again), and warns where it was trained on clips normalised otherwise than this run's
    (a model trained as kinetics600.flags does, RGB, fine-tuned as ucf101.flags does, BGR)."""
    convert = ("convert the authors' checkpoint with python -m keras_efficient3d.convert "
               "--checkpoint=FILE.pth --output=FILE.keras")
    if config.pretrained.lower().endswith((".pth", ".pt", ".pth.tar")):
        raise ModelFileError(f"--pretrained={config.pretrained}: a PyTorch checkpoint; "
                             f"fine-tuning starts from a .keras model: {convert}")
    if not os.path.exists(config.pretrained):  # ucf101.flags names one to make first
        raise ModelFileError(
            f"--pretrained={config.pretrained}: file not found (a .keras model to fine-tune: "
            f"{convert.replace('FILE.keras', config.pretrained)}; --pretrained= trains from "
            "scratch)")
    keras_model_file(config.pretrained, "--pretrained")
    metadata = read_metadata(config.pretrained)
    if metadata is None:
        return
    if metadata.preprocessing_included:
        raise ValueError(f"--pretrained={config.pretrained} includes its preprocessing (it takes "
                         "raw frames: converted with --with_preprocessing), and training feeds "
                         "normalised clips; convert the checkpoint without --with_preprocessing "
                         "to fine-tune it")
    ours = Normalization.coerce(config.normalization)
    if metadata.normalization is not None and metadata.normalization != ours:
        print(f"warning: --pretrained={config.pretrained} was trained on clips normalised as "
              f"{_named(metadata.normalization)}; this run normalises as {_named(ours)} "
              "(--normalization): its features will see other inputs than they learnt",
              flush=True)


def _head_for_the_runs_classes(model, classes, path, num_classes):
    """`model` (of `num_classes` outputs, as the run) with a head for `classes`, the run's
    class names: its own where its file names the run's classes (their outputs put in the
    run's order where the file numbers them otherwise: an authors' Jester checkpoint,
    numbered alphabetically, fine-tuned on jester-v1-labels.csv's order); a new one where
    the file names other classes, as the original replaces the classifier whenever it
    fine-tunes (output 0, 'Swiping Left' in the file, would have trained as another class).
    A file that names no classes keeps its head. Each case but the first is a note."""
    def note(text):
        print(f"note: --pretrained={path} {text}", file=sys.stderr, flush=True)

    metadata = read_metadata(path)
    names = list(metadata.labels or []) if metadata else []
    if not names:
        note("records no class names: its head is kept, its outputs taken as the run's "
             "classes in their order")
        return model
    keys = [class_key(name) for name in names]
    wanted = [class_key(name) for name in classes]
    if keys[:len(wanted)] == wanted:  # the run's classes first (--num_classes above them)
        return model
    if sorted(keys) == sorted(wanted) and len(set(keys)) == len(keys):
        order = [keys.index(name) for name in wanted]
        head = model.get_layer("predictions")
        kernel, bias = head.get_weights()
        head.set_weights([kernel[..., order], bias[order]])
        note("numbers the run's classes in another order: its head's outputs are put in the "
             "run's order, by name")
        return model
    first = next((i for i, (a, b) in enumerate(zip(keys, wanted)) if a != b), min(len(keys), len(wanted)))
    theirs = repr(names[first]) if first < len(names) else "none"
    ours = repr(classes[first]) if first < len(classes) else "none"
    note(f"was trained on other classes (class {first}: its {theirs}, the run's {ours}): its "
         "head is replaced, as for another class count")
    return replace_head(model, num_classes)


def build_model(config, num_classes, classes=None):
    """The run's model: `--pretrained`'s (its head replaced for another class count or other
    class names than `classes`, the run's, or its outputs put in their order), else the
    registry's."""
    if config.pretrained:
        base = load_model(config.pretrained, compile=False)
        check_model_fits(base, None, config.frames, config.size, f"--pretrained={config.pretrained}")
        if base.output_shape[-1] != num_classes:
            base = replace_head(base, num_classes)
        elif classes is not None:
            base = _head_for_the_runs_classes(base, classes, config.pretrained, num_classes)
        # the file's record names its classes in its own order: not this model's
        object.__setattr__(base, "_recorded_metadata", None)
        model = base
    else:
        name, kwargs = model_kwargs(config, num_classes)
        model = registry.create_model(name, **kwargs)
    if config.ft_portion == "last_layer":
        train_the_head_alone(model)
    return model


_HEAD_LAYERS = ("predictions", "predictions_relu", "dropout_ft")


def train_the_head_alone(model):
    """`--ft_portion=last_layer` as the original has it: the head learns, and every other
    weight keeps its value (the original gives them a learning rate of 0), while BatchNorm
    goes on normalising each batch by its own statistics and updating its moving ones, as
    a PyTorch model in train() mode does. A frozen Keras BatchNorm would instead normalise
    by its moving statistics and keep them: its layer stays trainable, its scale and offset
    do not. Their trainable flags are not saved in a .keras file: `resume_model` calls
    this again."""
    for layer in model.layers:
        batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = batch_norm or layer.name in _HEAD_LAYERS
        if batch_norm:
            for variable in (layer.gamma if layer.scale else None,
                             layer.beta if layer.center else None):
                if variable is not None:
                    variable.trainable = False


def make_optimizer(config):
    if config.optimizer == "adam":
        return keras.optimizers.Adam(config.learning_rate, weight_decay=config.weight_decay or None)
    return TorchSGD(learning_rate=config.learning_rate, momentum=config.momentum,
                    dampening=0.0 if config.nesterov else config.dampening,
                    nesterov=config.nesterov, l2_weight_decay=config.weight_decay)


# Top-5 accuracy is logged only where it can miss (evaluation.top5_can_miss): of five
# classes or fewer the progress bar and log.csv showed a top5 of 1.0000 each epoch.
_TOP5_LOGS = ("top5", "val_top5")


def compile_model(model, config):
    """Compiles `model` for training as `config` says: the run's optimizer, its loss and
    metrics (top-5 for more than five classes), and this backend's own choice of
    `jit_compile`."""
    top5 = [TopKAccuracy(5, name="top5")] if top5_can_miss(int(model.outputs[0].shape[-1])) else []
    model.compile(
        optimizer=make_optimizer(config),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy", *top5],
    )


def resume_model(config, path, num_classes):
    """The model of the checkpoint `path`, compiled as a new run of `config` is, with the
    checkpoint's weights and optimizer state.

    Not Keras' own compile from the file: the run's optimizer, schedule and metrics are its
    config's, whatever the file recorded (and on whichever backend it was written)."""
    model = check_model_fits(load_model(path, compile=False), num_classes, config.frames,
                             config.size, path)
    object.__setattr__(model, "_recorded_metadata", None)  # last.keras' training state: its own
    if config.ft_portion == "last_layer":
        train_the_head_alone(model)
    compile_model(model, config)
    model.optimizer.build(model.trainable_variables)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.load_weights(path)  # the weights again, and the optimizer's variables
    skipped = [str(w.message) for w in caught if "optimizer" in str(w.message).lower()]
    if skipped:  # Keras only warns when the optimizer's variables do not match
        saved = _saved_optimizer(path)
        ours = type(model.optimizer).__name__
        if "LossScaleOptimizer" in (saved, ours) and saved != ours:
            mixed, plain = "under mixed precision (--mixed_precision on a GPU)", "in float32"
            then, now = (mixed, plain) if saved == "LossScaleOptimizer" else (plain, mixed)
            raise ValueError(f"{path}: the run trained {then} and this process trains {now}: "
                             "the optimizer state of one does not load into the other; resume "
                             "where it trained, with its --mixed_precision")
        raise ValueError(f"{path}: its optimizer state ({saved}) does not fit this run's "
                         f"(--optimizer={config.optimizer}, --momentum={config.momentum}): "
                         f"{skipped[0].splitlines()[0][:200].rstrip(' .')}; resume with "
                         "the run's own "
                         "options, or start a new run")
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # mixed precision's
    if isinstance(optimizer, TorchSGD) and optimizer.momentum and (
            _saved_optimizer(path, "momentum") == 0):
        # momentum turned on at resume: PyTorch's state held no buffer, and its next step
        # starts one at the gradient (a zero buffer would damp that step by `dampening`)
        optimizer.restart_momentum()
    return model


def _saved_optimizer(path, entry=None):
    """The optimizer class a `.keras` checkpoint was compiled with (its config.json), or
    the value of `entry` in its config (None where it has none)."""
    try:
        optimizer = keras_config(path)["compile_config"]["optimizer"]
        return optimizer["class_name"] if entry is None else optimizer["config"].get(entry)
    except (KeyError, TypeError, AttributeError):
        return "unknown" if entry is None else None


def learning_rate_at(config, epoch, progress=1.0):
    """Learning rate of 1-based `epoch` for the 'steps', 'cosine' and 'constant' schedules;
    within the warm-up epochs, `progress` (0 to 1] is how far into the epoch the batch is."""
    if config.lr_schedule == "steps":
        rate = config.learning_rate * config.lr_gamma ** sum(epoch >= s for s in config.lr_steps)
    elif config.lr_schedule == "cosine":
        rate = 0.5 * config.learning_rate * (1 + math.cos(math.pi * (epoch - 1) / config.epochs))
    else:
        rate = config.learning_rate
    if epoch <= config.warmup_epochs:
        rate *= (epoch - 1 + min(max(progress, 0.0), 1.0)) / config.warmup_epochs
    return rate


class EpochSchedule(keras.callbacks.Callback):
    """Sets the learning rate at the start of each epoch (the original's
    adjust_learning_rate, with 1-based epochs), and at each batch of the warm-up epochs
    (`TrainConfig.warmup_epochs`: a linear rise to the schedule's rate, for large rates or
    batches; the demo does not use it, two warmed-up runs ended 10 points lower)."""

    def __init__(self, config, steps_per_epoch=None):
        super().__init__()
        self.config = config
        self.steps_per_epoch = steps_per_epoch  # when Keras does not know it (params["steps"])
        self._epoch = 1

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1
        self.model.optimizer.learning_rate.assign(
            learning_rate_at(self.config, self._epoch, 1.0 / self._steps()))

    def on_train_batch_begin(self, batch, logs=None):
        if self._epoch <= self.config.warmup_epochs:
            self.model.optimizer.learning_rate.assign(
                learning_rate_at(self.config, self._epoch, (batch + 1) / self._steps()))

    def _steps(self):
        return max(1, int((self.params or {}).get("steps") or self.steps_per_epoch or 1))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            # the plateau schedule's (and Keras') name: log.csv has one column either way
            logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())


def model_metadata(config, classes, num_classes=None, extra=None):
    """What a model trained with `config` on `classes` expects and returns, recorded in its
    ``.keras`` archives and exports (read by `keras_efficient3d.predict`, `evaluate.py`,
    the exporters): clip shape, frame step, normalisation, class names (where one per
    output), the registry name and arguments."""
    num_classes = num_classes or len(classes)
    about = {**_architecture(config), "num_classes": num_classes}
    # what it was trained on: evaluate.py reads it for a model copied away from its run
    trained_on = {"dataset": config.dataset}
    if config.dataset == "ucf101":
        trained_on["ucf101_fold"] = config.ucf101_fold
    if config.pretrained:  # the architecture is the pretrained file's, not --model's
        about = {"num_classes": num_classes, "pretrained": config.pretrained}
    return ModelMetadata(
        frames=config.frames, size=config.size, downsample=config.downsample,
        normalization=Normalization.coerce(config.normalization), preprocessing_included=False,
        labels=list(classes) if len(classes) == num_classes else None, output="logits",
        layout="NDHWC", dtype="float32, already normalised", model=about,
        extra={TRAINED_ON: trained_on, **(extra or {})})




STATE_ENTRY = TRAINING_STATE  # last.keras' own record of what train_state.json holds


def read_state(path):
    """train_state.json's ``{"epoch", "best_accuracy", "learning_rate"}``; ValueError
    naming the file when it is not such a file (a damaged or hand-edited one)."""
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
        return _checked_state(state)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        detail = f"no {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
        raise ValueError(f"{path}: not a valid train_state.json ({detail}); expected "
                         '{"epoch": N, "best_accuracy": x, "learning_rate": r}') from None


def _checked_state(state):
    epoch = state["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise ValueError(f"epoch {epoch!r} is not a positive integer")
    rate, plateau = state.get("learning_rate"), state.get("plateau")
    if plateau is not None:
        plateau = {"best": None if plateau["best"] is None else float(plateau["best"]),
                   "wait": int(plateau["wait"]), "cooldown": int(plateau["cooldown"])}
    return {"epoch": epoch, "best_accuracy": float(state["best_accuracy"]),
            "learning_rate": None if rate is None else float(rate), "plateau": plateau}


class PlateauSchedule(keras.callbacks.ReduceLROnPlateau):
    """`ReduceLROnPlateau` whose counters (best loss, epochs waited, cooldown) are part of the
    checkpoint state: Keras' start them afresh at each `fit`, so that a resumed run would
    wait `patience` epochs more than the run it continues before its next reduction."""

    def __init__(self, *args, restored=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.restored = restored

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.restored:
            self.best, self.wait = self.restored["best"], self.restored["wait"]
            self.cooldown_counter = self.restored["cooldown"]

    def state(self):
        return {"best": None if self.best is None else float(self.best), "wait": int(self.wait),
                "cooldown": int(self.cooldown_counter)}

    def on_epoch_end(self, epoch, logs=None):
        """One step of PyTorch's ReduceLROnPlateau, which the original's option names: an
        improvement is relative (by ``min_delta`` of the best: its threshold 1e-4), the rate
        drops after more than `patience` bad epochs, and an epoch of the cooldown counts
        as none. Keras' reduced a patience earlier, took ``min_delta`` as absolute (a loss of
        0.05 gaining 1e-5 an epoch was a plateau; one of 10 gaining 5e-4 was not) and
        counted the cooldown's last epoch bad."""
        logs = logs if logs is not None else {}
        current = logs.get(self.monitor)
        if current is None:
            return super().on_epoch_end(epoch, logs)  # Keras' warning of the missing metric
        optimizer = self.model.optimizer
        rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        logs["learning_rate"] = rate
        current = float(current)
        minimize = self.mode == "min" or (self.mode == "auto" and "acc" not in self.monitor)
        best = self.best if self.best is not None else (math.inf if minimize else -math.inf)
        if current < best * (1 - self.min_delta) if minimize else current > best * (1 + self.min_delta):
            self.best, self.wait = current, 0
        else:
            self.wait += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.wait > self.patience:
            lower = max(rate * self.factor, self.min_lr)
            if rate - lower > 1e-8:  # PyTorch's eps: no change below it
                optimizer.learning_rate = lower
                if self.verbose:
                    print(f"\nEpoch {epoch + 1}: PlateauSchedule reducing the learning rate to {lower}.")
            self.cooldown_counter, self.wait = self.cooldown, 0
        return None


class Checkpointer(keras.callbacks.Callback):
    """last.keras every N epochs and best.keras on a better validation accuracy, each with
    the optimizer state and `metadata` (`model_metadata`), plus train_state.json; all
    written atomically."""

    def __init__(self, output_dir, every, best=-1.0, monitor="val_accuracy", metadata=None,
                 saved_epoch=None, epochs=None, saved_rate=None, schedule=None,
                 saved_schedule=None):
        super().__init__()
        self.saved_rate = saved_rate  # the learning rate of last.keras' epoch
        self.schedule = schedule  # a PlateauSchedule, whose counters the state keeps
        self.saved_schedule = saved_schedule  # its counters at last.keras' epoch
        self.output_dir, self.every, self.best, self.monitor = output_dir, every, best, monitor
        self.epochs = epochs  # the run's last epoch is always written, whatever `every`
        self.metadata = metadata
        self.saved_epoch = saved_epoch  # the epoch of last.keras (a resumed run's start)
        self.diverged = None  # (epoch, what was not finite) of an epoch that diverged
        self.best_epoch = None  # of best.keras, where this process wrote it

    def _not_finite(self, logs):
        """What an epoch ended with that is not finite, in words; None when all is."""
        import numpy as np

        for key, name in (("loss", "loss"), ("val_loss", "validation loss")):
            value = logs.get(key)
            if value is not None and not math.isfinite(float(value)):
                # validation: the inference-mode outputs (BatchNorm's moving statistics, whose
                # huge but finite values overflow the activations), which best.keras would keep
                return f"{name} {float(value)}"
        if not all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in self.model.weights):
            return f"weights not finite, loss {logs.get('loss')}"
        return None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        # A diverged epoch (StopOnNaN stops it mid-way, but the epoch still ends here)
        # must not overwrite the last good checkpoints with NaN weights.
        reason = self._not_finite(logs)
        if reason:
            self.diverged = (epoch + 1, reason)
            self.model.stop_training = True
            return
        # without validation clips, the training accuracy (recorded under its own name)
        key = self.monitor if self.monitor in logs else "accuracy"
        score = logs.get(key)
        if score is not None and score > self.best:
            self.best = float(score)
            self.best_epoch = epoch + 1
            metadata = self.metadata
            if metadata is not None:  # which epoch it is, for evaluate.py's results
                metadata = dataclasses.replace(metadata, extra={
                    **metadata.extra, BEST_CHECKPOINT: {"epoch": epoch + 1, key: self.best}})
            save_model(self.model, os.path.join(self.output_dir, "best.keras"), metadata)
            if self.saved_epoch:
                # At once, before last.keras: the state keeps last.keras' epoch and rate with
                # the new best. A run stopped here and resumed with the older best would
                # overwrite this best.keras with a worse model.
                self._write_state()
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs:
            rate = float(self.model.optimizer.learning_rate.numpy())
            # last.keras records its own epoch, rate and best: a run stopped between its
            # write and train_state.json's resumes from what the file holds, not an epoch
            # early (which would train that epoch twice).
            schedule = self.schedule.state() if self.schedule is not None else None
            state = {"epoch": epoch + 1, "best_accuracy": self.best, "learning_rate": rate,
                     "plateau": schedule}
            metadata = self.metadata
            if metadata is not None:
                metadata = dataclasses.replace(metadata, extra={**metadata.extra,
                                                                STATE_ENTRY: state})
            save_model(self.model, os.path.join(self.output_dir, "last.keras"), metadata)
            self.saved_epoch, self.saved_rate, self.saved_schedule = epoch + 1, rate, schedule
            self._write_state()

    def _write_state(self):
        atomic_write_json(os.path.join(self.output_dir, "train_state.json"),
                          {"epoch": self.saved_epoch, "best_accuracy": self.best,
                           "learning_rate": self.saved_rate, "plateau": self.saved_schedule})


def _best_epoch(checkpointer, config):
    """best.keras' epoch: this session's, or the one the file records (a resumed run whose
    best is of an earlier session); None where unknown."""
    if checkpointer.best_epoch is not None:
        return checkpointer.best_epoch
    path = os.path.join(config.output_dir, "best.keras")
    try:
        return checkpoint_epoch(read_metadata(path)) if os.path.exists(path) else None
    except ModelFileError:
        return None


def _set_threads(config):
    """TensorFlow's threads for training (`TrainConfig.threads`); says what it set, or that
    it was too late (TensorFlow had run ops in this process before `train`)."""
    plan = runtime.set_tf_threads(config.threads, runtime.is_depthwise_model(config.model))
    if config.threads and not plan:
        print(f"warning: --threads={config.threads} not applied: TensorFlow already runs with "
              "its threads in this process", file=sys.stderr)
    if plan:
        # Several replicas keep the whole batch's call (`VideoModel.halves_call`).
        halves = (", each batch's two halves side by side"
                  if runtime.tf_side_by_side() and config.distribution == "none" else "")
        print(f"TensorFlow threads: {plan[0]} per operation, {plan[1]} "
              f"operation{'s' if plan[1] > 1 else ''} at a time{halves}")
    return plan


def _strategy(config):
    if config.cpu_devices > 1:
        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration()] * config.cpu_devices)
        except RuntimeError:
            pass  # already initialised (e.g. a second run in one process): keep what exists
    if config.distribution == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or \
                  [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if config.distribution == "multiworker":
        cluster = cluster_of()
        if cluster is not None and cluster[2]:
            task, _, others = cluster
            # the strategy waits in TensorFlow's C++ code until every task has started: a
            # worker whose peers never come said nothing, and neither Ctrl-C nor SIGTERM
            # reaches Python there
            print(f"{task}: waiting for the cluster's other tasks ({', '.join(others)}); "
                  "while it waits only SIGKILL stops this process", flush=True)
        before = signal.getsignal(signal.SIGTERM)
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except tf.errors.UnknownError as err:
            if cluster is None or "gRPC server" not in str(err):
                raise
            raise ValueError(f"TF_CONFIG: {cluster[0]} cannot listen on {cluster[1]} (its "
                             "address in the cluster): is the port in use, or the host not "
                             "this machine?") from None
        # TensorFlow's cluster set-up catches SIGTERM as a preemption notice, which only its
        # PreemptionCheckpointHandler reads: `kill`, `timeout` and a scheduler's first signal
        # (Slurm's scancel, a Kubernetes eviction) did nothing. The handler of before goes
        # back (the default: the worker ends, and continues from its backup when the cluster
        # is restarted, as after SIGKILL); Python sets handlers in its main thread only.
        if threading.current_thread() is threading.main_thread() and before is not None:
            signal.signal(signal.SIGTERM, before)
        return strategy
    return tf.distribute.get_strategy()


_TF_CONFIG_FORM = ('{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
                   '"index": N}}')


def cluster_of(environ=None):
    """``(this task's name, its address, the other tasks' addresses)`` that the environment's
    TF_CONFIG names (``("worker-1", "host:2223", ["host:2222"])``), or None where it is unset (a
    cluster of one). Raises a ValueError that names TF_CONFIG and what in it is wrong:
    TensorFlow's own said "Expecting ',' delimiter" or "The task_id 2 exceeds the maximum id
    of worker", and a TF_CONFIG of ``[]`` trained as a cluster of one."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    if not text.strip():
        return None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not JSON ({err}); expected {_TF_CONFIG_FORM}") from None
    if isinstance(spec, dict) and "cluster" not in spec:
        return None  # "{}", as some launchers set it: TensorFlow's cluster of one too
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not cluster or not isinstance(task, dict):
        raise ValueError(f"TF_CONFIG: expected {_TF_CONFIG_FORM}. Received: {text.strip()[:200]}")
    for kind, hosts in cluster.items():
        if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
            raise ValueError(f"TF_CONFIG: the cluster's {kind!r} tasks must be a list of "
                             f"'host:port' addresses. Received: {hosts!r}")
    kind, index = task.get("type"), task.get("index", 0)
    if isinstance(index, str) and index.strip().isdigit():
        index = int(index)  # as TensorFlow reads it
    if kind not in cluster:
        raise ValueError(f"TF_CONFIG: its task type {kind!r} is not in its cluster (which has "
                         f"{', '.join(map(repr, cluster))})")
    hosts = cluster[kind]
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(hosts):
        raise ValueError(f"TF_CONFIG: its task index {index!r} is none of the cluster's "
                         f"{len(hosts)} {kind!r} task{'' if len(hosts) == 1 else 's'} (0 to "
                         f"{len(hosts) - 1})")
    others = [host for name, addresses in cluster.items() for i, host in enumerate(addresses)
              if (name, i) != (kind, index)]
    return f"{kind}-{index}", hosts[index], others


# What may differ from worker to worker: where each finds the files (mount points), and how
# much it prints.
_PER_WORKER = ("data_root", "annotations", "output_dir", "pretrained", "threads", "verbose")


def _gathered(strategy, value):
    """`value` (a float) of every replica of the cluster, as an array: a collective, which
    each worker reaches before any goes on."""
    local = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant([value], tf.float32))
    return strategy.gather(local, axis=0).numpy()


def check_workers_agree(strategy, config):
    """Refuses, in one line, workers started with different options: with another learning
    rate they trained apart without a word (each its own weights, the chief saving its own);
    with another batch size they ended in a 70-line "Shape mismatch in the collective". Each
    worker's options (less `_PER_WORKER`) are hashed and the hashes gathered: also the point
    at which every worker has its strategy, before the chief moves an earlier run aside."""
    values = {k: v for k, v in json.loads(config.to_json()).items() if k not in _PER_WORKER}
    # where the file is may differ; whether there is one, and which, may not
    values["pretrained"] = os.path.basename(config.pretrained) if config.pretrained else None
    text = json.dumps(values, sort_keys=True)
    digest = float(int(hashlib.sha256(text.encode()).hexdigest(), 16) % (1 << 24))  # exact in float32
    digests = _gathered(strategy, digest)
    if len(set(digests.tolist())) > 1:
        raise ValueError("the workers were started with different options (a flag or a "
                         "flagfile differs; only the paths of --data_root, --output, "
                         "--annotations and --pretrained, --threads and --verbose may): start "
                         "every worker with the same command")


class WorkerLost(ConnectionError):
    """A peer of a multi-worker run was lost mid-training: reported in one line."""


@contextlib.contextmanager
def _lost_worker_said(backup):
    """A multi-worker run (`backup`: its `BackupAndRestore`, else None) whose peer was lost
    ends in one line saying what to do, not in TensorFlow's 50-line "Collective ops is
    aborted" traceback."""
    try:
        yield
    except tf.errors.UnavailableError as err:
        if backup is None:
            raise
        raise WorkerLost(f"a worker of the cluster was lost ({' '.join(str(err).split())[:160]}); "
                         "restart every worker with the same command: each continues at its "
                         f"last completed epoch (the backups in {os.path.dirname(backup.backup_dir)})"
                         ) from None


def worker_role(strategy):
    """(name, is chief) of this process: ``("worker-1", False)`` in a multi-worker cluster,
    ``("worker-0", True)`` otherwise. The chief is task ``chief`` or, without one, worker 0
    (TensorFlow's convention)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not spec or resolver.task_type is None:
        return "worker-0", True
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in spec)
    return f"{task_type}-{task_id}", chief


def single_worker_steps(steps_per_epoch, num_videos, batch_size):
    """The steps per epoch to give `model.fit` in a single-worker run, and the warning to
    print (or None). Its pipeline does not repeat, so asking for more steps than one pass
    gives would end each epoch early anyway; asking for just that many keeps the warm-up
    and the progress bar, which count on the epoch's length, reaching their end."""
    warning = steps_per_epoch_warning(steps_per_epoch, num_videos, batch_size)
    return (num_videos // batch_size if warning else steps_per_epoch), warning


def steps_per_epoch_warning(steps_per_epoch, num_videos, batch_size, repeats=False,
                            batches=None):
    """The warning when --steps_per_epoch asks for more batches than one pass over the
    training videos gives (`batches`, default `num_videos` // `batch_size`: the last
    incomplete batch dropped), saying what happens then; None otherwise. A pipeline that
    does not repeat runs dry: Keras then ends the epoch early (the next starts a new
    pass), so an epoch is one pass."""
    batches = num_videos // batch_size if batches is None else batches
    if not steps_per_epoch or steps_per_epoch <= batches:
        return None
    what = (f"the data repeats: each epoch runs {steps_per_epoch} steps, some videos twice"
            if repeats else
            f"the data does not repeat: each epoch is one pass, {batches} steps")
    return (f"warning: --steps_per_epoch={steps_per_epoch} is more than the {batches} batches "
            f"of the {num_videos} training videos at --batch_size={batch_size}; {what}")


def make_distributed_datasets(config, strategy, train_records, val_records, classes=()):
    """The pipelines of a multi-worker run: each worker reads its own share of the videos
    (``make_dataset(shard=...)``: records ``i::num_workers``), `config.batch_size` being the
    global batch. A step is a collective that waits for every worker, so all run the same
    number of steps: the shards repeat and epochs are counted in steps (the smallest shard's
    share; in validation a smaller shard wraps round to its first videos to fill the last
    batch). Returns (train, validation, steps per epoch, validation steps)."""
    from keras_efficient3d import data

    workers = max(1, sum(len(tasks) for name, tasks in
                         strategy.cluster_resolver.cluster_spec().as_dict().items()
                         if name in ("chief", "worker")))
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(f"--batch_size={config.batch_size} is the global batch: it must be a "
                         f"multiple of the {replicas} replicas of the cluster")
    per_replica = config.batch_size // replicas
    per_worker = config.batch_size // workers
    # The smallest share: a worker with no whole batch would end its epochs at once while
    # the others wait for it in the step's collective, whatever --steps_per_epoch says.
    share = len(train_records) // workers
    if share < per_worker:
        raise ValueError(f"{len(train_records)} training videos are too few for {workers} workers "
                         f"at --batch_size={config.batch_size}: each worker reads {share}, "
                         f"fewer than its {per_worker} of a batch")
    steps = config.steps_per_epoch or share // per_worker
    warning = steps_per_epoch_warning(config.steps_per_epoch, len(train_records),
                                      config.batch_size, repeats=True, batches=share // per_worker)
    if warning:
        print(warning, file=sys.stderr)
    common = _pipeline_options(config, per_replica, classes)

    def train_fn(context):
        shard = (context.num_input_pipelines, context.input_pipeline_id)
        # Each worker its own seed: the same one would draw the same augmentations.
        seed = None if config.seed is None else config.seed + context.input_pipeline_id
        return data.make_dataset(train_records, "train", crop=config.crop, seed=seed, shard=shard,
                                 **_flip_options(config, classes), **common).repeat()

    def val_fn(context):
        shard = (context.num_input_pipelines, context.input_pipeline_id)
        return data.make_dataset(val_records, "val", shard=shard, **common).repeat()

    train = strategy.distribute_datasets_from_function(train_fn)
    if len(val_records) < workers:
        return train, None, steps, None
    val = strategy.distribute_datasets_from_function(val_fn)
    return train, val, steps, math.ceil(math.ceil(len(val_records) / workers) / per_worker)


def _multiworker_build(model, strategy, config):
    """Works around Keras 3's ``fit`` under MultiWorkerMirroredStrategy
    (keras-team/keras#20585): a model compiled in the strategy's scope is built on the first
    batch reduced across the workers, a reduction the collective strategy cannot do on a
    nested batch. Builds the model, loss, metrics and optimizer here, in the scope, from the
    batch's shapes (then fitted in `_multiworker_fit_scope`)."""
    per_replica = config.batch_size // strategy.num_replicas_in_sync
    batch = (tf.TensorSpec((per_replica, config.frames, config.size, config.size, 3), tf.float32),
             tf.TensorSpec((per_replica,), tf.int32))
    with strategy.scope():
        model._symbolic_build(data_batch=batch)


@contextlib.contextmanager
def _multiworker_fit_scope(model, strategy):
    """The scope to fit a model built by `_multiworker_build` in: the model finds the strategy
    from it, and logs the workers' running means, averaged; the model is as it was after
    it (its own steps, no traced functions of the wrapped ones)."""
    owner = model._distribute_strategy
    model._distribute_strategy = None
    # Keras averages the logged values over the workers with reduce(MEAN, axis=0), which a
    # scalar does not have: log 1-element vectors, averaged into scalars again. Only with
    # several workers: a cluster of one (no TF_CONFIG, a one-node job) reduces nothing, and
    # the vectors would reach the logs (TensorBoard: "Expected scalar shape").
    steps = ("train_step", "test_step") if strategy.extended._in_multi_worker_mode() else ()
    for name in steps:
        setattr(model, name, _vector_logs(getattr(model, name)))
    try:
        with strategy.scope():
            yield
    finally:
        for name in steps:
            delattr(model, name)  # the instance's wrapper: the class's own method again
        model.train_function = model.test_function = None  # traced from the wrappers
        model._distribute_strategy = owner


def _vector_logs(step):
    def wrapped(data):
        return {key: tf.reshape(value, (1,)) for key, value in step(data).items()}

    return wrapped


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' fault tolerance, told apart per worker (Keras 3's callback writes one file that
    the workers of a cluster would overwrite in turn) and saying where it restarted."""

    def __init__(self, backup_dir):
        super().__init__(backup_dir)
        self.restored_epoch = None

    def exists(self):
        return os.path.exists(self._training_metadata_path)

    def on_train_begin(self, logs=None):
        restoring = self.exists()
        super().on_train_begin(logs)
        if restoring:
            self.restored_epoch = int(self.model._initial_epoch or 0)
            print(f"{os.path.basename(self.backup_dir)}: restored from {self.backup_dir}, "
                  f"continuing at epoch {self.restored_epoch + 1}", flush=True)


def plot_curves(log_csv, path):
    """Loss, accuracy (top-5 too, where logged) and the learning rate per epoch from the CSV
    log, as a PNG; the epoch of best validation accuracy (best.keras') is marked."""
    from keras_efficient3d.artifacts import figure, write_png

    with open(log_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    first = int(_counts_from_zero(r.get("epoch") for r in rows))
    epochs = [int(r["epoch"]) + first for r in rows]

    def number(text):
        try:
            value = float(text)
        except (TypeError, ValueError):  # Keras' CSVLogger writes NA for a missing value
            return None
        return value if math.isfinite(value) else None  # a diverged epoch's NaN

    def points(key):
        found = [(epoch, number(r.get(key))) for epoch, r in zip(epochs, rows)]
        return [(epoch, value) for epoch, value in found if value is not None]

    rate = points("learning_rate")
    fig = figure(figsize=(15 if rate else 10, 4))
    axes = fig.subplots(1, 3 if rate else 2)
    for ax, keys in zip(axes, (("loss",), ("accuracy", "top5"))):
        for key in keys:
            styles = ("-", "--") if key != "top5" else (":", "-.")
            for prefix, style in zip(("", "val_"), styles):
                found = points(prefix + key)
                if found:
                    ax.plot(*zip(*found), style,
                            label=("validation " if prefix else "training ") + key)
        ax.set_title(keys[0])
    best = points("val_accuracy")
    if best:
        epoch, value = max(best, key=lambda point: point[1])  # the first of a tie, as best.keras
        axes[1].axvline(epoch, color="gray", linewidth=0.8, linestyle=":")
        axes[1].plot([epoch], [value], "o", color="gray",
                     label=f"best validation accuracy (epoch {epoch})")
    if rate:
        axes[2].plot(*zip(*rate), "-")
        axes[2].set_yscale("log")
        axes[2].set_title("learning rate")
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.25
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    return write_png(fig, path, dpi=100)


def _plot_run(config, chief):
    """curves.png of the run so far (the chief's log), also for a run that diverged or was
    stopped: its epochs until then are what the user looks at next."""
    if not chief:
        return None
    log = os.path.join(config.output_dir, "log.csv")
    return plot_curves(log, os.path.join(config.output_dir, "curves.png")) if os.path.exists(log) else None


# What a resumed run must share with the run it continues (its config.json): the model,
# what its inputs and labels mean, and the optimizer whose state last.keras holds (checked
# again once loaded). Other options (the rate, the epochs, SGD's momentum) may change.
# ft_portion: last.keras' optimizer holds the variables it gave (a last_layer run resumed as
# complete would train the head alone).
# The flags of the architecture built, which a --pretrained file's architecture overrides.
ARCHITECTURE_FLAGS = ("model", "width_mult", "groups", "version", "depth", "shortcut",
                      "cardinality")
_RUN_IDENTITY = ("dataset", "ucf101_fold", *ARCHITECTURE_FLAGS, "normalization", "downsample",
                 "optimizer", "ft_portion")


def _check_same_run(config):
    path = os.path.join(config.output_dir, "config.json")
    if not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path}: not a valid run config.json ({str(err).splitlines()[0]}); "
                         "it records the run's flags for --resume") from None
    def same(name):
        if name == "normalization":  # a preset's name, or the config of one taken from a file
            with contextlib.suppress(ValueError, TypeError):
                return Normalization.coerce(saved[name]) == Normalization.coerce(config.normalization)
        return saved[name] == getattr(config, name)

    recorded = saved.get("pretrained")
    # A fine-tuned run trains its --pretrained file's architecture, whatever --model and its
    # arguments said (config.json keeps the flags as given, noted as not used): a resume
    # with the architecture trained was refused, naming the flags as the run's.
    names = [name for name in _RUN_IDENTITY if not recorded or name not in ARCHITECTURE_FLAGS]
    differ = [name for name in names if name in saved and not same(name)]
    # A fine-tuned run's flagfile names its --pretrained file: on resume the same file (or
    # none) is the run's, and is not loaded again (last.keras holds the weights).
    if config.pretrained is None:
        config.pretrained = recorded
    elif recorded is None or os.path.abspath(recorded) != os.path.abspath(config.pretrained):
        differ.append("pretrained")
    if differ:
        def shown(values):
            return " ".join(f"--{name}={values(name)}" for name in differ)

        raise ValueError(f"The run in {config.output_dir} was trained with "
                         f"{shown(saved.get)}, not {shown(lambda n: getattr(config, n))}; "
                         "resume with the run's values (or start a new run in another --output)")


RESUME_HINT = "--resume continues a run instead"

# backup/: a multi-worker run's fault-tolerance backups, which a later multi-worker run in
# the folder would otherwise take for its own; eval_*: evaluate.py's results beside the
# run's model, of the old model once the new run writes its own.
_RUN_FILES = ("last.keras", "best.keras", "train_state.json", "log.csv", "curves.png",
              "config.json", "labels.txt", "backup", "tensorboard") + tuple(
    f"{prefix}_{what}" for prefix in ("eval", "eval_train", "last_eval", "last_eval_train")
    for what in ("results.json", "confusion.png"))


def _move_previous_run(output_dir, hint=RESUME_HINT):
    """Moves the files of a run already in `output_dir` into `output_dir`/previous/ (an
    older previous/ goes): left in place, its last.keras and train_state.json would stand
    until the new run's first checkpoint, and --resume would continue the old run. `hint`
    ends the warning (None: the caller has no way to resume)."""
    if not any(os.path.exists(os.path.join(output_dir, name))
               for name in ("last.keras", "best.keras", "train_state.json")):
        return None
    state_path = os.path.join(output_dir, "train_state.json")
    done = "no saved epoch"
    if os.path.exists(state_path):
        try:
            done = f"{read_state(state_path)['epoch']} epochs"
        except ValueError:
            done = "an unreadable train_state.json"
    previous = os.path.join(output_dir, "previous")
    replaced = ""
    if os.path.isdir(previous):
        shutil.rmtree(previous)
        replaced = ", in place of the older run there"
    os.makedirs(previous)
    for name in _RUN_FILES:
        if os.path.exists(os.path.join(output_dir, name)):
            os.replace(os.path.join(output_dir, name), os.path.join(previous, name))
    print(f"warning: {output_dir} holds a run ({done}); this new run moves its files into "
          f"{previous}{replaced}" + (f" ({hint})" if hint else ""), file=sys.stderr)
    return previous


class StopOnNaN(keras.callbacks.Callback):
    """Keras' TerminateOnNaN without its line ("Batch 2: Invalid loss, terminating training"),
    which told the user nothing before the one line saying what diverged (`Checkpointer`)."""

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True


class EpochLog(keras.callbacks.CSVLogger):
    """log.csv with the epochs numbered from 1, as the progress bar, --lr_steps, curves.png,
    train_state.json and every message count them (Keras' CSVLogger numbers them from 0: the
    rate --lr_steps=40 lowers showed on the row of epoch 39)."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


def _counts_from_zero(epochs):
    """Whether a log's epoch column (its values) counts from 0: Keras' own CSVLogger's, as
    log.csv was written before `EpochLog`."""
    return next(iter(epochs), None) == "0"


def _trim_log(path, epochs, dropped=()):
    """Keeps the rows of log.csv for the first `epochs` epochs (those of last.keras): the
    epochs a killed or diverged run logged after its checkpoint are trained again on resume,
    and their rows would stand twice (and twice in curves.png). The columns the resumed run
    does not log (`dropped`: the top-5 of a run of five classes or fewer, logged by older
    versions) are removed and an `lr` column is renamed `learning_rate`, the columns put in
    the order Keras appends the resumed epochs in: Keras' CSVLogger writes its rows under
    the file's header as it finds it."""
    if not os.path.exists(path):
        return
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or "epoch" not in rows[0]:
        return
    column = rows[0].index("epoch")
    # a log of an older version counts epochs from 0: numbered as the resumed rows are
    renumbered = _counts_from_zero(row[column] for row in rows[1:] if len(row) > column)
    if renumbered:
        rows = [rows[0]] + [row[:column] + [str(int(row[column]) + 1)] + row[column + 1:]
                            if len(row) > column and row[column].isdigit() else row
                            for row in rows[1:]]
    kept = [rows[0]] + [row for row in rows[1:]
                        if len(row) > column and row[column].isdigit() and int(row[column]) <= epochs]
    renamed = "lr" in kept[0] and "learning_rate" not in kept[0]
    removed = any(name in dropped for name in kept[0])
    if renamed or removed:
        # A log of a version that named the rate `lr`: Keras appends the resumed epochs in
        # the order of their names (epoch, then sorted), which `learning_rate` changes.
        names = ["learning_rate" if renamed and name == "lr" else name for name in kept[0]]
        order = sorted((i for i, name in enumerate(names) if name not in dropped),
                       key=lambda i: (names[i] != "epoch", names[i]))
        kept = [[row[i] if i < len(row) else "" for i in order]
                for row in [names] + kept[1:]]
    if renumbered or renamed or removed or len(kept) < len(rows):
        out = io.StringIO()
        csv.writer(out).writerows(kept)  # csv's line ends, as Keras' CSVLogger writes them
        atomic_write(path, out.getvalue())


def _resume_point(config, state_path, last_path):
    """``(initial_epoch, best accuracy, learning rate, plateau counters)`` of the run `config`
    resumes (0, -1, None, None for a new one), refused in one line before any work: nothing to resume, a finished
    run, or a checkpoint whose recorded clips are not --frames x --size or whose recorded
    model is not the run's (its model is checked again once loaded)."""
    if not config.resume:
        return 0, -1.0, None, None
    def nothing(why):
        return ValueError(f"Nothing to resume in {config.output_dir}: {why} (start without "
                          "--resume).")

    if not os.path.exists(last_path):
        previous = os.path.join(config.output_dir, "previous")
        if os.path.exists(os.path.join(previous, "last.keras")):
            # a run started there without --resume moved the run to resume aside
            raise ValueError(
                f"Nothing to resume in {config.output_dir}: no last.keras; the run before it "
                f"is in {previous}, moved there by a run started without --resume: move "
                f"its files back into {config.output_dir} to resume it")
        raise nothing("no last.keras")
    recorded = read_metadata(last_path)
    own = None  # last.keras' own record (written since it holds one)
    if recorded is not None and STATE_ENTRY in recorded.extra:
        try:
            own = _checked_state(recorded.extra[STATE_ENTRY])
        except (KeyError, TypeError, ValueError):
            own = None
    if own is None and not os.path.exists(state_path):
        raise nothing("its last.keras records no training state, and it has no "
                      "train_state.json")
    state = own
    if os.path.exists(state_path):
        try:
            state = read_state(state_path)
        except ValueError as err:
            if own is None:
                raise
            print(f"warning: {err}; resuming from last.keras' own record (epoch "
                  f"{own['epoch']})", file=sys.stderr)
    if own is not None:
        # train_state.json may be of the checkpoint before (a run stopped between the two
        # writes) or hold a newer best (best.keras written since): the epoch and rate are
        # the file's, the best the better of the two.
        state = {**own, "best_accuracy": max(own["best_accuracy"], state["best_accuracy"])}
    initial_epoch, best = state["epoch"], state["best_accuracy"]
    if initial_epoch >= config.epochs:
        raise ValueError(f"The run in {config.output_dir} already finished {initial_epoch} "
                         f"epochs; raise --epochs above {initial_epoch} to continue.")
    _check_same_run(config)
    if recorded is not None:
        _check_clip_shape((recorded.frames, *(recorded.height_width or (None, None))),
                          config.frames, config.size, last_path)
        _check_same_model(recorded.model, config, last_path)
    return initial_epoch, best, state["learning_rate"], state["plateau"]


def _architecture(config):
    """The registry name and arguments `model_metadata` records for `config`'s model."""
    name, kwargs = model_kwargs(config, None)
    return {"model": name, **{key: value for key, value in kwargs.items()
                              if value is not None and key not in ("input_shape", "dropout")}}


def _check_same_classes(recorded, classes, path, data_root):
    """Refuses (one line) to resume a checkpoint trained on other class names than the
    dataset's: the count alone matched, and each output went on as another class."""
    labels = list(recorded.labels or []) if recorded is not None else []
    if not labels or labels == list(classes):
        return
    gone = [name for name in labels if name not in classes]
    added = [name for name in classes if name not in labels]

    def some(names):
        return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")

    what = (f"{some(gone)} not in the dataset" + (f", {some(added)} new in it" if added else "")
            if gone or added else "the same names in another order")
    raise ValueError(f"{path} was trained on other classes than those of {data_root} ({what}): "
                     "resuming would train its outputs as other classes; resume on the run's "
                     "own data, or start a new run (--pretrained to fine-tune it)")


def _check_same_model(recorded, config, path):
    """Refuses (one line) a checkpoint whose recorded model is not the run's: config.json
    matching the flags says nothing of a last.keras copied in from another run, which would
    train on and be saved with this run's metadata."""
    if not recorded or "pretrained" in recorded:  # a fine-tuned run records its source file
        return
    recorded = {key: value for key, value in recorded.items() if value is not None}
    # Each side resolved to the registry name and every argument its builder takes,
    # defaults included: `mobilenet` is `mobilenetv1`, `mobilenetv2_0.5x` is `mobilenetv2`
    # at 0.5, and a plain `mobilenetv2` is the 1.0x a 0.5x checkpoint is not.
    try:
        have = _configuration(recorded)
    except ValueError:  # a name this version's registry does not know: nothing to compare
        return
    want = _configuration(_architecture(config))
    differ = [key for key in sorted(set(have) | set(want)) if have.get(key) != want.get(key)]
    if differ:
        def shown(side):
            return " ".join(f"{key}={side.get(key)}" for key in differ)

        raise ValueError(f"{path} holds a model with {shown(have)}, not the run's {shown(want)}; "
                         "it is not this run's checkpoint (start a new run, or put the run's "
                         "own back)")


# The builder arguments that say nothing of the architecture a checkpoint holds.
_NOT_ARCHITECTURE = ("num_classes", "input_shape", "dropout", "input_tensor", "weights", "name")


def _configuration(about):
    """{"model": registry name, **every architecture argument} of a recorded `about`."""
    args = dict(about)
    name, kwargs = registry.configuration(args.pop("model"), **args)
    return {"model": name, **{key: value for key, value in kwargs.items()
                              if key not in _NOT_ARCHITECTURE}}


def train(config, extra_callbacks=None, resume_hint=RESUME_HINT):
    """Trains as configured; returns a dict with the history, the output paths and the
    pipelines.

    `extra_callbacks` run after the trainer's own (checkpoints, logs, schedule).
    `resume_hint` ends the warning of a new run over an earlier one (None for a caller that
    cannot resume, such as the demo)."""
    config.validate()
    state_path = os.path.join(config.output_dir, "train_state.json")
    last_path = os.path.join(config.output_dir, "last.keras")
    initial_epoch, best, rate, plateau = _resume_point(config, state_path, last_path)
    if config.pretrained and not config.resume:
        check_pretrained(config)  # before the dataset is indexed
    if config.dataset == "synthetic" and not config.data_root:
        from keras_efficient3d.data import synthetic

        # The demo's set, generated once; config.json records the folder for evaluate.py.
        config.data_root = synthetic.cached_gestures(log=print if config.verbose else None)
    # Before any other TensorFlow work: TensorFlow takes its threads only before its first op;
    # MultiWorkerMirroredStrategy sets up the collectives of the context, and logical CPU
    # devices must exist before it starts.
    _set_threads(config)
    strategy = _strategy(config)
    task, chief = worker_role(strategy)
    if config.distribution == "multiworker":
        # first: an option that one worker refuses alone (its batch) leaves the others
        # waiting in this gather for TensorFlow's heartbeat timeout
        check_workers_agree(strategy, config)
    if config.batch_size % strategy.num_replicas_in_sync:
        # before the earlier run is moved aside: MirroredStrategy ended in a traceback of an
        # AddN of two shapes, after the run in the folder had gone to previous/
        raise ValueError(f"--batch_size={config.batch_size} does not split over the "
                         f"{strategy.num_replicas_in_sync} replicas: give a multiple of "
                         f"{strategy.num_replicas_in_sync}")
    if config.distribution != "none" and chief:
        devices = ", ".join(d.split("/device:")[-1] for d in strategy.extended.worker_devices)
        print(f"distribution: {config.distribution}, {strategy.num_replicas_in_sync} replicas "
              f"({devices} on this worker)")
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    os.makedirs(config.output_dir, exist_ok=True)

    train_records, val_records, classes = load_splits(config)
    if config.resume:
        _check_same_classes(read_metadata(last_path), classes, last_path, config.data_root)
    num_classes = config.num_classes or len(classes)
    if num_classes < len(classes):
        raise ValueError(f"--num_classes={num_classes} is fewer than the {len(classes)} classes of "
                         f"the dataset in {config.data_root} (labels up to {len(classes) - 1}); "
                         "leave it unset to use the dataset's")
    if num_classes > len(classes):
        print(f"warning: --num_classes={num_classes} is more than the dataset's {len(classes)} "
              f"classes: {num_classes - len(classes)} outputs will never be a target",
              file=sys.stderr)
    if len(train_records) < config.batch_size:
        # the last incomplete batch is dropped: no step at all, and an untrained best.keras
        raise ValueError(f"--batch_size={config.batch_size} is more than the {len(train_records)} "
                         "training videos: the last incomplete batch is dropped, so an epoch "
                         f"would have no step; give a --batch_size of at most {len(train_records)}")
    mirror = _flip_options(config, classes)["hflip_labels"]
    if mirror:
        pairs = [f"{classes[i]} <-> {classes[j]}" for i, j in enumerate(mirror) if i < j]
        print(f"flips: a mirrored clip takes its mirror class ({'; '.join(pairs)})")
    if config.mixed_precision and tf.config.list_physical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    with strategy.scope():
        if config.resume:
            model = resume_model(config, last_path, num_classes)
        else:
            model = build_model(config, num_classes, classes)
            compile_model(model, config)
    # what the model records from here: the run's (a --pretrained or resumed file's record
    # would name its classes in its order, and carry its training state, into a later
    # model.save or save_to_preset of the returned model)
    metadata = model_metadata(config, classes, num_classes)  # the checkpoints' too
    object.__setattr__(model, "_recorded_metadata", metadata)
    steps, val_steps = config.steps_per_epoch, None
    fit_scope = contextlib.nullcontext()
    if config.distribution == "multiworker":
        train_ds, val_ds, steps, val_steps = make_distributed_datasets(
            config, strategy, train_records, val_records, classes)
        _multiworker_build(model, strategy, config)
        fit_scope = _multiworker_fit_scope(model, strategy)
    else:
        train_ds, val_ds = make_datasets(config, train_records, val_records, classes)
        steps, warning = single_worker_steps(steps, len(train_records), config.batch_size)
        if warning:
            print(warning, file=sys.stderr)

    # A multi-worker run's backup of this task: a restarted worker continues from it, unless
    # the run is resumed from its last.keras (then the backup is stale).
    backup = None
    if config.distribution == "multiworker":
        backup = BackupAndRestore(os.path.join(config.output_dir, "backup", task))
        if config.resume and backup.exists():
            print(f"{task}: --resume continues from {last_path}; the backup in "
                  f"{backup.backup_dir} is removed", flush=True)
            shutil.rmtree(backup.backup_dir, ignore_errors=True)
    elif chief and config.resume and os.path.isdir(os.path.join(config.output_dir, "backup")):
        # a crashed multi-worker run resumed by one process: a later multi-worker run in
        # the folder would restore the stale backup
        print(f"--resume continues from {last_path}; the multi-worker backups in "
              f"{os.path.join(config.output_dir, 'backup')} are removed", flush=True)
        shutil.rmtree(os.path.join(config.output_dir, "backup"), ignore_errors=True)
    restoring = backup is not None and backup.exists()
    # Only once the model and the pipelines are built: an option they refuse (a width the
    # builder does not have, a --pretrained file of other clips, a batch the workers cannot
    # split) must not cost the run already in the folder.
    if chief:
        if not config.resume and not restoring:
            _move_previous_run(config.output_dir, resume_hint)
        # the chief's alone: another worker's, written before the chief moved the earlier
        # run aside, went into previous/ in place of that run's
        atomic_write(os.path.join(config.output_dir, "config.json"), config.to_json())
        atomic_write(os.path.join(config.output_dir, "labels.txt"), "\n".join(classes) + "\n")

    # Every worker saves (Keras reads the variables on each), the chief where the run lives,
    # the others into a scratch folder removed at the end.
    save_dir = config.output_dir if chief else os.path.join(config.output_dir, f".{task}")
    saved_epoch = initial_epoch or None
    if restoring and os.path.exists(state_path):
        # A restarted worker: the run's checkpoint state, for the checkpointer to keep (a
        # new best between checkpoints updates it, as on --resume).
        state = read_state(state_path)
        best, saved_epoch, rate = state["best_accuracy"], state["epoch"], state["learning_rate"]
        plateau = state["plateau"]
    if config.lr_schedule == "plateau":
        schedule = PlateauSchedule("val_loss" if val_ds else "loss", factor=config.lr_gamma,
                                   patience=config.lr_patience, restored=plateau)
    else:
        schedule = EpochSchedule(config, steps or max(1, len(train_records) // config.batch_size))
    checkpointer = Checkpointer(save_dir, config.checkpoint_every, best,
                                metadata=metadata,
                                saved_epoch=saved_epoch, epochs=config.epochs,
                                saved_rate=rate, saved_schedule=plateau,
                                schedule=schedule if config.lr_schedule == "plateau" else None)
    callbacks = [checkpointer]
    if chief:
        if config.resume:
            _trim_log(os.path.join(config.output_dir, "log.csv"), initial_epoch,
                      () if top5_can_miss(num_classes) else _TOP5_LOGS)
        elif restoring:  # appended to as well: an older version's rows numbered as the new
            _trim_log(os.path.join(config.output_dir, "log.csv"), sys.maxsize)
        callbacks += [
            EpochLog(os.path.join(config.output_dir, "log.csv"), append=config.resume or restoring),
            keras.callbacks.TensorBoard(os.path.join(config.output_dir, "tensorboard"),
                                        update_freq="epoch", write_graph=False),
        ]
    callbacks.append(StopOnNaN())
    if backup is not None:
        # A worker lost mid-epoch: the cluster is restarted and each worker continues from
        # its last completed epoch (with --resume a run restarts from last.keras instead).
        callbacks.append(backup)
    callbacks += list(extra_callbacks or ())
    callbacks.insert(0, schedule)  # first: the checkpoint of an epoch has its rate
    start = time.time()
    # The pipeline shuffles; Keras' own `shuffle` does nothing for a dataset but warn.
    try:
        with quiet_end_of_data(), fit_scope, progress_line_ended_on_error(config.verbose), \
                _lost_worker_said(backup):
            history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs,
                                initial_epoch=initial_epoch, steps_per_epoch=steps,
                                validation_steps=val_steps, callbacks=callbacks,
                                verbose=config.verbose, shuffle=False)
    except KeyboardInterrupt:
        _plot_run(config, chief)
        raise
    elapsed = time.time() - start
    if backup is not None:
        # Keras removed this task's backup at the end of training; the last task to end
        # removes the folder (a folder left would hold the next run's move to previous/).
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(backup.backup_dir))
    if not chief:
        shutil.rmtree(save_dir, ignore_errors=True)
    if checkpointer.diverged:
        _plot_run(config, chief)
        epoch, reason = checkpointer.diverged
        kept = (f"the checkpoints of epoch {checkpointer.saved_epoch} are kept"
                if checkpointer.saved_epoch else "no checkpoint was written")
        raise ValueError(f"training diverged at epoch {epoch} ({reason}); {kept}; "
                         "lower --learning_rate")
    # Only the chief writes the run's log: another worker has no curves to plot.
    curves = _plot_run(config, chief)
    if config.distribution == "multiworker":
        # every worker ends together: a worker that left while the chief still wrote its
        # checkpoints and plot ended the chief's log in TensorFlow's "StartAbort UNAVAILABLE"
        # error line, after a run that had gone well
        try:
            _gathered(strategy, 0.0)
        except tf.errors.UnavailableError:
            raise WorkerLost(f"{task}: training ended, and another worker of the cluster "
                             "ended before this one could (its checkpoints are in place)"
                             ) from None
    restored = backup.restored_epoch if backup is not None else None
    return {"model": model, "history": history.history, "classes": classes,
            "seconds": elapsed, "output_dir": config.output_dir, "curves": curves,
            "num_train_videos": len(train_records), "worker": task,
            "best_accuracy": checkpointer.best, "best_epoch": _best_epoch(checkpointer, config),
            "initial_epoch": restored if restored is not None else initial_epoch,
            "best_path": os.path.join(config.output_dir, "best.keras"), "last_path": last_path,
            # a single-worker run's pipelines, whose --cache holds the decoded videos: a
            # caller that goes on with the same data (the demo's QAT) need not decode again
            "train_dataset": train_ds if config.distribution != "multiworker" else None,
            "val_dataset": val_ds if config.distribution != "multiworker" else None}
