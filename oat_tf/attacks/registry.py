"""`run_attack`: one entry point that runs the attack an `AttackConfig` names.

Evaluation, training and the CLIs reach every attack through here, so the
attack modules need not know of each other.

Example:

```python
from oat_tf import config
from oat_tf.attacks import registry

x_eval = registry.run_attack(
    config.AttackConfig(name="pgd", num_steps=20), logits_fn, images, labels,
    seed=[1, 0])
```
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf.attacks import apgd
from oat_tf.attacks import core
from oat_tf.attacks import fab
from oat_tf.attacks import losses
from oat_tf.attacks import pgd
from oat_tf.attacks import square


def run_attack(
    config: config_lib.AttackConfig,
    logits_fn: core.LogitsFn,
    images: tf.Tensor,
    labels: tf.Tensor,
    *,
    seed: Optional[core.Seed] = None,
    target_labels: Optional[tf.Tensor] = None,
    loss_fn: Optional[losses.LossFn] = None,
) -> tf.Tensor:
    """Runs the attack that `config.name` names with the settings of `config`.

    "pgd" -> `pgd.pgd_linf` (all fields), "fgsm" -> `pgd.fgsm` (epsilon, targeted),
    "mi_fgsm" -> `pgd.mi_fgsm` (epsilon, num_steps, decay, targeted; a
    `step_size` of 0 means ε / num_steps), "square" -> `square.square_linf`
    (epsilon, num_queries, p_init; needs `seed`), "apgd_ce" / "apgd_dlr" ->
    `apgd.apgd` (epsilon, num_steps, num_restarts; needs `seed`), "apgd_t" ->
    `apgd.apgd_targeted` and "fab_t" -> `fab.fab_targeted` (epsilon,
    num_steps, num_target_classes, num_restarts; need `seed`). The
    `ensemble` field is not read here: running the members of an ensemble on
    the samples still robust is the caller's part (`autoattack.autoattack`,
    `oat_tf.evaluation.robust_eval`).

    Args:
        config: AttackConfig, the attack and its settings.
        logits_fn: callable mapping images [N, H, W, C] to logits [N, K].
        images: tf.Tensor of shape [N, H, W, C], float images in [0, 1].
        labels: tf.Tensor of shape [N], integer true class ids.
        seed: shape [2] integer tensor or pair of ints; required by PGD with
            a random start, unused otherwise.
        target_labels: tf.Tensor of shape [N]; required when
            `config.targeted`.
        loss_fn: optional per-sample loss `(logits, labels) -> [N]`.

    Returns:
        tf.Tensor of shape [N, H, W, C], float32, without gradient: the
        adversarial images.
    """
    if not isinstance(config, config_lib.AttackConfig):
        raise ValueError(
            f"`config` must be an AttackConfig. Received: config={config!r}"
        )

    def attack(attack_fn, **arguments):
        return attack_fn(logits_fn, images, labels, epsilon=config.epsilon, **arguments)

    # The goal and loss of the attacks that take them (the PGD family).
    goal = dict(targeted=config.targeted, target_labels=target_labels, loss_fn=loss_fn)
    if config.name == "pgd":
        return attack(
            pgd.pgd_linf,
            step_size=config.step_size,
            num_steps=config.num_steps,
            random_start=config.random_start,
            num_restarts=config.num_restarts,
            seed=seed,
            **goal,
        )
    if config.name == "fgsm":
        return attack(pgd.fgsm, **goal)
    if config.name == "mi_fgsm":
        return attack(
            pgd.mi_fgsm,
            num_steps=config.num_steps,
            decay=config.decay,
            step_size=config.step_size or None,
            **goal,
        )
    # The attacks that choose their own targets and loss, named as in the message.
    fixed_goal = dict.fromkeys(
        config_lib.RANKED_TARGET_ATTACKS, "APGD-T and FAB-T (they choose their own targets and loss)"
    )
    fixed_goal.update(apgd_ce="APGD", apgd_dlr="APGD")
    if config.name in fixed_goal and (target_labels is not None or loss_fn is not None):
        raise ValueError(
            f"`target_labels` and `loss_fn` are not supported by {fixed_goal[config.name]}. "
            f"Received: config={config!r}"
        )
    if config.name in config_lib.RANKED_TARGET_ATTACKS:
        attack_fn = apgd.apgd_targeted if config.name == "apgd_t" else fab.fab_targeted
        return attack(
            attack_fn,
            num_steps=config.num_steps,
            num_target_classes=config.num_target_classes,
            num_restarts=config.num_restarts,
            seed=seed,
        )
    if config.name in ("apgd_ce", "apgd_dlr"):
        loss = config.name[len("apgd_"):]
        return attack(
            apgd.apgd, num_steps=config.num_steps, loss=loss, num_restarts=config.num_restarts, seed=seed
        )
    if config.name == "square":
        return attack(
            square.square_linf, num_queries=config.num_queries, p_init=config.p_init, seed=seed
        )
    raise ValueError(
        f"`config.name` must be one of {config_lib.ATTACK_NAMES}. "
        f"Received: config.name={config.name!r}"
    )
