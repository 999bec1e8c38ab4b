"""The deployment graph: a Keras model re-expressed with the ops TFLite runs natively, in int8
and under XNNPACK.

`DeploymentGraph(model)` folds BatchNorm (`keras_efficient3d.inference.fold_batchnorm`) and
walks the functional model layer by layer, emitting TensorFlow ops on 4-D tensors only:

* a clip of a fixed batch ``B`` travels as ``(B * frames, H, W, C)``; at batch 1 (the export
  default) that is ``(frames, H, W, C)``, so temporal taps are pads and slices on axis 0;
* a 3D convolution is one 2D convolution over its temporal taps stacked as channels (a
  ``kt`` times deeper kernel), a depthwise 3D convolution the sum of ``kt`` depthwise 2D
  convolutions, grouped convolutions are split per group;
* 3D pooling is separable: a 2D pool over (H, W), then a ``(kt, 1)`` 2D pool over
  ``(B, frames, H * W, C)``;
* channel shuffles are 3-D reshape/transpose/reshape, global pooling a MEAN over a 4-D view.

There are no 5-D tensors besides the input (reshaped once) and no dynamic shapes in an
exported graph, which is what XNNPACK needs to take a full-int8 model (it refused the
5-D PAD/SLICE graph with a dynamic batch).

The same emitter serves three purposes through a `hooks` object: plain float export
(constants), quantization-aware training (trainable variables seen through fake-quant ops,
see `keras_efficient3d.deploy.quantize`) and int8 export after QAT (constants with frozen
fake-quant ranges). Parameters and activation quantization points have stable string keys.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_efficient3d import layers as k3d
from keras_efficient3d.layers import bias_tap, depthwise_plan, live_taps
from keras_efficient3d.inference import Folded, fold_batchnorm

__all__ = ["DeploymentGraph", "FloatHooks", "build_deployment_graph"]

_IDENTITY = (Folded, keras.layers.Dropout, keras.layers.InputLayer,
             keras.layers.SpatialDropout3D, keras.layers.GaussianNoise)


class FloatHooks:
    """Hooks of the plain float graph: parameters are constants, activations untouched."""

    def __init__(self, params):
        self._params = params

    def param(self, key):
        return tf.constant(self._params[key])

    def act(self, key, x):
        return x


class _Video:
    """A clip tensor ``(batch * frames, H, W, C)`` with its number of frames."""

    __slots__ = ("x", "frames", "nonneg", "remap", "parts")

    def __init__(self, x, frames, nonneg=False, remap=None, parts=None):
        self.x, self.frames, self.nonneg = x, int(frames), bool(nonneg)
        # For a channel concatenation: the videos concatenated (a ReLU moves onto them).
        self.parts = parts
        # For a frame-wise result (pointwise conv, activation) at batch 1: a function of a
        # frame selector ``f(video) -> video`` that re-emits the value on the selected frames
        # of its input, so that the selection (a copy) happens on the smaller input.
        self.remap = remap


class _Flat:
    """Any other tensor (batch, ...): pooled features, logits."""

    __slots__ = ("x",)

    def __init__(self, x):
        self.x = x


def _activation_name(layer):
    """'relu', 'relu6', 'linear' or None (anything else) for a ReLU/Activation layer or a
    layer with an `activation` attribute."""
    if isinstance(layer, keras.layers.ReLU):
        cfg = layer.get_config()
        if cfg.get("negative_slope", 0.0) or cfg.get("threshold", 0.0):
            return None
        if cfg.get("max_value") is None:
            return "relu"
        return "relu6" if float(cfg["max_value"]) == 6.0 else None
    fn = layer.activation if hasattr(layer, "activation") else None
    if fn is None:
        return "linear"
    name = keras.activations.serialize(fn)
    name = name if isinstance(name, str) else getattr(fn, "__name__", None)
    return name if name in ("relu", "relu6", "linear") else None


def _apply_activation(layer_or_fn, x):
    fn = layer_or_fn
    name = keras.activations.serialize(fn)
    name = name if isinstance(name, str) else getattr(fn, "__name__", None)
    if name in (None, "linear"):
        return x
    if name == "relu":
        return tf.nn.relu(x)
    if name == "relu6":
        return tf.nn.relu6(x)
    if name == "softmax":
        return tf.nn.softmax(x, axis=-1)
    if name == "sigmoid":
        return tf.math.sigmoid(x)
    return tf.convert_to_tensor(fn(x))


class DeploymentGraph:
    """A trained Keras model as a TFLite-friendly graph (see the module docstring).

    Args:
        model: a functional model from the registry (raw or already folded).
        fold: fold BatchNorm first (a no-op for a folded model).

    Attributes:
        model: the folded Keras model that the graph reproduces.
        input_shape: ``(frames, height, width, channels)``.
        params: parameter key -> float32 array, in the layout the emitted ops use.
        param_kinds: key -> ``'conv'`` (per-channel over the last axis), ``'depthwise'``
            (per-channel over axis 2), ``'dense'``, ``'bias'`` or ``'const'``.
    """

    def __init__(self, model, fold=True):
        if fold and any(isinstance(l, (keras.layers.BatchNormalization, keras.layers.Dropout))
                        for l in model.layers):
            model = fold_batchnorm(model)
        if len(model.inputs) != 1:
            raise ValueError(f"Expected a model with one input. Received: {len(model.inputs)} inputs")
        self.model = model
        self.input_shape = tuple(int(s) for s in model.inputs[0].shape[1:])
        if len(self.input_shape) != 4:
            raise ValueError(f"Expected a video model with 5D input. Received: input_shape={self.input_shape}")
        self.params = {}
        self.param_kinds = {}
        self._steps = []
        consumers = {}
        for layer in model.layers:
            for node in layer._inbound_nodes:
                for t in node.input_tensors:
                    consumers.setdefault(id(t), []).append(layer)
        self._consumers = consumers
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if len(layer._inbound_nodes) != 1:
                raise ValueError(f"Shared layer '{layer.name}' is not supported.")
            self._steps.append((layer, layer._inbound_nodes[0]))
            self._collect_params(layer)

    # ---------------------------------------------------------------- parameters
    def _add(self, key, value, kind):
        self.params[key] = np.ascontiguousarray(np.asarray(value, np.float32))
        self.param_kinds[key] = kind

    def _collect_params(self, layer):
        name = layer.name
        if isinstance(layer, k3d.Conv3D):
            kt, kh, kw = layer.kernel_size
            kernel = layer.kernel.numpy()
            cin = kernel.shape[3]
            cout = layer.filters // layer.groups
            for g in range(layer.groups):
                kg = kernel[..., g * cout:(g + 1) * cout]
                # (kt, kh, kw, cin, cout) -> (kh, kw, kt * cin, cout): taps stacked as channels.
                kg = np.transpose(kg, (1, 2, 0, 3, 4)).reshape(kh, kw, kt * cin, cout)
                self._add(f"{name}/kernel{g}", kg, "conv")
                if layer.use_bias:
                    self._add(f"{name}/bias{g}", layer.bias.numpy()[g * cout:(g + 1) * cout], "bias")
        elif isinstance(layer, k3d.DepthwiseConv3D):
            kernel = layer.kernel.numpy()
            # Only the taps that meet real frames: the others are never emitted, and as QAT
            # variables they would get no gradient.
            frames = layer._inbound_nodes[0].input_tensors[0].shape[1]
            for i in live_taps(frames, kernel.shape[0], layer.strides[0], layer.padding[0]):
                self._add(f"{name}/kernel{i}", kernel[i], "depthwise")
            if layer.use_bias:
                self._add(f"{name}/bias", layer.bias.numpy(), "bias")
        elif isinstance(layer, keras.layers.Dense):
            self._add(f"{name}/kernel", layer.kernel.numpy(), "dense")
            if layer.use_bias:
                self._add(f"{name}/bias", layer.bias.numpy(), "bias")
        elif isinstance(layer, keras.layers.BatchNormalization):
            gamma = layer.gamma.numpy() if layer.scale else 1.0
            beta = layer.beta.numpy() if layer.center else 0.0
            scale = gamma / np.sqrt(layer.moving_variance.numpy() + layer.epsilon)
            self._add(f"{name}/scale", scale, "const")
            self._add(f"{name}/shift", beta - layer.moving_mean.numpy() * scale, "const")
        elif layer.weights:
            raise ValueError(f"Layer '{name}' ({type(layer).__name__}) with weights is not "
                             "supported by the deployment graph.")

    # ---------------------------------------------------------------- emission
    def __call__(self, clips, batch=None, hooks=None):
        """Emits the graph on `clips` (B, T, H, W, C) and returns the model's output(s).

        Args:
            clips: a float32 tensor.
            batch: the static batch size the graph is specialised for (1 for export), or
                None for any batch (training, evaluation).
            hooks: parameter and activation hooks; default `FloatHooks(self.params)`.
        """
        hooks = hooks or FloatHooks(self.params)
        emitter = _Emitter(self, batch, hooks)
        return emitter.run(clips)

    def as_function(self, batch=1, hooks=None):
        """A `tf.function` with a fixed input signature (batch, T, H, W, C)."""
        spec = tf.TensorSpec((batch,) + self.input_shape, tf.float32, name="clips")

        @tf.function(input_signature=[spec])
        def serve(clips):
            return self(clips, batch=batch, hooks=hooks)

        return serve

    def predict(self, clips, batch_size=None):
        """Runs the float graph eagerly on a numpy batch (for checks)."""
        clips = np.asarray(clips, np.float32)
        return np.asarray(self(tf.constant(clips), batch=clips.shape[0]))


def build_deployment_graph(model, fold=True):
    """Returns `DeploymentGraph(model, fold)`."""
    return DeploymentGraph(model, fold=fold)


class _Emitter:
    def __init__(self, graph, batch, hooks):
        self.g = graph
        self.batch = batch
        self.hooks = hooks
        self.b = -1 if batch is None else int(batch)
        self._phases = {}
        self._keep = []

    # -- helpers
    def _shape(self, x):
        return [int(d) if d is not None else None for d in x.shape]

    def _feeds_activation_only(self, layer, node):
        """True when the layer's single output goes to exactly one ReLU-like layer, so that
        its quantization point is taken after that activation."""
        outs = node.output_tensors
        if len(outs) != 1:
            return False
        users = self.g._consumers.get(id(outs[0]), [])
        if len(users) != 1:
            return False
        user = users[0]
        return isinstance(user, (keras.layers.ReLU, keras.layers.Activation)) and \
            _activation_name(user) in ("relu", "relu6", "linear")

    def _pad_frames_edge(self, x3, pt, axis):
        """Replicates the first/last frame `pt` times along `axis` (max pooling of signed
        inputs: a replicated edge never beats the real cell it copies)."""
        n = x3.shape[axis]
        first = _slice_axis(x3, axis, 0, 1)
        last = _slice_axis(x3, axis, n - 1, 1)
        return tf.concat([first] * pt + [x3] + [last] * pt, axis=axis)

    def _pad_hw(self, x, ph, pw, mode):
        if not (ph or pw):
            return x
        if mode == "zero":
            return tf.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
        if ph:
            x = self._pad_frames_edge(x, ph, 1)
        if pw:
            x = self._pad_frames_edge(x, pw, 2)
        return x

    def taps(self, v, kt, st, pt, ph=0, pw=0, pad_value=0.0):
        """One (B * t_out, H + 2ph, W + 2pw, C) tensor per temporal tap (None for taps
        that read only padding, see `live_taps`), and t_out."""
        x, t = v.x, v.frames
        # The tap plan is the Keras layers' own: dead taps that see only padding are dropped
        # (as int8 tensors their all-zero range, scale 0, makes XNNPACK refuse the graph).
        live = live_taps(t, kt, st, pt)
        _, h, w, c = self._shape(x)
        hp, wp, tp = h + 2 * ph, w + 2 * pw, t + 2 * pt
        t_out = (tp - kt) // st + 1
        if t_out < 1:
            raise ValueError(f"A temporal kernel of {kt} with padding {pt} does not fit {t} frames.")
        extra = max(0, kt - 1 + st * t_out - tp) if st > 1 else 0
        if self.batch == 1:
            if pt or ph or pw or extra:
                x = tf.pad(x, [[pt, pt + extra], [ph, ph], [pw, pw], [0, 0]],
                           constant_values=pad_value)
            taps = []
            for i in range(kt):
                if i not in live:
                    taps.append(None)
                    continue
                if st == 1:
                    xi = x if (kt == 1 and t_out == tp) else tf.slice(x, [i, 0, 0, 0], [t_out, hp, wp, c])
                else:
                    xi = tf.slice(x, [i, 0, 0, 0], [st * t_out, hp, wp, c])
                    xi = tf.reshape(xi, [t_out, st * hp * wp * c])
                    xi = tf.slice(xi, [0, 0], [t_out, hp * wp * c])
                    xi = tf.reshape(xi, [t_out, hp, wp, c])
                taps.append(xi)
            return taps, t_out
        if ph or pw:
            x = tf.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]], constant_values=pad_value)
        x3 = tf.reshape(x, [self.b, t, hp * wp * c])
        if pt or extra:
            x3 = tf.pad(x3, [[0, 0], [pt, pt + extra], [0, 0]], constant_values=pad_value)
        taps = []
        for i in range(kt):
            if i not in live:
                taps.append(None)
                continue
            if st == 1:
                xi = x3 if (kt == 1 and t_out == tp) else tf.slice(x3, [0, i, 0], [-1, t_out, hp * wp * c])
            else:
                xi = tf.slice(x3, [0, i, 0], [-1, st * t_out, hp * wp * c])
                xi = tf.reshape(xi, [self.b, t_out, st * hp * wp * c])
                xi = tf.slice(xi, [0, 0, 0], [-1, t_out, hp * wp * c])
            taps.append(tf.reshape(xi, [-1, hp, wp, c]))
        return taps, t_out

    def _phase(self, v, st, phase):
        """Frames ``phase, phase + st, ...`` of a batch-1 clip (T, H, W, C) as a video: the
        clip itself for stride 1, otherwise one SLICE of a (T / st, st, H * W, C) view (no
        padding). The selection moves up through frame-wise producers (`_Video.remap`), so
        that e.g. MobileNetV2 selects frames before its expansion, not after."""
        if st == 1:
            return v
        key = (id(v), st, phase)
        if key not in self._phases:
            self._keep.append(v)
            if v.remap is not None:
                out = v.remap(lambda u: self._phase(u, st, phase))
            else:
                x, t = v.x, v.frames
                _, h, w, c = self._shape(x)
                n = -(-t // st)
                xv = x
                if n * st != t:
                    xv = tf.pad(x, [[0, n * st - t], [0, 0], [0, 0], [0, 0]])
                xv = tf.reshape(xv, [n, st, h * w, c])
                xp = tf.reshape(tf.slice(xv, [0, phase, 0, 0], [n, 1, h * w, c]), [n, h, w, c])
                m = len(range(phase, t, st))
                if m < n:
                    xp = tf.slice(xp, [0, 0, 0, 0], [m, h, w, c])
                out = _Video(xp, m, v.nonneg)
            self._phases[key] = out
        return self._phases[key]

    # -- layers
    def conv3d(self, layer, v):
        out = self._conv3d(layer, v)
        if self.batch == 1 and tuple(layer.kernel_size) == (1, 1, 1) and \
                tuple(layer.strides) == (1, 1, 1) and tuple(layer.padding) == (0, 0, 0) and \
                v.x.shape[-1] <= out.x.shape[-1]:  # select frames where they are fewer bytes
            out.remap = lambda select: self._conv3d(layer, select(v))
        return out

    def _conv3d(self, layer, v):
        kt, kh, kw = layer.kernel_size
        st, sh, sw = layer.strides
        pt, ph, pw = layer.padding
        name = layer.name
        same = sh == 1 and sw == 1 and kh % 2 and kw % 2 and 2 * ph == kh - 1 and 2 * pw == kw - 1
        groups = layer.groups
        c = v.x.shape[-1]
        cin = c // groups
        parts = []
        t_out = None
        for g in range(groups):
            vg = v if groups == 1 else _Video(
                _slice(v.x, [0, 0, 0, g * cin], [-1, -1, -1, cin]), v.frames)
            # Temporal taps pad frames only; spatial padding is a separate spatial-only PAD
            # (XNNPACK folds it into the convolution) or SAME.
            taps, t_out = self.taps(vg, kt, st, pt)
            live = [i for i, xi in enumerate(taps) if xi is not None]
            x2d = taps[live[0]] if len(live) == 1 else tf.concat([taps[i] for i in live], axis=-1)
            if not same and (ph or pw):
                x2d = tf.pad(x2d, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
            kernel = self.hooks.param(f"{name}/kernel{g}")
            if len(live) < kt:  # drop the kernel rows of taps that see only padding
                kernel = tf.concat([kernel[:, :, i * cin:(i + 1) * cin] for i in live], axis=2)
            y = tf.nn.conv2d(x2d, kernel, strides=[1, sh, sw, 1], padding="SAME" if same else "VALID")
            if layer.use_bias:
                y = tf.nn.bias_add(y, self.hooks.param(f"{name}/bias{g}"))
            parts.append(y)
        if _activation_name(layer) in ("relu", "relu6"):
            # per group, so that it fuses into each CONV_2D (XNNPACK takes no int8 RELU)
            parts = [_apply_activation(layer.activation, p) for p in parts]
            y = parts[0] if groups == 1 else tf.concat(parts, axis=-1)
        else:
            y = parts[0] if groups == 1 else tf.concat(parts, axis=-1)
            y = _apply_activation(layer.activation, y)
        if not self._feeds_activation_only(layer, layer._inbound_nodes[0]):
            y = self.hooks.act(name, y)
        out = _Video(y, t_out, _activation_name(layer) in ("relu", "relu6"))
        if groups > 1 and _activation_name(layer) == "linear":
            out.parts = [_Video(p, t_out) for p in parts]
        return out

    def depthwise3d(self, layer, v):
        """The sum of one depthwise 2D convolution per live temporal tap. At batch 1 the taps
        read the clip (or its even/odd frames for temporal stride 2) in place, and the
        frames that a tap does not reach are zero frames padded onto its (smaller) output,
        so no padded copy of the input is made."""
        kt, kh, kw = layer.kernel_size
        st, sh, sw = layer.strides
        pt, ph, pw = layer.padding
        name = layer.name
        same = sh == 1 and sw == 1 and kh % 2 and kw % 2 and 2 * ph == kh - 1 and 2 * pw == kw - 1
        padding = "SAME" if same else "VALID"
        with_bias = bias_tap(v.frames, kt, st, pt)

        def dw(xi, i):
            if not same and (ph or pw):
                xi = tf.pad(xi, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
            yi = tf.nn.depthwise_conv2d(xi, self.hooks.param(f"{name}/kernel{i}"),
                                        strides=[1, sh, sw, 1], padding=padding)
            if i == with_bias and layer.use_bias:
                yi = tf.nn.bias_add(yi, self.hooks.param(f"{name}/bias"))
            return yi

        if self.batch == 1:
            t_out, plan = depthwise_plan(v.frames, kt, st, pt, sh * sw > 1)
            live = [tap.index for tap in plan]
            outs = {}
            for tap in plan:
                xp = self._phase(v, st, tap.phase).x
                if tap.before:
                    xp = _slice_axis(xp, 0, *tap.before)
                yi = dw(xp, tap.index)
                if tap.after:
                    yi = _slice_axis(yi, 0, *tap.after)
                if tap.lead or tap.trail:
                    yi = tf.pad(yi, [[tap.lead, tap.trail], [0, 0], [0, 0], [0, 0]])
                outs[tap.index] = yi
        else:
            taps, t_out = self.taps(v, kt, st, pt, 0 if same else ph, 0 if same else pw)
            live = [i for i, xi in enumerate(taps) if xi is not None]
            outs = {}
            for i in live:
                yi = tf.nn.depthwise_conv2d(taps[i], self.hooks.param(f"{name}/kernel{i}"),
                                            strides=[1, sh, sw, 1], padding=padding)
                if i == with_bias and layer.use_bias:
                    yi = tf.nn.bias_add(yi, self.hooks.param(f"{name}/bias"))
                outs[i] = yi
        y = None
        for n, i in enumerate(live):
            yi = outs[i]
            if len(live) == 1:
                y = yi
                break
            yi = self.hooks.act(f"{name}/tap{i}", yi)
            y = yi if y is None else y + yi
            if 0 < n < len(live) - 1:
                y = self.hooks.act(f"{name}/sum{i}", y)
        if with_bias is None and layer.use_bias:
            y = tf.nn.bias_add(y, self.hooks.param(f"{name}/bias"))
        y = _apply_activation(layer.activation, y)
        if not self._feeds_activation_only(layer, layer._inbound_nodes[0]):
            y = self.hooks.act(name, y)
        return _Video(y, t_out, _activation_name(layer) in ("relu", "relu6"))

    def pool3d(self, layer, v, kind):
        kt, kh, kw = layer.pool_size
        st, sh, sw = layer.strides
        pt, ph, pw = layer.padding
        x = v.x
        mode = "zero" if (kind == "avg" or v.nonneg) else "edge"
        pool = tf.nn.max_pool2d if kind == "max" else _avg_pool_as_depthwise
        if kh > 1 or kw > 1 or sh > 1 or sw > 1:
            x = self._pad_hw(x, ph, pw, mode)
            x = pool(x, [kh, kw], [sh, sw], "VALID")
        _, h, w, c = self._shape(x)
        t = v.frames
        t_out = (t + 2 * pt - kt) // st + 1
        if kt > 1 or st > 1:
            x4 = tf.reshape(x, [self.b, t, h * w, c])
            if pt:
                if mode == "zero":
                    x4 = tf.pad(x4, [[0, 0], [pt, pt], [0, 0], [0, 0]])
                else:
                    x4 = self._pad_frames_edge(x4, pt, 1)
            if kind == "avg" and kt == st and not pt and t % st == 0:
                # non-overlapping windows: a stride-1 depthwise conv over (B * t_out, kt, HW, C)
                x4 = tf.reshape(x4, [-1 if self.batch is None else self.b * t_out, kt, h * w, c])
                x4 = _avg_pool_as_depthwise(x4, [kt, 1], [1, 1], "VALID")
            else:
                x4 = (tf.nn.max_pool2d if kind == "max" else tf.nn.avg_pool2d)(
                    x4, [kt, 1], [st, 1], "VALID")
            x = tf.reshape(x4, [-1 if self.batch is None else self.b * t_out, h, w, c])
        if kind == "avg":
            x = self.hooks.act(layer.name, x)
        return _Video(x, t_out, v.nonneg)

    def shuffle(self, layer, v):
        g = layer.groups
        if g == 1:
            return v
        _, h, w, c = self._shape(v.x)
        x = tf.reshape(v.x, [-1, g, c // g])
        x = tf.transpose(x, [0, 2, 1])
        return _Video(tf.reshape(x, [-1 if self.batch is None else self.b * v.frames, h, w, c]),
                      v.frames, v.nonneg)

    def split(self, layer, v):
        c = v.x.shape[-1]
        half = c // 2
        first = _slice(v.x, [0, 0, 0, 0], [-1, -1, -1, half])
        second = _slice(v.x, [0, 0, 0, half], [-1, -1, -1, c - half])
        return [_Video(first, v.frames, v.nonneg), _Video(second, v.frames, v.nonneg)]

    def zero_pad_channels(self, layer, v):
        st, sh, sw = layer.strides
        x, t = v.x, v.frames
        if st > 1:
            taps, t = self.taps(v, 1, st, 0)
            x = taps[0]
        if sh > 1 or sw > 1:
            x = x[:, ::sh, ::sw, :]
        extra = layer.filters - x.shape[-1]
        if extra:
            x = tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])
        return _Video(x, t, v.nonneg)

    def global_pool(self, layer, v, kind):
        if layer.get_config().get("keepdims"):
            raise ValueError(f"'{layer.name}': keepdims=True is not supported.")
        _, h, w, c = self._shape(v.x)
        x = tf.reshape(v.x, [self.b, v.frames * h, w, c])
        x = tf.reduce_mean(x, axis=[1, 2]) if kind == "avg" else tf.reduce_max(x, axis=[1, 2])
        if kind == "avg":
            x = self.hooks.act(layer.name, x)
        return _Flat(x)

    def dense(self, layer, f):
        name = layer.name
        y = tf.matmul(f.x, self.hooks.param(f"{name}/kernel"))
        if layer.use_bias:
            y = tf.nn.bias_add(y, self.hooks.param(f"{name}/bias"))
        y = _apply_activation(layer.activation, y)
        return _Flat(self.hooks.act(name, y))

    def _relu_of_parts(self, v):
        """ReLU of a channel concatenation as the concatenation of the ReLUs of its parts:
        a ReLU on a convolution fuses into it and one on a non-negative part vanishes
        (XNNPACK takes no standalone int8 RELU, e.g. after ShuffleNetV1's concat)."""
        if v.nonneg:
            return v.x
        if v.parts:
            return tf.concat([self._relu_of_parts(p) for p in v.parts], axis=-1)
        return tf.nn.relu(v.x)

    def activation(self, layer, v):
        if isinstance(v, _Video) and v.parts and isinstance(self.hooks, FloatHooks) and \
                isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)) and \
                _activation_name(layer) == "relu":
            y = self.hooks.act(layer.name, self._relu_of_parts(v))
            out = _Video(y, v.frames, True)
            if self.batch == 1:
                out.remap = lambda select: self.activation(layer, select(v))
            return out
        if isinstance(layer, keras.layers.ReLU):
            act = _activation_name(layer)
            y = tf.convert_to_tensor(layer(v.x)) if act is None else \
                _apply_activation(keras.activations.get(act), v.x)
        else:
            y = _apply_activation(layer.activation, v.x)
        y = self.hooks.act(layer.name, y)
        if not isinstance(v, _Video):
            return _Flat(y)
        out = _Video(y, v.frames, _activation_name(layer) in ("relu", "relu6"))
        if self.batch == 1:
            out.remap = lambda select: self.activation(layer, select(v))
        return out

    def run(self, clips):
        clips = tf.convert_to_tensor(clips, tf.float32)
        t, h, w, c = self.g.input_shape
        x = tf.reshape(clips, [-1 if self.batch is None else self.b * t, h, w, c])
        x = self.hooks.act("input", x)
        values = {id(self.g.model.inputs[0]): _Video(x, t)}
        for layer, node in self.g._steps:
            ins = [values[id(tensor)] for tensor in node.input_tensors]
            out = self.layer(layer, node, ins)
            outs = out if isinstance(out, (list, tuple)) else [out]
            for tensor, value in zip(node.output_tensors, outs):
                values[id(tensor)] = value
        results = []
        for tensor in self.g.model.outputs:
            value = values[id(tensor)]
            if isinstance(value, _Video):
                _, hh, ww, cc = self._shape(value.x)
                results.append(tf.reshape(value.x, [self.b, value.frames, hh, ww, cc]))
            else:
                results.append(value.x)
        return results[0] if len(results) == 1 else results

    def layer(self, layer, node, ins):
        name = layer.name
        if isinstance(layer, _IDENTITY):
            return ins[0]
        if isinstance(layer, k3d.Conv3D):
            return self.conv3d(layer, ins[0])
        if isinstance(layer, k3d.DepthwiseConv3D):
            return self.depthwise3d(layer, ins[0])
        if isinstance(layer, k3d.MaxPool3D):
            return self.pool3d(layer, ins[0], "max")
        if isinstance(layer, k3d.AvgPool3D):
            return self.pool3d(layer, ins[0], "avg")
        if isinstance(layer, k3d.ChannelShuffle):
            return self.shuffle(layer, ins[0])
        if isinstance(layer, k3d.ChannelSplit):
            return self.split(layer, ins[0])
        if isinstance(layer, k3d.ZeroPadChannels):
            return self.zero_pad_channels(layer, ins[0])
        if isinstance(layer, keras.layers.GlobalAveragePooling3D):
            return self.global_pool(layer, ins[0], "avg")
        if isinstance(layer, keras.layers.GlobalMaxPooling3D):
            return self.global_pool(layer, ins[0], "max")
        if isinstance(layer, keras.layers.Dense):
            return self.dense(layer, ins[0])
        if isinstance(layer, (keras.layers.Add, keras.layers.Concatenate)):
            xs = [v.x for v in ins]
            if isinstance(layer, keras.layers.Add):
                y = xs[0]
                for other in xs[1:]:
                    y = y + other
                nonneg = all(getattr(v, "nonneg", False) for v in ins)
                if not self._feeds_activation_only(layer, node):
                    y = self.hooks.act(name, y)
            else:
                axis = layer.axis
                rank = len(node.output_tensors[0].shape)
                if axis not in (-1, rank - 1):
                    raise ValueError(f"'{name}': only channel concatenation is supported. "
                                     f"Received: axis={axis}")
                y = tf.concat(xs, axis=-1)
                nonneg = all(getattr(v, "nonneg", False) for v in ins)
                if isinstance(ins[0], _Video):
                    return _Video(y, ins[0].frames, nonneg, parts=list(ins))
            if isinstance(ins[0], _Video):
                return _Video(y, ins[0].frames, nonneg)
            return _Flat(y)
        if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)):
            return self.activation(layer, ins[0])
        if isinstance(layer, keras.layers.BatchNormalization):
            v = ins[0]
            y = v.x * self.hooks.param(f"{name}/scale") + self.hooks.param(f"{name}/shift")
            y = self.hooks.act(name, y)
            return _Video(y, v.frames) if isinstance(v, _Video) else _Flat(y)
        if isinstance(layer, keras.layers.Permute):
            v = ins[0]
            _, h, w, c = self._shape(v.x)
            if tuple(layer.dims) == (4, 1, 2, 3):  # channels first, as C3D flattens
                x3 = tf.reshape(v.x, [self.b, v.frames * h * w, c])
                return _Flat(tf.transpose(x3, [0, 2, 1]))
            x5 = tf.reshape(v.x, [self.b, v.frames, h, w, c])
            return _Flat(tf.transpose(x5, (0,) + tuple(layer.dims)))
        if isinstance(layer, keras.layers.Flatten):
            v = ins[0]
            if isinstance(v, _Video):
                _, h, w, c = self._shape(v.x)
                n = v.frames * h * w * c
            else:
                n = int(np.prod(v.x.shape[1:]))
            return _Flat(tf.reshape(v.x, [self.b, n]))
        raise ValueError(f"Layer '{name}' ({type(layer).__name__}) is not supported by the "
                         "deployment graph.")


def _slice_axis(x, axis, start, size):
    begin = [0] * len(x.shape)
    sizes = [-1] * len(x.shape)
    begin[axis], sizes[axis] = start, size
    return _slice(x, begin, sizes)


def _slice(x, begin, size):
    """`tf.slice` with every ``-1`` size that the static shape knows written out: XNNPACK
    declines a SLICE whose size holds ``-1`` (it split ShuffleNets into 14 partitions)."""
    dims = x.shape.as_list()
    size = [dims[i] - begin[i] if (s == -1 and dims[i] is not None) else s
            for i, s in enumerate(size)]
    return tf.slice(x, begin, size)


def _avg_pool_as_depthwise(x, ksize, strides, padding):
    """A VALID average pool as a depthwise convolution with weights ``1 / (kh * kw)``
    (exact in int8: one weight per channel); XNNPACK takes no int8 AVERAGE_POOL_2D."""
    kh, kw = ksize
    if strides[0] != strides[1]:  # TensorFlow's depthwise conv needs equal strides
        return tf.nn.avg_pool2d(x, ksize, strides, padding)
    c = x.shape[-1]
    kernel = tf.constant(np.full((kh, kw, c, 1), 1.0 / (kh * kw), np.float32))
    return tf.nn.depthwise_conv2d(x, kernel, [1, strides[0], strides[1], 1], padding)
