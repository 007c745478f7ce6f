"""Training callbacks: per-λ validation SA/RA written to TensorBoard."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf
from absl import logging

from oat_tf import config as config_lib
from oat_tf import evaluation
from oat_tf import reporting


class LambdaGridEvaluation(keras.callbacks.Callback):
    """Measures SA and RA for a grid of λ every K epochs on held-out data.

    The scalars go to TensorBoard (`sa/lambda_<λ>`, `ra_<attack>/lambda_<λ>`)
    and the table to the log, so a user sees the trade-off while training.

    Args:
        dataset: tf.data.Dataset of (images, labels), the validation split.
        lambdas: sequence of float, λ values to evaluate.
        attacks: sequence of AttackConfig.
        every_epochs: int, evaluate after every K-th epoch (and the last).
        log_dir: str, TensorBoard directory of these scalars.
        seed: int, seed of the attacks' random starts.
    """

    def __init__(
        self,
        dataset: tf.data.Dataset,
        *,
        lambdas: Sequence[float],
        attacks: Sequence[config_lib.AttackConfig],
        every_epochs: int,
        log_dir: str,
        seed: int = 0,
    ):
        super().__init__()
        if every_epochs < 1:
            raise ValueError(f"`every_epochs` must be >= 1. Received: every_epochs={every_epochs}")
        self.dataset = dataset
        self.lambdas = tuple(lambdas)
        self.attacks = tuple(attacks)
        self.every_epochs = int(every_epochs)
        self.seed = int(seed)
        self.writer = tf.summary.create_file_writer(log_dir)
        self.last_results = None

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") == epoch + 1
        if (epoch + 1) % self.every_epochs and not last:
            return
        network = self.model.network
        results = evaluation.evaluate_lambda_grid(
            network, self.dataset, self.lambdas, self.attacks, seed=self.seed
        )
        reporting.write_scalars(results, self.writer, step=epoch + 1)
        self.writer.flush()
        self.last_results = results
        logging.info(
            "Validation after epoch %d:\n%s", epoch + 1, evaluation.format_table(results)
        )
