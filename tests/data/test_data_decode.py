"""Decoding real encoded videos (mp4/mp4v, avi/MJPG, avi/XVID, webm/VP8) and JPEG folders."""

import os

import numpy as np
import pytest

from data_media import FOURCCS, frame_index, frames_rgb, write_frames, write_video
from keras_efficient3d.data.decode import (
    DataError,
    TruncatedVideoError,
    count_frames,
    list_frame_files,
    read_frame_folder,
    read_image,
    read_video,
)


@pytest.mark.parametrize("fmt", list(FOURCCS) + ["frames"])
def test_reads_all_frames_in_rgb(media, fmt):
    reader = read_frame_folder if fmt == "frames" else read_video
    clip = reader(media[fmt])
    assert clip.dtype == np.uint8 and clip.shape == (24, 48, 64, 3)
    assert [frame_index(f) for f in clip] == list(range(24))
    # RGB, not OpenCV's BGR: frame 0 is red 20, blue 200.
    assert abs(float(clip[0, ..., 0].mean()) - 20) < 6
    assert abs(float(clip[0, ..., 2].mean()) - 200) < 6
    assert abs(float(clip[0, ..., 1].mean()) - 100) < 6


@pytest.mark.parametrize("fmt", list(FOURCCS) + ["frames"])
def test_reads_selected_indices_with_repeats_and_any_order(media, fmt):
    reader = read_frame_folder if fmt == "frames" else read_video
    indices = [5, 3, 3, 23, 0, 5]
    clip = reader(media[fmt], indices)
    assert clip.shape == (6, 48, 64, 3)
    assert [frame_index(f) for f in clip] == indices


@pytest.mark.parametrize("fmt", list(FOURCCS) + ["frames"])
def test_count_frames(media, fmt):
    assert count_frames(media[fmt]) == 24
    assert count_frames(media[fmt], exact=True) == 24


def test_seek_far_into_a_video_matches_sequential_decoding(tmp_path):
    path = write_video(str(tmp_path / "long.mp4"), frames_rgb(80), "mp4")
    indices = [60, 61, 75, 79]  # beyond the seek threshold
    clip = read_video(path, indices)
    assert [frame_index(f) for f in clip] == indices
    everything = read_video(path)
    np.testing.assert_array_equal(clip, everything[indices])


def test_index_past_the_end_raises_truncated_error(media):
    with pytest.raises(TruncatedVideoError) as info:
        read_video(media["mp4"], [2, 30])
    assert info.value.available == 24
    assert media["mp4"] in str(info.value)
    with pytest.raises(DataError, match="holds 24 frames"):
        read_frame_folder(media["frames"], [24])


def test_missing_empty_and_garbage_videos_raise_data_error_naming_the_file(tmp_path):
    missing = str(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    for path, reason in ((missing, "not found"), (str(empty), "empty"), (str(garbage), "cannot open")):
        with pytest.raises(DataError, match=reason) as info:
            read_video(path, [0])
        assert str(path) in str(info.value)
        with pytest.raises(DataError):
            count_frames(path)


def test_zero_frame_video_raises(tmp_path):
    path = write_video(str(tmp_path / "zero.avi"), np.zeros((0, 48, 64, 3), np.uint8), "avi")
    with pytest.raises(DataError) as info:
        read_video(path)
    assert path in str(info.value)
    with pytest.raises(DataError):
        count_frames(path, exact=True)


def test_truncated_mp4_is_a_data_error(tmp_path, media):
    data = open(media["mp4"], "rb").read()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: gone
    with pytest.raises(DataError) as info:
        read_video(str(path), [0, 1])
    assert str(path) in str(info.value)


def test_truncated_mjpeg_avi_yields_only_real_frames(tmp_path, media, capfd):
    data = open(media["avi"], "rb").read()
    cut = tmp_path / "header.avi"  # too little left to hold a frame: refused, named
    cut.write_bytes(data[: len(data) * 3 // 10])
    capfd.readouterr()
    with pytest.raises(DataError, match=f"{cut}: cannot open video"):
        read_video(str(cut))
    # and nothing else: where FFmpeg failed, OpenCV's own AVI reader printed "Unexpected
    # element. Expected: LIST. Got: JUNK." (printf, past every log level) before our warning
    printed = capfd.readouterr()
    assert printed.out == printed.err == "", printed
    path = tmp_path / "cut.avi"
    path.write_bytes(data[: len(data) * 7 // 10])  # 10 of the 24 frames whole
    clip = read_video(str(path))
    # What decodes is genuine frames 0..k-1, never padding or black frames.
    assert 0 < len(clip) < 24
    assert [frame_index(f) for f in clip] == list(range(len(clip)))
    with pytest.raises(TruncatedVideoError) as info:
        read_video(str(path), [23])
    assert info.value.available == len(clip)


def test_unreadable_jpeg_and_empty_folders(tmp_path):
    folder = write_frames(str(tmp_path / "video"), frames_rgb(4))
    bad = os.path.join(folder, "00003.jpg")
    with open(bad, "wb") as handle:
        handle.write(b"not a jpeg at all")
    assert read_frame_folder(folder, [0, 1, 3]).shape == (3, 48, 64, 3)
    with pytest.raises(DataError, match="cannot decode image") as info:
        read_frame_folder(folder, [1, 2])
    assert bad in str(info.value)
    with pytest.raises(DataError, match="cannot read image"):
        read_image(str(tmp_path / "nope.jpg"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(DataError, match="no image file"):
        list_frame_files(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="not found"):
        count_frames(str(tmp_path / "absent_folder"))


def test_frame_files_are_sorted_numerically(tmp_path):
    folder = write_frames(str(tmp_path / "unpadded"), frames_rgb(12), pattern="img_{}.jpg", start=1)
    names = [os.path.basename(p) for p in list_frame_files(folder)]
    assert names[:3] == ["img_1.jpg", "img_2.jpg", "img_3.jpg"] and names[-1] == "img_12.jpg"
    assert [frame_index(f) for f in read_frame_folder(folder)] == list(range(12))


def test_data_error_is_a_value_error_with_file_and_line():
    error = DataError("bad line", "/x/labels.csv", 7)
    assert isinstance(error, ValueError)
    assert str(error) == "/x/labels.csv:7: bad line"
    assert (error.path, error.line, error.reason) == ("/x/labels.csv", 7, "bad line")


def test_invalid_indices_are_rejected(media):
    with pytest.raises(ValueError, match="must not be empty"):
        read_video(media["mp4"], [])
    with pytest.raises(ValueError, match=">= 0"):
        read_frame_folder(media["frames"], [-1])


@pytest.mark.parametrize("fmt", ["mp4", "frames"])
def test_frames_pass_through_the_transform_as_they_are_decoded(media, fmt):
    """Evaluation's windows take every frame of a video: each is transformed (scaled and
    cropped to the clip's size) as it is decoded, so that a 1080p video is never held whole
    at its own size (1.9 GB for 10 s)."""
    reader = read_frame_folder if fmt == "frames" else read_video
    seen = []

    def shrink(frames):
        seen.append(frames.shape)
        return np.ascontiguousarray(frames[:, ::4, ::4])

    whole = reader(media[fmt])
    shrunk = reader(media[fmt], transform=shrink)
    assert seen == [(1, 48, 64, 3)] * 24
    np.testing.assert_array_equal(shrunk, whole[:, ::4, ::4])
    seen.clear()
    picked = reader(media[fmt], [3, 1, 3], transform=shrink)
    assert seen == [(1, 48, 64, 3)] * 2  # each frame once, loop padding included
    np.testing.assert_array_equal(picked, whole[[3, 1, 3], ::4, ::4])


def test_a_frame_of_another_size_is_refused_under_a_transform(tmp_path):
    folder = write_frames(str(tmp_path / "video"), frames_rgb(3))
    write_frames(folder, frames_rgb(1, height=40), start=4)
    with pytest.raises(DataError, match=r"frames change size within the video \(\(48, 64, 3\) "
                                        r"then \(40, 64, 3\)\)"):
        read_frame_folder(folder, transform=lambda frames: frames[:, :8, :8])


def test_decoders_overlapping_in_threads_restore_opencvs_log_level():
    """tf.data decodes in parallel map calls: each decoder restoring the level it found left
    OpenCV silent for the rest of the process where two overlapped (the second found the
    first's silence), and let the first's restore speak during the second's open."""
    import threading

    import cv2

    from keras_efficient3d.data.decode import opencv_quiet

    logging = cv2.utils.logging
    before = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_WARNING)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def first():
        with opencv_quiet():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second():
        first_in.wait(10)
        with opencv_quiet():
            second_in.set()
            first_out.wait(10)
            seen.append(logging.getLogLevel())  # the first has ended: still quiet here

    try:
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert seen == [logging.LOG_LEVEL_SILENT]
        assert logging.getLogLevel() == logging.LOG_LEVEL_WARNING
    finally:
        logging.setLogLevel(before)


def test_a_file_is_opened_by_ffmpeg_and_a_device_by_any_backend(tmp_path, monkeypatch):
    import cv2

    from keras_efficient3d.data import decode

    opened = []
    monkeypatch.setattr(decode.cv2, "VideoCapture", lambda path, backend: opened.append(backend))
    monkeypatch.setattr(decode, "_HAS_FFMPEG", True)
    (tmp_path / "a.avi").write_bytes(b"x")
    decode.open_capture(str(tmp_path / "a.avi"))
    decode.open_capture("/dev/null")  # a camera's /dev/video0 is V4L2's, not FFmpeg's
    monkeypatch.setattr(decode, "_HAS_FFMPEG", False)  # an OpenCV built without it
    decode.open_capture(str(tmp_path / "a.avi"))
    assert opened == [cv2.CAP_FFMPEG, cv2.CAP_ANY, cv2.CAP_ANY]
