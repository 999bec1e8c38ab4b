"""The native formulation of the 3D layers: one TensorFlow kernel per layer, as oneDNN,
cuDNN (and ONNX runtimes, OpenVINO, TensorRT) run them. `keras_efficient3d.layers.forms`
says where it is used; the 2D-tap formulation (`keras_efficient3d.layers.taps`) is the
other.

* a dense 3D convolution is one Conv3D (1.2-3.5x faster with oneDNN than 2D convolutions
  over its temporal taps, the 3-channel stems most);
* a grouped convolution is one grouped Conv2D per temporal tap (1.2-1.6x faster with
  oneDNN than split per group); Keras' own op would route groups through XLA.
"""

from keras import ops


def conv3d(x, kernel, strides, padding, training):
    """One Conv3D of a 5-D clip by a ``(kt, kh, kw, cin, cout)`` kernel, PyTorch's
    symmetric `padding` made explicit unless it equals SAME (stride 1, odd kernel, half
    padding, every axis)."""
    import tensorflow as tf

    same = all(s == 1 and k % 2 and 2 * p == k - 1
               for k, s, p in zip(kernel.shape[:3], strides, padding))
    x = x if same else _pad_5d(x, padding, fusable=not training)
    return tf.nn.conv3d(x, kernel, (1,) + tuple(strides) + (1,), "SAME" if same else "VALID")


def grouped_conv2d(x, kernel, strides, padding):
    """One grouped Conv2D (``kernel`` shallower than ``x``); `padding` 'SAME' or 'VALID'."""
    import tensorflow as tf

    return tf.nn.conv2d(x, kernel, strides=(1,) + tuple(strides) + (1,), padding=padding)


def _pad_5d(x, pads, fusable):
    """Zero padding of a 5D clip before a VALID Conv3D (which has no explicit padding).
    ``fusable``: as a Pad op, which TensorFlow fuses into the convolution; otherwise as
    concatenated zeros, for training graphs, where Grappler's remapper fails on the fused
    pattern's gradient (and then skips every other fusion of the graph)."""
    if not any(pads):
        return x
    if fusable:
        return ops.pad(x, [[0, 0]] + [[p, p] for p in pads] + [[0, 0]])
    for axis, p in enumerate(pads, start=1):
        if p:
            shape = [ops.shape(x)[0]] + [p if a == axis else x.shape[a] for a in range(1, 5)]
            zeros = ops.zeros(shape, dtype=x.dtype)
            x = ops.concatenate([zeros, x, zeros], axis=axis)
    return x
