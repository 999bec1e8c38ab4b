"""The Keras timing script and the PyTorch-reference plumbing of every timing table."""

import importlib
import json
import os
import subprocess
import sys

import pytest

from keras_efficient3d.deploy.benchmark import format_table, load_reference

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script_module(name):
    sys.path.insert(0, os.path.join(ROOT, "deployment"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def _pytorch_rows(threads=2, clip="4x32x32"):
    row = {"model": "mobilenetv2_0.2x", "form": "pytorch", "mode": "inference", "batch_size": 1,
           "threads": threads, "input": clip, "median_ms": 30.0}
    return [row, dict(row, mode="train", batch_size=2, median_ms=400.0),
            dict(row, threads=threads + 1, median_ms=55.0),
            dict(row, input="16x112x112", median_ms=90.0)]


def test_keras_benchmark_times_inference_and_fit_steps():
    bench = _script_module("benchmark")
    kwargs = dict(frames=4, size=32, num_classes=5, threads=0, warmup=1, runs=3, log=None)
    rows = bench.run(["mobilenetv2_0.2x"], "inference", (1, 2), **kwargs)
    assert [(r["form"], r["batch_size"]) for r in rows] == [
        ("keras", 1), ("keras", 2), ("keras-folded", 1), ("keras-folded", 2)]
    assert all(r["median_ms"] > 0 and r["input"] == "4x32x32" for r in rows)
    train = bench.run(["mobilenetv2_0.2x"], "train", (2,), **kwargs)
    assert [(r["form"], r["mode"]) for r in train] == [("keras-fit", "train")]
    assert train[0]["clips_per_s"] == pytest.approx(2000 / train[0]["median_ms"])

    bench.add_reference(rows + train, _pytorch_rows(threads=0))
    # Only rows of the same mode, batch, thread count and clip size get a reference.
    assert rows[0]["speedup"] == pytest.approx(30.0 / rows[0]["median_ms"])
    assert "pytorch_ms" not in rows[1] and train[0]["pytorch_ms"] == 400.0
    table = bench.format_table(rows + train)
    assert "speed-up" in table and f"{rows[0]['speedup']:.2f}x" in table


@pytest.mark.parametrize("content,expected", [
    ([{"model": "x"}], "row 0: expected a benchmark_pytorch.py row"),
    ([dict(_pytorch_rows()[0], median_ms="30")], "row 0: expected"),
    ([dict(_pytorch_rows()[0], model=["a"])], "row 0: expected"),
    ([dict(_pytorch_rows()[0], form="keras")], "row 0: expected"),
    ({"rows": []}, "is not a list of benchmark_pytorch.py rows"),
])
def test_keras_benchmark_cli_rejects_a_bad_reference_file_before_timing(tmp_path, content,
                                                                        expected):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(content))
    run = subprocess.run([sys.executable, os.path.join(ROOT, "deployment", "benchmark.py"),
                          "--models=mobilenetv2_0.2x", f"--pytorch_json={bad}"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert expected in run.stderr and str(bad) in run.stderr
    assert "Traceback" not in run.stderr and "batch  1" not in run.stderr  # nothing timed


def test_tflite_tables_take_the_reference_of_the_same_threads(tmp_path):
    path = tmp_path / "pytorch.json"
    path.write_text(json.dumps(_pytorch_rows()))
    assert load_reference(str(path), input_shape=(4, 32, 32, 3)) == {"mobilenetv2_0.2x": 30.0}
    assert load_reference(str(path), input_shape=(16, 112, 112)) == {"mobilenetv2_0.2x": 90.0}
    assert load_reference(str(path), threads=3) == {"mobilenetv2_0.2x": 55.0}
    rows = [{"model": "mobilenetv2_0.2x", "precision": "int8", "threads": 2, "median_ms": 5.0,
             "clips_per_s": 200.0, "size_bytes": 10 ** 6, "pytorch_ms": 30.0}]
    assert "| 30.0 | 6.00x |" in format_table(rows)
    with pytest.raises(ValueError, match="Cannot read"):
        load_reference(str(tmp_path / "missing.json"))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a list of benchmark_pytorch.py rows"):
        load_reference(str(path))


@pytest.mark.parametrize("name,expected", [
    ("mobilenetv2_0.45x", ("mobilenetv2", {"width_mult": 0.45})),
    ("mobilenet_1.0x", ("mobilenet", {"width_mult": 1.0})),
    ("shufflenet_1.5x_g3", ("shufflenet", {"width_mult": 1.5, "groups": 3})),
    ("shufflenetv2_0.25x", ("shufflenetv2", {"width_mult": 0.25})),
    ("squeezenet_1.1", ("squeezenet", {"version": 1.1})),
    ("resnet18_A", ("resnet", {"model_depth": 18, "resnet_shortcut": "A"})),
    ("resnext101_B", ("resnext", {"model_depth": 101, "resnet_shortcut": "B"})),
    ("c3d", ("c3d", {})),
])
def test_pytorch_benchmark_maps_our_names_to_the_originals_builders(name, expected):
    assert _script_module("benchmark_pytorch").parse_name(name) == expected


def _fake_original(root):
    """A stand-in for the original's checkout: its opts.py options and a generate_model that
    returns the options it was given."""
    (root / "models").mkdir()
    for name in ("mobilenetv2", "shufflenet"):
        (root / "models" / f"{name}.py").write_text("")
    (root / "opts.py").write_text(
        "import argparse\n"
        "def parse_opts():\n"
        "    p = argparse.ArgumentParser()\n"
        "    for name, default in [('model', 'resnet'), ('n_classes', 400), ('sample_size', 112),\n"
        "                          ('sample_duration', 16), ('width_mult', 1.0), ('groups', 3)]:\n"
        "        p.add_argument('--' + name, default=default, type=type(default))\n"
        "    p.add_argument('--no_cuda', action='store_true')\n"
        "    return p.parse_args()\n")
    (root / "model.py").write_text("def generate_model(opt):\n    return opt, None\n")
    return str(root)


def test_pytorch_benchmark_builds_through_the_originals_options(tmp_path, monkeypatch):
    script = _script_module("benchmark_pytorch")
    monkeypatch.setattr(sys, "path", list(sys.path))
    argv = list(sys.argv)
    try:
        opt = script.build(_fake_original(tmp_path), "shufflenet_1.5x", 27, 32, 224)
    finally:
        for name in ("opts", "model"):
            sys.modules.pop(name, None)
    assert sys.argv == argv
    assert (opt.model, opt.width_mult, opt.groups, opt.no_cuda) == ("shufflenet", 1.5, 3, True)
    assert (opt.n_classes, opt.sample_duration, opt.sample_size) == (27, 32, 224)


def test_pytorch_benchmark_rejects_unknown_names(tmp_path):
    script = _script_module("benchmark_pytorch")
    with pytest.raises(ValueError, match="Unknown configuration 'mobilenet v3'"):
        script.parse_name("mobilenet v3")
    with pytest.raises(ValueError, match="Unknown configuration 'mobilenetv3_1.0x'"):
        script.build(_fake_original(tmp_path), "mobilenetv3_1.0x", 600, 16, 112)


def test_pytorch_benchmark_runs_without_tensorflow_or_the_package():
    """benchmark_pytorch.py runs in a PyTorch-only environment: its flags (the project's
    vocabulary, keras_efficient3d/cli.py loaded by path) parse with TensorFlow, Keras and the
    package unimportable."""
    code = ("import runpy, sys\n"
            "for name in ('tensorflow', 'keras', 'keras_efficient3d'):\n"
            "    sys.modules[name] = None  # import fails\n"
            "sys.path.insert(0, 'deployment')\n"
            "sys.argv = ['deployment/benchmark_pytorch.py', '--repo=no/such/folder']\n"
            "runpy.run_path('deployment/benchmark_pytorch.py', run_name='__main__')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, check=False)
    assert run.returncode == 2, run.stderr
    assert run.stderr == "benchmark_pytorch.py: error: flag --repo=no/such/folder: no such folder\n"


def test_compare_commits_table_and_bad_input(capsys):
    """The same-run comparison of two commits: its table, and one line for a bad revision
    or an unknown form (the timing itself is a benchmark, not a test)."""
    from keras_efficient3d import cli

    ab = _script_module("compare_commits")
    rows = [{"model": "m", "form": "folded", "base_ms": [10.0, 12.0, 11.0], "new_ms": [9.0, 13.0, 9.5],
             "best_ratio": 0.9}]
    table = ab.format_table(rows, "HEAD~1")
    assert "| m | folded | 10.0 / 11.0 | 9.0 / 9.5 | 0.90 |" in table
    assert cli.invoke(ab.main, ab.define_flags, ["compare_commits.py", "--what=keras,nope"]) == 2
    assert cli.invoke(ab.main, ab.define_flags,
                      ["compare_commits.py", "--base=no-such-revision-here", "--what=keras"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "unknown nope" in err[0] and "--base=no-such-revision-here" in err[1]
    assert "Traceback" not in "".join(err)
