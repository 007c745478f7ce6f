"""Tests of SGD with coupled L2 decay against the PyTorch update rule in numpy."""

import keras
import numpy as np
import pytest

from oat_tf import config as config_lib
from oat_tf.training import optimizers


def test_matches_pytorch_sgd_with_weight_decay():
    lr, momentum, wd = 0.1, 0.9, 5e-4
    w0 = np.array([1.0, -2.0, 3.0], "float32")
    grads = [np.array([0.5, 0.1, -0.3], "float32"), np.array([-0.2, 0.4, 0.1], "float32")]
    variable = keras.Variable(w0)
    optimizer = optimizers.SGDWithL2(l2=wd, learning_rate=lr, momentum=momentum)
    for g in grads:
        optimizer.apply([g], [variable])
    # PyTorch SGD: d = g + wd·w; b = μ·b + d; w -= lr·b (constant lr: same as Keras' form).
    w, b = w0.astype(np.float64), np.zeros(3)
    for g in grads:
        d = g + wd * w
        b = momentum * b + d
        w = w - lr * b
    np.testing.assert_allclose(variable.numpy(), w, rtol=1e-6)


def test_cosine_schedule_and_warmup():
    opt = optimizers.make_optimizer(config_lib.OptimizerConfig(learning_rate=0.2), steps_per_epoch=10, epochs=5)
    schedule = opt._learning_rate
    assert float(schedule(0)) == pytest.approx(0.2)
    assert float(schedule(25)) == pytest.approx(0.1, rel=1e-5)
    assert float(schedule(50)) == pytest.approx(0.0, abs=1e-7)
    warm = optimizers.make_optimizer(
        config_lib.OptimizerConfig(learning_rate=0.2, warmup_epochs=1), steps_per_epoch=10, epochs=5
    )._learning_rate
    assert float(warm(5)) == pytest.approx(0.1, rel=1e-5)
    assert float(warm(10)) == pytest.approx(0.2, rel=1e-5)
    constant = optimizers.make_optimizer(
        config_lib.OptimizerConfig(schedule="constant", learning_rate=0.05), steps_per_epoch=10, epochs=5
    )
    assert float(constant.learning_rate) == pytest.approx(0.05)


def test_config_round_trip_and_errors():
    opt = optimizers.SGDWithL2(l2=1e-3, learning_rate=0.01, momentum=0.5)
    rebuilt = optimizers.SGDWithL2.from_config(opt.get_config())
    assert rebuilt.l2 == 1e-3 and rebuilt.momentum == 0.5
    with pytest.raises(ValueError, match="l2"):
        optimizers.SGDWithL2(l2=-1.0)


def test_loss_scale_optimizer_unscales_and_counts_a_skipped_step():
    w0 = np.array([1.0, -2.0], "float32")
    variable = keras.Variable(w0)
    optimizer = optimizers.StepCountingLossScaleOptimizer(
        optimizers.SGDWithL2(l2=0.0, learning_rate=0.1), initial_scale=8.0
    )
    assert float(optimizer.scale_loss(np.float32(2.0))) == 16.0
    # Finite: the scaled gradient is divided by the scale before SGD (w -= lr·g).
    optimizer.apply([np.array([8.0, -4.0], "float32")], [variable])
    np.testing.assert_allclose(variable.numpy(), w0 - 0.1 * np.array([1.0, -0.5]), rtol=1e-6)
    assert int(optimizer.iterations.numpy()) == 1
    # Overflow: no update, the scale halves, and the step still counts.
    optimizer.apply([np.array([np.inf, 1.0], "float32")], [variable])
    np.testing.assert_allclose(variable.numpy(), w0 - 0.1 * np.array([1.0, -0.5]), rtol=1e-6)
    assert float(optimizer.dynamic_scale.numpy()) == 4.0
    assert int(optimizer.iterations.numpy()) == 2


def test_make_optimizer_wraps_in_loss_scaling_only_when_asked():
    config = config_lib.OptimizerConfig(learning_rate=0.2)
    plain = optimizers.make_optimizer(config, steps_per_epoch=10, epochs=5)
    scaled = optimizers.make_optimizer(config, steps_per_epoch=10, epochs=5, loss_scaling=True)
    assert isinstance(plain, optimizers.SGDWithL2)
    assert isinstance(scaled, optimizers.StepCountingLossScaleOptimizer)
    assert isinstance(scaled.inner_optimizer, optimizers.SGDWithL2)
    assert float(scaled.learning_rate) == pytest.approx(0.2)
