"""A training loop for multi-worker strategies that drives Keras callbacks.

Keras 3's `fit` fails under `tf.distribute.MultiWorkerMirroredStrategy`
(keras-team/keras#20585, measured with Keras 3.15): its symbolic build reduces
a peeked `PerReplica` batch with `strategy.reduce`, and its step reduces the
scalar logs with `strategy.reduce("MEAN", v, axis=0)`. Both are Keras' own
bookkeeping, not the training step, so this module runs the trainer's
unchanged `train_step` with `strategy.run` over a distributed dataset and
calls the same Keras callbacks `fit` would (checkpoints, TensorBoard, the
periodic evaluation, the progress log, `History`). `DistributedFit(trainer,
strategy)` is called with `trainer.fit`'s arguments, so the runner swaps one
for the other.

The data are split explicitly, not by tf.data's auto-sharding (which is set
to OFF): every worker builds the same stream of global batches and keeps, of
each, the slices of its own replicas (`replica_batches`). Replica `r` of `R`
gets rows `[r·B/R, (r+1)·B/R)` of global batch `B`, as `MirroredStrategy`'s
rebatching gives one process with `R` devices, so a step on 2 workers × 1
device equals a step on 1 worker with 2 devices: the same examples per
replica, the same λ draws and attack starts (seeded by step and replica id),
and the same summed update.

Logs are the mean over replicas of each replica's metric, as Keras' `fit`
reports them under `MirroredStrategy`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

import keras
import tensorflow as tf
from absl import logging


def replica_batches(
    dataset: tf.data.Dataset, num_replicas: int, input_context: tf.distribute.InputContext
) -> tf.data.Dataset:
    """This input pipeline's per-replica slices of every global batch.

    Args:
        dataset: a dataset of global batches `(images, labels)` with a static
            batch size divisible by `num_replicas`.
        num_replicas: int, replicas in sync over all workers.
        input_context: the context `distribute_datasets_from_function` passes:
            pipeline `p` of `P` feeds replicas `[p·L, (p+1)·L)`, `L = R / P`.

    Returns:
        A dataset of per-replica batches, `L` per global batch in replica
        order (the strategy hands consecutive elements to its local replicas),
        with auto-sharding off.

    Raises:
        ValueError: a batch size that is not static or not divisible by
            `num_replicas`.
    """
    global_batch = dataset.element_spec[0].shape[0]
    if global_batch is None or global_batch % num_replicas:
        raise ValueError(
            f"The global batch size must be static and divisible by the {num_replicas} replicas in "
            f"sync. Received: batch size {global_batch}"
        )
    per_replica = global_batch // num_replicas
    local = num_replicas // input_context.num_input_pipelines
    first = input_context.input_pipeline_id * local

    def own_slices(*batch):
        return tf.data.Dataset.from_tensor_slices(
            tuple(
                tf.reshape(t, [num_replicas, per_replica] + t.shape.as_list()[1:])[first : first + local]
                for t in batch
            )
        )

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.flat_map(own_slices).with_options(options)


def check_same_on_every_replica(
    strategy: tf.distribute.Strategy, replica_value: Callable[[], tf.Tensor], what: str
) -> None:
    """Raises unless every replica holds the same number (a collective: all workers call it).

    The values are equal exactly when the mean of their squares is the square
    of their mean (zero variance; exact in float64 for integers below 2**26).

    Args:
        strategy: tf.distribute.Strategy.
        replica_value: function returning this replica's value (a scalar).
        what: str, what the value is, for the error.

    Raises:
        ValueError: naming `what`, if the replicas hold different values.
    """
    per_replica = strategy.run(lambda: tf.cast(replica_value(), tf.float64))
    squares = strategy.run(lambda: tf.square(tf.cast(replica_value(), tf.float64)))
    mean = float(strategy.reduce("MEAN", per_replica, axis=None))
    mean_square = float(strategy.reduce("MEAN", squares, axis=None))
    if mean_square != mean * mean:
        values = [float(v) for v in strategy.experimental_local_results(per_replica)]
        raise ValueError(
            f"The workers disagree on {what}: this worker has {values}, the mean over all is "
            f"{mean:g}. Expected every worker to restore the same checkpoint: the chief's "
            "--runs_dir must be readable by every worker (a shared file system or bucket)."
        )


def check_same_start_step(strategy: tf.distribute.Strategy, start_step: int) -> None:
    """Checks that every worker resumes from the same step (a no-op off multi-worker strategies).

    Args:
        strategy: the run's strategy.
        start_step: int, the step this worker restored.

    Raises:
        ValueError: if the workers restored different steps.
    """
    if uses_custom_loop(strategy):
        check_same_on_every_replica(strategy, lambda: tf.constant(start_step), "the step to resume from")


def _replica_step(trainer: keras.Model, element_spec) -> Any:
    """The trainer's `train_step` on one replica's batch, with the batch shape made static."""
    shapes = [spec.shape for spec in element_spec]

    def step(*batch):
        batch = tuple(tf.ensure_shape(t, shape) for t, shape in zip(batch, shapes))
        return trainer.train_step(batch)

    if trainer.jit_compile:
        return tf.function(step, jit_compile=True)
    return step


def make_train_function(trainer: keras.Model, strategy: tf.distribute.Strategy, element_spec):
    """One training step over a distributed iterator: `iterator → logs`.

    Args:
        trainer: a compiled trainer built in `strategy.scope()`.
        strategy: tf.distribute.Strategy.
        element_spec: the per-replica batch's element spec.

    Returns:
        A function of the distributed iterator returning the logs (dict of
        scalar tensors, each the mean over replicas); a `tf.function` unless
        the trainer runs eagerly.
    """
    replica_step = _replica_step(trainer, element_spec)

    def train_function(iterator):
        per_replica = strategy.run(replica_step, args=tuple(next(iterator)))
        return {
            name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            for name, value in per_replica.items()
        }

    return train_function if trainer.run_eagerly else tf.function(train_function)


class DistributedFit:
    """`trainer.fit`'s stand-in under any strategy, multi-worker included.

    Called as `trainer.fit` is, with a dataset of global batches; the step is
    traced once and reused by later calls (a resumed run's first, partial
    epoch and the epochs after it).

    Args:
        trainer: a compiled trainer built in `strategy.scope()`.
        strategy: tf.distribute.Strategy.
    """

    def __init__(self, trainer: keras.Model, strategy: tf.distribute.Strategy):
        self.trainer = trainer
        self.strategy = strategy
        self._train_functions: Dict[Any, Any] = {}

    def _train_function(self, element_spec):
        if element_spec not in self._train_functions:
            if not self.trainer.optimizer.built:
                # Its slots must exist before the step is traced (a tf.function creates variables on
                # its first trace only). `AdversarialTrainer.compile` builds them; this covers a
                # trainer compiled otherwise.
                with self.strategy.scope():
                    self.trainer.optimizer.build(self.trainer.network.trainable_variables)
            self._train_functions[element_spec] = make_train_function(
                self.trainer, self.strategy, element_spec
            )
        return self._train_functions[element_spec]

    def __call__(
        self,
        dataset: tf.data.Dataset,
        *,
        epochs: int,
        steps_per_epoch: int,
        initial_epoch: int = 0,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        verbose: int = 2,
    ) -> keras.callbacks.History:
        """Trains like `trainer.fit(dataset, ...)`.

        Args:
            dataset: global batches `(images, labels)` with a static batch size
                divisible by the replicas in sync, at least
                `(epochs - initial_epoch) * steps_per_epoch` of them. Every
                worker passes the same stream.
            epochs: int, index of the epoch to stop before, as in `fit`.
            steps_per_epoch: int, steps of each epoch run here.
            initial_epoch: int, index of the first epoch.
            callbacks: Keras callbacks, called as `fit` calls them.
            verbose: int, 0 (silent), 1 (progress bar) or 2 (one line per epoch).

        Returns:
            keras.callbacks.History of the epoch logs.
        """
        trainer, strategy = self.trainer, self.strategy
        num_replicas = strategy.num_replicas_in_sync
        distributed = strategy.distribute_datasets_from_function(
            lambda context: replica_batches(dataset, num_replicas, context)
        )
        per_replica_spec = replica_batches(
            dataset, num_replicas, tf.distribute.InputContext(1, 0, num_replicas)
        ).element_spec
        train_function = self._train_function(per_replica_spec)
        callback_list = keras.callbacks.CallbackList(
            list(callbacks),
            add_history=True,
            add_progbar=verbose != 0,
            model=trainer,
            verbose=verbose,
            epochs=epochs,
            steps=steps_per_epoch,
        )
        logging.info(
            "Custom training loop: %d replicas in sync, epochs [%d, %d), %d steps each.",
            num_replicas, initial_epoch, epochs, steps_per_epoch,
        )
        trainer.stop_training = False
        callback_list.on_train_begin()
        iterator = iter(distributed)
        logs: Optional[Dict[str, float]] = None
        for epoch in range(initial_epoch, epochs):
            trainer.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            for step in range(steps_per_epoch):
                callback_list.on_train_batch_begin(step)
                logs = {name: float(value) for name, value in train_function(iterator).items()}
                callback_list.on_train_batch_end(step, logs)
                if trainer.stop_training:
                    break
            callback_list.on_epoch_end(epoch, dict(logs or {}))
            if trainer.stop_training:
                break
        callback_list.on_train_end(logs)
        return trainer.history


def uses_custom_loop(strategy: tf.distribute.Strategy) -> bool:
    """Whether a run trains with this module's `fit` instead of `trainer.fit`.

    Args:
        strategy: the run's strategy.

    Returns:
        bool, True for `MultiWorkerMirroredStrategy` (where Keras' `fit` fails).
    """
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
