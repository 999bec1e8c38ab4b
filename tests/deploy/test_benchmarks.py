"""The Keras timing script and the PyTorch-reference plumbing of every timing table."""

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest
from absl import flags

from keras_efficient3d import cli
from keras_efficient3d.deploy.benchmark import (
    compare,
    comparison_cells,
    format_comparison,
    format_table,
    gemm_peak,
    load_peers,
    load_reference,
    markdown_table,
    model_macs,
    peak_lines,
    peers_and_peaks,
    write_report,
)

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
    # The family with the fewest layers: timing a fit step traces it first.
    name = "mobilenet_0.25x"
    kwargs = dict(frames=4, size=32, num_classes=5, threads=0, warmup=1, runs=3, log=None)
    rows = bench.run([name], "inference", (1, 2), **kwargs)
    assert [(r["form"], r["batch_size"]) for r in rows] == [
        ("keras", 1), ("keras", 2), ("keras-folded", 1), ("keras-folded", 2)]
    assert all(r["median_ms"] > 0 and r["input"] == "4x32x32" for r in rows)
    import tensorflow as tf

    # what TensorFlow runs with (this process ran ops before: its setting, not a plan)
    assert rows[0]["tf_threads"] == [tf.config.threading.get_intra_op_parallelism_threads(),
                                     tf.config.threading.get_inter_op_parallelism_threads()]
    train = bench.run([name], "train", (2,), **kwargs)
    assert [(r["form"], r["mode"]) for r in train] == [("keras-fit", "train")]
    assert train[0]["clips_per_s"] == pytest.approx(2000 / train[0]["median_ms"])

    peers = [dict(row, model=name) for row in _pytorch_rows(threads=0)]
    peers.append(dict(peers[0], form="openvino", median_ms=12.0))
    bench.add_reference(rows + train, peers)
    # Only rows of the same mode, batch, thread count and clip size get a reference.
    assert rows[0]["speedup"] == pytest.approx(30.0 / rows[0]["median_ms"])
    assert (rows[0]["best_peer"], rows[0]["best_peer_ms"]) == ("openvino", 12.0)
    assert train[0]["best_peer"] == "pytorch"
    assert "pytorch_ms" not in rows[1] and train[0]["pytorch_ms"] == 400.0
    table = bench.format_table(rows + train)
    assert "speed-up" in table and f"{rows[0]['speedup']:.2f}x" in table


@pytest.mark.parametrize("content,expected", [
    ([{"model": "x"}], "row 0: expected a benchmark_pytorch.py row"),
    ([dict(_pytorch_rows()[0], median_ms="30")], "row 0: expected"),
    ([dict(_pytorch_rows()[0], model=["a"])], "row 0: expected"),
    ([dict(_pytorch_rows()[0], form="keras")], "row 0: expected"),
    ({"rows": []}, "is not a list of benchmark_pytorch.py rows"),
    (_pytorch_rows()[:1] * 2, "rows 0 and 1: two figures of"),
])
def test_keras_benchmark_cli_rejects_a_bad_reference_file_before_timing(tmp_path, content,
                                                                        expected, capsys):
    # In this process (`cli.invoke`, the program's own error mapping); the real program runs
    # once, in the next test.
    from keras_efficient3d import cli

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(content))
    script = _script_module("benchmark")
    status = cli.invoke(script.main, script.define_flags,
                        ["benchmark.py", "--models=mobilenetv2_0.2x", f"--peers_json={bad}"])
    out, err = capsys.readouterr()
    assert status == 2
    assert expected in err and str(bad) in err
    assert "Traceback" not in err and "batch  1" not in out + err  # nothing timed


def test_keras_benchmark_says_when_an_empty_peers_file_matched_nothing(tmp_path, monkeypatch,
                                                                      capsys):
    """A --peers_json of no rows ([]) was taken for no --peers_json: no note, no peers."""
    from keras_efficient3d import cli

    empty = tmp_path / "peers.json"
    empty.write_text("[]")
    script = _script_module("benchmark")
    rows = script.run(["mobilenetv2_0.2x"], "inference", [1], 4, 32, 3, 2, 0, 1, False)
    monkeypatch.setattr(script, "run", lambda *a, **k: rows)
    status = cli.invoke(script.main, script.define_flags,
                        ["benchmark.py", "--models=mobilenetv2_0.2x", f"--peers_json={empty}"])
    assert status == 0
    assert f"note: no row of --peers_json={empty}" in capsys.readouterr().err


def test_keras_benchmark_program_rejects_a_bad_reference_file_before_timing(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"model": "x"}]))
    run = subprocess.run([sys.executable, os.path.join(ROOT, "deployment", "benchmark.py"),
                          "--models=mobilenetv2_0.2x", f"--peers_json={bad}"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert "row 0: expected a benchmark_pytorch.py row" in run.stderr and str(bad) in run.stderr
    assert "Traceback" not in run.stderr and "batch  1" not in run.stderr  # nothing timed


def test_keras_benchmark_program_prints_the_table_and_no_tensorflow_errors(tmp_path):
    """The folded depthwise model's first run made TF's oneDNN passes log E0000 lines
    ("Relu6 has an empty op name", "remapper failed"), and the rows were dumped as JSON
    after the table: --json_out is where they go."""
    rows = tmp_path / "rows.json"
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",
                                                             "TF_ENABLE_ONEDNN_OPTS")}
    run = subprocess.run([sys.executable, os.path.join(ROOT, "deployment", "benchmark.py"),
                          "--models=mobilenetv2_0.2x", "--frames=8", "--size=32",
                          "--num_classes=8", "--batch_sizes=1", "--runs=3", "--warmup=1",
                          "--threads=1", f"--json_out={rows}"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    assert "E0000" not in run.stderr and "empty op name" not in run.stderr, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("model") and len(lines) == 3, run.stdout  # header, 2 forms
    assert [r["form"] for r in json.loads(rows.read_text())] == ["keras", "keras-folded"]

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


def test_markdown_table_aligns_each_column_and_checks_its_rows():
    lines = markdown_table(("model", "ms", ""), [["a", "1.0", "PASS"], ["b", 2, ""]], "lrl")
    assert lines == ["| model | ms | |", "|---|---:|---|", "| a | 1.0 | PASS |", "| b | 2 |  |"]
    with pytest.raises(ValueError, match="Received: align='lr'"):
        markdown_table(("model", "ms", ""), [], "lr")
    with pytest.raises(ValueError, match="Received: align='lrx'"):
        markdown_table(("model", "ms", ""), [], "lrx")
    with pytest.raises(ValueError, match=r"3 cells. Received: row=\['a'\]"):
        markdown_table(("model", "ms", ""), [["a"]], "lrl")
    # a column empty in every row is left out: a file timed without peers had six
    lines = markdown_table(("model", "peer ms", "ms", "vs peer"),
                           [["a", "", "1.0", ""], ["b", "", "2.0", ""]], "lrrr")
    assert lines == ["| model | ms |", "|---|---:|", "| a | 1.0 |", "| b | 2.0 |"]
    from keras_efficient3d.deploy.benchmark import format_table

    row = {"model": "file.tflite", "precision": "int8", "threads": 2, "median_ms": 1.5,
           "clips_per_s": 666.7, "size_bytes": 1e6}
    assert format_table([row]).splitlines()[0] == (
        "| model | precision | threads | median ms | clips/s | size MB |")


def test_comparison_cells_and_peak_lines():
    row = {"model": "m", "median_ms": 10.0}
    row.update(compare("m", 10.0, {"m": {"pytorch": 30.0, "openvino": 25.0}}, macs=2e8,
                       peak={"gmacs_per_s": 80.0}))
    assert comparison_cells(row) == ["25.0 (openvino)", "2.50x", "20.0", "25%"]
    assert comparison_cells({"median_ms": 1.0}) == ["", "", "", ""]
    peak = {"threads": 2, "gflops": 10.0, "gmacs_per_s": 5.0, "backend": "numpy", "size": 64}
    assert peak_lines(None) == [] and peak_lines({}) == []
    one = peak_lines(peak)
    assert len(one) == 2 and one[0].startswith("fp32 GEMM peak of this machine at 2 threads") and one[1] == ""
    both = peak_lines({4: dict(peak, threads=4), 2: peak})
    assert "at 2 threads" in both[0] and "at 4 threads" in both[1] and both[2] == ""


def test_peers_and_peaks_check_the_names_first(tmp_path, monkeypatch):
    bench = importlib.import_module("keras_efficient3d.deploy.benchmark")
    measured = []
    monkeypatch.setattr(bench, "gemm_peak", lambda n: measured.append(n) or {"threads": n})
    with pytest.raises(ValueError, match="vgg16"):
        peers_and_peaks(["mobilenetv2_0.2x", "vgg16"], threads=(1, 2))
    assert measured == []
    path = tmp_path / "peers.json"
    path.write_text(json.dumps(_pytorch_rows()))
    peers, peaks = peers_and_peaks(["mobilenetv2_0.2x"], str(path), (4, 32, 32), (1, 2))
    assert peers == {"mobilenetv2_0.2x": {"pytorch": 30.0}}
    assert peaks == {1: {"threads": 1}, 2: {"threads": 2}}
    assert peers_and_peaks(["mobilenetv2_0.2x"], measure_peak=False) == (None, None)


def test_write_report_prints_the_table_and_writes_json_and_markdown(tmp_path, capsys):
    table = "| a |\n|---|\n| 1 |"
    report = {"rows": [{"a": 1}], "path": tmp_path}  # not JSON: written as its text
    out = tmp_path / "r.json"
    assert write_report(report, table, str(out)) == [str(out), str(tmp_path / "r.md")]
    assert json.loads(out.read_text()) == {"rows": [{"a": 1}], "path": str(tmp_path)}
    assert (tmp_path / "r.md").read_text() == table + "\n"
    assert capsys.readouterr().out == f"{table}\nwrote {out}, {tmp_path / 'r.md'}\n"
    assert write_report([1], table, str(tmp_path / "s.json"), markdown=False) == [str(tmp_path / "s.json")]
    assert not (tmp_path / "s.md").exists()
    assert write_report([1], table) == []
    assert capsys.readouterr().out.endswith(f"{table}\n")
    assert sorted(os.listdir(tmp_path)) == ["r.json", "r.md", "s.json"]  # no temporary files left


def test_onnx_forms_script_reports_through_write_report(tmp_path, monkeypatch, capsys):
    forms = _script_module("benchmark_onnx_forms")
    rows = [{"model": "m", "runtime": "onnxruntime", "native_ms": 2.0, "taps_ms": 3.0, "ratio": 1.5,
             "rounds": {"native": [2.0], "taps": [3.0]}}]
    monkeypatch.setattr(forms, "compare_forms", lambda *args: rows)
    out = tmp_path / "forms.json"
    assert cli.invoke(forms.main, forms.define_flags, ["forms", f"--json_out={out}"]) == 0
    assert json.loads(out.read_text()) == rows
    printed = capsys.readouterr().out
    assert "1.50x" in printed and f"wrote {out}" in printed
    assert not (tmp_path / "forms.md").exists()


def test_peers_give_the_best_of_them_and_the_speedup_against_it(tmp_path):
    rows = _pytorch_rows()[:1]
    rows += [dict(rows[0], form="onnxruntime", median_ms=20.0),
             dict(rows[0], form="openvino", median_ms=12.0, openvino="2026.4"),
             dict(rows[0], form="openvino", threads=3, median_ms=1.0)]
    path = tmp_path / "peers.json"
    path.write_text(json.dumps(rows))
    peers = load_peers(str(path), input_shape=(4, 32, 32))
    assert peers == {"mobilenetv2_0.2x": {"pytorch": 30.0, "onnxruntime": 20.0, "openvino": 12.0}}
    assert load_reference(str(path), input_shape=(4, 32, 32)) == {"mobilenetv2_0.2x": 30.0}
    peak = {"gmacs_per_s": 100.0, "gflops": 200.0, "threads": 2, "backend": "numpy", "size": 64}
    out = compare("mobilenetv2_0.2x", 4.0, peers, macs=2e8, peak=peak)
    assert (out["best_peer"], out["best_peer_ms"]) == ("openvino", 12.0)
    assert out["speedup_vs_best"] == pytest.approx(3.0)
    assert out["pytorch_ms"] == 30.0 and out["onnxruntime_ms"] == 20.0
    assert out["gmacs_per_s"] == pytest.approx(50.0) and out["of_peak"] == pytest.approx(0.5)
    assert format_comparison(out) == " 3.00x vs openvino 12.0 ms, 50.0 GMAC/s (50% of peak)"
    assert compare("other", 4.0, peers) == {}
    row = dict(model="mobilenetv2_0.2x", precision="int8", threads=2, median_ms=4.0,
               clips_per_s=250.0, size_bytes=10 ** 6, **out)
    table = format_table([row], {2: peak})
    assert table.startswith("fp32 GEMM peak of this machine at 2 threads: 200.0 GFLOP/s")
    assert "| 30.0 | 7.50x | 12.0 (openvino) | 3.00x | 50.0 | 50% |" in table
    with pytest.raises(ValueError, match="median_ms"):
        compare("mobilenetv2_0.2x", 0.0, peers)


def test_gemm_peak_measures_each_backend_at_the_thread_count():
    peak = gemm_peak(threads=1, size=64, runs=2)
    assert set(peak["per_backend"]) == {"xnnpack", "numpy"} and peak["threads"] == 1
    assert peak["gmacs_per_s"] == max(peak["per_backend"].values()) > 0
    assert peak["gflops"] == pytest.approx(2 * peak["gmacs_per_s"])
    with pytest.raises(ValueError, match="Received: size=8"):
        gemm_peak(size=8)
    with pytest.raises(ValueError, match="backends"):
        gemm_peak(backends=("cublas",))


@pytest.mark.slow  # ten small conversions
def test_int8_op_profile_times_each_op_class_in_both_precisions():
    from keras_efficient3d.deploy.benchmark import format_op_profile, int8_op_profile

    rows = int8_op_profile(frames=4, size=8, channels=8, expansion=2, threads=1, rounds=2,
                           warmup=0)
    assert [r["op"].split(" (")[0] for r in rows] == [
        "pointwise expand", "depthwise 2D, one tap", "depthwise 3D, 3 taps",
        "pointwise project", "residual ADD"]
    for r in rows:
        assert r["fp32_ms"] > 0 and r["int8_ms"] > 0
        assert r["speedup"] == pytest.approx(r["fp32_ms"] / r["int8_ms"])
    assert f"| residual ADD | {rows[-1]['fp32_ms']:.2f} |" in format_op_profile(rows)


def test_packing_comparison_times_both_forms_of_each_precision(monkeypatch):
    """The script's --packing mode: default (packed where narrow) against unpacked, fp32 and
    int8, with whether the default packs; a 24-channel stem packs in int8 only (on a CPU
    with AMX)."""
    from keras_efficient3d import runtime
    from keras_efficient3d.deploy.benchmark import format_packing, packing_comparison

    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: True)

    # one model whose default packs in one precision and not in the other (eight TFLite
    # conversions took 55 s with a second model)
    rows = packing_comparison(["shufflenetv2_0.25x"], (4, 32, 32, 3), 5,
                              threads=1, rounds=2, warmup=0, runs=2, log=None)
    assert [(r["model"], r["precision"], r["packed"]) for r in rows] == [
        ("shufflenetv2_0.25x", "fp32", False), ("shufflenetv2_0.25x", "int8", True)]
    for r in rows:
        assert len(r["packed_rounds"]) == len(r["unpacked_rounds"]) == 2
        assert r["packed_ms"] > 0 and r["unpacked_ms"] > 0
    table = format_packing(rows)
    assert "| shufflenetv2_0.25x |" in table and "(not packed)" in table
    ratio = rows[0]["packed_ms"] / rows[1]["packed_ms"]
    assert f"-> {ratio:.2f}x |" in table.splitlines()[2]


def test_stacking_comparison_times_both_stem_forms_through_the_script(tmp_path):
    """benchmark_tflite.py --stacking: fp32 with the stem's taps stacked by slices and a
    concat against the 0/1 convolution, each in every round."""
    script = _script_module("benchmark_tflite")
    out = tmp_path / "stacking.json"
    code = cli.invoke(script.main, script.define_flags,
                      ["benchmark_tflite.py", "--stacking", "--models=shufflenetv2_0.25x",
                       "--frames=4", "--size=32", "--num_classes=5", "--threads=1",
                       "--rounds=2", "--warmup=0", "--runs=2", f"--json_out={out}"])
    assert code == 0
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["shufflenetv2_0.25x"]
    assert len(rows[0]["concat_rounds"]) == len(rows[0]["conv_rounds"]) == 2
    assert rows[0]["concat_partitions"] == rows[0]["conv_partitions"] == 1
    ratio = rows[0]["concat_ms"] / rows[0]["conv_ms"]
    assert f"| {ratio:.2f}x |" in (tmp_path / "stacking.md").read_text()


def test_onnx_timing_adds_mac_rate_and_peers(tmp_path):
    script = _script_module("benchmark_onnx")
    assert script.clip_dims((1, 4, 32, 32, 3)) == script.clip_dims((1, 3, 4, 32, 32)) == (4, 32, 32)
    path = tmp_path / "peers.json"
    path.write_text(json.dumps(_pytorch_rows()))
    report = {"onnx": "m.onnx", "providers": ["CPUExecutionProvider"], "clip": (4, 32, 32),
              "num_classes": 5, "results": [{"batch_size": 1, "median_ms": 2.0, "min_ms": 1.9,
                                             "clips_per_s": 500.0},
                                            {"batch_size": 2, "median_ms": 3.0, "min_ms": 2.9,
                                             "clips_per_s": 666.7}]}
    peak = {"gmacs_per_s": 10.0, "gflops": 20.0, "threads": 2, "backend": "numpy", "size": 64}
    script.add_comparison(report, "mobilenetv2_0.2x", str(path), threads=2, peak=peak)
    macs = model_macs("mobilenetv2_0.2x", (4, 32, 32), 5)
    one, two = report["results"]
    assert macs > 0 and one["gmacs_per_s"] == pytest.approx(macs / 2.0 / 1e6)
    assert two["gmacs_per_s"] == pytest.approx(2 * macs / 3.0 / 1e6)
    assert one["speedup_vs_best"] == pytest.approx(15.0) and "best_peer" not in two
    assert "15.00x vs pytorch 30.0 ms" in script.format_table(report)


def _clip_onnx(path, clip=(4, 32, 32, 3), classes=5):
    """A clip model in a few ONNX nodes: the mean of each channel, then a dense layer."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("clips", TensorProto.FLOAT, ["batch", *clip])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])
    weights = numpy_helper.from_array(np.ones((clip[-1], classes), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["clips"], ["pooled"], axes=[1, 2, 3], keepdims=0),
         helper.make_node("MatMul", ["pooled", "w"], ["logits"])], "clip", [x], [y], [weights])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


@pytest.mark.parametrize("sidecar,model,expected", [
    ({"input": {"frames": 16, "size": 112}}, None, "records 16x112x112 clips but {m} takes 4x32x32"),
    ({"input": {"frames": 4, "size": 32}, "model": {"num_classes": 600}}, None,
     "records 600 classes but {m} has 5"),
    ({"model": {"model": "shufflenetv2", "width_mult": 0.25}}, "mobilenetv2_0.2x",
     "records a shufflenetv2 width_mult=0.25 model; --model=mobilenetv2_0.2x names another"),
    ({"model": {"model": "mobilenetv2", "width_mult": 1.0}}, "mobilenetv2_0.2x",
     "records a mobilenetv2 width_mult=1.0 model; --model=mobilenetv2_0.2x names another"),
    # a name without a width is the builder's default, 1.0x
    ({"model": {"model": "mobilenetv2", "width_mult": 0.2}}, "mobilenetv2",
     "records a mobilenetv2 width_mult=0.2 model; --model=mobilenetv2 names another"),
    ({"model": {"model": "mobilenetv2"}}, "mobilenetv2_0.2x",
     "records a mobilenetv2 width_mult=1.0 model; --model=mobilenetv2_0.2x names another"),
])
def test_onnx_timing_refuses_a_file_its_sidecar_contradicts(tmp_path, capsys, sidecar, model,
                                                            expected):
    from keras_efficient3d.artifacts import write_sidecar

    script = _script_module("benchmark_onnx")
    path = _clip_onnx(tmp_path / "m.onnx")
    write_sidecar(path, sidecar)
    argv = [f"--model_file={path}", "--batch_sizes=1", "--warmup=0", "--runs=1",
            "--nogemm_peak", f"--json_out={tmp_path / 'r.json'}"]
    status = cli.invoke(script.main, script.define_flags,
                        ["benchmark_onnx.py", *argv, *([f"--model={model}"] if model else [])])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"benchmark_onnx.py: error: {path}.json ")
    assert expected.format(m=path) in err
    assert not (tmp_path / "r.json").exists()  # nothing timed
    # the sidecar that agrees, and none at all: timed
    write_sidecar(path, {"input": {"frames": 4, "size": 32, "layout": "NDHWC"},
                         "model": {"model": "mobilenetv2", "width_mult": 0.2, "num_classes": 5}})
    assert cli.invoke(script.main, script.define_flags,
                      ["benchmark_onnx.py", *argv, "--model=mobilenetv2_0.2x"]) == 0
    write_sidecar(path, {"model": {"model": "mobilenetv2_1.0x", "num_classes": 5}})
    assert cli.invoke(script.main, script.define_flags,
                      ["benchmark_onnx.py", *argv, "--model=mobilenetv2"]) == 0
    os.remove(path + ".json")
    capsys.readouterr()
    assert cli.invoke(script.main, script.define_flags, ["benchmark_onnx.py", *argv]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["batch_size"] == 1
    assert "note:" not in capsys.readouterr().err
    # --model beside a file without a sidecar: timed, and said to be unchecked
    assert cli.invoke(script.main, script.define_flags,
                      ["benchmark_onnx.py", *argv, "--model=mobilenetv2_0.2x"]) == 0
    assert (f"note: {path} has no sidecar to check --model=mobilenetv2_0.2x against"
            in capsys.readouterr().err)
    # not an .onnx file: said so, not ONNX Runtime's protobuf error
    xml = tmp_path / "m.xml"
    xml.write_text("<net/>")
    assert cli.invoke(script.main, script.define_flags,
                      ["benchmark_onnx.py", f"--model_file={xml}"]) == 2
    assert "an .onnx file is needed" in capsys.readouterr().err


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


def _torch_original(root):
    """The stand-in of `_fake_original` whose generate_model builds a tiny PyTorch 3D CNN
    (a depthwise Conv3d as the originals have), so that the peers' real path runs."""
    _fake_original(root)
    (root / "model.py").write_text(
        "import torch\n"
        "def generate_model(opt):\n"
        "    torch.manual_seed(0)\n"
        "    net = torch.nn.Sequential(\n"
        "        torch.nn.Conv3d(3, 8, 3, padding=1), torch.nn.ReLU(),\n"
        "        torch.nn.Conv3d(8, 8, 3, padding=1, groups=8), torch.nn.BatchNorm3d(8),\n"
        "        torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(),\n"
        "        torch.nn.Linear(8, opt.n_classes))\n"
        "    return net, None\n")
    return str(root)


def test_pytorch_benchmark_times_the_originals_onnx_export_in_each_runtime(tmp_path, monkeypatch):
    import torch  # noqa: F401  (setup.py [dev]: a missing one fails)
    script = _script_module("benchmark_pytorch")
    monkeypatch.setattr(sys, "path", list(sys.path))
    lines = []
    kwargs = dict(batch_sizes=(1,), frames=4, size=16, num_classes=5, threads=1, warmup=0,
                  runs=2, onnx_dir=str(tmp_path / "onnx"), log=lines.append)
    try:
        rows = script.run(_torch_original(tmp_path), ["mobilenetv2_1.0x"], **kwargs)
        find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "openvino" else find_spec(name, *a))
        without = script.run(str(tmp_path), ["mobilenetv2_1.0x"], **kwargs)
    finally:
        for name in ("opts", "model"):
            sys.modules.pop(name, None)
    expected = ["pytorch", "onnxruntime"] + (["openvino", "openvino-auto"] if find_spec("openvino") else [])
    assert [r["form"] for r in rows] == expected
    assert all(r["median_ms"] > 0 and r["input"] == "4x16x16" and r["threads"] == 1 for r in rows)
    assert rows[1]["onnxruntime"] and os.path.isfile(tmp_path / "onnx" / "mobilenetv2_1.0x_b1.onnx")
    import onnx
    graph = onnx.load(str(tmp_path / "onnx" / "mobilenetv2_1.0x_b1.onnx"))
    assert graph.opset_import[0].version == 17
    assert [r["form"] for r in without] == ["pytorch", "onnxruntime"]
    assert "openvino peer skipped: openvino is not installed" in lines
    assert "openvino-auto peer skipped: openvino is not installed" in lines
    if find_spec("openvino"):  # fp32, and what the CPU picks when given nothing
        assert rows[2]["openvino"].endswith(" f32")
        assert rows[3]["openvino-auto"].split()[-1] in ("f32", "bf16", "f16")
    # The rows are what the timing scripts read.
    path = tmp_path / "peers.json"
    path.write_text(json.dumps(rows))
    assert set(load_peers(str(path), threads=1, input_shape=(4, 16, 16))["mobilenetv2_1.0x"]) == \
        set(expected)


def test_the_peers_openvino_step_is_the_inference_alone_as_ours_is(tmp_path):
    """The original's OpenVINO step runs the clip it was given, set once: a copy of the clip
    into the request at each call (~0.09 ms at 16x112x112) would be timed for the peer
    alone, since our runners' timing steps set theirs once too."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    script = _script_module("benchmark_pytorch")
    node = helper.make_node("Relu", ["clips"], ["logits"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("clips", TensorProto.FLOAT, [1, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 6])])
    path = str(tmp_path / "relu.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    clips = np.array([[-1.0, 2.0, -3.0, 4.0, 5.0, -6.0]], np.float32)
    step, version = script.openvino_step(path, clips, 1)
    assert version.endswith(" f32")
    clips[:] = 7.0  # changed after the step was made: the step does not read it again
    out = step()
    assert list(out.values())[0].tolist() == [[0.0, 2.0, 0.0, 4.0, 5.0, 0.0]]


def test_pytorch_benchmark_rejects_unknown_names(tmp_path):
    script = _script_module("benchmark_pytorch")
    with pytest.raises(ValueError, match="Unknown configuration 'mobilenet v3'"):
        script.parse_name("mobilenet v3")
    with pytest.raises(ValueError, match="Unknown configuration 'mobilenetv3_1.0x'"):
        script.build(_fake_original(tmp_path), "mobilenetv3_1.0x", 600, 16, 112)


def test_pytorch_benchmark_checks_every_name_before_timing_any(tmp_path, capsys):
    script = _script_module("benchmark_pytorch")
    repo = _fake_original(tmp_path)
    code = cli.invoke(script.main, script.define_flags,
                      ["benchmark_pytorch.py", f"--repo={repo}",
                       "--models=mobilenetv2_1.0x,nosuchnet_1.0x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == ("benchmark_pytorch.py: error: Unknown configuration 'nosuchnet_1.0x': the "
                      "original code has the models mobilenetv2, shufflenet, named as "
                      "mobilenetv2_1.0x, shufflenet_1.0x_g3, squeezenet_1.1, resnet18_A.")


def _run_without_tensorflow(script, *args):
    """deployment/`script` run with TensorFlow, Keras and the package unimportable in its
    process (not in the processes it starts)."""
    code = ("import runpy, sys\n"
            "for name in ('tensorflow', 'keras', 'keras_efficient3d'):\n"
            "    sys.modules[name] = None  # import fails\n"
            "sys.path.insert(0, 'deployment')\n"
            f"sys.argv = {[f'deployment/{script}', *args]!r}\n"
            f"runpy.run_path('deployment/{script}', run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=False)


def test_pytorch_benchmark_runs_without_tensorflow_or_the_package():
    """benchmark_pytorch.py runs in a PyTorch-only environment: its flags (the project's
    vocabulary, keras_efficient3d/cli.py loaded by path) parse with TensorFlow, Keras and the
    package unimportable."""
    run = _run_without_tensorflow("benchmark_pytorch.py", "--repo=no/such/folder")
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


def test_compare_commits_worker_imports_the_package_of_the_tree_it_times(tmp_path):
    """The base tree's worker runs the base tree's package, not this checkout's: a base tree
    whose package fails to import makes its worker fail with that package's message,
    relayed once under this program's prefix."""
    from keras_efficient3d import cli

    ab = _script_module("compare_commits")
    (tmp_path / "keras_efficient3d").mkdir()
    (tmp_path / "keras_efficient3d" / "__init__.py").write_text(
        "raise ValueError('the base tree package was imported')\n")
    with pytest.raises(cli.UsageError) as err:
        ab._run_worker(str(tmp_path), "keras", ["mobilenetv2_0.2x"], 4, 16, 1)
    message = str(err.value)
    assert message == (f"timing keras in {tmp_path} failed: the base tree package was imported")


def test_compare_commits_checks_the_models_before_the_worktree_without_tensorflow():
    """An unknown --models name is refused before the worktree and the timing start, by a
    worker: the parent process imports neither TensorFlow nor this checkout's package (each
    worker imports the package of the tree it times)."""
    before = subprocess.run(["git", "-C", ROOT, "worktree", "list"], capture_output=True,
                            text=True, check=True).stdout
    run = _run_without_tensorflow("compare_commits.py", "--what=keras", "--models=nosuchnet")
    err = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(err) == 1, run.stderr
    assert err[0].startswith("compare_commits.py: error: --models: Unknown model 'nosuchnet'")
    assert subprocess.run(["git", "-C", ROOT, "worktree", "list"], capture_output=True,
                          text=True, check=True).stdout == before


def _times(**medians):
    """runtime -> round medians (ms), from ``label=[...]`` with '_' for '-'."""
    return {label.replace("_", "-"): values for label, values in medians.items()}


def test_target_rows_compute_each_ratio_from_the_times_and_pass_or_miss():
    from keras_efficient3d.deploy.targets import TARGETS, format_targets, target_row

    times = _times(tflite_fp32=[9.0, 8.0, 10.0], tflite_int8=[4.0, 5.0, 3.0],
                   onnxruntime_fp32=[7.0, 7.5, 6.5], openvino_fp32=[6.0, 6.2, 5.8],
                   openvino_auto=[4.0, 4.4, 4.2], openvino_int8=[3.5, 3.0, 4.5],
                   original_pytorch=[30.0, 31.0, 29.0], original_openvino=[6.1, 6.0, 6.4],
                   original_openvino_auto=[4.1, 4.0, 3.9])
    peak = {"gmacs_per_s": 100.0}
    row = target_row("m", times, macs=3e8, peak=peak)
    tflite = row["runtimes"]["tflite-fp32"]
    assert (tflite["median_ms"], tflite["min_ms"], tflite["max_ms"]) == (9.0, 8.0, 10.0)
    assert tflite["gmacs_per_s"] == pytest.approx(3e8 / 9.0 / 1e6)
    assert tflite["of_peak"] == pytest.approx(tflite["gmacs_per_s"] / 100.0)
    medians = {rt: sorted(v)[1] for rt, v in times.items()}
    by_name = {t["target"]: t for t in row["targets"]}
    assert list(by_name) == [t[0] for t in TARGETS]
    for name, ours, peer, needed in TARGETS:
        best = min((rt for rt in ours if rt in medians), key=medians.get)  # the timed ones
        got = by_name[name]
        assert (got["ours"], got["peer"], got["needed"]) == (best, peer, needed)
        assert got["ratio"] == pytest.approx(medians[peer] / medians[best])
        assert got["passed"] == (medians[peer] / medians[best] >= needed)
    # int8: 6.1 / 3.5 < 2 misses; fp32: 6.1 / 6.0 passes; TFLite fp32 30 / 9 passes;
    # TFLite int8 / fp32 9 / 4 passes, OpenVINO's 6.0 / 3.5 passes; at the default
    # precision 4.0 / 4.2 misses.
    assert [t["passed"] for t in row["targets"]] == [False, True, True, True, True, True, False]
    assert by_name[TARGETS[-1][0]]["peer"] == "original-openvino-auto"
    # Each round's own ratio, peer round i over ours round i.
    int8 = by_name["best x86 int8 vs original OpenVINO fp32"]
    assert int8["round_ratios"] == pytest.approx([6.1 / 3.5, 6.0 / 3.0, 6.4 / 4.5])
    assert by_name["OpenVINO int8 vs OpenVINO fp32"]["round_ratios"] == pytest.approx(
        [6.0 / 3.5, 6.2 / 3.0, 5.8 / 4.5])
    table = format_targets([row], dict(peak, gflops=200.0, threads=2, backend="numpy", size=64))
    assert "| m | best x86 int8 vs original OpenVINO fp32 | openvino-int8 | original-openvino " \
           "| 1.74x | 1.42-2.00x | 2x | MISS |" in table
    assert "| m | tflite-fp32 | 9.00 | 8.00-10.00 | 33.3 | 33% |" in table
    # Without the peers only our own int8 against fp32 remains to compare.
    ours_only = target_row("m", {k: v for k, v in times.items() if not k.startswith("original")})
    assert [t["target"] for t in ours_only["targets"]] == [
        "TFLite int8 vs TFLite fp32", "OpenVINO int8 vs OpenVINO fp32"]
    # A peer timed in another process (one figure) has no rounds to pair.
    elsewhere = target_row("m", {**times, "original-openvino": [6.1]})
    assert {t["target"]: t["round_ratios"] for t in elsewhere["targets"]}[
        "best fp32 vs original OpenVINO fp32"] is None
    assert "| 1.02x | - | 1x | PASS |" in format_targets([elsewhere])


@pytest.mark.slow
def test_targets_script_times_ours_and_the_peers_in_one_table(tmp_path, monkeypatch, capsys,
                                                            caplog):
    """The whole command on a tiny clip: every runtime of ours exported into --work_dir and
    reused, the original stand-in's PyTorch, ONNX Runtime and OpenVINO, and the targets
    computed from the recorded times. int8 calibrates on every clip the benchmark made,
    with no warning that they are fewer than a default count it did not ask for."""
    import openvino
    import torch  # noqa: F401  (setup.py [dev]: a missing one fails)

    from keras_efficient3d import cli
    from keras_efficient3d.deploy.targets import OURS, PEERS, TARGETS

    script = _script_module("benchmark_targets")
    monkeypatch.setattr(sys, "path", list(sys.path))
    work, out, orig = tmp_path / "work", tmp_path / "t.json", tmp_path / "orig"
    orig.mkdir()
    argv = ["benchmark_targets.py", "--models=mobilenetv2_0.2x", "--frames=8", "--size=32",
            "--num_classes=3", "--rounds=1", "--warmup=0", "--runs=2", "--threads=1",
            f"--work_dir={work}", f"--json_out={out}"]
    try:
        code = cli.invoke(script.main, script.define_flags,
                          argv + [f"--repo={_torch_original(orig)}"])
    finally:
        for name in ("opts", "model"):
            sys.modules.pop(name, None)
    assert code == 0, capsys.readouterr().err
    assert not [r for r in caplog.records if "fewer than the" in r.getMessage()], caplog.text
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert set(row["runtimes"]) == set(OURS) | set(PEERS)
    assert result["peak"]["threads"] == 1 and row["macs"] > 0
    medians = {rt: r["median_ms"] for rt, r in row["runtimes"].items()}
    assert all(len(r["rounds_ms"]) == 1 and r["median_ms"] > 0 for r in row["runtimes"].values())
    assert [t["target"] for t in row["targets"]] == [t[0] for t in TARGETS]
    default = openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    assert row["openvino_default_precision"] == default
    assert f"default inference precision on this CPU (the -auto rows): {default}" in \
        (tmp_path / "t.md").read_text()
    for t, (_, ours, peer, needed) in zip(row["targets"], TARGETS):
        ratio = medians[peer] / min(medians[rt] for rt in ours)
        assert t["ratio"] == pytest.approx(ratio) and t["passed"] == (ratio >= needed)
        verdict = "PASS" if t["passed"] else "MISS"
        # one round: no rounds' own ratios to show
        assert f"| {t['ratio']:.2f}x | - | {needed:g}x | {verdict} |" in (tmp_path / "t.md").read_text()
    exports = sorted(p.name for p in work.iterdir())
    assert exports == sorted(["mobilenetv2_0.2x_8x32x32_3c_" + s for s in
                              ["fp32.tflite", "int8.tflite", "int8_frames.tflite", "native.onnx", "fp32.xml",
                               "fp32.bin", "int8.xml", "int8.bin", "int8_frames.xml", "int8_frames.bin",
                               "original.onnx"]])
    # A second run reuses the exports; its peers come from benchmark_pytorch.py's rows.
    stamps = {p.name: p.stat().st_mtime_ns for p in work.iterdir()}
    peers = tmp_path / "peers.json"
    peers.write_text(json.dumps([dict(r, model="mobilenetv2_0.2x", threads=1, input="8x32x32")
                                 for r in _pytorch_rows()[:1]]
                                + [dict(_pytorch_rows()[0], form="openvino", threads=1,
                                        input="8x32x32", median_ms=1e-3)]))
    assert cli.invoke(script.main, script.define_flags,
                      argv + ["--runtimes=tflite-int8,openvino-int8", "--nogemm_peak",
                              f"--peers_json={peers}"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in work.iterdir()} == stamps
    (row,) = json.loads(out.read_text())["rows"]
    assert set(row["runtimes"]) == {"tflite-int8", "openvino-int8", "original-pytorch",
                                    "original-openvino"}
    targets = {t["target"]: t for t in row["targets"]}
    assert set(targets) == {TARGETS[0][0], TARGETS[3][0]}
    int8 = targets[TARGETS[0][0]]
    assert int8["ratio"] == pytest.approx(
        1e-3 / min(row["runtimes"][rt]["median_ms"] for rt in ("tflite-int8", "openvino-int8")))
    assert not int8["passed"]
    assert f"| {int8['ours']} | original-openvino | {int8['ratio']:.2f}x | - | 2x | MISS |" in \
        (tmp_path / "t.md").read_text()
    assert targets[TARGETS[3][0]]["ratio"] == pytest.approx(
        30.0 / row["runtimes"]["tflite-int8"]["median_ms"])
    # Without the peers, one line says what is left out.
    capsys.readouterr()
    assert cli.invoke(script.main, script.define_flags,
                      argv + ["--runtimes=tflite-int8,openvino-int8", "--nogemm_peak"]) == 0
    assert "note: no --repo or --peers_json" in capsys.readouterr().err


def test_targets_script_says_when_the_peers_need_pytorch(tmp_path, monkeypatch, capsys):
    from keras_efficient3d import cli

    script = _script_module("benchmark_targets")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else find_spec(name, *a))
    code = cli.invoke(script.main, script.define_flags,
                      ["benchmark_targets.py", f"--repo={_fake_original(tmp_path)}",
                       "--models=mobilenetv2_1.0x", f"--work_dir={tmp_path}/w"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("benchmark_targets.py: error: --repo=") and "needs PyTorch" in err[0]
    assert not os.path.exists(tmp_path / "w")


def test_targets_script_names_a_missing_package_before_any_work(tmp_path, monkeypatch, capsys):
    """Without the onnx extra the exports ended in a ModuleNotFoundError traceback, even for
    TFLite alone (the exporters were imported for every runtime); with --repo, --threads=0
    ended in PyTorch's "set_num_threads expects a positive integer"."""
    import sys

    from keras_efficient3d import cli
    from keras_efficient3d.deploy import targets

    script = _script_module("benchmark_targets")
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setitem(sys.modules, "nncf", None)
    assert targets.missing_packages(["tflite-fp32", "tflite-int8"]) == []
    assert targets.missing_packages(["openvino-fp32"]) == [("onnx", "openvino-fp32", "openvino")]
    assert [m[0] for m in targets.missing_packages(["openvino-int8"])] == ["onnx", "nncf"]
    code = cli.invoke(script.main, script.define_flags,
                      ["benchmark_targets.py", "--models=mobilenetv2_0.2x",
                       "--runtimes=tflite-fp32,onnxruntime-fp32", f"--work_dir={tmp_path}/w"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert ("not installed: onnx (for onnxruntime-fp32: pip install 'keras_efficient3d[onnx]')"
            in err[0])
    assert not os.path.exists(tmp_path / "w")
    monkeypatch.delitem(sys.modules, "onnx")
    code = cli.invoke(script.main, script.define_flags,
                      ["benchmark_targets.py", f"--repo={_fake_original(tmp_path)}",
                       "--models=mobilenetv2_1.0x", "--threads=0", f"--work_dir={tmp_path}/w"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--threads=0: the peers of --repo need" in err[0], err


def test_backends_script_keeps_the_users_xla_flags_and_holds_jax_to_its_threads(monkeypatch):
    """The workers' XLA_FLAGS replaced the user's and held "intra_op_parallelism_threads=N",
    which XLA ignores (with -- in front, it aborts on it): JAX ran on every core."""
    import subprocess
    import sys

    script = _script_module("benchmark_backends")
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    flags_ = script._worker_env("jax", 1)["XLA_FLAGS"].split()
    assert flags_ == ["--xla_dump_to=/tmp/x", "--xla_cpu_multi_thread_eigen=true"]
    held = subprocess.run(
        [sys.executable, "-c", "import os, sys; sys.path.insert(0, sys.argv[1]); "
         "import benchmark_backends as b; b._limit_cpus(1); print(len(os.sched_getaffinity(0)))",
         os.path.join(ROOT, "deployment")], capture_output=True, text=True, timeout=120)
    assert held.stdout.strip() == "1", held.stderr[-2000:]


def test_targets_script_checks_every_original_name_before_timing_any(tmp_path, capsys):
    """A name the original code lacks was found only once the names before it were timed."""
    from keras_efficient3d import cli

    script = _script_module("benchmark_targets")
    code = cli.invoke(script.main, script.define_flags,
                      ["benchmark_targets.py", f"--repo={_fake_original(tmp_path)}",
                       "--models=mobilenetv2_1.0x,squeezenet_1.1", f"--work_dir={tmp_path}/w"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("benchmark_targets.py: error: Unknown configuration "
                             "'squeezenet_1.1': the original code has the models mobilenetv2, "
                             "shufflenet")
    assert not os.path.exists(tmp_path / "w")


@pytest.mark.slow
def test_backends_script_times_keras_and_the_original_in_the_same_rounds(tmp_path, capsys):
    """deployment/benchmark_backends.py: real worker processes (the TensorFlow backend, under
    a preloaded library as an allocator, and the original model in PyTorch, under glibc's),
    interleaved rounds, ratios against the original."""
    from helpers import stand_in_allocator
    from keras_efficient3d import cli

    script = _script_module("benchmark_backends")
    out = tmp_path / "b.json"
    (tmp_path / "orig").mkdir()
    preload = stand_in_allocator()
    assert preload, "glibc's libresolv.so.2 is in the system's library folder"
    argv = ["benchmark_backends.py", "--models=mobilenetv2_0.2x", "--backends=tensorflow",
            "--modes=inference,train,predict",
            "--frames=4", "--size=16", "--num_classes=3", "--rounds=2", "--warmup=1",
            "--runs=1", "--train_batch=2", "--threads=1", f"--json_out={out}",
            f"--repo={_torch_original(tmp_path / 'orig')}", f"--allocator={preload}"]
    assert cli.invoke(script.main, script.define_flags, argv) == 0, capsys.readouterr().err
    rows = json.loads(out.read_text())
    assert [(r["mode"], r["runtime"]) for r in rows] == [
        ("inference", "tensorflow"), ("inference", script.ORIGINAL),
        ("train", "tensorflow"), ("train", script.ORIGINAL),
        ("predict", "tensorflow")]  # against the original's inference row
    for row in rows:
        assert row["min_ms"] <= row["median_ms"] <= row["max_ms"] and row["input"] == "4x16x16"
        assert row["clips_per_s"] == pytest.approx(1000 * row["batch_size"] / row["median_ms"])
    assert [r["batch_size"] for r in rows] == [1, 1, 2, 2, 1]
    assert [r.get("train_timing") for r in rows] == [None, None, "steps", "steps", None]
    # MobileNetV2 is depthwise, but a budget of one thread stays one thread
    assert [r.get("tf_threads") for r in rows] == [[1, 1], None, [1, 1], None, [1, 1]]
    for ours, original in ((rows[0], rows[1]), (rows[2], rows[3]), (rows[4], rows[1])):
        assert ours["vs_original"] == pytest.approx(original["median_ms"] / ours["median_ms"])
        assert "vs_original" not in original
    assert [r["allocator"] for r in rows] == ["libresolv.so.2", "glibc"] * 2 + ["libresolv.so.2"]
    table = (tmp_path / "b.md").read_text()
    assert f"| {rows[0]['vs_original']:.2f}x |" in table and "| original-pytorch |" in table
    assert "| tensorflow (libresolv.so.2) |" in table


def test_backends_script_refuses_bad_flags_in_one_line(tmp_path, capsys):
    from keras_efficient3d import cli

    script = _script_module("benchmark_backends")
    (tmp_path / "orig").mkdir()
    for argv, expected in ((["--backends=tensorflow,mxnet"], "--backends"),
                           (["--models=nosuchnet"], "nosuchnet"),
                           ([f"--repo={tmp_path}/missing"], "no such folder"),
                           (["--modes=serve"], "--modes"),
                           (["--train_timing=epoch"], "--train_timing"),
                           (["--allocator=hoard"], "--allocator=hoard: expected one of"),
                           (["--threads=0"], "--threads=0: every runtime is timed at the same"),
                           ([f"--repo={tmp_path}"], "is not a checkout of the original"),
                           ([f"--repo={_fake_original(tmp_path / 'orig')}",
                             "--models=mobilenetv2_1.0x,squeezenet_1.1"],
                            "Unknown configuration 'squeezenet_1.1': the original code has the "
                            "models mobilenetv2, shufflenet")):
        code = cli.invoke(script.main, script.define_flags, ["benchmark_backends.py"] + argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith("benchmark_backends.py: error:") and expected in err[0], err


def test_backends_training_step_times_fit_from_its_begin_to_its_end():
    """A training step returns the seconds between fit's on_train_begin and on_train_end
    (less than the call, which also converts the arrays and releases the iterator), or None
    with --train_timing=fit (the caller times the whole call)."""
    script = _script_module("benchmark_backends")
    args = ("mobilenetv2_0.2x", "train", (4, 16, 16, 3), 3, 2, 2, 1)
    step = script.keras_step(*args)
    step()
    start = time.perf_counter()
    seconds = step()
    assert 0 < seconds < time.perf_counter() - start
    assert script.keras_step(*args, train_timing="fit")() is None
    with pytest.raises(ValueError, match="train_timing='epoch'"):
        script.run_backends(["mobilenetv2_0.2x"], backends=(), train_timing="epoch", log=None)


def test_backends_script_says_why_a_worker_failed(tmp_path):
    """A worker that dies during warm-up is reported with the last line of its stderr."""
    script = _script_module("benchmark_backends")
    (tmp_path / "orig").mkdir()
    repo = _fake_original(tmp_path / "orig")
    (tmp_path / "orig" / "model.py").write_text(
        "def generate_model(opt):\n    raise RuntimeError('no such architecture here')\n")
    with pytest.raises(RuntimeError) as err:
        script.run_backends(["mobilenetv2_1.0x"], backends=(), modes=("inference",), repo=repo,
                            rounds=1, warmup=1, runs=1, threads=1, frames=4, size=16,
                            num_classes=3, log=None)
    message = str(err.value)
    assert message.startswith("the original-pytorch worker for mobilenetv2_1.0x (inference) "
                              "failed:")
    assert "no such architecture here" in message


@pytest.mark.parametrize("mode, function, expected", [
    ("op_profile", "int8_op_profile", "tflite_op_profile.json"),
    ("packing", "packing_comparison", "tflite_packing.json"),
    ("stacking", "stacking_comparison", "tflite_stacking.json")])
def test_tflite_side_modes_leave_the_main_result_file_alone(mode, function, expected, tmp_path,
                                                           monkeypatch):
    """A side mode's rows go to a file of their own, not over the main table's
    tflite_timing.json (written by an earlier run that took minutes)."""
    from keras_efficient3d.deploy import benchmark as timing

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tflite_timing.json").write_text("[]")
    monkeypatch.setattr(timing, function, lambda *args, **kwargs: [{"side": mode}])
    for formatter in ("format_op_profile", "format_packing", "format_stacking"):
        monkeypatch.setattr(timing, formatter, lambda rows: "table")
    script = _script_module("benchmark_tflite")
    assert cli.invoke(script.main, script.define_flags,
                      ["benchmark_tflite.py", f"--{mode}", "--threads=1"]) == 0
    assert (tmp_path / "tflite_timing.json").read_text() == "[]"
    assert json.loads((tmp_path / expected).read_text()) == [{"side": mode}]
    # --json_out given still decides
    assert cli.invoke(script.main, script.define_flags,
                      ["benchmark_tflite.py", f"--{mode}", "--threads=1", "--json_out=x.json"]) == 0
    assert json.loads((tmp_path / "x.json").read_text()) == [{"side": mode}]


def test_openvino_model_file_leaves_the_main_result_file_alone(tmp_path, monkeypatch):
    import types

    monkeypatch.chdir(tmp_path)
    (tmp_path / "openvino_timing.json").write_text("[]")
    (tmp_path / "m.xml").write_text("<net/>")
    monkeypatch.setitem(sys.modules, "openvino", types.ModuleType("openvino"))
    export = types.ModuleType("keras_efficient3d.deploy.openvino_export")
    export.ir_label = lambda path: "fp32"
    monkeypatch.setitem(sys.modules, "keras_efficient3d.deploy.openvino_export", export)
    script = _script_module("benchmark_openvino")
    monkeypatch.setattr(script, "time_files", lambda files, *args, **kwargs: [
        {"label": "m.xml", "threads": 1, "median_ms": 2.0, "clips_per_s": 500.0,
         "size_bytes": 10}])
    assert cli.invoke(script.main, script.define_flags,
                      ["benchmark_openvino.py", "--model_file=m.xml", "--threads=1"]) == 0
    assert (tmp_path / "openvino_timing.json").read_text() == "[]"
    assert json.loads((tmp_path / "openvino_file_timing.json").read_text())[0]["label"] == "m.xml"


def test_onnx_forms_checks_every_name_before_exporting_any(monkeypatch, capsys):
    script = _script_module("benchmark_onnx_forms")

    def compare_forms(*args, **kwargs):
        raise AssertionError("a model was built before every name was checked")
    monkeypatch.setattr(script, "compare_forms", compare_forms)
    code = cli.invoke(script.main, script.define_flags,
                      ["benchmark_onnx_forms.py", "--models=mobilenetv2,nosuchnet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("benchmark_onnx_forms.py: error: Unknown model 'nosuchnet'. "
                             "Available: c3d, mobilenetv1")


def test_peers_that_match_no_timed_model_are_noted(tmp_path, capsys, monkeypatch):
    """A --peers_json of other models, threads or clips would leave the table without peer
    columns, silently."""
    path = tmp_path / "peers.json"
    path.write_text(json.dumps(_pytorch_rows()))  # mobilenetv2_0.2x, 4x32x32
    note = f"note: no row of --peers_json={path} is of a timed model at 2 threads, batch 1, "
    for models, threads in ((["shufflenetv2_0.25x"], (2,)), (["mobilenetv2_0.2x"], (1,))):
        peers_and_peaks(models, str(path), (4, 32, 32), threads, measure_peak=False)
        err = capsys.readouterr().err
        assert err == note + "4x32x32 clips: the table has no peer columns\n"
    peers_and_peaks(["mobilenetv2_0.2x"], str(path), (4, 32, 32), (1, 2), measure_peak=False)
    assert capsys.readouterr().err == ""

    # deployment/benchmark.py matches by mode, batch, threads and clip too
    bench = _script_module("benchmark")
    rows = [{"model": "mobilenetv2_0.2x", "form": "keras", "mode": "inference", "batch_size": 1,
             "threads": 2, "input": "4x32x32", "median_ms": 10.0, "clips_per_s": 100.0}]
    argv = ["benchmark.py", "--models=mobilenetv2_0.2x", "--frames=4", "--size=32",
            "--batch_sizes=1", f"--peers_json={path}"]
    for extra, noted in (([], False), (["--threads=4"], True)):
        run = [dict(row, threads=4 if extra else 2) for row in rows]
        monkeypatch.setattr(bench, "run", lambda *args, run=run, **kwargs: run)
        assert cli.invoke(bench.main, bench.define_flags, argv + extra) == 0
        err = capsys.readouterr().err
        assert ("note: no row of --peers_json" in err) == noted, err


def test_rows_are_written_atomically_without_the_package(tmp_path):
    """benchmark.py, benchmark_pytorch.py and compare_commits.py write their rows through
    write_rows: a failure while writing keeps the file of the run before whole, and it needs
    neither the package nor TensorFlow (benchmark_pytorch.py's PyTorch-only environment)."""
    path = tmp_path / "rows.json"
    path.write_text("[\"the run before\"]")
    code = ("import sys\n"
            "for name in ('tensorflow', 'keras', 'keras_efficient3d'):\n"
            "    sys.modules[name] = None  # import fails\n"
            "sys.path.insert(0, 'deployment')\n"
            "from benchmark import write_rows\n"
            "class Unwritable:\n"
            "    def __str__(self):\n"
            "        raise RuntimeError('cannot be written')\n"
            "try:\n"
            "    write_rows([{'median_ms': 1.0}, {'model': Unwritable()}], sys.argv[1])\n"
            "except (RuntimeError, TypeError):\n"
            "    pass\n"
            "else:\n"
            "    raise SystemExit('written')\n"
            "print(open(sys.argv[1]).read())\n"
            "write_rows([{'median_ms': 2.0}], sys.argv[1])\n")
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "[\"the run before\"]\n"
    assert json.loads(path.read_text()) == [{"median_ms": 2.0}]
    assert sorted(os.listdir(tmp_path)) == ["rows.json"]  # no temporary file left


def test_onnx_forms_removes_its_temporary_exports(tmp_path, monkeypatch):
    import tempfile

    import keras_efficient3d
    from keras_efficient3d import runtime
    from keras_efficient3d.deploy import onnx_export

    forms = _script_module("benchmark_onnx_forms")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(keras_efficient3d, "create_model", lambda *args, **kwargs: None)
    exported = []

    def export(model, path, **kwargs):
        exported.append(path)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("onnx")
    monkeypatch.setattr(onnx_export, "export_onnx", export)
    monkeypatch.setattr(forms, "_runners", lambda path, threads: {"onnxruntime": None})
    monkeypatch.setattr(runtime, "measure", lambda step, warmup, runs: {"median_ms": 2.0})
    rows = forms.compare_forms(["mobilenetv2_0.2x"], rounds=1)
    assert [(r["runtime"], r["ratio"]) for r in rows] == [("onnxruntime", 1.0)]
    assert len(exported) == 2 and str(tmp_path) in exported[0]
    assert os.listdir(tmp_path) == []


def test_backends_rows_give_the_median_of_an_even_count_of_rounds(monkeypatch):
    """Two rounds of 1 and 3 s: the median is 2 s, not the upper one."""
    script = _script_module("benchmark_backends")

    class Worker:
        def __init__(self):
            self.stdin = self
            self.log = self
            self.answers = iter(["1.0", "3.0"])

        def write(self, text):
            pass

        def flush(self):
            pass

        def kill(self):
            pass

        def wait(self):
            pass

        def close(self):
            pass
    monkeypatch.setattr(script, "_start", lambda *args: Worker())
    monkeypatch.setattr(script, "_answer", lambda proc, accept: next(proc.answers))
    rows = script.run_backends(["mobilenetv2_0.2x"], backends=("tensorflow",),
                               modes=("inference",), rounds=2, runs=1, log=None,
                               allocator="system")
    assert (rows[0]["min_ms"], rows[0]["median_ms"], rows[0]["max_ms"]) == (1000.0, 2000.0, 3000.0)
    assert rows[0]["clips_per_s"] == 0.5


@pytest.mark.parametrize("args, expected", [
    (["--frames=8"], "--frames is not used with --model_file: nothing is exported, the file is "
                     "timed as it is (its clip, classes and precision are the file's)"),
    (["--size=32", "--num_classes=5"], "--size and --num_classes are not used with --model_file"),
    (["--peers_json={peers}", "--gemm_peak"],
     "--peers_json and --gemm_peak are not used with --model_file"),
    # every flag given, in one refusal; turning the peak off agrees with what happens
    (["--size=32", "--precisions=fp32", "--models=mobilenetv2_0.2x", "--frames=8", "--nogemm_peak"],
     "--frames and --size and --models and --precisions are not used with --model_file"),
])
def test_openvino_model_file_refuses_the_flags_it_would_ignore(args, expected, tmp_path, capsys):
    script = _script_module("benchmark_openvino")
    (tmp_path / "m.xml").write_text("<net/>")
    (tmp_path / "peers.json").write_text(json.dumps(_pytorch_rows()))
    argv = [arg.format(peers=tmp_path / "peers.json") for arg in args]
    code = cli.invoke(script.main, script.define_flags,
                      ["benchmark_openvino.py", f"--model_file={tmp_path / 'm.xml'}", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("benchmark_openvino.py: error: " + expected), err


def test_openvino_script_says_nncf_is_missing_before_exporting(tmp_path, monkeypatch, capsys):
    """int8 (in the default precisions) quantises with NNCF: without it the script ended in
    an ImportError traceback after the GEMM peak and the fp32 export."""
    import sys

    script = _script_module("benchmark_openvino")
    monkeypatch.setitem(sys.modules, "nncf", None)
    monkeypatch.setattr(script, "benchmark_models", lambda *a, **k: pytest.fail("exported"))
    code = cli.invoke(script.main, script.define_flags,
                      ["benchmark_openvino.py", "--models=mobilenetv2_0.2x",
                       f"--json_out={tmp_path / 'o.json'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "quantises with NNCF, which is not installed" in err[0] and "--precisions=fp32" in err[0]


@pytest.mark.parametrize("args, expected", [
    (["--op_profile", "--models=mobilenetv2_0.2x"], "--models is not used with --op_profile"),
    (["--op_profile", "--size=56", "--rounds=3"], "--size and --rounds are not used with --op_profile"),
    (["--packing", "--precisions=int8"], "--precisions is not used with --packing"),
    (["--stacking", "--nogemm_peak"], "--gemm_peak is not used with --stacking"),
    (["--packing", "--peers_json={peers}"], "--peers_json is not used with --packing"),
    (["--rounds=3"], "--rounds is not used with the table of the models"),
])
def test_tflite_modes_refuse_the_flags_they_would_ignore(args, expected, tmp_path, capsys):
    script = _script_module("benchmark_tflite")
    (tmp_path / "peers.json").write_text(json.dumps(_pytorch_rows()))
    argv = [arg.format(peers=tmp_path / "peers.json") for arg in args]
    code = cli.invoke(script.main, script.define_flags, ["benchmark_tflite.py", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("benchmark_tflite.py: error: " + expected), err


def test_targets_peers_choose_among_the_rows_of_peers_json(tmp_path, monkeypatch, capsys):
    from keras_efficient3d.deploy import targets

    script = _script_module("benchmark_targets")
    seen = {}

    def run_targets(names, folder, input_shape, num_classes, threads, rounds, warmup, runs,
                    runtimes, peer_steps, peer_ms, peak, log):
        seen["peer_ms"] = peer_ms
        return []
    monkeypatch.setattr(targets, "run_targets", run_targets)
    peers = tmp_path / "peers.json"
    peers.write_text(json.dumps([dict(_pytorch_rows()[0], input="4x32x32"),
                                 dict(_pytorch_rows()[0], form="openvino", median_ms=9.0)]))
    argv = ["benchmark_targets.py", "--models=mobilenetv2_0.2x", "--frames=4", "--size=32",
            "--nogemm_peak", f"--json_out={tmp_path / 't.json'}", f"--work_dir={tmp_path}"]
    assert cli.invoke(script.main, script.define_flags,
                      argv + [f"--peers_json={peers}", "--peers=original-openvino"]) == 0
    assert seen["peer_ms"] == {"mobilenetv2_0.2x": {"original-openvino": 9.0}}
    assert cli.invoke(script.main, script.define_flags, argv + [f"--peers_json={peers}"]) == 0
    assert seen["peer_ms"] == {"mobilenetv2_0.2x": {"original-pytorch": 30.0,
                                                    "original-openvino": 9.0}}
    capsys.readouterr()
    # none of the file's rows of the peer chosen: noted, as for a file of other models
    assert cli.invoke(script.main, script.define_flags, argv + [
        f"--peers_json={peers}", "--peers=original-onnxruntime"]) == 0
    assert "note: no row of --peers_json" in capsys.readouterr().err
    assert cli.invoke(script.main, script.define_flags, argv + ["--peers=original-pytorch"]) == 2
    assert capsys.readouterr().err == ("benchmark_targets.py: error: --peers chooses among the "
                                       "peers of --repo or --peers_json: give one of them\n")


def test_pytorch_benchmark_refuses_training_only_onnx_peers(tmp_path, capsys, monkeypatch):
    """The ONNX peers run at inference: --mode=train with none but them timed nothing and
    exited 0."""
    script = _script_module("benchmark_pytorch")
    code = cli.invoke(script.main, script.define_flags,
                      ["benchmark_pytorch.py", f"--repo={_fake_original(tmp_path)}",
                       "--models=mobilenetv2_1.0x", "--mode=train",
                       "--peers=openvino,onnxruntime"])
    assert code == 2
    assert capsys.readouterr().err == (
        "benchmark_pytorch.py: error: --peers=openvino,onnxruntime leaves nothing to time at "
        "--mode=train (openvino: timed at inference only; onnxruntime: timed at inference only)\n")
    lines = []

    def build(*args):
        raise RuntimeError("stopped before the model is built")
    monkeypatch.setattr(script, "build", build)
    with pytest.raises((cli.UsageError, RuntimeError)):  # PyTorch missing, or stopped
        script.run(str(tmp_path), ["mobilenetv2_1.0x"], mode="train",
                   peers=("pytorch", "openvino"), log=lines.append)
    assert lines == ["openvino peer skipped: timed at inference only"]


def test_pytorch_benchmark_refuses_onnx_peers_whose_runtimes_are_all_missing(tmp_path, capsys,
                                                                             monkeypatch):
    """At inference, ONNX peers none of whose runtimes is installed timed nothing and exited
    0, as the training-only ones did."""
    pytest.importorskip("torch")
    script = _script_module("benchmark_pytorch")
    monkeypatch.setattr(sys, "path", list(sys.path))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in (
        "onnxruntime", "openvino") else find_spec(name, *a))
    try:
        code = cli.invoke(script.main, script.define_flags,
                          ["benchmark_pytorch.py", f"--repo={_torch_original(tmp_path)}",
                           "--models=mobilenetv2_1.0x", "--peers=onnxruntime,openvino",
                           "--batch_sizes=1", "--frames=4", "--size=16", "--runs=1"])
    finally:
        for name in ("opts", "model"):
            sys.modules.pop(name, None)
    assert code == 2
    assert capsys.readouterr().err == (
        "benchmark_pytorch.py: error: --peers=onnxruntime,openvino leaves nothing to time at "
        "--mode=inference (onnxruntime: onnxruntime is not installed; openvino: openvino is not "
        "installed)\n")


def test_a_worker_stopped_in_its_warm_up_is_killed(monkeypatch):
    """Ctrl-C while a worker warmed up: the script said "interrupted" and ended, and the
    worker, not yet among the jobs it stops, compiled on for minutes."""
    script = _script_module("benchmark_backends")
    started = []

    class Worker:
        stdout = None

        def __init__(self, *args, **kwargs):
            self.killed = False
            started.append(self)

        def kill(self):
            self.killed = True

        def wait(self):
            return -9

    def interrupted(proc, accept):
        raise KeyboardInterrupt

    monkeypatch.setattr(script.subprocess, "Popen", Worker)
    monkeypatch.setattr(script, "_answer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        script._start("tensorflow", None, "mobilenetv2_0.2x", "inference", (8, 32, 4, 2, 1, 1, 2), 2)
    assert len(started) == 1 and started[0].killed


def test_the_scripts_flags_as_a_user_meets_them(tmp_path, capsys):
    """Found by a walkthrough: benchmark_pytorch.py --help listed 3 of its 13 flags (the
    others are defined in benchmark.py); benchmark_onnx.py timed at ONNX Runtime's default
    threads where every other script and --peers_json's rows are of 2; an --onnx_dir naming
    a file was "error: m.onnx: File exists"; a --stem_folds a stem does not take was the
    export's error, in its argument's name and the Keras model's."""
    help_text = subprocess.run(
        [sys.executable, os.path.join(ROOT, "deployment", "benchmark_pytorch.py"), "--help"],
        capture_output=True, text=True, timeout=120).stdout
    for flag in ("--models", "--batch_sizes", "--mode", "--threads", "--runs", "--json_out",
                 "--repo", "--peers", "--onnx_dir"):
        assert f"  {flag}" in help_text, flag
    onnx_script = _script_module("benchmark_onnx")
    values = flags.FlagValues()
    onnx_script.define_flags(values)
    assert values["threads"].default == 2
    pytorch_script = _script_module("benchmark_pytorch")
    (tmp_path / "m.onnx").write_text("x")
    status = cli.invoke(pytorch_script.main, pytorch_script.define_flags,
                        ["benchmark_pytorch.py", f"--repo={tmp_path}",
                         f"--onnx_dir={tmp_path / 'm.onnx'}"])
    err = capsys.readouterr().err
    assert status == 2 and "--onnx_dir" in err and "is an existing file; a folder is needed" in err
    openvino_script = _script_module("benchmark_openvino")
    status = cli.invoke(openvino_script.main, openvino_script.define_flags,
                        ["benchmark_openvino.py", "--models=mobilenetv2_0.2x", "--stem_folds=1,3",
                         "--size=64", "--frames=8", "--nogemm_peak"])
    assert status == 2 and capsys.readouterr().err.strip() == (
        "benchmark_openvino.py: error: --stem_folds=1,3: mobilenetv2_0.2x's stem at 64 pixels "
        "takes 1, 2, 4, 8, 16, not 3")
