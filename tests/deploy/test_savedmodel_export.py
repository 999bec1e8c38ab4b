"""SavedModel export: the serving signature matches the Keras model, fixed or free batch."""

import numpy as np
import pytest
import tensorflow as tf

from deploy_helpers import randomize_batchnorm
from keras_efficient3d import create_model
from keras_efficient3d.deploy import savedmodel
from keras_efficient3d.runtime import relative_error


@pytest.fixture(scope="module")
def model():
    m = create_model("mobilenetv2", input_shape=(8, 32, 32, 3), num_classes=5, width_mult=0.2)
    return randomize_batchnorm(m, seed=0, spread=0.2)


@pytest.fixture(scope="module")
def dynamic_dir(model, tmp_path_factory):
    return savedmodel.export_saved_model(model, str(tmp_path_factory.mktemp("sm") / "dynamic"))


def test_signature_matches_keras_at_any_batch(model, dynamic_dir):
    fn = tf.saved_model.load(dynamic_dir).signatures["serving_default"]
    (key, spec), = fn.structured_input_signature[1].items()
    assert key == "input" and spec.shape.as_list() == [None, 8, 32, 32, 3]
    assert list(fn.structured_outputs) == ["logits"]
    for batch in (1, 3):
        clips = savedmodel.random_clips(model, batch, seed=batch)
        got = fn(input=tf.constant(clips))["logits"].numpy()
        expected = model(clips, training=False).numpy()
        assert np.abs(expected).max() > 1e-3  # a meaningful comparison
        assert relative_error(got, expected) < 1e-4


def test_verification_fails_against_another_model(dynamic_dir):
    other = create_model("mobilenetv2", input_shape=(8, 32, 32, 3), num_classes=5, width_mult=0.2)
    with pytest.raises(AssertionError, match="differs"):
        savedmodel.verify_saved_model(dynamic_dir, other, rtol=1e-4, atol=0.0)


def test_build_and_export_and_argument_errors(tmp_path):
    # A fixed batch, BatchNorm kept, verified on loading back.
    report = savedmodel.build_and_export_saved_model(
        str(tmp_path / "built"), model_name="mobilenetv2_0.2x", num_frames=8, image_size=32,
        num_classes=3, batch_size=2, fold_bn=False)
    assert report["input_shape"] == (2, 8, 32, 32, 3) and report["max_rel_error"] < 1e-4
    fn = tf.saved_model.load(report["path"]).signatures["serving_default"]
    assert fn.structured_input_signature[1]["input"].shape.as_list() == [2, 8, 32, 32, 3]
    with pytest.raises(ValueError, match="batch_size"):
        savedmodel.export_saved_model(create_model("mobilenetv2_0.2x", input_shape=(8, 32, 32, 3)),
                                      str(tmp_path / "bad"), batch_size=-1)
    with pytest.raises(ValueError, match="exactly one"):
        savedmodel.load_or_build_model(model_name="mobilenetv2", keras_file="x.keras")
    with pytest.raises(ValueError, match="missing.keras: file not found"):
        savedmodel.load_or_build_model(keras_file=str(tmp_path / "missing.keras"))
    # Keras reads a truncated archive as "File not found", an exported file as a TFSMLayer.
    (tmp_path / "cut.keras").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="cut.keras: not a valid .keras archive"):
        savedmodel.load_or_build_model(keras_file=str(tmp_path / "cut.keras"))
    (tmp_path / "m.tflite").write_bytes(b"TFL3")
    with pytest.raises(ValueError, match=r"m.tflite: the export needs a .keras model \(got .tflite\)"):
        savedmodel.load_or_build_model(keras_file=str(tmp_path / "m.tflite"))


def test_grouped_convolutions_export_split_per_group(tmp_path):
    """The serving graph holds no grouped Conv2D (TensorFlow without oneDNN runs them 9x
    slower, converters may refuse them), though the Keras model runs them as one op here."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    model = create_model("shufflenet", groups=3, width_mult=0.25, input_shape=(16, 32, 32, 3),
                         num_classes=4)
    path = savedmodel.export_saved_model(model, str(tmp_path / "sm"), batch_size=1)
    assert savedmodel.verify_saved_model(path, model) < 1e-4
    loaded = tf.saved_model.load(path)
    frozen = convert_variables_to_constants_v2(loaded.signatures["serving_default"])
    convs = [op for op in frozen.graph.get_operations() if op.type == "Conv2D"]
    assert len(convs) > 10
    assert all(op.inputs[1].shape[2] == op.inputs[0].shape[-1] for op in convs)


def test_the_jetsons_tensorflow_knows_every_op_of_the_export(dynamic_dir):
    """JetPack 4.6's TensorFlow (2.6-2.7, Python 3.6) loads the export: it holds no variables
    (TF 2.21's save/restore functions use `DisableCopyOnRead`, which TF 2.6 lacks) and no op
    newer than TF 2.6 (its op list ships in tests/fixtures/tensorflow)."""
    import pathlib

    from tensorflow.core.protobuf import saved_model_pb2

    listed = pathlib.Path(__file__).parents[1] / "fixtures" / "tensorflow" / "tf2.6_ops.txt"
    known = {line for line in listed.read_text().split("\n") if line and not line.startswith("#")}
    assert "Conv2D" in known and "DisableCopyOnRead" not in known
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((pathlib.Path(dynamic_dir) / "saved_model.pb").read_bytes())
    (meta,) = proto.meta_graphs
    used = {node.op for node in meta.graph_def.node}
    used |= {node.op for f in meta.graph_def.library.function for node in f.node_def}
    assert "DepthwiseConv2dNative" in used
    assert sorted(used - known) == []
    variables = pathlib.Path(dynamic_dir) / "variables"
    assert not any(p.name.startswith("variables.data") for p in variables.glob("*"))
    # what tf.saved_model.save writes too: without it each load warns of its absence
    assert (pathlib.Path(dynamic_dir) / "fingerprint.pb").is_file()


def test_export_cli_writes_a_savedmodel_and_nothing_else_to_the_screen(tmp_path):
    """Loading a SavedModel without variables back (the check) logs "Saver not created
    because there are no variables", which tells a user nothing."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = tmp_path / "sm"
    run = subprocess.run(
        [sys.executable, os.path.join(root, "deployment", "export.py"), "--model=mobilenetv2_0.2x",
         "--num_classes=3", "--frames=8", "--size=32", "--format=savedmodel", f"--output={out}"],
        capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert run.returncode == 0, run.stderr
    # the one line: the weights of --model without --weights are random, said once written
    assert run.stderr == ("note: --model=mobilenetv2_0.2x without --weights: random weights (a "
                          "file to time or to check the export with; its classes mean nothing)\n")
    assert json.loads(run.stdout)["max_rel_error"] < 1e-4
    assert (out / "saved_model.pb").is_file() and not (tmp_path / "sm.partial").exists()


def test_an_export_into_a_folder_keeps_what_else_it_holds(model, tmp_path, monkeypatch):
    """Into an existing folder (".", exports/ beside an ONNX file) the export replaces the
    SavedModel's own entries only; into a file it fails; it leaves no staging folder."""
    import os

    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "m.onnx").write_text("another export")
    savedmodel.export_saved_model(model, str(folder))
    savedmodel.export_saved_model(model, str(folder))  # over the earlier one
    assert (folder / "m.onnx").read_text() == "another export"
    assert sorted(p.name for p in folder.iterdir()) == [
        "fingerprint.pb", "m.onnx", "saved_model.pb", "variables"]
    assert savedmodel.verify_saved_model(str(folder), model) < 1e-4
    monkeypatch.chdir(folder)
    savedmodel.export_saved_model(model, ".")
    assert (folder / "m.onnx").exists() and not any(p.name.startswith(".") for p in folder.iterdir())
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError):
        savedmodel.export_saved_model(model, str(tmp_path / "afile"))
    assert sorted(os.listdir(tmp_path)) == ["afile", "exports"]


def test_an_export_that_fails_its_check_or_would_replace_a_users_folder_leaves_all_as_it_was(
        model, tmp_path):
    import os

    folder = tmp_path / "sm"
    savedmodel.export_saved_model(model, str(folder))
    before = (folder / "saved_model.pb").read_bytes()

    def failing(path):
        raise AssertionError("SavedModel differs from the Keras model")

    other = create_model("mobilenetv2_0.2x", input_shape=(8, 32, 32, 3), num_classes=3)
    with pytest.raises(AssertionError):
        savedmodel.export_saved_model(other, str(folder), check=failing)
    assert (folder / "saved_model.pb").read_bytes() == before  # checked before it was moved
    assert sorted(os.listdir(folder)) == ["fingerprint.pb", "saved_model.pb", "variables"]
    # --output=. where "variables/" is the user's own, beside no SavedModel
    mine = tmp_path / "project"
    (mine / "variables").mkdir(parents=True)
    (mine / "variables" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"project/variables exists, and .*project holds no "
                                              r"SavedModel \(no saved_model.pb\)"):
        savedmodel.export_saved_model(model, str(mine))
    assert sorted(p.name for p in mine.rglob("*")) == ["notes.txt", "variables"]
    # a folder the failed export made is not left behind, empty
    with pytest.raises(AssertionError):
        savedmodel.export_saved_model(other, str(tmp_path / "new" / "sm"), check=failing)
    assert sorted(os.listdir(tmp_path)) == ["new", "project", "sm"]
    assert os.listdir(tmp_path / "new") == []


def test_export_cli_without_the_onnx_packages(tmp_path, monkeypatch, capsys):
    """A base install (no `onnx` extra): --format=savedmodel exports, and --format=onnx is one
    line saying what to install; the script imported the ONNX exporter for every format."""
    import importlib.util
    import os
    import sys

    from keras_efficient3d import cli, deploy

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec = importlib.util.spec_from_file_location(
        "export_script", os.path.join(root, "deployment", "export.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    monkeypatch.delitem(sys.modules, "keras_efficient3d.deploy.onnx_export", raising=False)
    monkeypatch.delattr(deploy, "onnx_export", raising=False)  # as imported by other tests
    common = ["export.py", "--model=mobilenetv2_0.2x", "--num_classes=3", "--frames=8",
              "--size=32"]
    assert cli.invoke(script.main, script.define_flags,
                      [*common, "--format=savedmodel", f"--output={tmp_path / 'sm'}"]) == 0
    assert (tmp_path / "sm" / "saved_model.pb").is_file()
    capsys.readouterr()
    assert cli.invoke(script.main, script.define_flags,
                      [*common, "--format=onnx", f"--output={tmp_path / 'm.onnx'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "--format=onnx needs the onnx packages" in err
    assert "pip install 'keras_efficient3d[onnx]'" in err
    assert not (tmp_path / "m.onnx").exists()



def test_the_export_records_its_metadata_inside_the_folder(tmp_path):
    """The SavedModel kept no record of its clip, normalisation or classes (an ONNX export's
    sidecar does): a Jetson user had the logits and no names for them. The record lives in
    assets.extra, which a user's files there share, and which an export without one clears."""
    from keras_efficient3d import artifacts

    folder = tmp_path / "sm"
    (folder / "assets.extra").mkdir(parents=True)
    (folder / "assets.extra" / "tf_serving_warmup_requests").write_text("mine")
    report = savedmodel.build_and_export_saved_model(
        str(folder), model_name="mobilenetv2_0.2x", num_frames=8, image_size=32, num_classes=3,
        verify=False)
    assert report["metadata"] == str(folder / "assets.extra" / "keras_efficient3d.json")
    recorded = artifacts.read_metadata(str(folder))
    assert (recorded.frames, recorded.height_width, recorded.batch) == (8, (32, 32), "dynamic")
    assert recorded.model == {"model": "mobilenetv2_0.2x", "num_classes": 3}
    assert (folder / "assets.extra" / "tf_serving_warmup_requests").read_text() == "mine"
    tf.saved_model.load(str(folder))  # TensorFlow reads the folder as before
    # an export without metadata (the Python API's default) leaves no other model's record
    savedmodel.export_saved_model(create_model("mobilenetv2_0.2x", input_shape=(8, 32, 32, 3),
                                               num_classes=4), str(folder))
    assert artifacts.read_metadata(str(folder)) is None
    assert (folder / "assets.extra" / "tf_serving_warmup_requests").read_text() == "mine"
