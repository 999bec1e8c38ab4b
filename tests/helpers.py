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
