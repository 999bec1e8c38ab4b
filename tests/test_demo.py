"""The demo's deployment and publishing steps (keras_efficient3d.demo.pipeline): the shipped files, their
metadata and the model card, from a tiny model and a made-up deployment report."""

import os
import platform

import numpy as np
import pytest

from helpers import export_tflite, tiny_model
from keras_efficient3d.artifacts import read_metadata, save_model
from keras_efficient3d.demo import demo_config, pipeline
from keras_efficient3d.deploy import quantize
from keras_efficient3d.runtime import load_runner


def test_publish_writes_the_model_its_tflite_forms_metadata_and_card(tmp_path):
    config = demo_config(str(tmp_path), str(tmp_path / "data"), frames=8, size=32)
    classes = ["left", "right", "up", "down"]
    model = tiny_model(8, 32, len(classes))
    best = save_model(model, str(tmp_path / "best.keras"))
    fp32 = export_tflite(model, str(tmp_path / "fp32.tflite"))
    row = {"video_top1": 0.9, "clip_top1": 0.8, "latency_ms": 1.5, "size_kb": 12.0, "path": fp32}
    report = {"deploy": {"fp32": row, "ptq_int8": dict(row, video_top1=0.85)}}
    float_results = {"video_top1": 0.95, "clip_top1": 0.9, "num_videos": 10}
    out = tmp_path / "published"
    written = pipeline.publish(report, best, config, classes, float_results, str(out))
    assert [os.path.basename(p) for p in written] == [
        "synthetic_gestures.keras", "synthetic_gestures_fp32.tflite", "synthetic_gestures_int8.tflite"]
    for path in written:
        meta = read_metadata(path)
        assert (meta.frames, meta.size, meta.downsample, meta.labels) == (8, 32, 2, classes), path
        assert meta.value_range == "0-1" and meta.output == "logits" and not meta.preprocessing_included
        assert meta.extra["card"]["accuracy_video_top1"] == {"keras": 0.95, "fp32": 0.9, "ptq_int8": 0.85}
    clips = np.random.default_rng(0).random((2, 8, 32, 32, 3), np.float32)
    np.testing.assert_allclose(load_runner(written[0])(clips), load_runner(written[2])(clips),
                               rtol=1e-4, atol=1e-4)
    card = (out / "MODEL_CARD.md").read_text()
    assert "| TFLite ptq_int8 | synthetic_gestures_int8.tflite | 85.00% | 80.00% | 1.5 ms | 12 KB |" in card
    # the machine it was measured on is this one, not a fixed claim
    assert f"the machine that produced the model ({os.cpu_count()}-core {platform.machine()})" in card
    assert "the int8 file's top-1 can differ from the float files', confidently" in card
    assert sorted(os.listdir(out)) == sorted(
        [os.path.basename(p) for p in written] + ["MODEL_CARD.md", "synthetic_gestures_fp32.tflite.json",
                                                  "synthetic_gestures_int8.tflite.json"])


def test_a_publish_that_fails_leaves_the_earlier_one_as_it_was(tmp_path, monkeypatch):
    config = demo_config(str(tmp_path), str(tmp_path / "data"), frames=8, size=32)
    model = tiny_model(8, 32, 2)
    best = save_model(model, str(tmp_path / "best.keras"))
    fp32 = export_tflite(model, str(tmp_path / "fp32.tflite"))
    row = {"video_top1": 0.9, "clip_top1": 0.8, "latency_ms": 1.5, "size_kb": 12.0, "path": fp32}
    report = {"deploy": {"fp32": row}}
    results = {"video_top1": 0.95, "clip_top1": 0.9, "num_videos": 10}
    out = tmp_path / "published"
    pipeline.publish(report, best, config, ["a", "b"], results, str(out))
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}

    def failing(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "atomic_write", failing)  # the card, written last
    with pytest.raises(OSError):
        pipeline.publish(report, best, config, ["c", "d"], results, str(out))
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before  # no stage
    # what cannot be written is found before the demo trains
    (out / "MODEL_CARD.md").unlink()
    (out / "MODEL_CARD.md").mkdir()
    with pytest.raises(ValueError, match=r"--publish=.*published: MODEL_CARD.md there is a "
                                         "folder, not a file"):
        pipeline.check_publish(str(out))
    with pytest.raises(ValueError, match=r"best.keras: not a folder"):
        pipeline.check_publish(best)


def test_the_demo_without_litert_skips_deployment_or_refuses_to_publish(tmp_path, monkeypatch):
    import importlib.util

    import keras_efficient3d.demo as demo
    from keras_efficient3d.data import synthetic

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ai_edge_litert" else found(name, *a))
    generated = []
    monkeypatch.setattr(synthetic, "generate", lambda *a, **k: generated.append(1) or 1 / 0)
    with pytest.raises(ValueError, match=r"--publish writes the TFLite files, and LiteRT "
                                         r"\(ai_edge_litert\) is not installed"):
        demo.run(str(tmp_path / "run"), publish=str(tmp_path / "pub"))
    assert not generated  # refused before anything ran
    lines = []
    with pytest.raises(ZeroDivisionError):  # (the stand-in dataset generator)
        demo.run(str(tmp_path / "run"), log=lines.append)
    assert lines[0].startswith("note: LiteRT (ai_edge_litert) is not installed: the "
                               "deployment step is skipped")


def test_a_demo_run_clears_the_last_runs_report_and_models_first(tmp_path, monkeypatch):
    """A run stopped mid-way, or one without the deployment step, left the last run's report
    (naming a best.keras the new training had replaced) and TFLite files beside its own."""
    import keras_efficient3d.demo as demo
    from keras_efficient3d.data import synthetic

    out = tmp_path / "run"
    (out / "models").mkdir(parents=True)
    (out / "models" / "synthetic_gestures_fp32.tflite").write_bytes(b"old")
    for name in ("report.json", "report.md", "float_results.json", "float_confusion.png"):
        (out / name).write_text("old")
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(synthetic, "generate", lambda *a, **k: 1 / 0)  # stops after the clearing
    with pytest.raises(ZeroDivisionError):
        demo.run(str(out), deploy=False, log=lambda line: None)
    assert sorted(os.listdir(out)) == ["notes.txt"]
    # one video per class leaves no validation video: refused before the data is generated
    with pytest.raises(ValueError, match="--videos_per_class=1 leaves no validation video"):
        demo.run(str(out), deploy=False, videos_per_class=1, log=lambda line: None)
    # A demo run over an earlier one says it moves it aside, without the trainer's --resume
    # hint: the demo has no --resume.
    from keras_efficient3d import trainer

    calls = []
    monkeypatch.setattr(synthetic, "generate", lambda *a, **k: None)
    monkeypatch.setattr(trainer, "train", lambda *a, **k: calls.append(k) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        demo.run(str(out), deploy=False, log=lambda line: None)
    assert calls == [{"resume_hint": None}]


def test_qat_keeps_the_epoch_of_best_validation_accuracy_its_start_included():
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    start = [w.copy() for w in model.get_weights()]

    def epoch(keep, number, accuracy):
        model.set_weights([w + number for w in start])  # what an epoch of training changes
        keep.on_epoch_end(number - 1, {"val_accuracy": accuracy})

    keep = quantize._KeepBest(0.9)  # the calibrated model's accuracy, before any epoch
    keep.set_model(model)
    epoch(keep, 1, 0.8)
    epoch(keep, 2, 0.85)
    keep.on_train_end()
    assert keep.epoch == 0 and keep.accuracies == [0.9, 0.8, 0.85]
    np.testing.assert_array_equal(model.get_weights()[0], start[0])
    # a tie keeps the later, more trained, epoch; a better one after it is kept over it
    for accuracies, kept in (((0.9, 0.8), 1), ((0.9, 0.95), 2)):
        model.set_weights(start)
        keep = quantize._KeepBest(0.9)
        keep.set_model(model)
        for number, accuracy in enumerate(accuracies, 1):
            epoch(keep, number, accuracy)
        keep.on_train_end()
        assert keep.epoch == kept
        np.testing.assert_array_equal(model.get_weights()[0], start[0] + kept)


@pytest.mark.slow
def test_deploy_scores_each_tflite_file_then_times_them_in_turns(tmp_path):
    from keras_efficient3d import create_model, trainer
    from keras_efficient3d.data import synthetic

    root = synthetic.generate(str(tmp_path / "gestures"), layout="jester", videos_per_class=5, seed=1,
                              frames=16, size=40)
    config = trainer.TrainConfig(dataset="synthetic", data_root=root, model="mobilenetv2", width_mult=0.2,
                                 frames=8, size=32, batch_size=4, normalization="unit",
                                 output_dir=str(tmp_path / "run"), verbose=0)
    records, classes = trainer.load_split(config, "validation")
    model = create_model("mobilenetv2", width_mult=0.2, input_shape=(8, 32, 32, 3),
                         num_classes=len(classes))
    lines = []
    report = pipeline.deploy_demo(model, config, records, classes, str(tmp_path / "out"), qat_epochs=1,
                                  threads=1, log=lines.append)
    for key in ("fp32", "ptq_int8", "qat_int8"):
        row = report[key]
        assert os.path.isfile(row["path"]) and 0 <= row["video_top1"] <= 1
        # three rounds of every file in turns, after all were scored
        assert len(row["round_medians_ms"]) == 3 and row["latency_ms"] == pytest.approx(
            sorted(row["round_medians_ms"])[1])
    kept, accuracies = (report["qat_int8"][k] for k in ("kept_epoch",
                                                        "validation_accuracy_by_epoch"))
    assert kept in (0, 1) and report["qat_int8"]["note"] == (
        f"quantization-aware training, 1 epochs, kept epoch {kept} (best validation accuracy)")
    assert len(accuracies) == 2 and accuracies[kept] == max(accuracies)
    assert f"  QAT: kept epoch {kept} of 1; validation accuracy by epoch (0: calibrated, " \
           f"before the first): {100 * accuracies[0]:.2f}%, {100 * accuracies[1]:.2f}%" in lines
    timing = [i for i, line in enumerate(lines) if "ms/clip" in line]
    scoring = [i for i, line in enumerate(lines) if "video top-1" in line]
    assert len(timing) == 3 and len(scoring) == 3 and min(timing) > max(scoring)
    # each file has its sidecar, which predict reads: the frame step, the normalisation and
    # the class names (it assumed every frame and the 'original' normalisation without it)
    from keras_efficient3d.predict.stream import resolve_spec

    for key in ("fp32", "ptq_int8", "qat_int8"):
        meta = read_metadata(report[key]["path"])
        assert (meta.downsample, meta.labels, meta.value_range) == (config.downsample, classes,
                                                                     "0-1"), key
        spec = resolve_spec(load_runner(report[key]["path"]))
        assert not spec.notes and spec.labels == classes and spec.downsample == config.downsample
        tensor = meta.to_dict()["input"]["tensor"]
        assert tensor["shape"][1:] == [8, 32, 32, 3] and tensor["dtype"] == "float32"


def _stub_repo(tmp_path, pip_status=0):
    """demo.sh in a repository (a path with a space) whose .venv's python is a stand-in
    that records its folder and arguments, and whose pip says something and exits
    `pip_status`."""
    import shutil
    import stat

    repo = tmp_path / "my repo"
    (repo / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(os.path.join(os.path.dirname(__file__), "..", "demo.sh"), repo / "demo.sh")
    (repo / "setup.py").write_text("# the package\n")
    python = repo / ".venv" / "bin" / "python"
    python.write_text("#!/usr/bin/env bash\n"
                      'if [ "$2" = pip ]; then echo "$*" >>"$(dirname "$0")/../pip-calls"; '
                      'echo "pip: some warning" >&2; exit ' + f"{pip_status}; fi\n"
                      'echo "cwd=$PWD"; printf "arg=%s\\n" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return repo


def test_demo_sh_runs_in_the_users_folder_and_keeps_pip_quiet(tmp_path):
    import subprocess

    repo = _stub_repo(tmp_path)
    user = tmp_path / "work dir"
    user.mkdir()
    proc = subprocess.run(["bash", str(repo / "demo.sh"), "--output=myrun"], cwd=user,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # --output=myrun is the user's folder's, not the repository's
    assert proc.stdout.splitlines() == [f"cwd={user}", "arg=-m", "arg=keras_efficient3d.demo",
                                        "arg=--output=myrun"]
    assert proc.stderr == ""  # pip's warnings in .venv/install.log, not on the screen
    calls = (repo / ".venv" / "pip-calls").read_text().splitlines()
    assert len(calls) == 2 and calls[1].endswith(f"-e {repo}[litert]")
    # a second run installs nothing (and needs no package index), until setup.py changes
    rerun = subprocess.run(["bash", str(repo / "demo.sh")], cwd=user, capture_output=True,
                           text=True, timeout=60)
    assert rerun.returncode == 0 and len((repo / ".venv" / "pip-calls").read_text().splitlines()) == 2
    (repo / "setup.py").write_text("# the package, with a new dependency\n")
    subprocess.run(["bash", str(repo / "demo.sh")], cwd=user, capture_output=True, timeout=60)
    assert len((repo / ".venv" / "pip-calls").read_text().splitlines()) == 4
    failing = _stub_repo(tmp_path / "b", pip_status=1)
    proc = subprocess.run(["bash", str(failing / "demo.sh")], cwd=user, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "pip: some warning",
        f"demo.sh: pip install --upgrade pip failed (its output above, and in "
        f"{failing}/.venv/install.log)"]
