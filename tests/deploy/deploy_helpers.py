"""Helpers of the deployment tests: input shapes, models with realistic BatchNorm statistics."""

import importlib.util
import os

import keras
import numpy as np

from helpers import randomize_batchnorm  # noqa: F401  (tests/helpers.py, shared)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = (8, 32, 32, 3)
# ResNet/ResNeXt/SqueezeNet/C3D heads (and ShuffleNetV1's even-frames check) need 16 frames.
SIXTEEN = (16, 32, 32, 3)
SHIPPED = os.path.join(ROOT, "saved_models", "synthetic_gestures.keras")
# The shipped model is MobileNetV2 0.2x trained on the synthetic gestures (16 frames of 64 px,
# every 2nd frame, 0-1 RGB): its validation clips are rendered the same way (the `shipped`
# fixture, conftest). Int8 top-1 agreement with it: at most one of 48 clips; measured on 240
# clips: README (OpenVINO).
AGREEMENT = 0.97


def input_shape_for(name):
    if name.startswith(("resne", "squeezenet", "c3d", "shufflenetv1", "shufflenet_")):
        return SIXTEEN
    return SMALL


def model_kwargs(name):
    # C3D's flattening head does not fit 32x32 clips.
    if name == "c3d":
        return dict(include_top=False, pooling="avg")
    return dict(num_classes=7)


def calibrate_batchnorm(model, clips, seed=0):
    """Sets every BatchNorm's moving statistics to the batch statistics of `clips` (and
    gamma/beta near 1/0), so that activations have unit scale as in a trained model."""
    rng = np.random.default_rng(seed)
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    momenta = [l.momentum for l in bns]
    for layer in bns:
        c = layer.gamma.shape[0]
        layer.momentum = 0.0
        layer.gamma.assign(rng.uniform(0.9, 1.1, c).astype("float32"))
        layer.beta.assign(rng.normal(0, 0.1, c).astype("float32"))
    model(clips, training=True)
    for layer, momentum in zip(bns, momenta):
        layer.momentum = momentum
    return model


def clips(shape, n=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n,) + tuple(shape)).astype("float32")


def load_script(name, folder="deployment"):
    """The module of the repository's script ``folder/name.py`` (the command-line programs
    are files, not package modules), for calling its functions directly."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", os.path.join(ROOT, folder, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_tensorrt(engine, version, **extra):
    """A stand-in for the `tensorrt` module whose Runtime deserializes any bytes to `engine`
    (the Jetson scripts' tests: this machine has no TensorRT); `extra`: more attributes."""
    import types

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return engine

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    return types.SimpleNamespace(__version__=version, Logger=Logger, Runtime=Runtime,
                                 TensorIOMode=types.SimpleNamespace(INPUT=0, OUTPUT=1), **extra)
