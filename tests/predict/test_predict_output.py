"""The overlay and the display check."""

import cv2
import numpy as np

from keras_efficient3d import predict


def test_display_detection_and_overlay():
    headless = "NONE" in [line.split(":")[-1].strip() for line in cv2.getBuildInformation().splitlines()
                          if line.strip().startswith("GUI:")]
    if headless:
        assert predict.display_available() is False
    frame = np.zeros((240, 320, 3), np.uint8)
    result = {"top": [{"label": "swipe left", "score": 0.9}, {"label": "zoom in", "score": 0.05}]}
    predict.draw_overlay(frame, result, fps=29.7)
    assert frame[:60, :150].any() and not frame[120:, 200:].any()


def test_the_overlay_of_a_narrow_video_fits_its_labels_in():
    """A portrait video 90 pixels wide: the labels are drawn smaller, not cut at the edge
    ("Turning Cloc")."""
    frame = np.zeros((320, 90, 3), np.uint8)
    result = {"top": [{"label": "Turning Hand Clockwise", "score": 0.97}]}
    predict.draw_overlay(frame, result, fps=None)
    green = (frame[..., 1] > 120) & (frame[..., 0] < 200)  # the first line's (80, 255, 80)
    columns = np.flatnonzero(green.any(axis=0))
    assert columns.size and columns.max() < 86, columns.max()
    assert columns.min() < 12  # drawn from the left margin, smaller
