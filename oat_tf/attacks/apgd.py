"""Auto-PGD (APGD-CE, APGD-DLR, APGD-T): PGD whose step size adapts itself.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks", ICML 2020 (the white-box attacks of
AutoAttack), §3 and Algorithm 1, for the L∞ ball around images in [0, 1].
Written from the paper; the parts shared with PGD come from
`oat_tf.attacks.pgd` (random start, projection, input gradient, loop).

One run, per sample, with the projection P onto the ε-ball ∩ [0, 1]:

* Start: x⁰ is a uniform point of the ε-ball (`core.linf_random_start`, from
  the stateless seed); the step size starts at η = 2ε.
* First step: x¹ = P(x⁰ + η·sign(∇f(x⁰))).
* Momentum steps, k ≥ 1: z = P(xᵏ + η·sign(∇f(xᵏ))),
  xᵏ⁺¹ = P(xᵏ + α(z − xᵏ) + (1 − α)(xᵏ − xᵏ⁻¹)), α = 0.75.
* Best point: x_max / f_max, the highest loss seen so far.
* Checkpoints w_j = ⌈p_j·N⌉ with p₀ = 0, p₁ = 0.22,
  p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), while p_j ≤ 1
  (`checkpoints`; for N = 100: 0, 22, 41, 57, 70, 80, 87, 93, 99).
  When iterate x^{w_j} has been evaluated, η is halved and the next step
  starts from x_max for the samples where
    1. fewer than ρ·(w_j − w_{j−1}) of the steps since the last checkpoint
       increased the loss (f(xⁱ⁺¹) > f(xⁱ)), ρ = 0.75, or
    2. η was not halved at the last checkpoint and f_max has not grown since
       it (at the first checkpoint: since x⁰).
  The momentum term of the next step is x_max − x^{w_j − 1}.
* Losses: "ce" (softmax cross-entropy) or "dlr" (`dlr_loss`, the
  difference of logits ratio, invariant to shifting and scaling the logits).
* APGD-T (`apgd_targeted`, AutoAttack's second attack): the same run on the
  targeted DLR loss (`targeted_dlr_loss`) once per target class, the classes
  ranked 2 … T + 1 by the clean logits; per sample the most adversarial point
  over all target runs is returned.

Which point is returned. Beside x_max (which steers the run), every run also
keeps, per sample, its most adversarial point: a misclassified point beats a
correctly classified one, and between two points of the same kind the higher
loss wins. The clean image is a candidate too, so a sample that the model
already misclassifies (or that any iterate of any restart misclassifies)
always comes back misclassified, as in AutoAttack; a sample that nothing
misclassifies comes back at its highest-loss point. Restart r starts from the
seed of `core.restart_seeds` (restart 0 from `seed` itself) and the restarts
are merged with the same rule, so more restarts never do worse than one.

Implementation. The batch is processed at once (per-sample step sizes and
counters are [N] tensors, no Python loop over samples); the checkpoints are
computed in Python from `num_steps` and looked up in a constant table, so
shapes are static and the attack runs eagerly, in a `tf.function` and under
`jit_compile=True` (steps are a `tf.while_loop`, unrolled under XLA up to
`core.MAX_UNROLLED_STEPS_UNDER_XLA` steps, see `core.repeat`). A run of N steps
evaluates the model's loss and input gradient N + 1 times (x⁰ … x^N), plus
one forward pass on the clean images per call. The model is reached only
through `logits_fn`; the result carries no gradient, lies in [0, 1] and within
ε of the images.

Differences from the reference code of AutoAttack (`autopgd_base.py`), which
follows the paper with small changes: its random start rescales the noise so
that each sample's largest coordinate is exactly ε (here: uniform, as in
PGD); its condition 1 uses ≤ instead of the paper's <, compares the first
step of a window against a stale value, and compares a step after a restart
from x_max against the replaced iterate (here: against f_max, the loss of the
point actually stepped from); its condition 2 never fires at the first
checkpoint (here it can, as in the paper); its checkpoints use
int(0.22·N) and integer decrements (here: the paper's ⌈p_j·N⌉); it returns
the clean image for samples it cannot misclassify (here: the highest-loss
point) and attacks only the samples that are still classified correctly.

Example:

```python
from oat_tf.attacks import apgd

logits_fn = lambda x: model({"image": x, "lambda": lam}, training=False)
x_ce = apgd.apgd(logits_fn, images, labels, epsilon=8 / 255, seed=[0, 1])
x_dlr = apgd.apgd(
    logits_fn, images, labels, epsilon=8 / 255, loss="dlr", seed=[0, 2])
```
"""

from __future__ import annotations

import dataclasses
from typing import List, NamedTuple, Optional, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from oat_tf.attacks import core
from oat_tf.attacks import losses

LOSS_NAMES = ("ce", "dlr")

# Checkpoint fractions in hundredths, so that ⌈p_j·N⌉ is exact integer
# arithmetic (0.41 * 100 is 41.000000000000007 in floating point).
_FIRST_CHECKPOINT = 22  # p₁ = 0.22
_GAP_DECREMENT = 3  # 0.03
_MIN_GAP = 6  # 0.06

# Added to the DLR denominator, as in the paper.
_DLR_EPSILON = 1e-12

# For the error when `logits_fn` does not return class logits [N, K].
_WHY_CLASS_LOGITS = "APGD needs them to tell misclassified points"


# === Loss ===


def dlr_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Per-sample difference of logits ratio (DLR) loss, in float32.

    `DLR(z, y) = -(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12)`, where π
    orders the logits from largest to smallest. It is positive exactly when
    the sample is misclassified, and does not change when the logits are
    shifted or scaled by a positive number.

    Args:
        logits: tf.Tensor of shape [N, K], K >= 3, unnormalised class scores
            (any float dtype; computed in float32).
        labels: tf.Tensor of shape [N], integer class ids in [0, K).

    Returns:
        tf.Tensor of shape [N] and dtype float32.
    """
    _check_dlr_logits(logits, 3, "the DLR loss", "third")
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    top3 = tf.math.top_k(logits, k=3).values
    true_logit = tf.gather(logits, labels, axis=1, batch_dims=1)
    is_true = tf.one_hot(labels, tf.shape(logits)[1], on_value=True, off_value=False)
    other_logit = tf.reduce_max(
        tf.where(is_true, tf.constant(-np.inf, tf.float32), logits), axis=1
    )
    return -(true_logit - other_logit) / (top3[:, 0] - top3[:, 2] + _DLR_EPSILON)


def targeted_dlr_loss(
    logits: tf.Tensor, labels: tf.Tensor, target_labels: tf.Tensor
) -> tf.Tensor:
    """Per-sample targeted DLR loss of APGD-T, in float32.

    `DLR_t(z, y) = -(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2 + 1e-12)`, where
    t is the target class and π orders the logits from largest to smallest
    (Croce & Hein 2020, §3.2 and the AutoAttack code). Ascending it pushes the
    target logit above the true one; like DLR it does not change when the
    logits are shifted or scaled by a positive number.

    Args:
        logits: tf.Tensor of shape [N, K], K >= 4.
        labels: tf.Tensor of shape [N], integer true class ids in [0, K).
        target_labels: tf.Tensor of shape [N], integer target class ids.

    Returns:
        tf.Tensor of shape [N] and dtype float32.
    """
    _check_dlr_logits(logits, 4, "the targeted DLR loss", "fourth")
    logits = tf.cast(logits, tf.float32)
    top4 = tf.math.top_k(logits, k=4).values
    true_logit = tf.gather(logits, tf.cast(labels, tf.int32), axis=1, batch_dims=1)
    target_logit = tf.gather(logits, tf.cast(target_labels, tf.int32), axis=1, batch_dims=1)
    scale = top4[:, 0] - 0.5 * (top4[:, 2] + top4[:, 3]) + _DLR_EPSILON
    return -(true_logit - target_logit) / scale


def _check_dlr_logits(logits, min_classes: int, loss_name: str, ordinal: str) -> None:
    """Raises unless `logits` is [N, K] with K >= `min_classes` (where K is known)."""
    shape = getattr(logits, "shape", None)
    if shape is None or tf.TensorShape(shape).rank != 2:
        raise ValueError(
            f"`logits` must have shape [N, K] with K >= {min_classes}. Received: logits of "
            f"type {type(logits).__name__} with shape {shape}"
        )
    num_classes = tf.TensorShape(shape)[1]
    if num_classes is not None and num_classes < min_classes:
        raise ValueError(
            f"`logits` must have at least {min_classes} classes for {loss_name} (it uses "
            f"the {ordinal} largest logit). Received: logits with shape {shape}"
        )


# === Checkpoints ===


def checkpoints(num_steps: int) -> List[int]:
    """The checkpoints w_j = ⌈p_j·num_steps⌉ of APGD, in increasing order.

    p₀ = 0, p₁ = 0.22 and p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)
    while p_j ≤ 1. For few steps several p_j give the same w_j; each
    checkpoint is listed once.

    Args:
        num_steps: int >= 1, the number of iterations N.

    Returns:
        List of ints, starting with 0 and ending at most at `num_steps`
        (for N = 100: [0, 22, 41, 57, 70, 80, 87, 93, 99]).
    """
    core.check_int("num_steps", num_steps)
    fractions = [0, _FIRST_CHECKPOINT]  # hundredths
    while True:
        gap = max(fractions[-1] - fractions[-2] - _GAP_DECREMENT, _MIN_GAP)
        if fractions[-1] + gap > 100:
            break
        fractions.append(fractions[-1] + gap)
    return sorted({-(-p * num_steps // 100) for p in fractions})


def _window_table(num_steps: int) -> np.ndarray:
    """[num_steps + 1] float32: w_j − w_{j−1} at iterate w_j (j ≥ 1), else 0."""
    table = np.zeros([num_steps + 1], np.float32)
    points = checkpoints(num_steps)
    for previous, current in zip(points[:-1], points[1:]):
        table[current] = current - previous
    return table


# === Attack ===


class _RunState(NamedTuple):
    """Loop variables of one APGD run ([N, H, W, C] images, [N] vectors)."""

    x: tf.Tensor  # current iterate xᵏ
    x_prev: tf.Tensor  # xᵏ⁻¹ (momentum)
    grad: tf.Tensor  # ∇f(xᵏ)
    loss: tf.Tensor  # f(xᵏ)
    step_size: tf.Tensor  # η, per sample
    x_max: tf.Tensor  # highest-loss point
    grad_max: tf.Tensor
    loss_max: tf.Tensor
    num_increases: tf.Tensor  # steps with f(xⁱ⁺¹) > f(xⁱ) since the last check
    loss_max_at_check: tf.Tensor  # f_max at the last checkpoint
    halved_at_check: tf.Tensor  # bool, η was halved at the last checkpoint
    x_adv: tf.Tensor  # most adversarial point (misclassified first, then loss)
    adv_misclassified: tf.Tensor
    adv_loss: tf.Tensor


def apgd(
    logits_fn: core.LogitsFn,
    images: tf.Tensor,
    labels: tf.Tensor,
    *,
    epsilon: float,
    num_steps: int = 100,
    loss: str = "ce",
    num_restarts: int = 1,
    seed: Optional[core.Seed] = None,
    rho: float = 0.75,
    alpha: float = 0.75,
) -> tf.Tensor:
    """Untargeted L∞ Auto-PGD (Croce & Hein, 2020), APGD-CE or APGD-DLR.

    See the module docstring for the algorithm and for which point is
    returned per sample.

    Args:
        logits_fn: callable mapping images [N, H, W, C] to logits [N, K]; it
            must run the model in inference mode (e.g. `lambda x:
            model({"image": x, "lambda": lam}, training=False)`).
        images: tf.Tensor of shape [N, H, W, C], float images in [0, 1].
        labels: tf.Tensor of shape [N], integer true class ids.
        epsilon: float >= 0, L∞ radius.
        num_steps: int >= 1, iterations N (N + 1 gradient evaluations).
        loss: str, "ce" (softmax cross-entropy, APGD-CE) or "dlr"
            (`dlr_loss`, APGD-DLR; needs K >= 3 classes).
        num_restarts: int >= 1, independent runs from different random
            starts; per sample the most adversarial result is kept.
        seed: shape [2] integer tensor or pair of ints, stateless seed of the
            random starts; required.
        rho: float in [0, 1], the fraction ρ of loss-increasing steps below
            which the step size is halved at a checkpoint.
        alpha: float in [0, 1], the momentum weight α of the new step (1: no
            momentum).

    Returns:
        tf.Tensor of shape [N, H, W, C], float32, without gradient: the
        adversarial images, in [0, 1] and within ε of `images`.
    """
    images, labels = core.check_inputs(images, labels, False, None)
    _check_settings(epsilon, num_steps, num_restarts, rho, alpha, seed)
    if loss not in LOSS_NAMES:
        raise ValueError(f"`loss` must be one of {LOSS_NAMES}. Received: loss={loss!r}")
    seeds = core.restart_seeds(seed, num_restarts)
    logging.vlog(
        1,
        "apgd: loss=%s epsilon=%g num_steps=%d num_restarts=%d rho=%g alpha=%g "
        "checkpoints=%s",
        loss,
        epsilon,
        num_steps,
        num_restarts,
        rho,
        alpha,
        checkpoints(num_steps),
    )
    loss_fn = losses.sparse_cross_entropy if loss == "ce" else dlr_loss
    evaluate = _make_evaluate(logits_fn, loss_fn, labels)
    schedule = _Schedule(epsilon, num_steps, rho, alpha, tf.constant(_window_table(num_steps)))

    # The clean images are the first candidates for the returned points.
    clean_logits = core.check_logits(logits_fn(images), _WHY_CLASS_LOGITS)
    best = (
        images,
        core.misclassified(clean_logits, labels),
        tf.cast(loss_fn(clean_logits, labels), tf.float32),
    )

    def restart_body(r, *best_values):
        return _run_and_keep(evaluate, images, tf.gather(seeds, r), best_values, schedule)

    x_adv, _, _ = core.repeat(restart_body, num_restarts, best)
    return core.finish(x_adv, images, epsilon)


def apgd_targeted(
    logits_fn: core.LogitsFn,
    images: tf.Tensor,
    labels: tf.Tensor,
    *,
    epsilon: float,
    num_steps: int = 100,
    num_target_classes: int = 9,
    num_restarts: int = 1,
    seed: Optional[core.Seed] = None,
    rho: float = 0.75,
    alpha: float = 0.75,
) -> tf.Tensor:
    """Targeted L∞ Auto-PGD on the targeted DLR loss (APGD-T of AutoAttack).

    For k = 2 … `num_target_classes` + 1, `num_restarts` APGD runs (the same
    run as `apgd`: step size, momentum, checkpoints) ascend
    `targeted_dlr_loss` towards t_k, the class with the k-th largest logit on
    the clean image. Per sample the most adversarial point over all runs and
    the clean image is returned (misclassified first, then the higher loss),
    so a sample counts as broken as soon as one target run misclassifies it.
    Run (k, r) starts from the seed `core.restart_seeds(seed, T·R)[(k − 2)·R
    + r]` (T targets, R restarts). Standard AutoAttack uses 100 steps, 9
    target classes and 1 restart; the reference code runs each target only on
    the samples still classified correctly, which changes the cost, not the
    result per sample (samples do not interact in inference mode).

    Args:
        logits_fn: callable mapping images [N, H, W, C] to logits [N, K] in
            inference mode.
        images: tf.Tensor of shape [N, H, W, C], float images in [0, 1].
        labels: tf.Tensor of shape [N], integer true class ids.
        epsilon: float >= 0, L∞ radius.
        num_steps: int >= 1, iterations per run.
        num_target_classes: int >= 1, target classes per sample; at most
            K − 1, and K must be at least 4 (the loss uses the fourth largest
            logit).
        num_restarts: int >= 1, runs per target class.
        seed: shape [2] integer tensor or pair of ints; required.
        rho: float in [0, 1], as in `apgd`.
        alpha: float in [0, 1], as in `apgd`.

    Returns:
        tf.Tensor of shape [N, H, W, C], float32, without gradient: the
        adversarial images, in [0, 1] and within ε of `images`.
    """
    images, labels = core.check_inputs(images, labels, False, None)
    core.check_int("num_target_classes", num_target_classes)
    _check_settings(epsilon, num_steps, num_restarts, rho, alpha, seed)
    clean_logits = core.check_logits(logits_fn(images), _WHY_CLASS_LOGITS)
    num_classes = clean_logits.shape[1]
    if num_classes is not None and (num_classes < 4 or num_target_classes > num_classes - 1):
        raise ValueError(
            "`num_target_classes` must be at most K − 1 for K >= 4 classes (APGD-T "
            "aims at the classes ranked 2 … num_target_classes + 1). Received: "
            f"num_target_classes={num_target_classes} for logits with {num_classes} classes"
        )
    num_runs = num_target_classes * num_restarts
    seeds = core.restart_seeds(seed, num_runs)
    logging.vlog(
        1,
        "apgd_targeted: epsilon=%g num_steps=%d num_target_classes=%d "
        "num_restarts=%d rho=%g alpha=%g",
        epsilon,
        num_steps,
        num_target_classes,
        num_restarts,
        rho,
        alpha,
    )
    schedule = _Schedule(epsilon, num_steps, rho, alpha, tf.constant(_window_table(num_steps)))
    # [N, T]: the classes ranked 2 … T + 1 on the clean images.
    targets = tf.math.top_k(clean_logits, k=num_target_classes + 1).indices[:, 1:]
    best = (
        images,
        core.misclassified(clean_logits, labels),
        tf.fill(tf.shape(labels), tf.constant(-np.inf, tf.float32)),
    )

    def run_body(j, *best_values):
        target = tf.gather(targets, j // num_restarts, axis=1)

        def loss_fn(logits: tf.Tensor, true_labels: tf.Tensor) -> tf.Tensor:
            return targeted_dlr_loss(logits, true_labels, target)

        evaluate = _make_evaluate(logits_fn, loss_fn, labels)
        return _run_and_keep(evaluate, images, tf.gather(seeds, j), best_values, schedule)

    x_adv, _, _ = core.repeat(run_body, num_runs, best)
    return core.finish(x_adv, images, epsilon)


# === Parts of a run ===


def _make_evaluate(logits_fn: core.LogitsFn, loss_fn: losses.LossFn, labels: tf.Tensor):
    """Returns x -> (∇f(x), f(x), misclassified(x)) with one forward pass."""

    def evaluate(x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        captured = {}

        def objective_fn(x_in: tf.Tensor) -> tf.Tensor:
            logits = core.check_logits(logits_fn(x_in), _WHY_CLASS_LOGITS)
            captured["logits"] = logits
            return tf.cast(loss_fn(logits, labels), tf.float32)

        grad, loss = core.input_gradient(objective_fn, x)
        return grad, loss, core.misclassified(captured["logits"], labels)

    return evaluate


def _check_settings(epsilon, num_steps, num_restarts, rho, alpha, seed) -> None:
    """Checks the settings `apgd` and `apgd_targeted` share; raises ValueError naming one."""
    core.check_number("epsilon", epsilon)
    core.check_int("num_steps", num_steps)
    core.check_int("num_restarts", num_restarts)
    core.check_unit_interval("rho", rho)
    core.check_unit_interval("alpha", alpha)
    if seed is None:
        raise ValueError(
            "`seed` must be a shape [2] integer tensor or a pair of ints (the "
            "random starts always take an explicit seed). Received: seed=None"
        )


@dataclasses.dataclass(frozen=True)
class _Schedule:
    """The settings every run of one attack shares (`windows`: `_window_table`)."""

    epsilon: float
    num_steps: int
    rho: float
    alpha: float
    windows: tf.Tensor


def _run_and_keep(evaluate, images: tf.Tensor, seed: tf.Tensor, best_values, schedule: _Schedule):
    """One run from a random start (`seed`); per sample, the more adversarial of it and `best_values`."""
    start = core.linf_random_start(images, schedule.epsilon, seed)
    run = _single_run(
        evaluate,
        images,
        start,
        epsilon=schedule.epsilon,
        num_steps=schedule.num_steps,
        rho=schedule.rho,
        alpha=schedule.alpha,
        windows=schedule.windows,
    )
    return _keep_more_adversarial(best_values, (run.x_adv, run.adv_misclassified, run.adv_loss))


def _single_run(
    evaluate,
    images: tf.Tensor,
    start: tf.Tensor,
    *,
    epsilon: float,
    num_steps: int,
    rho: float,
    alpha: float,
    windows: tf.Tensor,
) -> _RunState:
    """One APGD run of `num_steps` steps from `start` (Algorithm 1)."""
    grad, loss, misclassified = evaluate(start)
    batch = tf.shape(images)[:1]
    initial = _RunState(
        x=start,
        x_prev=start,
        grad=grad,
        loss=loss,
        step_size=tf.fill(batch, tf.constant(2.0 * epsilon, tf.float32)),
        x_max=start,
        grad_max=grad,
        loss_max=loss,
        num_increases=tf.zeros(batch, tf.float32),
        loss_max_at_check=loss,
        halved_at_check=tf.zeros(batch, tf.bool),
        x_adv=start,
        adv_misclassified=misclassified,
        adv_loss=loss,
    )

    def body(i, *values):
        s = _RunState(*values)
        # Step i goes from xⁱ to xⁱ⁺¹; the first step has no momentum.
        momentum = tf.where(tf.equal(i, 0), 1.0, alpha)
        z = core.project_linf(
            core.sign_step(s.x, s.grad, core.per_sample(s.step_size)), images, epsilon
        )
        x_new = core.project_linf(
            s.x + momentum * (z - s.x) + (1.0 - momentum) * (s.x - s.x_prev),
            images,
            epsilon,
        )
        grad, loss, misclassified = evaluate(x_new)

        num_increases = s.num_increases + tf.cast(loss > s.loss, tf.float32)
        improved = loss > s.loss_max
        x_max = core.select_per_sample(improved, x_new, s.x_max)
        grad_max = core.select_per_sample(improved, grad, s.grad_max)
        loss_max = tf.where(improved, loss, s.loss_max)
        x_adv, adv_misclassified, adv_loss = _keep_more_adversarial(
            (s.x_adv, s.adv_misclassified, s.adv_loss), (x_new, misclassified, loss)
        )

        # Checkpoint test at iterate xⁱ⁺¹ = x^{w_j}; window = w_j − w_{j−1}.
        window = tf.gather(windows, i + 1)
        at_check = window > 0.0
        too_few_increases = num_increases < rho * window  # condition 1
        stalled = tf.logical_and(  # condition 2
            tf.logical_not(s.halved_at_check), loss_max <= s.loss_max_at_check
        )
        halve = tf.logical_and(at_check, tf.logical_or(too_few_increases, stalled))

        return _RunState(
            x=core.select_per_sample(halve, x_max, x_new),
            x_prev=s.x,
            grad=core.select_per_sample(halve, grad_max, grad),
            loss=tf.where(halve, loss_max, loss),
            step_size=tf.where(halve, 0.5 * s.step_size, s.step_size),
            x_max=x_max,
            grad_max=grad_max,
            loss_max=loss_max,
            num_increases=tf.where(at_check, 0.0, num_increases),
            loss_max_at_check=tf.where(at_check, loss_max, s.loss_max_at_check),
            halved_at_check=tf.where(at_check, halve, s.halved_at_check),
            x_adv=x_adv,
            adv_misclassified=adv_misclassified,
            adv_loss=adv_loss,
        )

    return _RunState(*core.repeat(body, num_steps, tuple(initial)))


def _keep_more_adversarial(
    current: Tuple[tf.Tensor, tf.Tensor, tf.Tensor],
    candidate: Tuple[tf.Tensor, tf.Tensor, tf.Tensor],
) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per sample, the more adversarial of two (x, misclassified, loss) points.

    A misclassified point beats a correctly classified one; otherwise the
    higher loss wins, and `current` wins ties (and NaN losses).
    """
    x, misclassified, loss = current
    new_x, new_misclassified, new_loss = candidate
    better = tf.logical_or(
        tf.logical_and(new_misclassified, tf.logical_not(misclassified)),
        tf.logical_and(tf.equal(new_misclassified, misclassified), new_loss > loss),
    )
    return (
        core.select_per_sample(better, new_x, x),
        tf.logical_or(misclassified, new_misclassified),
        tf.where(better, new_loss, loss),
    )
