"""Run-to-run determinism of TensorFlow ops (`--deterministic`).

Every random choice of a run already follows `--seed` (stateless seeds for λ,
PGD starts, data order and augmentation). What is left is the order in which
multi-threaded kernels add floating-point numbers: with
`tf.config.experimental.enable_op_determinism()` TensorFlow uses kernels that
always reduce in the same order (and refuses ops that have none), so the same
seed on the same machine and TensorFlow build gives bit-identical weights.
The CLIs turn it on by default; BENCHMARKS.md gives its cost. It cannot be
turned off again in the same process, so the library never calls this on its
own: only the command lines do, before any work.

Bit-identical holds per machine kind: another CPU instruction set (AVX2 vs
AVX-512) rounds differently, so weights agree only to float tolerance there.
"""

from __future__ import annotations

import tensorflow as tf
from absl import logging


def configure(deterministic: bool) -> None:
    """Turns on TensorFlow op determinism for this process when asked.

    Args:
        deterministic: bool, `--deterministic`. False leaves TensorFlow's
            defaults (possibly faster, not bit-reproducible across runs).
    """
    if not isinstance(deterministic, bool):
        raise ValueError(
            f"`deterministic` must be a bool. Received: deterministic={deterministic!r}"
        )
    if deterministic:
        tf.config.experimental.enable_op_determinism()
        logging.info("Op determinism on: the same seed gives bit-identical results on this machine.")
    else:
        logging.info("Op determinism off (--nodeterministic): results may differ in the last bits.")
