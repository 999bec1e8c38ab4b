import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
