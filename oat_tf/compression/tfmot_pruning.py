"""Magnitude pruning with TFMOT while fine-tuning adversarially with the project's PGD.

The "pruning + defence" baseline of RDI-Nets (Hu et al., ICLR 2020, §4.3 and
Fig. 6): a backbone is compressed by magnitude pruning and adversarially
trained, then compared with an input-adaptive network at equal MACs. Here the
pruning is TFMOT's `prune_low_magnitude` with a polynomial sparsity schedule
on a tf_keras rebuild of the backbone (`legacy_keras.to_tf_keras`), and every
training step attacks the current (masked) network with the run's training
attack (`oat_tf.attacks.run_attack`).

**Importing this module imports TFMOT, which sets TF_USE_LEGACY_KERAS=1 for the
whole process.** Only `oat_tf.compress` imports it, in its own process; no
Keras 3 code path of oat_tf does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Iterable, Tuple

from absl import logging
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras

from oat_tf import attacks
from oat_tf import config as config_lib


@dataclasses.dataclass(frozen=True)
class PruningSchedule:
    """When and how far magnitude pruning goes during fine-tuning.

    Attributes:
        target_sparsity: float in [0, 1), the final fraction of zero weights in
            every pruned kernel (0: fine-tuning alone, the unpruned control).
        total_steps: int >= 1, fine-tuning steps.
        end_fraction: float in (0, 1], share of `total_steps` after which the
            target sparsity is reached (the rest recovers accuracy at it).
        frequency: int >= 1, steps between two mask updates.
    """

    target_sparsity: float
    total_steps: int
    end_fraction: float = 0.5
    frequency: int = 10

    def __post_init__(self):
        if not 0.0 <= self.target_sparsity < 1.0:
            raise ValueError(f"`target_sparsity` must be in [0, 1). Received: {self.target_sparsity!r}")
        if self.total_steps < 1:
            raise ValueError(f"`total_steps` must be >= 1. Received: {self.total_steps!r}")
        if not 0.0 < self.end_fraction <= 1.0:
            raise ValueError(f"`end_fraction` must be in (0, 1]. Received: {self.end_fraction!r}")
        if self.frequency < 1:
            raise ValueError(f"`frequency` must be >= 1. Received: {self.frequency!r}")

    @property
    def update_every(self) -> int:
        """Steps between two mask updates as applied: `frequency`, at most `total_steps`."""
        return min(self.frequency, self.total_steps)

    @property
    def end_step(self) -> int:
        """The step at which the target is reached: a multiple of `update_every` (TFMOT
        updates masks only there), at least one update, at most `total_steps`."""
        steps = max(self.update_every, int(self.end_fraction * self.total_steps))
        return steps - steps % self.update_every

    def tfmot_schedule(self) -> Any:
        """The TFMOT `PolynomialDecay` schedule, from 0 at step 0 to the target at `end_step`."""
        return tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=self.target_sparsity,
            begin_step=0,
            end_step=self.end_step,
            frequency=self.update_every,
        )


def wrap_for_pruning(model: tf_keras.Model, schedule: PruningSchedule) -> tf_keras.Model:
    """Wraps every Conv2D, DepthwiseConv2D and Dense layer of `model` for magnitude pruning.

    Args:
        model: tf_keras.Model, functional (e.g. `legacy_keras.to_tf_keras`),
            with its trained weights.
        schedule: PruningSchedule.

    Returns:
        tf_keras.Model with the same weights, its prunable layers wrapped in
        TFMOT's `PruneLowMagnitude` (named `prune_low_magnitude_<name>`).
    """
    return tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule.tfmot_schedule())


def strip_pruning(model: tf_keras.Model) -> tf_keras.Model:
    """The pruned model without its wrappers (plain layers holding the masked weights)."""
    return tfmot.sparsity.keras.strip_pruning(model)


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
    """The adversarial fine-tuning during pruning.

    Attributes:
        attack: AttackConfig, the PGD (or FGSM) attack crafted against the current
            masked network at every step.
        clean_weight: float >= 0, weight of the clean cross-entropy.
        adversarial_weight: float >= 0, weight of the adversarial one (the
            loss per batch is `clean_weight·CE(x) + adversarial_weight·CE(x_adv)`,
            one training pass over both halves).
        learning_rate: float > 0, SGD's initial rate, cosine-decayed to 0 over
            the fine-tuning.
        momentum: float in [0, 1).
        seed: int, seed of the attack's random starts (with the step).
    """

    attack: config_lib.AttackConfig
    clean_weight: float
    adversarial_weight: float
    learning_rate: float
    momentum: float = 0.9
    seed: int = 0


def finetune_with_pruning(
    model: tf_keras.Model,
    batches: Iterable[Tuple[tf.Tensor, tf.Tensor]],
    schedule: PruningSchedule,
    settings: FinetuneSettings,
) -> Dict[str, Any]:
    """Adversarial fine-tuning of a model wrapped by `wrap_for_pruning`, masks updated on schedule.

    Args:
        model: tf_keras.Model from `wrap_for_pruning` (or an unwrapped model:
            the same fine-tuning without pruning).
        batches: iterable of `(images, labels)`, images float32 [N, H, W, C]
            in [0, 1], at least `schedule.total_steps` of them (the rest is
            not read).
        schedule: PruningSchedule, the one `model` was wrapped with.
        settings: FinetuneSettings.

    Returns:
        dict: `steps` (int), `final_loss` and `final_adversarial_accuracy`
        (floats, means over the last 10% of the steps).

    Raises:
        ValueError: `batches` ends before `schedule.total_steps`.
    """
    if settings.attack.name not in ("pgd", "fgsm"):
        raise ValueError(f"The fine-tuning attack must be PGD or FGSM. Received: {settings.attack.name!r}")
    learning_rate = tf_keras.optimizers.schedules.CosineDecay(settings.learning_rate, schedule.total_steps)
    optimizer = tf_keras.optimizers.SGD(learning_rate=learning_rate, momentum=settings.momentum)
    cross_entropy = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    attack = settings.attack

    @tf.function
    def train_step(images, labels, step):
        seed = tf.stack([tf.constant(settings.seed, tf.int64), tf.cast(step, tf.int64)])
        adversarial = attacks.run_attack(attack, lambda x: model(x, training=False), images, labels, seed=seed)
        with tf.GradientTape() as tape:
            logits = model(tf.concat([images, adversarial], axis=0), training=True)
            clean_logits, adversarial_logits = tf.split(logits, 2, axis=0)
            loss = settings.clean_weight * cross_entropy(labels, clean_logits)
            loss += settings.adversarial_weight * cross_entropy(labels, adversarial_logits)
            loss += tf.add_n(model.losses) if model.losses else 0.0
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        correct = tf.equal(tf.argmax(adversarial_logits, axis=-1, output_type=labels.dtype), labels)
        return loss, tf.reduce_mean(tf.cast(correct, tf.float32))

    step_callback = tfmot.sparsity.keras.UpdatePruningStep()
    step_callback.set_model(model)
    step_callback.on_train_begin()
    tail = max(1, schedule.total_steps // 10)
    losses, accuracies = [], []
    iterator = iter(batches)
    for step in range(schedule.total_steps):
        try:
            images, labels = next(iterator)
        except StopIteration:
            raise ValueError(
                f"`batches` ended after {step} batches; {schedule.total_steps} are needed."
            ) from None
        loss, accuracy = train_step(images, labels, tf.constant(step, tf.int64))
        if step >= schedule.total_steps - tail:
            losses.append(float(loss))
            accuracies.append(float(accuracy))
        if step % 50 == 0 or step == schedule.total_steps - 1:
            logging.info(
                "Pruning fine-tune step %d/%d: loss %.4f, adversarial accuracy %.3f (target sparsity %.2f at step %d).",
                step + 1, schedule.total_steps, float(loss), float(accuracy),
                schedule.target_sparsity, schedule.end_step,
            )
    # Applies the masks once more: the last gradient step moved pruned weights off zero.
    step_callback.on_epoch_end(batch=-1)
    return {
        "steps": schedule.total_steps,
        "final_loss": float(sum(losses) / len(losses)),
        "final_adversarial_accuracy": float(sum(accuracies) / len(accuracies)),
    }


def steps_for(num_examples: int, batch_size: int, epochs: float) -> int:
    """Fine-tuning steps for `epochs` passes over `num_examples` in batches of `batch_size` (at least 1)."""
    return max(1, int(math.floor(epochs * (num_examples // batch_size))))
