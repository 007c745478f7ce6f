"""Tests for oat_tf.attacks.core, the parts every attack is built from:
the random start and restart seeds, the projection, the step rules, the input
gradient, the loop and the argument checks, each against NumPy or a closed form."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from oat_tf.attacks import core
from oat_tf.attacks import losses
from tests import testing

EPS = 0.1
SHAPE = (3, 4, 4, 2)


def _images(seed=0):
    return testing.images_with_extremes(SHAPE, seed)


class InitialiserTest(parameterized.TestCase):
    def test_random_start_is_in_the_ball_and_reproducible(self):
        images = _images()
        start = core.linf_random_start(tf.constant(images), EPS, [1, 2]).numpy()
        self.assertLessEqual(np.abs(start - images).max(), EPS + 1e-6)
        self.assertGreaterEqual(start.min(), 0.0)
        self.assertLessEqual(start.max(), 1.0)
        np.testing.assert_array_equal(start, core.linf_random_start(tf.constant(images), EPS, [1, 2]).numpy())
        other = core.linf_random_start(tf.constant(images), EPS, [1, 3]).numpy()
        self.assertGreater(np.abs(start - other).max(), 0.0)

    def test_random_start_is_the_same_under_xla(self):
        images = tf.constant(_images())
        eager = core.linf_random_start(images, EPS, [4, 5])
        compiled = tf.function(lambda x: core.linf_random_start(x, EPS, [4, 5]), jit_compile=True)(images)
        np.testing.assert_array_equal(eager.numpy(), compiled.numpy())

    def test_restart_seeds_start_with_the_seed_and_fold_in_the_index(self):
        seeds = core.restart_seeds([7, 8], 3).numpy()
        self.assertEqual(seeds.shape, (3, 2))
        np.testing.assert_array_equal(seeds[0], [7, 8])
        for r in (1, 2):
            folded = tf.random.experimental.stateless_fold_in(tf.constant([7, 8], tf.int64), r, alg="philox")
            np.testing.assert_array_equal(seeds[r], folded.numpy())
        self.assertEqual(len({tuple(s) for s in seeds}), 3)


class ProjectionAndStepTest(parameterized.TestCase):
    def test_project_linf_matches_numpy(self):
        images = _images()
        x = images + np.random.default_rng(1).normal(scale=0.3, size=SHAPE).astype(np.float32)
        expected = np.clip(np.clip(x, images - EPS, images + EPS), 0.0, 1.0)
        np.testing.assert_allclose(core.project_linf(x, images, EPS).numpy(), expected, rtol=0, atol=0)

    def test_sign_step_matches_numpy(self):
        rng = np.random.default_rng(2)
        x, grad = _images(), rng.normal(size=SHAPE).astype(np.float32)
        grad[0, 0, 0, 0] = 0.0  # sign(0) = 0: no move.
        np.testing.assert_allclose(core.sign_step(x, grad, 0.01).numpy(), x + 0.01 * np.sign(grad), atol=1e-7)

    def test_momentum_sign_step_matches_numpy(self):
        rng = np.random.default_rng(3)
        x = _images()
        grad, momentum = (rng.normal(size=SHAPE).astype(np.float32) for _ in range(2))
        grad[1] = 0.0  # A zero gradient adds nothing to the momentum.
        l1 = np.abs(grad).sum(axis=(1, 2, 3), keepdims=True)
        expected_m = 0.9 * momentum + np.divide(grad, l1, out=np.zeros_like(grad), where=l1 > 0)
        x_next, m_next = core.momentum_sign_step(x, grad, momentum, step_size=0.02, decay=0.9)
        np.testing.assert_allclose(m_next.numpy(), expected_m, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(x_next.numpy(), x + 0.02 * np.sign(expected_m), atol=1e-7)

    def test_finish_projects_and_stops_the_gradient(self):
        images = tf.constant(_images())
        x = tf.Variable(images + 0.5)
        with tf.GradientTape() as tape:
            out = core.finish(x, images, EPS)
            total = tf.reduce_sum(out)
        self.assertIsNone(tape.gradient(total, x))
        self.assertLessEqual(float(tf.reduce_max(tf.abs(out - images))), EPS + 1e-6)


class GradientTest(parameterized.TestCase):
    def test_input_gradient_of_a_linear_loss(self):
        rng = np.random.default_rng(4)
        w = rng.normal(size=(32, 3)).astype(np.float32)
        labels = np.array([0, 1, 2], np.int32)
        logits_fn = lambda x: tf.matmul(tf.reshape(x, [-1, 32]), w)  # noqa: E731
        objective = core.loss_objective(logits_fn, losses.sparse_cross_entropy, labels, False)
        x = _images()
        grad, value = core.input_gradient(objective, tf.constant(x))
        logits = x.reshape(3, 32) @ w
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        np.testing.assert_allclose(value.numpy(), -np.log(p[np.arange(3), labels]), rtol=1e-5)
        expected = ((p - np.eye(3)[labels]) @ w.T).reshape(SHAPE)
        np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-4, atol=1e-6)
        targeted = core.loss_objective(logits_fn, losses.sparse_cross_entropy, labels, True)
        np.testing.assert_allclose(targeted(tf.constant(x)).numpy(), -value.numpy(), rtol=1e-6)

    def test_loss_scale_leaves_a_float32_gradient_bit_for_bit(self):
        rng = np.random.default_rng(5)
        kernel = tf.constant(rng.normal(size=(3, 3, 2, 4)).astype(np.float32))
        w = tf.constant(rng.normal(size=(4 * 4 * 4, 3)).astype(np.float32))
        labels = tf.constant([0, 1, 2], tf.int32)

        def logits_fn(x):
            features = tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME"))
            return tf.matmul(tf.reshape(features, [3, -1]), w)

        objective = core.loss_objective(logits_fn, losses.sparse_cross_entropy, labels, False)
        x = tf.constant(_images())
        self.assertGreater(core.GRADIENT_LOSS_SCALE, 1.0)
        grad, _ = core.input_gradient(objective, x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(objective(x))
        np.testing.assert_array_equal(grad.numpy(), tape.gradient(total, x).numpy())

    def test_loss_scale_keeps_a_float16_gradient_from_underflowing(self):
        # d/dx of 1e-4·(1e-4·x) in float16: 1e-8, below float16's smallest
        # subnormal (6e-8) unless the objective is scaled first.
        a, b = tf.constant(1e-4, tf.float16), tf.constant(1e-4, tf.float16)

        def objective(x):
            low = tf.cast(x, tf.float16) * a * b
            return tf.cast(tf.reduce_sum(low, axis=[1, 2, 3]), tf.float32)

        x = tf.constant(_images())
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(objective(x))
        self.assertEqual(float(tf.reduce_max(tf.abs(tape.gradient(total, x)))), 0.0)
        grad, _ = core.input_gradient(objective, x)
        expected = float(a) * float(b)
        np.testing.assert_allclose(grad.numpy(), np.full(SHAPE, expected), rtol=0.05)

    def test_input_gradient_refuses_an_objective_that_ignores_the_images(self):
        constant = tf.constant(np.ones((3, 3), np.float32))
        objective = core.loss_objective(lambda x: constant, losses.sparse_cross_entropy, [0, 1, 2], False)
        with self.assertRaisesRegex(ValueError, "does not depend on the images"):
            core.input_gradient(objective, tf.constant(_images()))

    def test_checked_objective_refuses_a_non_per_sample_value(self):
        objective = core.checked_objective(lambda x: tf.reduce_sum(x))
        with self.assertRaisesRegex(ValueError, r"shape \[N\]"):
            objective(tf.constant(_images()))


class RepeatTest(parameterized.TestCase):
    @parameterized.parameters(False, True)
    def test_repeat_runs_the_body_num_iterations_times(self, jit_compile):
        fn = tf.function(
            lambda: core.repeat(lambda i, total, last: (total + i, i), 5, (tf.constant(0), tf.constant(-1))),
            jit_compile=jit_compile,
        )
        total, last = fn()
        self.assertEqual(int(total), 0 + 1 + 2 + 3 + 4)
        self.assertEqual(int(last), 4)


class CheckTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("negative", -0.1), ("nan", float("nan")), ("bool", True), ("string", "0.1")
    )
    def test_check_number(self, value):
        with self.assertRaisesRegex(ValueError, "`epsilon` must be a finite number >= 0"):
            core.check_number("epsilon", value)

    @parameterized.named_parameters(("zero", 0), ("float", 2.0), ("bool", True))
    def test_check_int(self, value):
        with self.assertRaisesRegex(ValueError, "`num_steps` must be an int >= 1"):
            core.check_int("num_steps", value)

    @parameterized.named_parameters(
        ("negative", -0.1), ("above_one", 1.5), ("bool", True), ("string", "0.5")
    )
    def test_check_unit_interval(self, value):
        with self.assertRaisesRegex(ValueError, r"`rho` must be a number in \[0, 1\]"):
            core.check_unit_interval("rho", value)

    def test_check_unit_interval_accepts_the_ends(self):
        core.check_unit_interval("rho", 0.0)
        core.check_unit_interval("rho", 1)

    def test_check_logits_names_why_and_refuses_a_dict_of_exits(self):
        with self.assertRaisesRegex(
            ValueError, r"class logits of shape \[N, K\] \(X needs them\)\. Received: output of type dict"
        ):
            core.check_logits({"exit1": tf.zeros((2, 3))}, "X needs them")
        with self.assertRaisesRegex(ValueError, "with shape \\(2,\\)"):
            core.check_logits(tf.zeros((2,)), "X needs them")
        self.assertEqual(core.check_logits(np.zeros((2, 3), np.float32), "X needs them").shape, (2, 3))

    @parameterized.named_parameters(("three", [1, 2, 3]), ("float", [1.0, 2.0]), ("none", None))
    def test_check_seed(self, seed):
        with self.assertRaisesRegex(ValueError, "`seed` must be a shape"):
            core.check_seed(seed)

    def test_check_seed_returns_int64(self):
        self.assertEqual(core.check_seed([1, 2]).dtype, tf.int64)

    def test_check_images_and_labels(self):
        with self.assertRaisesRegex(ValueError, r"`images` must be a float tensor of shape \[N, H, W, C\]"):
            core.check_images(np.zeros((3, 4, 4), np.float32))
        images = core.check_images(_images())
        with self.assertRaisesRegex(ValueError, "`labels` must be integer class ids"):
            core.check_labels("labels", np.zeros((2,), np.int32), images)
        self.assertEqual(core.check_labels("labels", [0, 1, 2], images).dtype, tf.int32)

    def test_check_inputs_targeted(self):
        images = _images()
        with self.assertRaisesRegex(ValueError, "`target_labels` must be given"):
            core.check_inputs(images, [0, 1, 2], True, None)
        with self.assertRaisesRegex(ValueError, "`target_labels` must be None"):
            core.check_inputs(images, [0, 1, 2], False, [1, 2, 0])
        _, attacked = core.check_inputs(images, [0, 1, 2], True, [1, 2, 0])
        np.testing.assert_array_equal(attacked.numpy(), [1, 2, 0])
