"""The 2D-tap formulation of the 3D layers, written once.

A 3D kernel of temporal extent ``kt`` is the sum (or max) over its ``kt`` temporal taps of
a 2D operation on frames. Everything here works on a *frames tensor*: a clip
``(batch, frames, H, W, C)`` viewed as ``(batch * frames, H, W, C)`` (a metadata-only
reshape), passed with its number of frames ``t`` and its static ``batch`` (None when
unknown). Frames are selected and padded through ``(batch, frames, H * W * C)`` views, or
on axis 0 directly at batch 1, so no 5-D tensor is made: what TFLite and XNNPACK need, and
as fast as the 5-D form in TensorFlow.

The Keras layers (`keras_efficient3d.layers`) and the deployment graph
(`keras_efficient3d.deploy.graph`) both call these functions; where TFLite wants other ops
for the same numbers (``xnnpack=True``, chosen by `keras_efficient3d.layers.forms`) the
choice is an argument here, not a second copy:

* temporal taps of dense kernels pad the input once and slice it (XNNPACK) instead of
  slicing in place and padding each tap;
* average pooling is a depthwise convolution (XNNPACK takes no int8 AVERAGE_POOL_2D), and
  max pooling of a signed input pads with replicated edges instead of -inf (an int8
  tensor has no -inf);
* a spatial subsample is a strided slice instead of a 1x1 max pool.

Activation points (``point(key, x)``) are where the deployment graph's quantization hooks
act (`keras_efficient3d.deploy.quantize`); they are identities for the Keras layers.
"""

from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from keras_efficient3d.layers._video import reshape
from keras_efficient3d.layers.native import grouped_conv2d


def out_len(size, kernel, stride, pad):
    if size is None:
        return None
    return (size + 2 * pad - kernel) // stride + 1


def live_taps(t, kt, st, pt):
    """Temporal taps that read at least one real frame of a ``t``-frame clip; the others
    see only padding and add nothing (the last stages of a 16-frame clip have one frame)."""
    t_out = (t + 2 * pt - kt) // st + 1
    return [i for i in range(kt) if any(pt <= i + st * j < pt + t for j in range(t_out))]


def tap_windows(t, kt, st, pt):
    """Where each temporal tap reads, without padding the input.

    Tap ``i`` reads frames ``i - pt + st * j`` (``j < t_out``), that is frames ``offset + j``
    of the phase stream ``x[phase::st]``. Returns t_out and, per tap, None (a dead tap, see
    `live_taps`) or ``(phase, start, stop, lead, trail)``: the tap is the 2D operation on
    ``x[phase::st][start:stop]`` with ``lead`` zero frames before and ``trail`` after."""
    t_out = (t + 2 * pt - kt) // st + 1
    if t_out < 1:
        raise ValueError(f"A temporal kernel of {kt} with padding {pt} does not fit {t} frames.")
    live = live_taps(t, kt, st, pt)
    out = []
    for i in range(kt):
        if i not in live:
            out.append(None)
            continue
        phase, offset = (i - pt) % st, (i - pt) // st
        n = len(range(phase, t, st))
        start, stop = max(0, offset), min(n, offset + t_out)
        out.append((phase, start, stop, start - offset, offset + t_out - stop))
    return t_out, out


class DepthwiseTap(NamedTuple):
    """One live temporal tap of a depthwise 3D kernel (see `depthwise_plan`)."""

    index: int
    phase: int
    before: tuple | None  # (start, size): frames of the phase stream the 2D op reads
    after: tuple | None  # (start, size): frames of the 2D op's output that are kept
    lead: int
    trail: int


def depthwise_plan(t, kt, st, pt, spatial_stride):
    """How a depthwise 3D kernel is computed on a ``t``-frame clip without a padded copy:
    t_out and, for each live tap (`tap_windows`), the 2D depthwise op on the phase stream
    ``x[phase::st]``, with its frames selected on the input (``before``), or on the output
    when a spatial stride makes the output the smaller (``after``), then ``lead`` and
    ``trail`` zero frames; the taps' results are summed."""
    t_out, windows = tap_windows(t, kt, st, pt)
    plan = []
    for i, window in enumerate(windows):
        if window is None:
            continue
        phase, start, stop, lead, trail = window
        partial = (start, stop - start) if start or stop < len(range(phase, t, st)) else None
        plan.append(DepthwiseTap(i, phase, None if spatial_stride else partial,
                                 partial if spatial_stride else None, lead, trail))
    return t_out, plan


def bias_tap(t, kt, st, pt):
    """The first tap whose output covers every frame (it carries the bias), or None."""
    for i, w in enumerate(tap_windows(t, kt, st, pt)[1]):
        if w is not None and not (w[3] or w[4]):
            return i
    return None


def same_padding(kernel_hw, strides_hw, padding_hw):
    """True when PyTorch's symmetric padding equals TensorFlow's SAME (stride 1, odd
    kernel, half padding): the convolution then pads internally, without a padded copy."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_hw, strides_hw, padding_hw
    return sh == sw == 1 and kh % 2 == kw % 2 == 1 and 2 * ph == kh - 1 and 2 * pw == kw - 1


def no_point(key, x):
    """The activation point of plain float computation: nothing happens there."""
    return x


def bias_add(x, bias):
    """Adds a per-channel bias; on TensorFlow as a BiasAdd op, the form its graph optimizer
    fuses into the preceding convolution (with the activation after it)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        return tf.nn.bias_add(x, bias)
    return ops.add(x, bias)


def _lead(batch, frames):
    """The leading dimension of a frames tensor of `frames` frames."""
    return -1 if batch is None else batch * frames


def static_slice(x, begin, size):
    """`ops.slice` with every ``-1`` size that the static shape knows written out: XNNPACK
    declines a SLICE whose size holds ``-1`` (it split ShuffleNets into 14 partitions)."""
    dims = list(x.shape)
    size = [dims[i] - begin[i] if (s == -1 and dims[i] is not None) else s
            for i, s in enumerate(size)]
    return ops.slice(x, begin, size)


def _slice_axis(x, axis, start, size):
    begin = [0] * len(x.shape)
    sizes = [-1] * len(x.shape)
    begin[axis], sizes[axis] = start, size
    return static_slice(x, begin, sizes)


def select_frames(x, t, batch, start, size):
    """Frames ``start:start + size`` of a ``t``-frame frames tensor. At batch 1 a slice of
    axis 0, which TensorFlow takes as a view of the input's buffer; otherwise a slice of a
    ``(batch, t, H * W * C)`` view."""
    if start == 0 and size == t:
        return x
    if batch == 1:
        return _slice_axis(x, 0, start, size)
    _, h, w, c = x.shape
    x3 = ops.reshape(x, (-1 if batch is None else batch, t, h * w * c))
    x3 = ops.slice(x3, (0, start, 0), (-1 if batch is None else batch, size, h * w * c))
    return ops.reshape(x3, (_lead(batch, size), h, w, c))


def pad_frames(x, t, batch, lead, trail, value=0.0):
    """Adds ``lead`` frames before and ``trail`` after a ``t``-frame frames tensor: a pad
    of axis 0 at batch 1, of a ``(batch, t, H * W * C)`` view otherwise (a plain block
    copy, cheaper than TensorFlow's general 5-D pad)."""
    if not (lead or trail):
        return x
    if batch == 1:
        return ops.pad(x, [[lead, trail], [0, 0], [0, 0], [0, 0]], constant_values=value)
    _, h, w, c = x.shape
    x3 = ops.reshape(x, (-1 if batch is None else batch, t, h * w * c))
    x3 = ops.pad(x3, [[0, 0], [lead, trail], [0, 0]], constant_values=value)
    return ops.reshape(x3, (_lead(batch, t + lead + trail), h, w, c))


def pad_hw(x, ph, pw, value=0.0):
    """Spatial padding of a frames tensor."""
    if not (ph or pw):
        return x
    return ops.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]], constant_values=value)


def _pad_edge(x, p, axis):
    """Replicates the first and the last entry of `axis` `p` times (max pooling of signed
    int8 inputs: a replicated edge never beats the real cell it copies)."""
    first = _slice_axis(x, axis, 0, 1)
    last = _slice_axis(x, axis, x.shape[axis] - 1, 1)
    return ops.concatenate([first] * p + [x] + [last] * p, axis=axis)


def phase(x, t, batch, st, p):
    """Frames ``p, p + st, ...`` of a ``t``-frame frames tensor and their number, through a
    ``(batch, t / st, st, H * W * C)`` view (slices and reshapes only: Python strided slices
    on the time axis broke TensorFlow's graph optimizer inside ``model.predict``)."""
    if st == 1:
        return x, t
    _, h, w, c = x.shape
    n = -(-t // st)
    x = pad_frames(x, t, batch, 0, n * st - t)
    if batch == 1:
        view = ops.slice(ops.reshape(x, (n, st, h * w, c)), (0, p, 0, 0), (n, 1, h * w, c))
    else:
        b = -1 if batch is None else batch
        view = ops.slice(ops.reshape(x, (b, n, st, h * w * c)), (0, 0, p, 0),
                         (b, n, 1, h * w * c))
    x = ops.reshape(view, (_lead(batch, n), h, w, c))
    m = len(range(p, t, st))
    return select_frames(x, n, batch, 0, m), m


def unpadded_taps(x, t, batch, kt, st, pt):
    """Per temporal tap, ``(frames tensor, frames, lead, trail)`` (None for the dead taps
    of `live_taps`): the frames the tap meets, read from the clip (or its phase stream,
    `phase`) in place, and the zero frames it meets before and after them, counted, not
    added; and t_out."""
    t_out, windows = tap_windows(t, kt, st, pt)
    streams = {}
    taps = []
    for window in windows:
        if window is None:
            taps.append(None)
            continue
        p, start, stop, lead, trail = window
        if p not in streams:
            streams[p] = phase(x, t, batch, st, p)
        xp, n = streams[p]
        taps.append((select_frames(xp, n, batch, start, stop - start), stop - start, lead,
                     trail))
    return taps, t_out


def temporal_taps(x, t, batch, kt, st, pt, pad_input=False):
    """One ``(batch * t_out, H, W, C)`` frames tensor per temporal tap (None for the dead
    taps of `live_taps`), each holding the frames that tap meets, and t_out.

    By default each tap reads the clip (or its phase stream, `phase`) in place and gets
    zero frames where it reads outside the clip; ``pad_input`` pads the input once and
    slices every tap from it (the deployment graph's form)."""
    if not pad_input:
        taps, t_out = unpadded_taps(x, t, batch, kt, st, pt)
        return [None if tap is None else pad_frames(tap[0], tap[1], batch, *tap[2:])
                for tap in taps], t_out
    live = live_taps(t, kt, st, pt)
    tp = t + 2 * pt
    t_out = (tp - kt) // st + 1
    if t_out < 1:
        raise ValueError(f"A temporal kernel of {kt} with padding {pt} does not fit {t} frames.")
    extra = max(0, kt - 1 + st * t_out - tp) if st > 1 else 0
    xp = pad_frames(x, t, batch, pt, pt + extra)
    taps = []
    for i in range(kt):
        if i not in live:
            taps.append(None)
        elif st == 1:
            taps.append(select_frames(xp, tp + extra, batch, i, t_out))
        else:
            xi = select_frames(xp, tp + extra, batch, i, st * t_out)
            taps.append(phase(xi, st * t_out, batch, st, 0)[0])
    return taps, t_out


def stacked_taps(x, t, batch, kt, st, pt):
    """The temporal taps of a frames tensor stacked as channels, ``(batch * t_out, H, W,
    kt * C)`` in tap order, and t_out, computed by one 2D convolution with a 0/1 kernel over
    a ``(batch, t, H * W, C)`` view: tap ``i`` of output frame ``j`` is input frame
    ``st * j + i - pt`` (zero outside the clip). Exact in float (each output is one input
    times 1 plus zeros). For RGB stems under XNNPACK: slicing and concatenating 3-channel
    frames copies 12 bytes at a time (1.7 ms of MobileNetV1's 2.5 ms stem at 16x112x112),
    the convolution writes the same tensor in 0.5 ms."""
    _, h, w, c = x.shape
    t_out = out_len(t, kt, st, pt)
    if t_out < 1:
        raise ValueError(f"A temporal kernel of {kt} with padding {pt} does not fit {t} frames.")
    eye = np.zeros((kt, 1, c, kt * c), np.float32)
    for i in range(kt):
        eye[i, 0, :, i * c:(i + 1) * c] = np.eye(c, dtype=np.float32)
    view = ops.reshape(x, (-1 if batch is None else batch, t, h * w, c))
    # SAME pads (kt - 1) // 2 frames before at stride 1: the usual stem; otherwise an
    # explicit pad (and any frames past the last window are never read).
    same = st == 1 and kt % 2 == 1 and pt == (kt - 1) // 2
    if not same and pt:
        view = ops.pad(view, [[0, 0], [pt, pt], [0, 0], [0, 0]])
    y = ops.conv(view, ops.convert_to_tensor(eye), strides=(st, 1),
                 padding="same" if same else "valid")
    return ops.reshape(y, (_lead(batch, t_out), h, w, kt * c)), t_out


def convolution(x, t, batch, kernel, kernel_size, strides, padding, groups=1,
                split_groups=True, bias=None, pad_input=False, stack_by_conv=False):
    """A (grouped) 3D convolution of a frames tensor as 2D convolutions over its temporal
    taps. Returns the outputs per group (one when ``groups`` is 1 or not split), bias
    added, and t_out.

    Args:
        kernel: ``kernel(g, live)``, the 2D kernel ``(kh, kw, len(live) * cin, cout)`` of
            group ``g`` (None for all groups at once) with the taps `live` stacked as
            input channels, in tap order.
        bias: None, or ``bias(g)`` the bias of group ``g`` (None: all groups).
        split_groups: one convolution per group (slices of the input channels), where the
            runtime has no fast grouped Conv2D; otherwise one grouped Conv2D per tap.
        pad_input: see `temporal_taps`.
        stack_by_conv: an ungrouped convolution whose taps all read the clip stacks them
            with `stacked_taps` (float graphs of RGB stems) instead of slices and a concat.
    """
    kt, kh, kw = kernel_size
    st, sh, sw = strides
    pt, ph, pw = padding
    same = same_padding((kh, kw), (sh, sw), (ph, pw))
    grouped = groups > 1 and not split_groups
    cin = x.shape[-1] // groups

    def conv2d(x4, k):
        if not same:
            x4 = pad_hw(x4, ph, pw)
        if grouped:
            return grouped_conv2d(x4, k, (sh, sw), "SAME" if same else "VALID")
        return ops.conv(x4, k, strides=(sh, sw), padding="same" if same else "valid")

    parts = []
    t_out = None
    # Sums of taps are written `y + yi`: `ops.add` makes a (1, 1, 1, C) tap (one frame of
    # 1x1 pixels at batch 1) a BiasAdd with a Squeeze, two ops for TFLite instead of ADD.
    if stack_by_conv and groups == 1 and kt > 1 and len(live_taps(t, kt, st, pt)) == kt:
        stacked, t_out = stacked_taps(x, t, batch, kt, st, pt)
        y = conv2d(stacked, kernel(0, list(range(kt))))
        return [y if bias is None else bias_add(y, bias(0))], t_out
    for g in ([None] if grouped else range(groups)):
        xg = x if groups == 1 or grouped else static_slice(
            x, [0, 0, 0, g * cin], [-1, -1, -1, cin])
        # Terms of the sum: (taps, input frames, frames to pad the output with or None).
        if not pad_input and (grouped or len(live_taps(t, kt, st, pt)) == 1):
            # Each tap convolved over the frames it meets, its zero frames added to the
            # output (zero in, zero out; the bias comes after): fewer frames to convolve,
            # and no pad of the batch axis feeding a convolution, which TensorFlow's oneDNN
            # remapper fuses into it wrongly at batch 1 (the padded frames lost).
            unpadded, t_out = unpadded_taps(xg, t, batch, kt, st, pt)
            terms = [([i], tap[0], tap[1:]) for i, tap in enumerate(unpadded) if tap is not None]
        else:
            taps, t_out = temporal_taps(xg, t, batch, kt, st, pt, pad_input)
            live = [i for i, tap in enumerate(taps) if tap is not None]
            if grouped or len(live) == 1:
                # Stacking would interleave the groups' channels: one grouped conv per tap.
                terms = [([i], taps[i], None) for i in live]
            else:
                # Temporal taps stacked as channels make one 2D convolution with a deeper
                # kernel: larger matrix products than a sum of kt convolutions, which
                # matters most for the 3-channel stem (1.7x faster measured).
                terms = [(live, concatenate_channels([taps[i] for i in live]), None)]
        y = None
        for tap_indices, xi, frames in terms:
            yi = conv2d(xi, kernel(g, tap_indices))
            if frames is not None:
                n, lead, trail = frames
                yi = pad_frames(yi, n, batch, lead, trail)
            y = yi if y is None else y + yi
        if bias is not None:
            y = bias_add(y, bias(g))
        parts.append(y)
    return parts, t_out


def sum_of_taps(outputs, point=no_point, name=""):
    """The sum of a depthwise 3D kernel's tap outputs ``[(tap index, tensor)]`` with its
    activation points, where the deployment graph quantizes: ``name/tap{i}`` after each tap
    and ``name/sum{i}`` after each inner partial sum (none for a single tap)."""
    if len(outputs) == 1:
        return outputs[0][1]
    y = None
    for n, (i, yi) in enumerate(outputs):
        yi = point(f"{name}/tap{i}", yi)
        y = yi if y is None else y + yi
        if 0 < n < len(outputs) - 1:
            y = point(f"{name}/sum{i}", y)
    return y


def depthwise(x, t, batch, kernel, bias, kernel_size, strides, padding, point=no_point,
              name="", stream=None):
    """A depthwise 3D convolution of a frames tensor: the sum of one depthwise 2D
    convolution per live temporal tap (`depthwise_plan`). Each tap reads the clip (or its
    phase stream) in place, and the output frames that it does not reach are zero frames
    padded onto its smaller output: no padded copy of the input, the dominant cost of
    depthwise layers on CPU. Returns the frames tensor (bias added) and t_out.

    Args:
        kernel: ``kernel(i)``, the ``(kh, kw, C, 1)`` depthwise kernel of tap ``i``.
        bias: a ``(C,)`` tensor or None; added to the first tap that covers every frame.
        point: activation point after each tap (``name/tap{i}``) and each inner partial
            sum (``name/sum{i}``) of a multi-tap kernel.
        stream: ``stream(p) -> (frames tensor, frames)``, the phase stream ``p`` of the
            input; default `phase` (the deployment graph selects frames further up).
    """
    kt, kh, kw = kernel_size
    st, sh, sw = strides
    pt, ph, pw = padding
    same = same_padding((kh, kw), (sh, sw), (ph, pw))
    t_out, plan = depthwise_plan(t, kt, st, pt, sh * sw > 1)
    with_bias = bias_tap(t, kt, st, pt) if bias is not None else None
    streams = {}
    outputs = []
    for tap in plan:
        if tap.phase not in streams:
            streams[tap.phase] = (stream(tap.phase) if stream is not None
                                  else phase(x, t, batch, st, tap.phase))
        xi, frames = streams[tap.phase]
        if tap.before:
            xi = select_frames(xi, frames, batch, *tap.before)
            frames = tap.before[1]
        if not same:
            xi = pad_hw(xi, ph, pw)
        yi = ops.depthwise_conv(xi, kernel(tap.index), strides=(sh, sw),
                                padding="same" if same else "valid")
        if tap.index == with_bias:
            yi = bias_add(yi, bias)
        if tap.after:
            yi = select_frames(yi, frames, batch, *tap.after)
            frames = tap.after[1]
        outputs.append((tap.index, pad_frames(yi, frames, batch, tap.lead, tap.trail)))
    y = sum_of_taps(outputs, point, name)
    if bias is not None and with_bias is None:
        y = bias_add(y, bias)
    return y, t_out


def _avg_pool_as_depthwise(x, ksize, strides):
    """A VALID average pool as a depthwise convolution with weights ``1 / (kh * kw)``
    (exact in int8: one weight per channel); XNNPACK takes no int8 AVERAGE_POOL_2D."""
    kh, kw = ksize
    if strides[0] != strides[1]:  # TensorFlow's depthwise conv needs equal strides
        return ops.average_pool(x, ksize, strides=strides, padding="valid")
    kernel = np.full((kh, kw, x.shape[-1], 1), 1.0 / (kh * kw), np.float32)
    return ops.depthwise_conv(x, kernel, strides=strides, padding="valid")


def concatenate_channels(xs):
    """`xs` concatenated along channels, in concatenations of at most four tensors: XNNPACK
    takes no CONCATENATION of more (a 7-frame stem's taps, in a QAT int8 graph, where no
    convolution stacks them, fell back to TFLite's own kernels)."""
    while len(xs) > 4:
        xs = [xs[i:i + 4] for i in range(0, len(xs), 4)]
        xs = [part[0] if len(part) == 1 else ops.concatenate(part, axis=-1) for part in xs]
    return ops.concatenate(xs, axis=-1)


def pool(x, t, batch, kind, pool_size, strides, padding, xnnpack=False, nonneg=False,
         point=no_point, name=""):
    """A 3D max (``kind='max'``) or average pool of a frames tensor, separable (max and
    mean over a box are both separable): a 2D pool of every frame, then a ``(kt, 1)`` pool
    over a ``(batch, t, H * W, C)`` view. Max pooling ignores padding (PyTorch's), average
    pooling counts padded zeros (PyTorch's ``count_include_pad=True``). Returns the frames
    tensor and t_out.

    Args:
        xnnpack: average pools as depthwise convolutions and, unless `nonneg` (the input
            is known to be >= 0, where zeros never win), max-pool padding by replicated
            edges instead of -inf.
        point, name: the activation point between an average pool's spatial and temporal
            stages (``point(f"{name}/frames", x)``): without a range there, a QAT graph's
            spatial stage would stay in float.
    """
    kt, kh, kw = pool_size
    st, sh, sw = strides
    pt, ph, pw = padding
    edge = xnnpack and kind == "max" and not nonneg
    fill = float("-inf") if kind == "max" and not xnnpack else 0.0
    if kh > 1 or kw > 1 or sh > 1 or sw > 1:
        if edge:
            x = _pad_edge(x, ph, 1) if ph else x
            x = _pad_edge(x, pw, 2) if pw else x
        else:
            x = pad_hw(x, ph, pw, fill)
        if kind == "max":
            x = ops.max_pool(x, (kh, kw), strides=(sh, sw), padding="valid")
        elif xnnpack:
            x = _avg_pool_as_depthwise(x, (kh, kw), (sh, sw))
        else:
            x = ops.average_pool(x, (kh, kw), strides=(sh, sw), padding="valid")
        if kind == "avg" and (kt > 1 or st > 1):
            x = point(f"{name}/frames", x)
    t_out = (t + 2 * pt - kt) // st + 1
    if kt > 1 or st > 1:
        _, h, w, c = x.shape
        x4 = ops.reshape(x, (-1 if batch is None else batch, t, h * w, c))
        if pt:
            x4 = _pad_edge(x4, pt, 1) if edge else ops.pad(
                x4, [[0, 0], [pt, pt], [0, 0], [0, 0]], constant_values=fill)
        if xnnpack and kind == "avg" and kt == st and not pt and t % st == 0:
            # non-overlapping windows: a stride-1 depthwise conv over (B * t_out, kt, HW, C)
            x4 = ops.reshape(x4, (_lead(batch, t_out), kt, h * w, c))
            x4 = _avg_pool_as_depthwise(x4, (kt, 1), (1, 1))
        else:
            x4 = (ops.max_pool if kind == "max" else ops.average_pool)(
                x4, (kt, 1), strides=(st, 1), padding="valid")
        x = ops.reshape(x4, (_lead(batch, t_out), h, w, c))
    return x, t_out


def shuffle(x, t, batch, groups):
    """ShuffleNet's channel shuffle of a frames tensor: channel ``g * (C // groups) + j``
    moves to ``j * groups + g``, exactly as the PyTorch view-permute-view on NCDHW."""
    if groups == 1:
        return x
    _, h, w, c = x.shape
    y = ops.transpose(reshape(x, (-1, groups, c // groups)), (0, 2, 1))
    return reshape(y, (_lead(batch, t), h, w, c))


def split(x):
    """The two channel halves of a frames tensor, the first ``C // 2`` channels wide, as
    ``x[:, :C//2]`` in PyTorch."""
    c = x.shape[-1]
    half = c // 2
    if keras.backend.backend() == "torch":  # views, without keras.ops' dispatch (`reshape`)
        return x[..., :half], x[..., half:]
    return (static_slice(x, [0, 0, 0, 0], [-1, -1, -1, half]),
            static_slice(x, [0, 0, 0, half], [-1, -1, -1, c - half]))


def zero_pad_channels(x, t, batch, filters, strides, xnnpack=False):
    """ResNet's shortcut A on a frames tensor: ``avg_pool3d(kernel 1, stride)`` (a strided
    subsample), then zero channels up to `filters`. Returns the frames tensor and its
    frames. `xnnpack`: the spatial subsample as a strided slice rather than a 1x1 max pool
    (Python strided slices broke TensorFlow's graph optimizer inside ``model.predict``)."""
    st, sh, sw = strides
    if st > 1:
        taps, t = temporal_taps(x, t, batch, 1, st, 0, pad_input=xnnpack)
        x = taps[0]
    if sh > 1 or sw > 1:
        if xnnpack:
            x = x[:, ::sh, ::sw, :]
        else:
            # A 1x1 pool with stride picks pixels 0, s, 2s, ... as PyTorch's does.
            x = ops.max_pool(x, (1, 1), strides=(sh, sw), padding="valid")
    extra = filters - x.shape[-1]
    if extra:
        x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])
    return x, t
