"""FAB-T: the targeted L∞ fast adaptive boundary attack of AutoAttack.

Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive
boundary attack", ICML 2020, in the targeted form that standard AutoAttack
runs ("fab-t": 9 target classes, 1 restart, 100 steps), for images in
[0, 1]. Written from the paper and from the algorithm of AutoAttack's
`fab_base.py` / `fab_projections.py`; the parts shared with PGD (input
gradient, loop, projection onto the ε-ball) come from `oat_tf.attacks.pgd`.

FAB looks for the misclassified point closest to the clean image x₀. One run
towards target class t (true label y) starts at x¹ (the clean image, or a
random start) and repeats `num_steps` times, per sample:

* Linearise f = z_t − z_y at x¹: f(x) ≈ f(x¹) + ∇f(x¹)·(x − x¹), one
  forward and one backward pass (`core.input_gradient` of the batch sum of f).
  Its zero set is the hyperplane w·x = b with w = ∇f(x¹),
  b = −f(x¹) + w·x¹.
* Project both the iterate and the clean image onto that hyperplane inside
  the box [0, 1] (`projection_linf`): d₁ from x¹, d₂ from x₀, with
  a₁ = max(‖d₁‖∞, 1e-8), a₂ = max(‖d₂‖∞, 1e-8).
* Step, biased towards the clean image by α = clip(a₁ / (a₁ + a₂), 0,
  α_max) and overshooting the hyperplane by η:
  x¹ ← clip((x¹ + η·d₁)(1 − α) + (x₀ + η·d₂)·α, 0, 1).
* One more forward pass: where x¹ is now misclassified (argmax ≠ y, any
  class), it becomes the sample's best point if ‖x¹ − x₀‖∞ is below the best
  so far, and x¹ moves back towards the clean image:
  x¹ ← x₀ + β(x¹ − x₀).

`projection_linf` solves min ‖d‖∞ s.t. w·(p + d) = b, 0 ≤ p + d ≤ 1. With
c = b − w·p, every coordinate with w_i ≠ 0 moves in the direction
sign(w_i)·sign(c) that brings w·x towards b, by min(λ, room_i), room_i being
its distance to the box limit in that direction; the change of w·x is then
g(λ) = Σ|w_i|·min(λ, room_i), piecewise linear and non-decreasing. Sorting
the rooms per row (largest first) and taking cumulative sums gives g at
every breakpoint; the first segment whose end reaches |c| holds the optimum
λ = (|c| − T_j) / S_j (S_j: summed |w| of the coordinates still free, T_j:
summed |w|·room of those at their limit). Where |c| ≥ g(∞) the hyperplane
cannot be reached inside the box (or is reached only with every coordinate
at its limit), and the step is the one that gets closest: every coordinate
moved to its limit in the helpful direction, as in the reference.
Coordinates with w_i = 0 never move.

FAB-T (`fab_targeted`): the targets are, per sample, the classes with the
k-th largest clean logit, k = 2 … num_target_classes + 1. For every target
`num_restarts` runs are made: restart 0 from the clean image, restart r ≥ 1
from a random start x₀ + (ε/2)·u/‖u‖∞, u uniform in [−1, 1)^D, clipped to
[0, 1] (the reference's random start for restarts > 0). Per sample the
smallest-norm misclassified point over all runs is kept (a clean image that
is already misclassified counts, at norm 0); it is returned where its norm
is ≤ ε, and the clean image is returned otherwise, so the result always lies
in [0, 1] and within ε of the images. With T target classes and R
restarts, restart r of the k-th target (both counted from 0) draws u from the
stateless seed `core.restart_seeds(seed, T·R)[k·R + r]`, so the random starts
of different targets differ and the same seed gives the same result; u is
built from raw Philox bits (as in `core.linf_random_start`), so eager, graph
and XLA runs draw the same start.

Cost: one clean forward pass, then per run `num_steps` forward+backward
passes and `num_steps` forward passes; FAB-T with the defaults makes 9 runs,
900 forward+backward and 901 forward passes over the whole batch.

Implementation. The batch is processed at once: the iterate, best point and
best norm are per-sample tensors; the projection sorts each row and uses
cumulative sums (no binary search, no Python loop over samples); the steps
are a `core.repeat` loop (a `tf.while_loop`, unrolled under XLA up to
`core.MAX_UNROLLED_STEPS_UNDER_XLA` steps) and the T·R runs a
`tf.while_loop` that stays rolled under XLA too (a run is a long loop
itself; unrolling the runs multiplied the compile time: 9.0 s instead of
2.4 s for FAB-T's nine 100-step runs on a linear model, on CPU). Shapes are
static apart from the batch, so the attack runs eagerly, inside a
`tf.function` with an unknown batch size and under `jit_compile=True`.
Results carry no gradient; `fab_targeted` ends with `core.project_linf` as a
safety clip, like the other attacks (the kept points are within ε already;
the reference has no such clip).

Differences from the reference code (AutoAttack's `fab_base.py`,
`fab_projections.py`):

* Projection: the reference finds the active segment of g by binary search
  over the sorted breakpoints (ceil(log2 D) gathers); here g is evaluated at
  every breakpoint with cumulative sums and the segment is found by counting
  the breakpoints where g exceeds |c|. In exact arithmetic both pick the same
  segment and the same λ; in float32 the results agree to rounding. The
  reference's mask `w != 0` is the same as moving only coordinates with
  sign(w_i) ≠ 0 here.
* The reference attacks only the samples that are classified correctly and
  (between runs) that no earlier run has fooled within ε, and it stops at the
  first run that does; here every run sees the whole batch (static shapes),
  and per sample the smallest-norm misclassified point over all runs is kept.
  The samples found adversarial within ε are the same for the same runs; the
  point returned is the closest one found instead of the first one within ε.
  Samples that are misclassified clean come back as their clean image (as in
  the reference), since their norm 0 is never beaten.
* Random starts draw u from stateless Philox seeds (one per target and
  restart, see above) instead of the global torch generator, so results do
  not depend on what ran before.
* The reference's "no point found" marker is a norm of 1e10; here it is
  +inf (`minimal_adversarial_targeted` returns it).
* Ties between clean logits are broken by `tf.math.top_k` (lower class id
  first) instead of torch's unstable sort.

Example:

```python
from oat_tf.attacks import fab

logits_fn = lambda x: model({"image": x, "lambda": lam}, training=False)
x_fab = fab.fab_targeted(logits_fn, images, labels, epsilon=8 / 255)
x_min, norm = fab.minimal_adversarial_targeted(
    logits_fn, images, labels, target_labels)
```
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple

import tensorflow as tf
from absl import logging

from oat_tf.attacks import core

# For the error when `logits_fn` does not return class logits [N, K].
_WHY_CLASS_LOGITS = "FAB needs them to pick targets and tell misclassified points"


# Floor of the projection norms a₁, a₂ in the step (as in the reference).
_MIN_PROJECTION_NORM = 1e-8

# === Projection ===


def projection_linf(points: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Minimal-L∞ step onto the hyperplane w·x = b inside the box [0, 1], per row.

    Solves min ‖d‖∞ s.t. w·(p + d) = b and 0 ≤ p + d ≤ 1 for every row p of
    `points` (see the module docstring). Where the hyperplane cannot be
    reached inside the box, returns the step that gets closest to it: every
    coordinate with w_i ≠ 0 moved to its box limit in the direction that
    brings w·x towards b. Coordinates with w_i = 0 never move.

    Args:
        points: tf.Tensor of shape [N, D], float32 points in [0, 1].
        w: tf.Tensor of shape [N, D], float32 normals of the hyperplanes.
        b: tf.Tensor of shape [N], float32 offsets of the hyperplanes.

    Returns:
        tf.Tensor of shape [N, D] and dtype float32, the steps d.
    """
    points = tf.cast(points, tf.float32)
    w = tf.cast(w, tf.float32)
    b = tf.cast(b, tf.float32)
    needed = b - tf.reduce_sum(w * points, axis=1)  # change of w·x to make
    # +1: the coordinate moves up, −1: down, 0: it does not move (w_i = 0).
    direction = tf.sign(w) * tf.where(needed > 0.0, 1.0, -1.0)[:, tf.newaxis]
    room = tf.maximum(tf.where(direction > 0.0, 1.0 - points, points), 0.0)
    weight = tf.abs(w)
    needed = tf.abs(needed)

    # Breakpoints of g(λ) = Σ|w_i|·min(λ, room_i), largest room first.
    order = tf.argsort(room, axis=1, direction="DESCENDING", stable=True)
    room_sorted = tf.gather(room, order, batch_dims=1)
    weight_sorted = tf.gather(weight, order, batch_dims=1)
    # Between breakpoints j + 1 and j: g(λ) = slope_j·λ + fixed_j.
    slope = tf.cumsum(weight_sorted, axis=1)
    fixed = tf.cumsum(weight_sorted * room_sorted, axis=1, exclusive=True, reverse=True)
    reach = room_sorted * slope + fixed  # g(room_(j)), non-increasing in j
    # The optimum lies on the segment below the last breakpoint whose reach
    # exceeds |c|; none: the hyperplane is out of reach.
    count = tf.reduce_sum(tf.cast(reach > needed[:, tf.newaxis], tf.int32), axis=1)
    feasible = count > 0
    segment = tf.maximum(count - 1, 0)[:, tf.newaxis]
    slope_at = tf.gather(slope, segment, batch_dims=1)[:, 0]
    fixed_at = tf.gather(fixed, segment, batch_dims=1)[:, 0]
    step = tf.maximum(tf.math.divide_no_nan(needed - fixed_at, slope_at), 0.0)
    step = tf.where(feasible, step, tf.constant(math.inf, tf.float32))
    return direction * tf.minimum(step[:, tf.newaxis], room)


# === Attack ===


def minimal_adversarial_targeted(
    logits_fn: core.LogitsFn,
    images: tf.Tensor,
    labels: tf.Tensor,
    target_labels: tf.Tensor,
    *,
    num_steps: int = 100,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    start: Optional[tf.Tensor] = None,
) -> Tuple[tf.Tensor, tf.Tensor]:
    """One FAB run towards `target_labels` (see the module docstring).

    Each step linearises z_t − z_y at the iterate and moves towards that
    boundary; the misclassified iterates (any class but the label) are the
    candidates for the result.

    Args:
        logits_fn: callable mapping images [N, H, W, C] to logits [N, K]; it
            must run the model in inference mode.
        images: tf.Tensor of shape [N, H, W, C], float images in [0, 1].
        labels: tf.Tensor of shape [N], integer true class ids.
        target_labels: tf.Tensor of shape [N], integer target class ids.
        num_steps: int >= 1, iterations (each one forward+backward pass and
            one forward pass).
        alpha_max: float in [0, 1], the largest weight α of the step from
            the clean image.
        eta: float >= 1, the overshoot η of the projection steps.
        beta: float in [0, 1], the factor β by which a misclassified
            iterate's perturbation is shrunk.
        start: optional tf.Tensor like `images` in [0, 1], the first
            iterate; None: the images.

    Returns:
        Tuple `(x_min, norm)` without gradient: x_min [N, H, W, C] float32,
        per sample the misclassified point with the smallest L∞ distance to
        `images` that the run found (the clean image where that image is
        already misclassified, and where nothing misclassified was found),
        and norm [N] float32, that distance (0 and +inf in those cases).
    """
    images = core.check_images(images)
    labels = core.check_labels("labels", labels, images)
    target_labels = core.check_labels("target_labels", target_labels, images)
    run_arguments = _check_run_arguments(num_steps, alpha_max, eta, beta)
    if start is None:
        start = images
    else:
        start = tf.convert_to_tensor(start)
        shape_ok = start.shape.is_compatible_with(images.shape)
        if not start.dtype.is_floating or not shape_ok:
            raise ValueError(
                "`start` must be a float tensor shaped like `images` "
                f"{images.shape}. Received: start with dtype {start.dtype.name} "
                f"and shape {start.shape}"
            )
        start = tf.cast(start, tf.float32)
    logging.vlog(
        1,
        "minimal_adversarial_targeted: num_steps=%d alpha_max=%g eta=%g beta=%g",
        num_steps,
        alpha_max,
        eta,
        beta,
    )
    clean_logits = core.check_logits(logits_fn(images), _WHY_CLASS_LOGITS)
    clean_misclassified = core.misclassified(clean_logits, labels)
    x_min, norm = _single_run(
        logits_fn, images, labels, target_labels, start, clean_misclassified, **run_arguments
    )
    return tf.stop_gradient(x_min), tf.stop_gradient(norm)


def fab_targeted(
    logits_fn: core.LogitsFn,
    images: tf.Tensor,
    labels: tf.Tensor,
    *,
    epsilon: float,
    num_steps: int = 100,
    num_target_classes: int = 9,
    num_restarts: int = 1,
    seed: Optional[core.Seed] = None,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
) -> tf.Tensor:
    """FAB-T, the targeted L∞ FAB attack of standard AutoAttack.

    For each target class k = 2 … num_target_classes + 1 (per sample, the
    class with the k-th largest clean logit) `num_restarts` runs of
    `minimal_adversarial_targeted`'s algorithm are made, restart 0 from the
    clean image and restart r >= 1 from a random start at L∞ distance ε/2;
    per sample the smallest-norm misclassified point over all runs is kept.

    Args:
        logits_fn: callable mapping images [N, H, W, C] to logits [N, K]; it
            must run the model in inference mode (e.g. `lambda x:
            model({"image": x, "lambda": lam}, training=False)`).
        images: tf.Tensor of shape [N, H, W, C], float images in [0, 1].
        labels: tf.Tensor of shape [N], integer true class ids.
        epsilon: float >= 0, L∞ radius (and scale of the random starts).
        num_steps: int >= 1, iterations per run.
        num_target_classes: int >= 1, the number of target classes; must be
            smaller than the number of classes K (checked from the static
            shape of the logits; where K is unknown until run time,
            `tf.math.top_k` fails then instead).
        num_restarts: int >= 1, runs per target class.
        seed: shape [2] integer tensor or pair of ints, stateless seed of the
            random starts; required when `num_restarts` > 1.
        alpha_max: float in [0, 1], see `minimal_adversarial_targeted`.
        eta: float >= 1, see `minimal_adversarial_targeted`.
        beta: float in [0, 1], see `minimal_adversarial_targeted`.

    Returns:
        tf.Tensor of shape [N, H, W, C], float32, without gradient: per
        sample the closest misclassified point found where its L∞ distance
        is <= ε, else the clean image; in [0, 1] and within ε of `images`.

    Raises:
        ValueError: for an argument out of range (the message names it),
            `num_target_classes` >= K, a missing `seed` with
            `num_restarts` > 1, or logits that do not depend on the images.
    """
    images = core.check_images(images)
    labels = core.check_labels("labels", labels, images)
    core.check_number("epsilon", epsilon)
    core.check_int("num_target_classes", num_target_classes)
    core.check_int("num_restarts", num_restarts)
    run_arguments = _check_run_arguments(num_steps, alpha_max, eta, beta)
    if num_restarts > 1 and seed is None:
        raise ValueError(
            "`seed` must be a shape [2] integer tensor or a pair of ints when "
            f"num_restarts > 1 (the random starts take an explicit seed). "
            f"Received: seed=None, num_restarts={num_restarts}"
        )
    num_runs = num_target_classes * num_restarts
    # Checks `seed` also where it is unused.
    seeds = core.restart_seeds(seed, num_runs) if seed is not None else None

    clean_logits = core.check_logits(logits_fn(images), _WHY_CLASS_LOGITS)
    num_classes = clean_logits.shape[1]
    if num_classes is not None and num_target_classes >= num_classes:
        raise ValueError(
            "`num_target_classes` must be smaller than the number of classes "
            f"K = {num_classes} (the targets are the classes ranked 2 … "
            f"num_target_classes + 1 by their clean logit). Received: "
            f"num_target_classes={num_target_classes}"
        )
    logging.vlog(
        1,
        "fab_targeted: epsilon=%g num_steps=%d num_target_classes=%d "
        "num_restarts=%d alpha_max=%g eta=%g beta=%g",
        epsilon,
        num_steps,
        num_target_classes,
        num_restarts,
        alpha_max,
        eta,
        beta,
    )
    clean_misclassified = core.misclassified(clean_logits, labels)
    ranked = tf.math.top_k(clean_logits, k=num_target_classes + 1).indices

    def run_body(i, best_x, best_norm):
        target_labels = tf.gather(ranked, i // num_restarts + 1, axis=1)
        if num_restarts > 1:
            random_start = _random_start(images, epsilon, tf.gather(seeds, i))
            start = tf.where(tf.equal(i % num_restarts, 0), images, random_start)
        else:
            start = images
        x, norm = _single_run(
            logits_fn, images, labels, target_labels, start, clean_misclassified, **run_arguments
        )
        closer = norm < best_norm
        return core.select_per_sample(closer, x, best_x), tf.where(closer, norm, best_norm)

    # A rolled loop even under XLA (unlike `core.repeat`): a run is itself a
    # long loop, so unrolling the runs would only multiply the compile time.
    _, best_x, best_norm = tf.while_loop(
        lambda i, *_: i < num_runs,
        lambda i, *values: (i + 1,) + run_body(i, *values),
        (tf.constant(0, tf.int32), images, _initial_norm(clean_misclassified)),
        maximum_iterations=num_runs,
    )
    x_adv = core.select_per_sample(best_norm <= epsilon, best_x, images)
    # The last projection guards the bounds of the returned tensor.
    return tf.stop_gradient(core.project_linf(x_adv, images, epsilon))


# === Parts of a run ===


def _single_run(
    logits_fn: core.LogitsFn,
    images: tf.Tensor,
    labels: tf.Tensor,
    target_labels: tf.Tensor,
    start: tf.Tensor,
    clean_misclassified: tf.Tensor,
    *,
    num_steps: int,
    alpha_max: float,
    eta: float,
    beta: float,
) -> Tuple[tf.Tensor, tf.Tensor]:
    """`num_steps` FAB steps from `start`; returns (best point, its norm)."""
    batch = tf.shape(images)[0]
    flat_images = tf.reshape(images, [batch, -1])

    def boundary_gap(x: tf.Tensor) -> tf.Tensor:
        logits = tf.cast(core.check_logits(logits_fn(x), _WHY_CLASS_LOGITS), tf.float32)
        target = tf.gather(logits, target_labels, axis=1, batch_dims=1)
        true = tf.gather(logits, labels, axis=1, batch_dims=1)
        return target - true

    def body(i, x, best_x, best_norm):
        del i  # unused
        grad, gap = core.input_gradient(boundary_gap, x)
        w = tf.reshape(grad, [batch, -1])
        flat_x = tf.reshape(x, [batch, -1])
        b = -gap + tf.reduce_sum(w * flat_x, axis=1)
        # Both projections in one call (one sort), as in the reference.
        d = projection_linf(
            tf.concat([flat_x, flat_images], 0),
            tf.concat([w, w], 0),
            tf.concat([b, b], 0),
        )
        norms = tf.maximum(tf.reduce_max(tf.abs(d), axis=1), _MIN_PROJECTION_NORM)
        d_x = tf.reshape(d[:batch], tf.shape(x))
        d_clean = tf.reshape(d[batch:], tf.shape(x))
        a_x, a_clean = norms[:batch], norms[batch:]
        alpha = core.per_sample(tf.clip_by_value(a_x / (a_x + a_clean), 0.0, alpha_max))
        x = tf.clip_by_value(
            (x + eta * d_x) * (1.0 - alpha) + (images + eta * d_clean) * alpha, 0.0, 1.0
        )

        logits = core.check_logits(logits_fn(x), _WHY_CLASS_LOGITS)
        misclassified = core.misclassified(logits, labels)
        norm = tf.reduce_max(tf.abs(tf.reshape(x, [batch, -1]) - flat_images), axis=1)
        closer = tf.logical_and(misclassified, norm < best_norm)
        best_x = core.select_per_sample(closer, x, best_x)
        best_norm = tf.where(closer, norm, best_norm)
        x = core.select_per_sample(misclassified, images + beta * (x - images), x)
        return x, best_x, best_norm

    _, best_x, best_norm = core.repeat(
        body, num_steps, (start, images, _initial_norm(clean_misclassified))
    )
    return best_x, best_norm


def _random_start(images: tf.Tensor, epsilon: float, seed: tf.Tensor) -> tf.Tensor:
    """x₀ + (ε/2)·u/‖u‖∞ with u uniform in [−1, 1)^D per sample, clipped to [0, 1].

    The reference's random start for restarts > 0; u is built from raw Philox
    bits (24 per pixel), so eager, graph and XLA runs agree.
    """
    bits = tf.random.stateless_uniform(
        tf.shape(images), seed=seed, minval=None, maxval=None, dtype=tf.uint32,
        alg=core.RNG_ALG,
    )
    unit = tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32)
    u = unit * (2.0 / (1 << 24)) - 1.0  # exact: multiples of 2^-23 in [−1, 1)
    scale = tf.reduce_max(tf.abs(u), axis=[1, 2, 3], keepdims=True)
    u = tf.math.divide_no_nan(u, scale)
    return tf.clip_by_value(images + (0.5 * epsilon) * u, 0.0, 1.0)


def _initial_norm(clean_misclassified: tf.Tensor) -> tf.Tensor:
    """[N] float32: 0 where the clean image is misclassified, else +inf."""
    inf = tf.constant(math.inf, tf.float32)
    return tf.where(clean_misclassified, tf.constant(0.0, tf.float32), inf)




# === Argument checks ===


def _check_run_arguments(num_steps, alpha_max, eta, beta) -> dict:
    """Checks the arguments of one FAB run; returns them as `_single_run` keywords."""
    core.check_int("num_steps", num_steps)
    core.check_unit_interval("alpha_max", alpha_max)
    core.check_unit_interval("beta", beta)
    if _not_real(eta) or not math.isfinite(eta) or eta < 1.0:
        raise ValueError(
            f"`eta` must be a finite number >= 1 (the overshoot). Received: eta={eta!r}"
        )
    return {"num_steps": num_steps, "alpha_max": alpha_max, "eta": eta, "beta": beta}


def _not_real(value) -> bool:
    return isinstance(value, bool) or not isinstance(value, numbers.Real)
