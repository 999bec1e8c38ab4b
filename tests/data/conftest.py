"""Fixtures for the data tests: real encoded media written once per session."""

import os

import pytest

from data_media import FOURCCS, frames_rgb, write_frames, write_video


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    """A session-wide folder with one 24-frame video per container, and a frame folder."""
    root = tmp_path_factory.mktemp("media")
    paths = {fmt: write_video(os.path.join(root, f"clip.{fmt}"), frames_rgb(24), fmt) for fmt in FOURCCS}
    paths["frames"] = write_frames(os.path.join(root, "frames"), frames_rgb(24))
    paths["root"] = str(root)
    return paths
