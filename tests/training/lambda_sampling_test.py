"""Tests of λ sampling: static zero counts, sets, seeds."""

import numpy as np
import pytest
import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf.training import lambda_sampling


def _sampler(**kwargs):
    return lambda_sampling.LambdaSampler(config_lib.LambdaSamplingConfig(**kwargs))


def test_element_wise_s1_zero_share_and_values():
    sampler = _sampler()
    drawn = sampler.sample(128, tf.constant([1, 2]))
    lam = drawn.lambdas.numpy()
    assert drawn.num_zeros == 22  # ceil(128 / 6), as the reference code
    assert np.all(lam[:22] == 0) and np.all(lam[22:] != 0)
    assert set(lam[22:].tolist()) <= set(np.float32([0.1, 0.2, 0.3, 0.4, 1.0]).tolist())


def test_element_wise_values_are_roughly_uniform_over_the_nonzero_set():
    lam = _sampler().sample(6000, tf.constant([0, 0])).lambdas.numpy()[1000:]
    _, counts = np.unique(np.round(lam, 6), return_counts=True)
    assert len(counts) == 5
    assert counts.min() > 0.8 * 1000 and counts.max() < 1.2 * 1000


def test_zero_probability_and_set_without_zero():
    assert _sampler(zero_probability=0.5).num_zeros(10) == 5
    without_zero = _sampler(values=(0.1, 0.2, 0.3, 0.4, 1.0))
    assert without_zero.num_zeros(64) == 0
    assert np.all(without_zero.sample(64, tf.constant([3, 4])).lambdas.numpy() > 0)


def test_uniform_sampling_is_in_zero_one():
    drawn = _sampler(sampling="uniform", zero_probability=0.25).sample(400, tf.constant([5, 6]))
    lam = drawn.lambdas.numpy()
    assert drawn.num_zeros == 100 and np.all(lam[:100] == 0)
    assert np.all((lam[100:] > 0) & (lam[100:] <= 1))
    assert abs(lam[100:].mean() - 0.5) < 0.05


def test_batch_wise_gives_one_value_per_batch():
    sampler = _sampler(sampling="batch_wise")
    seen = set()
    for i in range(40):
        drawn = sampler.sample(16, tf.constant([7, i]))
        lam = drawn.lambdas.numpy()
        assert drawn.num_zeros == 0 and len(set(lam)) == 1
        assert bool(drawn.attack_needed) == (lam[0] > 0)
        seen.add(float(lam[0]))
    assert seen == set(np.float32(config_lib.S1).tolist())


def test_fixed_lambda():
    pgd_at = _sampler(sampling="fixed", values=(1.0,))
    drawn = pgd_at.sample(8, tf.constant([0, 0]))
    assert drawn.num_zeros == 0 and np.all(drawn.lambdas.numpy() == 1.0)
    assert not pgd_at.clean_loss_used
    standard = _sampler(sampling="fixed", values=(0.0,))
    assert standard.num_zeros(8) == 8 and standard.clean_loss_used
    with pytest.raises(ValueError, match="exactly one"):
        _sampler(sampling="fixed", values=(0.1, 0.2))


def test_seeded():
    sampler = _sampler()
    a = sampler.sample(32, tf.constant([1, 1])).lambdas.numpy()
    b = sampler.sample(32, tf.constant([1, 1])).lambdas.numpy()
    c = sampler.sample(32, tf.constant([1, 2])).lambdas.numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bad_config_values():
    with pytest.raises(ValueError, match="values"):
        _sampler(values=(0.0, 1.2))
    with pytest.raises(ValueError, match="sampling"):
        _sampler(sampling="gaussian")
    with pytest.raises(ValueError, match="zero_probability"):
        _sampler(zero_probability=1.5)
