"""Tests for oat_tf.attacks.registry: `run_attack` runs exactly the attack its
AttackConfig names, with that config's settings (compared with the direct call
under the same seed), and refuses what the attack cannot take."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from oat_tf import config as config_lib
from oat_tf.attacks import apgd
from oat_tf.attacks import fab
from oat_tf.attacks import pgd
from oat_tf.attacks import registry
from oat_tf.attacks import square
from tests import testing

EPS = 8.0 / 255.0
SHAPE = (4, 6, 6, 2)  # N, H, W, C
NUM_PIXELS = 6 * 6 * 2
NUM_CLASSES = 4


def _images():
    return testing.images_with_extremes(SHAPE, 0)


def _labels():
    return np.arange(SHAPE[0], dtype=np.int32) % NUM_CLASSES


def _mlp_logits_fn(seed=2, hidden=16):
    """A fixed random tanh MLP: non-linear, so the attacks differ."""
    rng = np.random.default_rng(seed)
    w1 = tf.constant((rng.normal(size=(NUM_PIXELS, hidden)) * 0.3).astype(np.float32))
    w2 = tf.constant(rng.normal(size=(hidden, NUM_CLASSES)).astype(np.float32))
    return lambda x: tf.matmul(tf.tanh(tf.matmul(tf.reshape(x, [-1, NUM_PIXELS]), w1)), w2)


def _per_sample_ce(logits_fn, x, labels):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits_fn(x)).numpy()


class DispatchTest(parameterized.TestCase):
    def test_gradient_sign_attacks(self):
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()
        seed = [31, 32]
        results = {}
        for name, direct in (
            ("pgd", lambda: pgd.pgd_linf(
                logits_fn, images, labels, epsilon=EPS, step_size=EPS / 5,
                num_steps=3, num_restarts=2, seed=seed)),
            ("fgsm", lambda: pgd.fgsm(logits_fn, images, labels, epsilon=EPS)),
            ("mi_fgsm", lambda: pgd.mi_fgsm(
                logits_fn, images, labels, epsilon=EPS, num_steps=3, decay=0.5,
                step_size=EPS / 5)),
        ):
            config = config_lib.AttackConfig(
                name=name, epsilon=EPS, step_size=EPS / 5, num_steps=3,
                num_restarts=2, decay=0.5,
            )
            results[name] = registry.run_attack(config, logits_fn, images, labels, seed=seed).numpy()
            np.testing.assert_array_equal(results[name], direct().numpy())
        # Not vacuous: the three attacks give different images.
        self.assertGreater(np.abs(results["pgd"] - results["fgsm"]).max(), 0)
        self.assertGreater(np.abs(results["pgd"] - results["mi_fgsm"]).max(), 0)

    def test_mi_fgsm_zero_step_size_means_epsilon_over_steps(self):
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()
        config = config_lib.AttackConfig(name="mi_fgsm", epsilon=EPS, step_size=0.0, num_steps=4)
        np.testing.assert_array_equal(
            registry.run_attack(config, logits_fn, images, labels).numpy(),
            pgd.mi_fgsm(logits_fn, images, labels, epsilon=EPS, num_steps=4, step_size=EPS / 4).numpy(),
        )

    @parameterized.named_parameters(("ce", "apgd_ce", "ce"), ("dlr", "apgd_dlr", "dlr"))
    def test_apgd(self, name, loss):
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()
        config = config_lib.AttackConfig(name=name, epsilon=0.1, num_steps=10)
        self.assertEqual(config.describe(), f"APGD-{loss.upper()}-10")
        expected = apgd.apgd(logits_fn, images, labels, epsilon=0.1, num_steps=10, loss=loss, seed=[3, 4])
        np.testing.assert_array_equal(
            registry.run_attack(config, logits_fn, images, labels, seed=[3, 4]).numpy(), expected.numpy()
        )

    def test_square(self):
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()
        config = config_lib.AttackConfig(name="square", epsilon=0.1, num_queries=20)
        self.assertEqual(config.describe(), "Square-20")
        expected = square.square_linf(logits_fn, images, labels, epsilon=0.1, num_queries=20, seed=[1, 2])
        np.testing.assert_array_equal(
            registry.run_attack(config, logits_fn, images, labels, seed=[1, 2]).numpy(), expected.numpy()
        )

    @parameterized.named_parameters(("apgd_t", "apgd_t"), ("fab_t", "fab_t"))
    def test_ranked_target_attacks(self, name):
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()
        attack = config_lib.AttackConfig(name=name, epsilon=0.05, num_steps=5, num_target_classes=2)
        direct_fn = apgd.apgd_targeted if name == "apgd_t" else fab.fab_targeted
        direct = direct_fn(
            logits_fn, images, labels, epsilon=0.05, num_steps=5, num_target_classes=2, seed=[1, 2]
        )
        dispatched = registry.run_attack(attack, logits_fn, images, labels, seed=[1, 2])
        np.testing.assert_array_equal(direct.numpy(), dispatched.numpy())
        with self.assertRaisesRegex(ValueError, "target_labels"):
            registry.run_attack(attack, logits_fn, images, labels, seed=[1, 2], target_labels=labels)

    def test_targeted_config(self):
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()
        targets = (labels + 2) % NUM_CLASSES
        config = config_lib.AttackConfig(name="fgsm", epsilon=EPS, targeted=True)
        x_adv = registry.run_attack(config, logits_fn, images, labels, target_labels=targets).numpy()
        np.testing.assert_array_equal(
            x_adv,
            pgd.fgsm(logits_fn, images, labels, epsilon=EPS, targeted=True, target_labels=targets).numpy(),
        )
        # Targeted: the loss of the targets goes down.
        self.assertTrue(
            np.all(_per_sample_ce(logits_fn, x_adv, targets) < _per_sample_ce(logits_fn, images, targets))
        )
        with self.assertRaisesRegex(ValueError, "`target_labels` must be given"):
            registry.run_attack(config, logits_fn, images, labels)


class ErrorTest(parameterized.TestCase):
    def test_rejects_non_config(self):
        with self.assertRaisesRegex(ValueError, "`config` must be an AttackConfig"):
            registry.run_attack({"name": "pgd"}, _mlp_logits_fn(), _images(), _labels())

    def test_apgd_refuses_a_loss_fn(self):
        config = config_lib.AttackConfig(name="apgd_ce", epsilon=0.1, num_steps=2)
        with self.assertRaisesRegex(ValueError, "not supported by APGD"):
            registry.run_attack(
                config, _mlp_logits_fn(), _images(), _labels(), seed=[1, 2],
                loss_fn=lambda logits, labels: tf.reduce_sum(logits, axis=1),
            )
