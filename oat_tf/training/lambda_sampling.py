"""Sampling of the per-sample loss weight λ for OAT training (Algorithm 1).

Samples with λ = 0 need no adversarial example (their adversarial loss has
weight 0), so the sampler fixes how many samples of a batch get λ = 0 from the
static batch size — as the OAT reference code does — and puts them first. The
trainer then attacks only the static slice `images[num_zeros:]`: no attack
compute is spent on λ = 0 samples and every shape stays static. The position
of a sample carries no meaning for the model: dual batch norm routes by the
value of λ, never by position.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from oat_tf import config as config_lib


@dataclasses.dataclass(frozen=True)
class LambdaBatch:
    """λ for one batch.

    Attributes:
        lambdas: float32 tensor [B], λ per sample; the first `num_zeros` are 0.
        num_zeros: int, static number of leading samples with λ = 0.
        attack_needed: bool tensor (scalar), False when no sample needs an
            adversarial example (batch-wise sampling that drew λ = 0).
    """

    lambdas: tf.Tensor
    num_zeros: int
    attack_needed: tf.Tensor


class LambdaSampler:
    """Draws λ per sample according to a `LambdaSamplingConfig`.

    Args:
        config: LambdaSamplingConfig, the sampling scheme, the discrete set of
            values and the optional share of λ = 0.

    Example:
    >>> sampler = LambdaSampler(LambdaSamplingConfig())  # element-wise on S1
    >>> batch = sampler.sample(128, seed=tf.constant([0, 1]))
    >>> batch.num_zeros  # ceil(128 / 6) = 22 samples with λ = 0, first
    """

    def __init__(self, config: config_lib.LambdaSamplingConfig):
        self.config = config
        self.nonzero_values = tuple(v for v in config.values if v != 0.0)

    @property
    def clean_loss_used(self) -> bool:
        """False only when every λ is 1 (then the clean loss has weight 0)."""
        return not (self.config.sampling == "fixed" and self.config.values[0] == 1.0)

    def num_zeros(self, batch_size: int) -> int:
        """Returns the static number of λ = 0 samples in a batch.

        Args:
            batch_size: int, the (per-replica) batch size.

        Returns:
            int in [0, batch_size].
        """
        cfg = self.config
        if cfg.sampling == "fixed":
            return batch_size if cfg.values[0] == 0.0 else 0
        if cfg.sampling == "batch_wise":
            return 0
        if cfg.sampling == "uniform":
            probability = cfg.zero_probability or 0.0
        elif 0.0 not in cfg.values:
            probability = 0.0
        elif cfg.zero_probability is not None:
            probability = cfg.zero_probability
        else:
            probability = 1.0 / len(cfg.values)
        if not self.nonzero_values and cfg.sampling == "element_wise":
            probability = 1.0
        return min(batch_size, int(math.ceil(probability * batch_size)))

    def sample(self, batch_size: int, seed: tf.Tensor) -> LambdaBatch:
        """Draws λ for a batch.

        Args:
            batch_size: int, static (per-replica) batch size.
            seed: int tensor [2], stateless seed of this step and replica.

        Returns:
            LambdaBatch.
        """
        cfg = self.config
        zeros = self.num_zeros(batch_size)
        rest = batch_size - zeros
        if cfg.sampling == "fixed":
            lambdas = tf.fill([batch_size], tf.constant(cfg.values[0], tf.float32))
            return LambdaBatch(lambdas, zeros, tf.constant(cfg.values[0] > 0.0))
        if cfg.sampling == "batch_wise":
            index = tf.random.stateless_uniform(
                [], seed, minval=0, maxval=len(cfg.values), dtype=tf.int32
            )
            value = tf.gather(tf.constant(cfg.values, tf.float32), index)
            return LambdaBatch(tf.fill([batch_size], value), 0, value > 0.0)
        if cfg.sampling == "uniform":
            # (0, 1]: 1 − U[0, 1) never gives 0, so zeros come only from the fixed share.
            nonzero = 1.0 - tf.random.stateless_uniform([rest], seed, dtype=tf.float32)
        else:
            choices = self.nonzero_values or (0.0,)
            index = tf.random.stateless_uniform(
                [rest], seed, minval=0, maxval=len(choices), dtype=tf.int32
            )
            nonzero = tf.gather(tf.constant(choices, tf.float32), index)
        lambdas = tf.concat([tf.zeros([zeros], tf.float32), nonzero], axis=0)
        return LambdaBatch(lambdas, zeros, tf.constant(rest > 0))
