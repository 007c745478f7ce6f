"""The benchmarks' random batch: shapes, ranges, the seed, and unknown architectures."""

import numpy as np
import pytest

from oat_tf.bench import random_batch


def test_the_batch_has_the_architecture_shape_and_depends_only_on_the_seed():
    images, labels = random_batch.random_batch("small_cnn", 5, seed=3)
    assert images.shape == (5, 28, 28, 1) and images.dtype == np.float32
    assert labels.shape == (5,) and labels.dtype == np.int32
    assert images.min() >= 0.0 and images.max() <= 1.0 and 0 <= labels.min() and labels.max() < 10
    again, _ = random_batch.random_batch("small_cnn", 5, seed=3)
    other, _ = random_batch.random_batch("small_cnn", 5, seed=4)
    np.testing.assert_array_equal(again, images)
    assert not np.array_equal(other, images)


def test_an_unknown_architecture_is_named():
    with pytest.raises(ValueError, match=r"`architecture` must be one of .*Received: architecture='vgg16'"):
        random_batch.random_batch("vgg16", 2, seed=0)
