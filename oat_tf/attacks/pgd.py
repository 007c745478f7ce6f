"""L∞ attacks for images in [0, 1]: PGD, FGSM and MI-FGSM.

Each attack is assembled from four parts, in the manner of deepmind-research
`adversarial_robustness/jax/attacks.py`:

* Initialiser: `linf_random_start` draws a uniform point of the ε-ball around
  the images from a stateless seed (PGD); FGSM and MI-FGSM start at the images.
* Step rule: `sign_step` (x + α·sign(∇), PGD and FGSM) and
  `momentum_sign_step` (g ← μ·g + ∇/‖∇‖₁, x + α·sign(g), MI-FGSM).
* Projection: `project_linf` clips onto the ε-ball around the original images,
  then onto [0, 1]; it runs after the start and after every step.
* Loss: a per-sample loss `loss_fn(logits, labels) -> [N]`, by default
  `oat_tf.attacks.losses.sparse_cross_entropy`. Untargeted attacks ascend the
  loss of the true labels; targeted attacks descend the loss of
  `target_labels`. `input_gradient` differentiates it with respect to the
  images and raises if the loss does not depend on them. `pgd_objective` and
  `fgsm_objective` take any per-sample objective `objective_fn(x) -> [N]`
  instead (the multi-exit attack forms in `oat_tf.attacks.multi_exit`).

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
`restart_seeds`), so more restarts never do worse than one with the same seed.
The random start is built from raw Philox bits, so eager, graph and XLA runs
give the same start for the same seed.

Example:

```python
from oat_tf import config
from oat_tf.attacks import pgd

logits_fn = lambda x: model({"image": x, "lambda": lam}, training=False)
x_adv = pgd.pgd_linf(
    logits_fn, images, labels,
    epsilon=8 / 255, step_size=2 / 255, num_steps=7, seed=[0, step])
x_fgsm = pgd.fgsm(logits_fn, images, labels, epsilon=8 / 255)
x_eval = pgd.run_attack(
    config.AttackConfig(name="pgd", num_steps=20), logits_fn, images, labels,
    seed=[1, 0])
```
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Optional, Sequence, Tuple, Union

import tensorflow as tf
from absl import logging

from oat_tf import config as config_lib
from oat_tf.attacks import losses

# images [N, H, W, C] -> logits [N, K].
LogitsFn = Callable[[tf.Tensor], tf.Tensor]
# x [N, H, W, C] -> per-sample objective [N] that the attack ascends.
ObjectiveFn = Callable[[tf.Tensor], tf.Tensor]
# A stateless seed: a shape [2] integer tensor or a pair of ints.
Seed = Union[tf.Tensor, Sequence[int]]

# Philox is implemented by the TF kernels and by XLA; its raw bits agree
# between the two (the float conversion of `stateless_uniform` does not).
_RNG_ALG = "philox"


# === Initialiser ===


def linf_random_start(images: tf.Tensor, epsilon: float, seed: Seed) -> tf.Tensor:
    """Draws a uniform point of the L∞ ε-ball around `images`, clipped to [0, 1].

    The noise is built from raw Philox bits (24 random bits per pixel), so the
    same seed gives the same start eagerly, in a graph and under XLA.

    Args:
        images: tf.Tensor of shape [N, H, W, C], float32 images in [0, 1].
        epsilon: float, radius of the ball.
        seed: shape [2] integer tensor or pair of ints, the stateless seed.

    Returns:
        tf.Tensor like `images`: `project_linf(images + U[-ε, ε), images, ε)`.
    """
    bits = tf.random.stateless_uniform(
        tf.shape(images),
        seed=seed,
        minval=None,
        maxval=None,
        dtype=tf.uint32,
        alg=_RNG_ALG,
    )
    # Top 24 bits -> exactly representable uniform values in [0, 1).
    unit = tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32)
    unit = unit * (1.0 / (1 << 24))
    noise = epsilon * (2.0 * unit - 1.0)
    return project_linf(images + noise, images, epsilon)


def restart_seeds(seed: Seed, num_restarts: int) -> tf.Tensor:
    """Returns the seeds of the PGD restarts, shape [num_restarts, 2], int64.

    Restart 0 uses `seed` itself, so one restart is the same run as the first
    of several; restart r ≥ 1 uses `stateless_fold_in(seed, r)`.

    Args:
        seed: shape [2] integer tensor or pair of ints.
        num_restarts: int, number of restarts (>= 1).

    Returns:
        tf.Tensor of shape [num_restarts, 2] and dtype int64.
    """
    seed = _check_seed(seed)
    seeds = [seed]
    for r in range(1, num_restarts):
        folded = tf.random.experimental.stateless_fold_in(seed, r, alg=_RNG_ALG)
        seeds.append(tf.cast(folded, tf.int64))
    return tf.stack(seeds)


# === Projection ===


def project_linf(x: tf.Tensor, images: tf.Tensor, epsilon: float) -> tf.Tensor:
    """Projects `x` onto the L∞ ε-ball around `images`, then onto [0, 1].

    Args:
        x: tf.Tensor of shape [N, H, W, C], the current iterate.
        images: tf.Tensor like `x`, the clean images (centre of the ball).
        epsilon: float, radius of the ball.

    Returns:
        tf.Tensor like `x`, in [0, 1] and within ε of `images` where the
        ball meets [0, 1] (always, for images in [0, 1]).
    """
    x = tf.clip_by_value(x, images - epsilon, images + epsilon)
    return tf.clip_by_value(x, 0.0, 1.0)


# === Step rules ===


def sign_step(x: tf.Tensor, grad: tf.Tensor, step_size: float) -> tf.Tensor:
    """One L∞ steepest-ascent step: `x + step_size * sign(grad)`.

    Args:
        x: tf.Tensor of shape [N, H, W, C], the current iterate.
        grad: tf.Tensor like `x`, gradient of the objective at `x`.
        step_size: float, the step α.

    Returns:
        tf.Tensor like `x` (not projected).
    """
    return x + step_size * tf.sign(grad)


def momentum_sign_step(
    x: tf.Tensor,
    grad: tf.Tensor,
    momentum: tf.Tensor,
    *,
    step_size: float,
    decay: float,
) -> Tuple[tf.Tensor, tf.Tensor]:
    """One MI-FGSM step (Dong et al., 2018).

    `g ← decay·g + grad / ‖grad‖₁` with a per-sample L1 norm (a zero gradient
    adds nothing), then `x + step_size·sign(g)`.

    Args:
        x: tf.Tensor of shape [N, H, W, C], the current iterate.
        grad: tf.Tensor like `x`, gradient of the objective at `x`.
        momentum: tf.Tensor like `x`, the accumulated direction g.
        step_size: float, the step α.
        decay: float, the momentum decay μ.

    Returns:
        Tuple `(x_next, momentum_next)` of tensors like `x` (`x_next` not
        projected).
    """
    l1 = tf.reduce_sum(tf.abs(grad), axis=[1, 2, 3], keepdims=True)
    momentum = decay * momentum + tf.math.divide_no_nan(grad, l1)
    return x + step_size * tf.sign(momentum), momentum


# === Loss and gradient ===


def input_gradient(
    objective_fn: ObjectiveFn, x: tf.Tensor
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Gradient of the summed per-sample objective with respect to `x`.

    Samples do not interact in inference mode, so row i of the gradient is the
    gradient of sample i's objective.

    Args:
        objective_fn: callable mapping x [N, H, W, C] to an objective [N].
        x: tf.Tensor of shape [N, H, W, C].

    Returns:
        Tuple `(grad, objective)`: the gradient, like `x`, and the objective
        at `x`, shape [N].

    Raises:
        ValueError: if the objective does not depend on `x` (the gradient is
            None), e.g. when `logits_fn` ignores its argument.
    """
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        objective = objective_fn(x)
        total = tf.reduce_sum(objective)
    grad = tape.gradient(total, x)
    if grad is None:
        raise ValueError(
            "The attack loss does not depend on the images: its gradient with "
            "respect to the input is None. `logits_fn` must compute the logits "
            "from its argument (e.g. `lambda x: model({'image': x, ...}, "
            "training=False)`)."
        )
    return tf.convert_to_tensor(grad), objective


def _make_objective(
    logits_fn: LogitsFn,
    loss_fn: losses.LossFn,
    labels: tf.Tensor,
    targeted: bool,
) -> ObjectiveFn:
    """Returns x -> per-sample objective to ascend (loss, or -loss if targeted)."""

    def objective(x: tf.Tensor) -> tf.Tensor:
        loss = loss_fn(logits_fn(x), labels)
        loss = tf.convert_to_tensor(loss)
        if loss.shape.rank != 1:
            raise ValueError(
                "`loss_fn` must return one loss per sample, shape [N]. "
                f"Received: loss.shape={loss.shape}"
            )
        loss = tf.cast(loss, tf.float32)
        return -loss if targeted else loss

    return objective


# === Iterations ===



# Under XLA on CPU a `tf.while_loop` around the model's gradient ran 5.6× slower
# than the same steps unrolled (SmallCNN, PGD-7, batch 128: 3.0 s vs 0.53 s);
# outside XLA the two are equally fast and the loop keeps the graph small.
MAX_UNROLLED_STEPS_UNDER_XLA = 50


def _in_xla_context() -> bool:
    """True while tracing a function compiled with `jit_compile=True`."""
    try:
        from tensorflow.python.ops import control_flow_util  # pylint: disable=g-direct-tensorflow-import
    except ImportError:  # pragma: no cover - private module moved
        return False
    if tf.executing_eagerly():
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def repeat(body, num_iterations: int, loop_vars: tuple) -> tuple:
    """Runs `loop_vars = body(i, *loop_vars)` for i in [0, num_iterations).

    A `tf.while_loop`, except under XLA with few iterations, where the steps
    are unrolled (see MAX_UNROLLED_STEPS_UNDER_XLA).

    Args:
        body: callable (i, *loop_vars) -> tuple of new loop_vars.
        num_iterations: int, static number of iterations.
        loop_vars: tuple of tensors.

    Returns:
        The final loop_vars.
    """
    if _in_xla_context() and num_iterations <= MAX_UNROLLED_STEPS_UNDER_XLA:
        for i in range(num_iterations):
            loop_vars = tuple(body(tf.constant(i, tf.int32), *loop_vars))
        return loop_vars
    outputs = tf.while_loop(
        lambda i, *_: i < num_iterations,
        lambda i, *values: (i + 1,) + tuple(body(i, *values)),
        (tf.constant(0, tf.int32),) + tuple(loop_vars),
        maximum_iterations=num_iterations,
    )
    return tuple(outputs[1:])


def _sign_ascent(
    objective_fn: ObjectiveFn,
    images: tf.Tensor,
    start: tf.Tensor,
    *,
    epsilon: float,
    step_size: float,
    num_steps: int,
) -> tf.Tensor:
    """`num_steps` projected sign steps from `start` (see `repeat`)."""

    def body(i, x):
        grad, _ = input_gradient(objective_fn, x)
        return (project_linf(sign_step(x, grad, step_size), images, epsilon),)

    (x,) = repeat(body, num_steps, (start,))
    return x


def _finish(x: tf.Tensor, images: tf.Tensor, epsilon: float) -> tf.Tensor:
    # The last projection guards the bounds of the returned tensor.
    return tf.stop_gradient(project_linf(x, images, epsilon))


# === Attacks ===


def pgd_linf(
    logits_fn: LogitsFn,
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
    seed: Optional[Seed] = None,
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
    images, attack_labels = _check_inputs(images, labels, targeted, target_labels)
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
    objective_fn = _make_objective(
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
    seed: Optional[Seed],
) -> Tuple[Optional[tf.Tensor], int]:
    """Checks PGD's arguments; returns the checked seed and the restarts to run.

    Without a random start every restart is the same run, so one is run (with
    a warning naming `caller`).
    """
    _check_number("epsilon", epsilon)
    _check_number("step_size", step_size)
    _check_int("num_steps", num_steps)
    _check_int("num_restarts", num_restarts)
    if random_start:
        if seed is None:
            raise ValueError(
                "`seed` must be a shape [2] integer tensor or a pair of ints when "
                "`random_start=True` (randomness always takes an explicit seed). "
                "Received: seed=None"
            )
        return _check_seed(seed), num_restarts
    if num_restarts > 1:
        logging.warning(
            "%s: num_restarts=%d without random_start gives identical runs; running one.",
            caller,
            num_restarts,
        )
    return seed, 1


def _pgd_ascent(
    objective_fn: ObjectiveFn,
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
        start = linf_random_start(images, epsilon, run_seed) if random_start else images
        return _sign_ascent(
            objective_fn,
            images,
            start,
            epsilon=epsilon,
            step_size=step_size,
            num_steps=num_steps,
        )

    if num_restarts == 1:
        return _finish(run(seed), images, epsilon)

    seeds = restart_seeds(seed, num_restarts)

    def restart_body(r, best_x, best_objective):
        x = run(tf.gather(seeds, r))
        objective = objective_fn(x)
        # Restart 0 always wins, so a NaN loss still returns a projected iterate.
        better = tf.logical_or(tf.equal(r, 0), objective > best_objective)
        best_x = tf.where(better[:, tf.newaxis, tf.newaxis, tf.newaxis], x, best_x)
        best_objective = tf.where(better, objective, best_objective)
        return best_x, best_objective

    neg_inf = tf.fill(tf.shape(images)[:1], tf.constant(-math.inf, tf.float32))
    x_adv, _ = repeat(restart_body, num_restarts, (images, neg_inf))
    return _finish(x_adv, images, epsilon)


def pgd_objective(
    objective_fn: ObjectiveFn,
    images: tf.Tensor,
    *,
    epsilon: float,
    step_size: float,
    num_steps: int,
    random_start: bool = True,
    num_restarts: int = 1,
    seed: Optional[Seed] = None,
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
    images = _check_images(images)
    seed, num_restarts = _check_ascent_arguments(
        "pgd_objective", epsilon, step_size, num_steps, num_restarts, random_start, seed
    )
    return _pgd_ascent(
        _checked_objective(objective_fn),
        images,
        epsilon=epsilon,
        step_size=step_size,
        num_steps=num_steps,
        random_start=random_start,
        num_restarts=num_restarts,
        seed=seed,
    )


def fgsm_objective(
    objective_fn: ObjectiveFn, images: tf.Tensor, *, epsilon: float
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
    images = _check_images(images)
    _check_number("epsilon", epsilon)
    grad, _ = input_gradient(_checked_objective(objective_fn), images)
    x_adv = project_linf(sign_step(images, grad, epsilon), images, epsilon)
    return _finish(x_adv, images, epsilon)


def _checked_objective(objective_fn: ObjectiveFn) -> ObjectiveFn:
    """Wraps `objective_fn` to check its [N] shape and cast it to float32."""

    def objective(x: tf.Tensor) -> tf.Tensor:
        value = tf.convert_to_tensor(objective_fn(x))
        if value.shape.rank != 1:
            raise ValueError(
                "`objective_fn` must return one value per sample, shape [N]. "
                f"Received: objective.shape={value.shape}"
            )
        return tf.cast(value, tf.float32)

    return objective


def fgsm(
    logits_fn: LogitsFn,
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
    images, attack_labels = _check_inputs(images, labels, targeted, target_labels)
    _check_number("epsilon", epsilon)
    logging.vlog(1, "fgsm: epsilon=%g targeted=%s", epsilon, targeted)
    objective_fn = _make_objective(
        logits_fn, loss_fn or losses.sparse_cross_entropy, attack_labels, targeted
    )
    grad, _ = input_gradient(objective_fn, images)
    x_adv = project_linf(sign_step(images, grad, epsilon), images, epsilon)
    return _finish(x_adv, images, epsilon)


def mi_fgsm(
    logits_fn: LogitsFn,
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
    images, attack_labels = _check_inputs(images, labels, targeted, target_labels)
    _check_number("epsilon", epsilon)
    _check_int("num_steps", num_steps)
    _check_number("decay", decay)
    if step_size is None:
        step_size = epsilon / num_steps
    _check_number("step_size", step_size)
    logging.vlog(
        1,
        "mi_fgsm: epsilon=%g num_steps=%d decay=%g step_size=%g targeted=%s",
        epsilon,
        num_steps,
        decay,
        step_size,
        targeted,
    )
    objective_fn = _make_objective(
        logits_fn, loss_fn or losses.sparse_cross_entropy, attack_labels, targeted
    )

    def body(i, x, momentum):
        grad, _ = input_gradient(objective_fn, x)
        x, momentum = momentum_sign_step(
            x, grad, momentum, step_size=step_size, decay=decay
        )
        return project_linf(x, images, epsilon), momentum

    x_adv, _ = repeat(body, num_steps, (images, tf.zeros_like(images)))
    return _finish(x_adv, images, epsilon)


def run_attack(
    config: config_lib.AttackConfig,
    logits_fn: LogitsFn,
    images: tf.Tensor,
    labels: tf.Tensor,
    *,
    seed: Optional[Seed] = None,
    target_labels: Optional[tf.Tensor] = None,
    loss_fn: Optional[losses.LossFn] = None,
) -> tf.Tensor:
    """Runs the attack that `config.name` names with the settings of `config`.

    "pgd" -> `pgd_linf` (all fields), "fgsm" -> `fgsm` (epsilon, targeted),
    "mi_fgsm" -> `mi_fgsm` (epsilon, num_steps, decay, targeted; a
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
    if config.name == "pgd":
        return pgd_linf(
            logits_fn,
            images,
            labels,
            epsilon=config.epsilon,
            step_size=config.step_size,
            num_steps=config.num_steps,
            random_start=config.random_start,
            num_restarts=config.num_restarts,
            targeted=config.targeted,
            target_labels=target_labels,
            seed=seed,
            loss_fn=loss_fn,
        )
    if config.name == "fgsm":
        return fgsm(
            logits_fn,
            images,
            labels,
            epsilon=config.epsilon,
            targeted=config.targeted,
            target_labels=target_labels,
            loss_fn=loss_fn,
        )
    if config.name == "mi_fgsm":
        return mi_fgsm(
            logits_fn,
            images,
            labels,
            epsilon=config.epsilon,
            num_steps=config.num_steps,
            decay=config.decay,
            step_size=config.step_size or None,
            targeted=config.targeted,
            target_labels=target_labels,
            loss_fn=loss_fn,
        )
    # Imported here: `apgd`, `fab` and `square` build on this module's parts.
    from oat_tf.attacks import apgd  # pylint: disable=import-outside-toplevel
    from oat_tf.attacks import fab  # pylint: disable=import-outside-toplevel
    from oat_tf.attacks import square  # pylint: disable=import-outside-toplevel

    if config.name in config_lib.RANKED_TARGET_ATTACKS:
        if target_labels is not None or loss_fn is not None:
            raise ValueError(
                "`target_labels` and `loss_fn` are not supported by APGD-T and FAB-T "
                f"(they choose their own targets and loss). Received: config={config!r}"
            )
        attack_fn = apgd.apgd_targeted if config.name == "apgd_t" else fab.fab_targeted
        return attack_fn(
            logits_fn,
            images,
            labels,
            epsilon=config.epsilon,
            num_steps=config.num_steps,
            num_target_classes=config.num_target_classes,
            num_restarts=config.num_restarts,
            seed=seed,
        )

    if config.name in ("apgd_ce", "apgd_dlr"):
        if target_labels is not None or loss_fn is not None:
            raise ValueError(
                "`target_labels` and `loss_fn` are not supported by APGD. "
                f"Received: config={config!r}"
            )
        return apgd.apgd(
            logits_fn,
            images,
            labels,
            epsilon=config.epsilon,
            num_steps=config.num_steps,
            loss=config.name[len("apgd_"):],
            num_restarts=config.num_restarts,
            seed=seed,
        )
    if config.name == "square":
        return square.square_linf(
            logits_fn,
            images,
            labels,
            epsilon=config.epsilon,
            num_queries=config.num_queries,
            p_init=config.p_init,
            seed=seed,
        )
    raise ValueError(
        f"`config.name` must be one of {config_lib.ATTACK_NAMES}. "
        f"Received: config.name={config.name!r}"
    )


# === Argument checks ===


def _check_number(name: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            f"`{name}` must be a finite number >= 0. Received: {name}={value!r}"
        )


def _check_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1. Received: {name}={value!r}")


def _check_seed(seed: Seed) -> tf.Tensor:
    try:
        tensor = tf.convert_to_tensor(seed)
    except (TypeError, ValueError):
        tensor = None
    if tensor is None or not tensor.dtype.is_integer or tensor.shape != (2,):
        raise ValueError(
            "`seed` must be a shape [2] integer tensor or a pair of ints. "
            f"Received: seed={seed!r}"
        )
    return tf.cast(tensor, tf.int64)


def _check_labels(name: str, labels: tf.Tensor, images: tf.Tensor) -> tf.Tensor:
    labels = tf.convert_to_tensor(labels)
    if (
        not labels.dtype.is_integer
        or labels.shape.rank != 1
        or not labels.shape.is_compatible_with(images.shape[:1])
    ):
        raise ValueError(
            f"`{name}` must be integer class ids of shape [N] matching "
            f"images.shape={images.shape}. Received: {name} with dtype "
            f"{labels.dtype.name} and shape {labels.shape}"
        )
    return tf.cast(labels, tf.int32)


def _check_images(images: tf.Tensor) -> tf.Tensor:
    """Validates `images` [N, H, W, C] (float); returns them in float32."""
    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating or images.shape.rank != 4:
        raise ValueError(
            "`images` must be a float tensor of shape [N, H, W, C] with values "
            f"in [0, 1]. Received: images with dtype {images.dtype.name} and "
            f"shape {images.shape}"
        )
    return tf.cast(images, tf.float32)


def _check_inputs(
    images: tf.Tensor,
    labels: tf.Tensor,
    targeted: bool,
    target_labels: Optional[tf.Tensor],
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Validates the inputs; returns float32 images and the labels to attack."""
    images = _check_images(images)
    labels = _check_labels("labels", labels, images)
    if targeted:
        if target_labels is None:
            raise ValueError(
                "`target_labels` must be given when `targeted=True`. "
                "Received: target_labels=None"
            )
        return images, _check_labels("target_labels", target_labels, images)
    if target_labels is not None:
        raise ValueError(
            "`target_labels` must be None when `targeted=False` (pass "
            f"targeted=True to use them). Received: target_labels={target_labels!r}"
        )
    return images, labels
