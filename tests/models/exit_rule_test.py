"""Tests for oat_tf.models.exit_rule: the softmax entropy against numpy and
the exit rule (TF and numpy forms) against a sample-at-a-time reference."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from oat_tf.models import exit_rule

NUM_CLASSES = 10


# === Helpers ===


def _logits(num_outputs, n=200, seed=0, scale=3.0):
    """Random logits per output, with confidence varying over samples."""
    rng = np.random.default_rng(seed)
    sharpness = rng.uniform(0.1, 2.0, size=(num_outputs, n, 1))
    return [
        (rng.normal(size=(n, NUM_CLASSES)) * scale * sharpness[i]).astype(np.float32)
        for i in range(num_outputs)
    ]


def _np_exit_rule(logits_list, thresholds):
    """The exit rule, a sample at a time: first side exit with H < t, else M."""
    num_side = len(logits_list) - 1
    entropies = np.stack([exit_rule.entropy_numpy(l) for l in logits_list[:-1]], 1)
    exits = []
    for row in entropies:
        exit_index = num_side
        for i in range(num_side):
            if row[i] < thresholds[i]:
                exit_index = i
                break
        exits.append(exit_index)
    return np.array(exits, np.int32)


def _tf_entropies(logits_list):
    return np.stack([exit_rule.entropy(l).numpy() for l in logits_list], 1)


# === Entropy ===


class EntropyTest(parameterized.TestCase):
    def test_matches_numpy(self):
        logits = _logits(1, n=64)[0]
        np.testing.assert_allclose(
            exit_rule.entropy(logits).numpy(), exit_rule.entropy_numpy(logits),
            rtol=1e-5, atol=1e-6,
        )

    def test_extremes(self):
        logits = np.zeros((3, NUM_CLASSES), np.float32)
        logits[1, 3] = 1e4  # One-hot: entropy 0, not NaN.
        logits[2] = -1e4
        logits[2, 0] = 1e4
        values = exit_rule.entropy(logits).numpy()
        self.assertEqual(values.dtype, np.float32)
        np.testing.assert_allclose(values, [np.log(NUM_CLASSES), 0.0, 0.0], atol=1e-6)
        self.assertTrue(np.all(np.isfinite(exit_rule.entropy_numpy(logits))))

    def test_epsilon_effect_is_tiny(self):
        logits = _logits(1, n=64, scale=10.0)[0].astype(np.float64)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        exact = -(probs * np.log(np.maximum(probs, 1e-300))).sum(1)
        difference = exact - exit_rule.entropy_numpy(logits)
        self.assertGreaterEqual(difference.min(), 0.0)
        self.assertLessEqual(difference.max(), NUM_CLASSES * exit_rule.ENTROPY_EPSILON)

    def test_rejects_bad_logits(self):
        with self.assertRaisesRegex(ValueError, "`logits`"):
            exit_rule.entropy(np.zeros((3,), np.float32))
        with self.assertRaisesRegex(ValueError, "`logits`"):
            exit_rule.entropy(np.zeros((3, 2), np.int32))


# === Exit rule ===


class SelectExitsTest(parameterized.TestCase):
    @parameterized.parameters(
        (3, "random"), (3, "all_early"), (3, "all_final"), (7, "random"), (2, "random")
    )
    def test_matches_numpy_rule(self, num_outputs, kind):
        logits_list = _logits(num_outputs, seed=num_outputs)
        num_side = num_outputs - 1
        rng = np.random.default_rng(1)
        thresholds = {
            "random": rng.uniform(0.2, 1.8, size=num_side),
            "all_early": np.full(num_side, 10.0),
            "all_final": np.full(num_side, -1.0),
        }[kind].astype(np.float32)
        exit_index, chosen = exit_rule.select_exits(logits_list, thresholds)
        expected = _np_exit_rule(logits_list, thresholds)
        self.assertEqual(exit_index.dtype, tf.int32)
        np.testing.assert_array_equal(exit_index.numpy(), expected)
        stacked = np.stack(logits_list, 1)
        np.testing.assert_array_equal(chosen.numpy(), stacked[np.arange(len(expected)), expected])
        if kind == "random":
            self.assertGreater(len(set(expected.tolist())), 1)
        elif kind == "all_early":
            self.assertTrue(np.all(expected == 0))
        else:
            self.assertTrue(np.all(expected == num_side))
        np.testing.assert_array_equal(
            exit_rule.assign_exits(_tf_entropies(logits_list[:-1]), thresholds), expected
        )

    def test_strict_comparison(self):
        logits_list = _logits(3, n=20)
        entropies = _tf_entropies(logits_list[:-1])
        # A threshold equal to a sample's entropy does not let it out.
        thresholds = np.array([entropies[0, 0], -1.0], np.float32)
        exit_index, _ = exit_rule.select_exits(logits_list, thresholds)
        self.assertEqual(int(exit_index[0]), 2)

    def test_tf_function_with_unknown_batch_and_threshold_input(self):
        logits_list = _logits(3, n=30)
        fn = tf.function(
            exit_rule.select_exits,
            input_signature=[
                [tf.TensorSpec([None, NUM_CLASSES], tf.float32)] * 3,
                tf.TensorSpec([2], tf.float32),
            ],
            autograph=False,
        )
        thresholds = np.array([0.8, 1.2], np.float32)
        exit_index, chosen = fn(logits_list, thresholds)
        eager_index, eager_chosen = exit_rule.select_exits(logits_list, thresholds)
        np.testing.assert_array_equal(exit_index.numpy(), eager_index.numpy())
        np.testing.assert_array_equal(chosen.numpy(), eager_chosen.numpy())
        empty = [np.zeros((0, NUM_CLASSES), np.float32)] * 3
        self.assertEqual(fn(empty, thresholds)[0].shape, (0,))

    def test_final_only(self):
        logits = _logits(1, n=5)
        exit_index, chosen = exit_rule.select_exits(logits, [])
        np.testing.assert_array_equal(exit_index.numpy(), np.zeros(5))
        np.testing.assert_array_equal(chosen.numpy(), logits[0])

    def test_rejects(self):
        logits_list = _logits(3, n=4)
        with self.assertRaisesRegex(ValueError, "`thresholds`"):
            exit_rule.select_exits(logits_list, [0.5])
        with self.assertRaisesRegex(ValueError, "`logits_list`"):
            exit_rule.select_exits({"exit_1": logits_list[0]}, [])
        with self.assertRaisesRegex(ValueError, "`logits_list`"):
            exit_rule.select_exits([], [])
