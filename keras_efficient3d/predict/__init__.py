"""Real-time recognition: a video file, a folder of videos or frame folders, or a camera.

    python -m keras_efficient3d.predict clip.mp4                         # the shipped int8 TFLite model
    python -m keras_efficient3d.predict clip.mp4 --model_file=m.keras --top=3 --format=json
    python -m keras_efficient3d.predict videos/ --model_file=m.onnx --labels=jester
    python -m keras_efficient3d.predict clips/*.mp4 --model_file=m.onnx    # several, in turn
    python -m keras_efficient3d.predict clip.mp4 --model_file=m_int8.xml    # OpenVINO IR
    python -m keras_efficient3d.predict 0 --output=annotated.mp4  # camera 0, live overlay

A clip of ``frames`` frames is classified every ``stride`` frames (sliding windows, as a
stream would see them); each frame is resized and centre-cropped as in validation
(``Scale(size)`` + ``CenterCrop(size)``) and normalised as the model was trained. The video's
scores are the softmax averaged over its windows. A video shorter than one window is loop
padded, as in training, and says so.

What the model expects (frames, size, normalisation, labels) is read from the model
(`keras_efficient3d.artifacts`): the ``keras_efficient3d.json`` entry of a ``.keras`` archive
(`artifacts.save_model`), or a sidecar ``<model file>.json`` next to a ``.tflite``/``.onnx``/``.xml``
file (`artifacts.write_sidecar`); ``--labels`` overrides the recorded labels. Anything that
contradicts the model's input tensor stops the run with one line.

Models run through `keras_efficient3d.runtime.load_runner(path, threads)`: Keras, LiteRT
(XNNPACK), ONNX Runtime or OpenVINO (IR ``.xml`` + ``.bin``) behind one interface.

The package: `labels` (class names), `sources` (videos, frame folders, cameras), `stream`
(clip spec, preprocessing, the streaming classifier), `output` (overlay, text and JSON lines),
`command` (flags, ``run`` and ``main``).

Camera mode shows the top classes and the frame rate over the picture when a display exists
(the opencv-python-headless wheel has none: then it prints text lines); ``--output``
writes the annotated frames either way. Ctrl-C or the end of the stream ends it cleanly.
"""

from keras_efficient3d.predict._errors import PredictError
from keras_efficient3d.predict.command import DEFAULT_MODEL, define_flags, main, run
from keras_efficient3d.predict.labels import LABEL_SETS, load_labels
from keras_efficient3d.predict.output import (
    display_available,
    draw_overlay,
    format_speed,
    format_window,
    summary_json,
    window_json,
)
from keras_efficient3d.predict.sources import capture_frames, find_sources, video_frames
from keras_efficient3d.predict.stream import (
    ClipSpec,
    PredictionInterrupted,
    StreamClassifier,
    iter_stream,
    make_clip,
    predict_video,
    preprocess_frame,
    resolve_spec,
    run_stream,
)

__all__ = [
    "DEFAULT_MODEL",
    "LABEL_SETS",
    "ClipSpec",
    "PredictError",
    "PredictionInterrupted",
    "StreamClassifier",
    "capture_frames",
    "define_flags",
    "display_available",
    "draw_overlay",
    "find_sources",
    "format_speed",
    "format_window",
    "iter_stream",
    "load_labels",
    "main",
    "make_clip",
    "predict_video",
    "preprocess_frame",
    "resolve_spec",
    "run",
    "run_stream",
    "summary_json",
    "video_frames",
    "window_json",
]
