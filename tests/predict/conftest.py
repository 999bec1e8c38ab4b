"""Fixtures of the prediction tests: the tiny model in every format, and test videos."""

import cv2
import numpy as np
import pytest

from helpers import moving_square
from predict_helpers import write_video


@pytest.fixture(scope="session")
def model(tiny):
    return tiny


@pytest.fixture(scope="session")
def models(tiny_files):
    return tiny_files


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    paths = {
        "gesture": write_video(str(root / "gesture.mp4"), moving_square(30)),
        "short": write_video(str(root / "short.avi"), moving_square(5, seed=2)),
    }
    folder = root / "folder"
    folder.mkdir()
    write_video(str(folder / "clip10.mp4"), moving_square(12, seed=3))
    write_video(str(folder / "clip2.avi"), moving_square(9, seed=4))
    frame_folder = folder / "frames_a"
    frame_folder.mkdir()
    for i, frame in enumerate(moving_square(10, seed=5)):
        cv2.imwrite(str(frame_folder / f"img_{i + 1}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (folder / "README.txt").write_text("not a video\n")
    paths["folder"] = str(folder)
    paths["frames"] = str(frame_folder)
    (root / "notes.txt").write_text("hello, I am not a video\n")
    paths["text"] = str(root / "notes.txt")
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)
    (root / "corrupt.mp4").write_bytes(noise.tobytes())
    paths["corrupt"] = str(root / "corrupt.mp4")
    (root / "empty.mp4").write_bytes(b"")
    paths["empty"] = str(root / "empty.mp4")
    (root / "nothing").mkdir()
    paths["empty_folder"] = str(root / "nothing")
    return paths
