"""Tests of the FiLM layer against numpy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf.layers import dual_batch_norm
from oat_tf.layers import film
from tests import testing


def _leaky(x, slope=0.01):
    return np.where(x > 0, x, slope * x)


def _numpy_film(layer, inputs, condition):
    hidden = _leaky(condition @ layer.hidden_kernel.numpy() + layer.hidden_bias.numpy())
    out = hidden @ layer.output_kernel.numpy() + layer.output_bias.numpy()
    c = layer.channels
    gamma, beta = _leaky(out[:, :c]), _leaky(out[:, c:])
    shape = (inputs.shape[0],) + (1,) * (inputs.ndim - 2) + (c,)
    return inputs * gamma.reshape(shape) + beta.reshape(shape)


@pytest.mark.parametrize("shape", [(3, 5, 5, 4), (3, 4)])
def test_matches_numpy(shape):
    rng = np.random.RandomState(0)
    inputs = rng.randn(*shape).astype("float32")
    condition = rng.randn(3, 16).astype("float32")
    layer = film.FiLM()
    out = layer(inputs, condition).numpy()
    assert out.shape == inputs.shape
    np.testing.assert_allclose(out, _numpy_film(layer, inputs, condition), atol=1e-5)


def test_each_sample_gets_its_own_modulation():
    rng = np.random.RandomState(1)
    inputs = np.repeat(rng.randn(1, 3, 3, 2).astype("float32"), 2, axis=0)
    condition = rng.randn(2, 8).astype("float32")
    out = film.FiLM()(inputs, condition).numpy()
    assert not np.allclose(out[0], out[1])


def test_parameter_shapes_and_reference_initialisation():
    layer = film.FiLM(hidden_multiplier=2)
    layer(np.zeros((1, 2, 2, 6), "float32"), np.zeros((1, 128), "float32"))
    assert layer.hidden_kernel.shape == (128, 24)
    assert layer.output_kernel.shape == (24, 12)
    assert np.abs(layer.hidden_kernel.numpy()).max() <= 1 / np.sqrt(128)
    assert np.abs(layer.output_kernel.numpy()).max() <= 1 / np.sqrt(24)
    assert layer.count_params() == 128 * 24 + 24 + 24 * 12 + 12


def test_without_output_activation_zero_generators_give_zero_gamma():
    layer = film.FiLM(activate_outputs=False)
    inputs = np.ones((2, 2, 2, 3), "float32")
    layer(inputs, np.zeros((2, 4), "float32"))
    for w in layer.weights:
        w.assign(np.zeros(w.shape, "float32"))
    layer.output_bias.assign(np.array([1, 1, 1, 0.5, 0.5, 0.5], "float32"))
    np.testing.assert_allclose(layer(inputs, np.ones((2, 4), "float32")), inputs + 0.5)


def test_config_round_trip_and_errors():
    layer = film.FiLM(hidden_multiplier=3, negative_slope=0.2, activate_outputs=False)
    rebuilt = testing.assert_config_round_trip(layer)
    assert rebuilt.hidden_multiplier == 3
    with pytest.raises(ValueError, match="hidden_multiplier"):
        film.FiLM(hidden_multiplier=0)
    with pytest.raises(ValueError, match="last dimension"):
        film.FiLM().build((2, 3, None), (2, 4))


@pytest.mark.parametrize("training", [True, False])
def test_fused_scale_shift_equals_dual_bn_then_film(training):
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(6, 5, 5, 4)).astype(np.float32) * 2.0 + 0.5)
    clean = tf.constant([True, False, False, True, False, False])
    code = tf.constant(rng.normal(size=(6, 8)).astype(np.float32))
    separate_bn = dual_batch_norm.DualBatchNormalization()
    fused_bn = dual_batch_norm.DualBatchNormalization(return_scale_shift=True)
    separate_film, fused_film = film.FiLM(), film.FiLM()
    separate_bn.build(x.shape, clean.shape)
    fused_bn.build(x.shape, clean.shape)
    separate_film.build(x.shape, code.shape)
    fused_film.build(x.shape, code.shape)
    for variable in separate_bn.weights + separate_film.weights:
        variable.assign(rng.uniform(0.5, 1.5, size=variable.shape).astype(np.float32))
    fused_bn.set_weights(separate_bn.get_weights())
    fused_film.set_weights(separate_film.get_weights())

    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        expected = separate_film(separate_bn(x, clean, training=training), code)
        features, scale, shift = fused_bn(x, clean, training=training)
        got = fused_film((features, scale, shift), code)
    assert scale.shape == (6, 4) and shift.shape == (6, 4)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        tape.gradient(got, x).numpy(), tape.gradient(expected, x).numpy(), rtol=1e-4, atol=1e-5
    )
    for fused_var, separate_var in zip(fused_film.trainable_weights, separate_film.trainable_weights):
        np.testing.assert_allclose(
            tape.gradient(got, fused_var).numpy(), tape.gradient(expected, separate_var).numpy(),
            rtol=1e-4, atol=1e-4,
        )
    # Both updated the same moving statistics.
    np.testing.assert_allclose(fused_bn.moving_mean.numpy(), separate_bn.moving_mean.numpy(), rtol=1e-6)
    # The fused pair still computes its output shape as one layer would.
    assert fused_film.compute_output_shape(
        fused_bn.compute_output_shape(x.shape, clean.shape), code.shape
    ) == x.shape
