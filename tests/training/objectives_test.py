"""Tests for oat_tf.training.objectives: each objective's draw, crafted samples
and loss against NumPy on a linear network, and the argument checks."""

import numpy as np
import pytest
import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf.training import objectives

ATTACK = config_lib.AttackConfig(epsilon=0.1, step_size=0.05, num_steps=2, random_start=False)
SHAPE = (8, 4, 4, 1)
NUM_CLASSES = 3
NAMES = ("exit_1", "final")


class LinearNetwork:
    """forward(inputs, training=...): a linear map of the image; records the λ it is fed."""

    def __init__(self, seed=0, multi_exit=False):
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=(16, NUM_CLASSES)).astype(np.float32)
        self.w_exit = rng.normal(size=(16, NUM_CLASSES)).astype(np.float32)
        self.multi_exit = multi_exit
        self.lambdas_seen = []

    def numpy(self, images, exit_name="final"):
        w = self.w_exit if exit_name == "exit_1" else self.w
        return images.reshape(len(images), 16) @ w

    def __call__(self, inputs, training=None):
        self.lambdas_seen.append(np.asarray(inputs["lambda"]))
        flat = tf.reshape(inputs["image"], [-1, 16])
        if self.multi_exit:
            return {"exit_1": tf.matmul(flat, self.w_exit), "final": tf.matmul(flat, self.w)}
        return tf.matmul(flat, self.w)


def _cross_entropy(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels]


def _batch(seed=1):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=SHAPE).astype(np.float32)
    labels = (np.arange(SHAPE[0]) % NUM_CLASSES).astype(np.int32)
    return images, labels


@pytest.mark.parametrize(
    "batch, fraction, expected",
    [(8, 0.5, 4), (7, 0.5, 4), (10, 0.25, 3), (8, 0.0, 0), (8, 1.0, 8), (3, 0.1, 0)],
)
def test_mixed_batch_clean_count_rounds_half_up(batch, fraction, expected):
    assert objectives.mixed_batch_clean_count(batch, fraction) == expected


def test_oat_loss_matches_numpy():
    images, labels = _batch()
    network = LinearNetwork()
    objective = objectives.OATObjective(config_lib.LambdaSamplingConfig(), ATTACK)
    drawn = objective.draw(SHAPE[0], tf.constant([3, 4], tf.int64))
    zeros = objective.num_zeros(SHAPE[0], drawn)
    lambdas = drawn.lambdas.numpy()
    assert np.all(lambdas[:zeros] == 0) and np.all(lambdas[zeros:] > 0)
    adversarial = objective.craft(network, None, tf.constant(images), tf.constant(labels), drawn, tf.constant([5, 6]))
    assert adversarial.shape == (SHAPE[0] - zeros,) + SHAPE[1:]
    assert np.abs(adversarial.numpy() - images[zeros:]).max() <= ATTACK.epsilon + 1e-6
    # The attack ran the network at the attacked samples' own λ.
    np.testing.assert_array_equal(network.lambdas_seen[-1], lambdas[zeros:])
    loss, logits, adversarial_logits = objective.loss(
        network, None, tf.constant(images), tf.constant(labels), drawn, adversarial, training=True
    )
    clean_ce = _cross_entropy(network.numpy(images), labels)
    adversarial_ce = np.concatenate(
        [np.zeros(zeros), _cross_entropy(network.numpy(adversarial.numpy()), labels[zeros:])]
    )
    expected = np.mean((1 - lambdas) * clean_ce + lambdas * adversarial_ce)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
    assert logits.shape == (SHAPE[0], NUM_CLASSES)
    assert adversarial_logits.shape == (SHAPE[0] - zeros, NUM_CLASSES)


def test_mixed_batch_draws_domains_and_takes_one_pass():
    images, labels = _batch()
    network = LinearNetwork()
    objective = objectives.MixedBatchObjective(ATTACK, clean_fraction=0.25)
    drawn = objective.draw(SHAPE[0], tf.constant([0, 0], tf.int64))
    np.testing.assert_array_equal(drawn.lambdas.numpy(), [0, 0, 1, 1, 1, 1, 1, 1])
    assert objective.num_zeros(SHAPE[0], drawn) == 2
    adversarial = objective.craft(network, None, tf.constant(images), tf.constant(labels), drawn, tf.constant([1, 2]))
    np.testing.assert_array_equal(network.lambdas_seen[-1], np.ones(6, np.float32))
    network.lambdas_seen.clear()
    loss, logits, adversarial_logits = objective.loss(
        network, None, tf.constant(images), tf.constant(labels), drawn, adversarial, training=True
    )
    assert len(network.lambdas_seen) == 1  # One pass over the mixed batch.
    mixed = np.concatenate([images[:2], adversarial.numpy()])
    np.testing.assert_allclose(loss.numpy(), _cross_entropy(network.numpy(mixed), labels).mean(), rtol=1e-5)
    assert logits.shape[0] == 2 and adversarial_logits.shape[0] == 6


def test_multi_exit_hybrid_loss_matches_numpy():
    images, labels = _batch()
    network = LinearNetwork(multi_exit=True)
    objective = objectives.MultiExitHybridObjective(
        NAMES, attack=ATTACK, defence="average", exit_weights=(0.5, 2.0)
    )
    assert objective.draw(SHAPE[0], tf.constant([0, 0], tf.int64)) is None
    assert objective.num_zeros(SHAPE[0], None) == 0
    adversarial = objective.craft(network, None, tf.constant(images), tf.constant(labels), None, tf.constant([1, 2]))
    # Without λ sampling, λ is the domain: 1 for the attack and the adversarial pass, 0 for the clean one.
    np.testing.assert_array_equal(network.lambdas_seen[-1], np.ones(SHAPE[0], np.float32))
    network.lambdas_seen.clear()
    loss, outputs, adversarial_outputs = objective.loss(
        network, None, tf.constant(images), tf.constant(labels), None, adversarial, training=True
    )
    np.testing.assert_array_equal(network.lambdas_seen[0], np.zeros(SHAPE[0], np.float32))
    np.testing.assert_array_equal(network.lambdas_seen[1], np.ones(SHAPE[0], np.float32))
    x_adv = adversarial.numpy()
    expected = sum(
        weight * (_cross_entropy(network.numpy(images, name), labels)
                  + _cross_entropy(network.numpy(x_adv, name), labels))
        for name, weight in zip(NAMES, (0.5, 2.0))
    ).mean()
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
    assert set(outputs) == set(NAMES) and set(adversarial_outputs) == set(NAMES)


def test_multi_exit_standard_training_crafts_nothing():
    images, labels = _batch()
    objective = objectives.MultiExitHybridObjective(NAMES, attack=None, defence="none")
    assert objective.num_zeros(SHAPE[0], None) == SHAPE[0]
    network = LinearNetwork(multi_exit=True)
    assert objective.craft(network, None, tf.constant(images), tf.constant(labels), None, tf.constant([1, 2])) is None


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"attack": ATTACK, "defence": "all"}, "`defence` must be one of"),
        ({"attack": None, "defence": "main"}, "`attack` must be an AttackConfig for defence='main'"),
        ({"attack": config_lib.AttackConfig(name="square"), "defence": "main"}, "`attack.name` must be one of"),
        ({"attack": None, "defence": "none", "sampling": config_lib.LambdaSamplingConfig()},
         "`sampling` must be None for defence='none'"),
        ({"attack": ATTACK, "exit_weights": (1.0,)}, "`exit_weights` must hold one weight per output"),
        ({"attack": ATTACK, "exit_weights": (0.0, 0.0)}, "at least one positive weight"),
        ({"attack": ATTACK, "adversarial_bn_statistics": "both"}, "`adversarial_bn_statistics` must be one of"),
    ],
)
def test_multi_exit_objective_rejects(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        objectives.MultiExitHybridObjective(NAMES, **kwargs)


def test_objectives_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`clean_fraction` must be"):
        objectives.MixedBatchObjective(ATTACK, clean_fraction=-0.1)
    with pytest.raises(ValueError, match="`adversarial_bn_statistics` must be one of"):
        objectives.OATObjective(config_lib.LambdaSamplingConfig(), ATTACK, adversarial_bn_statistics="clean")


def test_get_config_round_trips_the_arguments():
    objective = objectives.MultiExitHybridObjective(NAMES, attack=ATTACK, defence="main", exit_weights=(1, 3))
    config = objective.get_config()
    assert config["defence"] == "main" and config["exit_weights"] == [1.0, 3.0]
    assert config_lib.AttackConfig(**config["attack"]) == ATTACK
    mixed = objectives.MixedBatchObjective(ATTACK, clean_fraction=0.25).get_config()
    assert mixed["clean_fraction"] == 0.25
