"""Helpers shared by the test modules (``tests/`` is on the path through its conftest).
TensorFlow is imported where used: the backend tiers import this module too."""

import contextlib
import os

import keras
import numpy as np


def randomize_batchnorm(model, seed=0, spread=0.1):
    """Random, well-conditioned BatchNorm weights and statistics (gamma and variance in
    [0.5, 1.5], beta and mean normal with `spread`): folding must carry them."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, spread, c),
                               rng.normal(0, spread, c), rng.uniform(0.5, 1.5, c)])
    return model


def torch_state_dict(model, family, seed=0):
    """A state dict in the original's layout for `model`, through `family`'s key mapping:
    distinct random values per tensor, so that a misplaced one shows."""
    from keras_efficient3d.layers import Conv3D, DepthwiseConv3D

    rng = np.random.default_rng(seed)
    state = {}
    for name, path in family.torch_paths(model).items():
        layer = model.get_layer(name)
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            state.update({f"{path}.weight": rng.uniform(0.5, 1.5, c),
                          f"{path}.bias": rng.normal(size=c),
                          f"{path}.running_mean": rng.normal(size=c),
                          f"{path}.running_var": rng.uniform(0.5, 1.5, c),
                          f"{path}.num_batches_tracked": np.array(1, np.int64)})
            continue
        kernel = rng.normal(size=layer.kernel.shape)
        if isinstance(layer, DepthwiseConv3D):
            state[f"{path}.weight"] = kernel.transpose(3, 4, 0, 1, 2)
        elif isinstance(layer, Conv3D):
            state[f"{path}.weight"] = kernel.transpose(4, 3, 0, 1, 2)
        else:
            state[f"{path}.weight"] = kernel.T
        if layer.use_bias:
            state[f"{path}.bias"] = rng.normal(size=layer.bias.shape)
    return {k: v if v.dtype == np.int64 else v.astype(np.float32) for k, v in state.items()}


# ---------------------------------------------------------------------------------------
# A tiny 3D CNN and its exports: running a model file does not depend on the architecture,
# and these exports take about a second.

TINY_FRAMES, TINY_SIZE, TINY_CLASSES = 8, 32, 4
TINY_LABELS = ["swipe left", "swipe right", "zoom in", "zoom out"]


def tiny_normalization():
    """Mean/std chosen so that a normalisation bug changes the outputs."""
    from keras_efficient3d.data.normalization import Normalization

    return Normalization(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), value_range="0-1")


def tiny_metadata():
    """The metadata the tiny model's files carry (inside .keras, in sidecars)."""
    return {
        "model": {"model": "tiny"},
        "input": {"frames": TINY_FRAMES, "size": TINY_SIZE, "layout": "NDHWC"},
        "normalization": tiny_normalization().to_config(),
        "preprocessing_included": False,
        "labels": list(TINY_LABELS),
    }


def tiny_model(frames, size, classes, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((frames, size, size, 3)),
        keras.layers.Conv3D(8, 3, strides=2, activation="relu"),
        keras.layers.Conv3D(8, (3, 1, 1), activation="relu"),
        keras.layers.GlobalAveragePooling3D(),
        keras.layers.Dense(classes, kernel_initializer=keras.initializers.RandomNormal(stddev=2.0)),
    ])


def _concrete(model, batch=1):
    import tensorflow as tf

    shape = (batch,) + tuple(model.input_shape[1:])
    return tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec(shape, tf.float32))


def export_tflite(model, path, int8=False, calibration=None):
    """fp32, or full-int8 post-training quantisation with int8 input and output tensors (of
    the Keras graph itself, not the deployment graph)."""
    from keras_efficient3d.deploy.tflite import convert_function

    def representative():
        for clip in calibration:
            yield [clip[None].astype(np.float32)]

    blob = convert_function(_concrete(model), "int8" if int8 else "fp32",
                            representative if int8 else None, int8_io=int8)
    with open(path, "wb") as handle:
        handle.write(blob)
    return path


def export_onnx(model, path, batch=None):
    import tensorflow as tf
    import tf2onnx

    spec = tf.TensorSpec((batch,) + tuple(model.input_shape[1:]), tf.float32, name="clips")
    tf2onnx.convert.from_function(tf.function(lambda x: model(x, training=False)),
                                  input_signature=[spec], output_path=path, opset=17)
    return path


def moving_square(n, height=48, width=64, seed=0):
    """A bright square moving right over a noisy background: RGB uint8 (n, H, W, 3)."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 90, size=(n, height, width, 3), dtype=np.uint8)
    for t in range(n):
        x = 4 + (t * 2) % (width - 20)
        video[t, 14:30, x:x + 16] = (230, 200, 40)
    return video


def write_model_files(root, model, metadata, calibration):
    """`model` as .keras (metadata inside), fp32 and int8 .tflite and .onnx (sidecars): path by key."""
    from keras_efficient3d.artifacts import save_model, write_sidecar

    root = str(root)
    paths = {"keras": os.path.join(root, "tiny.keras")}
    save_model(model, paths["keras"], metadata)
    paths["tflite"] = export_tflite(model, os.path.join(root, "tiny.tflite"))
    paths["int8"] = export_tflite(model, os.path.join(root, "tiny_int8.tflite"), int8=True,
                                  calibration=calibration)
    paths["onnx"] = export_onnx(model, os.path.join(root, "tiny.onnx"))
    for key in ("tflite", "int8", "onnx"):
        write_sidecar(paths[key], metadata)
    return paths


def write_tiny_model_files(root, model):
    """The tiny model's files (`write_model_files`), int8 calibrated on normalised test clips
    and noise."""
    from keras_efficient3d.data.spatial import val_transform

    norm = tiny_normalization()
    rng = np.random.default_rng(1)
    calibration = [norm.apply(val_transform(moving_square(TINY_FRAMES, seed=s), TINY_SIZE).astype(np.float32))
                   for s in range(4)] + [rng.normal(size=(TINY_FRAMES, TINY_SIZE, TINY_SIZE, 3)) for _ in range(4)]
    return write_model_files(root, model, tiny_metadata(), calibration)


def stand_in_allocator():
    """The path of glibc's libresolv.so.2 in the system's library folders, else None: a
    library every glibc system has and that is harmless to preload, standing in for
    tcmalloc or jemalloc in tests of `keras_efficient3d.allocators` and its users."""
    from keras_efficient3d import allocators

    for folder in allocators._LIBRARY_DIRS:
        path = os.path.join(folder, "libresolv.so.2")
        if os.path.isfile(path):
            return path
    return None


@contextlib.contextmanager
def file_size_limit(max_bytes):
    """Files of this process cannot grow past `max_bytes` inside the block: a write past it
    fails with EFBIG ("File too large"), as one on a full disk fails with ENOSPC, without
    filling a disk. SIGXFSZ, which would kill the process instead, is ignored meanwhile."""
    import resource
    import signal

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (the main thread's call)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, hard))
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
