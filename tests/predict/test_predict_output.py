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
