"""What a training checkpoint compiles with beside Keras' own: PyTorch's SGD, as the
original trains with it, and a top-k accuracy that takes mixed precision's logits.

Keras' SGD has no dampening and its ``weight_decay`` is decoupled; the original uses
``torch.optim.SGD(lr, momentum=0.9, dampening=0.9, weight_decay=1e-3)``, whose L2 term goes
through the momentum buffer and whose first step starts the buffer at the raw gradient.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_efficient3d")
class TorchSGD(keras.optimizers.Optimizer):
    """``torch.optim.SGD`` semantics:

        g = grad + weight_decay * w
        buf = g (first step) | momentum * buf + (1 - dampening) * g
        step = g + momentum * buf (nesterov) | buf
        w -= lr * step
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, dampening=0.0, nesterov=False,
                 l2_weight_decay=0.0, name="torch_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1). Received: momentum={momentum}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires momentum > 0 and dampening 0, as in PyTorch. "
                             f"Received: momentum={momentum}, dampening={dampening}")
        if l2_weight_decay < 0:
            raise ValueError(f"`l2_weight_decay` must be >= 0. Received: l2_weight_decay={l2_weight_decay}")
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.nesterov = bool(nesterov)
        self.l2_weight_decay = float(l2_weight_decay)
        # The step whose gradient starts the momentum buffer: PyTorch keeps no buffer while
        # momentum is 0, so a run resumed with momentum starts it afresh (`restart_momentum`).
        self._momentum_from = 0

    def restart_momentum(self):
        """The next step starts the momentum buffer at its gradient, as PyTorch does for a
        run that trained without momentum (its state holds no buffer). Call before the
        train step is traced."""
        self._momentum_from = int(self.iterations.numpy()) if self.built else 0

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = [self.add_variable_from_reference(v, "momentum") for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        if self.l2_weight_decay:
            g = ops.add(g, ops.multiply(variable, self.l2_weight_decay))
        if self.momentum:
            buf = self.momentums[self._get_variable_index(variable)]
            later = ops.add(ops.multiply(buf, self.momentum), ops.multiply(g, 1.0 - self.dampening))
            self.assign(buf, ops.where(ops.equal(self.iterations, self._momentum_from), g, later))
            g = ops.add(g, ops.multiply(buf, self.momentum)) if self.nesterov else buf
        self.assign_sub(variable, ops.multiply(lr, g))

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "dampening": self.dampening,
                       "nesterov": self.nesterov, "l2_weight_decay": self.l2_weight_decay})
        return config


@keras.saving.register_keras_serializable(package="keras_efficient3d")
class TopKAccuracy(keras.metrics.SparseTopKCategoricalAccuracy):
    """Top-k accuracy as the original's ``calculate_accuracy`` takes it (``torch.topk``): a hit
    when the label is among exactly `k` predictions, ties at the k-th score broken by index
    (Keras' in_top_k counts every tied class: a model of constant logits scored 100%), `k`
    at most the number of classes (PyTorch's topk failed at a first step of 3 classes). The
    predictions are taken as float32: under mixed_float16 a model's logits are float16,
    which TensorFlow's in_top_k refused."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(y_pred, "float32")
        _, top = ops.top_k(y_pred, min(self.k, int(y_pred.shape[-1])))
        labels = ops.cast(ops.reshape(y_true, (-1, 1)), top.dtype)
        hits = ops.cast(ops.any(ops.equal(top, labels), axis=-1), "float32")
        return keras.metrics.Mean.update_state(self, hits, sample_weight)
