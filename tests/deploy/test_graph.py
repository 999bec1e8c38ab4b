"""The deployment graph computes the Keras model's function, for every registered model."""

import numpy as np
import pytest

from keras_efficient3d import create_model, list_models
from keras_efficient3d.deploy import DeploymentGraph
from deploy_helpers import clips, input_shape_for, model_kwargs, randomize_batchnorm

# Deep baselines are slow to build; the fast suite keeps one of each block type.
_SLOW = {"resnet34", "resnet50", "resnet101", "resnet152", "resnet200", "resnext101", "resnext152"}
MODELS = [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n for n in list_models()]


def _rel_err(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / (np.abs(np.asarray(b)).max() + 1e-12))


@pytest.mark.parametrize("name", MODELS)
def test_deployment_graph_equals_keras(name):
    shape = input_shape_for(name)
    model = randomize_batchnorm(create_model(name, input_shape=shape, **model_kwargs(name)))
    x = clips(shape, 2)
    expected = np.asarray(model(x, training=False))
    graph = DeploymentGraph(model)
    # Any batch (training layout) and the batch-1 export layout (frames on axis 0).
    np.testing.assert_allclose(graph(x, batch=None), expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())
    np.testing.assert_allclose(graph(x[:1], batch=1), expected[:1], rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())
    assert _rel_err(graph(x[:1], batch=1), expected[:1]) < 1e-4


def test_deployment_graph_has_no_5d_ops_at_batch_1():
    model = create_model("shufflenetv2_0.5x", input_shape=(8, 32, 32, 3), num_classes=3)
    graph = DeploymentGraph(model)
    fn = graph.as_function(batch=1).get_concrete_function()
    ranks = {}
    for op in fn.graph.get_operations():
        for t in op.outputs:
            if t.shape.rank is not None and op.type not in ("Placeholder", "Const"):
                ranks.setdefault(t.shape.rank, set()).add(op.type)
            if t.shape.rank is not None:
                assert None not in t.shape.as_list(), f"{op.name} has a dynamic shape {t.shape}"
    assert max(ranks) <= 4, f"ops with 5-D outputs: {ranks.get(5)}"


def test_dead_temporal_taps_are_dropped():
    """With one frame left, a 3-tap depthwise conv reads only padding in two taps."""
    from keras_efficient3d.deploy.graph import _Emitter

    assert _Emitter.live_taps(1, 3, 1, 1) == [1]
    assert _Emitter.live_taps(2, 3, 2, 1) == [1, 2]
    assert _Emitter.live_taps(16, 3, 1, 1) == [0, 1, 2]


def test_unsupported_layer_is_reported():
    import keras

    inputs = keras.Input((4, 16, 16, 3))
    outputs = keras.layers.Conv3D(4, 3, padding="same")(inputs)
    with pytest.raises(ValueError, match="not supported"):
        DeploymentGraph(keras.Model(inputs, outputs))
