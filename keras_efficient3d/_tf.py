"""TensorFlow for the modules that need it on every Keras backend (the input pipelines are
tf.data's): ``from keras_efficient3d._tf import tf``. Imported without the start-up notices
it prints on JAX and PyTorch as well (`import_tensorflow_quietly`), where the package's own
import leaves TensorFlow out."""

from keras_efficient3d import import_tensorflow_quietly

import_tensorflow_quietly()

import tensorflow as tf  # noqa: E402

__all__ = ["tf"]
