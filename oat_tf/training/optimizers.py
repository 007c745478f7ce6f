"""SGD with coupled L2 weight decay, the cosine learning-rate schedule, and loss scaling for float16."""

from __future__ import annotations

import keras

from oat_tf import config as config_lib


@keras.saving.register_keras_serializable(package="oat_tf")
class SGDWithL2(keras.optimizers.SGD):
    """SGD whose weight decay is added to the gradient, as PyTorch's SGD does.

    Keras' own `weight_decay` is decoupled (it shrinks the weights outside the
    momentum); the OAT reference trains with PyTorch's coupled form,
    `g ← g + wd·w` before the momentum update, which is what this applies to
    every trainable variable (after the cross-replica gradient sum, so the
    decay is counted once under a distribution strategy).

    Args:
        l2: float, coefficient wd of the decay term added to every gradient.
        **kwargs: `keras.optimizers.SGD` arguments (learning_rate, momentum, …).
    """

    def __init__(self, l2: float = 5e-4, **kwargs):
        if l2 < 0:
            raise ValueError(f"`l2` must be >= 0. Received: l2={l2}")
        super().__init__(**kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2:
            gradient = gradient + keras.ops.cast(self.l2, variable.dtype) * variable
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


@keras.saving.register_keras_serializable(package="oat_tf")
class StepCountingLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Dynamic loss scaling whose step counter counts skipped steps too.

    Keras' `LossScaleOptimizer` skips the update of a step whose gradients
    are not finite (and halves the scale) without advancing `iterations`.
    Here `iterations` counts every batch: the trainers derive each step's λ
    draws and attack seeds from it, and a resumed run finds its place in the
    data from it, so a skipped step must still count as a step taken.

    Args:
        inner_optimizer: the optimizer that applies the unscaled gradients.
        **kwargs: `keras.optimizers.LossScaleOptimizer` arguments
            (`initial_scale`, `dynamic_growth_steps`).
    """

    def _stateful_handle_non_finite_grads(self):
        super()._stateful_handle_non_finite_grads()
        self.inner_optimizer.iterations.assign_add(1)


def make_optimizer(
    config: config_lib.OptimizerConfig,
    *,
    steps_per_epoch: int,
    epochs: int,
    loss_scaling: bool = False,
) -> keras.optimizers.Optimizer:
    """Builds the optimizer and its schedule for a run.

    The cosine schedule decays per step over the whole run (after an optional
    linear warm-up), the per-step form of PyTorch's `CosineAnnealingLR`.

    Args:
        config: OptimizerConfig.
        steps_per_epoch: int, optimizer steps per epoch.
        epochs: int, epochs of the run.
        loss_scaling: bool, wrap the optimizer in dynamic loss scaling (for
            float16 training: the trainers multiply the loss by
            `optimizer.scale_loss` and the optimizer divides the gradients
            back, skipping a step whose gradients overflow).

    Returns:
        SGDWithL2, or a `StepCountingLossScaleOptimizer` around it.
    """
    total_steps = max(1, steps_per_epoch * epochs)
    if config.schedule == "constant":
        learning_rate = config.learning_rate
    else:
        warmup_steps = min(total_steps - 1, config.warmup_epochs * steps_per_epoch)
        if warmup_steps > 0:
            learning_rate = keras.optimizers.schedules.CosineDecay(
                initial_learning_rate=0.0,
                decay_steps=total_steps - warmup_steps,
                warmup_target=config.learning_rate,
                warmup_steps=warmup_steps,
            )
        else:
            learning_rate = keras.optimizers.schedules.CosineDecay(
                initial_learning_rate=config.learning_rate, decay_steps=total_steps
            )
    optimizer = SGDWithL2(
        l2=config.weight_decay, learning_rate=learning_rate, momentum=config.momentum
    )
    return StepCountingLossScaleOptimizer(optimizer) if loss_scaling else optimizer
