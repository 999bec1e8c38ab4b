"""The time-packed layout of the deployment graph: frames folded into channels.

A clip ``(B, T, H, W, C)`` travels as ``(B, H, W, T * C)`` (channel ``t * C + c``) instead
of the frames tensor ``(B * T, H, W, C)`` of `keras_efficient3d.layers.taps`. Same numbers,
other shapes: a layer 6 channels wide becomes 96 channels wide at 16 frames, the width that
XNNPACK's SIMD tiles and int8 dot products fill. MobileNetV2 0.2x (3-19 channels, where
most of its time goes) ran 1.3x (fp32) and 2.3x (int8) faster so, and the int8 stems of
wider models 1.1-1.6x; wide layers gain nothing, so the deployment graph packs only while
the model is narrow (`DeploymentGraph(pack_channels=...)`) and unpacks, once, where it
widens.

* pointwise (1x1x1) convolutions are a 1x1 Conv2D over the ``(B, H, W * T, C)`` view (a
  reshape, no copy);
* a dense ``kt x kh x kw`` convolution (the RGB stem) is one Conv2D whose kernel is banded
  over frames: output frame ``t`` reads input frames ``t * st .. t * st + kt - 1`` of the
  clip padded by ``pt`` zero frames, the other blocks zero. It multiplies ``(T + 2pt) / kt``
  times more weights than it needs, which int8 dot products absorb (the 0.2x stem: 0.16 ms
  int8 against 1.9 ms as stacked taps);
* a depthwise 3D convolution is one depthwise Conv2D per live temporal tap on the frames
  that tap reads (a slice and a pad of the channel axis, or of a ``(B * H * W, T / st,
  st * C)`` view for a temporal stride), the kernel tiled over the output frames;
* everything elementwise (ReLU, add, folded BatchNorm with its affine tiled) is layout-free.

Only TensorFlow ops: the deployment graph is TensorFlow's (TFLite, QAT).
"""

import numpy as np
import tensorflow as tf

from keras_efficient3d.layers import taps

__all__ = ["band_matrix", "conv", "depthwise", "pack", "pointwise", "select", "tile", "to_clip",
           "unpack"]


def _b(x):
    b = x.shape[0]
    return -1 if b is None else int(b)


def pack(clips):
    """``(B, T, H, W, C)`` -> ``(B, H, W, T * C)``."""
    _, t, h, w, c = clips.shape
    return tf.reshape(tf.transpose(clips, [0, 2, 3, 1, 4]), [_b(clips), h, w, t * c])


def to_clip(x, frames):
    """``(B, H, W, T * C)`` -> ``(B, T, H, W, C)``."""
    _, h, w, tc = x.shape
    x5 = tf.reshape(x, [_b(x), h, w, frames, tc // frames])
    return tf.transpose(x5, [0, 3, 1, 2, 4])


def unpack(x, frames):
    """``(B, H, W, T * C)`` -> the frames tensor ``(B * T, H, W, C)``."""
    _, h, w, tc = x.shape
    lead = -1 if x.shape[0] is None else int(x.shape[0]) * frames
    return tf.reshape(to_clip(x, frames), [lead, h, w, tc // frames])


def tile(v, frames, axis=0):
    """`v` (a bias, a BatchNorm scale, a depthwise kernel) repeated along `axis` for every
    frame of a packed tensor. Numpy stays numpy: a constant in the converted model."""
    reps = [1] * len(np.shape(v))
    reps[axis] = frames
    return np.tile(v, reps) if isinstance(v, np.ndarray) else tf.tile(v, reps)


def pointwise(x, frames, kernel, bias=None, block_diagonal=False):
    """A 1x1x1 stride-1 convolution; `kernel` ``(1, 1, Cin, Cout)``. By default a 1x1
    Conv2D over the ``(B, H, W * T, Cin)`` view; ``block_diagonal``: one 1x1 Conv2D over
    ``(B, H, W, T * Cin)`` with the kernel on the diagonal of a ``T * Cin x T * Cout``
    matrix, T times the multiplications in one wide matrix product, the shape that int8
    matrix kernels need (XNNPACK's int8 kernels on this AMX CPU: a 6 -> 3 channel
    pointwise at 16 x 56 x 56 took 0.43 ms as the view and 0.03 ms block-diagonal, while
    float ran the view faster)."""
    _, h, w, tc = x.shape
    cin, cout = tc // frames, int(kernel.shape[-1])
    if block_diagonal:
        # (T, 1, T, 1) * (1, Cin, 1, Cout): an outer product the converter folds (its
        # lowering of the einsum made a malformed BatchMatMul)
        eye = np.eye(frames, dtype=np.float32)[:, None, :, None]
        if isinstance(kernel, np.ndarray):
            k = (eye * kernel.reshape(1, cin, 1, cout)).reshape(1, 1, frames * cin, frames * cout)
        else:
            k = tf.reshape(eye * tf.reshape(kernel, [1, cin, 1, cout]),
                           [1, 1, frames * cin, frames * cout])
        y = tf.nn.conv2d(x, k, 1, "VALID")
        return y if bias is None else tf.nn.bias_add(y, tile(bias, frames))
    y = tf.nn.conv2d(tf.reshape(x, [_b(x), h, w * frames, cin]), kernel, 1, "VALID")
    if bias is not None:
        y = tf.nn.bias_add(y, bias)
    return tf.reshape(y, [_b(x), h, w, frames * cout])


def pad_frames(x, lead, trail, channels):
    """``lead`` zero frames before and ``trail`` after a packed tensor, as a PAD of a
    ``(B * H * W, T * C)`` view: TensorFlow's graph optimizer (oneDNN) folds a PAD that
    feeds a convolution into it as spatial padding, and failed on one that pads channels
    ("input depth must be evenly divisible by filter depth: 48 vs 54")."""
    if not (lead or trail):
        return x
    _, h, w, tc = x.shape
    x2 = tf.pad(tf.reshape(x, [-1, tc]), [[0, 0], [lead * channels, trail * channels]])
    return tf.reshape(x2, [_b(x), h, w, tc + (lead + trail) * channels])


def select(x, frames, step, phase, start, stop):
    """Frames ``phase + step * j`` for ``start <= j < stop`` of a packed tensor: a channel
    slice, or for ``step > 1`` a slice of a ``(B * H * W, T / step, step * C)`` view."""
    if step == 1 and start == 0 and stop == frames:
        return x
    _, h, w, tc = x.shape
    channels = tc // frames
    # Sizes written out (XNNPACK declines a SLICE whose size holds -1: `taps.static_slice`).
    if step == 1:
        return taps.static_slice(x, [0, 0, 0, start * channels],
                                 [-1, h, w, (stop - start) * channels])
    if frames % step:  # whole phase groups
        x = pad_frames(x, 0, step - frames % step, channels)
        frames += step - frames % step
    v = tf.reshape(x, [-1, frames // step, step * channels])
    v = taps.static_slice(v, [0, start, phase * channels], [-1, stop - start, channels])
    return tf.reshape(v, [_b(x), h, w, (stop - start) * channels])


def depthwise(x, frames, kernel, bias, kernel_size, strides, padding, point=taps.no_point,
              name="", select_frames=None):
    """A depthwise 3D convolution of a packed tensor (see the module docstring) with the
    activation points of `keras_efficient3d.layers.taps.depthwise` (``name/tap{i}`` after
    each tap, ``name/sum{i}`` after each inner partial sum), holding the same values.

    Args:
        kernel: ``kernel(i)``, the ``(kh, kw, C, 1)`` depthwise kernel of tap ``i``.
        bias: a ``(C,)`` tensor or None.
        select_frames: ``select_frames(step, phase, start, stop)``, the packed tensor of
            those frames of the input (`select`); the deployment graph selects them further
            up, before an expansion, where they are fewer bytes.
    Returns the packed output and its number of frames.
    """
    if select_frames is None:
        def select_frames(step, phase, start, stop):
            return select(x, frames, step, phase, start, stop)
    kt, kh, kw = kernel_size
    st, sh, sw = strides
    pt, ph, pw = padding
    channels = x.shape[-1] // frames
    same = taps.same_padding((kh, kw), (sh, sw), (ph, pw))
    t_out, windows = taps.tap_windows(frames, kt, st, pt)
    live = [(i, wdw) for i, wdw in enumerate(windows) if wdw is not None]
    with_bias = taps.bias_tap(frames, kt, st, pt) if bias is not None else None
    outputs = []
    for i, (phase, start, stop, lead, trail) in live:
        xi = pad_frames(select_frames(st, phase, start, stop), lead, trail, channels)
        if not same:
            xi = taps.pad_hw(xi, ph, pw)
        yi = tf.nn.depthwise_conv2d(xi, tile(kernel(i), t_out, axis=2),
                                    [1, sh, sw, 1], "SAME" if same else "VALID")
        if i == with_bias:
            yi = tf.nn.bias_add(yi, tile(bias, t_out))
        outputs.append((i, yi))
    y = taps.sum_of_taps(outputs, point, name)
    if bias is not None and with_bias is None:
        y = tf.nn.bias_add(y, tile(bias, t_out))
    return y, t_out


def band_matrix(kt, frames_in, t_out, st):
    """``E[i, s, t] = 1`` where output frame ``t`` reads input frame ``s`` through tap ``i``
    (``s = t * st + i``, input frames counted with their padding)."""
    e = np.zeros((kt, frames_in, t_out), np.float32)
    for t in range(t_out):
        for i in range(kt):
            e[i, t * st + i, t] = 1.0
    return e


def conv(x, frames, kernel, bias, kernel_size, strides, padding):
    """A dense 3D convolution of a packed tensor as one Conv2D with a kernel banded over
    frames (see the module docstring).

    Args:
        kernel: ``(kh, kw, kt * Cin, Cout)``, the taps stacked as input channels (the
            deployment graph's layout of a Conv3D kernel).
        bias: a ``(Cout,)`` tensor or None.
    Returns the packed output and its number of frames.
    """
    kt, kh, kw = kernel_size
    st, sh, sw = strides
    pt, ph, pw = padding
    cin = x.shape[-1] // frames
    cout = int(kernel.shape[-1])
    t_out = taps.out_len(frames, kt, st, pt)
    frames_in = frames + 2 * pt
    same = taps.same_padding((kh, kw), (sh, sw), (ph, pw))
    x = pad_frames(x, pt, pt, cin)
    if not same:
        x = taps.pad_hw(x, ph, pw)
    band = band_matrix(kt, frames_in, t_out, st)
    if isinstance(kernel, np.ndarray):
        k = kernel.reshape(kh, kw, kt, cin, cout)
        banded = np.einsum("ist,hwico->hwscto", band, k).reshape(
            kh, kw, frames_in * cin, t_out * cout)
    else:
        k = tf.reshape(kernel, [kh, kw, kt, cin, cout])
        banded = tf.reshape(tf.einsum("ist,hwico->hwscto", band, k),
                            [kh, kw, frames_in * cin, t_out * cout])
    y = tf.nn.conv2d(x, banded, [1, sh, sw, 1], "SAME" if same else "VALID")
    if bias is not None:
        y = tf.nn.bias_add(y, tile(bias, t_out))
    return y, t_out
