"""Sources: folders of videos and frame folders, unreadable videos."""

import os
import shutil

import pytest

from keras_efficient3d import predict
from keras_efficient3d.predict import PredictError
from keras_efficient3d.runtime import load_runner


def test_a_folder_of_videos_with_a_thumbnail_is_a_folder_of_videos(videos, tmp_path):
    import shutil

    folder = tmp_path / "downloads"
    folder.mkdir()
    shutil.copy(os.path.join(videos["folder"], "clip2.avi"), folder / "clip2.avi")
    shutil.copy(os.path.join(videos["frames"], "img_1.jpg"), folder / "clip2.jpg")  # a poster
    assert predict.find_sources(str(folder)) == [str(folder / "clip2.avi")]


def test_folder_of_videos_and_frame_folders(models, videos, tmp_path):
    assert [os.path.basename(p) for p in predict.find_sources(videos["folder"])] == [
        "clip2.avi", "clip10.mp4", "frames_a"]
    assert predict.find_sources(videos["frames"]) == [videos["frames"]]
    with pytest.raises(PredictError, match="no video file") as err:
        predict.find_sources(videos["empty_folder"])
    assert "its folders hold videos" not in str(err.value)
    # a dataset's split of class folders: one level too high, and said so
    split = tmp_path / "val"
    (split / "Thumb_Up").mkdir(parents=True)
    shutil.copy(videos["gesture"], split / "Thumb_Up" / "1.mp4")
    with pytest.raises(PredictError, match=r"holds no video file .* and no frame folder; its folders "
                                           r"hold videos: give one of them \(e.g. .*Thumb_Up\), or several"):
        predict.find_sources(str(split))
    runner = load_runner(models["onnx"])
    results = [predict.predict_video(runner, p, stride=2) for p in predict.find_sources(videos["folder"])]
    assert [r["frames"] for r in results] == [9, 12, 10]
    # every frame in a window: the 9-frame video's last frame has its own (frames 1-8)
    assert [r["window_count"] for r in results] == [2, 3, 2]
    assert results[2]["fps"] is None and "start_s" not in results[2]["windows"][0]


def test_bad_videos_raise_data_errors(models, videos, tmp_path):
    from keras_efficient3d.data import DataError

    runner = load_runner(models["tflite"])
    for key, message in [("text", "not a video"), ("corrupt", "corrupt"), ("empty", "empty")]:
        with pytest.raises(DataError, match=message):
            predict.predict_video(runner, videos[key])
    with pytest.raises(DataError, match="not found"):
        predict.predict_video(runner, str(tmp_path / "missing.mp4"))


def test_a_name_that_is_not_utf8_is_one_error_not_a_crash(models, videos, tmp_path):
    """OpenCV ended the process (a segmentation fault) on a name Python holds with surrogates
    for its undecodable bytes: in a folder, every later video was lost."""
    from keras_efficient3d.data import decode
    from keras_efficient3d.predict.output import check_output_path

    bad = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"b\xff.avi"))
    with open(os.path.join(videos["folder"], "clip2.avi"), "rb") as source, open(bad, "wb") as copy:
        copy.write(source.read())
    runner = load_runner(models["onnx"])
    with pytest.raises(decode.DataError, match="not valid UTF-8"):
        predict.predict_video(runner, bad)
    with pytest.raises(decode.DataError, match="not valid UTF-8"):
        decode.count_frames(bad)
    with pytest.raises(PredictError, match="output_video=.*not valid UTF-8"):
        check_output_path(bad)
