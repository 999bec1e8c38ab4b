import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# An automated run, as OpenVINO's and NNCF's telemetry read it: off. Left on, each conversion
# or quantization sends its events from processes forked from this one (with TensorFlow
# loaded, ~0.1 CPU-s each, about 100 for one small export), each waited for until it fails
# offline: three OpenVINO tests took 16 s of system time against 5.
os.environ.setdefault("CI", "true")

# Imported before TensorFlow, as users import it: it switches TensorFlow's oneDNN kernels on.
import pathlib

import pytest

import keras_efficient3d  # noqa: E402,F401

# The files of the most CPU time first (a fresh clone's timed run, CPU-minutes 2.5 to 1.2), the
# others after them in their own order: test.sh's two workers take whole files in this order
# (pytest-xdist's --dist loadfile with --no-loadscope-reorder; its own order puts the files of
# most tests first, and the multi-worker file, one test of two minutes, ran alone at the end).
_LONGEST_FIRST = [
    "test_multiworker.py", "test_training.py", "test_models.py", "deploy/test_benchmarks.py",
    "deploy/test_openvino.py", "deploy/test_tflite.py", "test_cli.py", "deploy/test_packed.py",
    "test_convert.py", "predict/test_predict_command.py", "deploy/test_onnx_native.py",
    "test_backends.py", "deploy/test_onnx_export.py", "deploy/test_tx2_scripts.py",
]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    tests = pathlib.Path(__file__).resolve().parent
    position = {}
    for item in items:
        path = item.path
        if path not in position:
            try:
                position[path] = rank.get(path.relative_to(tests).as_posix(), len(rank))
            except ValueError:  # a test file outside tests/
                position[path] = len(rank)
    items.sort(key=lambda item: position[item.path])  # stable: each file's own order kept


# Written by the original PyTorch code; shipped with the repository (see its README.md).
REFERENCE = pathlib.Path(__file__).resolve().parent / "fixtures" / "reference"


@pytest.fixture(scope="session")
def reference_dir():
    if not REFERENCE.is_dir():
        pytest.fail(f"The tests' reference material is missing: {REFERENCE}")
    return REFERENCE


@pytest.fixture(scope="session")
def tiny():
    """A tiny 3D CNN (`helpers.tiny_model`), shared by the runtime and prediction tests."""
    from helpers import TINY_CLASSES, TINY_FRAMES, TINY_SIZE, tiny_model

    return tiny_model(TINY_FRAMES, TINY_SIZE, TINY_CLASSES)


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory, tiny):
    """The tiny model as .keras (metadata inside), fp32 and int8 .tflite and .onnx (sidecars)."""
    from helpers import write_tiny_model_files

    return write_tiny_model_files(tmp_path_factory.mktemp("tiny_models"), tiny)
