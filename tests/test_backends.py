"""The core tier on every Keras backend: models, conversion, save/load, presets.

Marked ``backends``: ./test.sh runs them again under ``KERAS_BACKEND=jax`` and ``torch``
(``KERAS_BACKEND=jax python -m pytest -m backends tests/test_backends.py``). Nothing here
imports TensorFlow itself, except the tf.data input of ``model.fit``, which Keras 3 takes on
every backend.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_efficient3d as k3
from helpers import randomize_batchnorm
from keras_efficient3d import backends, convert, presets
from keras_efficient3d.artifacts import read_metadata, save_model

pytestmark = pytest.mark.backends

BACKEND = keras.backend.backend()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (8, 32, 32, 3)


def _rel(a, b):
    a, b = (np.asarray(keras.ops.convert_to_numpy(v)) for v in (a, b))
    return float(np.abs(a - b).max() / np.abs(b).max())


def _original(reference_dir, name):
    """The reference checkpoint's clip (NDHWC, as the original's model took it) and logits."""
    ref = np.load(reference_dir / "pytorch_checkpoints" / f"{name}.npz")
    clips = ref["clip_uint8_ncdhw"].astype(np.float32) - ref["input_offset"]
    return clips.transpose(0, 2, 3, 4, 1), ref["logits"]


@pytest.fixture(scope="module")
def converted(reference_dir):
    model, config, _ = convert.convert_checkpoint(
        str(reference_dir / "pytorch_checkpoints" / "mobilenetv2_0.2x.pth"), log=lambda _: None)
    return model


def test_converted_checkpoint_matches_original(converted, reference_dir):
    clips, logits = _original(reference_dir, "mobilenetv2_0.2x")
    assert _rel(converted.predict(clips, verbose=0), logits) < 1e-5
    assert _rel(converted(clips[:1], training=False), logits[:1]) < 1e-5


# Not on TensorFlow, whose own tests cover it (test_models.py round trips, test_training.py
# fits); the JAX tier compiles every model and step anew, so it leaves the two slow-marked
# families to the PyTorch tier (./test.sh runs that tier with its slow tests).
_OTHER_BACKENDS = pytest.mark.skipif(
    BACKEND == "tensorflow", reason="covered by the TensorFlow run's own tests")


@_OTHER_BACKENDS
@pytest.mark.parametrize("name", [
    pytest.param("shufflenetv1_0.25x_g3", marks=pytest.mark.slow), "shufflenetv2_0.25x",
    pytest.param("resnet10", marks=pytest.mark.slow)])
def test_build_predict_train_save_load(name, tmp_path):
    """Grouped 1x1x1 convs and channel shuffles, channel splits, dense 3x3x3 convs with
    strided time and shortcut A: built, trained by `fit` on a tf.data pipeline, saved,
    loaded with the same outputs."""
    import tensorflow as tf

    shape = k3.registry.get_family(name).small_input
    keras.utils.set_random_seed(0)
    model = k3.create_model(name, input_shape=shape, num_classes=3)
    x = np.random.default_rng(0).normal(size=(4,) + shape).astype(np.float32)
    before = model.predict(x, verbose=0)
    np.testing.assert_allclose(np.asarray(keras.ops.convert_to_numpy(model(x))), before,
                               rtol=1e-4, atol=1e-5)
    data = tf.data.Dataset.from_tensor_slices((x, np.array([0, 1, 2, 0]))).batch(4)
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(data, epochs=2, verbose=0, shuffle=False)  # Keras' shuffle only warns for a dataset
    assert np.isfinite(history.history["loss"]).all()
    # Calls, not predict: on JAX each predict compiles the model anew (predict against call
    # is checked above).
    after = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
    assert np.isfinite(after).all()  # the moving statistics too (no negative variance)
    assert _rel(after, before) > 1e-4  # the step changed the weights
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert _rel(keras.ops.convert_to_numpy(loaded(x, training=False)), after) < 1e-6


@_OTHER_BACKENDS  # TensorFlow's runner: test_runtime.py
def test_keras_runner_compiles_the_folded_model_for_this_backend(tmp_path):
    """`load_runner` of a .keras file on this backend (what the predict command runs):
    BatchNorm folded, compiled the backend's way (on PyTorch a TorchScript trace per input
    shape), the model's outputs at two batch sizes."""
    from keras_efficient3d import runtime

    model = k3.create_model("shufflenetv2_0.25x", input_shape=SHAPE, num_classes=5)
    randomize_batchnorm(model, seed=2, spread=0.2)
    path = str(tmp_path / "m.keras")
    model.save(path)
    runner = runtime.load_runner(path, threads=2)
    assert not any(isinstance(layer, keras.layers.BatchNormalization)
                   for layer in runner.model.layers)
    clips = np.random.default_rng(2).normal(size=(3,) + SHAPE).astype(np.float32)
    expected = model.predict(clips, verbose=0)  # one compilation, not one per batch size
    assert _rel(runner(clips[:1]), expected[:1]) < 1e-5
    assert _rel(runner(clips), expected) < 1e-5
    # A model that takes 0-255 frames (its normalisation a layer): each clip its own
    # outputs (PyTorch's trace had kept the first clip's, numpy's sums being constants to it)
    from keras_efficient3d.data.normalization import Normalization
    from keras_efficient3d.preprocessing import with_preprocessing

    framed = with_preprocessing(model, Normalization.preset("kinetics"))
    framed.save(str(tmp_path / "framed.keras"))
    framed_runner = runtime.load_runner(str(tmp_path / "framed.keras"), threads=2)
    frames = np.random.default_rng(3).integers(0, 256, (2, 1) + SHAPE).astype(np.float32)
    for pixels in frames:
        assert _rel(framed_runner(pixels), framed.predict(pixels, verbose=0)) < 1e-5
    if BACKEND == "torch":
        import torch

        traced = runtime.torch_trace(runner.model, torch.from_numpy(clips[:1]))
        assert isinstance(traced, torch.jit.ScriptModule)
        with torch.no_grad():
            assert _rel(traced(torch.from_numpy(clips[:1])), runner(clips[:1])) < 1e-6


_NEXT = {"tensorflow": "jax", "jax": "torch", "torch": "tensorflow"}

_LOAD = """
import sys, json, numpy as np, keras, keras_efficient3d
model = keras.saving.load_model(sys.argv[1])
y = model.predict(np.load(sys.argv[2]), verbose=0)
print(json.dumps({"backend": keras.backend.backend(), "y": y.tolist()}))
"""


def test_a_keras_file_compiled_on_another_backend_loads_compiled_for_this_one(tmp_path):
    """Keras compiles a loaded model as the file says, which is how the writing backend said
    it: PyTorch names its own Adam class, JAX records jit_compile=True. A VideoModel loads
    with Keras' Adam of this backend, this backend's own compilation, and the saved state."""
    import zipfile

    model = k3.create_model("mobilenet_0.25x", input_shape=(4, 32, 32, 3), num_classes=3)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(7)  # the saved state, as after 7 steps
    path = tmp_path / "m.keras"
    model.save(path)
    # as PyTorch and JAX write it (each file seen so): rewritten in place
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(entries["config.json"])
    config["compile_config"]["optimizer"].update(
        module="keras.src.backend.torch.optimizers.torch_adam", registered_name="Adam")
    config["compile_config"]["jit_compile"] = True
    entries["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)

    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer).__name__ == "Adam"
    assert ("torch" in type(loaded.optimizer).__module__) == (BACKEND == "torch")
    # Keras' "auto": XLA on JAX only (on a CPU); not torch.compile, not TensorFlow's XLA
    assert loaded.jit_compile == (BACKEND == "jax")
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 7
    if BACKEND != "jax":  # JAX compiles a training step for a minute; its class is the point
        clips = np.random.default_rng(0).random((2, 4, 32, 32, 3), dtype=np.float32)
        loaded.fit(clips, np.arange(2), epochs=1, verbose=0)
        assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 8


def test_keras_file_loads_under_another_backend(converted, reference_dir, tmp_path):
    """A .keras file saved here loads in a process on the next backend
    (tensorflow -> jax -> torch -> tensorflow) with the same outputs."""
    pytest.importorskip(_NEXT[BACKEND] if _NEXT[BACKEND] != "tensorflow" else "tensorflow")
    clips, logits = _original(reference_dir, "mobilenetv2_0.2x")
    path, inputs = str(tmp_path / "m.keras"), str(tmp_path / "x.npy")
    converted.save(path)
    np.save(inputs, clips[:1])
    env = dict(os.environ, KERAS_BACKEND=_NEXT[BACKEND],
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", _LOAD, path, inputs], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["backend"] == _NEXT[BACKEND]
    assert _rel(out["y"], logits[:1]) < 1e-5


def test_converter_needs_no_tensorflow(reference_dir):
    """The checkpoint reader, the converter and the models import no TensorFlow off the
    TensorFlow backend."""
    if BACKEND == "tensorflow":
        pytest.skip("the TensorFlow backend imports TensorFlow")
    code = ("import sys, keras_efficient3d as k3; from keras_efficient3d import convert; "
            "m, _, _ = convert.convert_checkpoint(sys.argv[1], 8, 32, log=lambda _: None); "
            "m.predict(__import__('numpy').zeros((1, 8, 32, 32, 3), 'float32'), verbose=0); "
            "print('tensorflow' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run(
        [sys.executable, "-c", code,
         str(reference_dir / "pytorch_checkpoints" / "shufflenetv2_0.25x.pth")],
        env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "False"


def test_tensorflow_only_parts_name_their_backend(monkeypatch):
    monkeypatch.setattr(backends, "backend", lambda: "jax")
    with pytest.raises(backends.BackendError) as err:
        backends.require_tensorflow_backend("TFLite conversion")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("TFLite conversion needs the TensorFlow backend")
    assert "KERAS_BACKEND=jax" in message


@pytest.mark.skipif(BACKEND == "tensorflow", reason="checks the other backends' message")
def test_tflite_export_refuses_other_backends(converted):
    from keras_efficient3d.deploy import tflite

    with pytest.raises(backends.BackendError, match=f"KERAS_BACKEND={BACKEND}"):
        tflite.convert(converted)


# ---------------------------------------------------------------------------------------
# Presets.


@pytest.fixture()
def preset_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_EFFICIENT3D_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_published_presets_list_the_papers_configurations():
    names = presets.list_presets()
    assert len(presets.PUBLISHED) == 38  # 17 configurations x 2 datasets + 4 Kinetics ResNets
    assert "synthetic_gestures" in names
    spec = presets.PUBLISHED["mobilenetv2_1.0x_jester"]
    assert spec.checkpoint == "jester_mobilenetv2_1.0x_RGB_16_best.pth"
    assert (spec.num_classes, spec.top1, spec.downsample) == (27, 94.59, 2)
    shuffle = presets.PUBLISHED["shufflenetv1_0.5x_g3_kinetics600"]
    assert shuffle.checkpoint == "kinetics_shufflenet_0.5x_G3_RGB_16_best.pth"
    assert (shuffle.num_classes, shuffle.normalization) == (600, "kinetics")
    assert presets.PUBLISHED["resnext101_kinetics600"].checkpoint == \
        "kinetics_resnext_101_RGB_16_best.pth"
    for spec in presets.PUBLISHED.values():  # every one names a buildable configuration
        assert k3.registry.resolve_name(spec.model)[0] in k3.list_models()
    # names in any case, as model names; a typo is shown the names it is closest to
    assert presets.preset_name("Synthetic_Gestures") == "synthetic_gestures"
    assert presets.preset_name("MobileNetV2_1.0x_Jester") == "mobilenetv2_1.0x_jester"
    assert presets.preset_name("my/Preset") == "my/Preset"
    with pytest.raises(ValueError, match=r"Unknown preset 'mobilenetv2_1.0x_jestr': .* e\.g\. "
                                         r"mobilenetv2_1\.0x_jester, "):
        presets.resolve_preset("mobilenetv2_1.0x_jestr")


def test_published_preset_says_where_its_checkpoint_comes_from(preset_home):
    with pytest.raises(FileNotFoundError) as err:
        k3.MobileNetV2_3D.from_preset("mobilenetv2_0.2x_jester")
    message = str(err.value)
    assert "\n" not in message
    assert "jester_mobilenetv2_0.2x_RGB_16_best.pth" in message
    assert "github.com/okankop/Efficient-3DCNNs" in message
    assert str(preset_home / "checkpoints") in message
    with pytest.raises(FileNotFoundError, match=r"checkpoint=/x/nope.pth: no such file") as err:
        k3.MobileNetV2_3D.from_preset("mobilenetv2_0.2x_jester", checkpoint="/x/nope.pth")
    assert "pass checkpoint=" not in str(err.value)  # it was passed
    # another family's builder: refused before the checkpoint is looked for (no "download
    # it" for a preset that would be refused after the download)
    with pytest.raises(ValueError, match="holds a mobilenetv2 model, not a ShuffleNetV2_3D"):
        k3.ShuffleNetV2_3D.from_preset("mobilenetv2_0.2x_jester")


def test_published_preset_made_on_first_use(preset_home, reference_dir):
    # Described before its checkpoint is downloaded: what it takes and predicts.
    described = presets.preset_metadata("MobileNetV2_0.2x_jester")
    assert not (preset_home / "presets").exists()  # nothing made, nothing looked for
    checkpoints = preset_home / "checkpoints"
    checkpoints.mkdir(parents=True)
    # The reference checkpoint under the authors' file name, as a user would download it.
    os.symlink(reference_dir / "pytorch_checkpoints" / "mobilenetv2_0.2x.pth",
               checkpoints / "jester_mobilenetv2_0.2x_RGB_16_best.pth")
    lines = []
    model = k3.MobileNetV2_3D.from_preset("mobilenetv2_0.2x_jester", log=lines.append)
    cached = preset_home / "presets" / "mobilenetv2_0.2x_jester"
    assert sorted(os.listdir(cached)) == ["config.json", "metadata.json", "model.weights.h5"]
    assert any(str(cached) in line for line in lines)
    # every line is of the user's files: no temporary conversion file named
    assert not any("converted.keras" in line for line in lines), lines
    clips, logits = _original(reference_dir, "mobilenetv2_0.2x")
    assert _rel(keras.ops.convert_to_numpy(model(clips, training=False)), logits) < 1e-5
    meta = presets.preset_metadata("mobilenetv2_0.2x_jester")
    assert (meta.frames, meta.size, meta.downsample) == (16, 112, 2)
    # the order the original numbers Jester's classes in (its categories.txt, alphabetical)
    assert meta.labels[0] == "Doing other things" and len(meta.labels) == 27
    assert meta.normalization.mean[0] == pytest.approx(114.7748)
    assert meta.extra["paper_top1"] == 86.43
    # the description was the made preset's metadata, less what only the checkpoint says
    extra = dict(meta.extra)
    epoch, digest = extra.pop("epoch"), extra.pop(presets.CHECKPOINT_DIGEST)
    assert epoch == 30 and len(digest) == 64
    assert described == dataclasses.replace(meta, extra=extra)
    # The second time from the cache: nothing converted.
    lines.clear()
    k3.presets.from_preset("mobilenetv2_0.2x_jester", log=lines.append)
    assert lines == []
    with pytest.raises(ValueError, match="holds a mobilenetv2 model"):
        k3.ShuffleNetV2_3D.from_preset("mobilenetv2_0.2x_jester")


def test_a_cached_preset_is_remade_from_another_checkpoint_given(preset_home, reference_dir,
                                                                 tmp_path):
    """checkpoint= names the file to make the preset from: a preset cached from another file
    (a fine-tuned one, a newer download) is remade, not returned as it was."""
    torch = pytest.importorskip("torch")
    source = reference_dir / "pytorch_checkpoints" / "mobilenetv2_0.2x.pth"
    checkpoint = torch.load(source, weights_only=True)
    checkpoint["state_dict"]["module.classifier.1.bias"] += 1.0
    other = tmp_path / "jester_mobilenetv2_0.2x_RGB_16_finetuned.pth"
    torch.save(checkpoint, other)
    name = "mobilenetv2_0.2x_jester"
    clips, logits = _original(reference_dir, "mobilenetv2_0.2x")
    first = presets.from_preset(name, checkpoint=str(source), log=lambda _: None)
    assert _rel(keras.ops.convert_to_numpy(first(clips, training=False)), logits) < 1e-5
    lines = []
    remade = presets.from_preset(name, checkpoint=str(other), log=lines.append)
    assert _rel(keras.ops.convert_to_numpy(remade(clips, training=False)), logits + 1.0) < 1e-5
    assert any("remade from" in line and str(other) in line for line in lines), lines
    assert os.listdir(preset_home / "presets") == [name]  # nothing left aside
    for given in (str(other), None):  # the same file again, or none: the cache as it is
        lines.clear()
        again = presets.from_preset(name, checkpoint=given, log=lines.append)
        assert lines == []
        assert _rel(keras.ops.convert_to_numpy(again(clips, training=False)), logits + 1.0) < 1e-5


@pytest.mark.parametrize("preset, checkpoint, says", [
    ("mobilenetv2_0.2x_jester", "shufflenetv2_0.25x", "holds a shufflenetv2"),
    ("mobilenetv2_0.2x_kinetics600", "mobilenetv2_0.2x", "num_classes=27"),
    ("mobilenetv2_0.45x_jester", "mobilenetv2_0.2x", "width_mult=0.2"),
    ("shufflenetv1_0.5x_g3_jester", "mobilenet_0.5x", "holds a mobilenetv1"),
])
def test_published_preset_refuses_a_checkpoint_of_another_model(preset_home, reference_dir,
                                                                preset, checkpoint, says):
    """A published preset is the paper's configuration: a file of another family, width or
    head is refused in one line, and nothing is cached under the preset's name."""
    path = reference_dir / "pytorch_checkpoints" / f"{checkpoint}.pth"
    with pytest.raises(ValueError) as err:
        presets.from_preset(preset, checkpoint=str(path), log=lambda _: None)
    message = str(err.value)
    assert "\n" not in message and says in message and preset in message
    assert not (preset_home / "presets" / preset).exists()


def test_save_to_preset_round_trip(tmp_path):
    keras.utils.set_random_seed(1)
    model = k3.ShuffleNetV2_3D(width_mult=0.25, input_shape=SHAPE, num_classes=4)
    x = np.random.default_rng(1).normal(size=(1,) + SHAPE).astype(np.float32)
    metadata = {"model": {"model": "shufflenetv2", "width_mult": 0.25, "num_classes": 4},
                "input": {"frames": 8, "size": 32}, "labels": list("abcd")}
    model.save_to_preset(tmp_path / "p", metadata=metadata)
    meta = json.loads((tmp_path / "p" / "metadata.json").read_text())
    assert meta["parameter_count"] == model.count_params()
    assert meta["model_metadata"]["labels"] == list("abcd")
    loaded = k3.ShuffleNetV2_3D.from_preset(str(tmp_path / "p"))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)),
                                  keras.ops.convert_to_numpy(model(x, training=False)))
    loaded.save_to_preset(tmp_path / "q")  # loaded models have the method too
    with pytest.raises(ValueError, match="holds a shufflenetv2 model"):
        k3.MobileNetV2_3D.from_preset(str(tmp_path / "p"))
    # a checkpoint given for a preset not made from one is refused, not dropped
    for preset, what in ((str(tmp_path / "p"), "is a preset directory"),
                         ("synthetic_gestures", "is made from synthetic_gestures.keras")):
        with pytest.raises(ValueError, match=f"'{re.escape(preset)}' {what}, not made from a "
                                             "checkpoint: give no checkpoint"):
            k3.presets.from_preset(preset, checkpoint=str(tmp_path / "k.pth"))


def test_a_loaded_model_keeps_what_it_records_through_presets_and_saves(tmp_path):
    """A trained model loaded from its .keras file and saved as a preset (or as another
    .keras file) lost its labels, clip and normalisation; another preset's metadata given
    for it was written as it was, 16x64x64 for a model of 8x32x32."""
    import zipfile

    from keras_efficient3d import artifacts

    model = k3.ShuffleNetV2_3D(width_mult=0.25, input_shape=SHAPE, num_classes=4)
    recorded = {"input": {"frames": 8, "size": 32}, "labels": list("abcd"),
                "normalization": k3.data.Normalization.preset("unit").to_config(),
                "card": {"accuracy": 0.9}}
    save_model(model, tmp_path / "m.keras", metadata=recorded)
    loaded = artifacts.load_model(tmp_path / "m.keras", compile=False)
    loaded.save_to_preset(tmp_path / "p")
    meta = presets.preset_metadata(str(tmp_path / "p"))
    assert (meta.labels, meta.frames, meta.size) == (list("abcd"), 8, 32)
    assert meta.normalization is not None and "card" not in meta.extra  # the card is the file's
    loaded.save(tmp_path / "again.keras")
    assert read_metadata(tmp_path / "again.keras").labels == list("abcd")
    # a metadata given wins, written once (the model's own was added as a second entry)
    save_model(loaded, tmp_path / "given.keras", metadata=dict(recorded, labels=list("wxyz")))
    with zipfile.ZipFile(tmp_path / "given.keras") as archive:
        assert archive.namelist().count("keras_efficient3d.json") == 1
    assert read_metadata(tmp_path / "given.keras").labels == list("wxyz")
    with pytest.raises(ValueError, match=r"^the metadata describes another model: 16 frames "
                                         r"\(the model takes 8\); 64x64 frames \(the model takes "
                                         r"32x32\); 27 class names \(the model has 4 outputs\)"):
        loaded.save_to_preset(tmp_path / "q", metadata={"input": {"frames": 16, "size": 64},
                                                        "labels": [str(i) for i in range(27)]})
    assert not (tmp_path / "q" / "config.json").exists()
    # a model changed since it was loaded (another head): its file's record is not written
    other = k3.ShuffleNetV2_3D(width_mult=0.25, input_shape=SHAPE, num_classes=3)
    object.__setattr__(other, "_recorded_metadata", loaded._recorded_metadata)
    with pytest.warns(UserWarning, match="saved without the metadata of the file the model was "
                                         r"loaded from, which no longer fits it \(4 class names"):
        save_model(other, tmp_path / "changed.keras")
    assert read_metadata(tmp_path / "changed.keras") is None
    # a bad record beside a model does not stop it loading (it is said where it is read)
    (tmp_path / "m.keras.json").write_text("{not json")
    (tmp_path / "plain.keras").write_bytes((tmp_path / "changed.keras").read_bytes())
    (tmp_path / "plain.keras.json").write_text("{not json")
    assert artifacts.load_model(tmp_path / "plain.keras", compile=False) is not None


def test_a_preset_of_broken_or_mismatched_files_is_one_line(tmp_path):
    """A truncated model.weights.h5 raised h5py's bare OSError, weights of another width
    Keras' "A total of 55 objects could not be loaded" after a warning per layer, and a
    metadata.json copied from a MobileNetV1 preset made MobileNetV1_3D.from_preset return the
    ShuffleNetV2 its config and weights hold."""
    import warnings

    k3.ShuffleNetV2_3D(width_mult=0.25, input_shape=SHAPE, num_classes=4).save_to_preset(
        tmp_path / "p")
    weights = tmp_path / "p" / "model.weights.h5"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=rf"^{re.escape(str(weights))}: not weights of the model "
                                         r"its config.json describes \(a truncated file"):
        presets.from_preset(str(tmp_path / "p"))
    k3.ShuffleNetV2_3D(width_mult=0.5, input_shape=SHAPE, num_classes=4).save_weights(weights)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="not weights of the model its config.json describes "
                                             r"\(a truncated file, or another model's"):
            presets.from_preset(str(tmp_path / "p"))
    assert not caught
    weights.write_bytes(whole)
    meta = json.loads((tmp_path / "p" / "metadata.json").read_text())
    (tmp_path / "p" / "metadata.json").write_text(json.dumps(dict(meta, **{
        presets.FAMILY_FIELD: "mobilenetv1"})))
    with pytest.raises(ValueError, match="holds a shufflenetv2 model, not a MobileNetV1_3D"):
        k3.MobileNetV1_3D.from_preset(str(tmp_path / "p"))
    assert k3.ShuffleNetV2_3D.from_preset(str(tmp_path / "p")) is not None  # what it holds


def test_a_save_to_preset_that_fails_leaves_the_preset_whole(tmp_path, monkeypatch):
    model = k3.MobileNetV2_3D(width_mult=0.2, input_shape=SHAPE, num_classes=4)
    model.save_to_preset(tmp_path / "p")
    before = {p.name: p.read_bytes() for p in (tmp_path / "p").iterdir()}
    other = k3.ShuffleNetV2_3D(width_mult=0.25, input_shape=SHAPE, num_classes=4)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(other, "save_weights", full_disk)
    with pytest.raises(OSError):
        other.save_to_preset(tmp_path / "p")
    # neither the new config over the old weights nor a staging folder left behind
    assert {p.name: p.read_bytes() for p in (tmp_path / "p").iterdir()} == before
    assert k3.MobileNetV2_3D.from_preset(str(tmp_path / "p")).count_params() == \
        model.count_params()


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "older_preset"])
def test_builder_from_preset_refuses_another_family_without_metadata(tmp_path, recorded):
    """A preset saved with no metadata and a name of the user's: the family is what the
    metadata records or, for a preset saved before it did, what the layers show."""
    model = k3.ResNeXt3D(depth=50, cardinality=4, input_shape=(16, 32, 32, 3), num_classes=3,
                         name="my_net")
    model.save_to_preset(tmp_path / "p")
    path = tmp_path / "p" / "metadata.json"
    meta = json.loads(path.read_text())
    assert meta[presets.FAMILY_FIELD] == "resnext"
    if not recorded:
        del meta[presets.FAMILY_FIELD]
        path.write_text(json.dumps(meta))
    for builder in (k3.ResNet3D, k3.MobileNetV2_3D):
        with pytest.raises(ValueError, match="holds a resnext model") as err:
            builder.from_preset(str(tmp_path / "p"))
        assert "\n" not in str(err.value)
    assert k3.ResNeXt3D.from_preset(str(tmp_path / "p")).name == "my_net"


def test_a_preset_without_its_metadata_file_loads_by_every_route(tmp_path):
    """config.json and model.weights.h5 alone: presets.from_preset loaded it, the builder's
    from_preset and preset_metadata refused it as "not a readable preset file"."""
    model = k3.ShuffleNetV1_3D(0.25, input_shape=(16, 32, 32, 3), num_classes=3)
    model.save_to_preset(tmp_path / "p")
    (tmp_path / "p" / "metadata.json").unlink()
    assert presets.preset_metadata(str(tmp_path / "p")) is None
    assert k3.ShuffleNetV1_3D.from_preset(str(tmp_path / "p")).count_params() == model.count_params()
    with pytest.raises(ValueError, match="holds a shufflenetv1 model"):
        k3.MobileNetV2_3D.from_preset(str(tmp_path / "p"))


def test_shipped_model_is_a_preset(preset_home):
    model = presets.from_preset("synthetic_gestures", log=lambda _: None)
    meta = presets.preset_metadata("synthetic_gestures")
    assert model.output_shape[-1] == len(meta.labels) == 8
    shipped = keras.saving.load_model(os.path.join(ROOT, "saved_models", "synthetic_gestures.keras"),
                                      compile=False)
    x = np.random.default_rng(2).uniform(0, 255, (1,) + tuple(model.input_shape[1:]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x.astype(np.float32), training=False)),
                               keras.ops.convert_to_numpy(shipped(x.astype(np.float32), training=False)), rtol=1e-6)


@pytest.mark.backends
def test_the_shipped_preset_follows_the_file_it_is_made_from(preset_home, tmp_path, monkeypatch):
    """The demo run with --publish=saved_models rewrites the shipped model; the cached preset
    went on giving the old weights."""
    import shutil

    shipped = tmp_path / "saved_models"
    shipped.mkdir()
    source = shipped / presets.BUILTIN["synthetic_gestures"]
    shutil.copy(os.path.join(ROOT, "saved_models", source.name), source)
    monkeypatch.setattr(presets, "_shipped_dir", lambda: str(shipped))
    lines = []
    first = presets.from_preset("synthetic_gestures", log=lines.append)
    assert presets.from_preset("synthetic_gestures", log=lines.append) is not None
    assert len(lines) == 1 and "saved in" in lines[0], lines  # made once, then the cache
    retrained = keras.saving.load_model(str(source), compile=False)
    retrained.set_weights([w * 0.5 for w in retrained.get_weights()])
    save_model(retrained, str(source), read_metadata(str(source)))
    again = presets.from_preset("synthetic_gestures", log=lines.append)
    assert "remade from" in lines[-1] and "that file has changed since" in lines[-1], lines
    for new, want in zip(again.get_weights(), retrained.get_weights()):
        np.testing.assert_array_equal(new, want)
    assert not all(np.array_equal(a, b) for a, b in zip(again.get_weights(), first.get_weights()))
    # the file gone (a clone without saved_models/): the cache is what there is
    source.unlink()
    assert presets.from_preset("synthetic_gestures", log=lines.append).count_params() == \
        again.count_params()


def test_a_preset_made_meanwhile_by_another_process_stays(preset_home, tmp_path):
    # Two processes making one preset at once: the second finds the first's in place and
    # leaves it (a loader may be reading it), and no staging folder behind.
    model = k3.create_model("mobilenetv2_0.2x", input_shape=(8, 32, 32, 3), num_classes=3)
    cached = str(preset_home / "presets" / "p")
    presets._make(cached, model, None)
    first = {name: os.path.getmtime(os.path.join(cached, name)) for name in os.listdir(cached)}
    presets._make(cached, model, None)
    assert {name: os.path.getmtime(os.path.join(cached, name)) for name in os.listdir(cached)} == first
    assert os.listdir(os.path.dirname(cached)) == ["p"]
    # A half-made one (no metadata.json, which is written last) is replaced.
    os.remove(os.path.join(cached, presets.METADATA_FILE))
    presets._make(cached, model, None)
    assert os.path.isfile(os.path.join(cached, presets.METADATA_FILE))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_average_pooling_and_the_keras_runner_under_mixed_precision(policy):
    """PyTorch has no CPU avg_pool3d of fp16 (the mean was taken in float32 for bf16 only)
    and numpy no bfloat16 (the runner's torch trace returned it)."""
    from keras_efficient3d.layers import AvgPool3D
    from keras_efficient3d.runtime import KerasRunner

    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        y = AvgPool3D(3, 2, 1)(np.ones((1, 8, 32, 32, 3), "float32"))
        model = k3.create_model("mobilenetv2_0.2x", input_shape=(8, 32, 32, 3), num_classes=5)
        out = KerasRunner(model)(np.random.default_rng(0).random((1, 8, 32, 32, 3), np.float32))
    finally:
        keras.mixed_precision.set_global_policy(before)
    assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
    assert float(keras.ops.convert_to_numpy(y)[0, 2, 2, 2, 0]) == 1.0  # inside: a mean of ones
    assert np.asarray(out).shape == (1, 5) and np.isfinite(np.asarray(out, np.float32)).all()


def test_batchnorm_training_variance_is_never_negative():
    """Channels of nearly equal large values: E[x^2] - E[x]^2 (Keras' moments on JAX and
    PyTorch) cancels to a negative variance; the layer's statistics stay >= 0 and finite."""
    layer = k3.layers.batch_norm("bn")
    rng = np.random.default_rng(0)
    x = (1000.0 + 1e-3 * rng.normal(size=(2, 1, 1, 1, 64))).astype(np.float32)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    variance = keras.ops.convert_to_numpy(layer.moving_variance)
    assert np.isfinite(y).all()
    assert (variance >= 0).all()
    np.testing.assert_allclose(variance, 0.9 + 0.1 * x.var(axis=(0, 1, 2, 3)), rtol=1e-3)


# ---------------------------------------------------------------------------------------
# The backends' own kernels (layers/native.py) against the 2D-tap form through keras.ops.

_KERNEL_CASES = {  # name: (layer factory, input shape)
    "dense_3x3x3_spatial_stride": (lambda: k3.layers.Conv3D(6, 3, (1, 2, 2), 1), (2, 4, 9, 9, 3)),
    "dense_strided_time_bias": (lambda: k3.layers.Conv3D(6, 3, 2, 1, use_bias=True),
                                (2, 5, 8, 8, 4)),
    "dense_deep_input": (lambda: k3.layers.Conv3D(4, 3, 1, 1), (2, 3, 6, 6, 6)),
    # RGB: the fused forward, and an odd number of output frames for the unrolled gradient
    "dense_rgb_odd_frames": (lambda: k3.layers.Conv3D(6, 3, (1, 2, 2), 1), (1, 5, 9, 9, 3)),
    "dense_rgb_strided_time": (lambda: k3.layers.Conv3D(6, 3, 2, 1), (2, 5, 8, 8, 3)),
    "dense_long_stem": (lambda: k3.layers.Conv3D(4, (5, 3, 3), (1, 2, 2), (2, 1, 1)),
                        (1, 4, 9, 9, 3)),
    "pointwise_bias": (lambda: k3.layers.Conv3D(8, 1, use_bias=True), (2, 3, 5, 5, 6)),
    "pointwise_strided": (lambda: k3.layers.Conv3D(8, 1, 2), (2, 4, 6, 6, 6)),
    "grouped_pointwise": (lambda: k3.layers.Conv3D(9, 1, groups=3), (2, 3, 5, 5, 6)),
    "grouped_3x3x3": (lambda: k3.layers.Conv3D(8, 3, 1, 1, groups=4), (2, 4, 6, 6, 8)),
    "depthwise_bias": (lambda: k3.layers.DepthwiseConv3D(3, 1, 1, use_bias=True),
                       (2, 4, 7, 7, 5)),
    "depthwise_strided": (lambda: k3.layers.DepthwiseConv3D(3, 2, 1), (2, 5, 9, 9, 5)),
    "depthwise_one_frame": (lambda: k3.layers.DepthwiseConv3D(3, (1, 2, 2), 1), (2, 1, 4, 4, 5)),
    "depthwise_padding_past_kernel": (lambda: k3.layers.DepthwiseConv3D((1, 3, 2), (1, 2, 2),
                                                                        (1, 1, 1)),
                                      (2, 3, 7, 6, 3)),
    "max_pool_padded": (lambda: k3.layers.MaxPool3D(3, 2, 1), (2, 5, 9, 9, 4)),
    "max_pool_spatial": (lambda: k3.layers.MaxPool3D((1, 3, 3), (1, 2, 2), (0, 1, 1)),
                         (2, 3, 8, 7, 3)),
    "avg_pool_padded": (lambda: k3.layers.AvgPool3D((3, 2, 2), (1, 2, 2), (1, 0, 0)),
                        (2, 4, 8, 8, 4)),
    "avg_pool_window_over_input": (lambda: k3.layers.AvgPool3D((2, 3, 3), 2, (0, 1, 1)),
                                   (2, 2, 2, 2, 4)),
    "max_pool_window_over_input": (lambda: k3.layers.MaxPool3D(3, 2, 1), (2, 2, 2, 2, 4)),
}


def _no_grad():
    """PyTorch's inference mode (where its depthwise kernel is a conv3d), else nothing."""
    if BACKEND == "torch":
        import torch

        return torch.no_grad()
    import contextlib

    return contextlib.nullcontext()


@pytest.mark.parametrize("case", sorted(_KERNEL_CASES))
def test_backend_kernels_equal_the_taps_form(case, monkeypatch):
    """conv5d / depthwise5d / pool5d (PyTorch: conv3d and pools on channels-last views,
    depthwise as conv2d per tap under autograd; JAX: matrix products, shifted sums) give
    the 2D-tap form's outputs; TensorFlow keeps the forms of layers/forms.py."""
    from keras_efficient3d.layers import native

    make, shape = _KERNEL_CASES[case]
    layer = make()
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    if "pool" in case:
        kind = "max" if case.startswith("max") else "avg"
        assert native.backend_pools(kind) is (
            BACKEND == "torch" or (BACKEND == "jax" and kind == "max"))
    else:
        if case.startswith("depthwise"):  # on JAX, the sum of shifted views
            asked = native.backend_takes()
            taken = BACKEND in ("torch", "jax")
        else:  # on JAX, matrix products: pointwise, or per frame over a few channels
            asked = native.backend_takes(layer.kernel_size, layer.groups, shape[-1])
            taken = BACKEND == "torch" or BACKEND == "jax" and (
                tuple(layer.kernel_size) == (1, 1, 1)
                or layer.groups == 1 and shape[-1] <= native.JAX_FRAME_CONV_CHANNELS)
        assert asked is taken
    layer.build(shape)
    if getattr(layer, "bias", None) is not None:
        layer.bias.assign(np.linspace(-1, 1, layer.bias.shape[0]).astype(np.float32))
    outputs = [layer(x)]
    with _no_grad():
        outputs.append(layer(x))
    monkeypatch.setattr(native, "backend_takes", lambda *args: False)
    monkeypatch.setattr(native, "backend_pools", lambda *args: False)
    expected = layer(x)
    assert tuple(expected.shape) == tuple(layer.compute_output_shape(shape))
    for y in outputs:
        assert tuple(y.shape) == tuple(expected.shape)
        assert _rel(y, expected) < 1e-5


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's memory layouts")
@pytest.mark.parametrize("case", ["stem_rgb", "dense_3x3x3", "depthwise", "grouped_3x3x3"])
def test_torch_kernels_hand_on_ndhwc_memory(case):
    """PyTorch's conv3d comes back NCDHW from a dense kernel (an RGB stem's among them):
    conv5d hands every layer after it NDHWC memory, as Keras' channels-last tensors say
    (ShuffleNetV2's stem max pool read the NCDHW view 10x slower: 4.7 of 18 ms of an
    inference). Inference and training calls alike."""
    import torch

    make, shape = {
        # (PyTorch picks channels-last itself for some small inputs: these are not)
        "stem_rgb": (lambda: k3.layers.Conv3D(8, 3, (1, 2, 2), 1), (1, 8, 32, 32, 3)),
        "dense_3x3x3": (lambda: k3.layers.Conv3D(8, 3, 1, 1), (1, 8, 32, 32, 8)),
        "depthwise": (lambda: k3.layers.DepthwiseConv3D(3, 1, 1), (1, 8, 32, 32, 8)),
        "grouped_3x3x3": (lambda: k3.layers.Conv3D(8, 3, 1, 1, groups=4), (1, 8, 32, 32, 8)),
    }[case]
    layer = make()
    layer.build(shape)
    x = torch.randn(*shape)
    with torch.no_grad():
        inference = layer(x)
    training = layer(x.requires_grad_())
    for y in (inference, training):
        assert y.is_contiguous(), (case, tuple(y.stride()))
        # and so the pool after it reads channels-last memory
        assert k3.layers.MaxPool3D(3, 2, 1)(y).is_contiguous()


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's RGB-stem kernel")
@pytest.mark.parametrize("filters,kernel,fused", [(24, 3, True), (32, 3, True),
                                                  (64, 3, False), (8, (5, 3, 3), False)])
def test_jax_stem_forward_is_one_fused_sum_for_small_kernels(filters, kernel, fused,
                                                             monkeypatch):
    """A dense kernel over RGB computes its forward pass as one fused sum of shifted views
    where that measured faster (few terms, few output channels), the frame loop elsewhere;
    both give the 2D-tap form's outputs."""
    from keras_efficient3d.layers import native

    calls = []
    shifted_sum = native._dense_shifted_sum
    monkeypatch.setattr(native, "_dense_shifted_sum",
                        lambda *args: calls.append(1) or shifted_sum(*args))
    layer = k3.layers.Conv3D(filters, kernel, (1, 2, 2), 1)
    shape = (2, 6, 9, 9, 3)
    x = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    layer.build(shape)
    y = layer(x)
    assert bool(calls) is fused
    monkeypatch.setattr(native, "backend_takes", lambda *args: False)
    assert _rel(y, layer(x)) < 1e-5


def _gradients(layer, x, weight):
    """The gradients of ``sum(layer(x) * weight)`` with respect to x and the layer's
    trainable weights, by the backend's own differentiation."""
    if BACKEND == "jax":
        import jax

        def loss(trainable, x):
            return (layer.stateless_call(trainable, [], x)[0] * weight).sum()

        dw, dx = jax.grad(loss, argnums=(0, 1))([v.value for v in layer.trainable_weights], x)
        return [dx] + list(dw)
    if BACKEND == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        (layer(xt) * torch.tensor(weight)).sum().backward()
        grads = [xt.grad] + [v.value.grad for v in layer.trainable_weights]
        for v in layer.trainable_weights:
            v.value.grad = None
        return grads
    import tensorflow as tf

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(layer(xt) * weight)
    return tape.gradient(loss, [xt] + layer.trainable_weights)


@pytest.mark.parametrize("case", sorted(_KERNEL_CASES))
def test_backend_kernels_have_the_taps_forms_gradients(case, monkeypatch):
    """The gradients of the backend kernels (JAX's hand-written ones for depthwise
    convolutions, max pools and the RGB stems) equal those of the 2D-tap form through
    keras.ops."""
    from keras_efficient3d.layers import native

    make, shape = _KERNEL_CASES[case]
    layer = make()
    rng = np.random.default_rng(2)
    x = rng.normal(size=shape).astype(np.float32)
    layer.build(shape)
    weight = rng.normal(size=layer.compute_output_shape(shape)).astype(np.float32)
    grads = _gradients(layer, x, weight)
    monkeypatch.setattr(native, "backend_takes", lambda *args: False)
    monkeypatch.setattr(native, "backend_pools", lambda *args: False)
    expected = _gradients(layer, x, weight)
    assert len(grads) == len(expected) == 1 + len(layer.trainable_weights)
    for g, e in zip(grads, expected):
        assert np.abs(keras.ops.convert_to_numpy(e)).max() > 0
        assert _rel(g, e) < 1e-5


def _max_pool_gradient_first_wins(x, pool_size, strides, padding, dy):
    """PyTorch's max pool gradient, by loops: each window's gradient goes to its first
    maximum in (t, h, w) order; padding never wins."""
    dx = np.zeros_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[4]):
            for j in np.ndindex(*dy.shape[1:4]):
                best, where = -np.inf, None
                for k in np.ndindex(*pool_size):
                    cell = tuple(s * jj + kk - p for s, jj, kk, p in zip(strides, j, k, padding))
                    if all(0 <= q < size for q, size in zip(cell, x.shape[1:4])):
                        if x[(n,) + cell + (c,)] > best:
                            best, where = x[(n,) + cell + (c,)], cell
                dx[(n,) + where + (c,)] += dy[(n,) + j + (c,)]
    return dx


@pytest.mark.skipif(BACKEND == "tensorflow",
                    reason="TensorFlow's separable 2D-tap pools share a tie's gradient")
def test_max_pool_gradient_goes_to_the_first_maximum():
    """Among tied maxima (zeros after a ReLU, most often) the gradient goes to the first,
    as the original's PyTorch max pool sends it."""
    pool_size, strides, padding = (3, 3, 3), (2, 2, 2), (1, 1, 1)
    layer = k3.layers.MaxPool3D(pool_size, strides, padding)
    rng = np.random.default_rng(3)
    x = np.maximum(rng.integers(-3, 2, size=(2, 5, 7, 6, 3)), 0).astype(np.float32)
    layer.build(x.shape)
    dy = rng.normal(size=layer.compute_output_shape(x.shape)).astype(np.float32)
    expected = _max_pool_gradient_first_wins(x, pool_size, strides, padding, dy)
    (dx,) = _gradients(layer, x, dy)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(dx), expected, rtol=1e-6, atol=1e-6)


def test_backend_kernels_train_like_the_taps_form(monkeypatch):
    """One SGD step through dense, depthwise (strided), pointwise and grouped kernels with
    BatchNorm: the backend's kernels (and PyTorch's fused BatchNorm) give the loss, weights
    and moving statistics of the 2D-tap form through keras.ops."""
    from keras_efficient3d.layers import native, normalization

    L = k3.layers
    shape = (4, 16, 16, 3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4,) + shape).astype(np.float32)
    y = np.array([0, 2, 1, 0])

    def build():
        keras.utils.set_random_seed(0)
        return keras.Sequential([
            keras.Input(shape), L.Conv3D(8, 3, (1, 2, 2), 1), L.batch_norm("bn1"),
            keras.layers.ReLU(6.0), L.MaxPool3D(3, (1, 2, 2), 1),
            L.DepthwiseConv3D(3, 2, 1), L.batch_norm("bn2"),
            L.Conv3D(12, 1, groups=2), L.batch_norm("bn3"), keras.layers.ReLU(),
            L.Conv3D(6, 1, use_bias=True), keras.layers.GlobalAveragePooling3D(),
            keras.layers.Dense(3)])

    def one_step():
        model = build()
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        loss = model.train_on_batch(x, y)
        return float(loss), [keras.ops.convert_to_numpy(w) for w in model.weights]

    loss, weights = one_step()
    monkeypatch.setattr(native, "backend_takes", lambda *args: False)
    monkeypatch.setattr(native, "backend_pools", lambda *args: False)
    monkeypatch.setattr(normalization.BatchNorm, "_torch_path", lambda *args: False)
    loss_taps, weights_taps = one_step()
    assert abs(loss - loss_taps) < 1e-5 * abs(loss_taps)
    initial = [keras.ops.convert_to_numpy(w) for w in build().weights]
    moved = 0
    for w, w_taps, w0 in zip(weights, weights_taps, initial):
        # the difference is small against the step itself (a relative check of gradients)
        step = np.abs(w_taps - w0).max()
        assert np.abs(w - w_taps).max() <= 1e-4 * step + 1e-6
        moved += step > 0
    assert moved == len(weights)


def test_eager_calls_skip_keras_layer_calls_only_on_pytorch(monkeypatch):
    """On PyTorch a `VideoModel` runs its layers' ``call`` directly (Keras' per-layer
    `__call__` was 14% of an eager ShuffleNetV2 training step): the same logits in both
    modes, the same loss gradients and moving statistics after a training call, as Keras'
    own calls. Mixed precision (autocast) and the traced backends keep Keras' calls."""
    keras.utils.set_random_seed(0)
    model = k3.create_model("shufflenetv2_0.25x", input_shape=SHAPE, num_classes=5, dropout=0.0)
    assert isinstance(model, k3.VideoModel)
    assert model.direct_calls() == (BACKEND == "torch")
    if BACKEND != "torch":
        # The traced backends keep Keras' calls, mixed precision or not: both runs below
        # would be the same code (24 s of eager JAX for nothing).
        return
    randomize_batchnorm(model)
    x = np.random.default_rng(0).normal(size=(2,) + SHAPE).astype(np.float32)
    y = np.array([1, 3])

    def run():
        """Inference logits, then a training call's loss gradients and moving statistics,
        from the same starting weights."""
        saved = [keras.ops.convert_to_numpy(w) for w in model.weights]
        logits = keras.ops.convert_to_numpy(model(x, training=False))
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        out = model(x, training=True)
        loss = loss_fn(y, out)
        loss.backward()
        grads = [w.value.grad.numpy().copy() for w in model.trainable_weights]
        for w in model.trainable_weights:
            w.value.grad = None
        stats = [keras.ops.convert_to_numpy(w) for w in model.non_trainable_weights]
        for w, v in zip(model.weights, saved):
            w.assign(v)
        return logits, keras.ops.convert_to_numpy(out), grads, stats

    direct = run()
    monkeypatch.setattr(k3.VideoModel, "direct_calls", lambda self: False)
    keras_calls = run()
    for a, b in zip(direct[:2], keras_calls[:2]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for group_a, group_b in zip(direct[2:], keras_calls[2:]):
        assert len(group_a) == len(group_b)
        for a, b in zip(group_a, group_b):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert len(direct[3]) > 0 and len(direct[2]) > 0
    monkeypatch.undo()

    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = k3.create_model("shufflenetv2_0.25x", input_shape=SHAPE, num_classes=5)
    finally:
        keras.config.set_dtype_policy("float32")
    assert not mixed.direct_calls()
    assert keras.backend.standardize_dtype(mixed(x, training=False).dtype) == "bfloat16"


def test_batchnorm_under_a_float16_policy_follows_keras():
    """Under the `float16` policy (float16 variables too), our BatchNorm trains and infers
    as Keras' own: its float32 statistics went into float16 moving variables (TensorFlow:
    an AddV2 of float16 and float32) and PyTorch's kernel got float16 weights beside a
    float32 input ('mixed dtype')."""
    from keras_efficient3d.layers.normalization import batch_norm

    x = (np.random.default_rng(3).normal(size=(2, 3, 4, 4, 6)) * 2 + 1).astype(np.float16)
    keras.config.set_dtype_policy("float16")
    try:
        ours, theirs = batch_norm("ours"), keras.layers.BatchNormalization(
            axis=-1, momentum=0.9, epsilon=1e-5)
        outputs = []
        for layer in (ours, theirs):
            layer.build(x.shape)
            outputs.append([keras.ops.convert_to_numpy(layer(x, training=True)),
                            keras.ops.convert_to_numpy(layer(x, training=False)),
                            keras.ops.convert_to_numpy(layer.moving_mean)])
    finally:
        keras.config.set_dtype_policy("float32")
    assert keras.backend.standardize_dtype(ours.moving_mean.dtype) == "float16"
    assert np.abs(outputs[0][2]).max() > 0.05  # the moving mean was updated
    for a, b in zip(*outputs):
        assert a.dtype == b.dtype == np.float16
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=1e-2,
                                   atol=1e-2)


def test_batchnorm_training_gradients_equal_keras():
    """Our BatchNorm's training step (TensorFlow's and JAX's hand-written gradient, PyTorch's
    fused kernel) gives Keras' BatchNormalization's outputs, gradients (input, gamma, beta)
    and moving statistics on this backend."""
    rng = np.random.default_rng(7)
    shape = (3, 4, 5, 5, 6)
    x = (rng.normal(size=shape) * 2 + 1).astype(np.float32)
    upstream = rng.normal(size=shape).astype(np.float32)
    weights = [rng.uniform(0.5, 1.5, 6).astype(np.float32), rng.normal(size=6).astype(np.float32),
               np.zeros(6, np.float32), np.ones(6, np.float32)]

    def step(layer):
        layer.build(shape)
        layer.set_weights(weights)
        if BACKEND == "jax":
            import jax

            def loss(trainable, x):
                y, state = layer.stateless_call(trainable, [v.value for v in layer.non_trainable_weights],
                                                x, training=True)
                return (y * upstream).sum(), (y, state)

            (dw, dx), (y, state) = jax.grad(loss, argnums=(0, 1), has_aux=True)(
                [v.value for v in layer.trainable_weights], x)
            return [y, dx] + list(dw) + list(state)
        if BACKEND == "torch":
            import torch

            xt = torch.tensor(x, requires_grad=True)
            y = layer(xt, training=True)
            (y * torch.tensor(upstream)).sum().backward()
            grads = [xt.grad] + [v.value.grad for v in layer.trainable_weights]
            return [y.detach()] + grads + list(layer.non_trainable_weights)
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=True)
            loss = tf.reduce_sum(y * upstream)
        return [y] + tape.gradient(loss, [xt] + layer.trainable_weights) + list(
            layer.non_trainable_weights)

    ours = step(k3.layers.batch_norm("bn"))
    keras_bn = step(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5))
    assert len(ours) == len(keras_bn) == 6
    for a, b in zip(ours, keras_bn):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b),
                                   rtol=1e-5, atol=1e-5)


def test_batchnorm_moving_statistics_inside_and_outside_a_stateless_scope():
    """BatchNorm's moving statistics after a training call: updated in place on PyTorch
    outside a stateless scope, recorded by the scope inside one (the variable untouched),
    the same values either way and on every backend."""
    from keras_efficient3d.layers.normalization import batch_norm

    x = np.random.default_rng(5).normal(2.0, 3.0, size=(2, 3, 4, 4, 5)).astype(np.float32)
    layer = batch_norm("bn")
    layer.build(x.shape)
    layer.moving_mean.assign(np.linspace(-1, 1, 5).astype(np.float32))
    layer.moving_variance.assign(np.linspace(1, 2, 5).astype(np.float32))
    mean0 = keras.ops.convert_to_numpy(layer.moving_mean).copy()
    var0 = keras.ops.convert_to_numpy(layer.moving_variance).copy()
    batch_mean, batch_var = x.reshape(-1, 5).mean(0), x.reshape(-1, 5).var(0)
    expected = (0.9 * mean0 + 0.1 * batch_mean, 0.9 * var0 + 0.1 * batch_var)
    with keras.StatelessScope() as scope:
        layer(x, training=True)
    recorded = [keras.ops.convert_to_numpy(scope.get_current_value(v))
                for v in (layer.moving_mean, layer.moving_variance)]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.moving_mean), mean0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.moving_variance), var0)
    layer(x, training=True)
    for got, want in zip(recorded + [layer.moving_mean, layer.moving_variance], expected * 2):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, rtol=1e-5, atol=1e-6)


def test_every_pool_runs_under_mixed_bfloat16():
    """ShuffleNetV1's average pools under mixed_bfloat16: PyTorch has no CPU bf16 avg_pool3d,
    and the mean is taken in float32 there; on each backend the bf16 model follows the
    float one."""
    x = np.random.default_rng(9).uniform(size=(4, 16, 32, 32, 3)).astype(np.float32)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = k3.create_model("shufflenet_0.25x_g3", input_shape=(16, 32, 32, 3), num_classes=5)
    finally:
        keras.config.set_dtype_policy("float32")
    plain = k3.create_model("shufflenet_0.25x_g3", input_shape=(16, 32, 32, 3), num_classes=5)
    plain.set_weights(mixed.get_weights())
    if BACKEND == "jax":
        # JAX compiles every op of an eager call on its own: 24 s of the tier against 9 for
        # one compiled forward each
        def run(model):
            return model.predict(x, batch_size=len(x), verbose=0)
    else:
        def run(model):
            return model(x, training=False)
    got = keras.ops.convert_to_numpy(keras.ops.cast(run(mixed), "float32"))
    expected = keras.ops.convert_to_numpy(run(plain))
    assert np.isfinite(got).all()
    # bf16's 8-bit mantissa: 0.6-1.4% of the logits' scale measured on the three backends; a
    # pool off by a factor (a sum for a mean) or a wrong window is far outside 5%.
    assert np.abs(got - expected).max() <= 0.05 * np.abs(expected).max()
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.999


# keras_efficient3d before keras, as the project's programs import them: Keras' own import
# of TensorFlow would print its start-up notices on the TensorFlow backend
_RESUME = """
import json, sys, numpy as np, keras_efficient3d, keras
from keras_efficient3d import trainer
config = trainer.TrainConfig(**json.loads(sys.argv[1]))
saved = np.load(sys.argv[2])
model = trainer.resume_model(config, config.output_dir + "/last.keras", 8)
state = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
same = len(state) == len(saved.files) and all(
    np.array_equal(state[i], saved[str(i)]) for i in range(len(state)))
result = trainer.train(config)
print(json.dumps({"backend": keras.backend.backend(), "same_state": bool(same),
                  "epochs_run": len(result["history"]["loss"]),
                  "loss": float(result["history"]["loss"][-1]),
                  "iterations": int(keras.ops.convert_to_numpy(result["model"].optimizer.iterations)),
                  "optimizer": type(result["model"].optimizer).__module__}))
"""


# Two training processes (a minute on two cores): run in the JAX and PyTorch tiers, which
# run beside the main tier (test.sh), and whose pairs (jax -> torch, torch -> tensorflow)
# are the ones Keras' own resume failed on.
@pytest.mark.skipif(BACKEND == "tensorflow", reason="run by the JAX and PyTorch tiers")
def test_a_run_resumes_on_the_next_backend(tmp_path):
    """A checkpoint written on this backend resumes on the next (tensorflow -> jax -> torch
    -> tensorflow) with its optimizer state, under that backend's own optimizer class and
    compilation: Keras' compile from the file is of the backend that wrote it (PyTorch's
    Adam on JAX arrays; JAX's jit_compile sending PyTorch into torch.compile)."""
    from keras_efficient3d import trainer
    from keras_efficient3d.data import synthetic

    pytest.importorskip(_NEXT[BACKEND] if _NEXT[BACKEND] != "tensorflow" else "tensorflow")
    data = synthetic.generate(tmp_path / "data", layout="jester", videos_per_class=2, seed=1,
                              frames=8, size=32)
    settings = dict(dataset="synthetic", data_root=str(data), model="mobilenetv1",
                    width_mult=0.25, frames=8, size=32, batch_size=4, epochs=1,
                    learning_rate=0.01, lr_schedule="cosine", optimizer="adam",
                    normalization="unit", output_dir=str(tmp_path / "run"), verbose=0, seed=3)
    first = trainer.train(trainer.TrainConfig(**settings))
    steps = int(keras.ops.convert_to_numpy(first["model"].optimizer.iterations))
    np.savez(tmp_path / "state.npz", **{
        str(i): keras.ops.convert_to_numpy(v)
        for i, v in enumerate(first["model"].optimizer.variables)})
    env = dict(os.environ, KERAS_BACKEND=_NEXT[BACKEND],
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
               # as the JAX tier compiles (test.sh): the results are checked, not the speed
               XLA_FLAGS=os.environ.get("XLA_FLAGS", "--xla_backend_optimization_level=0"))
    run = subprocess.run(
        [sys.executable, "-c", _RESUME, json.dumps({**settings, "epochs": 2, "resume": True}),
         str(tmp_path / "state.npz")], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    # TensorFlow's start-up notices (the trainer's tf.data import on JAX and PyTorch)
    assert "absl::InitializeLog" not in run.stderr and "oneDNN" not in run.stderr, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["backend"] == _NEXT[BACKEND] and out["same_state"]
    assert out["epochs_run"] == 1 and np.isfinite(out["loss"]) and out["iterations"] > steps
    if _NEXT[BACKEND] != "torch":  # the next backend's own Adam, not the writer's
        assert "torch" not in out["optimizer"]


def test_top_k_accuracy_takes_exactly_k_classes_as_the_original():
    """The original's calculate_accuracy (torch.topk): exactly k predictions, so ties at the
    k-th score do not all count (Keras' in_top_k scored constant logits 100%), and k at most
    the classes (PyTorch's topk failed at the first step of a 3-class run)."""
    from keras_efficient3d.optim import TopKAccuracy

    def top5(labels, logits, weights=None):
        metric = TopKAccuracy(5)
        metric.update_state(labels, logits, sample_weight=weights)
        return float(keras.ops.convert_to_numpy(metric.result()))

    assert top5(np.arange(27), np.zeros((27, 27), np.float32)) == pytest.approx(5 / 27)
    tied = np.array([[5, 4, 3, 2, 1, 1, 1, 1, 0, 0]] * 10, np.float32)
    assert top5(np.arange(10), tied) == pytest.approx(0.5)
    assert top5(np.arange(6) % 3, np.random.default_rng(0).normal(size=(6, 3))) == 1.0
    # float16 logits (mixed precision), labels as a column, weights
    logits = np.array([[0.9, 0, 0, 0, 0, 0, 0.1], [-1, 0, 0, 0, 0, 0.4, 0.5]], np.float16)
    assert top5(np.array([[6], [0]]), logits, np.array([1.0, 3.0])) == pytest.approx(0.25)
