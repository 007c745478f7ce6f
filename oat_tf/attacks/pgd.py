"""L∞ attacks for images in [0, 1]: PGD, FGSM and MI-FGSM.

Built from the parts in `oat_tf.attacks.core`:

* PGD starts at a uniform point of the ε-ball (`core.linf_random_start`);
  FGSM and MI-FGSM start at the images.
* PGD and FGSM step with `core.sign_step` (x + α·sign(∇)), MI-FGSM with
  `core.momentum_sign_step` (g ← μ·g + ∇/‖∇‖₁, x + α·sign(g)).
* `core.project_linf` runs after the start and after every step.
* Loss: a per-sample loss `loss_fn(logits, labels) -> [N]`, by default
  `oat_tf.attacks.losses.sparse_cross_entropy`. Untargeted attacks ascend the
  loss of the true labels; targeted attacks descend the loss of
  `target_labels`. `pgd_objective` and `fgsm_objective` take any per-sample
  objective `objective_fn(x) -> [N]` instead (the multi-exit attack forms in
  `oat_tf.attacks.multi_exit`).

The model is reached only through `logits_fn`, a closure that runs the model
in inference mode; the attacks never touch the model's weights or mode. The
steps run in a `tf.while_loop`, so PGD-40 builds one step into the graph
(under XLA, where CPU while loops are slow, up to 50 steps are unrolled), and
the attacks work eagerly, inside a caller's `tf.function` (also in a
`tf.distribute` replica context) and under `jit_compile=True`. Results carry
no gradient (`tf.stop_gradient`), always lie in [0, 1] and within ε of the
images in L∞.

Randomness takes an explicit stateless seed, a shape [2] integer tensor or a
pair of ints: `pgd_linf(..., random_start=True, seed=None)` raises. Restart r
of `pgd_linf` starts from `seed` itself for r = 0 and from
`tf.random.experimental.stateless_fold_in(seed, r)` for r ≥ 1 (see
`core.restart_seeds`), so more restarts never do worse than one with the same
seed.

Example:

```python
from oat_tf.attacks import pgd

logits_fn = lambda x: model({"image": x, "lambda": lam}, training=False)
x_adv = pgd.pgd_linf(
    logits_fn, images, labels,
    epsilon=8 / 255, step_size=2 / 255, num_steps=7, seed=[0, step])
x_fgsm = pgd.fgsm(logits_fn, images, labels, epsilon=8 / 255)
```

`oat_tf.attacks.registry.run_attack` runs any attack from an `AttackConfig`.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import tensorflow as tf
from absl import logging

from oat_tf.attacks import core
from oat_tf.attacks import losses

# === Attacks ===


def pgd_linf(
    logits_fn: core.LogitsFn,
    images: tf.Tensor,
    labels: tf.Tensor,
    *,
    epsilon: float,
    step_size: float,
    num_steps: int,
    random_start: bool = True,
    num_restarts: int = 1,
    targeted: bool = False,
    target_labels: Optional[tf.Tensor] = None,
    seed: Optional[core.Seed] = None,
    loss_fn: Optional[losses.LossFn] = None,
) -> tf.Tensor:
    """L∞ projected gradient descent (Madry et al., 2018).

    Starts at a uniform point of the ε-ball (or at the images), takes
    `num_steps` steps `x + step_size·sign(∇)` and projects onto the ε-ball
    and [0, 1] after each. With restarts, each sample keeps the restart whose
    final iterate has the highest loss (lowest target loss if targeted).

    Args:
        logits_fn: callable mapping images [N, H, W, C] to logits [N, K]; it
            must run the model in inference mode.
        images: tf.Tensor of shape [N, H, W, C], float images in [0, 1]
            (computed in float32). N may be 0 or unknown.
        labels: tf.Tensor of shape [N], integer true class ids.
        epsilon: float >= 0, L∞ radius.
        step_size: float >= 0, step per iteration.
        num_steps: int >= 1, iterations.
        random_start: bool, start at a uniform point of the ε-ball.
        num_restarts: int >= 1, independent runs (seeds from `restart_seeds`);
            without `random_start` all runs are equal and one is made.
        targeted: bool, descend the loss of `target_labels` instead of
            ascending the loss of `labels`.
        target_labels: tf.Tensor of shape [N], integer target class ids;
            required when `targeted`, not allowed otherwise.
        seed: shape [2] integer tensor or pair of ints, stateless seed of the
            random start; required when `random_start`.
        loss_fn: optional callable `(logits, labels) -> [N]` replacing the
            default `losses.sparse_cross_entropy` (e.g. a loss over several
            exits, when `logits_fn` returns a dict).

    Returns:
        tf.Tensor of shape [N, H, W, C], float32, without gradient: the
        adversarial images, in [0, 1] and within ε of `images`.
    """
    images, attack_labels = core.check_inputs(images, labels, targeted, target_labels)
    seed, num_restarts = _check_ascent_arguments(
        "pgd_linf", epsilon, step_size, num_steps, num_restarts, random_start, seed
    )
    logging.vlog(
        1,
        "pgd_linf: epsilon=%g step_size=%g num_steps=%d random_start=%s "
        "num_restarts=%d targeted=%s",
        epsilon,
        step_size,
        num_steps,
        random_start,
        num_restarts,
        targeted,
    )
    objective_fn = core.loss_objective(
        logits_fn, loss_fn or losses.sparse_cross_entropy, attack_labels, targeted
    )
    return _pgd_ascent(
        objective_fn,
        images,
        epsilon=epsilon,
        step_size=step_size,
        num_steps=num_steps,
        random_start=random_start,
        num_restarts=num_restarts,
        seed=seed,
    )


def _check_ascent_arguments(
    caller: str,
    epsilon: float,
    step_size: float,
    num_steps: int,
    num_restarts: int,
    random_start: bool,
    seed: Optional[core.Seed],
) -> Tuple[Optional[tf.Tensor], int]:
    """Checks PGD's arguments; returns the checked seed and the restarts to run.

    Without a random start every restart is the same run, so one is run (with
    a warning naming `caller`).
    """
    core.check_number("epsilon", epsilon)
    core.check_number("step_size", step_size)
    core.check_int("num_steps", num_steps)
    core.check_int("num_restarts", num_restarts)
    if random_start:
        if seed is None:
            raise ValueError(
                "`seed` must be a shape [2] integer tensor or a pair of ints when "
                "`random_start=True` (randomness always takes an explicit seed). "
                "Received: seed=None"
            )
        return core.check_seed(seed), num_restarts
    if num_restarts > 1:
        logging.warning(
            "%s: num_restarts=%d without random_start gives identical runs; running one.",
            caller,
            num_restarts,
        )
    return seed, 1


def _pgd_ascent(
    objective_fn: core.ObjectiveFn,
    images: tf.Tensor,
    *,
    epsilon: float,
    step_size: float,
    num_steps: int,
    random_start: bool,
    num_restarts: int,
    seed: Optional[tf.Tensor],
) -> tf.Tensor:
    """PGD on a validated per-sample objective (shared by `pgd_linf` and
    `pgd_objective`); restarts keep per sample the highest objective."""

    def run(run_seed: Optional[tf.Tensor]) -> tf.Tensor:
        start = core.linf_random_start(images, epsilon, run_seed) if random_start else images
        return _sign_ascent(
            objective_fn,
            images,
            start,
            epsilon=epsilon,
            step_size=step_size,
            num_steps=num_steps,
        )

    if num_restarts == 1:
        return core.finish(run(seed), images, epsilon)

    seeds = core.restart_seeds(seed, num_restarts)

    def restart_body(r, best_x, best_objective):
        x = run(tf.gather(seeds, r))
        objective = objective_fn(x)
        # Restart 0 always wins, so a NaN loss still returns a projected iterate.
        better = tf.logical_or(tf.equal(r, 0), objective > best_objective)
        best_x = tf.where(better[:, tf.newaxis, tf.newaxis, tf.newaxis], x, best_x)
        best_objective = tf.where(better, objective, best_objective)
        return best_x, best_objective

    neg_inf = tf.fill(tf.shape(images)[:1], tf.constant(-math.inf, tf.float32))
    x_adv, _ = core.repeat(restart_body, num_restarts, (images, neg_inf))
    return core.finish(x_adv, images, epsilon)


def pgd_objective(
    objective_fn: core.ObjectiveFn,
    images: tf.Tensor,
    *,
    epsilon: float,
    step_size: float,
    num_steps: int,
    random_start: bool = True,
    num_restarts: int = 1,
    seed: Optional[core.Seed] = None,
) -> tf.Tensor:
    """L∞ PGD that ascends a custom per-sample objective.

    `pgd_linf` with the loss replaced by `objective_fn(x) -> [N]` (e.g. a
    weighted loss over the exits of a multi-exit network, or the entropy of
    its early exits): the same random start, steps, projection, restarts
    (per sample the restart with the highest objective is kept) and seeds, so
    `pgd_objective(lambda x: CE(logits_fn(x), y), ...)` equals
    `pgd_linf(logits_fn, x, y, ...)` with the same seed.

    Args:
        objective_fn: callable mapping x [N, H, W, C] to the objective to
            maximise, shape [N] (sample i's value may depend on row i only).
        images: tf.Tensor of shape [N, H, W, C], float images in [0, 1].
        epsilon: float >= 0, L∞ radius.
        step_size: float >= 0, step per iteration.
        num_steps: int >= 1, iterations.
        random_start: bool, start at a uniform point of the ε-ball.
        num_restarts: int >= 1, independent runs (seeds from `restart_seeds`).
        seed: shape [2] integer tensor or pair of ints; required when
            `random_start`.

    Returns:
        tf.Tensor of shape [N, H, W, C], float32, without gradient, in [0, 1]
        and within ε of `images`.
    """
    images = core.check_images(images)
    seed, num_restarts = _check_ascent_arguments(
        "pgd_objective", epsilon, step_size, num_steps, num_restarts, random_start, seed
    )
    return _pgd_ascent(
        core.checked_objective(objective_fn),
        images,
        epsilon=epsilon,
        step_size=step_size,
        num_steps=num_steps,
        random_start=random_start,
        num_restarts=num_restarts,
        seed=seed,
    )


def fgsm_objective(
    objective_fn: core.ObjectiveFn, images: tf.Tensor, *, epsilon: float
) -> tf.Tensor:
    """FGSM that ascends a custom per-sample objective: `x + ε·sign(∇)`.

    Args:
        objective_fn: callable mapping x [N, H, W, C] to the objective to
            maximise, shape [N].
        images: tf.Tensor of shape [N, H, W, C], float images in [0, 1].
        epsilon: float >= 0, L∞ radius and step size.

    Returns:
        tf.Tensor of shape [N, H, W, C], float32, without gradient, in [0, 1]
        and within ε of `images`.
    """
    images = core.check_images(images)
    core.check_number("epsilon", epsilon)
    grad, _ = core.input_gradient(core.checked_objective(objective_fn), images)
    x_adv = core.project_linf(core.sign_step(images, grad, epsilon), images, epsilon)
    return core.finish(x_adv, images, epsilon)


def fgsm(
    logits_fn: core.LogitsFn,
    images: tf.Tensor,
    labels: tf.Tensor,
    *,
    epsilon: float,
    targeted: bool = False,
    target_labels: Optional[tf.Tensor] = None,
    loss_fn: Optional[losses.LossFn] = None,
) -> tf.Tensor:
    """Fast gradient sign method (Goodfellow et al., 2015).

    One step `x + ε·sign(∇)` from the clean images, clipped to [0, 1]: PGD
    with one step of size ε and no random start.

    Args:
        logits_fn: callable mapping images [N, H, W, C] to logits [N, K]; it
            must run the model in inference mode.
        images: tf.Tensor of shape [N, H, W, C], float images in [0, 1].
        labels: tf.Tensor of shape [N], integer true class ids.
        epsilon: float >= 0, L∞ radius and step size.
        targeted: bool, descend the loss of `target_labels`.
        target_labels: tf.Tensor of shape [N]; required when `targeted`.
        loss_fn: optional per-sample loss `(logits, labels) -> [N]`.

    Returns:
        tf.Tensor of shape [N, H, W, C], float32, without gradient: the
        adversarial images, in [0, 1] and within ε of `images`.
    """
    images, attack_labels = core.check_inputs(images, labels, targeted, target_labels)
    core.check_number("epsilon", epsilon)
    logging.vlog(1, "fgsm: epsilon=%g targeted=%s", epsilon, targeted)
    objective_fn = core.loss_objective(
        logits_fn, loss_fn or losses.sparse_cross_entropy, attack_labels, targeted
    )
    grad, _ = core.input_gradient(objective_fn, images)
    x_adv = core.project_linf(core.sign_step(images, grad, epsilon), images, epsilon)
    return core.finish(x_adv, images, epsilon)


def mi_fgsm(
    logits_fn: core.LogitsFn,
    images: tf.Tensor,
    labels: tf.Tensor,
    *,
    epsilon: float,
    num_steps: int = 10,
    decay: float = 1.0,
    step_size: Optional[float] = None,
    targeted: bool = False,
    target_labels: Optional[tf.Tensor] = None,
    loss_fn: Optional[losses.LossFn] = None,
) -> tf.Tensor:
    """Momentum iterative FGSM (Dong et al., 2018).

    From the clean images, `num_steps` times: `g ← decay·g + ∇/‖∇‖₁` (per
    sample L1 norm), `x ← x + α·sign(g)`, projected onto the ε-ball and
    [0, 1].

    Args:
        logits_fn: callable mapping images [N, H, W, C] to logits [N, K]; it
            must run the model in inference mode.
        images: tf.Tensor of shape [N, H, W, C], float images in [0, 1].
        labels: tf.Tensor of shape [N], integer true class ids.
        epsilon: float >= 0, L∞ radius.
        num_steps: int >= 1, iterations T.
        decay: float >= 0, momentum decay μ.
        step_size: float >= 0 or None, the step α; None means ε / num_steps.
        targeted: bool, descend the loss of `target_labels`.
        target_labels: tf.Tensor of shape [N]; required when `targeted`.
        loss_fn: optional per-sample loss `(logits, labels) -> [N]`.

    Returns:
        tf.Tensor of shape [N, H, W, C], float32, without gradient: the
        adversarial images, in [0, 1] and within ε of `images`.
    """
    images, attack_labels = core.check_inputs(images, labels, targeted, target_labels)
    core.check_number("epsilon", epsilon)
    core.check_int("num_steps", num_steps)
    core.check_number("decay", decay)
    if step_size is None:
        step_size = epsilon / num_steps
    core.check_number("step_size", step_size)
    logging.vlog(
        1,
        "mi_fgsm: epsilon=%g num_steps=%d decay=%g step_size=%g targeted=%s",
        epsilon,
        num_steps,
        decay,
        step_size,
        targeted,
    )
    objective_fn = core.loss_objective(
        logits_fn, loss_fn or losses.sparse_cross_entropy, attack_labels, targeted
    )

    def body(i, x, momentum):
        grad, _ = core.input_gradient(objective_fn, x)
        x, momentum = core.momentum_sign_step(
            x, grad, momentum, step_size=step_size, decay=decay
        )
        return core.project_linf(x, images, epsilon), momentum

    x_adv, _ = core.repeat(body, num_steps, (images, tf.zeros_like(images)))
    return core.finish(x_adv, images, epsilon)


def _sign_ascent(
    objective_fn: core.ObjectiveFn,
    images: tf.Tensor,
    start: tf.Tensor,
    *,
    epsilon: float,
    step_size: float,
    num_steps: int,
) -> tf.Tensor:
    """`num_steps` projected sign steps from `start` (see `core.repeat`)."""

    def body(i, x):
        grad, _ = core.input_gradient(objective_fn, x)
        return (core.project_linf(core.sign_step(x, grad, step_size), images, epsilon),)

    (x,) = core.repeat(body, num_steps, (start,))
    return x
