"""Importing the package: TensorFlow's oneDNN kernels on by default, quietly, overridable."""

import os
import subprocess
import sys

import pytest

PROBE = (
    "import os, keras_efficient3d\n"
    "from tensorflow.python.util import _pywrap_util_port as port\n"
    "print(port.IsMklEnabled(), 'TF_ENABLE_ONEDNN_OPTS' in os.environ)\n"
)


def _probe(**env):
    base = {k: v for k, v in os.environ.items()
            if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env={**base, **env}, timeout=300)


@pytest.mark.parametrize("setting,expected", [(None, "True False"), ("0", "False True")])
def test_import_enables_onednn_unless_the_user_decided(setting, expected):
    run = _probe(**({} if setting is None else {"TF_ENABLE_ONEDNN_OPTS": setting}))
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-2:] == expected.split()
    # TensorFlow's oneDNN notice would precede every CLI's one-line error message.
    assert "oneDNN" not in run.stderr and "InitializeLog" not in run.stderr, run.stderr
