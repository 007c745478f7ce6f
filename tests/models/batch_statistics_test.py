"""Tests of batch statistics at test time: BN in training mode, moving statistics frozen."""

import keras
import numpy as np
import pytest

from oat_tf.layers import dual_batch_norm
from oat_tf.models import batch_statistics
from tests import testing
from tests.models import model_testing

_SHAPES = {"resnet": (8, 8, 3), "wide_resnet": (8, 8, 3), "small_cnn": (16, 16, 1)}


def _with_random_statistics(model, seed=0):
    """Moving statistics far from the batch's, so the two modes differ."""
    rng = np.random.default_rng(seed)
    for weight in model.non_trainable_weights:
        weight.assign(rng.uniform(0.5, 2.0, size=weight.shape).astype("float32"))
    return model


@pytest.mark.parametrize(
    "family, variant",
    [("resnet", "plain"), ("resnet", "mixture_bn"), ("wide_resnet", "oat"), ("small_cnn", "oat_single_bn")],
)
def test_equals_training_mode_and_leaves_moving_statistics_unchanged(family, variant):
    kwargs = {"dropout": 0.0} if family in ("wide_resnet", "small_cnn") else {}
    model = _with_random_statistics(model_testing.tiny_model(family, variant, **kwargs))
    inputs = model_testing.random_inputs(_SHAPES[family], [0.0, 1.0, 1.0, 0.0, 0.3, 1.0], seed=2)
    view = batch_statistics.batch_statistics_model(model)
    before = testing.weights_by_path(model)

    outputs = view(inputs).numpy()

    testing.assert_weights_equal(before, testing.weights_by_path(model))
    reference = model(inputs, training=True).numpy()  # updates the statistics: last
    np.testing.assert_allclose(outputs, reference, atol=1e-5)
    inference = model(inputs, training=False).numpy()
    assert not np.allclose(outputs, inference, atol=1e-3)


def test_shares_the_networks_variables():
    model = model_testing.tiny_model("resnet", "plain")
    view = batch_statistics.batch_statistics_model(model)
    assert {id(v) for v in view.weights} == {id(v) for v in model.weights}
    inputs = model_testing.random_inputs((8, 8, 3), [1.0, 1.0, 1.0])
    first = view(inputs).numpy()
    model.get_layer("logits").bias.assign(np.ones(10, "float32"))
    np.testing.assert_allclose(view(inputs).numpy(), first + 1.0, atol=1e-5)


def test_dropout_stays_in_inference_mode():
    model = _with_random_statistics(model_testing.tiny_model("wide_resnet", "plain", dropout=0.9))
    inputs = model_testing.random_inputs((8, 8, 3), [1.0] * 4, seed=3)
    view = batch_statistics.batch_statistics_model(model)
    first = view(inputs, training=True).numpy()
    np.testing.assert_array_equal(view(inputs).numpy(), first)
    # Same weights without dropout, in training mode: the same logits.
    twin = model_testing.tiny_model("wide_resnet", "plain", dropout=0.0)
    twin.set_weights(model.get_weights())
    np.testing.assert_allclose(twin(inputs, training=True).numpy(), first, atol=1e-5)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_graph_and_xla_match_eager(jit_compile):
    model = _with_random_statistics(model_testing.tiny_model("resnet", "mixture_bn"))
    inputs = model_testing.random_inputs((8, 8, 3), [0.0, 1.0, 1.0, 0.0])
    view = batch_statistics.batch_statistics_model(model)
    before = testing.weights_by_path(model)
    compiled = testing.call_in_graph(lambda x: view(x), inputs, jit_compile=jit_compile)
    np.testing.assert_allclose(compiled.numpy(), view(inputs).numpy(), atol=1e-4)
    testing.assert_weights_equal(before, testing.weights_by_path(model))


def test_wrapper_refuses_other_layers_and_frozen_dual_bn():
    with pytest.raises(ValueError, match="`layer` must be a BatchNormalization"):
        batch_statistics.BatchStatisticsNormalization(keras.layers.Dense(2))
    with pytest.raises(ValueError, match="`network` must be a functional"):
        batch_statistics.batch_statistics_model(keras.layers.Dense(2))
    layer = dual_batch_norm.DualBatchNormalization()
    layer.build((2, 3), (2,))
    layer.trainable = False
    wrapper = batch_statistics.BatchStatisticsNormalization(layer)
    with pytest.raises(ValueError, match="`layer` must be trainable"):
        wrapper(np.ones((2, 3), "float32"), np.array([True, False]))
