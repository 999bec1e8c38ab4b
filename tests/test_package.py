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


def test_ffmpegs_own_lines_about_a_bad_video_stay_off_the_screen(tmp_path):
    """OpenCV's FFmpeg prints "moov atom not found" for a truncated mp4 unless told not to;
    after importing the package it does not (the decoders' one-line error says it instead)."""
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64))
    base = {k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"}

    def opened(first):
        code = f"{first}import cv2\nprint(cv2.VideoCapture({str(bad)!r}).isOpened())\n"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=base, timeout=300)

    plain, ours = opened(""), opened("import keras_efficient3d\n")
    assert plain.stdout.strip() == ours.stdout.strip() == "False"
    assert "moov atom not found" in plain.stderr  # the test can see the noise
    assert "moov atom" not in ours.stderr and "@ 0x" not in ours.stderr, ours.stderr


def _imported(run):
    """The modules a `python -X importtime` run imported (a skipped import is one line of its
    own name, with none of its submodules)."""
    return {line.rsplit("|", 1)[1].strip() for line in run.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_programs_start_without_the_optional_imports_they_never_use(backend):
    """TensorFlow's and Keras' imports pulled in JAX, scikit-learn and pyplot (1.9 s of a
    program's 5.4): the project's programs import them without; other programs keep them."""
    import importlib.util

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (`pip install -e '.[dev]'` installs it)")
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "keras_efficient3d.predict",
                          "--help"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "KERAS_BACKEND": backend})
    assert run.returncode == 0, run.stderr[-2000:]
    modules = _imported(run)
    assert {backend, "keras.src.wrappers.sklearn_wrapper"} <= modules
    for package in ("jax", "sklearn", "matplotlib"):  # skipped: "matplotlib.pyplot" at most
        loaded = sorted(m for m in modules if m.startswith(package + "."))
        assert len(loaded) <= 1, loaded[:10]
    # This process is not one of the programs: Keras' scikit-learn wrappers work in it.
    from keras.src.wrappers import sklearn_wrapper
    assert (sklearn_wrapper.sklearn is not None) == \
        (importlib.util.find_spec("sklearn") is not None)


def test_unused_imports_are_skipped_for_their_importers_only(tmp_path, monkeypatch):
    import importlib

    import keras_efficient3d as package

    (tmp_path / "ke3d_optional.py").write_text("VALUE = 1\n")
    (tmp_path / "ke3d_lenient.py").write_text(
        "try:\n    import ke3d_optional\nexcept ImportError:\n    ke3d_optional = None\n")
    (tmp_path / "ke3d_strict.py").write_text("import ke3d_optional\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(package, "_UNUSED_IMPORTS", {"ke3d_optional": ("ke3d_lenient",)})
    monkeypatch.setattr(sys, "meta_path", [package._SkipUnusedImports, *sys.meta_path])
    for name in ("ke3d_optional", "ke3d_lenient", "ke3d_strict"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert importlib.import_module("ke3d_lenient").ke3d_optional is None
    assert "ke3d_optional" not in sys.modules  # nothing half-imported left behind
    assert importlib.import_module("ke3d_strict").ke3d_optional.VALUE == 1


# ---------------------------------------------------------------------------------------
# The library never imports its applications: imports read from the source with `ast`
# (function-level imports included), so that a lazy import cannot hide a wrong direction.

import ast  # noqa: E402
import pathlib  # noqa: E402

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_efficient3d"


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source, package):
    """Absolute names of the modules `source`, a file of `package`, imports anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _package_imports():
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        graph[module] = imported_modules(path.read_text(encoding="utf-8"), package)
    return graph


def _reaches(names, target):
    return any(name == target or name.startswith(target + ".") for name in names)


def _is_in(module, package):
    return module == package or module.startswith(package + ".")


RULES = [
    # (importer, forbidden import): the arrows point downward only.
    ("keras_efficient3d.trainer", "keras_efficient3d.convert"),
    ("keras_efficient3d.trainer", "keras_efficient3d.predict"),
    ("keras_efficient3d.deploy", "keras_efficient3d.trainer"),
    ("keras_efficient3d.deploy", "keras_efficient3d.predict"),
    ("keras_efficient3d.runtime", "keras_efficient3d.predict"),
    ("keras_efficient3d.runtime", "keras_efficient3d.deploy"),
    ("keras_efficient3d.runtime", "keras_efficient3d.trainer"),
    ("keras_efficient3d.artifacts", "keras_efficient3d.convert"),
    ("keras_efficient3d.artifacts", "keras_efficient3d.predict"),
    ("keras_efficient3d.evaluation", "keras_efficient3d.predict"),
]


def test_import_rules_are_checked_on_real_imports():
    source = "import os\nfrom keras_efficient3d import convert\ndef f():\n    from . import demo\n"
    names = imported_modules(source, "keras_efficient3d")
    assert _reaches(names, "keras_efficient3d.convert") and _reaches(names, "keras_efficient3d.demo")
    assert not _reaches(imported_modules("import os", "keras_efficient3d"), "keras_efficient3d")
    assert imported_modules("from ..runtime import load_runner", "keras_efficient3d.predict") == {
        "keras_efficient3d.runtime", "keras_efficient3d.runtime.load_runner"}
    graph = _package_imports()
    assert {"keras_efficient3d.trainer", "keras_efficient3d.runtime", "keras_efficient3d.artifacts",
            "keras_efficient3d.demo", "keras_efficient3d.demo.pipeline",
            "keras_efficient3d.predict.command", "keras_efficient3d.deploy.tflite"} <= set(graph)


@pytest.mark.parametrize("importer,forbidden", RULES)
def test_library_imports_point_downward(importer, forbidden):
    offenders = [module for module, names in _package_imports().items()
                 if _is_in(module, importer) and _reaches(names, forbidden)]
    assert offenders == [], f"{offenders} import {forbidden}"


def test_nothing_but_the_demo_imports_the_demo_and_only_applications_import_predict():
    graph = _package_imports()
    demo_users = [m for m, names in graph.items()
                  if not _is_in(m, "keras_efficient3d.demo") and _reaches(names, "keras_efficient3d.demo")]
    assert demo_users == []
    predict_users = [m for m, names in graph.items()
                     if not _is_in(m, "keras_efficient3d.predict") and not _is_in(m, "keras_efficient3d.demo")
                     and _reaches(names, "keras_efficient3d.predict")]
    assert predict_users == []


def test_the_files_test_sh_hands_out_first_exist():
    """tests/conftest.py orders the files for test.sh's workers by name: a file renamed or
    moved would silently fall back to the end of the order."""
    import importlib.util

    tests = pathlib.Path(__file__).resolve().parent
    # by its path: under pytest-xdist, `import conftest` may give a subfolder's conftest.py
    spec = importlib.util.spec_from_file_location("tests_conftest", tests / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    order = conftest._LONGEST_FIRST
    assert [name for name in order if not (tests / name).is_file()] == []
    assert len(set(order)) == len(order)
