"""What the project writes to disk: model metadata, `.keras` archives, sidecars, atomic writes.

    from keras_efficient3d import artifacts
    meta = artifacts.ModelMetadata(frames=16, size=112, normalization=Normalization.preset("kinetics"),
                                   labels=labels, model={"model": "mobilenetv2", "width_mult": 1.0})
    artifacts.save_model(model, "m.keras", meta)          # metadata inside the archive
    artifacts.write_sidecar("m_int8.tflite", meta)         # m_int8.tflite.json beside the model
    meta = artifacts.read_metadata("m_int8.tflite")        # None when nothing is recorded

The metadata says what a model expects (frames, size, temporal downsampling, channel order,
mean, std, value range, whether the normalisation is inside the model), what it returns
(labels, logits or probabilities) and which model it is, as keras-hub presets keep the
preprocessing beside the weights. On disk it is one JSON object (the ``keras_efficient3d.json``
entry of a `.keras` archive, or ``<model file>.json``), in the layout the shipped files use:
``{"model": {...}, "input": {"frames", "size", "downsample", "layout", "dtype"},
"normalization": {...}, "preprocessing_included": bool, "labels": [...], "output": ...}``;
any other key (a model card, the source checkpoint) is kept in ``extra``.

Every file goes through `atomic_path`: written beside its destination, then renamed over it,
so that a crash never leaves half a model or half a JSON file.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import warnings
import zipfile

# Re-exported: every writer of the package takes them from here; atomic.py holds them so that
# a script without the package's dependencies (benchmark_pytorch.py) can load them by path.
from keras_efficient3d.atomic import (
    _one_line,
    atomic_path,
    atomic_write,
    atomic_write_json,
    move_entries,
)
from keras_efficient3d.data.normalization import Normalization

__all__ = [
    "FRAMES_DTYPE",
    "METADATA_ENTRY",
    "ModelFileError",
    "ModelMetadata",
    "atomic_path",
    "atomic_write",
    "atomic_write_json",
    "check_keras_archive",
    "export_metadata",
    "figure",
    "frames_metadata",
    "keras_model_file",
    "load_model",
    "move_entries",
    "read_metadata",
    "save_model",
    "sidecar_path",
    "write_png",
    "write_sidecar",
]

METADATA_ENTRY = "keras_efficient3d.json"
OUTPUTS = ("logits", "probabilities")
_INPUT_KEYS = ("frames", "size", "downsample", "layout", "dtype", "batch")
_KNOWN_KEYS = ("model", "input", "normalization", "preprocessing_included", "labels", "output")


def figure(**kwargs):
    """A matplotlib ``Figure`` (`kwargs`: its own) drawn off screen, without pyplot: the
    pyplot backend of the caller's session (a notebook's, a GUI's) is left as it was, and
    nothing stays open once the figure is dropped."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    drawing = Figure(**kwargs)
    FigureCanvasAgg(drawing)
    return drawing


def write_png(drawing, path, dpi=100) -> str:
    """`drawing` (a `figure`) as a PNG at `path`, atomically: a run stopped while it is
    drawn keeps the last one."""
    with atomic_path(path) as tmp:
        drawing.savefig(tmp, dpi=dpi, format="png")
    return path


class ModelFileError(ValueError):
    """A model file or its metadata is missing, unreadable or inconsistent (one line)."""


# ---------------------------------------------------------------------------------------
# Metadata.


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _size_pair(size):
    if _positive_int(size):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(_positive_int(v) for v in size):
        return int(size[0]), int(size[1])
    return None


# ModelMetadata.extra of a model train.py wrote: {"dataset", "ucf101_fold" for UCF-101}
TRAINED_ON = "trained_on"


@dataclasses.dataclass
class ModelMetadata:
    """What a saved model expects and returns.

    Attributes:
        frames: frames per clip.
        size: frame size, an integer (square) or ``(height, width)``.
        downsample: the model sees one frame out of ``downsample``.
        normalization: a `Normalization` (channel order, mean, std, value range) applied to
            0-255 RGB frames before the model; a config dict is accepted.
        preprocessing_included: the model takes raw 0-255 RGB frames (its first layer
            normalises, `keras_efficient3d.preprocessing.VideoPreprocessing`).
        labels: class names, one per output.
        output: ``"logits"`` or ``"probabilities"`` (``None``: not recorded).
        model: which model: registry name and its arguments (``{"model": "mobilenetv2",
            "width_mult": 0.2, "num_classes": 8}``).
        layout: ``"NDHWC"``.
        dtype: a description of the input values (``"float32, already normalised"``).
        batch: the file's batch axis, ``"dynamic"`` or a fixed batch (ONNX exports record it:
            TensorRT builds an engine's profile from it, and JetPack has no onnx package to
            read the file with); ``None``: not recorded.
        extra: anything else recorded with the model (a model card, the source checkpoint).
    """

    frames: int | None = None
    size: int | tuple | None = None
    downsample: int | None = None
    normalization: Normalization | None = None
    preprocessing_included: bool = False
    labels: list | None = None
    output: str | None = None
    model: dict | None = None
    layout: str | None = None
    dtype: str | None = None
    batch: int | str | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("frames", "downsample"):
            value = getattr(self, name)
            if value is not None and not _positive_int(value):
                raise ValueError(f"Metadata input.{name} must be a positive integer. "
                                 f"Received: input.{name}={value!r}")
        if self.batch is not None and self.batch != "dynamic" and not _positive_int(self.batch):
            raise ValueError("Metadata input.batch must be \"dynamic\" or a positive integer. "
                             f"Received: input.batch={self.batch!r}")
        if self.size is not None:
            pair = _size_pair(self.size)
            if pair is None:
                raise ValueError("Metadata input.size must be a positive integer or [height, width]. "
                                 f"Received: input.size={self.size!r}")
            self.size = self.size if isinstance(self.size, int) else list(pair)
        if isinstance(self.normalization, dict):
            try:
                self.normalization = Normalization.from_config(self.normalization)
            except TypeError as err:
                raise ValueError(f"Bad metadata normalization ({err}). "
                                 f"Received: normalization={self.normalization!r}") from None
        elif isinstance(self.normalization, str):  # a preset's name, as make_dataset takes
            self.normalization = Normalization.preset(self.normalization)
        elif self.normalization is not None and not isinstance(self.normalization, Normalization):
            raise ValueError("Metadata normalization must be a Normalization, a preset name or "
                             f"its config. Received: normalization={self.normalization!r}")
        if not isinstance(self.preprocessing_included, bool):
            raise ValueError("Metadata preprocessing_included must be true or false. "
                             f"Received: preprocessing_included={self.preprocessing_included!r}")
        if self.labels is not None:
            if (not isinstance(self.labels, (list, tuple)) or not self.labels
                    or not all(isinstance(v, str) for v in self.labels)):
                raise ValueError("Metadata labels must be a non-empty list of class names. "
                                 f"Received: labels={self.labels!r}"[:300])
            self.labels = list(self.labels)
        if self.output is not None and self.output not in OUTPUTS:
            raise ValueError(f"Metadata output must be one of {OUTPUTS}. Received: output={self.output!r}")
        if self.model is not None and not isinstance(self.model, dict):
            raise ValueError(f"Metadata model must be an object. Received: model={self.model!r}")
        declared = (self.model or {}).get("num_classes")
        if self.labels is not None and declared is not None and declared != len(self.labels):
            raise ValueError(f"Metadata labels name {len(self.labels)} classes but its "
                             f"model.num_classes is {declared}: one of them is wrong")
        if not isinstance(self.extra, dict):
            raise ValueError(f"Metadata extra must be a dict. Received: extra={self.extra!r}")
        # input's keys too: written at the top level, from_dict would refuse them
        clash = sorted(set(self.extra) & (set(_KNOWN_KEYS) | set(_INPUT_KEYS)))
        if clash:
            raise ValueError(f"Metadata extra must not repeat the known keys. Received: {clash}")
        # here, not in from_dict: what is written is what can be read back
        input_keys = {k: f"input.{k}" for k in _INPUT_KEYS}
        _refuse_misspellings([k for k in self.extra if k != "_input"],
                             {**input_keys, **{k: k for k in _KNOWN_KEYS}})
        if isinstance(self.extra.get("_input"), dict):
            _refuse_misspellings(self.extra["_input"], input_keys, "input.")

    # Normalisation, in the words of the model card.
    @property
    def channel_order(self):
        return self.normalization.channel_order if self.normalization else None

    @property
    def mean(self):
        return self.normalization.mean if self.normalization else None

    @property
    def std(self):
        return self.normalization.std if self.normalization else None

    @property
    def value_range(self):
        return self.normalization.value_range if self.normalization else None

    @property
    def height_width(self):
        """``(height, width)`` or ``None``."""
        return _size_pair(self.size) if self.size is not None else None

    @property
    def num_classes(self):
        if self.labels is not None:
            return len(self.labels)
        return (self.model or {}).get("num_classes")

    def pipeline_arguments(self) -> dict:
        """What `keras_efficient3d.data.make_dataset` needs to feed this model the clips it
        expects, where recorded: ``downsample`` and ``normalization`` (``"none"`` for a model
        that normalises 0-255 frames itself)."""
        normalization = "none" if self.preprocessing_included else self.normalization
        return {key: value for key, value in
                (("downsample", self.downsample), ("normalization", normalization))
                if value is not None}

    def to_dict(self) -> dict:
        """The JSON object written to disk (`from_dict` inverts it)."""
        out = {}
        if self.model is not None:
            out["model"] = dict(self.model)
        inputs = {key: getattr(self, key) for key in _INPUT_KEYS if getattr(self, key) is not None}
        inputs.update(self.extra.get("_input", {}))
        if inputs:
            out["input"] = inputs
        if self.normalization is not None:
            out["normalization"] = self.normalization.to_config()
        out["preprocessing_included"] = self.preprocessing_included
        if self.labels is not None:
            out["labels"] = list(self.labels)
        if self.output is not None:
            out["output"] = self.output
        out.update({k: v for k, v in self.extra.items() if k != "_input"})
        return out

    @classmethod
    def from_dict(cls, data) -> ModelMetadata:
        """Reads the on-disk JSON object; raises ValueError naming the bad value."""
        if isinstance(data, ModelMetadata):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"Model metadata must be a JSON object. Received: {type(data).__name__}")
        inputs = data.get("input") or {}
        if not isinstance(inputs, dict):
            raise ValueError("Metadata input must be an object with 'frames' and 'size'. "
                             f"Received: input={inputs!r}")
        misplaced = sorted(k for k in data if k in _INPUT_KEYS and k not in _KNOWN_KEYS)
        if misplaced:  # the dataclass's field names, where the JSON layout nests them
            raise ValueError(
                f"Metadata {', '.join(misplaced)} go under 'input' in the JSON layout "
                f"({{'input': {{'{misplaced[0]}': ...}}}}), or pass "
                f"ModelMetadata({misplaced[0]}=...). Received: {misplaced[0]}={data[misplaced[0]]!r}")
        extra = {k: v for k, v in data.items() if k not in _KNOWN_KEYS}
        unknown_inputs = {k: v for k, v in inputs.items() if k not in _INPUT_KEYS}
        if unknown_inputs:
            extra["_input"] = unknown_inputs
        normalization = data.get("normalization")
        if isinstance(normalization, Normalization):
            pass
        elif normalization is not None and not isinstance(normalization, dict):
            raise ValueError(f"Metadata normalization must be an object. Received: normalization={normalization!r}")
        return cls(frames=inputs.get("frames"), size=inputs.get("size"),
                   downsample=inputs.get("downsample"), normalization=normalization,
                   preprocessing_included=data.get("preprocessing_included", False),
                   labels=data.get("labels"), output=data.get("output"), model=data.get("model"),
                   layout=inputs.get("layout"), dtype=inputs.get("dtype"),
                   batch=inputs.get("batch"), extra=extra)


def _refuse_misspellings(keys, known, prefix=""):
    """Keys of their own are kept (`extra`); one that reads as a known key misspelt
    (``lables``, ``input.down_sample``) would silently leave that key at its default.
    `known`: each name that a key could be meant as, with the key it names."""
    for key in keys:
        if not isinstance(key, str):
            continue
        # 0.82: "lables" (0.83) and "frame" are refused, "input.resize" (0.8 of "size") kept
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.82)
        if close:
            raise ValueError(f"Metadata key {prefix + key!r} is unknown: did you mean "
                             f"{known[close[0]]!r}? (a key of one's own is kept, but this one "
                             "reads as a misspelling)")


def _as_metadata(metadata, where):
    try:
        return ModelMetadata.from_dict(metadata)
    except ValueError as err:
        raise ModelFileError(f"{where}: {_one_line(err)}") from None


# ---------------------------------------------------------------------------------------
# .keras archives and sidecars.


def save_model(model, path, metadata=None) -> str:
    """Saves `model` as a `.keras` file atomically, with `metadata` (a `ModelMetadata` or its
    dict; default: what the model records, read with it from a ``.keras`` file or preset) as
    the archive's ``keras_efficient3d.json`` entry; returns `path`."""
    path = os.fspath(path)
    if not path.endswith(".keras"):
        # Keras would write legacy HDF5 for .h5 and the metadata entry cannot go into that;
        # it takes .keras in lower case only (and would name the temporary file otherwise).
        raise ModelFileError(f"{path}: a saved model needs the .keras extension, in lower "
                             f"case. Received: {path}")
    if metadata is None:  # what the model records: read with it from a .keras file or preset
        metadata = getattr(model, "_recorded_metadata", None)
        misfits = metadata_misfits(model, metadata) if metadata is not None else []
        if misfits:  # changed since (another head, another input): its record is no longer
            import warnings

            warnings.warn(f"{path}: saved without the metadata of the file the model was "
                          f"loaded from, which no longer fits it ({'; '.join(misfits)})",
                          stacklevel=2)
            metadata = None
    if metadata is not None:
        metadata = _as_metadata(metadata, path).to_dict()
    from keras_efficient3d import import_tensorflow_quietly

    # Keras' .keras writer imports TensorFlow on every backend (serialization_lib's
    # TensorShape check): its start-up notices, amid convert's lines on JAX (on TensorFlow it
    # is imported already, and this returns at once)
    import_tensorflow_quietly()
    with atomic_path(path) as tmp:
        # Keras' own save: `VideoModel.save` of a model that records metadata comes here
        object.__setattr__(model, "_saving_with_metadata", True)
        try:
            model.save(tmp)
        finally:
            object.__setattr__(model, "_saving_with_metadata", False)
        if metadata is not None:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(METADATA_ENTRY, json.dumps(metadata, indent=2))
    return path


def keras_config(path) -> dict | None:
    """The model config (``config.json``) of a `.keras` archive, without building anything;
    None when it cannot be read (the loader reports what is wrong with the file)."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    return config if isinstance(config, dict) else None


def check_keras_archive(path) -> str:
    """Checks that `path` is a complete `.keras` archive before Keras reads it (Keras reports
    a truncated or corrupt file as "File not found"); returns `path`.

    Raises:
        ModelFileError: no such file, not a zip archive, a damaged entry (CRC), or an
            archive without a Keras model's ``config.json`` and weights.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "a folder, not a file" if os.path.isdir(path) else "file not found"
        raise ModelFileError(f"{path}: {what}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise ModelFileError(f"{path}: not a valid .keras archive (truncated or corrupt: "
                             f"{_one_line(err)})") from None
    if damaged is not None:
        raise ModelFileError(f"{path}: not a valid .keras archive (entry {damaged} is corrupt)")
    missing = sorted({"config.json", "model.weights.h5"} - names)
    if missing:
        raise ModelFileError(f"{path}: not a valid .keras archive (no {', '.join(missing)}: "
                             "not a saved Keras model)")
    return path


def keras_model_file(path, program) -> str:
    """Checks that `path` is a complete `.keras` archive for `program`, which reads models
    with their architecture (an exported ``.tflite``/``.onnx``/``.xml`` file or a SavedModel
    has none to rebuild); returns `path`. Raises `ModelFileError` (one line)."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1]
    if ext != ".keras":
        got = f"got {ext.lower()}" if ext else ("got a folder" if os.path.isdir(path) else
                                                "got a file without an extension")
        if ext.lower() == ".keras":  # Keras reads no other spelling of it
            got = f"got {ext}: Keras reads the extension in lower case only; rename the file"
        raise ModelFileError(f"{path}: {program} needs a .keras model ({got})")
    return check_keras_archive(path)


def load_model(path, compile=True):
    """``keras.saving.load_model`` of a checked `.keras` archive (`check_keras_archive`), in
    Keras' safe mode; a model that does not rebuild is one `ModelFileError` line."""
    import keras

    check_keras_archive(path)
    try:
        with warnings.catch_warnings():
            # a --ft_portion=last_layer run's optimizer holds the head's variables alone,
            # and Keras builds one for every weight the loaded model trains: its warning
            # ("Skipping variable loading for optimizer 'torch_sgd'...") tells a user who
            # runs the model nothing (a resume rebuilds the optimizer as the run had it)
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = keras.saving.load_model(path, compile=compile)
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise ModelFileError(f"{os.fspath(path)}: cannot load the Keras model "
                             f"({_one_line(err)[:300]})") from None
    from keras_efficient3d.models._base import VideoModel

    try:
        metadata = read_metadata(path)
    except ModelFileError:  # the model loads without it: said where the metadata is read
        metadata = None
    if metadata is not None and isinstance(model, VideoModel):
        # outside Keras' attribute tracking, as a preset's: the model's `save` and
        # `save_to_preset` write it again (a trained model saved as a preset lost its labels
        # and clip), less what describes this file alone
        object.__setattr__(model, "_recorded_metadata", resaved_metadata(metadata))
    return model


def sidecar_path(model_path) -> str:
    """``<model file>.json``: where the metadata of a ``.tflite``/``.onnx`` model lives."""
    return os.fspath(model_path) + ".json"


# What a model file of uint8 frames records as its input values.
FRAMES_DTYPE = "uint8 0-255, RGB"


def frames_metadata(metadata, normalization) -> ModelMetadata:
    """The metadata of a model file of frames (an OpenVINO IR of ``frames_input``, a TFLite
    int8 file of frames): the normalisation it applies, applied by itself."""
    from keras_efficient3d.data.normalization import Normalization

    dtype = FRAMES_DTYPE
    if normalization is not None and Normalization.coerce(normalization).channel_order == "BGR":
        # the normalisation recorded beside it says BGR: of what the model does, not of what
        # it is fed
        dtype += "; the model puts them in BGR order itself"
    return dataclasses.replace(ModelMetadata.from_dict(metadata), normalization=normalization,
                               preprocessing_included=True, dtype=dtype)


def write_sidecar(model_path, metadata) -> str:
    """Writes `metadata` (a `ModelMetadata` or its dict) beside `model_path` as
    ``<model file>.json``, atomically; returns its path. Raises `ModelFileError` on bad values."""
    return write_metadata(sidecar_path(model_path), metadata)


def write_metadata(path, metadata) -> str:
    """Writes `metadata` (a `ModelMetadata` or its dict) as the JSON file `path` itself,
    atomically; returns `path`. Raises `ModelFileError` on bad values."""
    return atomic_write_json(path, _as_metadata(metadata, path).to_dict())


# A SavedModel is a folder: its metadata lives inside it, in the folder TensorFlow leaves to
# its users' files ("assets.extra": not loaded, copied with the folder).
SAVED_MODEL_METADATA = os.path.join("assets.extra", METADATA_ENTRY)


def read_metadata(model_path) -> ModelMetadata | None:
    """The metadata recorded for a model: for ``.keras``, the archive's entry (else a
    sidecar); for a SavedModel folder, its ``assets.extra/keras_efficient3d.json``; otherwise
    ``<model file>.json``. ``None`` when nothing is recorded.

    Raises:
        ModelFileError: not a `.keras` archive, or metadata that is not valid JSON or has
            bad values.
    """
    path = os.fspath(model_path)
    data = None
    if path.lower().endswith(".keras"):
        where = f"{path}:{METADATA_ENTRY}"
        try:
            with zipfile.ZipFile(path) as archive:
                if METADATA_ENTRY in archive.namelist():
                    data = json.loads(archive.read(METADATA_ENTRY))
        except zipfile.BadZipFile:
            raise ModelFileError(f"{path}: not a valid .keras archive (corrupt or not a Keras model)") from None
        except OSError as err:  # missing, a folder, unreadable: the contract's one error
            raise ModelFileError(f"{path}: cannot read it ({err.strerror or err})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ModelFileError(f"{path}: bad {METADATA_ENTRY} in the archive ({_one_line(err)})") from None
    if data is None:
        where = os.path.join(path, SAVED_MODEL_METADATA) if os.path.isdir(path) else sidecar_path(path)
        if not os.path.isfile(where):
            return None
        try:
            with open(where, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelFileError(f"{where}: cannot read the model metadata ({_one_line(err)})") from None
    return _as_metadata(data, where)


# What a record says of its own file only: the model card's figures, a preset's checkpoint
# digest, last.keras' training state. Another file made of the model (a save, a preset, an
# export) is not described by them.
CHECKPOINT_DIGEST = "checkpoint_sha256"  # in a published preset's model_metadata.extra
TRAINING_STATE = "training_state"  # last.keras' own record of what train_state.json holds
BEST_CHECKPOINT = "best_checkpoint"  # best.keras' epoch and validation accuracy
FILE_ONLY_EXTRA = ("card", CHECKPOINT_DIGEST, TRAINING_STATE, BEST_CHECKPOINT)


def checkpoint_epoch(metadata):
    """The epoch whose weights a run's checkpoint holds, where its record says it
    (best.keras' `BEST_CHECKPOINT`, last.keras' `TRAINING_STATE`); None otherwise."""
    if metadata is None:
        return None
    for key in (BEST_CHECKPOINT, TRAINING_STATE):
        epoch = (metadata.extra.get(key) or {}).get("epoch")
        if isinstance(epoch, int):
            return epoch
    return None


def resaved_metadata(metadata):
    """`metadata` (a `ModelMetadata`) as another file made of the same model records it:
    less `FILE_ONLY_EXTRA`."""
    return dataclasses.replace(metadata, extra={k: v for k, v in metadata.extra.items()
                                                if k not in FILE_ONLY_EXTRA})


def metadata_misfits(model, metadata):
    """What in `metadata` (a `ModelMetadata`) does not fit `model`'s input and output: its
    frames, size or class names (``["16 frames (the model takes 8)", ...]``); empty where it
    fits or the model's shapes are not static."""
    said = []
    inputs = getattr(model, "inputs", None)
    shape = tuple(inputs[0].shape[1:4]) if inputs and len(inputs[0].shape) == 5 else ()
    if shape and metadata.frames is not None and shape[0] is not None and \
            int(metadata.frames) != shape[0]:
        said.append(f"{metadata.frames} frames (the model takes {shape[0]})")
    if shape and metadata.height_width is not None and None not in shape[1:] and \
            tuple(metadata.height_width) != shape[1:]:
        said.append(f"{'x'.join(map(str, metadata.height_width))} frames (the model takes "
                    f"{'x'.join(map(str, shape[1:]))})")
    outputs = getattr(model, "outputs", None)
    classes = outputs[-1].shape[-1] if outputs else None
    if metadata.labels is not None and classes is not None and len(metadata.labels) != classes:
        said.append(f"{len(metadata.labels)} class names (the model has {classes} outputs)")
    return said


def export_metadata(model, keras_file=None, model_name=None, weights=None, normalization=None,
                    downsample=None) -> ModelMetadata:
    """The metadata an export of `model` carries in its sidecar: what `keras_file` records,
    else what a ``.keras`` `weights` file records (normalisation, frame step, labels) with
    the built model's clip shape, else the input shape and, for a registry model, its name
    and classes (no normalisation is recorded then: the pipeline's default is assumed, as in
    training). `normalization` and `downsample` (how the model was trained: a model file
    that records none, weights of a ``.weights.h5``) are recorded, and are what an int8
    export calibrates on; one other than the file records is refused
    (`refuse_other_pipeline`)."""
    metadata = _export_metadata(model, keras_file, model_name, weights)
    refuse_other_pipeline(metadata, keras_file or weights, normalization, downsample)
    if downsample is not None:
        metadata = dataclasses.replace(metadata, downsample=int(downsample))
    if normalization is not None and not metadata.preprocessing_included:
        from keras_efficient3d.data.normalization import Normalization

        metadata = dataclasses.replace(metadata, normalization=Normalization.coerce(normalization))
    return metadata


def refuse_other_pipeline(metadata, source, normalization=None, downsample=None):
    """Refuses a --normalization or --downsample other than the one `source` (the model
    file) records, which is how its model was trained: the sidecar would tell predict to
    feed it other clips (confident, wrong classes), as predict refuses such a flag. Raises
    ValueError."""
    from keras_efficient3d.data.normalization import Normalization

    recorded = metadata.pipeline_arguments()
    fix = ("leave the flag out (a file that records the wrong one is saved again with the "
           "right metadata: keras_efficient3d.artifacts.save_model)")
    if normalization is not None and "normalization" in recorded:
        given, theirs = (Normalization.coerce(v) for v in (normalization, recorded["normalization"]))
        if given != theirs:
            raise ValueError(f"--normalization={normalization} differs from the normalisation "
                             f"{source} records ({theirs.describe()}), which its model was "
                             f"trained with: {fix}")
    if downsample is not None and "downsample" in recorded and \
            int(downsample) != int(recorded["downsample"]):
        raise ValueError(f"--downsample={downsample} differs from the frame step {source} "
                         f"records ({recorded['downsample']}), which its model was trained "
                         f"with: {fix}")


def _export_metadata(model, keras_file, model_name, weights):
    # A model card's accuracy and latency were measured of other files (the .keras file, its
    # QAT export): an export is not described by them.
    if keras_file is not None:
        recorded = read_metadata(keras_file)
        if recorded is not None:
            return resaved_metadata(recorded)
    frames, height, width = (int(d) for d in model.inputs[0].shape[1:4])
    size = height if height == width else (height, width)
    if weights is not None and os.fspath(weights).lower().endswith(".keras"):
        recorded = read_metadata(weights)
        if recorded is not None:
            # The weights fit (they loaded): classes and labels hold; the clip is the build's.
            return dataclasses.replace(resaved_metadata(recorded), frames=frames, size=size)
    about = {"num_classes": int(model.outputs[0].shape[-1])}
    if model_name is not None:
        about = {"model": model_name, **about}
    return ModelMetadata(frames=frames, size=size, layout="NDHWC", model=about)
