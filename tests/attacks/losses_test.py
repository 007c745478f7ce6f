"""Tests for oat_tf.attacks.losses."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from oat_tf.attacks import losses


class SparseCrossEntropyTest(parameterized.TestCase):
    def test_matches_numpy_log_softmax(self):
        rng = np.random.default_rng(0)
        logits = rng.normal(size=(5, 4)).astype(np.float32) * 3.0
        labels = np.array([0, 3, 1, 2, 3])
        shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        expected = -log_probs[np.arange(5), labels]

        loss = losses.sparse_cross_entropy(tf.constant(logits), tf.constant(labels))

        self.assertEqual(loss.dtype, tf.float32)
        self.assertEqual(loss.shape, (5,))
        np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5, atol=1e-6)

    def test_float16_logits_computed_in_float32(self):
        logits = tf.constant([[0.0, 1.0], [2.0, -1.0]], tf.float16)
        loss = losses.sparse_cross_entropy(logits, tf.constant([1, 1]))
        self.assertEqual(loss.dtype, tf.float32)
        np.testing.assert_allclose(
            loss.numpy(), [np.log1p(np.exp(-1.0)), np.log1p(np.exp(3.0))], rtol=1e-3
        )

    @parameterized.parameters(((4,),), ((2, 3, 4),))
    def test_rejects_logits_not_rank_2(self, shape):
        with self.assertRaisesRegex(ValueError, r"`logits` must have shape \[N, K\]"):
            losses.sparse_cross_entropy(tf.zeros(shape), tf.constant([0, 1]))

    def test_rejects_dict_of_logits(self):
        with self.assertRaisesRegex(ValueError, r"needs a `loss_fn`"):
            losses.sparse_cross_entropy({"exit_0": tf.zeros((2, 3))}, tf.constant([0, 1]))
