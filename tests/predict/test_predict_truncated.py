"""A truncated video is classified from the frames that decode, with one warning that says
how many, and none of FFmpeg's own messages on the screen."""

import numpy as np

from keras_efficient3d.data import synthetic
from keras_efficient3d.predict.sources import VideoSource


def test_truncated_avi_counts_its_frames_and_keeps_ffmpeg_quiet(tmp_path, capfd):
    video = synthetic.render_video(0, np.random.default_rng(0), frames=32, size=64)
    path = tmp_path / "clip.avi"
    synthetic._write_video(str(path), video, "avi")
    data = path.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])

    whole = VideoSource(path)
    assert len(list(whole)) == 32 and not whole.truncated
    cut = VideoSource(tmp_path / "cut.avi")
    frames = list(cut)
    assert cut.frame_count == 32 and 0 < cut.decoded == len(frames) < 32
    assert cut.truncated
    assert "@ 0x" not in capfd.readouterr().err  # "[mjpeg @ 0x...] ..." stays off the screen
