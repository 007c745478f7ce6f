"""Tests of the switchable (dual) batch norms against numpy and the per-width layers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf.layers import dual_batch_norm
from oat_tf.layers import slimmable
from oat_tf.layers import switchable_batch_norm
from tests import testing

EPS = 1e-5
MOMENTUM = 0.9
WIDTHS = slimmable.DEFAULT_WIDTHS
CHANNELS = 8
CLEAN = np.array([1, 0, 0, 1, 0, 1, 1, 0, 0, 0], bool)


def _inputs(channels, n=10, seed=0):
    rng = np.random.RandomState(seed)
    return (rng.randn(n, 3, 3, channels) * 2.0 + 0.5).astype("float32")


def _built_dual(**kwargs):
    layer = switchable_batch_norm.SwitchableDualBatchNormalization(momentum=MOMENTUM, epsilon=EPS, **kwargs)
    layer.build((None, 3, 3, CHANNELS), (None,))
    rng = np.random.RandomState(1)
    for w in layer.weights:
        if "variance" in w.path:
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype("float32"))
        else:
            w.assign(rng.randn(*w.shape).astype("float32"))
    return layer


def _built_single():
    layer = switchable_batch_norm.SwitchableBatchNormalization(momentum=MOMENTUM, epsilon=EPS)
    layer(_inputs(CHANNELS), width=1.0, training=False)
    rng = np.random.RandomState(2)
    for w in layer.weights:
        if "variance" in w.path:
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype("float32"))
        else:
            w.assign(rng.randn(*w.shape).astype("float32"))
    return layer


def test_six_batch_norms_for_three_widths():
    layer = _built_dual()
    assert len(layer.norms) == 3
    for width, norm in zip(WIDTHS, layer.norms):
        assert isinstance(norm, dual_batch_norm.DualBatchNormalization)
        assert norm.name == f"width_{width}" and norm.synchronized
        assert norm.moving_mean.shape == (2, slimmable.slimmed_channels(CHANNELS, width))
    assert [v.path for v in layer.weights][:2] == [
        f"{layer.name}/width_0.5/gamma",
        f"{layer.name}/width_0.5/beta",
    ]


@pytest.mark.parametrize("width", WIDTHS)
def test_dual_width_matches_numpy_and_updates_only_its_own_statistics(width):
    layer = _built_dual()
    before = testing.weights_by_path(layer)
    norm = layer.norm_at(width)
    gamma, beta = norm.gamma.numpy(), norm.beta.numpy()
    mm, mv = norm.moving_mean.numpy().copy(), norm.moving_variance.numpy().copy()
    x = _inputs(slimmable.slimmed_channels(CHANNELS, width))

    out = layer(x, CLEAN, width=width, training=True).numpy()

    for group, members in ((0, CLEAN), (1, ~CLEAN)):
        expected, mean, var = testing.numpy_batch_norm(x[members], gamma[group], beta[group], EPS)
        np.testing.assert_allclose(out[members], expected, atol=1e-5)
        np.testing.assert_allclose(norm.moving_mean.numpy()[group], MOMENTUM * mm[group] + (1 - MOMENTUM) * mean, atol=1e-6)
        np.testing.assert_allclose(norm.moving_variance.numpy()[group], MOMENTUM * mv[group] + (1 - MOMENTUM) * var, atol=1e-5)
    after = testing.weights_by_path(layer)
    prefix = f"{layer.name}/width_{width}/"
    testing.assert_weights_equal(
        {k: v for k, v in before.items() if not k.startswith(prefix)},
        {k: v for k, v in after.items() if not k.startswith(prefix)},
    )


def test_dual_width_with_one_group_keeps_the_other_groups_statistics():
    layer = _built_dual()
    norm = layer.norm_at(0.75)
    clean_before = (norm.moving_mean.numpy()[0].copy(), norm.moving_variance.numpy()[0].copy())
    out = layer(_inputs(6), np.zeros(10, bool), width=0.75, training=True)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(norm.moving_mean.numpy()[0], clean_before[0])
    np.testing.assert_array_equal(norm.moving_variance.numpy()[0], clean_before[1])


@pytest.mark.parametrize("training", [True, False])
def test_dual_width_equals_a_dual_batch_norm_with_that_widths_weights(training):
    layer = _built_dual()
    x = _inputs(4)
    reference = dual_batch_norm.DualBatchNormalization(momentum=MOMENTUM, epsilon=EPS)
    reference.build(x.shape, CLEAN.shape)
    reference.set_weights(layer.norm_at(0.5).get_weights())
    np.testing.assert_allclose(
        layer(x, CLEAN, width=0.5, training=training), reference(x, CLEAN, training=training), atol=1e-6
    )
    np.testing.assert_allclose(layer.norm_at(0.5).moving_mean, reference.moving_mean, atol=1e-7)


def test_dual_inference_and_not_trainable():
    layer = _built_dual()
    x = _inputs(8)
    norm = layer.norm_at(1.0)
    g = np.where(CLEAN, 0, 1)
    mean, var = norm.moving_mean.numpy()[g], norm.moving_variance.numpy()[g]
    gamma, beta = norm.gamma.numpy()[g], norm.beta.numpy()[g]
    expand = (slice(None), None, None)
    expected = (x - mean[expand]) / np.sqrt(var[expand] + EPS) * gamma[expand] + beta[expand]
    np.testing.assert_allclose(layer(x, CLEAN, training=False), expected, atol=1e-5)
    before = testing.weights_by_path(layer)
    layer.trainable = False
    np.testing.assert_allclose(layer(x, CLEAN, width=1.0, training=True), expected, atol=1e-5)
    testing.assert_weights_equal(before, testing.weights_by_path(layer))


@pytest.mark.parametrize("width", WIDTHS)
def test_single_width_matches_numpy_and_updates_only_its_own_statistics(width):
    layer = _built_single()
    before = testing.weights_by_path(layer)
    norm = layer.norm_at(width)
    mm, mv = norm.moving_mean.numpy().copy(), norm.moving_variance.numpy().copy()
    x = _inputs(slimmable.slimmed_channels(CHANNELS, width))

    out = layer(x, width=width, training=True).numpy()

    expected, mean, var = testing.numpy_batch_norm(x, norm.gamma.numpy(), norm.beta.numpy(), EPS)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(norm.moving_mean, MOMENTUM * mm + (1 - MOMENTUM) * mean, atol=1e-6)
    np.testing.assert_allclose(norm.moving_variance, MOMENTUM * mv + (1 - MOMENTUM) * var, atol=1e-5)
    prefix = f"{layer.name}/width_{width}/"
    after = testing.weights_by_path(layer)
    testing.assert_weights_equal(
        {k: v for k, v in before.items() if not k.startswith(prefix)},
        {k: v for k, v in after.items() if not k.startswith(prefix)},
    )


def test_single_width_equals_a_keras_batch_norm_with_that_widths_weights():
    layer = _built_single()
    x = _inputs(6)
    reference = keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPS)
    reference.build(x.shape)
    reference.set_weights(layer.norm_at(0.75).get_weights())
    for training in (True, False):
        np.testing.assert_allclose(
            layer(x, width=0.75, training=training), reference(x, training=training), atol=1e-5
        )
    assert all(norm.synchronized for norm in layer.norms)


def test_dual_training_step_compiles_with_xla():
    eager, graph = _built_dual(name="bn"), _built_dual(name="bn")
    x = _inputs(4)
    expected = eager(x, CLEAN, width=0.5, training=True)
    out = testing.call_in_graph(
        lambda a, b: graph(a, b, width=0.5, training=True), x, CLEAN, jit_compile=True
    )
    np.testing.assert_allclose(out, expected, atol=1e-5)
    testing.assert_weights_equal(testing.weights_by_path(eager), testing.weights_by_path(graph), atol=1e-6)


@pytest.mark.parametrize("dual", [True, False])
def test_mirrored_strategy_synchronizes_the_widths_statistics(dual):
    x = _inputs(4, n=8)
    clean = np.array([1, 1, 1, 0, 0, 0, 0, 1], bool)  # replica 0 gets 3 clean, replica 1 gets 1

    def make():
        if dual:
            layer = switchable_batch_norm.SwitchableDualBatchNormalization(name="bn")
            layer.build((None, 3, 3, CHANNELS), (None,))
            return lambda a, b: layer(a, b, width=0.5, training=True), layer
        layer = switchable_batch_norm.SwitchableBatchNormalization(name="bn")
        layer.build((None, 3, 3, CHANNELS))
        return lambda a, b: layer(a, width=0.5, training=True), layer

    single_fn, single = make()
    expected = single_fn(x, clean).numpy()
    strategy = testing.two_cpu_mirrored_strategy()
    with strategy.scope():
        replica_fn, layer = make()
    dataset = tf.data.Dataset.from_tensor_slices((x, clean)).batch(8)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    per_replica = strategy.experimental_local_results(
        tf.function(lambda inputs: strategy.run(replica_fn, args=inputs))(batch)
    )
    np.testing.assert_allclose(np.concatenate(per_replica), expected, atol=1e-5)
    for name in ("moving_mean", "moving_variance"):
        reference = getattr(single.norm_at(0.5), name).numpy()
        for value in strategy.experimental_local_results(getattr(layer.norm_at(0.5), name).value):
            np.testing.assert_allclose(value, reference, atol=1e-5, err_msg=name)


def test_errors():
    layer = _built_dual()
    with pytest.raises(ValueError, match="must have 6 channels .* at width=0.75. Received: inputs with 8 channels"):
        layer(_inputs(8), CLEAN, width=0.75)
    with pytest.raises(ValueError, match=r"`width` must be one of \(0.5, 0.75, 1.0\). Received: width=0.3"):
        layer(_inputs(8), CLEAN, width=0.3)
    with pytest.raises(ValueError, match="call it first with width=1.0"):
        switchable_batch_norm.SwitchableBatchNormalization()(_inputs(4), width=0.5)
    with pytest.raises(ValueError, match="known channel"):
        switchable_batch_norm.SwitchableDualBatchNormalization().build((None, 3, 3, None), (None,))
    with pytest.raises(ValueError, match="momentum"):
        switchable_batch_norm.SwitchableBatchNormalization(momentum=2.0)
    with pytest.raises(ValueError, match="epsilon"):
        switchable_batch_norm.SwitchableDualBatchNormalization(epsilon=0.0)


@pytest.mark.parametrize(
    "cls",
    [switchable_batch_norm.SwitchableBatchNormalization, switchable_batch_norm.SwitchableDualBatchNormalization],
)
def test_config_round_trip(cls):
    layer = cls(widths=(0.25, 1.0), momentum=0.8, epsilon=1e-3, center=False, synchronized=False)
    rebuilt = testing.assert_config_round_trip(layer)
    assert rebuilt.widths == (0.25, 1.0) and rebuilt.momentum == 0.8 and rebuilt.synchronized is False
    assert [n.name for n in rebuilt.norms] == ["width_0.25", "width_1.0"]
    assert not any(n.center for n in rebuilt.norms)
