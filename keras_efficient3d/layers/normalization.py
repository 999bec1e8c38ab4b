"""BatchNorm with a cheaper training gradient on TensorFlow and JAX, and PyTorch's defaults."""

import functools

import keras
import numpy as np
from keras import ops

from keras_efficient3d.layers._video import PACKAGE


def _batch_norm_gradients(dys, xs, mean, inv, gamma):
    """The gradients ([x parts], gamma, beta) of training-mode batch normalisation of a batch
    held in parts ``xs`` (each ``(N_i, C)``; one part, or the two halves of
    `VideoModel`'s halves call) with batch `mean` and ``inv = 1 / sqrt(variance + eps)``,
    given the outputs' gradients `dys`: two channel reductions and one fused-form update of
    dx (TensorFlow's and JAX's, in keras.ops). The batch statistics feed only the moving
    averages, which take no gradient."""
    n = sum(ops.cast(ops.shape(dy)[0], dy.dtype) for dy in dys)
    dbeta = sum(ops.sum(dy, axis=0) for dy in dys)
    # sum(dy * xhat) with xhat = (x - mean) * inv, without materialising xhat
    dgamma = (sum(ops.sum(dy * x, axis=0) for dy, x in zip(dys, xs)) - mean * dbeta) * inv
    # dx = scale * (dy - dbeta / n - xhat * dgamma / n), as dy * a - x * k + c
    scale = gamma * inv
    k = scale * inv * dgamma / n
    shift = k * mean - scale * dbeta / n
    return [dy * scale - x * k + shift for dy, x in zip(dys, xs)], dgamma, dbeta


def _batch_norm_train(parts, gamma, beta, epsilon):
    """Training-mode batch normalisation over all axes but the last of a batch held in
    `parts` (a list of tensors, the batch split along its first axis), on TensorFlow, with a
    hand-written gradient; returns ([y parts], batch mean, biased batch variance).

    Keras' layer leaves the gradient to autodiff through its moments (broadcasts, Tile,
    squared differences): at MobileNetV2 0.2x width BatchNorm was 43% of a training step.
    Here the backward pass is two channel reductions and one fused-form update of dx. The
    statistics are the whole batch's (sums over the parts, the variance two-pass), so that
    each part's work is its own operations, free to run beside the other part's."""
    import tensorflow as tf

    channels = parts[0].shape[-1]
    count = len(parts)

    @tf.custom_gradient
    def normalize(*args):
        xs = [tf.reshape(x, [-1, channels]) for x in args[:count]]
        gamma, beta = args[count:]
        n = tf.cast(sum(tf.shape(x)[0] for x in xs), xs[0].dtype)
        mean = sum(tf.reduce_sum(x, 0) for x in xs) / n
        variance = sum(tf.reduce_sum(tf.math.squared_difference(x, mean), 0) for x in xs) / n
        inv = tf.math.rsqrt(variance + epsilon)
        scale = gamma * inv
        shift = beta - mean * scale
        ys = [tf.reshape(x * scale + shift, tf.shape(part)) for x, part in zip(xs, args)]

        def grad(*upstream):
            dys = [tf.reshape(dy, [-1, channels]) for dy in upstream[:count]]
            dxs, dgamma, dbeta = _batch_norm_gradients(dys, xs, mean, inv, gamma)
            return [tf.reshape(dx, tf.shape(part)) for dx, part in zip(dxs, args)] + [dgamma, dbeta]

        return tuple(ys) + (mean, variance), grad

    outputs = normalize(*parts, gamma, beta)
    return list(outputs[:count]), outputs[count], outputs[count + 1]


def _batch_norm_train_ops(x, gamma, beta, epsilon):
    """`_batch_norm_train` in keras.ops for the other backends, gradient by autodiff. The
    variance is two-pass, the mean of squared deviations: Keras' `ops.moments` on JAX and
    PyTorch computes E[x^2] - E[x]^2, which cancels to a negative variance on channels of
    few, nearly equal values (the 1x1-pixel last stages at small inputs), and the moving
    variance then makes inference NaN."""
    y2, mean, variance, _ = _normalize_two_pass(ops.reshape(x, (-1, x.shape[-1])), gamma, beta,
                                                epsilon)
    return ops.reshape(y2, ops.shape(x)), mean, variance


def _normalize_two_pass(x2, gamma, beta, epsilon):
    """Batch normalisation of ``x2`` ``(N, C)`` with the two-pass variance: (y2, batch mean,
    biased batch variance, 1 / sqrt(variance + eps))."""
    mean = ops.mean(x2, axis=0)
    centered = x2 - mean
    variance = ops.mean(ops.square(centered), axis=0)
    inv = ops.rsqrt(variance + epsilon)
    return centered * (gamma * inv) + beta, mean, variance, inv


@functools.cache
def _jax_batch_norm():
    """`_batch_norm_train_ops`' forward (two-pass variance) with `_batch_norm_gradients`,
    as a JAX custom VJP, made once. XLA's gradient of the two-pass statistics runs more
    passes over the clip: a ShuffleNetV2 1.0x training step (batch 4, jitted) 167 against
    190 ms, six interleaved rounds."""
    import jax
    import jax.numpy as jnp

    def statistics(x2, gamma, beta, epsilon):
        y2, mean, variance, inv = _normalize_two_pass(x2, gamma, beta, epsilon)
        return (y2, mean, variance), (x2, mean, inv, gamma)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
    def normalize(x2, gamma, beta, epsilon):
        return statistics(x2, gamma, beta, epsilon)[0]

    def backward(epsilon, residuals, cotangents):
        x2, mean, inv, gamma = residuals
        (dx,), dgamma, dbeta = _batch_norm_gradients([cotangents[0]], [x2], mean, inv, gamma)
        return dx, dgamma, dbeta

    normalize.defvjp(statistics, backward)

    def train(x, gamma, beta, epsilon):
        y, mean, variance = normalize(jnp.reshape(x, (-1, x.shape[-1])), gamma, beta,
                                      float(epsilon))
        return jnp.reshape(y, x.shape), mean, variance

    return train


def _batch_norm_torch(x, gamma, beta, moving_mean, moving_variance, epsilon, training):
    """PyTorch's fused batch norm on a channels-first view of the channels-last tensor (no
    copy): one pass over the clip where Keras' ops take three (inference, 16x56x56x144:
    12 ms against 58 ms), and its own backward (training, batch 4: 0.96 s against 1.26 s
    for `_batch_norm_train_ops`). Returns y and, in training, the batch mean and biased
    variance for Keras' moving statistics (PyTorch's own running variance is unbiased).
    Training needs two values per channel or more, as in PyTorch (`BatchNorm` takes
    `_batch_norm_train_ops` for one)."""
    import torch
    import torch.nn.functional as F

    from keras_efficient3d.layers.native import torch_tensor as convert

    rank = len(x.shape)
    # x is float32; the weights are float16 under a float16 policy (.float() of a float32
    # tensor is the tensor itself)
    gamma = None if gamma is None else convert(gamma).float()
    beta = None if beta is None else convert(beta).float()
    channels = x.shape[-1]
    if training:
        # Buffers that PyTorch's kernel fills with the batch statistics (momentum 1): the
        # mean and the unbiased variance, from the pass that normalises (a separate
        # var_mean was a fifth of a ShuffleNetV2 training step).
        stats = (torch.zeros(channels, dtype=x.dtype, device=x.device),
                 torch.zeros(channels, dtype=x.dtype, device=x.device))
    else:
        stats = (convert(moving_mean).float(), convert(moving_variance).float())
    y = F.batch_norm(x.permute((0, rank - 1) + tuple(range(1, rank - 1))), *stats, gamma,
                     beta, training, 1.0, epsilon)
    y = y.permute((0,) + tuple(range(2, rank)) + (1,))
    if not training:
        return y, None, None
    n = x.numel() // channels
    return y, stats[0], stats[1] * ((n - 1) / n)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchNorm(keras.layers.BatchNormalization):
    """Keras' BatchNormalization (same weights, statistics and results) whose training
    step on TensorFlow takes `_batch_norm_train`'s cheaper gradient, on JAX the same
    gradient with `_batch_norm_train_ops`' two-pass variance (`_jax_batch_norm`), and
    which runs PyTorch's fused kernel on PyTorch (`_batch_norm_torch`). Masks, renorm,
    synchronized statistics and inference elsewhere take Keras' own path."""

    def _plain(self, inputs, mask):
        """No mask, renorm or synchronized statistics, channels last: what both paths of
        our own need."""
        return (mask is None and not self.renorm and not self.synchronized
                and self.axis in (-1, len(inputs.shape) - 1))

    def _fast_path(self, inputs, training, mask):
        return training and self._plain(inputs, mask) and inputs.shape[-1] is not None

    def _torch_path(self, inputs, training, mask):
        if not (keras.backend.backend() == "torch" and self._plain(inputs, mask)
                and len(inputs.shape) > 2):
            return False
        return not training or int(np.prod(inputs.shape[:-1])) > 1

    def call(self, inputs, training=None, mask=None):
        training = bool(training) and self.trainable
        if self._torch_path(inputs, training, mask):
            # No-op casts skipped: keras.ops dispatch costs more than these small ops in an
            # eager training step.
            float32 = keras.backend.standardize_dtype(inputs.dtype) == "float32"
            y, mean, variance = _batch_norm_torch(
                inputs if float32 else ops.cast(inputs, "float32"),
                self.gamma if self.scale else None, self.beta if self.center else None,
                self.moving_mean, self.moving_variance, self.epsilon, training)
            if training:
                self._update_moving(mean, variance)
            return y if self.compute_dtype == "float32" else ops.cast(y, self.compute_dtype)
        if not self._fast_path(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        if keras.backend.backend() == "tensorflow":
            return self._train_parts([inputs])[0]
        channels = inputs.shape[-1]
        x = ops.cast(inputs, "float32")  # as Keras does: statistics in float32
        train = _jax_batch_norm() if keras.backend.backend() == "jax" else _batch_norm_train_ops
        y, mean, variance = train(x, *self._affine(channels), self.epsilon)
        self._update_moving(mean, variance)
        return ops.cast(y, self.compute_dtype)

    def _affine(self, channels):
        gamma = ops.cast(self.gamma, "float32") if self.scale else ops.ones((channels,))
        beta = ops.cast(self.beta, "float32") if self.center else ops.zeros((channels,))
        return gamma, beta

    def takes_parts(self, inputs):
        """Whether `call_parts` can normalise `inputs` held in parts: TensorFlow, trainable,
        channels last, no renorm or synchronized statistics (`VideoModel`'s halves call)."""
        return (keras.backend.backend() == "tensorflow" and self.trainable
                and self._fast_path(inputs, True, None))

    def call_parts(self, parts):
        """Training-mode outputs of a batch held in `parts` (the batch split along its first
        axis), normalised by the whole batch's statistics, as `call` of their concatenation
        would (`takes_parts` says where)."""
        return self._train_parts(parts)

    def _train_parts(self, parts):
        xs = [ops.cast(x, "float32") for x in parts]  # as Keras does: statistics in float32
        ys, mean, variance = _batch_norm_train(xs, *self._affine(parts[0].shape[-1]),
                                               self.epsilon)
        self._update_moving(mean, variance)
        return [ops.cast(y, self.compute_dtype) for y in ys]

    def _update_moving(self, mean, variance):
        # float32 statistics into the moving variables' dtype (float16 under a float16
        # policy, where the variables are float16 too)
        dtype = keras.backend.standardize_dtype(self.moving_mean.dtype)
        if dtype != "float32":
            mean, variance = ops.cast(mean, dtype), ops.cast(variance, dtype)
        if keras.backend.backend() == "torch":
            # torch's own lerp: a Keras variable's arithmetic dispatches through keras.ops,
            # which costs more than the update in an eager training step
            import torch
            from keras.src.backend.common.stateless_scope import in_stateless_scope

            weight = 1.0 - self.momentum
            if in_stateless_scope():  # the update goes to the scope, through assign
                self.moving_mean.assign(torch.lerp(self.moving_mean.value, mean, weight))
                self.moving_variance.assign(torch.lerp(self.moving_variance.value, variance, weight))
                return
            with torch.no_grad():  # in place: Keras' assign checks cost more than the update
                self.moving_mean.value.lerp_(mean, weight)
                self.moving_variance.value.lerp_(variance, weight)
            return
        self.moving_mean.assign(
            self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum))


def batch_norm(name):
    """BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.1 == Keras' 0.9)."""
    return BatchNorm(axis=-1, momentum=0.9, epsilon=1e-5, name=name)
