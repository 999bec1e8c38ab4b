"""The native formulation of the 3D layers: one TensorFlow kernel per layer, as oneDNN,
cuDNN (and ONNX runtimes, OpenVINO, TensorRT) run them. `keras_efficient3d.layers.forms`
says where it is used; the 2D-tap formulation (`keras_efficient3d.layers.taps`) is the
other.

* a dense 3D convolution is one Conv3D (1.2-3.5x faster with oneDNN than 2D convolutions
  over its temporal taps, the 3-channel stems most);
* a grouped convolution is one grouped Conv2D per temporal tap (1.2-1.6x faster with
  oneDNN than split per group); Keras' own op would route groups through XLA.

On the JAX and PyTorch backends (`backend_takes`, `backend_pools`) the layers take those
backends' own 5-D operations instead (`conv5d`, `depthwise5d`, `pool5d`), chosen per op by
measurement
(16x56x56x144 depthwise 3x3x3, 2 threads, forward / forward+backward):

* PyTorch: ``conv3d`` on a channels-last view of the clip (a permute: NDHWC memory is
  PyTorch's ``channels_last_3d``), so oneDNN reads NDHWC without a copy: 50 ms / 1.2 s,
  against 258 ms / 2.2 s for the contiguous NCDHW layout of the original code (it writes
  NDHWC for depthwise kernels; a dense kernel's NCDHW output is copied to NDHWC);
* JAX: XLA's CPU convolution with ``feature_group_count`` runs a depthwise kernel as a
  dense one (7.6 s / 19 s); a sum of 27 shifted, scaled views, which XLA fuses into one
  loop, takes 51 ms / 0.8 s. Pointwise and grouped pointwise kernels are matrix products.
  Dense kernels over RGB (the stems) run one output frame at a time as patches times the
  kernel (`_jax_frame_conv`), the small ones' forward pass as one fused sum of shifted views
  (`_dense_shifted_sum`). Every other kernel (dense 3x3x3 and 7x7x7, ResNeXt's grouped ones)
  keeps the 2D taps:
  XLA's CPU convolution is several times faster in 2D than in 3D (the 3-channel stem of
  MobileNetV2, 1x16x112x112 to 32 channels: 9.3 ms as one 2D convolution of the stacked
  taps, 39 ms as one 3D convolution; whole models 1.5-3.5x faster, ResNet-18 training 3.3x).
  The depthwise sum and the max pool have hand-written gradients (`_jax_depthwise`,
  `_jax_max_pool`): XLA's own were most of a ShuffleNetV2 training step.
"""

import functools
import itertools
import math

import keras
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


def pad_clip(x, pads, value=0.0):
    """A 5-D clip with ``pads[i]`` cells of `value` on both sides of time, height, width."""
    return ops.pad(x, [[0, 0]] + [[p, p] for p in pads] + [[0, 0]], constant_values=value)


def _pad_5d(x, pads, fusable):
    """Zero padding of a 5D clip before a VALID Conv3D (which has no explicit padding).
    ``fusable``: as a Pad op, which TensorFlow fuses into the convolution; otherwise as
    concatenated zeros, for training graphs, where Grappler's remapper fails on the fused
    pattern's gradient (and then skips every other fusion of the graph)."""
    if not any(pads):
        return x
    if fusable:
        return pad_clip(x, pads)
    for axis, p in enumerate(pads, start=1):
        if p:
            shape = [ops.shape(x)[0]] + [p if a == axis else x.shape[a] for a in range(1, 5)]
            zeros = ops.zeros(shape, dtype=x.dtype)
            x = ops.concatenate([zeros, x, zeros], axis=axis)
    return x


# On JAX, dense kernels over at most this many input channels (the RGB stems) run as
# `_jax_frame_conv`; deeper inputs keep the 2D taps (not measured faster that way).
JAX_FRAME_CONV_CHANNELS = 4


def backend_takes(kernel_size=(1, 1, 1), groups=1, in_channels=None):
    """Whether a convolution computes with the backend's own 5-D operations (`conv5d`,
    `depthwise5d`; a depthwise layer asks with the defaults): on PyTorch always, on JAX for
    pointwise kernels and dense ones over a few input channels (see the module docstring);
    never on TensorFlow, whose forms `keras_efficient3d.layers.forms` chooses."""
    backend = keras.backend.backend()
    if backend != "jax":
        return backend == "torch"
    return tuple(kernel_size) == (1, 1, 1) or (
        groups == 1 and in_channels is not None and in_channels <= JAX_FRAME_CONV_CHANNELS)


def conv5d(x, kernel, bias, strides, padding, groups):
    """A (grouped) 3D convolution of a 5-D clip ``(B, T, H, W, Cin)`` by a
    ``(kt, kh, kw, Cin // groups, Cout)`` kernel with PyTorch's symmetric `padding`, bias
    added (None: none), on the PyTorch backend; on JAX, pointwise kernels and dense ones over
    a few channels (`backend_takes`)."""
    torch = keras.backend.backend() == "torch"
    if tuple(kernel.shape[:3]) == (1, 1, 1) and (groups == 1 or not torch):
        # A matrix product over the channels (PyTorch's conv3d takes its slow im2col path
        # for 1x1x1 kernels on a channels-last clip).
        if any(padding):
            x = pad_clip(x, padding)
        if any(s > 1 for s in strides):
            x = x[:, ::strides[0], ::strides[1], ::strides[2]]
        cin, cout = kernel.shape[3], kernel.shape[4]
        if groups == 1 and torch:
            y = x @ torch_tensor(kernel).reshape(cin, cout)
        elif groups == 1:
            y = ops.matmul(x, ops.reshape(kernel, (cin, cout)))
        else:
            w = ops.transpose(ops.reshape(kernel, (cin, groups, cout // groups)), (1, 0, 2))
            xg = ops.reshape(x, tuple(x.shape[:4]) + (groups, cin))
            y = ops.reshape(ops.einsum("bthwgi,gio->bthwgo", xg, w),
                            tuple(x.shape[:4]) + (cout,))
    elif not torch:  # JAX: a dense kernel over a few channels (`backend_takes`)
        y = _jax_frame_conv()(x, ops.convert_to_tensor(kernel), tuple(strides), tuple(padding))
    else:
        import torch.nn.functional as F

        y = F.conv3d(ops.transpose(x, (0, 4, 1, 2, 3)), ops.transpose(kernel, (4, 3, 0, 1, 2)),
                     None if bias is None else ops.convert_to_tensor(bias),
                     tuple(strides), tuple(padding), 1, groups)
        # A depthwise conv3d comes back NDHWC (channels_last_3d), a dense one NCDHW (the RGB
        # stems'): copied to NDHWC, as the layers after it read it (ShuffleNetV2's stem max
        # pool read the NCDHW view in 4.7 of an 18 ms inference, against 0.5 ms; inference
        # ShuffleNetV2 1.0x 14.4-15.0 -> 11.4-12.0 ms, SqueezeNet 1.1 45 -> 37, MobileNetV2
        # 1.0x ~5% faster, ResNet-18 the same).
        return ops.transpose(y, (0, 2, 3, 4, 1)).contiguous()
    if bias is None:
        return y
    return y + (torch_tensor(bias) if torch else bias)


def torch_tensor(value):
    """A Keras variable's own torch tensor (what keras.ops would convert it to), else `value`:
    PyTorch runs each training step eagerly, where keras.ops' conversion and dispatch cost
    more than the small operations they wrap (~0.1 ms per call of a ShuffleNetV2 layer)."""
    return value.value if isinstance(value, keras.Variable) else value


def depthwise5d(x, kernel, bias, strides, padding):
    """A depthwise 3D convolution of a 5-D clip by a ``(kt, kh, kw, C, 1)`` kernel with
    PyTorch's symmetric `padding`, bias added (None: none), on the JAX or PyTorch backend."""
    if keras.backend.backend() == "torch":
        import torch

        if torch.is_grad_enabled():
            return _torch_depthwise_taps(x, ops.convert_to_tensor(kernel), bias, strides,
                                         padding)
        return conv5d(x, ops.transpose(kernel, (0, 1, 2, 4, 3)), bias, strides, padding,
                      x.shape[-1])
    y = _jax_depthwise()(x, ops.convert_to_tensor(kernel), tuple(strides), tuple(padding))
    return y if bias is None else y + bias


def _offsets(kernel_size):
    """A kernel's taps ``(a, b, c)`` in PyTorch's scan order: time, then rows, then columns."""
    return list(itertools.product(*(range(k) for k in kernel_size)))


def _out_shape(x, kernel_size, strides, padding=(0, 0, 0)):
    """The output's (frames, height, width) of a window sliding over a 5-D clip."""
    return tuple((n + 2 * p - k) // s + 1
                 for n, k, s, p in zip(x.shape[1:4], kernel_size, strides, padding))


def _views(x, kernel_size, strides, out_shape):
    """The views of a padded 5-D clip that a kernel's taps read, one per tap in `_offsets`
    order: view k at output cell j is the cell tap k reads for j."""
    (st, sh, sw), (t, h, w) = strides, out_shape
    return [x[:, a:a + st * (t - 1) + 1:st, b:b + sh * (h - 1) + 1:sh, c:c + sw * (w - 1) + 1:sw]
            for a, b, c in _offsets(kernel_size)]


def _sum_of_taps(x, kernel, strides, padding, terms):
    """The sum, over a kernel's taps, of ``terms(tap's kernel, tap's view)`` (an iterable
    of tensors) on the padded clip: one loop once XLA fuses it."""
    x = pad_clip(x, padding)
    views = _views(x, kernel.shape[:3], strides, _out_shape(x, kernel.shape[:3], strides))
    y = None
    for (a, b, c), view in zip(_offsets(kernel.shape[:3]), views):
        for term in terms(kernel[a, b, c], view):
            y = term if y is None else y + term
    return y


def _shifted_sum(x, kernel, strides, padding):
    """A depthwise 3D convolution as the sum of its kernel's shifted, scaled views of the
    padded clip (`_sum_of_taps`)."""
    return _sum_of_taps(x, kernel, strides, padding, lambda k, view: [view * k[:, 0]])


def _custom_gradient(compute, gradients):
    """``compute(x, kernel, strides, padding)`` as a JAX function whose gradient is
    ``gradients(x, kernel, dy, strides, padding)``, a pair (input's, kernel's)."""
    import jax

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
    def function(x, kernel, strides, padding):
        return compute(x, kernel, strides, padding)

    def forward(x, kernel, strides, padding):
        return compute(x, kernel, strides, padding), (x, kernel)

    def backward(strides, padding, residuals, dy):
        return gradients(*residuals, dy, strides, padding)

    function.defvjp(forward, backward)
    return function


@functools.cache
def _jax_depthwise():
    """`_shifted_sum` with a hand-written gradient, made once. XLA differentiates the sum
    into 27 separate reductions over the whole clip for the kernel's gradient, each a pass
    through memory (16x8x28x28x144 at batch 4: 160 ms); the kernel gradient here takes
    one frame at a time, so the 27 products of a frame are summed while it is in cache
    (29 ms), and the input's gradient is the same shifted sum, of the output gradient by
    the flipped kernel."""
    def gradients(x, kernel, dy, strides, padding):
        return (_depthwise_input_grad(dy, kernel, x.shape, strides, padding),
                _depthwise_kernel_grad(x, dy, kernel.shape, strides, padding))

    return _custom_gradient(_shifted_sum, gradients)


@functools.cache
def _jax_frame_conv():
    """A dense 3D convolution on JAX one output frame at a time: the frame's patches
    (im2col, built while the few input frames it reads are in cache) times the kernel as a
    matrix, with a hand-written kernel gradient in the same form; made once. For the RGB
    stems, where XLA's convolutions are slowest (3x3x3 stride (1, 2, 2) of a batch-4
    16x112x112x3 clip to 24 channels: forward 20 against 49 ms as stacked 2D taps, kernel
    gradient 18 against ~100 ms); the input's gradient is XLA's, and no work once unused
    (a stem's). A small kernel's forward is `_dense_shifted_sum` (`_fused_stem`)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    def patches(x, i, kernel_shape, strides, out_hw):
        """Output frame i's patches ``(h * w, kt * kh * kw * cin)`` of the padded clip."""
        views = _window_views(x, i, kernel_shape[:3], strides, out_hw)
        return jnp.reshape(jnp.concatenate(views, axis=-1), (-1, len(views) * kernel_shape[3]))

    def compute(x, kernel, strides, padding):
        if _fused_stem(kernel.shape):
            return _dense_shifted_sum(x, kernel, strides, padding)
        t, h, w = _out_shape(x, kernel.shape[:3], strides, padding)
        xp = pad_clip(x, padding)
        matrix = jnp.reshape(kernel, (-1, kernel.shape[-1]))
        y = lax.map(lambda i: patches(xp, i, kernel.shape, strides, (h, w)) @ matrix,
                    jnp.arange(x.shape[0] * t))
        return jnp.reshape(y, (x.shape[0], t, h, w, kernel.shape[-1]))

    def gradients(x, kernel, dy, strides, padding):
        n, t, h, w, cout = dy.shape
        xp = pad_clip(x, padding)

        def frame(i, total):
            g = jnp.reshape(lax.dynamic_slice(dy, (i // t, i % t, 0, 0, 0), (1, 1, h, w, cout)),
                            (h * w, cout))
            return total + patches(xp, i, kernel.shape, strides, (h, w)).T @ g

        # Two frames per iteration: XLA then overlaps one frame's patches with the other's
        # product (ShuffleNetV2's batch-4 stem, gradient alone: 27.7 against 33.4 ms; four:
        # 26.7; the depthwise kernel gradient's loop gains nothing from it).
        total = lax.fori_loop(0, n * t, frame,
                              jnp.zeros((kernel.size // cout, cout), kernel.dtype), unroll=2)
        dx = jax.vjp(lambda v: compute(v, kernel, strides, padding), x)[1](dy)[0]
        return dx, jnp.reshape(total, kernel.shape)

    return _custom_gradient(compute, gradients)


# On JAX, a dense kernel of at most this many taps times input channels, to at most this
# many output channels, computes its forward pass as `_dense_shifted_sum`.
JAX_FUSED_TERMS = 81
JAX_FUSED_CHANNELS = 32


def _fused_stem(kernel_shape):
    """Whether `_jax_frame_conv` computes a kernel's forward pass as `_dense_shifted_sum`:
    where measured faster than the frame loop (3x3x3 from RGB, stride (1, 2, 2), batch 4
    16x112x112: 8 channels 5.2 against 23.2 ms, 24 19.3 against 35.7, 32 22.0 against
    35.0; 64 channels 48.7 against 51.5, stride 1 187 against 168, and a 7x7x7 kernel ~18x
    slower). XLA's loop runs at about the same multiply-adds per second at every width,
    while the frame loop's matrix product gains with the output channels."""
    return (math.prod(kernel_shape[:4]) <= JAX_FUSED_TERMS
            and kernel_shape[4] <= JAX_FUSED_CHANNELS)


def _dense_shifted_sum(x, kernel, strides, padding):
    """A dense 3D convolution over a few input channels as the sum of its taps' shifted
    views of the padded clip, each input channel scaled by its row of the tap's kernel: one
    loop once XLA fuses it, which reads the clip where the frame loop first copies it into
    patches (`_sum_of_taps`)."""
    return _sum_of_taps(x, kernel, strides, padding, lambda k, view: (
        view[..., i:i + 1] * k[i] for i in range(k.shape[0])))


def _window_views(x, i, kernel_size, strides, out_hw):
    """The `_views` of a padded 5-D clip that output frame i (over batch and frames) reads,
    each ``(1, 1, h, w, C)``: only the kernel's frames of the clip, so that the work of a
    per-frame loop stays in cache."""
    from jax import lax

    kt, st = kernel_size[0], strides[0]
    t_out = (x.shape[1] - kt) // st + 1
    frames = lax.dynamic_slice(x, (i // t_out, (i % t_out) * st, 0, 0, 0),
                               (1, kt) + tuple(x.shape[2:]))
    return _views(frames, kernel_size, (1,) + tuple(strides[1:]), (1,) + tuple(out_hw))


def _depthwise_input_grad(dy, kernel, x_shape, strides, padding):
    """The transposed convolution: `dy` dilated by the strides and padded by kernel - 1
    (less the forward padding, cropped away), then the stride-1 shifted sum with the
    flipped kernel."""
    from jax import lax

    config = [(0, 0, 0)]
    for n, k, s, p, o in zip(x_shape[1:4], kernel.shape[:3], strides, padding, dy.shape[1:4]):
        # Positions of the padded input past the last window get no gradient.
        config.append((k - 1 - p, n + p - (o - 1) * s - 1, s - 1))
    config.append((0, 0, 0))
    dy = lax.pad(dy, ops.convert_to_tensor(0, dy.dtype), config)
    return _shifted_sum(dy, kernel[::-1, ::-1, ::-1], (1, 1, 1), (0, 0, 0))


def _depthwise_kernel_grad(x, dy, kernel_shape, strides, padding):
    """The kernel's gradient, one output frame at a time (see `_jax_depthwise`)."""
    import jax.numpy as jnp
    from jax import lax

    x = pad_clip(x, padding)
    n, t, h, w, c = dy.shape

    def frame(i, total):
        g = lax.dynamic_slice(dy, (i // t, i % t, 0, 0, 0), (1, 1, h, w, c))
        views = _window_views(x, i, kernel_shape[:3], strides, (h, w))
        return total + jnp.stack([jnp.sum(v * g, axis=(0, 1, 2, 3)) for v in views])

    total = lax.fori_loop(0, n * t, frame, jnp.zeros((len(_offsets(kernel_shape[:3])), c), x.dtype))
    return jnp.reshape(total, kernel_shape)


def _torch_depthwise_taps(x, kernel, bias, strides, padding):
    """A depthwise 3D convolution on PyTorch as one depthwise conv2d per live temporal tap,
    on channels-last views: PyTorch's conv3d backward of a depthwise kernel is its slow
    path (16x56x56x144, forward+backward: 1.6 s against 0.4 s); inference keeps the
    conv3d (41 ms against 81 ms)."""
    import torch.nn.functional as F

    from keras_efficient3d.layers.taps import live_taps, out_len

    kt = kernel.shape[0]
    st, sh, sw = strides
    pt, ph, pw = padding
    _, t, h, w, c = x.shape
    live = live_taps(t, kt, st, pt)
    t_out = out_len(t, kt, st, pt)
    xp = F.pad(x, (0, 0, 0, 0, 0, 0, pt, pt)) if pt else x
    y = None
    for a in live:
        frames = xp[:, a:a + st * (t_out - 1) + 1:st].reshape(-1, h, w, c)
        ya = F.conv2d(frames.permute(0, 3, 1, 2), kernel[a].permute(2, 3, 0, 1), None,
                      (sh, sw), (ph, pw), 1, c)
        y = ya if y is None else y + ya
    y = y.permute(0, 2, 3, 1)
    y = y.reshape((-1, t_out) + tuple(y.shape[1:]))
    return y if bias is None else y + ops.convert_to_tensor(bias)


def backend_pools(kind="max"):
    """Whether a pooling layer of `kind` ('max' or 'avg') takes `pool5d`: on PyTorch, and
    max pools on JAX; elsewhere the 2D-tap pools."""
    backend = keras.backend.backend()
    return backend == "torch" or (backend == "jax" and kind == "max")


def pool5d(x, kind, pool_size, strides, padding):
    """On JAX, a max pool with a hand-written gradient (`_jax_max_pool`). On PyTorch, its
    own max_pool3d / avg_pool3d (``count_include_pad``, as the original's
    AvgPool3d) on a channels-last view of a 5-D clip: the same semantics as
    `keras_efficient3d.layers.taps.pool`, 2 ms against 28 ms for the separable 2D-tap
    form through keras.ops (16x56x56x24, 3x3x3 stride 2, one thread)."""
    if keras.backend.backend() == "jax":
        return _jax_max_pool()(x, tuple(pool_size), tuple(strides), tuple(padding))
    import torch.nn.functional as F

    pool = F.max_pool3d if kind == "max" else F.avg_pool3d
    padding = tuple(padding)
    if any(n < k for n, k in zip(x.shape[1:4], pool_size)):
        # PyTorch refuses a window larger than the unpadded input: pad explicitly (zeros
        # count in the mean as count_include_pad does; -inf never wins a max).
        fill = float("-inf") if kind == "max" else 0.0
        x = pad_clip(x, padding, fill)
        padding = (0, 0, 0)
    dtype = x.dtype
    if kind == "avg" and str(dtype).split(".")[-1] in ("bfloat16", "float16"):
        # PyTorch has no CPU avg_pool3d of bf16 or fp16 ("not implemented for 'BFloat16'",
        # 'Half', under mixed_bfloat16 and mixed_float16): the mean in float32, the result
        # back in the policy's type
        x = ops.cast(x, "float32")
    y = pool(ops.transpose(x, (0, 4, 1, 2, 3)), tuple(pool_size), tuple(strides), padding)
    return ops.cast(ops.transpose(y, (0, 2, 3, 4, 1)), dtype)


@functools.cache
def _jax_max_pool():
    """A 3D max pool (PyTorch's: padding never wins) on JAX as the maximum of the window's
    shifted views, with a hand-written gradient, made once. XLA differentiates a max pool
    into select-and-scatter, which its CPU backend runs slowly (3x3x3 stride 2 of a batch-4
    16x56x56x24 clip, forward and backward: 120 ms); here the backward finds each window's
    first maximum (PyTorch's choice among ties) as an index, then gathers the gradient to
    every input cell from the windows that picked it, in one fused loop."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    @functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
    def max_pool(x, pool_size, strides, padding):
        xp = pad_clip(x, padding, float("-inf"))
        return functools.reduce(jnp.maximum,
                                _views(xp, pool_size, strides, _out_shape(xp, pool_size, strides)))

    def forward(x, pool_size, strides, padding):
        y = max_pool(x, pool_size, strides, padding)
        return y, (x, y)

    def backward(pool_size, strides, padding, residuals, dy):
        x, y = residuals
        xp = pad_clip(x, padding, float("-inf"))
        taps = _views(xp, pool_size, strides, y.shape[1:4])
        # The first tap equal to the maximum, scanning backwards so the first one wins.
        index = jnp.zeros(y.shape, jnp.int32)
        for k in range(len(taps) - 1, 0, -1):
            index = jnp.where(taps[k] == y, k, index)
        index = jnp.where(taps[0] == y, 0, index)
        dxp = None
        for k, offset in enumerate(_offsets(pool_size)):
            part = jnp.where(index == k, dy, jnp.zeros((), dy.dtype))
            # Window j's tap at `offset` reads padded cell offset + stride * j.
            config = [(0, 0, 0)] + [
                (o, n - o - s * (m - 1) - 1, s - 1)
                for o, n, s, m in zip(offset, xp.shape[1:4], strides, y.shape[1:4])
            ] + [(0, 0, 0)]
            part = lax.pad(part, jnp.zeros((), dy.dtype), config)
            dxp = part if dxp is None else dxp + part
        t, h, w = x.shape[1:4]
        pt, ph, pw = padding
        return (dxp[:, pt:pt + t, ph:ph + h, pw:pw + w],)

    max_pool.defvjp(forward, backward)
    return max_pool
