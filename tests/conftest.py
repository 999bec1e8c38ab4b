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
