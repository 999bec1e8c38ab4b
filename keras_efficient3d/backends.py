"""Which Keras backend runs the models, and the one check of the TensorFlow-only parts.

The models, the layers, the checkpoint converter and presets run on every Keras 3 backend
(``KERAS_BACKEND=tensorflow``, ``jax`` or ``torch``); the tf.data pipelines feed
``model.fit`` on each; the Keras runner (`runtime.KerasRunner`, the predict command's
``.keras`` path) compiles for each. TFLite, SavedModel (and TF-TRT), fake-quant QAT and ONNX through
tf2onnx trace the model into a TensorFlow graph, so they need the TensorFlow backend:
they call `require_tensorflow_backend` first, which says so in one line.
"""

import keras


class BackendError(RuntimeError):
    """A TensorFlow-only part was called under another Keras backend."""


def backend():
    """The Keras backend in use: 'tensorflow', 'jax' or 'torch'."""
    return keras.backend.backend()


def require_tensorflow_backend(what):
    """Raises `BackendError` (one line: what needs TensorFlow, the backend in use and how to
    switch) unless Keras runs on TensorFlow."""
    name = backend()
    if name != "tensorflow":
        raise BackendError(
            f"{what} needs the TensorFlow backend of Keras (it traces the model into a "
            f"TensorFlow graph); this process runs KERAS_BACKEND={name}: run it with "
            "KERAS_BACKEND=tensorflow.")
