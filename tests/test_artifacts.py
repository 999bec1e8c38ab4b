"""`keras_efficient3d.artifacts`: metadata in .keras archives and sidecars, validation,
atomic writes, and every kind of .keras file the project writes loading after the package
import alone, in a fresh interpreter."""

import errno
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from helpers import (
    TINY_FRAMES,
    TINY_LABELS,
    TINY_SIZE,
    file_size_limit,
    randomize_batchnorm,
    tiny_metadata,
    tiny_model,
    tiny_normalization,
)
from keras_efficient3d import create_model
from keras_efficient3d.artifacts import (
    ModelFileError,
    ModelMetadata,
    atomic_path,
    atomic_write,
    atomic_write_json,
    read_metadata,
    save_model,
    sidecar_path,
    write_sidecar,
)
from keras_efficient3d.data.normalization import Normalization

FRAMES, SIZE, LABELS = TINY_FRAMES, TINY_SIZE, TINY_LABELS
NORM = tiny_normalization()
METADATA = tiny_metadata()


def test_sidecar_round_trip_and_keras_entry(tmp_path):
    path = str(tmp_path / "m.tflite")
    open(path, "wb").close()
    assert read_metadata(path) is None
    written = write_sidecar(path, dict(METADATA, normalization=NORM, extra={"accuracy": 0.9}))
    assert written == path + ".json" == sidecar_path(path)
    back = read_metadata(path)
    assert back.normalization == NORM and back.to_dict()["extra"] == {"accuracy": 0.9}
    assert back.to_dict()["input"] == METADATA["input"] and back.labels == LABELS
    keras_path = save_model(tiny_model(FRAMES, SIZE, 4), str(tmp_path / "tiny.keras"), METADATA)
    assert read_metadata(keras_path).to_dict() == METADATA
    with open(path + ".json", "w") as handle:
        handle.write("{not json")
    with pytest.raises(ModelFileError, match="cannot read the model metadata"):
        read_metadata(path)
    with pytest.raises(ModelFileError, match="input.frames"):
        write_sidecar(path, {"input": {"frames": "sixteen"}})
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="not a valid .keras archive"):
        read_metadata(str(tmp_path / "junk.keras"))


def test_shipped_sidecars_round_trip():
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "saved_models")
    for name in ("synthetic_gestures_fp32.tflite", "synthetic_gestures_int8.tflite"):
        with open(sidecar_path(os.path.join(root, name)), encoding="utf-8") as handle:
            raw = json.load(handle)
        meta = read_metadata(os.path.join(root, name))
        assert meta.to_dict() == raw
        assert (meta.frames, meta.height_width, meta.downsample, meta.num_classes) == (16, (64, 64), 2, 8)
        assert (meta.channel_order, meta.value_range, meta.mean, meta.std) == (
            "RGB", "0-1", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert read_metadata(os.path.join(root, "synthetic_gestures.keras")).labels == raw["labels"]


@pytest.mark.parametrize("kwargs,message", [
    (dict(frames=0), "Received: input.frames=0"),
    (dict(frames=True), "Received: input.frames=True"),
    (dict(downsample=1.5), "Received: input.downsample=1.5"),
    (dict(size=[64]), "Received: input.size=[64]"),
    (dict(size=(64, -1)), "Received: input.size=(64, -1)"),
    (dict(normalization={"mean": [0, 0, 0], "scale": 1}), "Unknown normalization config keys"),
    (dict(normalization={"mean": [0, 0]}), "Received: mean="),
    (dict(normalization=3), "Received: normalization=3"),
    (dict(normalization="imagenet"), "Unknown normalization preset"),
    (dict(preprocessing_included="yes"), "Received: preprocessing_included='yes'"),
    (dict(labels=[]), "Received: labels=[]"),
    (dict(labels=["a", 2]), "Received: labels=['a', 2]"),
    (dict(output="softmax"), "Received: output='softmax'"),
    (dict(model="mobilenetv2"), "Received: model='mobilenetv2'"),
    (dict(labels=["a", "b"], model={"num_classes": 3}),
     "Metadata labels name 2 classes but its model.num_classes is 3: one of them is wrong"),
    (dict(extra={"labels": ["a"]}), "must not repeat the known keys"),
])
def test_metadata_validation(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelMetadata(**kwargs)


def test_metadata_takes_a_preset_name_as_make_dataset_does():
    assert ModelMetadata(normalization="unit").normalization == Normalization.preset("unit")


def test_metadata_fields_and_dict_form():
    meta = ModelMetadata(frames=16, size=(112, 128), normalization=Normalization.preset("kinetics"),
                         labels=["a", "b"], model={"model": "mobilenetv2", "num_classes": 2},
                         output="logits", extra={"card": {"accuracy": 0.5}})
    assert meta.height_width == (112, 128) and meta.channel_order == "BGR" and meta.num_classes == 2
    data = meta.to_dict()
    assert data["input"] == {"frames": 16, "size": [112, 128]} and data["card"] == {"accuracy": 0.5}
    assert ModelMetadata.from_dict(json.loads(json.dumps(data))) == meta
    with pytest.raises(ValueError, match="Received: input='16x112'"):
        ModelMetadata.from_dict({"input": "16x112"})
    with pytest.raises(ValueError, match="Received: list"):
        ModelMetadata.from_dict([1, 2])


@pytest.mark.parametrize("data, meant", [
    ({"lables": ["a"]}, "'lables' is unknown: did you mean 'labels'?"),
    ({"normalisation": {}}, "'normalisation' is unknown: did you mean 'normalization'?"),
    ({"input": {"down_sample": 2}}, "'input.down_sample' is unknown: did you mean 'input.downsample'?"),
    ({"downsampl": 2}, "'downsampl' is unknown: did you mean 'input.downsample'?")])
def test_a_misspelt_metadata_key_is_refused_not_kept_as_one_of_its_own(data, meant):
    """A hand-edited sidecar's `"down_sample": 2` was kept as an extra key, and the model ran
    on every frame instead of one in two without a word."""
    with pytest.raises(ValueError, match=re.escape(f"Metadata key {meant}")):
        ModelMetadata.from_dict(data)
    # keys of one's own stay, as they are
    own = {"card": {"accuracy": 0.5}, "source": "x.pth", "notes": "mine",
           "input": {"camera": 0, "resize": 2}}
    assert ModelMetadata.from_dict(own).to_dict() == {**own, "preprocessing_included": False}
    # nor written: a file that could not be read back
    with pytest.raises(ValueError, match="'inputs' is unknown: did you mean 'input'?"):
        ModelMetadata(frames=8, extra={"inputs": {"frames": 8}})


def test_pipeline_arguments_feed_the_model_the_clips_it_expects():
    unit = Normalization.preset("unit")
    assert ModelMetadata(downsample=2, normalization=unit).pipeline_arguments() == {
        "downsample": 2, "normalization": unit}
    # A model that normalises 0-255 frames itself takes them as they are.
    assert ModelMetadata(normalization=unit, preprocessing_included=True).pipeline_arguments() == {
        "normalization": "none"}
    # Nothing recorded: nothing said (the pipeline's defaults).
    assert ModelMetadata(frames=8).pipeline_arguments() == {}


def test_export_metadata_is_the_recorded_one_else_the_models_shape(tmp_path):
    from keras_efficient3d.artifacts import export_metadata

    model = tiny_model(FRAMES, SIZE, len(LABELS))
    path = str(tmp_path / "m.keras")
    save_model(model, path, metadata=METADATA)
    assert export_metadata(model, path, "ignored") == ModelMetadata.from_dict(METADATA)
    # a model card measured the .keras file and its published exports, not this export
    carded = str(tmp_path / "carded.keras")
    save_model(model, carded, metadata={**METADATA, "card": {"latency_ms": {"fp32": 6.2}}})
    assert "card" in read_metadata(carded).extra
    assert export_metadata(model, carded) == ModelMetadata.from_dict(METADATA)
    bare = str(tmp_path / "bare.keras")
    model.save(bare)
    for keras_file in (bare, None):
        meta = export_metadata(model, keras_file, "tiny")
        assert (meta.frames, meta.height_width, meta.normalization) == (FRAMES, (SIZE, SIZE), None)
        assert meta.model == {"model": "tiny", "num_classes": len(LABELS)}


def test_an_unwritable_destination_names_the_users_path(tmp_path, monkeypatch):
    """The temporary file's name (.tmp-xxxx.onnx) told the user nothing of what failed."""
    import tempfile

    def denied(suffix, prefix, dir):
        path = os.path.join(dir, prefix + "abcd" + suffix)
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    target = str(tmp_path / "m.onnx")
    with pytest.raises(OSError) as err:
        atomic_write(target, b"x")
    assert str(err.value) == f"cannot write {target} (Permission denied)"

def test_a_write_cut_short_by_a_full_disk_names_the_users_file(tmp_path):
    """A full disk, a quota or a size limit met while writing was "[Errno 27] File too
    large": neither the file nor that nothing was replaced."""
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous")
    with file_size_limit(4096), pytest.raises(OSError) as err:
        atomic_write(target, b"x" * 65536)
    assert str(err.value) == f"cannot write {target} (File too large)"
    assert err.value.errno == errno.EFBIG
    assert target.read_bytes() == b"previous" and os.listdir(tmp_path) == ["m.onnx"]
    # another file's error inside the block is that file's own
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        with atomic_path(target):
            open(tmp_path / "missing.txt").close()
    with pytest.raises(OSError) as err:  # stays its own, as other files' do
        with atomic_path(target):
            os.stat(999999)  # a descriptor: the error names its number
    assert err.value.errno == errno.EBADF and err.value.filename == 999999


def test_atomic_writes_take_the_umask_or_the_replaced_files_mode(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "private.txt", "x")
        with open(tmp_path / "plain.txt", "w") as handle:  # what open() makes
            handle.write("x")
    finally:
        os.umask(old)
    assert oct((tmp_path / "private.txt").stat().st_mode)[-3:] == "600"
    assert (tmp_path / "private.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode
    (tmp_path / "shared.txt").write_text("x")
    os.chmod(tmp_path / "shared.txt", 0o664)
    atomic_write(tmp_path / "shared.txt", "y")  # a replaced file keeps its mode
    assert oct((tmp_path / "shared.txt").stat().st_mode)[-3:] == "664"
    assert (tmp_path / "shared.txt").read_text() == "y"


def test_atomic_writes_leave_the_old_file_on_failure(tmp_path):
    path = tmp_path / "sub" / "state.json"
    atomic_write_json(path, {"epoch": 1})
    assert json.loads(path.read_text()) == {"epoch": 1} and oct(path.stat().st_mode)[-3:] == "644"
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            with open(tmp, "w") as handle:
                handle.write('{"epoch": 2')  # a crash half-way through
            raise RuntimeError("crash")
    assert json.loads(path.read_text()) == {"epoch": 1}
    assert sorted(os.listdir(path.parent)) == ["state.json"]  # no temporary file left behind
    atomic_write(tmp_path / "m.bin", b"\x00\x01")
    assert (tmp_path / "m.bin").read_bytes() == b"\x00\x01"

    class Broken(keras.Model):
        def save(self, filepath):
            raise OSError("disk full")

    model_path = tmp_path / "model.keras"
    model_path.write_bytes(b"previous")
    with pytest.raises(OSError, match="disk full"):
        save_model(Broken(), model_path, METADATA)
    assert model_path.read_bytes() == b"previous" and sorted(os.listdir(tmp_path)) == [
        "m.bin", "model.keras", "sub"]


def test_a_folder_replacement_that_fails_puts_the_old_folder_back(tmp_path, monkeypatch):
    from keras_efficient3d import atomic

    target, staged = tmp_path / "set", tmp_path / "staged"
    target.mkdir()
    (target / "old.txt").write_text("old")
    staged.mkdir()
    (staged / "new.txt").write_text("new")
    rename = os.rename

    def failing(source, destination):
        if os.fspath(source) == os.fspath(staged):
            raise OSError("disk full")
        rename(source, destination)

    monkeypatch.setattr(atomic.os, "rename", failing)
    with pytest.raises(OSError, match="disk full"):
        atomic.replace_folder(str(staged), str(target))
    assert (target / "old.txt").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["set", "staged"]  # no folder aside left
    monkeypatch.setattr(atomic.os, "rename", rename)
    atomic.replace_folder(str(staged), str(target))
    assert sorted(os.listdir(target)) == ["new.txt"] and sorted(os.listdir(tmp_path)) == ["set"]


_LOADER = r"""
import sys
import numpy as np
import keras_efficient3d  # the only project import
import keras

out = {}
for path in sys.argv[2:]:
    model = keras.saving.load_model(path)
    x = np.linspace(0.0, 1.0, int(np.prod(model.input_shape[1:])), dtype=np.float32)
    out[path] = np.asarray(model(x.reshape((1,) + model.input_shape[1:]), training=False))
    if path.endswith("checkpoint.keras"):
        out["optimizer"] = np.array([type(model.optimizer).__name__, str(model.optimizer.iterations.numpy())])
np.savez(sys.argv[1], **{str(i): v for i, v in enumerate(out.values())}, keys=np.array(list(out)))
"""


@pytest.mark.slow
def test_every_saved_kind_loads_after_the_package_import_alone(tmp_path):
    """Plain models (every custom layer kind), a BatchNorm-folded model, a model with the
    preprocessing layer, and a training checkpoint with TorchSGD's state, each saved as the
    project saves them, load in a fresh interpreter that imports only keras_efficient3d."""
    from keras_efficient3d import trainer
    from keras_efficient3d.fold import fold_batchnorm
    from keras_efficient3d.optim import TorchSGD
    from keras_efficient3d.preprocessing import with_preprocessing

    shape = (16, 32, 32, 3)  # ShuffleNetV1 needs an even frame count at every stage
    models = {}
    for name in ("mobilenetv2_0.2x", "shufflenetv2_0.25x", "shufflenet_0.25x_g3"):
        net = create_model(name, input_shape=shape, num_classes=3)
        models[name] = randomize_batchnorm(net, seed=1)
    base = models["mobilenetv2_0.2x"]
    models["folded"] = fold_batchnorm(base)
    models["preprocessing"] = with_preprocessing(base, Normalization.preset("kinetics"))
    # MobileNetV1, the family with the fewest layers: fitting traces its train step.
    checkpoint = create_model("mobilenet_0.25x", input_shape=shape, num_classes=3)
    checkpoint.compile(optimizer=TorchSGD(0.01, momentum=0.9, dampening=0.9, l2_weight_decay=1e-3),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    checkpoint.fit(rng.random((2,) + shape, np.float32), np.array([0, 1]), epochs=1, verbose=0)
    callback = trainer.Checkpointer(str(tmp_path), every=1)
    callback.set_model(checkpoint)
    callback.on_epoch_end(0, {"val_accuracy": 0.5})  # best.keras, last.keras, as training writes them
    paths = [save_model(net, str(tmp_path / f"{key}.keras"), {"input": {"frames": 16, "size": 32}})
             for key, net in models.items()]
    os.replace(tmp_path / "last.keras", tmp_path / "checkpoint.keras")
    paths.append(str(tmp_path / "checkpoint.keras"))
    models["checkpoint"] = checkpoint

    out = tmp_path / "outputs.npz"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    run = subprocess.run([sys.executable, "-c", _LOADER, str(out), *paths], capture_output=True,
                         text=True, timeout=600, env=env, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = np.load(out)
    keys = list(loaded["keys"])
    for path, net in zip(paths, models.values()):
        x = np.linspace(0.0, 1.0, int(np.prod(net.input_shape[1:])), dtype=np.float32)
        expected = np.asarray(net(x.reshape((1,) + net.input_shape[1:]), training=False))
        np.testing.assert_allclose(loaded[str(keys.index(path))], expected, rtol=1e-4, atol=1e-5,
                                   err_msg=path)
    name, iterations = loaded[str(keys.index("optimizer"))]
    assert name == "TorchSGD" and int(iterations) == 1
    assert read_metadata(paths[0]).frames == 16


def test_save_and_read_name_the_users_file_in_one_error(tmp_path):
    """.KERAS passed the extension check and Keras then refused a temporary file the user
    never named; a missing .keras was a bare FileNotFoundError from read_metadata."""
    from keras_efficient3d.artifacts import ModelFileError, read_metadata, save_model
    from keras_efficient3d.registry import create_model

    model = create_model("mobilenetv2_0.2x", input_shape=(4, 32, 32, 3), num_classes=2)
    with pytest.raises(ModelFileError, match=r"M.KERAS: a saved model needs the .keras "
                                             r"extension, in lower case"):
        save_model(model, str(tmp_path / "M.KERAS"))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ModelFileError, match=r"nope.keras: cannot read it"):
        read_metadata(str(tmp_path / "nope.keras"))
    (tmp_path / "dir.keras").mkdir()
    with pytest.raises(ModelFileError, match=r"dir.keras: cannot read it"):
        read_metadata(str(tmp_path / "dir.keras"))


def test_metadata_fields_outside_input_are_refused_not_kept_as_extras():
    """save_to_preset(metadata={"frames": 8, "size": 32}) kept both as unknown extras and
    recorded no clip: the JSON layout nests them under "input"."""
    from keras_efficient3d.artifacts import ModelMetadata

    with pytest.raises(ValueError, match=r"frames, size go under 'input' .*ModelMetadata\(frames="):
        ModelMetadata.from_dict({"frames": 8, "size": 32})
    read = ModelMetadata.from_dict({"input": {"frames": 8, "size": 32}, "future_key": 1})
    assert (read.frames, read.size, read.extra) == (8, 32, {"future_key": 1})
    with pytest.raises(ValueError, match=r"extra must not repeat the known keys. Received: \['batch'\]"):
        ModelMetadata(frames=8, extra={"batch": 8})  # it would write what it cannot read


@pytest.mark.parametrize("preset, by_hand", [
    # The original's figures, written out here: ActivityNet's mean, 0-255 RGB ...
    ("original", lambda f: f - np.float32([114.7748, 107.7354, 99.4750])),
    # ... BGR as OpenCV gave the Kinetics videos, the mean applied to B, G, R as they came ...
    ("kinetics", lambda f: f[..., ::-1] - np.float32([114.7748, 107.7354, 99.4750])),
    ("kinetics_mean_std", lambda f: (f[..., ::-1] - np.float32([110.63666788, 103.16065604,
                                                                96.29023126]))
     / np.float32([38.7568578, 37.88248729, 40.02898126])),
    # ... and this project's 0-1 frames.
    ("unit", lambda f: f / np.float32(255.0)),
])
def test_a_model_with_preprocessing_takes_raw_frames_as_the_normalisation_says(preset, by_hand):
    """`with_preprocessing(model, preset)` on uint8 RGB frames is the model on the frames
    normalised by hand (channel order, value range, mean, std), not by the package."""
    from keras_efficient3d.layers import Conv3D
    from keras_efficient3d.preprocessing import with_preprocessing

    # A linear model: every input value shows in its output (a network's ReLU6 saturates on
    # 0-255 inputs and hides the normalisation).
    inputs = keras.Input((4, 16, 16, 3))
    model = keras.Model(inputs, Conv3D(4, (1, 2, 2), use_bias=True,
                                       bias_initializer="random_normal")(inputs))
    frames = np.random.default_rng(5).integers(0, 256, (2, 4, 16, 16, 3), dtype=np.uint8)
    expected = np.asarray(model(by_hand(frames.astype(np.float32)), training=False))
    got = np.asarray(with_preprocessing(model, preset)(frames, training=False))
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
    # the model tells the normalisations apart: a wrong one would show
    other = np.asarray(model(frames.astype(np.float32)[..., ::-1] / 255.0, training=False))
    assert np.abs(other - expected).max() > 1e-2 * np.abs(expected).max()


def test_saving_on_another_backend_imports_tensorflow_quietly_first(tmp_path, monkeypatch):
    """Keras' .keras writer imports TensorFlow on JAX and PyTorch too: convert's output on
    JAX had TensorFlow's oneDNN notices amid its own lines."""
    import keras_efficient3d

    calls = []
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    monkeypatch.setattr(keras_efficient3d, "import_tensorflow_quietly", lambda: calls.append(1))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    save_model(model, tmp_path / "m.keras")
    assert calls == [1] and (tmp_path / "m.keras").exists()


def test_a_model_whose_optimizer_trained_fewer_weights_loads_without_keras_warning(tmp_path):
    """A --ft_portion=last_layer run's best.keras: its optimizer holds the head's variables,
    the loaded model trains every weight; Keras' "Skipping variable loading for optimizer"
    warning told a user who ran the model nothing."""
    import warnings

    import keras

    from keras_efficient3d.artifacts import load_model

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    model.layers[0].trainable = False
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((4, 3)), np.zeros((4, 2)), verbose=0)
    model.layers[0].trainable = True
    model.save(tmp_path / "head_only.keras")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model(tmp_path / "head_only.keras")
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    assert loaded.layers[0].trainable and loaded.output_shape == (None, 2)


def test_a_file_of_frames_says_who_puts_them_in_bgr_order():
    """The sidecar of a Kinetics model's file of frames records a BGR normalisation beside
    its frames: the frames are RGB, the model reverses them itself."""
    from keras_efficient3d.artifacts import FRAMES_DTYPE, ModelMetadata, frames_metadata
    from keras_efficient3d.predict.stream import _check_recorded_input

    bgr = frames_metadata(ModelMetadata(frames=4, size=32), "kinetics")
    assert bgr.dtype == f"{FRAMES_DTYPE}; the model puts them in BGR order itself"
    assert frames_metadata(ModelMetadata(frames=4, size=32), "unit").dtype == FRAMES_DTYPE
    _check_recorded_input("m.xml", bgr.dtype, True)  # still read as a file of frames
    with pytest.raises(Exception, match="the metadata of another export"):
        _check_recorded_input("m.xml", bgr.dtype, False)
