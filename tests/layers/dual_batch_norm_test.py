"""Tests of DualBatchNormalization against numpy and a plain Keras BN."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf.layers import dual_batch_norm
from oat_tf.layers import switchable_batch_norm
from tests import testing

EPS = 1e-5
MOMENTUM = 0.9


def _inputs(n=8, seed=0, shape=(4, 4, 3)):
    rng = np.random.RandomState(seed)
    return (rng.randn(n, *shape) * 2.0 + 0.5).astype("float32")


def _randomise_parameters(layer, seed=1):
    rng = np.random.RandomState(seed)
    for w in (layer.gamma, layer.beta, layer.moving_mean):
        w.assign(rng.randn(*w.shape).astype("float32"))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape).astype("float32"))


def test_all_clean_batch_equals_plain_batch_norm():
    x = _inputs()
    clean = np.ones(len(x), bool)
    dual = dual_batch_norm.DualBatchNormalization(momentum=MOMENTUM, epsilon=EPS)
    plain = keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPS)
    dual.build(x.shape, clean.shape)
    plain.build(x.shape)
    _randomise_parameters(dual)
    plain.gamma.assign(dual.gamma[0])
    plain.beta.assign(dual.beta[0])
    plain.moving_mean.assign(dual.moving_mean[0])
    plain.moving_variance.assign(dual.moving_variance[0])
    adversarial_before = (dual.moving_mean.numpy()[1].copy(), dual.moving_variance.numpy()[1].copy())

    np.testing.assert_allclose(dual(x, clean, training=True), plain(x, training=True), atol=1e-5)
    np.testing.assert_allclose(dual.moving_mean[0], plain.moving_mean, atol=1e-6)
    np.testing.assert_allclose(dual.moving_variance[0], plain.moving_variance, atol=1e-6)
    # The adversarial group had no sample: its statistics did not move.
    np.testing.assert_array_equal(dual.moving_mean.numpy()[1], adversarial_before[0])
    np.testing.assert_array_equal(dual.moving_variance.numpy()[1], adversarial_before[1])
    np.testing.assert_allclose(dual(x, clean, training=False), plain(x, training=False), atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 4, 3), (5,)])
def test_mixed_batch_matches_numpy_group_moments(shape):
    x = _inputs(n=10, shape=shape)
    clean = np.array([1, 0, 0, 1, 0, 1, 1, 0, 0, 0], bool)
    layer = dual_batch_norm.DualBatchNormalization(momentum=MOMENTUM, epsilon=EPS)
    layer.build(x.shape, clean.shape)
    _randomise_parameters(layer)
    gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
    mm, mv = layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()

    out = layer(x, clean, training=True).numpy()

    for group, members in ((0, clean), (1, ~clean)):
        expected, mean, var = testing.numpy_batch_norm(x[members], gamma[group], beta[group], EPS)
        np.testing.assert_allclose(out[members], expected, atol=1e-5)
        np.testing.assert_allclose(
            layer.moving_mean.numpy()[group], MOMENTUM * mm[group] + (1 - MOMENTUM) * mean, atol=1e-6
        )
        np.testing.assert_allclose(
            layer.moving_variance.numpy()[group], MOMENTUM * mv[group] + (1 - MOMENTUM) * var, atol=1e-5
        )


def test_inference_uses_each_samples_own_moving_statistics():
    x = _inputs(n=6)
    clean = np.array([1, 0, 1, 0, 0, 1], bool)
    layer = dual_batch_norm.DualBatchNormalization(epsilon=EPS)
    layer.build(x.shape, clean.shape)
    _randomise_parameters(layer)
    out = layer(x, clean, training=False).numpy()
    g = np.where(clean, 0, 1)
    mean, var = layer.moving_mean.numpy()[g], layer.moving_variance.numpy()[g]
    gamma, beta = layer.gamma.numpy()[g], layer.beta.numpy()[g]
    expected = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + EPS) * gamma[:, None, None] + beta[:, None, None]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_empty_group_gives_no_nan_and_keeps_statistics():
    x = _inputs(n=4)
    all_adversarial = np.zeros(4, bool)
    layer = dual_batch_norm.DualBatchNormalization()
    layer.build(x.shape, all_adversarial.shape)
    _randomise_parameters(layer)
    clean_stats = (layer.moving_mean.numpy()[0].copy(), layer.moving_variance.numpy()[0].copy())
    with tf.GradientTape() as tape:
        out = layer(x, all_adversarial, training=True)
        loss = tf.reduce_sum(out**2)
    grads = tape.gradient(loss, layer.trainable_weights)
    assert np.all(np.isfinite(out))
    assert all(np.all(np.isfinite(g)) for g in grads)
    np.testing.assert_array_equal(layer.moving_mean.numpy()[0], clean_stats[0])
    np.testing.assert_array_equal(layer.moving_variance.numpy()[0], clean_stats[1])
    # Gradients reach only the group that was used.
    gamma_grad = grads[0].numpy()
    assert np.all(gamma_grad[0] == 0) and np.any(gamma_grad[1] != 0)


def test_statistics_do_not_depend_on_sample_position():
    x = _inputs(n=8)
    clean = np.array([1, 0, 0, 1, 0, 1, 1, 0], bool)
    perm = np.random.RandomState(3).permutation(8)
    a = dual_batch_norm.DualBatchNormalization()
    b = dual_batch_norm.DualBatchNormalization()
    out_a = a(x, clean, training=True).numpy()
    out_b = b(x[perm], clean[perm], training=True).numpy()
    np.testing.assert_allclose(out_a[perm], out_b, atol=1e-5)
    np.testing.assert_allclose(a.moving_mean, b.moving_mean, atol=1e-6)
    np.testing.assert_allclose(a.moving_variance, b.moving_variance, atol=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_graph_and_xla_match_eager(jit_compile):
    x = _inputs(n=6)
    clean = np.array([1, 0, 1, 0, 0, 0], bool)
    eager = dual_batch_norm.DualBatchNormalization()
    graph = dual_batch_norm.DualBatchNormalization()
    expected = eager(x, clean, training=True)
    graph.build(x.shape, clean.shape)
    out = testing.call_in_graph(lambda a, b: graph(a, b, training=True), x, clean, jit_compile=jit_compile)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(graph.moving_mean, eager.moving_mean, atol=1e-6)
    np.testing.assert_allclose(graph.moving_variance, eager.moving_variance, atol=1e-6)


def test_mirrored_strategy_all_reduces_group_statistics():
    x = _inputs(n=8)
    clean = np.array([1, 1, 1, 0, 0, 0, 0, 1], bool)  # replica 0 gets 3 clean, replica 1 gets 1
    single = dual_batch_norm.DualBatchNormalization()
    expected = single(x, clean, training=True).numpy()

    strategy = testing.two_cpu_mirrored_strategy()
    with strategy.scope():
        layer = dual_batch_norm.DualBatchNormalization()
        layer.build(x.shape, clean.shape)
    dataset = tf.data.Dataset.from_tensor_slices((x, clean)).batch(8)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def step(inputs):
        return strategy.run(lambda a, b: layer(a, b, training=True), args=inputs)

    per_replica = strategy.experimental_local_results(step(batch))
    np.testing.assert_allclose(np.concatenate(per_replica), expected, atol=1e-5)
    for value in strategy.experimental_local_results(layer.moving_mean.value):
        np.testing.assert_allclose(value, single.moving_mean, atol=1e-6)
    for value in strategy.experimental_local_results(layer.moving_variance.value):
        np.testing.assert_allclose(value, single.moving_variance, atol=1e-6)


def test_not_trainable_runs_in_inference_mode():
    x = _inputs(n=4)
    clean = np.array([1, 0, 1, 0], bool)
    layer = dual_batch_norm.DualBatchNormalization()
    layer.build(x.shape, clean.shape)
    _randomise_parameters(layer)
    layer.trainable = False
    before = layer.moving_mean.numpy().copy()
    np.testing.assert_allclose(layer(x, clean, training=True), layer(x, clean, training=False), atol=1e-6)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), before)


def test_config_round_trip_and_errors():
    layer = dual_batch_norm.DualBatchNormalization(momentum=0.8, epsilon=1e-3, synchronized=False)
    rebuilt = testing.assert_config_round_trip(layer)
    assert rebuilt.momentum == 0.8 and rebuilt.synchronized is False
    with pytest.raises(ValueError, match="momentum"):
        dual_batch_norm.DualBatchNormalization(momentum=1.5)
    with pytest.raises(ValueError, match="epsilon"):
        dual_batch_norm.DualBatchNormalization(epsilon=0.0)


def test_guarded_group_is_normalised_but_keeps_its_moving_statistics():
    x = _inputs(n=6)
    clean = np.array([True, True, False, False, False, False])
    reference = dual_batch_norm.DualBatchNormalization()
    layer = dual_batch_norm.DualBatchNormalization()
    for l in (reference, layer):
        l.build(x.shape, clean.shape)
        _randomise_parameters(l)
    adversarial_before = (layer.moving_mean.numpy()[1].copy(), layer.moving_variance.numpy()[1].copy())

    expected = reference(x, clean, training=True).numpy()
    with dual_batch_norm.unchanged_moving_statistics([layer], dual_batch_norm.ADVERSARIAL):
        out = layer(x, clean, training=True).numpy()
    # Outputs still use each group's batch moments.
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # The clean group moved as usual; the adversarial group did not move.
    np.testing.assert_allclose(layer.moving_mean.numpy()[0], reference.moving_mean.numpy()[0], rtol=1e-6)
    np.testing.assert_array_equal(layer.moving_mean.numpy()[1], adversarial_before[0])
    np.testing.assert_array_equal(layer.moving_variance.numpy()[1], adversarial_before[1])
    # Outside the block the updates are back.
    layer(x, clean, training=True)
    assert np.all(layer.moving_mean.numpy()[1] != adversarial_before[0])


def test_guard_holds_inside_tf_function_and_for_the_clean_group():
    x = _inputs(n=6)
    clean = np.array([True, True, False, False, False, False])
    layer = dual_batch_norm.DualBatchNormalization()
    layer.build(x.shape, clean.shape)
    _randomise_parameters(layer)
    before = layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()

    @tf.function
    def guarded_pass(x, clean):
        with dual_batch_norm.unchanged_moving_statistics([layer], dual_batch_norm.CLEAN):
            return layer(x, clean, training=True)

    guarded_pass(x, clean)
    np.testing.assert_array_equal(layer.moving_mean.numpy()[0], before[0][0])
    np.testing.assert_array_equal(layer.moving_variance.numpy()[0], before[1][0])
    assert np.all(layer.moving_mean.numpy()[1] != before[0][1])
    with pytest.raises(ValueError, match="`group` must be CLEAN"):
        with dual_batch_norm.unchanged_moving_statistics([layer], 2):
            pass


def test_update_statistics_false_normalises_without_updating():
    x = _inputs(n=6)
    clean = np.array([True, False, True, False, False, False])
    reference = dual_batch_norm.DualBatchNormalization()
    layer = dual_batch_norm.DualBatchNormalization()
    for l in (reference, layer):
        l.build(x.shape, clean.shape)
        _randomise_parameters(l)
    before = layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()
    out = layer(x, clean, training=True, update_statistics=False).numpy()
    np.testing.assert_allclose(out, reference(x, clean, training=True).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), before[0])
    np.testing.assert_array_equal(layer.moving_variance.numpy(), before[1])


def test_layers_of_finds_nested_dual_norms():
    switchable = switchable_batch_norm.SwitchableDualBatchNormalization(widths=(0.5, 1.0))
    switchable.build((None, 4, 4, 8), (None,))
    found = dual_batch_norm.layers_of(switchable)
    assert len(found) == 2 and all(isinstance(l, dual_batch_norm.DualBatchNormalization) for l in found)
