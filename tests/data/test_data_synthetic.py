"""Synthetic gestures: layouts readable by the real readers, determinism, motion-only classes."""

import filecmp
import json
import os

import numpy as np
import pytest

from keras_efficient3d import cli
from keras_efficient3d.data import count_frames, index_folders, index_jester, make_dataset, read_video, synthetic
from keras_efficient3d.data import synthetic as synthetic_module

SMALL = dict(videos_per_class=3, frames=8, size=48, val_fraction=0.34)


def test_jester_layout_goes_through_the_jester_reader(tmp_path):
    root = synthetic.generate(str(tmp_path / "g"), "jester", seed=1, **SMALL)
    train, classes = index_jester(root, "train")
    val, val_classes = index_jester(root, "validation")
    assert classes == val_classes == list(synthetic.CLASSES) and len(classes) >= 8
    assert len(train) == 8 * 2 and len(val) == 8 * 1
    assert all(r.kind == "frames" and r.num_frames == 8 for r in train + val)
    assert sorted(r.label for r in val) == list(range(8))
    assert not {r.video_id for r in train} & {r.video_id for r in val}
    meta = json.load(open(os.path.join(root, "synthetic_gestures.json")))
    assert meta["seed"] == 1 and meta["classes"] == classes
    clips, labels = next(iter(make_dataset(train, "train", sample_duration=4, sample_size=32, batch_size=4, seed=0)))
    assert clips.shape == (4, 4, 32, 32, 3)


@pytest.mark.parametrize("video_format", ["mp4", "avi", "webm"])
def test_video_layout_goes_through_the_folder_reader(tmp_path, video_format):
    root = synthetic.generate(str(tmp_path / "v"), "video", seed=0, video_format=video_format, **SMALL)
    train, classes = index_folders(root, "train")
    val, _ = index_folders(root, "val")
    assert classes == sorted(name.replace(" ", "_") for name in synthetic.CLASSES)
    assert len(train) == 16 and len(val) == 8
    assert all(r.path.endswith("." + video_format) for r in train)
    assert count_frames(train[0].path, exact=True) == 8
    assert read_video(train[0].path).shape == (8, 48, 48, 3)


def test_generation_is_deterministic_for_a_seed(tmp_path):
    a = synthetic.generate(str(tmp_path / "a"), "jester", seed=3, **SMALL)
    b = synthetic.generate(str(tmp_path / "b"), "jester", seed=3, **SMALL)
    c = synthetic.generate(str(tmp_path / "c"), "jester", seed=4, **SMALL)
    for name in ("jester-v1-train.csv", "jester-v1-validation.csv", "jester-v1-labels.csv"):
        assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False)
    frame = os.path.join("5", "00004.jpg")
    assert filecmp.cmp(os.path.join(a, frame), os.path.join(b, frame), shallow=False)
    assert not filecmp.cmp(os.path.join(a, frame), os.path.join(c, frame), shallow=False)
    v1 = synthetic.render_video(2, np.random.default_rng(9), 8, 48)
    v2 = synthetic.render_video(2, np.random.default_rng(9), 8, 48)
    np.testing.assert_array_equal(v1, v2)


def test_classes_are_defined_by_motion_only():
    """Opposite classes move the same kinds of objects over the same ranges, in opposite directions."""
    size, frames = 128, 32
    index = {name: i for i, name in enumerate(synthetic.CLASSES)}

    def tracks(name, n=40):
        return [synthetic_module._trajectory(index[name], np.random.default_rng(s), frames, size) for s in range(n)]

    for a, b, quantity in (("Swiping Left", "Swiping Right", 0), ("Swiping Up", "Swiping Down", 1),
                           ("Zooming In", "Zooming Out", 2), ("Turning Clockwise", "Turning Anticlockwise", 3)):
        for sign, name in ((-1, a), (1, b)) if quantity in (0, 1) else ((1, a), (-1, b)):
            for track in tracks(name):
                steps = np.diff(track[quantity])
                assert np.all(sign * steps > 0), f"{name}: quantity {quantity} does not move monotonically"
        # Any single frame's value of the moving quantity is seen in both classes.
        values_a = np.concatenate([t[quantity] for t in tracks(a)])
        values_b = np.concatenate([t[quantity] for t in tracks(b)])
        lo, hi = max(values_a.min(), values_b.min()), min(values_a.max(), values_b.max())
        assert (hi - lo) > 0.5 * (values_a.max() - values_a.min()), f"{a}/{b} ranges barely overlap"


def test_rendered_object_moves_and_contrasts():
    video = synthetic.render_video(synthetic.CLASSES.index("Swiping Right"), np.random.default_rng(0), 32, 128)
    assert video.shape == (32, 128, 128, 3) and video.dtype == np.uint8
    diff = np.abs(video[-1].astype(int) - video[0].astype(int)).mean(axis=-1)
    assert (diff > 60).mean() > 0.03  # a large, contrasted object has moved


def test_cli_and_argument_validation(tmp_path, capsys):
    status = cli.invoke(synthetic.main, synthetic.define_flags, [
        "synthetic", "--output", str(tmp_path / "cli"), "--videos_per_class", "1", "--frames", "4",
        "--size", "32", "--layout", "video", "--video_format", "avi"])
    assert status == 0
    out = capsys.readouterr().out
    assert "wrote 8 videos" in out and "in place of" not in out
    assert len(index_folders(str(tmp_path / "cli"), "train")[0]) == 8  # 1 video per class: no validation
    # over the set just written: replaced whole, and said
    assert cli.invoke(synthetic.main, synthetic.define_flags, [
        "synthetic", "--output", str(tmp_path / "cli"), "--videos_per_class", "1", "--frames",
        "4", "--size", "32", "--layout", "video"]) == 0
    assert (f"wrote 8 videos (video layout) to {tmp_path / 'cli'} in place of the set "
            "generated there before in ") in capsys.readouterr().out
    with pytest.raises(ValueError, match="layout"):
        synthetic.generate(str(tmp_path / "x"), "kinetics")
    with pytest.raises(ValueError, match="frames"):
        synthetic.generate(str(tmp_path / "x"), frames=1)
    with pytest.raises(ValueError, match="label"):
        synthetic.render_video(99, np.random.default_rng(0))


def test_a_set_generated_over_another_replaces_it_whole(tmp_path, monkeypatch):
    """Generated over an earlier set with other arguments, the old videos stayed among the
    new: the same video in both splits, 8-frame folders under a record saying 4."""
    root = str(tmp_path / "v")
    synthetic.generate(root, "video", seed=0, videos_per_class=4, frames=4, size=32, val_fraction=0.25)
    synthetic.generate(root, "video", seed=0, videos_per_class=4, frames=4, size=32, val_fraction=0.5)
    train, _ = index_folders(root, "train")
    val, _ = index_folders(root, "val")
    assert (len(train), len(val)) == (16, 16)
    assert not {os.path.relpath(r.path, root).split(os.sep, 1)[1] for r in train} & \
        {os.path.relpath(r.path, root).split(os.sep, 1)[1] for r in val}
    jester = str(tmp_path / "j")
    synthetic.generate(jester, "jester", seed=1, videos_per_class=2, frames=8, size=32)
    synthetic.generate(jester, "jester", seed=1, videos_per_class=2, frames=4, size=32)
    assert {r.num_frames for r in index_jester(jester, "train")[0]} == {4}
    assert sorted(os.listdir(tmp_path)) == ["j", "v"]  # nothing left beside them
    # a folder of other files is not written into
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match=r"mine holds files of no generated set \(no "
                                         r"synthetic_gestures.json\)"):
        synthetic.generate(str(tmp_path / "mine"), "video", seed=0, videos_per_class=2, frames=4, size=32)
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]
    # an interrupted generation leaves the earlier set whole and no half-written folder
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic_module, "_write_video", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate(root, "video", seed=0, videos_per_class=2, frames=4, size=32)
    assert len(index_folders(root, "train")[0]) == 16
    assert sorted(os.listdir(tmp_path)) == ["j", "mine", "v"]
