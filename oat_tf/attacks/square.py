"""The L∞ Square attack: a gradient-free random search on the margin loss.

Square attack (Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a
query-efficient black-box adversarial attack via random search", ECCV 2020),
Algorithm 1 with its L∞ update, following the authors' implementation. It
reaches the model only through the logits that `logits_fn` returns and never
asks for a gradient, so it is the evaluation's check for gradient masking: a
defence whose PGD accuracy is far below its Square accuracy is fine; one whose
Square accuracy is below its PGD accuracy masks gradients.

The attack is assembled from parts, in the manner of `oat_tf.attacks.pgd`:

* Loss: `margin_loss`, `z_y − max_{i≠y} z_i` per sample; the search
  minimises it and a sample whose margin is negative is misclassified.
* Initialiser: `vertical_stripes` sets δ to ±ε per image column and channel
  (one random sign each, constant along the column), clipped to [0, 1].
* Schedule: `square_fraction` gives p_i, the fraction of pixels a square
  covers at iteration i (p_init halved at iterations 10, 50, 200, 500, 1000,
  2000, 4000, 6000 and 8000 of 10,000, rescaled to `num_queries`), and
  `square_side` the side `h_i = max(round(sqrt(p_i·H·W)), 1)`.
* Proposal: `square_proposal` picks, per sample, a random h_i × h_i window
  and a random sign per channel, and sets δ = ±ε in the window (the ±2ε step
  of the paper followed by the projection onto the ε-ball). As in the
  authors' code, a sign vector that would leave the image unchanged is never
  proposed.
* Acceptance: per sample, the proposal replaces the current point if its
  margin is strictly lower. Samples with a negative margin stop changing.

Samples that the model already misclassifies on the clean images are
returned unchanged (the reference attacks only correctly classified points).
Every proposal is a point of the ε-ball intersected with [0, 1], so the
result always lies in [0, 1] and within ε of the images.

The search is batched: one proposal per sample and iteration, with the
window side shared by the batch and the per-sample windows drawn as masks
from `tf.range` comparisons, so shapes stay static. Randomness comes from an
explicit stateless seed: the stripes use `seed` itself and iteration i
(0-based) uses `tf.random.experimental.stateless_fold_in(seed, i + 1)`. The
iterations run in one `tf.while_loop` (never unrolled, also not under XLA)
that stops early once every sample is misclassified, so the attack works
eagerly, inside a `tf.function` and under `jit_compile=True`.

Queries: `num_queries` counts the stripes and the `num_queries − 1`
iterations, as in the reference; one more call of `logits_fn` on the clean
images finds the misclassified samples.

Differences from the reference code: a window may sit anywhere inside the
image (the reference draws its corner with `randint(0, h − s)` and so never
covers the last row and column), its side is capped at min(H, W) rather than
H − 1, and a sample keeps being attacked while its margin is exactly 0 (the
reference stops at margin <= 0).

Example:

```python
from oat_tf.attacks import square

logits_fn = lambda x: model({"image": x, "lambda": lam}, training=False)
x_adv = square.square_linf(
    logits_fn, images, labels, epsilon=8 / 255, num_queries=1000, seed=[0, 0])
```
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple

import tensorflow as tf
from absl import logging

from oat_tf.attacks import core


# The iterations of the reference schedule (of 10,000) after which p halves.
P_SCHEDULE_BOUNDARIES = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
# The reference's schedule is written for this many queries.
_REFERENCE_QUERIES = 10000
# Random integers are built from the top 24 of 32 Philox bits (see
# `core.linf_random_start`), so eager, graph and XLA runs draw the same values.
_RANDOM_BITS = 24


# === Loss ===


def margin_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Per-sample margin `z_y − max_{i≠y} z_i`, in float32.

    Negative exactly when some other class has a larger logit than the true
    class, i.e. when the sample is misclassified.

    Args:
        logits: tf.Tensor of shape [N, K] with K >= 2, class scores (any float
            dtype; computed in float32).
        labels: tf.Tensor of shape [N], integer class ids in [0, K).

    Returns:
        tf.Tensor of shape [N] and dtype float32.
    """
    shape = core.check_logits(logits, "the margin loss needs them").shape
    num_classes = shape[-1]
    if num_classes is not None and num_classes < 2:
        raise ValueError(
            "`logits` must have at least 2 classes for a margin. Received: "
            f"logits with shape {shape}"
        )
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    true_logit = tf.gather(logits, labels, axis=1, batch_dims=1)
    classes = tf.range(tf.shape(logits)[1])
    is_true = tf.equal(classes[tf.newaxis, :], labels[:, tf.newaxis])
    other = tf.where(is_true, tf.constant(-math.inf, tf.float32), logits)
    return true_logit - tf.reduce_max(other, axis=1)


# === Initialiser ===


def vertical_stripes(images: tf.Tensor, epsilon: float, seed: core.Seed) -> tf.Tensor:
    """The Square attack's start: δ = ±ε per column and channel, clipped.

    Args:
        images: tf.Tensor of shape [N, H, W, C], float32 images in [0, 1].
        epsilon: float, the L∞ radius.
        seed: shape [2] integer tensor or pair of ints, the stateless seed.

    Returns:
        tf.Tensor like `images`: `clip(images + ε·s, 0, 1)` with a random sign
        s of shape [N, 1, W, C].
    """
    shape = tf.shape(images)
    bits = _random_bits(tf.stack([shape[0], 1, shape[2], shape[3]]), seed)
    return tf.clip_by_value(images + epsilon * _sign_of_bit(bits), 0.0, 1.0)


# === Schedule ===


def square_fraction(p_init: float, iteration: tf.Tensor, num_queries: int) -> tf.Tensor:
    """p_i, the fraction of the image that the square covers at iteration i.

    The reference's piecewise constant schedule for 10,000 queries, applied
    to `iteration / num_queries · 10000`: p_init up to 10, halved after each
    of `P_SCHEDULE_BOUNDARIES`.

    Args:
        p_init: float in (0, 1], the initial fraction.
        iteration: int or integer tensor of any shape, 0-based iterations.
        num_queries: int >= 1, the query budget the schedule is spread over.

    Returns:
        float64 tensor shaped like `iteration`, `p_init / 2**k`.
    """
    scaled = tf.floor(
        tf.cast(iteration, tf.float64) / float(num_queries) * _REFERENCE_QUERIES
    )
    boundaries = tf.constant(P_SCHEDULE_BOUNDARIES, tf.float64)
    halvings = tf.reduce_sum(
        tf.cast(scaled[..., tf.newaxis] > boundaries, tf.float64), axis=-1
    )
    return p_init * tf.pow(tf.constant(0.5, tf.float64), halvings)


def square_side(fraction: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """The square's side `clip(round(sqrt(p·H·W)), 1, min(H, W))`.

    Args:
        fraction: scalar float tensor p, from `square_fraction`.
        height: scalar integer tensor H.
        width: scalar integer tensor W.

    Returns:
        Scalar int32 tensor. `tf.round` rounds halves to even, like Python's
        `round` in the reference.
    """
    area = tf.cast(height, tf.float64) * tf.cast(width, tf.float64)
    side = tf.cast(tf.round(tf.sqrt(tf.cast(fraction, tf.float64) * area)), tf.int32)
    return tf.clip_by_value(side, 1, tf.minimum(height, width))


# === Proposal ===


def square_proposal(
    images: tf.Tensor,
    x_best: tf.Tensor,
    epsilon: float,
    side: tf.Tensor,
    seed: core.Seed,
) -> tf.Tensor:
    """One L∞ Square proposal per sample: δ = ±ε per channel in a random window.

    For each sample, a `side × side` window at a uniform position (every
    position fully inside the image) and a uniform sign per channel; inside
    the window the proposal is `clip(images + ε·sign, 0, 1)`, outside it is
    `x_best`. If that would leave `x_best` unchanged (the window already holds
    those signs), the signs are replaced by a uniform choice among the other
    2^C − 1 sign vectors, which is exactly the distribution of the reference's
    resampling loop (for C > 24, only the first 24 channels are flipped).

    Args:
        images: tf.Tensor of shape [N, H, W, C], float32 clean images.
        x_best: tf.Tensor like `images`, the current points; each pixel is
            `clip(images ± ε, 0, 1)` (true of the stripes and of proposals).
        epsilon: float, the L∞ radius.
        side: scalar int32 tensor, the window side, in [1, min(H, W)].
        seed: shape [2] integer tensor or pair of ints, the stateless seed.

    Returns:
        tf.Tensor like `images`, the proposals.
    """
    shape = tf.shape(images)
    n, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    # Columns: window row, window column, sign flip, then one sign per channel.
    bits = _random_bits(tf.stack([n, 3 + channels]), seed)
    top = _uniform_int(bits[:, 0], height - side + 1)
    left = _uniform_int(bits[:, 1], width - side + 1)
    rows = tf.range(height)[tf.newaxis, :]
    cols = tf.range(width)[tf.newaxis, :]
    in_rows = (rows >= top[:, tf.newaxis]) & (rows < (top + side)[:, tf.newaxis])
    in_cols = (cols >= left[:, tf.newaxis]) & (cols < (left + side)[:, tf.newaxis])
    window = (in_rows[:, :, tf.newaxis] & in_cols[:, tf.newaxis, :])[..., tf.newaxis]

    def propose(signs: tf.Tensor) -> tf.Tensor:
        values = tf.clip_by_value(
            images + epsilon * signs[:, tf.newaxis, tf.newaxis, :], 0.0, 1.0
        )
        return tf.where(window, values, x_best)

    signs = _sign_of_bit(bits[:, 3:])
    candidate = propose(signs)
    unchanged = tf.reduce_all(tf.equal(candidate, x_best), axis=[1, 2, 3])
    # A uniform non-zero flip pattern r in [1, 2^C'), bit c flips channel c.
    flip_channels = tf.minimum(tf.cast(channels, tf.int64), _RANDOM_BITS)
    num_patterns = tf.bitwise.left_shift(tf.constant(1, tf.int64), flip_channels) - 1
    pattern = 1 + _uniform_int(bits[:, 2], num_patterns, dtype=tf.int64)
    shifts = tf.minimum(tf.cast(tf.range(channels), tf.int64), 62)
    flip = tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(pattern[:, tf.newaxis], shifts[tf.newaxis, :]), 1
    )
    flipped = signs * (1.0 - 2.0 * tf.cast(flip, tf.float32))
    signs = tf.where(unchanged[:, tf.newaxis], flipped, signs)
    return propose(signs)


# === Attack ===


def square_linf(
    logits_fn: core.LogitsFn,
    images: tf.Tensor,
    labels: tf.Tensor,
    *,
    epsilon: float,
    num_queries: int = 1000,
    p_init: float = 0.05,
    seed: Optional[core.Seed] = None,
) -> tf.Tensor:
    """Untargeted L∞ Square attack (Andriushchenko et al., 2020).

    Starts from `vertical_stripes` and runs `num_queries − 1` iterations of
    `square_proposal`, keeping per sample the proposal when it lowers the
    `margin_loss`; stops early once every sample is misclassified. Samples
    misclassified on the clean images are returned unchanged. Uses only the
    outputs of `logits_fn`, never a gradient.

    Args:
        logits_fn: callable mapping images [N, H, W, C] to logits [N, K]; it
            must run the model in inference mode.
        images: tf.Tensor of shape [N, H, W, C], float images in [0, 1].
        labels: tf.Tensor of shape [N], integer true class ids.
        epsilon: float >= 0, L∞ radius.
        num_queries: int >= 1, queries per sample: the stripes plus
            `num_queries − 1` iterations (plus one clean query).
        p_init: float in (0, 1], the initial fraction of pixels a square
            covers; the paper uses 0.05 for L∞.
        seed: shape [2] integer tensor or pair of ints, the stateless seed;
            required.

    Returns:
        tf.Tensor of shape [N, H, W, C], float32, without gradient: the
        adversarial images, in [0, 1] and within ε of `images`.
    """
    x_adv, _ = _square_search(
        logits_fn,
        images,
        labels,
        epsilon=epsilon,
        num_queries=num_queries,
        p_init=p_init,
        seed=seed,
        record_margins=False,
    )
    return x_adv


def _square_search(
    logits_fn: core.LogitsFn,
    images: tf.Tensor,
    labels: tf.Tensor,
    *,
    epsilon: float,
    num_queries: int,
    p_init: float,
    seed: Optional[core.Seed],
    record_margins: bool,
) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
    """The Square search; optionally records the margins of every iteration.

    With `record_margins`, the loop does not stop early and the second result
    is a [num_queries, N] float32 tensor: row 0 holds the margins of the
    starting points (stripes, or the clean images for misclassified samples),
    row i + 1 the margins of the kept points after iteration i. Otherwise the
    second result is None.
    """
    images, labels = core.check_inputs(images, labels, False, None)
    core.check_number("epsilon", epsilon)
    core.check_int("num_queries", num_queries)
    if (
        isinstance(p_init, bool)
        or not isinstance(p_init, numbers.Real)
        or not 0.0 < p_init <= 1.0
    ):
        raise ValueError(
            f"`p_init` must be a number in (0, 1]. Received: p_init={p_init!r}"
        )
    if seed is None:
        raise ValueError(
            "`seed` must be a shape [2] integer tensor or a pair of ints (the "
            "Square attack is random and randomness always takes an explicit "
            "seed). Received: seed=None"
        )
    seed = core.check_seed(seed)
    logging.vlog(
        1,
        "square_linf: epsilon=%g num_queries=%d p_init=%g",
        epsilon,
        num_queries,
        p_init,
    )

    def margin_of(x: tf.Tensor) -> tf.Tensor:
        return margin_loss(logits_fn(x), labels)

    clean_margin = margin_of(images)
    misclassified = clean_margin < 0.0
    x_best = tf.where(
        misclassified[:, tf.newaxis, tf.newaxis, tf.newaxis],
        images,
        vertical_stripes(images, epsilon, seed),
    )
    margin_best = tf.where(misclassified, clean_margin, margin_of(x_best))
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    num_iterations = num_queries - 1

    def body(i, x_best, margin_best, *history):
        side = square_side(square_fraction(p_init, i, num_queries), height, width)
        iteration_seed = tf.random.experimental.stateless_fold_in(
            seed, i + 1, alg=core.RNG_ALG
        )
        candidate = square_proposal(images, x_best, epsilon, side, iteration_seed)
        margin = margin_of(candidate)
        # A NaN margin is never accepted and a NaN-margin sample is inactive.
        better = (margin_best >= 0.0) & (margin < margin_best)
        keep = better[:, tf.newaxis, tf.newaxis, tf.newaxis]
        x_best = tf.where(keep, candidate, x_best)
        margin_best = tf.where(better, margin, margin_best)
        history = tuple(h.write(i + 1, margin_best) for h in history)
        return (i + 1, x_best, margin_best) + history

    def cond(i, x_best, margin_best, *history):
        del x_best, history
        if record_margins:
            return i < num_iterations
        return (i < num_iterations) & tf.reduce_any(margin_best >= 0.0)

    history = ()
    if record_margins:
        history = (
            tf.TensorArray(
                tf.float32, size=num_queries, element_shape=margin_best.shape
            ).write(0, margin_best),
        )
    if num_iterations > 0:
        outputs = tf.while_loop(
            cond,
            body,
            (tf.constant(0, tf.int32), x_best, margin_best) + history,
            maximum_iterations=num_iterations,
        )
        x_best, history = outputs[1], tuple(outputs[3:])
    margins = history[0].stack() if record_margins else None
    return core.finish(x_best, images, epsilon), margins


# === Random numbers ===


def _random_bits(shape: tf.Tensor, seed: core.Seed) -> tf.Tensor:
    """Raw Philox bits of `shape`, reduced to their top 24 bits, as int64."""
    bits = tf.random.stateless_uniform(
        shape,
        seed=seed,
        minval=None,
        maxval=None,
        dtype=tf.uint32,
        alg=core.RNG_ALG,
    )
    bits = tf.bitwise.right_shift(bits, tf.constant(32 - _RANDOM_BITS, tf.uint32))
    return tf.cast(bits, tf.int64)


def _uniform_int(bits: tf.Tensor, maxval: tf.Tensor, dtype=tf.int32) -> tf.Tensor:
    """Maps 24-bit `bits` to integers in [0, maxval) (maxval <= 2^24)."""
    scaled = tf.bitwise.right_shift(bits * tf.cast(maxval, tf.int64), _RANDOM_BITS)
    return tf.cast(scaled, dtype)


def _sign_of_bit(bits: tf.Tensor) -> tf.Tensor:
    """±1.0 (float32) from the lowest bit of each element of `bits`."""
    return 2.0 * tf.cast(tf.bitwise.bitwise_and(bits, 1), tf.float32) - 1.0
