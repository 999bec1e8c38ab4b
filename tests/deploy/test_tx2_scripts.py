"""The Jetson scripts: Python 3.6 syntax, argument handling and the messages and exit codes
for what this machine lacks (TensorRT, TF-TRT, trtexec, a GPU)."""

import ast
import glob
import importlib
import json
import os
import subprocess
import sys

import onnx
import pytest
from onnx import TensorProto, helper

from deploy_helpers import fake_tensorrt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TX2 = os.path.join(ROOT, "deployment", "tx2")
SCRIPTS = sorted(glob.glob(os.path.join(TX2, "*.py")))
STDLIB_OK = {"argparse", "collections", "ctypes", "glob", "json", "os", "re", "shutil", "statistics",
             "subprocess", "sys", "tempfile", "time", "tx2_common", "trt_build_engine"}


def test_the_scripts_are_there():
    names = {os.path.basename(p) for p in SCRIPTS}
    assert {"trt_convert.py", "tftrt_benchmark.py", "trt_build_engine.py",
            "trt_benchmark.py"} <= names
    assert os.path.isfile(os.path.join(TX2, "README.md"))


@pytest.mark.parametrize("path", SCRIPTS, ids=os.path.basename)
def test_parses_as_python_36(path):
    source = open(path, encoding="utf-8").read()
    tree = ast.parse(source, feature_version=(3, 6))
    for node in ast.walk(tree):
        # f-strings parse on 3.6 but their "=" specifier does not run there: use none at all.
        assert not isinstance(node, ast.JoinedStr), f"f-string at line {node.lineno}"
        if isinstance(node, ast.ImportFrom):
            assert node.module not in ("__future__", "dataclasses"), node.module
        if isinstance(node, ast.Import):
            assert "dataclasses" not in {a.name for a in node.names}
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert not node.args.posonlyargs
    # Module-level imports: the standard library and siblings only (numpy, TensorFlow and
    # TensorRT are imported where used, so that their absence gets a clear message).
    for node in tree.body:
        if isinstance(node, ast.Import):
            assert {a.name.split(".")[0] for a in node.names} <= STDLIB_OK
        elif isinstance(node, ast.ImportFrom):
            assert node.module.split(".")[0] in STDLIB_OK


def _script(name, *args, timeout=120, **environ):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PATH="/usr/bin:/bin", **environ)
    run = subprocess.run([sys.executable, os.path.join(TX2, name)] + list(args),
                         capture_output=True, text=True, env=env, timeout=timeout)
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def common():
    sys.path.insert(0, TX2)
    try:
        yield importlib.import_module("tx2_common")
    finally:
        sys.path.remove(TX2)


def test_int8_capability_table(common):
    assert not common.int8_supported((6, 2))  # Jetson TX2
    assert not common.int8_supported((5, 3))  # Nano, TX1
    assert not common.int8_supported((6, 0))  # P100
    assert common.int8_supported((6, 1))      # Titan Xp, P4
    assert common.int8_supported((7, 2))      # Xavier
    assert common.int8_supported((8, 7))      # Orin
    assert common.summarize([0.1, 0.3, 0.2], 8)["clips_per_s"] == pytest.approx(40.0)


def test_trtexec_output_parsing(common):
    bench = importlib.import_module("trt_benchmark")
    text = ("[I] Latency: min = 3.1 ms, max = 4.0 ms, mean = 3.3 ms, median = 3.25 ms\n"
            "[I] GPU Compute Time: min = 2.9 ms, max = 3.8 ms, mean = 3.1 ms, median = 3.05 ms, "
            "percentile(99%) = 3.7 ms\n")
    assert bench.parse_trtexec_median_ms(text) == pytest.approx(3.05)
    assert bench.parse_trtexec_median_ms(text.splitlines()[0]) == pytest.approx(3.25)
    assert bench.parse_trtexec_median_ms("nothing") is None


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    paths = {}
    for label, batch in (("dynamic", "batch"), ("fixed", 8)):
        x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 16, 112, 112, 3])
        y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 16, 112, 112, 3])
        graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g", [x], [y])
        paths[label] = str(folder / f"{label}.onnx")
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), paths[label])
    return paths


def test_build_engine_prints_the_trtexec_command(onnx_files, tmp_path):
    run = _script("trt_build_engine.py", "--onnx", onnx_files["dynamic"], "--engine",
                  str(tmp_path / "m.engine"), "--precision", "fp16", "--dry-run")
    assert run.returncode == 0, run.stderr
    line = run.stdout.strip().splitlines()[-1]
    assert f"--onnx={onnx_files['dynamic']}" in line and "--fp16" in line
    assert "--minShapes=input:1x16x112x112x3" in line
    assert "--optShapes=input:8x16x112x112x3" in line
    assert "--maxShapes=input:8x16x112x112x3" in line
    run = _script("trt_build_engine.py", "--onnx", onnx_files["fixed"], "--engine", "e",
                  "--precision", "int8", "--compute-capability", "7.2", "--dry-run")
    assert run.returncode == 0 and "--int8 --fp16" in run.stdout and "Shapes" not in run.stdout


def test_the_fixed_batch_note_is_one_sentence_for_every_script(common):
    fixed = (1, 8)
    assert common.fixed_batch_notice("m.onnx", 8, (1, 4), "1,4", "the engine runs") == (
        "note: --batch-sizes 1,4 is ignored: m.onnx has a fixed batch of 8, the only batch the "
        "engine runs")
    assert common.fixed_batch_notice("m.onnx", 8, fixed, None, "the engine runs") == (
        "note: m.onnx has a fixed batch of 8: the engine runs that batch only")
    assert common.fixed_batch_notice("m.onnx", 8, (8,), "8", "the engine runs") is None
    assert common.fixed_batch_notice("m.onnx", None, (1, 4), "1,4", "the engine runs") is None
    assert common.fixed_batch_sizes("m.onnx", None, (1, 4), "1,4", "the engine runs") == (1, 4)
    assert common.fixed_batch_sizes("m.onnx", 8, (1, 4), "1,4", "the engine runs") == (8,)


@pytest.mark.parametrize("name", ["trt_build_engine.py", "trt_convert.py", "tftrt_benchmark.py",
                                  "trt_benchmark.py"])
def test_every_script_that_reads_a_fixed_batch_says_so_the_same_way(name):
    with open(os.path.join(TX2, name)) as handle:
        tree = ast.parse(handle.read())
    calls = {node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute)
             and isinstance(node.func.value, ast.Name) and node.func.value.id == "common"}
    assert "fixed_batch_sizes" in calls


def test_build_engine_says_a_fixed_batch_makes_the_batch_sizes_moot(onnx_files):
    run = _script("trt_build_engine.py", "--onnx", onnx_files["fixed"], "--engine", "e",
                  "--batch-sizes", "1,4", "--dry-run")
    assert run.returncode == 0, run.stderr
    notice, command = run.stdout.strip().splitlines()
    assert notice.startswith("note: --batch-sizes 1,4 is ignored") and "batch of 8" in notice
    assert command.startswith("trtexec ") and "Shapes" not in command
    run = _script("trt_build_engine.py", "--onnx", onnx_files["dynamic"], "--engine", "e",
                  "--batch-sizes", "1,4", "--dry-run")
    assert run.returncode == 0 and "note:" not in run.stdout and "--maxShapes=input:4x" in run.stdout


def test_build_engine_errors(onnx_files):
    run = _script("trt_build_engine.py", "--onnx", onnx_files["dynamic"], "--engine", "e",
                  "--precision", "int8", "--compute-capability", "6.2")
    assert run.returncode == 2 and "sm_62" in run.stderr and "FP16" in run.stderr
    # none on PATH (/usr/bin:/bin here) nor where JetPack puts it
    run = _script("trt_build_engine.py", "--onnx", onnx_files["dynamic"], "--engine", "e")
    assert run.returncode == 3 and "trtexec not found" in run.stderr
    run = _script("trt_build_engine.py", "--onnx", "/nonexistent.onnx", "--engine", "e")
    assert run.returncode == 2 and "is not a file" in run.stderr
    run = _script("trt_build_engine.py", "--onnx", onnx_files["dynamic"], "--engine", "e",
                  "--batch-sizes", "0,8", "--dry-run")
    assert run.returncode == 2 and "--batch-sizes" in run.stderr
    run = _script("trt_build_engine.py", "--engine", "e")
    assert run.returncode == 2 and "--onnx" in run.stderr  # argparse


@pytest.mark.parametrize("content", [b"not an onnx file", b"\x08\x07\x12\x05hello\x3a\xff", b""])
def test_build_engine_refuses_a_file_that_is_not_onnx(content, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    run = _script("trt_build_engine.py", "--onnx", str(bad), "--engine", "e", "--dry-run")
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() == run.stderr.strip().splitlines()[0]
    assert f"--onnx {bad}: not an ONNX model" in run.stderr


def test_trt_benchmark_without_tensorrt(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    run = _script("trt_benchmark.py", "--engine", str(engine))
    assert run.returncode == 3 and "neither TensorRT's Python API nor trtexec" in run.stderr
    run = _script("trt_benchmark.py", "--engine", str(engine), "--backend", "python")
    assert run.returncode == 3 and "TensorRT's Python API" in run.stderr
    run = _script("trt_benchmark.py", "--engine", str(tmp_path / "missing.engine"))
    assert run.returncode == 2 and "trt_build_engine.py" in run.stderr


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory):
    import keras

    from keras_efficient3d.deploy.savedmodel import export_saved_model

    inputs = keras.Input((4, 16, 16, 3))
    x = keras.layers.Reshape((16, 16, 12))(inputs)
    x = keras.layers.Conv2D(4, 3)(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    return export_saved_model(keras.Model(inputs, outputs),
                              str(tmp_path_factory.mktemp("sm") / "tiny"))


@pytest.fixture(scope="module")
def fixed_saved_model_dir(tmp_path_factory):
    import keras

    from keras_efficient3d.deploy.savedmodel import export_saved_model

    inputs = keras.Input((4, 16, 16, 3))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling3D()(inputs))
    return export_saved_model(keras.Model(inputs, outputs),
                              str(tmp_path_factory.mktemp("sm") / "fixed"), batch_size=2)


def test_tftrt_benchmark_times_a_fixed_batch_at_that_batch_and_says_so(fixed_saved_model_dir):
    args = ["--saved-model", fixed_saved_model_dir, "--allow-cpu", "--warmup", "0",
            "--iterations", "1"]
    run = _script("tftrt_benchmark.py", *args)
    assert run.returncode == 0, run.stderr
    assert (f"note: signature serving_default of {fixed_saved_model_dir} has a fixed batch of "
            "2: this script times that batch only") in run.stdout
    run = _script("tftrt_benchmark.py", *args, "--batch-sizes", "2")
    assert run.returncode == 0 and "note:" not in run.stdout, run.stderr


def _fake_trtexec(folder, body):
    trtexec = folder / "trtexec"
    trtexec.write_text("#!/bin/sh\n" + body)
    trtexec.chmod(0o755)
    return str(trtexec)


def test_trt_benchmark_times_a_fixed_shape_engine_at_its_batch_via_trtexec(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"an engine")
    trtexec = _fake_trtexec(tmp_path, (
        "echo '[I] Created input binding for input with dimensions 8x16x112x112x3'\n"
        "echo '[I] GPU Compute Time: min = 2.9 ms, max = 3.8 ms, mean = 3.1 ms, median = 4 ms'\n"))
    out = tmp_path / "r.json"
    run = _script("trt_benchmark.py", "--engine", str(engine), "--backend", "trtexec",
                  "--trtexec", trtexec, "--clip-shape", "none", "--batch-sizes", "1,8",
                  "--json", str(out))
    assert run.returncode == 0, run.stderr
    assert (f"note: --batch-sizes 1,8 is ignored: {engine} has a fixed batch of 8, the only "
            "batch the engine runs") in run.stdout
    assert run.stdout.count("--loadEngine") == 1  # timed once, not once per batch asked
    results = json.loads(out.read_text())["results"]
    assert [(r["batch_size"], r["clips_per_s"]) for r in results] == [(8, 2000.0)]
    silent = _fake_trtexec(tmp_path, "echo '[I] GPU Compute Time: median = 4 ms'\n")
    run = _script("trt_benchmark.py", "--engine", str(engine), "--backend", "trtexec",
                  "--trtexec", silent, "--clip-shape", "none")
    _one_line(run, 1, "trtexec did not say the engine's input dimensions")


def test_trt_convert_refusals_and_missing_tftrt(saved_model_dir, tmp_path):
    run = _script("trt_convert.py", "--saved-model", saved_model_dir, "--output", str(tmp_path / "o"),
                  "--precision", "INT8", "--calibration-npy", "c.npy", "--compute-capability", "6.2")
    assert run.returncode == 2 and "sm_62" in run.stderr and "INT8" in run.stderr
    run = _script("trt_convert.py", "--saved-model", saved_model_dir, "--output", str(tmp_path / "o"),
                  "--precision", "INT8")
    assert run.returncode == 2 and "--calibration-npy" in run.stderr
    run = _script("trt_convert.py", "--saved-model", str(tmp_path / "none"), "--output", "o")
    assert run.returncode == 2 and "is not a directory" in run.stderr
    # PyPI TensorFlow 2.21 has no TF-TRT: one line, exit code 3.
    run = _script("trt_convert.py", "--saved-model", saved_model_dir, "--output", str(tmp_path / "o"),
                  "--precision", "FP16")
    assert run.returncode == 3 and "TensorRT" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_trt_convert_refuses_an_output_it_would_lose_or_write_over_the_input(saved_model_dir,
                                                                           tmp_path):
    (tmp_path / "afile").write_text("x")
    run = _script("trt_convert.py", "--saved-model", saved_model_dir, "--output",
                  str(tmp_path / "afile"), "--precision", "FP16")
    _one_line(run, 2, "is a file; the TF-TRT SavedModel is a folder")
    run = _script("trt_convert.py", "--saved-model", saved_model_dir, "--output",
                  saved_model_dir + "/", "--precision", "FP16")
    _one_line(run, 2, "is the --saved-model being converted")


def test_trt_convert_calibrates_a_fixed_batch_in_whole_batches(common, monkeypatch):
    """A SavedModel of batch 8 calibrated on 13 clips: the last chunk of 5 was fed to a
    signature that takes 8 only (a TensorFlow traceback after minutes of conversion)."""
    import numpy as np

    monkeypatch.syspath_prepend(TX2)
    convert = importlib.import_module("trt_convert")
    clips = np.arange(13)
    assert [len(b) for b in convert.calibration_batches(clips, 8, fixed=True)] == [8]
    assert [len(b) for b in convert.calibration_batches(clips, 8, fixed=False)] == [8, 5]
    with pytest.raises(common.Refused, match="holds 5 clips, fewer than the SavedModel's fixed "
                                             "batch of 8"):
        convert.calibration_batches(clips[:5], 8, fixed=True)


def test_a_saved_model_this_tensorflow_cannot_load_is_one_line(common, tmp_path):
    import tensorflow as tf

    (tmp_path / "saved_model.pb").write_bytes(b"not a SavedModel")
    with pytest.raises(common.Refused) as err:
        common.load_saved_model(tf, str(tmp_path))
    message = str(err.value)
    assert "\n" not in message and f"--saved-model {tmp_path}: this TensorFlow" in message
    assert "deployment/export.py --format savedmodel" in message


def test_tftrt_benchmark_times_a_saved_model_on_cpu(saved_model_dir, tmp_path):
    run = _script("tftrt_benchmark.py", "--saved-model", saved_model_dir)
    assert run.returncode == 3 and "no GPU" in run.stderr
    out = tmp_path / "r.json"
    run = _script("tftrt_benchmark.py", "--saved-model", saved_model_dir, "--allow-cpu",
                  "--warmup", "1", "--iterations", "3", "--json", str(out))
    assert run.returncode == 0, run.stderr
    results = json.loads(out.read_text())["results"]
    assert [r["batch_size"] for r in results] == [1, 8]
    assert all(r["clips_per_s"] > 0 and r["iterations"] == 3 for r in results)
    assert "clips/s" in run.stdout


# The ONNX operators TensorRT 8.2's parser (JetPack 4.6, the TX2's last) takes, of those the
# native export could write (onnx-tensorrt 8.2 operators.md; 3-D Conv/pools and grouped
# Conv included).
_TENSORRT_82_OPS = {"Add", "AveragePool", "Clip", "Concat", "Conv", "Flatten", "Gemm",
                    "GlobalAveragePool", "GlobalMaxPool", "Identity", "MaxPool", "Mul", "Pad",
                    "Relu", "Reshape", "Sigmoid", "Softmax", "Split", "Transpose"}


@pytest.fixture(scope="module")
def native_onnx_file(tmp_path_factory):
    """A native export (deploy.onnx_native) of a few layers of every kind the efficient
    models use: depthwise and grouped 3D convolutions, shuffle, split, pools, the head."""
    import keras

    from keras_efficient3d import layers as L
    from keras_efficient3d.deploy.onnx_export import export_onnx

    inputs = keras.Input((8, 32, 32, 3), name="input")
    x = L.Conv3D(12, 3, (1, 2, 2), 1, name="conv1")(inputs)
    x = keras.layers.ReLU(6.0, name="conv1_relu")(keras.layers.BatchNormalization(name="bn")(x))
    x = L.MaxPool3D(3, 2, 1, name="pool")(x)
    x = L.Conv3D(12, 1, groups=3, name="grouped")(x)
    x = L.ChannelShuffle(3, name="shuffle")(x)
    left, right = L.ChannelSplit(name="split")(x)
    right = L.DepthwiseConv3D(3, 1, 1, name="depthwise")(right)
    x = keras.layers.Concatenate(name="concat")([left, right])
    x = L.AvgPool3D(3, 2, 1, name="avg")(x)
    outputs = keras.layers.Dense(5, name="predictions")(keras.layers.GlobalAveragePooling3D(name="gap")(x))
    path = str(tmp_path_factory.mktemp("native") / "native.onnx")
    report = export_onnx(keras.Model(inputs, outputs), path)
    assert report["form"] == "native"
    return path


def test_native_export_is_what_tensorrt_82_parses(native_onnx_file):
    model = onnx.load(native_onnx_file)
    assert model.opset_import[0].version == 13 and model.ir_version == 7
    assert {n.op_type for n in model.graph.node} <= _TENSORRT_82_OPS
    groups = {n.name.split("/")[0]: a.i for n in model.graph.node if n.op_type == "Conv"
              for a in n.attribute if a.name == "group"}
    assert groups == {"conv1": 1, "grouped": 3, "depthwise": 6}  # 3D Conv with groups, natively


def test_build_engine_reads_the_native_export(native_onnx_file, tmp_path):
    run = _script("trt_build_engine.py", "--onnx", native_onnx_file, "--engine",
                  str(tmp_path / "m.engine"), "--precision", "fp16", "--dry-run")
    assert run.returncode == 0, run.stderr
    line = run.stdout.strip().splitlines()[-1]
    assert "--minShapes=input:1x8x32x32x3" in line and "--maxShapes=input:8x8x32x32x3" in line


@pytest.mark.parametrize("name", ["trt_convert.py", "tftrt_benchmark.py", "trt_classify.py"])
def test_tensorflow_scripts_turn_onednn_off_before_importing_it(name, common, monkeypatch):
    """oneDNN prints its notice whatever the log level and rewrites graphs TF-TRT then
    sees; the variables only count when set before TensorFlow is imported."""
    with open(os.path.join(TX2, name)) as handle:
        source = handle.read()
    setting = source.find("common.quiet_tensorflow()")
    assert 0 < setting < source.find("import tensorflow as tf")
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # the user's own choice is kept
    common.quiet_tensorflow()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0" and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def _one_line(run, code, expected):
    assert run.returncode == code, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], run.stderr


def test_tftrt_benchmark_refuses_what_is_not_a_saved_model_and_a_lost_json(saved_model_dir,
                                                                          tmp_path):
    run = _script("tftrt_benchmark.py", "--saved-model", str(tmp_path), "--allow-cpu")
    _one_line(run, 2, f"--saved-model {tmp_path} is not a SavedModel: it has no saved_model.pb")
    run = _script("tftrt_benchmark.py", "--saved-model", saved_model_dir, "--allow-cpu",
                  "--json", str(tmp_path / "no" / "r.json"))
    _one_line(run, 2, "--json {}: folder {} does not exist".format(
        tmp_path / "no" / "r.json", tmp_path / "no"))


def test_trt_benchmark_reports_a_failed_trtexec_in_one_line(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    trtexec = tmp_path / "trtexec"
    trtexec.write_text("#!/bin/sh\necho '[I] TensorRT version: 8.2'\n"
                       "echo '[E] Error[1]: engine deserialization failed'\nexit 1\n")
    trtexec.chmod(0o755)
    args = ["--engine", str(engine), "--backend", "trtexec", "--trtexec", str(trtexec)]
    run = _script("trt_benchmark.py", *args)
    _one_line(run, 1, "trtexec failed (exit 1): [E] Error[1]: engine deserialization failed")
    run = _script("trt_benchmark.py", *args, "--json", str(tmp_path / "no" / "r.json"))
    _one_line(run, 2, "--json {}: folder".format(tmp_path / "no" / "r.json"))


def test_trt_benchmark_reports_an_engine_tensorrt_cannot_load_in_one_line(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    # TensorRT's Runtime answers None, not an exception, for bytes it cannot deserialize.
    run = _script("trt_benchmark.py", "--engine", str(engine), "--backend", "python",
                  PYTHONPATH=_fake_tensorrt_package(tmp_path))
    _one_line(run, 1, f"TensorRT 8.2.1 could not load --engine {engine}")


def test_trt_benchmark_reports_a_failed_cuda_call_as_a_failure(common):
    with pytest.raises(common.Failed, match="cudaMalloc failed with CUDA error 2"):
        common.CudaRuntime._check(2, "cudaMalloc")


def test_build_engine_checks_the_engine_folder_before_building(onnx_files, tmp_path, common,
                                                              monkeypatch):
    engine = tmp_path / "no" / "m.engine"
    run = _script("trt_build_engine.py", "--onnx", onnx_files["dynamic"], "--engine", str(engine))
    _one_line(run, 2, f"--engine {engine}: folder {tmp_path / 'no'} does not exist")
    run = _script("trt_build_engine.py", "--onnx", onnx_files["dynamic"], "--engine",
                  str(tmp_path))
    _one_line(run, 2, f"--engine {tmp_path} is a folder; a file is needed")
    # root writes anywhere, so the unwritable folder is the answer os.access gives
    monkeypatch.setattr(common.os, "access", lambda path, mode: False)
    with pytest.raises(common.Refused, match="folder .* is not writable"):
        common.check_output_file(str(tmp_path / "m.engine"), "--engine")


def test_trt_convert_checks_the_calibration_clips_and_workspace_first(saved_model_dir, tmp_path):
    import numpy as np

    args = ["--saved-model", saved_model_dir, "--output", str(tmp_path / "o")]
    run = _script("trt_convert.py", *args, "--precision", "INT8", "--calibration-npy",
                  str(tmp_path / "c.npy"))
    _one_line(run, 2, "--calibration-npy {} is not a file".format(tmp_path / "c.npy"))
    (tmp_path / "bad.npy").write_text("not numpy")
    run = _script("trt_convert.py", *args, "--precision", "INT8", "--calibration-npy",
                  str(tmp_path / "bad.npy"))
    _one_line(run, 2, "not a NumPy .npy array")
    np.save(str(tmp_path / "flat.npy"), np.zeros((2, 3), np.float32))
    run = _script("trt_convert.py", *args, "--precision", "INT8", "--calibration-npy",
                  str(tmp_path / "flat.npy"))
    _one_line(run, 2, "expected float clips shaped (N, frames, height, width, 3), N >= 1, in an "
                      ".npy file. Received: (2, 3)")
    run = _script("trt_convert.py", *args, "--workspace-mb", "-5")
    _one_line(run, 2, "--workspace-mb must be >= 1")
    run = _script("trt_convert.py", "--saved-model", str(tmp_path), "--output", "o")
    _one_line(run, 2, "is not a SavedModel")


def test_build_engine_refuses_a_workspace_below_one(onnx_files):
    run = _script("trt_build_engine.py", "--onnx", onnx_files["dynamic"], "--engine", "e",
                  "--workspace-mb", "-5", "--dry-run")
    _one_line(run, 2, "--workspace-mb must be >= 1 (MiB of TensorRT workspace). Received: -5")


def test_results_are_written_atomically(common, tmp_path):
    path = tmp_path / "r.json"
    path.write_text("the run before")
    with pytest.raises(TypeError):  # an unwritable result keeps the file before whole
        common.print_results([dict(common.summarize([0.1], 1), extra=object())], "t", str(path))
    assert path.read_text() == "the run before"
    common.print_results([common.summarize([0.1], 1)], "t", str(path))
    assert json.loads(path.read_text())["results"][0]["batch_size"] == 1
    assert os.listdir(tmp_path) == ["r.json"]


# ---------------------------------------------------------------------------------------
# Stand-ins for the Jetson's TensorRT 8.2 (bindings API) and TensorRT >= 8.5 (tensor API),
# its trtexec and a JetPack without the onnx package.


class _FakeEngine:
    """A dynamic-batch engine (input (-1, 2, 4, 4, 3), output (-1, 5)) with one optimisation
    profile covering batch `low` to `high`; `bindings` picks the TensorRT 8.2 API, else the
    >= 8.5 one. Setting a shape outside the profile answers False, as TensorRT does."""

    def __init__(self, bindings, low=1, high=8, runs=True, profile=True):
        self.bindings, self.low, self.high, self.runs, self.profile = bindings, low, high, runs, profile
        self.names = ["input", "logits"]
        if bindings:
            self.num_bindings = 2
        else:
            self.num_io_tensors = 2

    def _shape(self, name, batch=-1):
        return (batch, 2, 4, 4, 3) if name == "input" else (batch, 5)

    def _profile(self):
        if not self.profile:
            raise RuntimeError("no profile")
        return [self._shape("input", b) for b in (self.low, self.high, self.high)]

    # TensorRT 8.2
    def get_binding_name(self, i):
        return self.names[i]

    def binding_is_input(self, i):
        return i == 0

    def get_binding_shape(self, i):
        return self._shape(self.names[i])

    def get_profile_shape(self, profile, binding):
        return self._profile()

    # TensorRT >= 8.5
    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return 0 if name == "input" else 1

    def get_tensor_shape(self, name):
        return self._shape(name)

    def get_tensor_profile_shape(self, name, profile):
        return self._profile()

    def create_execution_context(self):
        return _FakeContext(self)


class _FakeContext:
    def __init__(self, engine):
        self.engine, self.batch = engine, -1

    def _set(self, shape):
        if not self.engine.low <= shape[0] <= self.engine.high:
            return False
        self.batch = shape[0]
        return True

    def set_binding_shape(self, i, shape):
        return self._set(shape)

    def get_binding_shape(self, i):
        return self.engine._shape(self.engine.names[i], self.batch)

    def execute_v2(self, buffers):
        return self.engine.runs

    def set_input_shape(self, name, shape):
        return self._set(shape)

    def get_tensor_shape(self, name):
        return self.engine._shape(name, self.batch)

    def set_tensor_address(self, name, address):
        pass

    def execute_async_v3(self, stream):
        return self.engine.runs


def _fake_trt(engine):
    return fake_tensorrt(engine, "8.2.1.8" if engine.bindings else "8.6.1")


class _FakeCuda:
    def __init__(self):
        import ctypes

        self.pointer = ctypes.c_void_p(1)

    def malloc(self, nbytes):
        return self.pointer

    def free(self, pointer):
        pass

    def copy_to_device(self, pointer, array):
        pass

    def copy_to_host(self, array, pointer):
        pass

    def synchronize(self):
        pass


@pytest.fixture
def bench(common, monkeypatch):
    """trt_benchmark with libcudart replaced (this machine has no GPU)."""
    module = importlib.import_module("trt_benchmark")
    monkeypatch.setattr(common, "CudaRuntime", _FakeCuda)
    return module


@pytest.mark.parametrize("bindings", [True, False], ids=["trt8.2", "trt8.5+"])
def test_trt_benchmark_refuses_a_batch_outside_the_engine_profile(bench, common, tmp_path,
                                                                 bindings):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"an engine")
    trt = _fake_trt(_FakeEngine(bindings))
    results = bench.time_with_python_api(trt, str(engine), (1, 8), 0, 2)
    assert [r["batch_size"] for r in results] == [1, 8]
    with pytest.raises(common.Refused, match=r"^--batch-sizes: batch 16 is outside the "
                       r"optimisation profile of --engine .*, built for batch 1 to 8"):
        bench.time_with_python_api(trt, str(engine), (1, 16), 0, 2)
    # An engine whose profile cannot be read: TensorRT's own False is the answer.
    trt = _fake_trt(_FakeEngine(bindings, profile=False))
    with pytest.raises(common.Refused, match="TensorRT refused batch 16 .*optimisation profile"):
        bench.time_with_python_api(trt, str(engine), (16,), 0, 2)


@pytest.mark.parametrize("bindings", [True, False], ids=["trt8.2", "trt8.5+"])
def test_trt_benchmark_reports_a_failed_execution(bench, common, tmp_path, bindings):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"an engine")
    trt = _fake_trt(_FakeEngine(bindings, runs=False))
    call = "execute_v2" if bindings else "execute_async_v3"
    with pytest.raises(common.Failed, match=rf"failed to run --engine .* at batch 1 \({call} "
                       "returned False"):
        bench.time_with_python_api(trt, str(engine), (1,), 0, 2)


def _fake_tensorrt_package(folder):
    """A `tensorrt` that imports (the Python API backend is chosen) but loads no engine."""
    fake = folder / "fake_trt" / "tensorrt"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "__version__ = '8.2.1'\n"
        "class Logger:\n    WARNING = 2\n    def __init__(self, level):\n        pass\n"
        "class Runtime:\n    def __init__(self, logger):\n        pass\n"
        "    def deserialize_cuda_engine(self, data):\n        return None\n")
    return str(folder / "fake_trt")


@pytest.mark.parametrize("flag, value", [("--clip-shape", "16,112,112,3"), ("--input-name", "input"),
                                         ("--trtexec", "/usr/bin/true")])
def test_trt_benchmark_refuses_trtexec_flags_when_the_python_api_runs(tmp_path, flag, value):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"an engine")
    fake = _fake_tensorrt_package(tmp_path)
    run = _script("trt_benchmark.py", "--engine", str(engine), flag, value, PYTHONPATH=fake)
    _one_line(run, 2, f"{flag} is read by the trtexec backend only")
    run = _script("trt_benchmark.py", "--engine", str(engine), "--backend", "python", flag, value,
                  PYTHONPATH=fake)
    _one_line(run, 2, f"{flag} is read by the trtexec backend only")
    # Left out (defaults), they are no reason to refuse: the engine is loaded.
    run = _script("trt_benchmark.py", "--engine", str(engine), PYTHONPATH=fake)
    _one_line(run, 1, "could not load --engine")


# trtexec of TensorRT 8.2: the input binding it set up, then its timing summary. --shapes
# (batch x clip) is honoured for a dynamic engine, ignored for a static one; each call's
# arguments are appended to <trtexec>.calls.
_TRTEXEC_SUMMARY = ("echo '[I] GPU Compute Time: min = 2.9 ms, max = 3.8 ms, mean = 3.1 ms, "
                    "median = 4 ms, percentile(99%) = 3.7 ms'\n")
_TRTEXEC_DYNAMIC = ('dims=8x16x112x112x3\nfor a in "$@"; do case "$a" in --shapes=*) '
                    'dims="${a#*:}";; esac; done\necho "$@" >> "$0.calls"\n'
                    'echo "[I] Created input binding for input with dimensions $dims"\n'
                    + _TRTEXEC_SUMMARY)
_TRTEXEC_STATIC = ('echo "$@" >> "$0.calls"\n'
                   "echo '[I] Created input binding for input with dimensions 8x16x112x112x3'\n"
                   + _TRTEXEC_SUMMARY)


@pytest.mark.parametrize("given", [None, "1,8", "8,1"])
def test_trt_benchmark_reports_the_batch_trtexec_ran_on_a_static_engine(tmp_path, given):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"an engine")
    trtexec = _fake_trtexec(tmp_path, _TRTEXEC_STATIC)
    out = tmp_path / "r.json"
    args = ["--engine", str(engine), "--backend", "trtexec", "--trtexec", trtexec, "--json", str(out)]
    run = _script("trt_benchmark.py", *args, *(["--batch-sizes", given] if given else []))
    assert run.returncode == 0, run.stderr
    assert f"{engine} has a fixed batch of 8" in run.stdout
    results = json.loads(out.read_text())["results"]
    # Not a "batch 1" row timed at batch 8 (8x too few clips/s).
    assert [(r["batch_size"], r["clips_per_s"]) for r in results] == [(8, 2000.0)]


def test_trt_benchmark_trtexec_statistics_and_warmup(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"an engine")
    trtexec = _fake_trtexec(tmp_path, _TRTEXEC_DYNAMIC)
    out = tmp_path / "r.json"
    run = _script("trt_benchmark.py", "--engine", str(engine), "--backend", "trtexec",
                  "--trtexec", trtexec, "--warmup", "0", "--json", str(out))
    assert run.returncode == 0, run.stderr
    results = json.loads(out.read_text())["results"]
    assert [r["batch_size"] for r in results] == [1, 8]
    for r in results:  # trtexec's own min, mean and max, not the median again
        assert (r["min_ms"], r["mean_ms"], r["median_ms"], r["max_ms"]) == (2.9, 3.1, 4.0, 3.8)
    calls = open(trtexec + ".calls").read().splitlines()
    assert all("--warmUp=0 " in call for call in calls), calls  # no warm-up, as asked
    run = _script("trt_benchmark.py", "--engine", str(engine), "--backend", "trtexec",
                  "--trtexec", trtexec, "--warmup", "7", "--batch-sizes", "8")
    assert run.returncode == 0 and "--warmUp=70 " in run.stdout  # milliseconds: 7 x 10 ms


def test_trtexec_summary_parsing(common):
    bench = importlib.import_module("trt_benchmark")
    text = ("[I] Latency: min = 3.1 ms, max = 4.0 ms, mean = 3.3 ms, median = 3.25 ms\n"
            "[I] GPU Compute Time: min = 2.9 ms, max = 3.8 ms, mean = 3.1 ms, median = 3.05 ms, "
            "percentile(99%) = 3.7 ms\n")
    assert bench.parse_trtexec_times(text) == {"min": 2.9, "max": 3.8, "mean": 3.1, "median": 3.05}
    assert bench.parse_trtexec_times(text.splitlines()[0])["min"] == 3.1
    assert bench.parse_trtexec_times("[I] GPU Compute Time: median = 4 ms") == {
        "min": None, "max": None, "mean": None, "median": 4.0}


def test_trt_benchmark_trtexec_flags_its_mode_does_not_read(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"an engine")
    trtexec = _fake_trtexec(tmp_path, _TRTEXEC_STATIC)
    args = ["--engine", str(engine), "--backend", "trtexec", "--trtexec", trtexec]
    run = _script("trt_benchmark.py", *args, "--clip-shape", "none", "--input-name", "x")
    _one_line(run, 2, "--input-name is not read with --clip-shape none")
    run = _script("trt_benchmark.py", *args, "--clip-shape", "16,112")
    _one_line(run, 2, "--clip-shape must be frames,height,width,channels")


def test_trtexec_that_is_not_executable_is_refused_in_one_line(onnx_files, tmp_path):
    trtexec = tmp_path / "trtexec"
    trtexec.write_text("#!/bin/sh\n")
    trtexec.chmod(0o644)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"an engine")
    expected = f"--trtexec {trtexec} is not executable"
    run = _script("trt_build_engine.py", "--onnx", onnx_files["dynamic"], "--engine", str(engine),
                  "--trtexec", str(trtexec))
    _one_line(run, 2, expected)
    run = _script("trt_benchmark.py", "--engine", str(engine), "--backend", "trtexec",
                  "--trtexec", str(trtexec))
    _one_line(run, 2, expected)


def test_a_trtexec_named_but_not_there_is_refused_and_one_on_path_is_found(onnx_files, tmp_path,
                                                                           monkeypatch):
    """--trtexec of a missing file was "trtexec not found (pass --trtexec PATH)", exit 3; a
    bare name on PATH was not looked up."""
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"an engine")
    missing = str(tmp_path / "nowhere" / "trtexec")
    run = _script("trt_build_engine.py", "--onnx", onnx_files["dynamic"], "--engine", str(engine),
                  "--trtexec", missing)
    _one_line(run, 2, f"--trtexec {missing}: no such file")
    run = _script("trt_benchmark.py", "--engine", str(engine), "--backend", "trtexec",
                  "--trtexec", missing)
    _one_line(run, 2, f"--trtexec {missing}: no such file")
    run = _script("trt_build_engine.py", "--onnx", onnx_files["dynamic"], "--engine", str(engine),
                  "--trtexec", "no-such-trtexec")
    _one_line(run, 2, "--trtexec no-such-trtexec: no such file (and not on PATH)")
    folder = tmp_path / "bin"
    folder.mkdir()
    _fake_trtexec(folder, "exit 0\n")
    monkeypatch.syspath_prepend(TX2)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    assert importlib.import_module("tx2_common").find_trtexec("trtexec") == \
        str(folder / "trtexec")


def test_build_engine_says_trtexec_failed(onnx_files, tmp_path):
    trtexec = _fake_trtexec(tmp_path, "echo '[E] Error[4]: network validation failed'\nexit 3\n")
    engine = tmp_path / "m.engine"
    run = _script("trt_build_engine.py", "--onnx", onnx_files["dynamic"], "--engine", str(engine),
                  "--trtexec", trtexec)
    assert "[E] Error[4]" in run.stdout  # trtexec's own output, above the script's line
    _one_line(run, 1, f"trtexec failed (exit 3) building --engine {engine} from "
                      f"{onnx_files['dynamic']}; its output is above")
    ok = _fake_trtexec(tmp_path, "exit 0\n")
    run = _script("trt_build_engine.py", "--onnx", onnx_files["dynamic"], "--engine", str(engine),
                  "--trtexec", ok)
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_build_engine_copies_the_export_record_beside_the_engine(onnx_files, tmp_path):
    """trt_classify.py reads the clip, normalisation and class names from <engine>.json."""
    sidecar = {"input": {"frames": 4, "size": 32, "batch": "dynamic"}, "labels": ["a", "b"],
               "normalization": {"mean": [1, 2, 3], "std": [1, 1, 1], "value_range": "0-255",
                                 "channel_order": "BGR"}, "preprocessing_included": False}
    onnx = _copy_onnx(onnx_files, "dynamic", tmp_path, sidecar)
    engine = tmp_path / "m.engine"
    run = _script("trt_build_engine.py", "--onnx", onnx, "--engine", str(engine), "--precision",
                  "fp16", "--trtexec", _fake_trtexec(tmp_path, "exit 0\n"))
    assert run.returncode == 0, run.stderr
    assert f"wrote {engine}.json" in run.stdout
    record = json.loads((tmp_path / "m.engine.json").read_text())
    assert record == dict(sidecar, engine={"precision": "fp16", "onnx": "dynamic.onnx"})
    # none without a sidecar: an earlier build's record is removed, not left to stand for
    # another model's engine
    os.remove(onnx + ".json")
    run = _script("trt_build_engine.py", "--onnx", onnx, "--engine", str(engine), "--trtexec",
                  _fake_trtexec(tmp_path, "exit 0\n"))
    assert run.returncode == 0 and not os.path.exists(str(engine) + ".json"), run.stderr
    assert f"note: removed {engine}.json, the record of an earlier build: {onnx}.json has none" \
        in run.stderr


def test_trt_convert_keeps_the_export_record(common, tmp_path, monkeypatch, capsys):
    """TF-TRT writes a SavedModel of its own: the export's assets.extra record (clip,
    normalisation, class names) is copied into it, for trt_classify.py."""
    import types

    import keras
    import tensorflow as tf

    from keras_efficient3d.deploy.savedmodel import export_saved_model

    inputs = keras.Input((4, 16, 16, 3))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling3D()(inputs))
    source = export_saved_model(keras.Model(inputs, outputs), str(tmp_path / "sm"),
                                metadata={"input": {"frames": 4, "size": 16}, "labels": ["a", "b"]})
    convert = importlib.import_module("trt_convert")

    class Converter:  # TF-TRT's, without a GPU: the model saved again as it is
        def __init__(self, input_saved_model_dir, **kwargs):
            self.loaded = tf.saved_model.load(input_saved_model_dir)

        def convert(self):
            return None

        def build(self, input_fn):
            list(input_fn())

        def save(self, output):
            tf.saved_model.save(self.loaded, output, signatures=self.loaded.signatures)

    params = types.SimpleNamespace(_replace=lambda **kwargs: kwargs)
    trt = types.SimpleNamespace(TrtGraphConverterV2=Converter, DEFAULT_TRT_CONVERSION_PARAMS=params,
                                TrtPrecisionMode=types.SimpleNamespace(FP16="FP16"))
    monkeypatch.setattr(convert, "import_tftrt", lambda: (tf, trt))
    monkeypatch.setattr(convert, "gpu_capability", lambda tf: (6, 2))
    output = tmp_path / "tftrt"
    assert convert.main(["--saved-model", source, "--output", str(output), "--precision",
                         "FP16"]) == 0
    record = json.loads((output / "assets.extra" / "keras_efficient3d.json").read_text())
    assert record["labels"] == ["a", "b"] and record["input"]["frames"] == 4
    assert record["tftrt"] == {"precision": "FP16"}
    assert "TF-TRT FP16 SavedModel written to" in capsys.readouterr().out


@pytest.fixture
def no_onnx(tmp_path):
    """PYTHONPATH of a JetPack-like Python: `import onnx` fails."""
    folder = tmp_path / "no_onnx"
    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / "__init__.py").write_text("raise ImportError('JetPack has no onnx')\n")
    return str(folder)


def _copy_onnx(onnx_files, label, folder, sidecar=None):
    import shutil

    path = folder / f"{label}.onnx"
    shutil.copy(onnx_files[label], path)
    if sidecar is not None:
        (folder / f"{label}.onnx.json").write_text(
            sidecar if isinstance(sidecar, str) else json.dumps(sidecar))
    return str(path)


def test_build_engine_without_onnx_does_not_guess_the_batch(onnx_files, tmp_path, no_onnx):
    engine = str(tmp_path / "m.engine")
    fixed = _copy_onnx(onnx_files, "fixed", tmp_path)
    run = _script("trt_build_engine.py", "--onnx", fixed, "--engine", engine, "--dry-run",
                  PYTHONPATH=no_onnx)
    _one_line(run, 2, f"--onnx {fixed}: its batch is unknown without the onnx Python package")
    assert "--onnx-batch N for one exported with --batch_size N" in run.stderr
    assert "--clip-shape frames,height,width,channels" in run.stderr
    run = _script("trt_build_engine.py", "--onnx", fixed, "--engine", engine, "--dry-run",
                  "--onnx-batch", "8", PYTHONPATH=no_onnx)
    assert run.returncode == 0, run.stderr
    assert "Shapes" not in run.stdout and "has a fixed batch of 8" in run.stdout
    run = _script("trt_build_engine.py", "--onnx", fixed, "--engine", engine, "--dry-run",
                  "--onnx-batch", "dynamic", PYTHONPATH=no_onnx)
    _one_line(run, 2, f"--onnx {fixed}: its clip shape is unknown")
    run = _script("trt_build_engine.py", "--onnx", fixed, "--engine", engine, "--dry-run",
                  "--onnx-batch", "eight", PYTHONPATH=no_onnx)
    _one_line(run, 2, "--onnx-batch must be 'dynamic' or a positive batch size")


def test_build_engine_without_onnx_reads_the_sidecar(onnx_files, tmp_path, no_onnx):
    engine = str(tmp_path / "m.engine")
    sidecar = {"model": {"model": "mobilenetv2_0.2x", "num_classes": 8},
               "input": {"frames": 4, "size": 32, "layout": "NDHWC"}, "preprocessing_included": False}
    dynamic = _copy_onnx(onnx_files, "dynamic", tmp_path, sidecar)
    run = _script("trt_build_engine.py", "--onnx", dynamic, "--engine", engine, "--dry-run",
                  PYTHONPATH=no_onnx)
    _one_line(run, 2, f"its sidecar {dynamic}.json does not record it: pass --onnx-batch dynamic for")
    run = _script("trt_build_engine.py", "--onnx", dynamic, "--engine", engine, "--dry-run",
                  "--onnx-batch", "dynamic", PYTHONPATH=no_onnx)
    assert run.returncode == 0, run.stderr
    assert "--minShapes=input:1x4x32x32x3" in run.stdout and "--maxShapes=input:8x4x32x32x3" in run.stdout
    # A sidecar that records the batch settles it, for a fixed batch too.
    sidecar["input"]["batch"] = 8
    fixed = _copy_onnx(onnx_files, "fixed", tmp_path, sidecar)
    run = _script("trt_build_engine.py", "--onnx", fixed, "--engine", engine, "--dry-run",
                  "--batch-sizes", "8", PYTHONPATH=no_onnx)
    assert run.returncode == 0 and "Shapes" not in run.stdout, run.stderr
    run = _script("trt_build_engine.py", "--onnx", fixed, "--engine", engine, "--dry-run",
                  "--onnx-batch", "dynamic", PYTHONPATH=no_onnx)
    _one_line(run, 2, f"--onnx-batch dynamic does not match {fixed}.json, which records batch 8")
    # a sidecar that records the batch but no clip: said so, not "no sidecar"
    (tmp_path / "dynamic.onnx.json").write_text(json.dumps({"input": {"batch": "dynamic"}}))
    run = _script("trt_build_engine.py", "--onnx", dynamic, "--engine", engine, "--dry-run",
                  PYTHONPATH=no_onnx)
    _one_line(run, 2, f"no onnx package, and its sidecar {dynamic}.json records no clip")
    # the engine written over the model it is built from
    run = _script("trt_build_engine.py", "--onnx", dynamic, "--engine", dynamic, "--dry-run",
                  PYTHONPATH=no_onnx)
    _one_line(run, 2, f"--engine {dynamic} is the --onnx file")
    (tmp_path / "fixed.onnx.json").write_text("{not json")
    run = _script("trt_build_engine.py", "--onnx", fixed, "--engine", engine, "--dry-run",
                  PYTHONPATH=no_onnx)
    _one_line(run, 2, f"{fixed}.json (the sidecar of --onnx) is not readable JSON")


def test_build_engine_checks_the_stated_batch_and_clip_against_the_file(onnx_files):
    args = ["--engine", "e", "--dry-run"]
    run = _script("trt_build_engine.py", "--onnx", onnx_files["dynamic"], *args, "--onnx-batch", "8")
    _one_line(run, 2, f"--onnx-batch 8 does not match --onnx {onnx_files['dynamic']}, whose batch "
                      "is dynamic (input ?x16x112x112x3)")
    run = _script("trt_build_engine.py", "--onnx", onnx_files["fixed"], *args, "--onnx-batch", "8")
    assert run.returncode == 0, run.stderr
    run = _script("trt_build_engine.py", "--onnx", onnx_files["dynamic"], *args,
                  "--clip-shape", "16,64,64,3")
    _one_line(run, 2, "--clip-shape 16,64,64,3 does not match")
    run = _script("trt_build_engine.py", "--onnx", onnx_files["dynamic"], *args, "--input-name", "x")
    _one_line(run, 2, "--input-name x does not match")


@pytest.mark.parametrize("flag, value", [("--clip-shape", "16,112,112,3"), ("--input-name", "input")])
def test_build_engine_refuses_shape_flags_for_a_fixed_batch_file(onnx_files, flag, value):
    run = _script("trt_build_engine.py", "--onnx", onnx_files["fixed"], "--engine", "e",
                  "--dry-run", flag, value)
    _one_line(run, 2, f"{flag} is not read for a fixed-batch ONNX file")


def _quantized_onnx(path, zero_type, zero_value, constant=False):
    """Input -> QuantizeLinear -> DequantizeLinear, zero point of `zero_type` = `zero_value`,
    as an initializer or a Constant node."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4, 8, 8, 3])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4, 8, 8, 3])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1])
    zero = helper.make_tensor("zero", zero_type, [], [zero_value])
    nodes = [helper.make_node("QuantizeLinear", ["input", "scale", "zero"], ["q"], name="act/q"),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["logits"], name="act/dq")]
    initializers = [scale]
    if constant:
        nodes.insert(0, helper.make_node("Constant", [], ["zero"], value=zero))
    else:
        initializers.append(zero)
    graph = helper.make_graph(nodes, "qdq", [x], [y], initializer=initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


@pytest.mark.parametrize("zero_type, zero_value, constant, why", [
    (TensorProto.UINT8, 0, False, "a UINT8 zero point"),
    (TensorProto.UINT8, 128, True, "a UINT8 zero point"),
    (TensorProto.INT8, 3, False, "a nonzero zero point"),
    (TensorProto.INT8, -2, True, "a nonzero zero point"),
])
def test_build_engine_refuses_asymmetric_quantization(tmp_path, zero_type, zero_value, constant,
                                                      why):
    path = _quantized_onnx(tmp_path / "qat.onnx", zero_type, zero_value, constant)
    run = _script("trt_build_engine.py", "--onnx", path, "--engine", "e", "--dry-run")
    _one_line(run, 2, f"--onnx {path}: QuantizeLinear act/q has {why}")
    assert "symmetric INT8" in run.stderr


def test_build_engine_takes_symmetric_quantization(tmp_path):
    path = _quantized_onnx(tmp_path / "qdq.onnx", TensorProto.INT8, 0)
    run = _script("trt_build_engine.py", "--onnx", path, "--engine", "e", "--dry-run",
                  "--precision", "int8", "--compute-capability", "8.7")
    assert run.returncode == 0 and "--minShapes=input:1x4x8x8x3" in run.stdout, run.stderr


def test_the_docs_do_not_promise_int8_engines_from_qat_exports():
    readme = open(os.path.join(TX2, "README.md"), encoding="utf-8").read()
    build = open(os.path.join(TX2, "trt_build_engine.py"), encoding="utf-8").read()
    assert "with a QAT export" not in build and "TensorRT uses its ranges" not in build
    assert "(INT8 engines, not on the\nTX2)" not in readme
    for text in (readme, build):
        assert "asymmetric" in text and "symmetric INT8" in text and "calibration" in text


def _calibration_args(tmp_path):
    saved_model = tmp_path / "sm"
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"")
    return ["--saved-model", str(saved_model), "--output", str(tmp_path / "o")]


def test_trt_convert_refuses_calibration_files_that_are_not_float_clips(tmp_path):
    import numpy as np

    args = _calibration_args(tmp_path) + ["--precision", "INT8", "--compute-capability", "7.2"]
    npz = str(tmp_path / "c.npz")
    np.savez(npz, clips=np.zeros((1, 2, 4, 4, 3), np.float32))
    run = _script("trt_convert.py", *args, "--calibration-npy", npz)
    _one_line(run, 2, f"--calibration-npy {npz}: an .npz archive; expected float clips shaped "
                      "(N, frames, height, width, 3)")
    strings = str(tmp_path / "s.npy")
    np.save(strings, np.full((1, 2, 4, 4, 3), "a"))
    run = _script("trt_convert.py", *args, "--calibration-npy", strings)
    _one_line(run, 2, f"--calibration-npy {strings}: expected float clips")
    assert "Received: dtype <U1" in run.stderr
    gray = str(tmp_path / "g.npy")
    np.save(gray, np.zeros((1, 2, 4, 4, 1), np.float32))
    run = _script("trt_convert.py", *args, "--calibration-npy", gray)
    _one_line(run, 2, "Received: (1, 2, 4, 4, 1)")


@pytest.mark.parametrize("precision", ["FP16", "FP32"])
def test_trt_convert_refuses_calibration_clips_it_would_not_read(tmp_path, precision):
    run = _script("trt_convert.py", *_calibration_args(tmp_path), "--precision", precision,
                  "--calibration-npy", str(tmp_path / "c.npy"))
    _one_line(run, 2, f"--calibration-npy is read for --precision INT8 only (TF-TRT calibrates "
                      f"INT8 ranges; {precision} needs none)")


def test_readme_export_commands_make_their_folder_first():
    readme = open(os.path.join(TX2, "README.md"), encoding="utf-8").read()
    step = readme[readme.index("### 1. On the workstation"):readme.index("### 2.")]
    assert 0 <= step.find("mkdir -p exports") < step.find("--output exports/")


@pytest.mark.parametrize("batch_size", [None, 2])
def test_build_engine_without_onnx_takes_the_batch_an_export_records(tmp_path, no_onnx, batch_size):
    """export.py's ONNX sidecar records the batch axis: on a Jetson (no onnx package) the
    engine build needs no --onnx-batch."""
    from keras_efficient3d.deploy.onnx_export import build_and_export_onnx

    path = str(tmp_path / "m.onnx")
    report = build_and_export_onnx(path, model_name="mobilenetv2_0.2x", num_frames=4,
                                   image_size=32, num_classes=3, batch_size=batch_size)
    assert json.loads(open(report["sidecar"]).read())["input"]["batch"] == (batch_size or "dynamic")
    run = _script("trt_build_engine.py", "--onnx", path, "--engine", str(tmp_path / "m.engine"),
                  "--dry-run", "--batch-sizes", "1,2", PYTHONPATH=no_onnx)
    assert run.returncode == 0, run.stderr
    if batch_size is None:
        assert "--minShapes=input:1x4x32x32x3" in run.stdout
        assert "--maxShapes=input:2x4x32x32x3" in run.stdout
    else:
        assert "Shapes" not in run.stdout and "has a fixed batch of 2" in run.stdout


@pytest.mark.parametrize("board, capability", [
    ("NVIDIA Jetson Orin Nano Developer Kit", (8, 7)),  # an Orin, not the first Nano
    ("NVIDIA Jetson Xavier NX Developer Kit", (7, 2)),
    ("NVIDIA Jetson Nano Developer Kit", (5, 3)),
    ("NVIDIA Jetson TX2", (6, 2)),
    ("quill", (6, 2)),
])
def test_the_board_names_its_compute_capability(common, monkeypatch, board, capability):
    monkeypatch.setattr(common, "jetson_model", lambda: board)
    assert common.compute_capability_from_board() == capability


@pytest.mark.parametrize("fast, board, expected", [
    (True, "NVIDIA Jetson Nano Developer Kit", None),  # TensorRT knows better than the table
    (True, "NVIDIA Jetson Xavier NX", (7, 2)),
    (False, "a board of the future", (6, 2)),
    (False, "NVIDIA Jetson TX2", (6, 2)),
])
def test_int8_goes_by_what_tensorrt_says_of_the_gpu(common, monkeypatch, fast, board, expected):
    import types

    build = importlib.import_module("trt_build_engine")
    builder = types.SimpleNamespace(platform_has_fast_int8=fast)

    class Logger:
        ERROR = 0

        def __init__(self, level):
            pass

    fake = types.SimpleNamespace(Builder=lambda logger: builder, Logger=Logger)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(common, "jetson_model", lambda: board)
    monkeypatch.setattr(common, "compute_capability_from_nvidia_smi", lambda: None)
    assert build.device_capability(None) == expected
    assert build.device_capability((6, 2)) == (6, 2)  # --compute-capability says


_TRTEXEC_82_FAILURE = (
    "&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # trtexec --loadEngine=m.engine\n"
    "[12/07/2026-20:00:00] [I] === Model Options ===\n"
    "[12/07/2026-20:00:00] [E] Error[3]: [executionContext.cpp::setBindingDimensions::969] "
    "input dimensions 1x16x64x64x3 outside the profile\n"
    "[12/07/2026-20:00:00] [E] Inference set up failed\n"
    "&&&& FAILED TensorRT.trtexec [TensorRT v8201] # trtexec --loadEngine=m.engine\n")


def test_a_failed_trtexec_is_said_by_its_last_error_not_its_closing_line(common, tmp_path):
    """TensorRT 8.2's trtexec ends every failure with "&&&& FAILED ... # <its command>": the
    reason is in its [E] lines above it."""
    assert common.trtexec_error(_TRTEXEC_82_FAILURE) == "[E] Inference set up failed"
    assert common.trtexec_error("&&&& FAILED TensorRT.trtexec\n") == "no output"
    assert common.trtexec_error("[I] something\nlast words\n") == "last words"
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"an engine")
    # the error names a path with a byte that is no UTF-8 (a Latin-1 name): it was a
    # UnicodeDecodeError traceback
    body = "printf '%s' '{}'\nprintf '[E] cannot open \\377.engine\\n&&&& FAILED\\n'\nexit 1\n".format(
        _TRTEXEC_82_FAILURE.replace("'", ""))
    trtexec = _fake_trtexec(tmp_path, body)
    run = _script("trt_benchmark.py", "--engine", str(engine), "--backend", "trtexec",
                  "--trtexec", trtexec)
    _one_line(run, 1, "trtexec failed (exit 1): [E] cannot open \ufffd.engine")


def test_int8_on_a_gpu_without_it_is_refused_before_the_clips_are_asked_for(saved_model_dir,
                                                                            tmp_path):
    run = _script("trt_convert.py", "--saved-model", saved_model_dir, "--output",
                  str(tmp_path / "o"), "--precision", "INT8", "--compute-capability", "6.2")
    _one_line(run, 2, "is sm_62, where TensorRT has no INT8 kernels")


@pytest.mark.parametrize("script, args", [
    ("trt_convert.py", ["--saved-model", "SM", "--output", "OUT", "--precision", "FP16"]),
    ("trt_build_engine.py", ["--onnx", "ONNX", "--engine", "E", "--precision", "fp16",
                             "--dry-run"]),
])
def test_compute_capability_is_refused_where_no_int8_check_reads_it(saved_model_dir,
                                                                    onnx_files, tmp_path,
                                                                    script, args):
    """`--compute-capability banana` beside fp16 ran without a word: the tx2 README says a
    flag the chosen mode does not read is refused."""
    args = [{"SM": saved_model_dir, "OUT": str(tmp_path / "o"), "ONNX": onnx_files["dynamic"],
             "E": str(tmp_path / "e.engine")}.get(a, a) for a in args]
    run = _script(script, *args, "--compute-capability", "banana")
    _one_line(run, 2, "--compute-capability is read for --precision")


def test_int8_engine_says_its_scales_are_placeholders(onnx_files, tmp_path):
    run = _script("trt_build_engine.py", "--onnx", onnx_files["fixed"], "--engine",
                  str(tmp_path / "e.engine"), "--precision", "int8", "--compute-capability",
                  "8.7", "--dry-run")
    assert run.returncode == 0, run.stderr
    assert "note: --precision int8 builds with trtexec's placeholder scales" in run.stdout
    assert "outputs mean nothing" in run.stdout and "--calibration-npy" in run.stdout


@pytest.mark.parametrize("content, said", [
    (b'{"input": {"frames": 16}}', "JSON (an export's sidecar?)"),
    (b"\x1c\x00\x00\x00TFL3\x00\x00", "a TFLite model"),
    (b"PK\x03\x04rest", "a zip archive"),
    (b'<?xml version="1.0"?>', "XML (an OpenVINO IR?)"),
])
def test_build_engine_without_onnx_refuses_another_format(tmp_path, no_onnx, content, said):
    """JetPack has no onnx package: a sidecar or a .tflite given as --onnx was told to pass
    --onnx-batch, after which trtexec failed on it."""
    path = tmp_path / "m.onnx.json"
    path.write_bytes(content)
    run = _script("trt_build_engine.py", "--onnx", str(path), "--engine",
                  str(tmp_path / "e.engine"), "--dry-run", PYTHONPATH=no_onnx)
    _one_line(run, 2, f"--onnx {path}: not an ONNX model ({said}")


def test_the_converted_graphs_engines_are_counted(monkeypatch):
    """TF-TRT that converts nothing (no TRTEngineOp) still writes a SavedModel: the script
    says so instead of "engines for batch 1,8"."""
    from tensorflow.core.framework import graph_pb2

    monkeypatch.syspath_prepend(TX2)
    convert = importlib.import_module("trt_convert")
    graph = graph_pb2.GraphDef()
    graph.node.add(name="x", op="Placeholder")
    assert convert.engine_count(graph) == 0
    function = graph.library.function.add()
    function.node_def.add(name="TRTEngineOp_000_000", op="TRTEngineOp")
    function.node_def.add(name="TRTEngineOp_000_001", op="TRTEngineOp")
    graph.node.add(name="TRTEngineOp_001", op="TRTEngineOp")
    assert convert.engine_count(graph) == 3
