"""Helpers shared by the test modules (``tests/`` is on the path through its conftest)."""

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
