"""The demo's deployment and publishing steps (keras_efficient3d.demo.pipeline): the shipped files, their
metadata and the model card, from a tiny model and a made-up deployment report."""

import os

import numpy as np
import pytest

from helpers import export_tflite, tiny_model
from keras_efficient3d.artifacts import read_metadata, save_model
from keras_efficient3d.demo import demo_config, pipeline
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
    assert sorted(os.listdir(out)) == sorted(
        [os.path.basename(p) for p in written] + ["MODEL_CARD.md", "synthetic_gestures_fp32.tflite.json",
                                                  "synthetic_gestures_int8.tflite.json"])


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
    timing = [i for i, line in enumerate(lines) if "ms/clip" in line]
    scoring = [i for i, line in enumerate(lines) if "video top-1" in line]
    assert len(timing) == 3 and len(scoring) == 3 and min(timing) > max(scoring)
