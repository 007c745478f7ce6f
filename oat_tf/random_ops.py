"""Stateless random numbers that are identical eagerly, in graphs and under XLA.

`tf.random.stateless_uniform` picks its algorithm per device and converts
bits to floats differently under XLA, so the same seed can give other numbers
in a `jit_compile=True` step. Here every draw is built from raw Philox bits,
which the TF kernels and XLA produce alike: a run gives the same λ, PGD starts
and seeds whatever the execution mode.
"""

from __future__ import annotations

from typing import Sequence, Union

import tensorflow as tf

Seed = Union[tf.Tensor, Sequence[int]]
ALGORITHM = "philox"


def uniform(shape, seed: Seed) -> tf.Tensor:
    """Returns float32 values uniform in [0, 1) (24 random bits each).

    Args:
        shape: 1-D int tensor or list, the output shape.
        seed: shape [2] integer tensor or pair of ints.

    Returns:
        float32 tensor of `shape`.
    """
    bits = tf.random.stateless_uniform(
        shape, seed=seed, minval=None, maxval=None, dtype=tf.uint32, alg=ALGORITHM
    )
    unit = tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32)
    return unit * (1.0 / (1 << 24))


def uniform_int(shape, seed: Seed, maxval: int) -> tf.Tensor:
    """Returns int32 values uniform in [0, maxval) (for maxval ≪ 2^24).

    Args:
        shape: the output shape.
        seed: shape [2] integer tensor or pair of ints.
        maxval: int, exclusive upper bound.

    Returns:
        int32 tensor of `shape`.
    """
    return tf.minimum(
        tf.cast(tf.floor(uniform(shape, seed) * maxval), tf.int32), maxval - 1
    )


def fold_in(seed: Seed, data) -> tf.Tensor:
    """Returns a new seed derived from `seed` and an integer (Philox)."""
    return tf.random.experimental.stateless_fold_in(seed, data, alg=ALGORITHM)
