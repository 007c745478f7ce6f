"""The parts every L∞ attack here is built from, and their argument checks.

In the manner of deepmind-research `adversarial_robustness/jax/attacks.py`, an
attack is assembled from:

* Initialiser: `linf_random_start` draws a uniform point of the ε-ball around
  the images from a stateless seed; `restart_seeds` gives restart r its seed
  (restart 0 `seed` itself, r ≥ 1 `stateless_fold_in(seed, r)`), so more
  restarts never do worse than one with the same seed.
* Step rule: `sign_step` (x + α·sign(∇)) and `momentum_sign_step`
  (g ← μ·g + ∇/‖∇‖₁, x + α·sign(g)).
* Projection: `project_linf` clips onto the ε-ball around the original images,
  then onto [0, 1]; `finish` projects once more and stops the gradient.
* Objective: `loss_objective` turns a per-sample loss of the logits into the
  per-sample objective an attack ascends; `checked_objective` checks a custom
  one; `input_gradient` differentiates it with respect to the images.
* Iterations: `repeat`, a `tf.while_loop` (unrolled under XLA up to
  `MAX_UNROLLED_STEPS_UNDER_XLA` steps, where CPU while loops are slow).

The `check_*` functions validate the arguments every attack shares (images,
labels, seeds, counts) and raise a ValueError naming the argument, what was
expected and what was received. Randomness is drawn from raw Philox bits
(`RNG_ALG`), so eager, graph and XLA runs give the same values for the same
seed.

Example:

```python
from oat_tf.attacks import core

start = core.linf_random_start(images, epsilon=0.3, seed=[0, 1])
grad, loss = core.input_gradient(core.loss_objective(logits_fn, loss_fn, labels, False), start)
x = core.project_linf(core.sign_step(start, grad, 0.01), images, 0.3)
```
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Optional, Sequence, Tuple, Union

import tensorflow as tf

from oat_tf.attacks import losses

# images [N, H, W, C] -> logits [N, K].
LogitsFn = Callable[[tf.Tensor], tf.Tensor]
# x [N, H, W, C] -> per-sample objective [N] that the attack ascends.
ObjectiveFn = Callable[[tf.Tensor], tf.Tensor]
# A stateless seed: a shape [2] integer tensor or a pair of ints.
Seed = Union[tf.Tensor, Sequence[int]]

# Philox is implemented by the TF kernels and by XLA; its raw bits agree
# between the two (the float conversion of `stateless_uniform` does not).
RNG_ALG = "philox"


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
        alg=RNG_ALG,
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
    seed = check_seed(seed)
    seeds = [seed]
    for r in range(1, num_restarts):
        folded = tf.random.experimental.stateless_fold_in(seed, r, alg=RNG_ALG)
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

# Power of two the attack objective is multiplied by before differentiation
# (`input_gradient`); see BENCHMARKS.md, "Mixed precision on CPU", for PGD-10 RA
# of a float16 network with and without it.
GRADIENT_LOSS_SCALE = 2.0**12


def input_gradient(
    objective_fn: ObjectiveFn, x: tf.Tensor
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Gradient of the summed per-sample objective with respect to `x`.

    Samples do not interact in inference mode, so row i of the gradient is the
    gradient of sample i's objective.

    The objective is multiplied by `GRADIENT_LOSS_SCALE` before it is
    differentiated and the gradient divided by it after, as loss scaling does
    in float16 training: a network computing in float16 would otherwise lose
    the small gradients of confidently classified images to underflow. The
    scale is a power of two, so under float32 and bfloat16 (float32's exponent
    range) the gradient is bit for bit the unscaled one. Under float16 an
    intermediate gradient above 65504 / 2^12 = 16 would overflow; on the
    float16 network of BENCHMARKS.md ("Mixed precision on CPU") PGD-10 with
    the scale gave the RA of float32 within 0.3 points.

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
    scale = GRADIENT_LOSS_SCALE
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        objective = objective_fn(x)
        total = tf.reduce_sum(objective) * scale
    grad = tape.gradient(total, x)
    if grad is None:
        raise ValueError(
            "The attack loss does not depend on the images: its gradient with "
            "respect to the input is None. `logits_fn` must compute the logits "
            "from its argument (e.g. `lambda x: model({'image': x, ...}, "
            "training=False)`)."
        )
    return tf.convert_to_tensor(grad) / scale, objective


def loss_objective(
    logits_fn: LogitsFn,
    loss_fn: losses.LossFn,
    labels: tf.Tensor,
    targeted: bool,
) -> ObjectiveFn:
    """Returns x -> the per-sample objective to ascend: the loss, or -loss if targeted.

    Args:
        logits_fn: callable mapping images [N, H, W, C] to the model's output.
        loss_fn: per-sample loss `(logits, labels) -> [N]`.
        labels: tf.Tensor of shape [N], the labels the loss is taken on.
        targeted: bool, descend the loss (of the target labels) instead.

    Returns:
        A callable x -> float32 objective of shape [N].
    """

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


def in_xla_context() -> bool:
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
    if in_xla_context() and num_iterations <= MAX_UNROLLED_STEPS_UNDER_XLA:
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


def misclassified(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """[N] bool: the top-scoring class is not the label.

    Args:
        logits: tf.Tensor [N, K].
        labels: int32 tf.Tensor [N].

    Returns:
        bool tf.Tensor [N].
    """
    return tf.not_equal(tf.argmax(logits, axis=1, output_type=tf.int32), labels)


def per_sample(values: tf.Tensor) -> tf.Tensor:
    """[N] -> [N, 1, 1, 1], to broadcast a per-sample value over images."""
    return values[:, tf.newaxis, tf.newaxis, tf.newaxis]


def select_per_sample(condition: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Per-sample `tf.where`: image i of `x` where `condition[i]`, else of `y`.

    Args:
        condition: bool tf.Tensor [N].
        x: tf.Tensor [N, H, W, C].
        y: tf.Tensor [N, H, W, C].

    Returns:
        tf.Tensor [N, H, W, C].
    """
    return tf.where(per_sample(condition), x, y)


def finish(x: tf.Tensor, images: tf.Tensor, epsilon: float) -> tf.Tensor:
    """Projects `x` a last time and stops its gradient: an attack's result.

    Args:
        x: tf.Tensor of shape [N, H, W, C], the final iterate.
        images: tf.Tensor like `x`, the clean images.
        epsilon: float, radius of the ball.

    Returns:
        tf.Tensor like `x`, without gradient, in [0, 1] and within ε of `images`.
    """
    # The last projection guards the bounds of the returned tensor.
    return tf.stop_gradient(project_linf(x, images, epsilon))


def checked_objective(objective_fn: ObjectiveFn) -> ObjectiveFn:
    """Wraps `objective_fn` to check its [N] shape and cast it to float32.

    Args:
        objective_fn: callable mapping x [N, H, W, C] to an objective [N].

    Returns:
        A callable x -> float32 objective of shape [N] that raises a
        ValueError when `objective_fn` returns another shape.
    """

    def objective(x: tf.Tensor) -> tf.Tensor:
        value = tf.convert_to_tensor(objective_fn(x))
        if value.shape.rank != 1:
            raise ValueError(
                "`objective_fn` must return one value per sample, shape [N]. "
                f"Received: objective.shape={value.shape}"
            )
        return tf.cast(value, tf.float32)

    return objective


# === Argument checks ===


def _is_real_between(value, low: float, high: float) -> bool:
    """Whether `value` is a finite real number (not a bool) in [low, high]."""
    return (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(value)
        and low <= value <= high
    )


def check_number(name: str, value: float) -> None:
    """Checks that `value` is a finite real number >= 0.

    Args:
        name: str, the argument's name for the error message.
        value: the value to check.

    Raises:
        ValueError: naming `name`, what was expected and what was received.
    """
    if not _is_real_between(value, 0.0, math.inf):
        raise ValueError(f"`{name}` must be a finite number >= 0. Received: {name}={value!r}")


def check_int(name: str, value: int) -> None:
    """Checks that `value` is an int >= 1 (not a bool); arguments as `check_number`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1. Received: {name}={value!r}")


def check_unit_interval(name: str, value: float) -> None:
    """Checks that `value` is a real number in [0, 1] (not a bool); arguments as `check_number`."""
    if not _is_real_between(value, 0.0, 1.0):
        raise ValueError(f"`{name}` must be a number in [0, 1]. Received: {name}={value!r}")


def check_logits(logits, why: str) -> tf.Tensor:
    """Checks that `logits_fn` returned class logits [N, K]; returns them as a tensor.

    Args:
        logits: the output of `logits_fn`.
        why: str, why the attack needs class logits, for the error message.

    Returns:
        tf.Tensor of shape [N, K].

    Raises:
        ValueError: the output is not a rank-2 tensor (e.g. a dict of exits).
    """
    shape = getattr(logits, "shape", None)  # None for e.g. a dict of exits.
    if shape is None or tf.TensorShape(shape).rank != 2:
        raise ValueError(
            f"`logits_fn` must return class logits of shape [N, K] ({why}). "
            f"Received: output of type {type(logits).__name__} with shape {shape}"
        )
    return tf.convert_to_tensor(logits)


def check_seed(seed: Seed) -> tf.Tensor:
    """Checks a stateless seed and returns it as a shape [2] int64 tensor.

    Args:
        seed: shape [2] integer tensor or pair of ints.

    Returns:
        tf.Tensor of shape [2] and dtype int64.

    Raises:
        ValueError: if `seed` is not a pair of integers.
    """
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


def check_labels(name: str, labels: tf.Tensor, images: tf.Tensor) -> tf.Tensor:
    """Checks integer class ids of shape [N] matching `images`; returns them as int32.

    Args:
        name: str, the argument's name for the error message.
        labels: tensor-like of shape [N].
        images: tf.Tensor of shape [N, H, W, C], the images they label.

    Returns:
        tf.Tensor of shape [N] and dtype int32.
    """
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


def check_images(images: tf.Tensor) -> tf.Tensor:
    """Validates `images` [N, H, W, C] (float); returns them in float32.

    Args:
        images: tensor-like of shape [N, H, W, C], float values in [0, 1].

    Returns:
        tf.Tensor of shape [N, H, W, C] and dtype float32.
    """
    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating or images.shape.rank != 4:
        raise ValueError(
            "`images` must be a float tensor of shape [N, H, W, C] with values "
            f"in [0, 1]. Received: images with dtype {images.dtype.name} and "
            f"shape {images.shape}"
        )
    return tf.cast(images, tf.float32)


def check_inputs(
    images: tf.Tensor,
    labels: tf.Tensor,
    targeted: bool,
    target_labels: Optional[tf.Tensor],
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Validates the inputs; returns float32 images and the labels to attack."""
    images = check_images(images)
    labels = check_labels("labels", labels, images)
    if targeted:
        if target_labels is None:
            raise ValueError(
                "`target_labels` must be given when `targeted=True`. "
                "Received: target_labels=None"
            )
        return images, check_labels("target_labels", target_labels, images)
    if target_labels is not None:
        raise ValueError(
            "`target_labels` must be None when `targeted=False` (pass "
            f"targeted=True to use them). Received: target_labels={target_labels!r}"
        )
    return images, labels
