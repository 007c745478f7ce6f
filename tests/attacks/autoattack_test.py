"""Tests for oat_tf.attacks.autoattack and APGD-T (oat_tf.attacks.apgd.apgd_targeted):
the targeted DLR loss against NumPy, the presets' hyperparameters, APGD-T's
targets, bounds and strength where CE gradients vanish, and the sequence run
only on the samples still robust."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from oat_tf.attacks import apgd
from oat_tf.attacks import autoattack
from tests import testing

NUM_CLASSES = 10
SHAPE = (12, 4, 4, 1)
NUM_PIXELS = 16


def _linear_params(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(NUM_PIXELS, NUM_CLASSES)) * scale).astype(np.float32)
    c = (rng.normal(size=(NUM_CLASSES,)) * 0.1 * scale).astype(np.float32)
    return w, c


def _linear_logits_fn(seed=0, scale=1.0):
    w, c = (tf.constant(p) for p in _linear_params(seed, scale))
    return lambda x: tf.matmul(tf.reshape(x, [-1, NUM_PIXELS]), w) + c


def _predicted(logits_fn, x):
    return np.argmax(logits_fn(tf.constant(x, tf.float32)).numpy(), axis=1)


def _np_targeted_dlr(logits, labels, targets):
    z = logits.astype(np.float64)
    ordered = -np.sort(-z, axis=1)
    rows = np.arange(len(z))
    return -(z[rows, labels] - z[rows, targets]) / (
        ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12
    )


class TargetedDlrLossTest(parameterized.TestCase):
    def test_matches_numpy_and_is_shift_and_scale_invariant(self):
        rng = np.random.default_rng(1)
        logits = rng.normal(size=(20, NUM_CLASSES)).astype(np.float32)
        labels = rng.integers(0, NUM_CLASSES, size=20).astype(np.int32)
        targets = (labels + 1 + rng.integers(0, NUM_CLASSES - 1, size=20)) % NUM_CLASSES
        loss = apgd.targeted_dlr_loss(logits, labels, targets).numpy()
        np.testing.assert_allclose(loss, _np_targeted_dlr(logits, labels, targets), rtol=1e-5)
        moved = apgd.targeted_dlr_loss(3.0 * logits + 7.0, labels, targets).numpy()
        np.testing.assert_allclose(moved, loss, rtol=1e-4, atol=1e-5)
        # Positive exactly when the target logit beats the true one.
        rows = np.arange(20)
        np.testing.assert_array_equal(loss > 0, logits[rows, targets] > logits[rows, labels])

    def test_needs_four_classes(self):
        with self.assertRaisesRegex(ValueError, "at least 4 classes"):
            apgd.targeted_dlr_loss(tf.zeros([2, 3]), tf.zeros([2], tf.int32), tf.ones([2], tf.int32))


class ApgdTargetedTest(parameterized.TestCase):
    @parameterized.parameters(0.02, 0.1, 0.3)
    def test_stays_in_the_ball_and_in_unit_interval(self, epsilon):
        images = testing.images_with_extremes(SHAPE, 3)
        labels = _predicted(_linear_logits_fn(), images)
        x_adv = apgd.apgd_targeted(
            _linear_logits_fn(), images, labels, epsilon=epsilon, num_steps=10,
            num_target_classes=3, seed=[0, 1],
        ).numpy()
        self.assertLessEqual(np.abs(x_adv - images).max(), epsilon + 1e-6)
        self.assertGreaterEqual(x_adv.min(), 0.0)
        self.assertLessEqual(x_adv.max(), 1.0)

    def test_stronger_than_apgd_ce_where_cross_entropy_saturates(self):
        # Logits scaled by 1e4: the softmax is exactly one-hot in float32, so
        # the CE gradient vanishes at correctly classified points and APGD-CE
        # cannot move; the (targeted) DLR loss does not change with the scale.
        logits_fn = _linear_logits_fn(seed=2, scale=1e4)
        images = np.random.default_rng(4).uniform(0.3, 0.7, size=(40, 4, 4, 1)).astype(np.float32)
        labels = _predicted(logits_fn, images)
        epsilon = 0.05
        x_ce = apgd.apgd(logits_fn, images, labels, epsilon=epsilon, num_steps=20, seed=[1, 1])
        x_t = apgd.apgd_targeted(
            logits_fn, images, labels, epsilon=epsilon, num_steps=20, num_target_classes=9,
            seed=[1, 1],
        )
        robust_ce = np.mean(_predicted(logits_fn, x_ce.numpy()) == labels)
        robust_t = np.mean(_predicted(logits_fn, x_t.numpy()) == labels)
        # On a linear model the unscaled model's minimal L∞ distances decide
        # which samples can be broken; most can at this ε.
        self.assertLess(robust_t, 0.5)
        self.assertGreater(robust_ce, robust_t + 0.3)

    def test_at_least_as_strong_as_one_target(self):
        logits_fn = _linear_logits_fn(seed=5)
        images = np.random.default_rng(6).uniform(size=(64, 4, 4, 1)).astype(np.float32)
        labels = _predicted(logits_fn, images)
        one = apgd.apgd_targeted(
            logits_fn, images, labels, epsilon=0.03, num_steps=15, num_target_classes=1, seed=[2, 2]
        )
        nine = apgd.apgd_targeted(
            logits_fn, images, labels, epsilon=0.03, num_steps=15, num_target_classes=9, seed=[2, 2]
        )
        broken_one = _predicted(logits_fn, one.numpy()) != labels
        broken_nine = _predicted(logits_fn, nine.numpy()) != labels
        # Run 1 of nine targets is the one-target run (same seed, same target).
        self.assertTrue(np.all(broken_nine >= broken_one))
        self.assertGreater(broken_one.sum(), 0)

    def test_aims_at_the_second_ranked_class(self):
        # Three-class-reachable toy: the 2nd ranked class is the only one an
        # ε-step can reach; with one target APGD-T must find it.
        w = np.zeros((NUM_PIXELS, NUM_CLASSES), np.float32)
        w[:, 1] = 1.0  # class 1 grows with the pixel sum
        c = np.array([9.0, 0.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.2, 0.1], np.float32)
        logits_fn = lambda x: tf.matmul(tf.reshape(x, [-1, NUM_PIXELS]), w) + c
        images = np.full((3, 4, 4, 1), 0.5, np.float32)  # class-1 logit 8 < 9
        labels = np.zeros(3, np.int32)
        x_adv = apgd.apgd_targeted(
            logits_fn, images, labels, epsilon=0.1, num_steps=10, num_target_classes=1, seed=[0, 0]
        ).numpy()
        np.testing.assert_array_equal(_predicted(logits_fn, x_adv), [1, 1, 1])

    def test_graph_matches_eager(self):
        logits_fn = _linear_logits_fn(seed=7)
        images = testing.images_with_extremes(SHAPE, 8)
        labels = _predicted(logits_fn, images)
        run = lambda x, y: apgd.apgd_targeted(
            logits_fn, x, y, epsilon=0.05, num_steps=6, num_target_classes=2, seed=[3, 4]
        )
        graph = tf.function(
            run,
            input_signature=[tf.TensorSpec([None, 4, 4, 1]), tf.TensorSpec([None], tf.int32)],
        )
        np.testing.assert_allclose(graph(images, labels).numpy(), run(images, labels).numpy(), atol=1e-6)

    @parameterized.parameters(
        (dict(num_target_classes=10), "num_target_classes"),
        (dict(num_target_classes=0), "num_target_classes"),
        (dict(seed=None), "seed"),
        (dict(epsilon=-0.1), "epsilon"),
        (dict(num_steps=0), "num_steps"),
    )
    def test_bad_arguments(self, overrides, name):
        kwargs = dict(epsilon=0.1, num_steps=2, num_target_classes=3, seed=[0, 0])
        kwargs.update(overrides)
        images = testing.images_with_extremes(SHAPE, 0)
        with self.assertRaisesRegex(ValueError, name):
            apgd.apgd_targeted(_linear_logits_fn(), images, np.zeros(SHAPE[0], np.int32), **kwargs)


class PresetTest(parameterized.TestCase):
    def test_standard_is_the_papers_hyperparameters(self):
        configs = autoattack.attack_configs("standard", 0.3)
        self.assertEqual([c.name for c in configs], ["apgd_ce", "apgd_t", "fab_t", "square"])
        self.assertTrue(all(c.ensemble == "AutoAttack" and c.epsilon == 0.3 for c in configs))
        apgd_ce, apgd_t, fab_t, square = configs
        self.assertEqual((apgd_ce.num_steps, apgd_ce.num_restarts), (100, 1))
        self.assertEqual((apgd_t.num_steps, apgd_t.num_target_classes, apgd_t.num_restarts), (100, 9, 1))
        self.assertEqual((fab_t.num_steps, fab_t.num_target_classes, fab_t.num_restarts), (100, 9, 1))
        self.assertEqual((square.num_queries, square.p_init), (5000, 0.8))
        self.assertEqual(
            [c.describe() for c in configs],
            ["AutoAttack: APGD-CE-100", "AutoAttack: APGD-T-100/9", "AutoAttack: FAB-T-100/9",
             "AutoAttack: Square-5000"],
        )

    def test_fast_is_apgd_ce_and_apgd_t_with_three_targets(self):
        configs = autoattack.attack_configs("fast", 8 / 255)
        self.assertEqual(
            [c.describe() for c in configs],
            ["AutoAttack-fast: APGD-CE-100", "AutoAttack-fast: APGD-T-100/3"],
        )

    def test_unknown_version(self):
        with self.assertRaisesRegex(ValueError, "version"):
            autoattack.attack_configs("plus", 0.3)


class SequenceTest(parameterized.TestCase):
    def test_later_attacks_run_only_on_robust_samples(self):
        logits_fn = _linear_logits_fn(seed=9)
        calls = []

        def counting_logits_fn(x):
            calls.append(int(x.shape[0]))
            return logits_fn(x)

        rng = np.random.default_rng(10)
        images = rng.uniform(size=(30, 4, 4, 1)).astype(np.float32)
        labels = _predicted(logits_fn, images)
        labels[:5] = (labels[:5] + 1) % NUM_CLASSES  # misclassified clean: never attacked
        x_adv, robust = autoattack.autoattack(
            counting_logits_fn, images, labels, epsilon=0.02, version="fast", seed=[5, 6]
        )
        first, second = robust.values()
        self.assertEqual(list(robust), ["AutoAttack-fast: APGD-CE-100", "AutoAttack-fast: APGD-T-100/3"])
        self.assertFalse(first[:5].any())
        self.assertTrue(np.all(second <= first))  # cumulative
        # APGD-CE saw the 25 clean-correct samples, APGD-T only its survivors.
        self.assertIn(25, calls)
        self.assertIn(int(first.sum()), calls)
        self.assertNotIn(30, calls[1:])
        # The images agree with the flags, and stay in the ball.
        x_adv = x_adv.numpy()
        np.testing.assert_array_equal(_predicted(logits_fn, x_adv) == labels, second)
        self.assertLessEqual(np.abs(x_adv - images).max(), 0.02 + 1e-6)
        # Not vacuous: something robust, something broken.
        self.assertGreater(first.sum(), 0)
        self.assertLess(second.sum(), 25)
