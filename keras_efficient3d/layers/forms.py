"""Which formulation of the 3D layers each consumer of a model uses, in one table.

Two formulations compute the same numbers (`keras_efficient3d.layers.native`: one
Conv3D / grouped Conv2D per layer; `keras_efficient3d.layers.taps`: 2D kernels over
temporal taps). `FORMS` says which one each consumer takes and why; the Keras layers ask
`current()`, exports enter `consumer(name)` around their tracing, and the deployment
graphs read their own row: TFLite's (`keras_efficient3d.deploy.graph`, 2D taps) and
ONNX's (`keras_efficient3d.deploy.onnx_native`, one 5-D Conv per layer, written from the
layers rather than traced).

    with forms.consumer("savedmodel"):
        concrete = tf.function(model).get_concrete_function(spec)
"""

import threading
from typing import NamedTuple

import keras


class Form(NamedTuple):
    """How a consumer computes the 3D layers.

    Attributes:
        native: dense 3D kernels as one Conv3D and grouped convolutions as one grouped
            Conv2D: True, False (2D taps, groups split), or None: where `native_kernels()`
            (oneDNN or a GPU) makes them the fast path.
        xnnpack: the 2D-tap ops TFLite's XNNPACK takes in int8 (`taps` module docstring).
        why: the reason, for the README.
    """

    native: bool | None
    xnnpack: bool
    why: str


FORMS = {
    "keras_training": Form(
        None, False,
        "oneDNN/cuDNN run Conv3D and grouped Conv2D 1.2-3.5x faster than 2D taps; without "
        "them (Eigen CPU kernels) the taps are faster. Conv3D padding as concatenated "
        "zeros, whose gradient Grappler's remapper handles."),
    "keras_inference": Form(
        None, False,
        "as training, with BatchNorm folded (keras_efficient3d.fold) and padding as a Pad "
        "that TensorFlow fuses into Conv3D."),
    "savedmodel": Form(
        False, False,
        "every TensorFlow runtime and converter takes 2D kernels; grouped Conv2D has no "
        "kernel in TensorFlow's Eigen CPU build."),
    "onnx": Form(
        True, False,
        "written from the layer graph (keras_efficient3d.deploy.onnx_native): one 5-D Conv "
        "per layer, grouped/depthwise by `group`, NCDHW. Against tf2onnx's conversion of the "
        "2D-tap graph (MobileNetV2/ShuffleNetV2 1.0x, 16x112x112, batch 1, 2 threads): "
        "OpenVINO 2.7x/1.9-2.3x faster, ONNX Runtime 0.9x/1.2-1.5x (its 3-D depthwise "
        "Conv is a small GEMM per channel); TensorRT takes grouped 3-D Conv natively. The "
        "quantization-aware models take it too, with Q/DQ at the QAT graph's layer outputs "
        "(deploy.onnx_native); the taps form stays on request (deploy.onnx_export)."),
    "tflite": Form(
        False, True,
        "TFLite's CONV_3D is float-only and ungrouped; its 2D kernels run in int8 under "
        "XNNPACK (deployment graph: 4-D tensors, static shapes, no dead taps)."),
}

_STATE = threading.local()  # per thread: an export does not change other threads' form
_NATIVE = []  # the answer of `native_kernels`, once per process


def native_kernels():
    """Whether TensorFlow's own Conv3D and grouped Conv2D kernels are the fast path here:
    with oneDNN's CPU kernels (on by default with this package, see `keras_efficient3d`)
    or a GPU (cuDNN). TensorFlow's Eigen CPU kernels take them too but are slower than the
    2D forms (grouped Conv2D 9x)."""
    if keras.backend.backend() != "tensorflow":
        return False
    if not _NATIVE:
        import tensorflow as tf

        try:
            from tensorflow.python.util import _pywrap_util_port
            onednn = bool(_pywrap_util_port.IsMklEnabled())
        except (ImportError, AttributeError):
            onednn = False
        _NATIVE.append(onednn or bool(tf.config.list_physical_devices("GPU")))
    return _NATIVE[0]


class consumer:
    """Within this context the layers compute in the form of `name`, a key of `FORMS`
    (exports enter it around their tracing)."""

    def __init__(self, name):
        if name not in FORMS:
            raise ValueError(f"`name` must be one of {sorted(FORMS)}. Received: name={name!r}")
        self.name = name

    def __enter__(self):
        _STATE.stack = getattr(_STATE, "stack", []) + [self.name]
        return self

    def __exit__(self, *exc):
        _STATE.stack = _STATE.stack[:-1]
        return False


def current(training=False):
    """The form the layers use now: that of the innermost `consumer` context, else Keras'
    (training or inference), with ``native`` resolved to True or False."""
    stack = getattr(_STATE, "stack", None)
    name = stack[-1] if stack else ("keras_training" if training else "keras_inference")
    form = FORMS[name]
    if form.native is None:
        form = form._replace(native=native_kernels())
    return form


def portable_ops():
    """The form every TensorFlow runtime and converter takes (2D taps, groups split), for a
    graph traced outside the package's exports (your own `tf.function` export,
    ``model.export()``, a direct tf2onnx call): ``consumer("savedmodel")``.

        with keras_efficient3d.layers.portable_ops():
            concrete = tf.function(model).get_concrete_function(spec)
    """
    return consumer("savedmodel")
