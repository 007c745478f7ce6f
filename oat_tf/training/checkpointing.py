"""Checkpoints of a training run: model, optimizer, step and RNG state.

The trainer's randomness (λ, attack starts, data order, augmentation) is a
stateless function of the run seed and the optimizer step, saved with the
optimizer; the layers' own RNG state (Dropout's seed generators) is saved
explicitly. A run restored from a checkpoint replays exactly what the
uninterrupted run would have done.

`tf.train.CheckpointManager` writes the data files first and then replaces
the `checkpoint` state file atomically, so a run killed while saving resumes
from the previous complete checkpoint.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import keras
import tensorflow as tf
from absl import logging

from oat_tf import checkpoint_state


def make_manager(
    trainer: keras.Model, directory: str, max_to_keep: int = 3
) -> tf.train.CheckpointManager:
    """Returns a CheckpointManager over the trainer (network) and its optimizer.

    Args:
        trainer: keras.Model, compiled (its optimizer is saved with it).
        directory: str, checkpoint directory.
        max_to_keep: int, number of checkpoints kept.

    Returns:
        tf.train.CheckpointManager.
    """
    # Keras keeps the state of stateful RNG layers (Dropout's SeedGenerator) in
    # variables that tf.train.Checkpoint does not reach through the layers.
    weights = {id(v) for v in trainer.network.weights}
    random_states = [v.value for v in trainer.network.variables if id(v) not in weights]
    checkpoint = tf.train.Checkpoint(
        network=trainer.network, optimizer=trainer.optimizer, random_states=random_states
    )
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=max_to_keep)


def restore_latest(manager: tf.train.CheckpointManager, trainer: keras.Model) -> Optional[int]:
    """Restores the latest checkpoint, if any.

    Args:
        manager: tf.train.CheckpointManager from `make_manager`.
        trainer: the compiled trainer whose network and optimizer are restored.

    Returns:
        The restored optimizer step, or None when the directory has no checkpoint.

    Raises:
        ValueError: the checkpoint is unreadable or does not match the model.
    """
    path = manager.latest_checkpoint
    if path is None:
        return None
    if not trainer.optimizer.built:
        # `AdversarialTrainer.compile` has built it; a trainer compiled otherwise needs its slots
        # now, to restore them. Never twice: Keras' LossScaleOptimizer would make a second set
        # of its variables.
        trainer.optimizer.build(trainer.network.trainable_variables)
    try:
        status = manager.checkpoint.restore(path)
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError, IndexError, KeyError) as error:
        raise ValueError(
            f"Checkpoint {path!r} cannot be restored into this model: it is corrupt "
            "or was written by a run with different model flags. Expected a "
            "checkpoint of the same architecture and variant. "
            f"Received error: {type(error).__name__}: {str(error).splitlines()[0]}"
        ) from error
    step = int(trainer.optimizer.iterations.numpy())
    logging.info("Restored %s (step %d).", path, step)
    return step


def restore_run(
    trainer: keras.Model,
    run_dir: str,
    *,
    resume: bool,
    max_to_keep: int = 3,
    restore_dir: Optional[str] = None,
) -> Tuple[tf.train.CheckpointManager, int]:
    """The checkpoint manager of a run directory, and the step to start from.

    A run directory that already holds checkpoints is continued only with
    `resume`, never silently overwritten.

    Args:
        trainer: the compiled trainer (network and optimizer are checkpointed).
        run_dir: str, the run directory (checkpoints in `checkpoint_directory`).
        resume: bool, continue from the latest checkpoint.
        max_to_keep: int, checkpoints kept.
        restore_dir: str or None, the run directory whose checkpoints are read
            (default `run_dir`): a multi-worker run's other workers save in
            scratch space and resume from the chief's run directory.

    Returns:
        Tuple (manager, start step: 0 for a new run).

    Raises:
        ValueError: the directory holds checkpoints and `resume` is False,
            its state file is corrupt or names missing files, or the latest
            checkpoint does not match the model.
    """
    # Strict: a corrupt state file is an error here, where TensorFlow's
    # reader would log "Checkpoint ignored" and let the run start over.
    source = run_dir if restore_dir is None else restore_dir
    latest = checkpoint_state.latest_checkpoint(checkpoint_directory(source))
    manager = make_manager(trainer, checkpoint_directory(run_dir), max_to_keep)
    if latest is None:
        if resume:
            logging.info("Resuming %s: no checkpoint was written yet, starting at step 0.", source)
        return manager, 0
    if not resume:
        raise ValueError(
            f"Run directory {source!r} already holds checkpoints. Expected "
            "`--resume` to continue that run, or another `--name`. "
            f"Received: resume={resume}"
        )
    if source != run_dir:
        return manager, restore_latest(make_manager(trainer, checkpoint_directory(source)), trainer) or 0
    return manager, restore_latest(manager, trainer) or 0


class CheckpointCallback(keras.callbacks.Callback):
    """Saves a checkpoint every `every_steps` steps and at every epoch end.

    Args:
        manager: tf.train.CheckpointManager from `make_manager`.
        every_steps: int, save every N optimizer steps (0: epoch ends only).
    """

    def __init__(self, manager: tf.train.CheckpointManager, every_steps: int = 0):
        super().__init__()
        self.manager = manager
        self.every_steps = int(every_steps)
        self._last_saved = None

    def _save(self):
        step = int(self.model.optimizer.iterations.numpy())
        if step != self._last_saved:
            try:
                self.manager.save(checkpoint_number=step)
            except (OSError, tf.errors.OpError) as error:
                # A full disk or a directory made read-only mid-run: name the
                # flag and the path instead of a bare OSError. The previous
                # checkpoint stays valid (its state file is replaced last).
                raise OSError(
                    f"Writing the checkpoint of step {step} to {self.manager.directory} "
                    "(--runs_dir) failed: the disk may be full or the directory not writable. "
                    "The previous checkpoint is intact; free space and rerun with --resume. "
                    f"Received error: {type(error).__name__}: {str(error).splitlines()[0]}"
                ) from error
            self._last_saved = step
            logging.info("Saved checkpoint at step %d to %s.", step, self.manager.directory)

    def on_train_batch_end(self, batch, logs=None):
        if self.every_steps:
            step = int(self.model.optimizer.iterations.numpy())
            if step % self.every_steps == 0:
                self._save()

    def on_epoch_end(self, epoch, logs=None):
        self._save()


def checkpoint_directory(run_dir: str) -> str:
    """Returns the checkpoint directory of a run directory."""
    return os.path.join(run_dir, "checkpoints")
