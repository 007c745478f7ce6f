"""Tests for oat_tf.evaluation.early_exit: threshold calibration (equal usage
with the middle bonus, FLOPs budget, ties) and the usage/cost summaries."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from oat_tf.evaluation import early_exit
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


def _tf_entropies(logits_list):
    return np.stack([exit_rule.entropy(l).numpy() for l in logits_list], 1)


def _target_counts(n, fractions):
    cumulative = np.floor(n * np.cumsum(fractions) + 0.5)
    return np.diff(np.concatenate([[0], cumulative]))


# === Calibration ===


class CalibrateTest(parameterized.TestCase):
    @parameterized.parameters((2, 0.2, 1000), (6, 0.2, 997), (2, 0.0, 301), (1, 0.5, 50))
    def test_equal_usage_reproduces_target(self, num_side, bonus, n):
        logits_list = _logits(num_side + 1, n=n, seed=num_side)
        entropies = _tf_entropies(logits_list[:-1])
        thresholds = early_exit.calibrate_thresholds(
            entropies, exit_costs=np.arange(1, num_side + 2), middle_bonus=bonus
        )
        self.assertEqual(thresholds.shape, (num_side,))
        self.assertEqual(thresholds.dtype, np.float32)
        # Through the TF exit rule on the same logits.
        exit_index, _ = exit_rule.select_exits(logits_list, thresholds)
        counts = np.bincount(exit_index.numpy(), minlength=num_side + 1)
        fractions = early_exit.equal_usage_fractions(num_side, bonus)
        self.assertLessEqual(np.abs(counts - n * fractions).max(), 1.0)
        np.testing.assert_array_equal(counts, _target_counts(n, fractions))
        np.testing.assert_allclose(
            early_exit.exit_distribution(exit_index, num_side + 1), counts / n
        )

    def test_middle_exits_are_favoured(self):
        np.testing.assert_allclose(
            early_exit.equal_usage_fractions(2, 0.2), np.array([1.0, 1.2, 1.0]) / 3.2
        )
        fractions = early_exit.equal_usage_fractions(6, 0.25)
        np.testing.assert_allclose(fractions[1:6], fractions[1])
        self.assertGreater(fractions[1], fractions[0])
        self.assertEqual(fractions[0], fractions[-1])
        entropies = _tf_entropies(_logits(3, n=1000)[:-1])
        thresholds = early_exit.calibrate_thresholds(entropies)
        usage = early_exit.exit_distribution(
            exit_rule.assign_exits(entropies, thresholds), 3
        )
        self.assertGreater(usage[1], usage[0])
        self.assertGreater(usage[1], usage[2])

    def test_sequential_on_remaining_samples(self):
        """Exit 2's threshold is a quantile of the samples exit 1 kept."""
        # Samples 0..49 are confident everywhere, 50..99 only at exit 2.
        entropies = np.zeros((100, 2), np.float32)
        entropies[:50, 0] = np.linspace(0.0, 0.1, 50)
        entropies[50:, 0] = np.linspace(1.0, 2.0, 50)
        entropies[:, 1] = np.concatenate([np.linspace(0.0, 0.1, 50), np.linspace(0.5, 1.5, 50)])
        thresholds = early_exit.calibrate_thresholds(entropies, middle_bonus=0.0)
        exits = exit_rule.assign_exits(entropies, thresholds)
        np.testing.assert_array_equal(np.bincount(exits, minlength=3), [33, 34, 33])
        # 34 of the 67 remaining: the threshold sits between the 34th and 35th.
        remaining = np.sort(entropies[exits != 0, 1])
        self.assertGreater(thresholds[1], remaining[33])
        self.assertLessEqual(thresholds[1], remaining[34])

    def test_ties_take_the_closer_count(self):
        # 10 samples, exit 1 entropies: 4 distinct low values, then 6 tied.
        entropies = np.array(
            [[0.1, 0], [0.2, 0], [0.3, 0], [0.4, 0]] + [[0.5, 0]] * 6, np.float32
        )
        entropies[:, 1] = np.arange(10, dtype=np.float32)
        # Target 5 at exit 1: letting the tied block out gives 10, keeping it 4.
        fractions = np.array([0.5, 0.3, 0.2])
        thresholds, exits = early_exit._calibrate_to_fractions(entropies, fractions)  # pylint: disable=protected-access
        np.testing.assert_array_equal(np.bincount(exits, minlength=3), [4, 4, 2])
        self.assertEqual(thresholds[0], np.float32(0.5))
        # Target 9: the tied block goes out (10 is closer than 4).
        thresholds, exits = early_exit._calibrate_to_fractions(  # pylint: disable=protected-access
            entropies, np.array([0.9, 0.05, 0.05])
        )
        self.assertEqual(np.bincount(exits, minlength=3)[0], 10)
        self.assertGreater(thresholds[0], np.float32(0.5))

    def test_all_equal_entropies(self):
        entropies = np.full((9, 2), 0.3, np.float32)
        thresholds = early_exit.calibrate_thresholds(entropies, middle_bonus=0.0)
        exits = exit_rule.assign_exits(entropies, thresholds)
        self.assertTrue(np.all(np.isfinite(thresholds)))
        self.assertEqual(len(exits), 9)

    @parameterized.parameters(0.0, 0.3, 0.5, 0.8, 1.0)
    def test_flops_budget_meets_budget(self, position):
        costs = np.array([2.0, 5.0, 9.0])
        budget = costs[0] + position * (costs[-1] - costs[0])
        logits_list = _logits(3, n=500, seed=3)
        entropies = _tf_entropies(logits_list[:-1])
        thresholds = early_exit.calibrate_thresholds(
            entropies, exit_costs=costs, target="flops_budget", budget=budget
        )
        exit_index, _ = exit_rule.select_exits(logits_list, thresholds)
        cost = early_exit.average_cost(exit_index, costs)
        self.assertLessEqual(cost, budget + 1e-9)
        # As close as one sample moving one exit later allows.
        self.assertGreater(cost, budget - (costs[-1] - costs[0]) / 500 - 1e-9)

    def test_flops_budget_at_equal_usage_cost_is_close_to_equal_usage(self):
        costs = np.array([1.0, 2.0, 3.0])
        entropies = _tf_entropies(_logits(3, n=640, seed=5)[:-1])
        equal = early_exit.calibrate_thresholds(entropies, exit_costs=costs)
        equal_cost = early_exit.average_cost(exit_rule.assign_exits(entropies, equal), costs)
        budgeted = early_exit.calibrate_thresholds(
            entropies, exit_costs=costs, target="flops_budget", budget=equal_cost
        )
        usage = early_exit.exit_distribution(exit_rule.assign_exits(entropies, budgeted), 3)
        np.testing.assert_allclose(usage, early_exit.equal_usage_fractions(2), atol=2 / 640)

    @parameterized.named_parameters(
        ("below", {"target": "flops_budget", "budget": 0.5}, r"`budget` must lie in \[1, 3\]"),
        ("above", {"target": "flops_budget", "budget": 3.5}, r"`budget` must lie in \[1, 3\]"),
        ("missing", {"target": "flops_budget"}, "`budget`"),
        ("budget_nan", {"target": "flops_budget", "budget": float("nan")}, "`budget`"),
        ("no_costs", {"target": "flops_budget", "budget": 2.0, "exit_costs": None}, "`exit_costs`"),
        ("costs_length", {"exit_costs": [1.0, 2.0]}, "`exit_costs`"),
        ("costs_decreasing", {"exit_costs": [1.0, 3.0, 2.0]}, "`exit_costs`"),
        ("target", {"target": "latency"}, "`target`"),
        ("budget_unused", {"budget": 2.0}, "`budget`"),
        ("bonus", {"middle_bonus": -0.1}, "`middle_bonus`"),
    )
    def test_rejects(self, overrides, pattern):
        kwargs = {"exit_costs": [1.0, 2.0, 3.0], **overrides}
        entropies = np.random.default_rng(0).uniform(size=(20, 2))
        with self.assertRaisesRegex(ValueError, pattern):
            early_exit.calibrate_thresholds(entropies, **kwargs)

    def test_rejects_bad_entropies(self):
        for entropies in (np.zeros((5,)), np.zeros((0, 2)), np.full((3, 2), np.nan)):
            with self.assertRaisesRegex(ValueError, "`entropies`"):
                early_exit.calibrate_thresholds(entropies)


# === Summaries ===


class SummaryTest(parameterized.TestCase):
    def test_distribution_and_cost(self):
        exit_index = np.array([0, 0, 1, 2, 2, 2], np.int32)
        np.testing.assert_allclose(
            early_exit.exit_distribution(exit_index, 3), [2 / 6, 1 / 6, 3 / 6]
        )
        np.testing.assert_allclose(
            early_exit.exit_distribution(tf.constant(exit_index), 4), [2 / 6, 1 / 6, 3 / 6, 0]
        )
        self.assertAlmostEqual(
            early_exit.average_cost(exit_index, [1.0, 4.0, 10.0]), (2 + 4 + 30) / 6
        )

    def test_rejects(self):
        with self.assertRaisesRegex(ValueError, "`exit_index`"):
            early_exit.exit_distribution(np.array([0, 3]), 3)
        with self.assertRaisesRegex(ValueError, "`exit_index`"):
            early_exit.exit_distribution(np.array([], np.int32), 3)
        with self.assertRaisesRegex(ValueError, "`num_outputs`"):
            early_exit.exit_distribution(np.array([0]), 0)
        with self.assertRaisesRegex(ValueError, "`exit_costs`"):
            early_exit.average_cost(np.array([0]), [])
