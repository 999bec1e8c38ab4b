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

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TX2 = os.path.join(ROOT, "deployment", "tx2")
SCRIPTS = sorted(glob.glob(os.path.join(TX2, "*.py")))
STDLIB_OK = {"argparse", "ctypes", "glob", "json", "os", "re", "shutil", "statistics",
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
    run = _script("trt_build_engine.py", "--onnx", onnx_files["dynamic"], "--engine", "e",
                  "--trtexec", "/nonexistent/trtexec")
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
    run = _script("trt_benchmark.py", "--engine", str(engine), "--trtexec", "/nonexistent/trtexec")
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


@pytest.mark.parametrize("name", ["trt_convert.py", "tftrt_benchmark.py"])
def test_tensorflow_scripts_turn_onednn_off_before_importing_it(name):
    """oneDNN prints its notice whatever the log level and rewrites graphs TF-TRT then
    sees; the variable only counts when set before TensorFlow is imported."""
    with open(os.path.join(TX2, name)) as handle:
        source = handle.read()
    setting = source.find('os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")')
    assert 0 < setting < source.find("import tensorflow as tf")


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
    fake = tmp_path / "fake" / "tensorrt"
    fake.mkdir(parents=True)
    # TensorRT's Runtime answers None, not an exception, for bytes it cannot deserialize.
    (fake / "__init__.py").write_text(
        "__version__ = '8.2.1'\n"
        "class Logger:\n    WARNING = 2\n    def __init__(self, level):\n        pass\n"
        "class Runtime:\n    def __init__(self, logger):\n        pass\n"
        "    def deserialize_cuda_engine(self, data):\n        return None\n")
    run = _script("trt_benchmark.py", "--engine", str(engine), "--backend", "python",
                  PYTHONPATH=str(tmp_path / "fake"))
    _one_line(run, 1, f"TensorRT 8.2.1 could not load --engine {engine}")


def test_trt_benchmark_reports_a_failed_cuda_call_as_a_failure(common):
    bench = importlib.import_module("trt_benchmark")
    with pytest.raises(common.Failed, match="cudaMalloc failed with CUDA error 2"):
        bench.CudaRuntime._check(2, "cudaMalloc")


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
    _one_line(run, 2, "expected clips shaped (N, frames, height, width, 3), N >= 1. Received: (2, 3)")
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
