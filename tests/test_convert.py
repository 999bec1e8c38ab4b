"""PyTorch checkpoint import: numerically exact, safe, with clear errors."""

import json
import os
import pickle
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_efficient3d as k3
from helpers import torch_state_dict
from keras_efficient3d import convert as conv
from keras_efficient3d import registry
from keras_efficient3d.artifacts import read_metadata
from keras_efficient3d.data.normalization import Normalization
from keras_efficient3d.preprocessing import VideoPreprocessing, with_preprocessing

CHECKPOINTS = ["mobilenet_0.5x", "mobilenetv2_0.2x", "shufflenet_0.5x_g3", "shufflenetv2_0.25x",
               "squeezenet_1.1", "mobilenet_0.25x_calibrated", "mobilenetv2_0.45x_calibrated",
               "shufflenetv2_0.5x_calibrated"]
# The fixtures whose logits depend on the clip: an all-zeros clip or the channels in the
# other order change them by far more than the tolerance, so that matching them proves
# the stem, the channel order and the layout. The others' random weights and BatchNorm
# statistics leave logits that move by ~1e-7 (MobileNets) or ~5e-4 (ShuffleNetV2 0.25x).
INPUT_SENSITIVE = ["shufflenet_0.5x_g3", "squeezenet_1.1", "mobilenet_0.25x_calibrated",
                   "mobilenetv2_0.45x_calibrated", "shufflenetv2_0.5x_calibrated"]
TOLERANCE = 1e-4  # relative to the largest logit


def _reference(reference_dir, name):
    ref = np.load(reference_dir / "pytorch_checkpoints" / f"{name}.npz")
    clip = ref["clip_uint8_ncdhw"]
    x = (clip.astype(np.float32) - ref["input_offset"]).transpose(0, 2, 3, 4, 1)
    return clip, x, ref["logits"]


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_converted_logits_match_original(reference_dir, name):
    model, config, _ = conv.convert_checkpoint(
        str(reference_dir / "pytorch_checkpoints" / f"{name}.pth"), log=lambda m: None)
    _, x, logits = _reference(reference_dir, name)
    scale = np.abs(logits).max()
    eager = model(x, training=False).numpy()
    graph = model.predict(x, verbose=0)
    assert np.abs(eager - logits).max() / scale < TOLERANCE
    assert np.abs(graph - logits).max() / scale < TOLERANCE
    assert config["num_classes"] == logits.shape[1]
    if name in INPUT_SENSITIVE:
        for other in (np.zeros_like(x), x[..., ::-1]):
            moved = np.abs(model(other, training=False).numpy() - logits).max() / scale
            assert moved > 10 * TOLERANCE, f"{name}: logits barely depend on the clip"


def test_every_family_with_a_reference_checkpoint_has_an_input_sensitive_one():
    families = {registry.get_family(name.split("_")[0]).name for name in CHECKPOINTS}
    sensitive = {registry.get_family(name.split("_")[0]).name for name in INPUT_SENSITIVE}
    assert set(INPUT_SENSITIVE) <= set(CHECKPOINTS)
    assert families == sensitive


_KEY_CONFIGS = {
    "mobilenet_1.0x": ("mobilenetv1", {"width_mult": 1.0}),
    "mobilenet_2.0x": ("mobilenetv1", {"width_mult": 2.0}),
    "mobilenetv2_0.45x": ("mobilenetv2", {"width_mult": 0.45}),
    "mobilenetv2_0.7x": ("mobilenetv2", {"width_mult": 0.7}),
    "mobilenetv2_1.0x": ("mobilenetv2", {"width_mult": 1.0}),
    "shufflenet_1.0x_g2": ("shufflenetv1", {"width_mult": 1.0, "groups": 2}),
    "shufflenet_1.5x_g3": ("shufflenetv1", {"width_mult": 1.5, "groups": 3}),
    "shufflenetv2_1.5x": ("shufflenetv2", {"width_mult": 1.5}),
    "shufflenetv2_2.0x": ("shufflenetv2", {"width_mult": 2.0}),
    "resnet18_A": ("resnet", {"depth": 18, "shortcut": "A"}),
    "resnet50_B": ("resnet", {"depth": 50, "shortcut": "B"}),
    "resnext101_B": ("resnext", {"depth": 101, "shortcut": "B", "cardinality": 32}),
}


class _FakeCheckpoint:
    def __init__(self, state, arch):
        self.state_dict, self.arch = state, arch


@pytest.mark.parametrize("config", sorted(_KEY_CONFIGS))
def test_every_original_key_maps_onto_a_layer(reference_dir, config):
    """Name and shape mapping for the configurations without a checkpoint file: distinct
    values per tensor must land, transposed, in the right Keras weight."""
    ref = json.loads((reference_dir / "state_dict_keys" / f"{config}.keys.json").read_text())
    rng = np.random.default_rng(0)
    state = {k[len("module."):]: rng.normal(size=s).astype(np.float32)
             for k, s in ref["state_dict"].items()}
    family, expected = _KEY_CONFIGS[config]
    fake = _FakeCheckpoint(state, ref["arch"])
    inferred_family, kwargs, _ = conv.infer_config(fake, f"{config}.pth")
    assert inferred_family == family
    for key, value in expected.items():
        assert kwargs[key] == value
    model = k3.create_model(family, **kwargs)
    conv.load_torch_weights(model, state, family)
    paths = conv.torch_paths(model, family)
    # Spot-check one weight of each kind against its PyTorch tensor.
    for layer in model.layers:
        if layer.name not in paths:
            continue
        w = state[paths[layer.name] + ".weight"]
        if isinstance(layer, k3.layers.DepthwiseConv3D):
            np.testing.assert_array_equal(layer.kernel.numpy(), w.transpose(2, 3, 4, 0, 1))
        elif isinstance(layer, k3.layers.Conv3D):
            np.testing.assert_array_equal(layer.kernel.numpy(), w.transpose(2, 3, 4, 1, 0))
        elif isinstance(layer, keras.layers.BatchNormalization):
            np.testing.assert_array_equal(layer.moving_variance.numpy(),
                                          state[paths[layer.name] + ".running_var"])


# A configuration of each family other than its defaults: the inference must find it.
_FAMILY_EXAMPLES = {
    "mobilenetv1": {"width_mult": 0.5},
    "mobilenetv2": {"width_mult": 0.45},
    "shufflenetv1": {"width_mult": 1.0, "groups": 4},
    "shufflenetv2": {"width_mult": 0.5},
    "squeezenet": {"version": 1.0},
    "resnet": {"depth": 10, "shortcut": "A"},
    "resnext": {"depth": 50, "cardinality": 16, "shortcut": "B"},
    "c3d": {},
}


def test_every_family_has_an_example():
    assert sorted(_FAMILY_EXAMPLES) == sorted(f.name for f in registry.families())


@pytest.mark.parametrize("family", registry.families(), ids=lambda f: f.name)
def test_family_key_mapping_covers_every_weight_and_infers_its_configuration(family):
    """Each family's key mapping gives every weighted layer its own PyTorch module, and a
    state dict in that layout reads back as the same configuration and loads completely."""
    kwargs, shape = _FAMILY_EXAMPLES[family.name], family.small_input
    model = k3.create_model(family.name, input_shape=shape, num_classes=5, **kwargs)
    paths = family.torch_paths(model)
    assert sorted(paths) == sorted(layer.name for layer in model.layers if layer.weights)
    assert len(set(paths.values())) == len(paths)
    state = torch_state_dict(model, family)
    arch = (family.aliases or (family.name,))[0]  # the original's --model name
    inferred_family, inferred, notes = conv.infer_config(_FakeCheckpoint(state, arch),
                                                         "checkpoint.pth")
    assert inferred_family == family.name and notes
    assert inferred == dict(kwargs, num_classes=5)
    again = k3.create_model(family.name, input_shape=shape, **inferred)
    conv.load_torch_weights(again, state, arch)
    for a, b in zip(model.layers, again.layers):
        assert [w.shape for w in a.weights] == [w.shape for w in b.weights]


@pytest.mark.parametrize("file_name, width", [
    ("kinetics_16x112_mobilenetv2.pth", 0.45),  # a clip size, not a width
    ("jester_mobilenetv2_0.45x_RGB_16_best.pth", 0.45),
    ("mobilenetv2.pth", 0.45),
    ("jester_mobilenetv2_1.0x_RGB_16_best.pth", None),  # renamed: refused, both named
    ("mobilenetv2_0.2x", None),
    # a file name of another family says nothing of this one's width
    ("kinetics_shufflenet_0.5x_G3_RGB_16_best.pth", 0.45),
])
def test_width_comes_from_the_tensors_and_a_file_name_that_disagrees_is_refused(file_name,
                                                                                width):
    family = registry.get_family("mobilenetv2")
    model = k3.create_model("mobilenetv2", input_shape=family.small_input, num_classes=5,
                            width_mult=0.45)
    fake = _FakeCheckpoint(torch_state_dict(model, family), "mobilenetv2")
    if width is not None:
        _, kwargs, notes = conv.infer_config(fake, file_name)
        assert kwargs["width_mult"] == width
        assert ("the width from the tensors, not the file name, which names another family "
                "(shufflenetv1; the file holds mobilenetv2)" in notes) == ("shufflenet" in file_name)
        return
    with pytest.raises(conv.ConversionError) as err:
        conv.infer_config(fake, file_name)
    message = str(err.value)
    assert "\n" not in message and "says" in message and "0.45x" in message
    # the user settles it
    assert conv.infer_config(fake, file_name, {"width_mult": 0.45})[1]["width_mult"] == 0.45


@pytest.mark.parametrize("family, kwargs, file_name, overrides, message", [
    ("resnet", {"depth": 18, "shortcut": "A"}, "kinetics_resnet_18_RGB_16_best.pth",
     {"model": "resnet50"}, "holds a resnet model of depth=18, not --model=resnet50 (depth=50): "
                            "pass --model=resnet18_A (what its tensors fit)"),
    ("mobilenetv2", {"width_mult": 0.2}, "kinetics_mobilenetv2_0.2x_RGB_16_best.pth",
     {"model": "mobilenetv2_1.0x"}, "holds a mobilenetv2 model of width_mult=0.2, not "
                                    "--model=mobilenetv2_1.0x (width_mult=1.0): pass "
                                    "--model=mobilenetv2_0.2x (what its tensors fit)"),
    ("shufflenetv1", {"width_mult": 0.5, "groups": 3}, "jester_shufflenet_0.5x_G3_RGB_16_best.pth",
     {"model": "shufflenet_2.0x_g8"}, "holds a shufflenetv1 model of width_mult=0.5 groups=3, "
                                      "not --model=shufflenet_2.0x_g8 (width_mult=2.0 "
                                      "groups=8): pass --model=shufflenetv1_0.5x_g3"),
    # a flag and a name: each said as given
    ("shufflenetv1", {"width_mult": 0.5, "groups": 3}, "weights.pth",
     {"model": "shufflenet_0.5x", "groups": 2}, "holds a shufflenetv1 model of groups=3, not "
                                               "--groups=2: pass --groups=3"),
    ("shufflenetv1", {"width_mult": 0.5, "groups": 3}, "jester_shufflenet_0.5x_G3_RGB_16_best.pth",
     {"groups": 2}, "holds a shufflenetv1 model of groups=3, not --groups=2: pass --groups=3"),
    ("squeezenet", {}, "jester_squeezenet_RGB_16_best.pth", {"width_mult": 0.5},
     "holds a squeezenet model, which takes no --width_mult=0.5: leave it unset"),
    ("squeezenet", {}, "jester_squeezenet_RGB_16_best.pth", {"model": "squeezenet_0.5x"},
     "holds a squeezenet model, which takes no --model=squeezenet_0.5x (width_mult=0.5)"),
    ("resnet", {"depth": 18, "shortcut": "A"}, "kinetics_resnet_18_RGB_16_best.pth",
     {"model": "resnet18", "depth": 34}, "--model=resnet18: 'resnet18' fixes depth=18"),
])
def test_a_configuration_name_in_model_is_checked_like_the_flags(family, kwargs, file_name,
                                                                 overrides, message):
    """--model=resnet50 on a ResNet-18 file wrote a ResNet-18 (the name's depth overridden by
    the tensors), --groups=2 on a G3 file failed to build ("not divisible into 2 groups")
    without naming the file's groups, --width_mult on a SqueezeNet was "SqueezeNet_3D() got an
    unexpected keyword argument": all compared with the file before building."""
    spec = registry.get_family(family)
    model = k3.create_model(family, input_shape=spec.small_input, num_classes=5, **kwargs)
    fake = _FakeCheckpoint(torch_state_dict(model, spec), (spec.aliases or (family,))[0])
    with pytest.raises(conv.ConversionError) as err:
        conv.infer_config(fake, f"some/folder/{file_name}", overrides)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("--model=" if "depth" in overrides else file_name)
    # the configuration the file holds passes
    held = registry.configuration_name(family, **kwargs)
    assert conv.infer_config(fake, file_name, {"model": held})[1].items() >= dict(
        kwargs, num_classes=5).items()


def test_unknown_architecture_is_a_conversion_error():
    fake = _FakeCheckpoint({}, None)
    with pytest.raises(conv.ConversionError, match="Cannot tell the architecture"):
        conv.infer_config(fake, "weights.pth")
    with pytest.raises(conv.ConversionError, match="Unknown architecture 'vgg'"):
        conv.infer_config(fake, "weights.pth", {"model": "vgg"})


def _without_arch(reference_dir, tmp_path, name="mobilenetv2_0.2x", drop=(), **changes):
    """A copy of a reference checkpoint without the arch field the original writes (a file
    saved by other code), with `changes` made to its state dict and the keys `drop` removed
    (the names without the DataParallel prefix)."""
    torch = pytest.importorskip("torch")
    checkpoint = torch.load(reference_dir / "pytorch_checkpoints" / f"{name}.pth",
                            weights_only=True)
    del checkpoint["arch"]
    state = {k[len("module."):]: v for k, v in checkpoint["state_dict"].items()}
    state.update({k: torch.as_tensor(v) for k, v in changes.items()})
    checkpoint["state_dict"] = {k: v for k, v in state.items() if k not in drop}
    path = tmp_path / f"weights_{name.replace('.', '_')}.pth"
    torch.save(checkpoint, path)
    return str(path)


def test_wrong_model_lists_missing_and_unexpected_keys(reference_dir, tmp_path):
    path = str(reference_dir / "pytorch_checkpoints" / "mobilenetv2_0.2x.pth")
    with pytest.raises(conv.ConversionError, match=r"^mobilenetv2_0.2x.pth holds a mobilenetv2 "
                                                   r"model of width_mult=0.2, not "
                                                   r"--width_mult=0.45: pass --width_mult=0.2 "
                                                   r"\(what its tensors fit\)"):
        conv.convert_checkpoint(path, overrides={"width_mult": 0.45}, log=lambda m: None)
    # the file's arch field names another family: one line saying so
    with pytest.raises(conv.ConversionError, match=r"^mobilenetv2_0.2x.pth holds a mobilenetv2 "
                                                   r"model \(its arch field: '.*'\), not "
                                                   r"--model=shufflenetv2; leave --model unset"):
        conv.convert_checkpoint(path, overrides={"model": "shufflenetv2", "width_mult": 0.25},
                                log=lambda m: None)
    # without it, the key names say which family it holds, in one line: not a thousand
    # characters of missing and unexpected keys, nor "No resnet depth has blocks (0, 0, 0, 0)"
    path = _without_arch(reference_dir, tmp_path)
    for model in ("shufflenetv2", "resnet", "mobilenet", "c3d"):
        with pytest.raises(conv.ConversionError, match=(
                rf"^weights_mobilenetv2_0_2x.pth holds a mobilenetv2 model \(its key names\), "
                rf"not --model={model}; leave --model unset to take the file's$")):
            conv.convert_checkpoint(path, overrides={"model": model}, log=lambda m: None)
    with pytest.raises(conv.ConversionError, match="holds a squeezenet model .its key names"):
        conv.convert_checkpoint(_without_arch(reference_dir, tmp_path, "squeezenet_1.1"),
                                overrides={"model": "mobilenetv2"}, log=lambda m: None)


@pytest.mark.parametrize("name, family", [("mobilenetv2_0.2x", "mobilenetv2"),
                                          ("shufflenet_0.5x_g3", "shufflenetv1"),
                                          ("squeezenet_1.1", "squeezenet")])
def test_a_file_without_an_arch_field_is_read_as_the_family_its_key_names_are(
        reference_dir, tmp_path, name, family):
    """A bare state dict named after another family (jester_shufflenetv2_1.0x_...) listed
    missing and unexpected keys; one named after none could not be converted without
    --model."""
    import shutil

    path = _without_arch(reference_dir, tmp_path, name)
    other = "mobilenet" if family != "mobilenetv2" else "shufflenetv2"
    renamed = tmp_path / f"jester_{other}_1.0x_RGB_16_best.pth"
    shutil.copy(path, renamed)
    said = []
    _, config, _ = conv.convert_checkpoint(str(renamed), 16, 32, log=said.append)
    assert config["model"].startswith(family)
    assert (f"inferred architecture '{family}' (from its key names; the file name says "
            f"{registry.get_family(other).name})") in said
    said.clear()
    shutil.copy(path, tmp_path / "weights.pth")
    conv.convert_checkpoint(str(tmp_path / "weights.pth"), 16, 32, log=said.append)
    assert f"inferred architecture '{family}' (from its key names)" in said


def test_resnet_and_resnext_key_names_are_alike_and_need_a_name():
    state = torch_state_dict(k3.create_model("resnet18", input_shape=(16, 32, 32, 3),
                                             num_classes=5), registry.get_family("resnet"))
    with pytest.raises(conv.ConversionError, match=r"^weights.pth: its key names are those of a "
                                                   r"resnet or resnext model; pass --model$"):
        conv.infer_config(_FakeCheckpoint(state, None), "some/weights.pth")
    assert conv.infer_config(_FakeCheckpoint(state, None), "resnet_weights.pth")[0] == "resnet"


def test_tensors_of_an_unexpected_rank_are_one_line(reference_dir, tmp_path):
    torch = pytest.importorskip("torch")
    for key in ("classifier.1.weight", "features.0.0.weight"):
        path = _without_arch(reference_dir, tmp_path, **{key: torch.tensor(1.0)})
        status, err = _invoke_cli(f"--checkpoint={path}", f"--output={tmp_path / 'x.keras'}",
                                  "--frames=8", "--size=32", "--model=mobilenetv2")
        assert status == 2 and len(err.splitlines()) == 1, err
        assert "error: weights_mobilenetv2_0_2x.pth: " in err, err
        assert "Traceback" not in err and not (tmp_path / "x.keras").exists()


def test_cli_names_a_labels_file_it_cannot_use_and_an_output_it_cannot_write(reference_dir,
                                                                            tmp_path):
    path = reference_dir / "pytorch_checkpoints" / "mobilenetv2_0.2x.pth"
    binary = tmp_path / "labels.bin"
    binary.write_bytes(b"\x80\x81 not text")
    status, err = _invoke_cli(f"--checkpoint={path}", f"--output={tmp_path / 'x.keras'}",
                              f"--labels={binary}")
    assert status == 2 and f"--labels={binary}: not UTF-8 text" in err
    three = tmp_path / "labels.txt"
    three.write_text("a\nb\nc\n")
    status, err = _invoke_cli(f"--checkpoint={path}", f"--output={tmp_path / 'x.keras'}",
                              f"--labels={three}", "--frames=8", "--size=32")
    # the flag named, the checkpoint once (not "x.pth: 3 labels for the 27 classes of x.pth")
    assert status == 2 and err.strip().endswith(
        f"error: --labels={three}: 3 names for the 27 classes of mobilenetv2_0.2x.pth"), err
    (tmp_path / "afile").write_text("x")
    status, err = _invoke_cli(f"--checkpoint={path}", f"--output={tmp_path / 'afile' / 'x.keras'}")
    assert status == 2 and f"{tmp_path / 'afile'} is a file, not a folder" in err, err
    assert not (tmp_path / "x.keras").exists()


def test_a_checkpoint_without_class_names_is_converted_with_a_note_saying_how_to_give_them(
        reference_dir, tmp_path):
    """predict shows "class 18" for a Kinetics model, which records no names: said once."""
    said = []
    kinetics = _with_classes(reference_dir, tmp_path / "kinetics_mobilenetv2_0.2x.pth", 600)
    conv.convert(kinetics, str(tmp_path / "k.keras"), 8, 32, log=said.append)
    assert ("note: kinetics_mobilenetv2_0.2x.pth records no class names: --labels=FILE gives "
            "them (one a line, in the order of its 600 outputs)") in said
    said.clear()
    jester = tmp_path / "jester_mobilenetv2_0.2x.pth"
    jester.write_bytes((reference_dir / "pytorch_checkpoints" / "mobilenetv2_0.2x.pth").read_bytes())
    conv.convert(str(jester), str(tmp_path / "j.keras"), 8, 32, log=said.append)
    assert not [line for line in said if "class names:" in line]


def test_cli_converts_with_preprocessing_and_metadata(reference_dir, tmp_path):
    out = tmp_path / "mnv2.keras"
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(27)))
    proc = subprocess.run(
        [sys.executable, "-m", "keras_efficient3d.convert",
         f"--checkpoint={reference_dir / 'pytorch_checkpoints' / 'mobilenetv2_0.2x.pth'}",
         f"--output={out}", "--with_preprocessing", f"--labels={labels}",
         "--normalization=none"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "inferred width 0.2x" in proc.stdout
    assert f"wrote {out} (mobilenetv2_0.2x, 238,789 parameters)" in proc.stdout  # not "mobilenetv2"
    meta = read_metadata(out)
    assert meta.preprocessing_included is True
    assert meta.labels[3] == "class 3"
    assert meta.model["width_mult"] == 0.2
    model = keras.saving.load_model(out)
    clip, _, logits = _reference(reference_dir, "mobilenetv2_0.2x")
    # The reference input was clip - 110 (a scalar offset): express it as a normalisation.
    pre = with_preprocessing(model.layers[-1], Normalization(mean=(110.0,) * 3))
    y = np.asarray(pre(clip.transpose(0, 2, 3, 4, 1), training=False))
    assert np.abs(y - logits).max() / np.abs(logits).max() < 1e-4


# The original's annotation_Jester/categories.txt (underscores for spaces): the indices of its
# jester.json, and so of the published Jester checkpoints' outputs.
ORIGINAL_JESTER_ORDER = [
    "Doing other things", "Drumming Fingers", "No gesture", "Pulling Hand In",
    "Pulling Two Fingers In", "Pushing Hand Away", "Pushing Two Fingers Away",
    "Rolling Hand Backward", "Rolling Hand Forward", "Shaking Hand", "Sliding Two Fingers Down",
    "Sliding Two Fingers Left", "Sliding Two Fingers Right", "Sliding Two Fingers Up",
    "Stop Sign", "Swiping Down", "Swiping Left", "Swiping Right", "Swiping Up", "Thumb Down",
    "Thumb Up", "Turning Hand Clockwise", "Turning Hand Counterclockwise",
    "Zooming In With Full Hand", "Zooming In With Two Fingers", "Zooming Out With Full Hand",
    "Zooming Out With Two Fingers"]


def test_a_published_jester_checkpoint_records_the_originals_class_order_and_frame_step(
        reference_dir, tmp_path):
    """A `jester_*` file of 27 classes gets Jester's names in the order the original numbers
    them (jester-v1-labels.csv's order named Swiping Left what its output 0, Doing other
    things, means) and its every-2nd-frame clips, as the Jester presets record them."""
    import shutil

    source = reference_dir / "pytorch_checkpoints" / "mobilenetv2_0.2x.pth"
    jester = tmp_path / "jester_mobilenetv2_0.2x_RGB_16_best.pth"
    shutil.copy(source, jester)
    said = []
    _, meta = conv.build_converted(str(jester), 8, 32, log=said.append)
    assert meta.labels == ORIGINAL_JESTER_ORDER and meta.downsample == 2
    assert "inferred Jester's 27 class names, in the order the original numbers them" in said
    assert "inferred dataset Jester (from the file name and its 27 classes)" in said
    assert k3.presets.preset_metadata("mobilenetv2_0.2x_jester").labels == ORIGINAL_JESTER_ORDER
    # labels given are kept; another file name infers neither
    _, meta = conv.build_converted(str(jester), 8, 32, labels=[str(i) for i in range(27)],
                                   log=said.append)
    assert meta.labels[0] == "0" and meta.downsample == 2
    kinetics = _with_classes(reference_dir, tmp_path / "kinetics_mobilenetv2_0.2x_RGB_16_best.pth",
                             600)
    _, meta = conv.build_converted(kinetics, 8, 32, log=said.append)
    assert meta.labels is None and meta.downsample is None


def _with_classes(reference_dir, path, classes, name="mobilenetv2_0.2x"):
    """A copy of a reference checkpoint at `path` whose classifier has `classes` rows."""
    torch = pytest.importorskip("torch")
    checkpoint = torch.load(reference_dir / "pytorch_checkpoints" / f"{name}.pth",
                            weights_only=True)
    state = checkpoint["state_dict"]
    width = state["module.classifier.1.weight"].shape[1]
    state["module.classifier.1.weight"] = torch.zeros(classes, width)
    state["module.classifier.1.bias"] = torch.zeros(classes)
    torch.save(checkpoint, path)
    return str(path)


@pytest.mark.parametrize("file_name, classes, dataset, contradicted", [
    ("kinetics_mobilenetv2_1.0x_RGB_16_best.pth", 600, "kinetics", False),
    ("pretrained_kinetics_mobilenetv2_0.2x_RGB_16_best.pth", 600, "kinetics", False),
    ("Copy of jester_mobilenetv2_0.2x_RGB_16_best.pth", 27, "jester", False),
    ("ucf101_mobilenetv2_1.0x_RGB_16_best.pth", 101, "ucf101", False),
    ("kinetics600-mobilenetv2.pth", None, "kinetics", False),  # the name alone
    ("mobilenetv2_1.0x.pth", 600, "kinetics", False),  # the class count alone
    ("my model.pth", 27, "jester", False),
    # a Kinetics model fine-tuned on UCF-101 and named after its start: the classifier's
    ("kinetics_mobilenetv2_1.0x_RGB_16_best.pth", 101, "ucf101", True),
    ("jester_mobilenetv2_1.0x_RGB_16_best.pth", 600, "kinetics", True),
    ("kinetics_to_ucf101_mobilenetv2.pth", 101, "ucf101", False),  # both named: the count picks
    ("mobilenetv2.pth", 51, None, False),
    ("kinetics-mobilenetv2.pth", 400, "kinetics", False),
    # another Kinetics: BGR input as well (a startswith("kinetics") said so before)
    ("kinetics400_resnet18.pth", 400, "kinetics", False),
    ("kinetics700_x.pth", None, "kinetics", False),
])
def test_the_dataset_comes_from_any_word_of_the_file_name_checked_by_the_class_count(
        file_name, classes, dataset, contradicted):
    """`startswith("kinetics")` gave 'pretrained_kinetics_...' (and 'Copy of jester_...', a
    Drive copy's name) RGB input, no class names and every frame, saying nothing."""
    found, source, warning = conv.infer_dataset(f"some/folder/{file_name}", classes)
    assert found == dataset and (warning is not None) == contradicted
    if contradicted:
        assert warning.startswith(f"{file_name}: the file name says ") and "\n" not in warning
        assert f"its {classes} classes are {conv.DATASETS[dataset][0]}'s" in warning


def test_a_checkpoint_named_after_no_dataset_is_converted_with_a_note_of_what_was_assumed(
        reference_dir, tmp_path):
    said = []
    kinetics = _with_classes(reference_dir, tmp_path / "pretrained_kinetics_mnv2.pth", 600)
    _, meta = conv.build_converted(kinetics, 8, 32, log=said.append)
    assert meta.normalization == Normalization.coerce("kinetics") and meta.downsample is None
    assert "inferred normalisation 'kinetics' (Kinetics-600's input)" in said
    said.clear()
    odd = _with_classes(reference_dir, tmp_path / "weights.pth", 51)
    _, meta = conv.build_converted(odd, 8, 32, log=said.append)
    assert meta.normalization == Normalization.coerce("original")
    assert [line for line in said if line.startswith("note: ")] == [
        "note: neither the file name nor its 51 classes say which dataset weights.pth was "
        "trained on (kinetics/jester/ucf101 in the name, 600/27/101 classes): assumed RGB "
        "input (normalisation 'original') and every frame"]


def test_a_file_name_whose_width_the_tensors_contradict_is_refused_naming_both(
        reference_dir, tmp_path):
    import shutil

    misnamed = tmp_path / "kinetics_mobilenetv2_1.0x_RGB_16_best.pth"  # a 0.2x checkpoint
    shutil.copy(reference_dir / "pytorch_checkpoints" / "mobilenetv2_0.2x.pth", misnamed)
    with pytest.raises((conv.ConversionError, ValueError),
                       match=r"The file name says 1.0x but the tensor shapes are those of 0.2x; "
                             r"pass --width_mult=0.2 \(the width the weights fit: the file "
                             r"kinetics_mobilenetv2_1.0x_RGB_16_best.pth is misnamed\)$"):
        conv.build_converted(str(misnamed), 8, 32, log=lambda _: None)
    _, meta = conv.build_converted(str(misnamed), 8, 32, overrides={"width_mult": 0.2},
                                   log=lambda _: None)
    assert meta.model["width_mult"] == 0.2
    # a --width_mult the tensors contradict: that flag named, not 103 shape mismatches
    with pytest.raises(conv.ConversionError, match=r"^kinetics_mobilenetv2_1.0x_RGB_16_best.pth "
                                                   r"holds a mobilenetv2 model of width_mult=0.2, "
                                                   r"not --width_mult=0.45: pass --width_mult=0.2"):
        conv.build_converted(str(misnamed), 8, 32, overrides={"width_mult": 0.45},
                             log=lambda _: None)


def test_a_published_presets_checkpoint_that_is_a_folder_is_said_to_be_one(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("KERAS_EFFICIENT3D_HOME", str(tmp_path / "home"))
    (tmp_path / "adir").mkdir()
    with pytest.raises(FileNotFoundError, match=r"checkpoint=.*adir: a folder, not a file \("):
        k3.presets.from_preset("mobilenetv2_0.2x_jester", checkpoint=str(tmp_path / "adir"))


def test_a_jester_preset_made_with_the_csvs_class_order_gets_the_originals(
        reference_dir, tmp_path, monkeypatch):
    """Presets made before the fix recorded jester-v1-labels.csv's order; the cached preset's
    names are rewritten (its weights are right), once, with a line saying so."""
    import json
    import shutil

    from keras_efficient3d.predict import load_labels

    monkeypatch.setenv("KERAS_EFFICIENT3D_HOME", str(tmp_path / "home"))
    checkpoint = tmp_path / "jester_mobilenetv2_0.2x_RGB_16_best.pth"
    shutil.copy(reference_dir / "pytorch_checkpoints" / "mobilenetv2_0.2x.pth", checkpoint)
    said = []
    cached = k3.presets.resolve_preset("mobilenetv2_0.2x_jester", checkpoint=str(checkpoint),
                                       log=said.append)
    metadata = os.path.join(cached, "metadata.json")
    with open(metadata) as handle:
        data = json.load(handle)
    data["model_metadata"]["labels"] = load_labels("jester")  # as an earlier version made it
    with open(metadata, "w") as handle:
        json.dump(data, handle)
    said.clear()
    k3.presets.resolve_preset("mobilenetv2_0.2x_jester", log=said.append)
    assert said == ["preset 'mobilenetv2_0.2x_jester': its class names rewritten in the order its "
                    "outputs follow (the original's; it was made with jester-v1-labels.csv's "
                    "order)"]
    assert k3.presets.preset_metadata("mobilenetv2_0.2x_jester", log=said.append).labels == \
        ORIGINAL_JESTER_ORDER
    assert len(said) == 1  # once: the second call found them right


def test_preprocessing_layer_applies_bgr_and_range():
    layer = VideoPreprocessing(mean=(1.0, 2.0, 3.0), std=(2.0, 2.0, 2.0), value_range="0-1",
                                    channel_order="BGR")
    x = np.array([255.0, 0.0, 127.5], np.float32).reshape(1, 1, 1, 1, 3)
    out = np.asarray(layer(x)).ravel()
    np.testing.assert_allclose(out, [(0.5 - 1) / 2, (0 - 2) / 2, (1 - 3) / 2], rtol=1e-6)


def _invoke_cli(*args):
    """The command line in this process (`cli.invoke`, the program's own error mapping): the
    real program runs in the conversion test above and in test_cli.py. (status, stderr)."""
    import contextlib
    import io

    from keras_efficient3d import cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli.invoke(conv.main, conv.define_flags, ["keras_efficient3d.convert", *args])
    return status, err.getvalue()


def test_cli_refuses_malicious_checkpoint(tmp_path):
    class Evil:
        def __reduce__(self):
            return (eval, ("open('%s', 'w').write('pwned')" % (tmp_path / "marker"),))

    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"state_dict": Evil()}))
    status, err = _invoke_cli(f"--checkpoint={bad}", f"--output={tmp_path / 'x.keras'}")
    assert status == 2
    assert "error:" in err and "Traceback" not in err
    assert not (tmp_path / "marker").exists()
    assert not (tmp_path / "x.keras").exists()


def test_cli_reports_missing_file_and_mismatch(reference_dir, tmp_path, capsys):
    status, err = _invoke_cli(f"--checkpoint={tmp_path / 'nope.pth'}", f"--output={tmp_path / 'x.keras'}")
    assert status == 2 and "nope.pth" in err and "Traceback" not in err
    # nothing was read: nothing said to be inferred from it before the refusal
    assert "inferred" not in capsys.readouterr().out
    squeezenet = _without_arch(reference_dir, tmp_path, "squeezenet_1.1", **{
        "features.3.squeeze.weight": np.zeros((1, 1, 1, 1, 1), np.float32)})
    status, err = _invoke_cli(f"--checkpoint={squeezenet}", f"--output={tmp_path / 'x.keras'}",
                              "--frames=16", "--size=32")
    assert status == 2 and f"{squeezenet}: The checkpoint does not fit" in err


def test_cli_keeps_the_sections_of_a_mismatch_apart(reference_dir, tmp_path):
    zeros = np.zeros((3, 3), np.float32)
    # MobileNetV2's keys with 13 extra and 13 missing (blocks 1-13 as another model names
    # them), the classifier of another width
    renamed = {f"features.{i}.conv.9.weight": zeros for i in range(1, 14)}
    path = _without_arch(reference_dir, tmp_path, **renamed, **{
        "classifier.1.weight": np.zeros((27, 7), np.float32)}, drop=[
            f"features.{i}.conv.1.running_var" for i in range(1, 14)])
    status, err = _invoke_cli(f"--checkpoint={path}", f"--output={tmp_path / 'x.keras'}",
                              "--model=mobilenetv2", "--width_mult=0.2")
    assert status == 2 and len(err.splitlines()) == 1, err
    # one line, each section after the one before it, not run into its last key
    assert re.search(r"does not fit model '[^']+': missing keys \(\d+\): [^;]+ more; "
                     r"unexpected keys \(\d+\): [^;]+ more; shape mismatches \(1\): "
                     r"predictions <- classifier.1: Keras \[[^;]+\] vs checkpoint \[[^;]+\]$",
                     err.strip()), err


def test_a_published_presets_description_records_the_model_as_its_conversion_does(tmp_path,
                                                                                 monkeypatch):
    """`presets.preset_metadata` of a preset not made yet gives the `model` field that the
    conversion records: a ResNet by its depth ("resnet18"), as `convert_checkpoint` names it."""
    torch = pytest.importorskip("torch")
    from keras_efficient3d import presets

    monkeypatch.setenv("KERAS_EFFICIENT3D_HOME", str(tmp_path / "home"))
    spec = presets.PUBLISHED["resnet18_kinetics600"]
    model = k3.create_model("resnet18", input_shape=(4, 32, 32, 3), num_classes=600, shortcut="A")
    state = torch_state_dict(model, registry.get_family("resnet"))
    path = tmp_path / spec.checkpoint
    torch.save({"arch": "resnet-18", "epoch": 1, "state_dict": {
        f"module.{k}": torch.from_numpy(np.asarray(v)) for k, v in state.items()}}, path)
    _, config, _ = conv.convert_checkpoint(str(path), 4, 32, log=lambda _: None,
                                           expected=dict(spec.expected))
    described = presets.preset_metadata(spec.name)
    assert described.model == config and config["model"] == "resnet18"
    assert not (tmp_path / "home" / "presets").exists()


def test_a_preset_model_saved_with_keras_save_keeps_what_the_preset_records(tmp_path,
                                                                          monkeypatch):
    """`model.save("p.keras")` of a preset wrote no metadata: predict then assumed every frame
    and normalisation 'original', and fine-tuning it warned of nothing. The preset's own
    figures (its card, its checkpoint's digest) are not the saved file's."""
    from keras_efficient3d.artifacts import read_metadata

    monkeypatch.setenv("KERAS_EFFICIENT3D_HOME", str(tmp_path / "home"))

    model = k3.MobileNetV2_3D.from_preset("synthetic_gestures", log=lambda _: None)
    model.save(tmp_path / "p.keras")
    saved, preset = read_metadata(tmp_path / "p.keras"), k3.presets.preset_metadata(
        "synthetic_gestures", log=lambda _: None)
    assert (saved.frames, saved.size, saved.downsample, saved.normalization, saved.labels) == (
        preset.frames, preset.size, preset.downsample, preset.normalization, preset.labels)
    assert "card" in preset.extra and "card" not in saved.extra
    assert "checkpoint_sha256" not in saved.extra
    plain = k3.create_model("mobilenetv2_0.2x", input_shape=(8, 32, 32, 3), num_classes=3)
    plain.save(tmp_path / "plain.keras")  # a model of no preset: Keras' file, as before
    assert read_metadata(tmp_path / "plain.keras") is None
