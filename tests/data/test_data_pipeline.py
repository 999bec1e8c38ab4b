"""The tf.data pipeline on real JPEG folders and encoded videos.

Every test video's frames carry their index (red/blue) and their label (green),
so each clip can be checked for the frames it holds and the label it came with.
"""

import dataclasses
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from data_media import frame_index, frame_tag, frames_rgb, write_frames, write_video
from keras_efficient3d.data import (
    DataError,
    DecodeFailures,
    VideoRecord,
    aggregate_video_predictions,
    make_dataset,
    spatial,
    video_level_accuracy,
)

SMALL = dict(sample_duration=4, sample_size=32, normalization="none")
LENGTHS = [20, 12, 9, 3]  # frames of the test video with label 0, 1, 2, 3


def tag(label):
    return 40 + 40 * label


def check_clip(clip, label, num_frames, downsample=1):
    """The clip holds frames of a video with ``label``: a loop-padded window, strided."""
    clip = np.asarray(clip)
    assert clip.shape == (4, 32, 32, 3)
    assert all(abs(frame_tag(frame) - tag(label)) <= 3 for frame in clip), "clip does not match its label"
    indices = [frame_index(frame) for frame in clip]
    assert 0 <= min(indices) and max(indices) < num_frames
    window = 4 * downsample
    begin = indices[0]
    expected = [list(range(begin, min(begin + window, num_frames)))[k % min(window, num_frames - begin)]
                for k in range(0, window, downsample)]
    assert indices == expected
    return indices


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Two JPEG folders and two mp4 videos, 4 labels, 20/12/9/3 frames."""
    root = str(tmp_path_factory.mktemp("pipeline"))
    out = []
    for label, n in enumerate(LENGTHS):
        frames = frames_rgb(n, tag=tag(label), height=48, width=64)
        if label % 2 == 0:
            path = write_frames(os.path.join(root, f"v{label}"), frames)
            out.append(VideoRecord(path, label, f"v{label}", "frames", n))
        else:
            path = write_video(os.path.join(root, f"v{label}.mp4"), frames, "mp4")
            out.append(VideoRecord(path, label, f"v{label}", "video", None))
    return out


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory):
    path = tmp_path_factory.mktemp("corrupt") / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    return VideoRecord(str(path), 3, "broken", "video", None)


def lengths_of(records):
    return {r.label: LENGTHS[r.label] for r in records}


def test_train_clips_hold_their_labels_and_valid_windows(records):
    lengths = lengths_of(records)
    ds = make_dataset(records, "train", batch_size=2, seed=1, downsample=2, **SMALL)
    assert ds.element_spec[0].shape.as_list() == [None, 4, 32, 32, 3]
    seen = []
    for _ in range(3):  # epochs
        for clips, labels in ds:
            assert clips.dtype == tf.float32 and labels.dtype == tf.int32
            for clip, label in zip(clips.numpy(), labels.numpy()):
                check_clip(clip, int(label), lengths[int(label)], downsample=2)
                seen.append(int(label))
    assert sorted(set(seen)) == [0, 1, 2, 3] and len(seen) == 12


def test_fit_counts_each_training_clip_once_per_epoch(records):
    """Keras' TensorFlow trainer runs one more step on the exhausted iterator of a dataset of
    unknown length; with a static batch size the metrics counted that step's batch without its
    values (a mean of ones came out 2/3 here: 2 batches of 2 of the 5 records, counted 3)."""
    import keras

    from keras_efficient3d.trainer import quiet_end_of_data

    more = records + records[:1]  # 5 records, batch 2: the last, incomplete batch is dropped
    ds = make_dataset(more, "train", batch_size=2, seed=1, **SMALL)
    # 1 for every label, computed from the labels (a constant would be counted in that step too).
    ones = keras.metrics.MeanMetricWrapper(
        lambda y_true, y_pred: keras.ops.cast(keras.ops.greater_equal(y_true, 0), "float32"), name="ones")
    model = keras.Sequential([keras.Input((4, 32, 32, 3)), keras.layers.GlobalAveragePooling3D(),
                              keras.layers.Dense(4)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[ones])
    with quiet_end_of_data():  # each pass ends the epoch, as in training
        history = model.fit(ds, epochs=2, verbose=0, shuffle=False)
    assert history.history["ones"] == [1.0, 1.0]
    assert sum(len(labels) for _, labels in ds) == 4


def test_seeded_pipelines_are_reproducible_and_epochs_differ(records):
    def epochs(seed):
        ds = make_dataset(records, "train", batch_size=4, seed=seed, deterministic=True, **SMALL)
        return [[(c.numpy(), l.numpy()) for c, l in ds] for _ in range(2)]

    first, again, other = epochs(5), epochs(5), epochs(6)
    for epoch_a, epoch_b in zip(first, again):
        for (ca, la), (cb, lb) in zip(epoch_a, epoch_b):
            np.testing.assert_array_equal(ca, cb)
            np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(first[0][0][0], first[1][0][0])  # a new epoch reshuffles and re-augments
    assert not np.array_equal(first[0][0][0], other[0][0][0])


def test_val_takes_the_centre_window(records):
    ds = make_dataset(records, "val", batch_size=3, **SMALL)
    clips, labels = [np.concatenate(x) for x in zip(*[(c.numpy(), l.numpy()) for c, l in ds])]
    assert labels.tolist() == [0, 1, 2, 3]  # no shuffling, last batch kept
    windows = [[frame_index(f) for f in clip] for clip in clips]
    # n=20: centre 10 - 2 = 8; n=12: 6 - 2 = 4; n=9: 4 - 2 = 2; n=3: 0 1 2 padded.
    assert windows == [[8, 9, 10, 11], [4, 5, 6, 7], [2, 3, 4, 5], [0, 1, 2, 0]]
    np.testing.assert_allclose([frame_tag(clip[0]) for clip in clips], [tag(i) for i in range(4)], atol=3)


def test_test_mode_yields_every_window_with_video_indices(records):
    ds = make_dataset(records, "test", batch_size=4, **SMALL)
    clips, labels, videos = [np.concatenate(x) for x in zip(*[(c.numpy(), l.numpy(), v.numpy()) for c, l, v in ds])]
    # Windows start before the last frame (the original's range(1, n_frames, step), 1-based):
    # 5 + 3 + 2 + 1 windows; the 9-frame video's last frame would start a window of itself.
    assert videos.tolist() == [0] * 5 + [1] * 3 + [2] * 2 + [3]
    assert labels.tolist() == [0] * 5 + [1] * 3 + [2] * 2 + [3]
    windows = [[frame_index(f) for f in clip] for clip in clips]
    assert windows[:5] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19]]
    assert windows[8:10] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert windows[10] == [0, 1, 2, 0]


def test_an_indexers_whole_result_is_refused_with_how_to_unpack_it(records):
    with pytest.raises(ValueError, match=r"pair of lists.*records, classes = index_folders") as caught:
        make_dataset((records, ["a", "b", "c", "d"]), "train", **SMALL)
    assert len(str(caught.value)) < 300  # not every record in the message


def test_decode_failures_are_skipped_counted_and_never_become_clips(records, corrupt, caplog):
    failures = DecodeFailures(limit=5)
    mixed = records + [corrupt]
    ds = make_dataset(mixed, "train", batch_size=1, seed=0, failures=failures, **SMALL)
    with caplog.at_level(logging.WARNING, logger="keras_efficient3d.data"):
        items = [(c.numpy()[0], int(l.numpy()[0])) for c, l in ds]
    assert len(items) == 4 and failures.count == 1 and failures.paths == [corrupt.path]
    lengths = lengths_of(records)
    for clip, label in items:
        assert clip.max() > 0  # never an all-black placeholder
        check_clip(clip, label, lengths[label])
    assert "broken.mp4" in caplog.text
    val = make_dataset(mixed, "val", batch_size=8, **SMALL)
    assert [l.numpy().tolist() for _, l in val] == [[0, 1, 2, 3]]


def test_a_video_that_fails_every_epoch_counts_once(records, corrupt, caplog):
    # A training pipeline decodes every video each epoch: counted per failure, one broken
    # video would use up --max_decode_failures over the epochs and stop a long run.
    failures = DecodeFailures(limit=1)
    ds = make_dataset(records + [corrupt], "train", batch_size=1, seed=0, failures=failures,
                      **SMALL)
    with caplog.at_level(logging.WARNING, logger="keras_efficient3d.data"):
        for _ in range(3):
            assert sum(1 for _ in ds) == 4
    assert failures.count == 1 and failures.paths == [corrupt.path]
    assert caplog.text.count("skipping ") == 1 and "broken.mp4" in caplog.text  # warned once
    assert "[1 video(s) that failed to decode so far]" in caplog.text
    # the label as an index where no class names are given; the name where they are
    assert f"skipping {corrupt.path} (label 3): cannot open video" in caplog.text  # path once
    failures = DecodeFailures(limit=1, class_names=["a", "b", "c", "Swiping Left"])
    ds = make_dataset([corrupt], "val", batch_size=1, failures=failures, **SMALL)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keras_efficient3d.data"):
        assert sum(1 for _ in ds) == 0
    assert f"skipping {corrupt.path} (class 'Swiping Left'): " in caplog.text


def test_too_many_decode_failures_stop_with_a_clear_error(records, corrupt):
    ds = make_dataset(records + [corrupt], "val", batch_size=8, max_decode_failures=0, **SMALL)
    with pytest.raises((tf.errors.OpError, DataError),
                       match=r"1 video failed to decode, more than max_decode_failures=0; the "
                             r"last: .*broken.mp4") as caught:
        for _ in ds:
            pass
    # the Python traceback tf.data carries holds the decoder's error once, not chained twice
    assert "During handling of the above exception" not in str(caught.value)
    # Stopping is no skip: the failure that goes over the limit is not warned as skipped.
    failures = DecodeFailures(limit=0)
    with pytest.raises(DataError, match=rf"^1 video failed to decode, more than "
                                        rf"max_decode_failures=0; the last: {corrupt.path}: "
                                        r"cannot open video \(repair or remove it, or raise "
                                        r"--max_decode_failures to skip more\)$"):
        failures.add(corrupt, DataError("cannot open video", corrupt.path))
    assert failures.count == 1


def test_wrong_frame_count_in_metadata_falls_back_to_decodable_frames(tmp_path):
    path = write_video(str(tmp_path / "short.mp4"), frames_rgb(12, tag=tag(1)), "mp4")
    record = VideoRecord(path, 1, "short", "video", num_frames=100)  # container lies
    ds = make_dataset([record], "train", batch_size=1, seed=0, **SMALL)
    for _ in range(3):
        clip, label = next(iter(ds))
        check_clip(clip.numpy()[0], 1, 12)


def test_cache_in_train_and_val(records, tmp_path):
    lengths = lengths_of(records)
    train = make_dataset(records, "train", batch_size=2, seed=3, cache=True, **SMALL)
    for _ in range(2):
        for clips, labels in train:
            for clip, label in zip(clips.numpy(), labels.numpy()):
                check_clip(clip, int(label), lengths[int(label)])
    val = make_dataset(records, "val", batch_size=4, cache=str(tmp_path / "val_cache"), **SMALL)
    a = [c.numpy() for c, _ in val]
    b = [c.numpy() for c, _ in val]
    np.testing.assert_array_equal(a[0], b[0])
    assert any(name.startswith("val_cache") for name in os.listdir(tmp_path))


def test_normalization_is_applied(records):
    raw = next(iter(make_dataset(records[:1], "val", batch_size=1, **SMALL)))[0].numpy()
    norm = next(iter(make_dataset(records[:1], "val", batch_size=1, sample_duration=4, sample_size=32,
                                  normalization="kinetics")))[0].numpy()
    # 'kinetics' = BGR, ActivityNet mean, 0-255.
    np.testing.assert_allclose(norm[..., 0], raw[..., 2] - 114.7748, atol=1e-3)
    np.testing.assert_allclose(norm[..., 2], raw[..., 0] - 99.4750, atol=1e-3)
    unit = next(iter(make_dataset(records[:1], "val", batch_size=1, sample_duration=4, sample_size=32,
                                  normalization="unit")))[0].numpy()
    np.testing.assert_allclose(unit, raw / 255, atol=1e-6)


def test_argument_validation(records):
    with pytest.raises(ValueError, match="mode"):
        make_dataset(records, "predict")
    with pytest.raises(ValueError, match="crop"):
        make_dataset(records, crop="middle")
    with pytest.raises(ValueError, match="empty"):
        make_dataset([])
    with pytest.raises(ValueError, match="sample_duration"):
        make_dataset(records, sample_duration=0)
    with pytest.raises(ValueError, match="shuffle"):
        make_dataset(records, "test", shuffle=True)
    with pytest.raises(ValueError, match="VideoRecord"):
        make_dataset(["a.mp4"])
    with pytest.raises(ValueError, match="max_decode_failures"):
        make_dataset(records, max_decode_failures=-1)


def test_video_level_accuracy_by_hand():
    probs = np.array([
        [0.6, 0.3, 0.1],  # video 7 (label 1), clip 1
        [0.1, 0.8, 0.1],  # video 7, clip 2 -> mean [0.35, 0.55, 0.1]: top1 = 1, correct
        [0.5, 0.1, 0.4],  # video 2 (label 2), single clip: top1 = 0 wrong, top2 = {0, 2} correct
        [0.2, 0.7, 0.1],  # video 5 (label 0): top1 1, top2 {1, 0} correct
    ])
    labels = [1, 1, 2, 0]
    videos = [7, 7, 2, 5]
    result = video_level_accuracy(probs, labels, videos, topk=(1, 2, 5))
    assert result["top1"] == pytest.approx(1 / 3)
    assert result["top2"] == pytest.approx(1.0)
    assert result["top5"] == pytest.approx(1.0)
    assert (result["num_videos"], result["num_clips"]) == (3, 4)
    ids, mean = aggregate_video_predictions(probs, videos)
    assert ids.tolist() == [2, 5, 7]
    np.testing.assert_allclose(mean[2], [0.35, 0.55, 0.1])
    with pytest.raises(ValueError, match="different labels"):
        video_level_accuracy(probs, [1, 0, 2, 0], videos)


@pytest.mark.parametrize("cache", [False, True])
def test_flipped_clips_take_the_label_of_their_mirror_class(tmp_path, cache):
    """Class 0's videos are bright on the left, class 1's (its mirror, "... Right") on the
    right; class 2 is symmetric about nothing it names. With the mirror labels every clip's
    bright side matches its label; plain flips would give class 0 bright-right clips."""
    names = ["Swiping Left", "Swiping Right", "Thumb Up"]
    mirror = spatial.mirror_labels(names)
    assert mirror == [1, 0, 2]
    out = []
    for label, bright_left in [(0, True), (1, False), (2, True)] * 2:
        frames = np.full((6, 32, 32, 3), 30, np.uint8)
        frames[:, :, slice(0, 16) if bright_left else slice(16, 32)] = 220
        folder = write_frames(str(tmp_path / f"v{len(out)}"), frames)
        out.append(VideoRecord(folder, label, f"v{len(out)}", "frames", 6))

    def bright_left_by_label(hflip_labels):
        ds = make_dataset(out, "train", batch_size=2, seed=3, hflip=True, hflip_labels=hflip_labels,
                          cache=cache, crop="center", scales=[1.0], **SMALL)
        seen = {}
        for _ in range(4):
            for clips, labels in ds:
                for clip, label in zip(clips.numpy(), labels.numpy()):
                    left, right = clip[..., :16, :].mean(), clip[..., 16:, :].mean()
                    seen.setdefault(int(label), set()).add(bool(left > right))
        return seen

    swapped = bright_left_by_label(mirror)
    assert swapped[0] == {True} and swapped[1] == {False}, swapped
    assert swapped[2] == {True, False}  # flipped, label kept
    assert bright_left_by_label(None)[0] == {True, False}  # the flips happen at all


def test_mirror_labels_of_jester_and_of_datasets_without_directions():
    jester = ["Swiping Left", "Swiping Right", "Turning Hand Clockwise",
              "Turning Hand Counterclockwise", "Rolling Hand Forward", "Sliding Two Fingers Left",
              "Sliding Two Fingers Right"]
    assert spatial.mirror_labels(jester) == [1, 0, 3, 2, 4, 6, 5]
    assert spatial.mirror_labels(["Turning Clockwise", "Turning Anticlockwise"]) == [1, 0]
    assert spatial.mirror_labels(["Archery", "Left Turn Only"]) is None
    # Folder names: words between underscores or hyphens pair as well (the synthetic
    # generator's video layout writes Swiping_Left, Turning_Clockwise, ...).
    from keras_efficient3d.data import synthetic

    folders = [name.replace(" ", "_") for name in synthetic.CLASSES]
    assert spatial.mirror_labels(folders) == spatial.mirror_labels(synthetic.CLASSES) is not None
    assert spatial.mirror_labels(["swipe-left", "swipe-right", "left_handed"]) == [1, 0, 2]
    # CamelCase, as UCF-101's classes are named: MoveLeft was trained on mirrored MoveRight clips
    assert spatial.mirror_labels(["MoveLeft", "MoveRight", "Blink"]) == [1, 0, 2]
    assert spatial.mirror_labels(["TurnCounterclockwise", "TurnClockwise"]) == [1, 0]
    assert spatial.mirror_labels(["TurnCounterClockwise", "TurnClockwise"]) == [1, 0]
    assert spatial.mirror_labels(["RotateClockwise", "RotateAntiClockwise"]) == [1, 0]
    assert spatial.mirror_labels(["ApplyEyeMakeup", "BodyWeightSquats", "Leftover"]) is None
    with pytest.raises(ValueError, match="hflip_labels"):
        make_dataset([VideoRecord("x", 2, "x", "frames", 3)], "train", hflip=True,
                     hflip_labels=[1, 0], **SMALL)
    # an unlabelled video (-1) took the last class's mirror
    with pytest.raises(ValueError, match="label -1"):
        make_dataset([VideoRecord("x", -1, "x", "frames", 3)], "train", hflip=True,
                     hflip_labels=[1, 0], **SMALL)


def _folders(root, lengths, labels):
    return [VideoRecord(write_frames(os.path.join(root, f"v{i}"), frames_rgb(n, tag=tag(label))),
                        label, f"v{i}", "frames", n)
            for i, (n, label) in enumerate(zip(lengths, labels))]


def test_evaluation_leaves_a_video_with_a_corrupt_frame_out_of_both_figures(tmp_path):
    from keras_efficient3d import evaluation

    records = _folders(str(tmp_path), [24, 24, 24, 24], [0, 1, 0, 1])
    # frame 1 of a class-0 video: outside its centre window (frames 10-13), inside its first
    (tmp_path / "v0" / "00001.jpg").write_bytes(b"not a jpeg")

    def class_0(clips):
        return np.tile([5.0, 0.0], (len(clips), 1))

    results = evaluation.evaluate(class_0, records, ["a", "b"], frames=4, size=32,
                                  normalization="none", batch_size=2)
    assert results["failed_videos"] == [records[0].path]
    # the same three videos in both figures: one of class 0, right; two of class 1, wrong
    assert results["clip_top1"] == pytest.approx(1 / 3)
    assert results["video_top1"] == pytest.approx(1 / 3)
    assert results["num_videos"] == 3
    assert results["per_class"]["a"]["videos"] == 1


def test_evaluation_of_videos_none_of_which_decodes_says_so(tmp_path, corrupt):
    from keras_efficient3d import evaluation

    broken = [corrupt, VideoRecord(corrupt.path.replace("broken", "broken2"), 0, "b2", "video",
                                   None)]
    with pytest.raises(DataError, match=r"none of the 2 videos decoded \(the first that failed: "
                                        r".*broken2?\.mp4\); nothing to score"):  # either: decoded in parallel
        evaluation.evaluate(lambda clips: np.zeros((len(clips), 2)), broken, ["a", "b"],
                            frames=4, size=32, normalization="none")


def test_a_video_whose_container_promises_more_frames_is_sampled_from_those_that_decode(
        records, caplog):
    """Said once per video (the container says 60 frames, 12 decode), however many clips
    are drawn from it, and its clips come from the frames that decode."""
    liar = dataclasses.replace(records[1], num_frames=60)  # v1.mp4: 12 frames
    ds = make_dataset([liar] * 3, "train", batch_size=1, seed=0, **SMALL)
    with caplog.at_level(logging.WARNING, logger="keras_efficient3d.data"):
        for _ in range(2):
            for clips, labels in ds:
                assert int(labels[0]) == 1
                check_clip(clips[0], 1, 12)
    said = [r.getMessage() for r in caplog.records if "container says" in r.getMessage()]
    assert said == [f"{liar.path}: its container says 60 frames, 12 decode: its clips are taken "
                    "from those"]


_UNCAUGHT = """
import sys
from keras_efficient3d.data import VideoRecord, make_dataset

records = [VideoRecord(path, 0, path, "video") for path in sys.argv[1:]]
for clips, labels in make_dataset(records, "train", batch_size=2, sample_duration=8,
                                  sample_size=32, max_decode_failures=1, seed=0):
    pass
"""


def test_a_script_whose_loop_over_a_dataset_ends_in_an_error_exits_as_python_does(tmp_path):
    """Too many undecodable videos, uncaught in a user's script: Python's traceback and status
    1, not an abort at exit ("terminate called without an active exception", status 134)."""
    import subprocess
    import sys

    videos = []
    for i in range(8):  # decodes in flight beside the failing one: what aborted
        path = tmp_path / f"v{i}.mp4"
        if i % 4 == 3:
            path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
        else:
            write_video(str(path), frames_rgb(24), "mp4")
        videos.append(str(path))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", _UNCAUGHT, *videos], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=root))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "more than max_decode_failures=1" in proc.stderr
    assert "terminate called" not in proc.stderr
