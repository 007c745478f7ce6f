"""Tests for oat_tf.attacks.apgd: DLR loss and checkpoints against references,
bounds, a numpy reference of Algorithm 1, seeds, restarts, misclassified
samples, model state, λ closures, tf.function / XLA, strength against PGD-20
on a trained MNIST model, and errors."""

import decimal
import itertools
import math
import os
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from oat_tf.attacks import apgd
from oat_tf.attacks import core
from oat_tf.attacks import pgd
from tests import testing

EPS = 8.0 / 255.0
SHAPE = (4, 6, 6, 2)  # N, H, W, C
NUM_PIXELS = 6 * 6 * 2
NUM_CLASSES = 4


# === Helpers ===


def _images(seed=0, shape=SHAPE):
    return testing.images_with_extremes(shape, seed)


def _labels(n=SHAPE[0]):
    return np.arange(n, dtype=np.int32) % NUM_CLASSES


def _mlp_params(seed=2, hidden=16, w1_divisor=3.0):
    rng = np.random.default_rng(seed)
    w1 = (rng.normal(size=(NUM_PIXELS, hidden)) / w1_divisor).astype(np.float32)
    w2 = (rng.normal(size=(hidden, NUM_CLASSES)) * 2.0).astype(np.float32)
    return w1, w2


def _mlp_logits_fn(seed=2, hidden=16, w1_divisor=3.0):
    """A fixed random tanh MLP (non-linear, so the step size matters)."""
    w1, w2 = (tf.constant(p) for p in _mlp_params(seed, hidden, w1_divisor))
    return lambda x: tf.matmul(
        tf.tanh(tf.matmul(tf.reshape(x, [-1, NUM_PIXELS]), w1)), w2
    )


def _np_mlp_evaluate(x, label, w1, w2):
    """CE gradient, CE and logits of one image, in float64."""
    h = np.tanh(x.reshape(-1).astype(np.float64) @ w1)
    logits = h @ w2
    shifted = logits - logits.max()
    log_probs = shifted - np.log(np.exp(shifted).sum())
    probs = np.exp(log_probs)
    probs[label] -= 1.0
    grad = ((probs @ w2.T) * (1.0 - h**2)) @ w1.T
    return grad.reshape(x.shape), -log_probs[label], logits


def _paper_checkpoints(num_steps):
    """w_j = ⌈p_j·N⌉ from the recurrence of §3, in exact decimal arithmetic."""
    d = decimal.Decimal
    p = [d(0), d("0.22")]
    while p[-1] + max(p[-1] - p[-2] - d("0.03"), d("0.06")) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - d("0.03"), d("0.06")))
    ceiling = decimal.ROUND_CEILING
    return [int((pj * num_steps).to_integral_value(rounding=ceiling)) for pj in p]


# Near-ties. The attack evaluates the model on a batch, the reference below on
# one image at a time, and other CPUs (AVX2 or AVX-512 kernels, oneDNN on or
# off, thread counts) sum the products in yet other orders. On the points a
# run visits, `ReferenceTest.test_evaluations_agree_with_float64` checks that
# the batched and the single-image float32 loss, logits and gradient are
# within TIE_RTOL / 4 of the float64 closed form, relative to max(1, |loss|),
# max(1, max|logits|) and max|∇f| (measured: at most 3e-6, 2e-6 and 7e-6,
# i.e. tens of float32 ulps; the gradient loses most through 1 − tanh² of
# saturated units). Two float32 evaluations of one value then differ by at
# most TIE_RTOL / 2 and a difference of two values by at most TIE_RTOL, so a
# comparison whose margin in the reference exceeds TIE_RTOL (relative) comes
# out the same on every machine; smaller margins are near-ties. They are
# common: once the step size has been halved a few times, successive losses
# differ by a few ulps, and which one is larger is a matter of rounding.
TIE_RTOL = 5e-5
# Iterates. Along the same branches the attack and the reference compute the
# iterates with the same float32 operations from the same inputs (the model
# enters only through the branches and sign(∇f)), so they agree bit for bit;
# 1e-6 (8 ulps at 1.0) leaves room for a fused multiply-add. A wrong step,
# momentum, projection or step size moves an iterate by a sizeable fraction
# of the smallest step size, 2ε / 2^8 > 2e-4 in the runs below.
ITERATE_ATOL = 1e-6


def _may_exceed(a, b, same_point=False, scale=None):
    """[(a > b, flipped), ...]: the outcomes a float32 test `a > b` may have.

    `a` and `b` are the reference's evaluations, of magnitude `scale` (by
    default max(1, |a|, |b|)). The first entry is the reference's outcome; a
    near-tie (see TIE_RTOL) adds the opposite one, which another evaluation
    order may take (`flipped` True). The loss of one point has one value on a
    given machine, so a point never exceeds itself.
    """
    outcome = bool(a > b)
    scale = max(1.0, abs(a), abs(b)) if scale is None else scale
    if same_point or abs(a - b) > TIE_RTOL * scale:
        return [(outcome, False)]
    return [(outcome, False), (not outcome, True)]


def _may_be_misclassified(logits, label):
    """[(misclassified, flipped), ...] from one image's logits, as `_may_exceed`."""
    scale = max(1.0, np.abs(logits).max())
    return _may_exceed(np.delete(logits, label).max(), logits[label], scale=scale)


class _Branch(NamedTuple):
    """The state of one sample's run after a step, along one branch."""

    x: np.ndarray  # xᵏ⁺¹, or x_max after a restart from it
    x_prev: np.ndarray  # xᵏ
    eta: np.float32
    x_max: np.ndarray
    increases: int  # steps with f(xⁱ⁺¹) > f(xⁱ) since the last checkpoint
    improved: bool  # f_max grew since the last checkpoint
    halved: bool  # η was halved at the last checkpoint
    best_x: np.ndarray  # most adversarial point so far (with the clean image)
    best_misclassified: bool
    num_halved: int
    num_ties: int  # near-tie decisions on the way
    first_tie: int  # the first step with a near-tie decision (num_steps if none)
    halved_before_tie: int  # step-size halvings before it
    num_flips: int  # near-ties decided against the reference's own values

    def key(self):
        arrays = (self.x, self.x_prev, self.x_max, self.best_x)
        flags = (self.eta, self.increases, self.improved, self.halved,
                 self.best_misclassified)
        return tuple(a.tobytes() for a in arrays) + flags


def _np_apgd_branches(
    image, label, start, iterates, evaluate, epsilon, num_steps, rho=0.75, alpha=0.75
):
    """Algorithm 1 of Croce & Hein (2020) for one sample, in numpy, along
    every branch that near-ties allow, as far as it reproduces the attack.

    Each loss comparison ("did the loss increase?", "is it a new f_max?",
    "is it more adversarial?") and each misclassification test whose margin is
    a near-tie (`_may_exceed`) forks the run, and so does a gradient
    coordinate within TIE_RTOL·max|∇f| of 0 (its sign). A branch survives a
    step only if its new iterate is the attack's, within ITERATE_ATOL, so a
    fork lives until the next iterate tells the branches apart (a different
    count of increases at the next checkpoint, a different x_max after a
    restart from it); identical branches are merged. Condition 2 reads "f_max
    has not grown since the last checkpoint" as a flag set by the "new f_max"
    decisions, which is the same test for a non-decreasing f_max, so it forks
    only with them.

    Args:
        image, label: one clean image [H, W, C] and its label.
        start: x⁰ [H, W, C].
        iterates: [num_steps + 1, H, W, C], the points x⁰ … x^N at which the
            attack evaluated the loss of this sample.
        evaluate: (x, label) -> (CE gradient, CE, logits) of one image.
        epsilon, num_steps, rho, alpha: as for `apgd.apgd`.

    Returns:
        (branches, k): the branches alive after the last step and
        k = num_steps + 1, or ([], k) when no branch reproduces iterate x^k.
    """
    eps32 = np.float32(epsilon)
    checks = set(_paper_checkpoints(num_steps)[1:])
    cache = {}

    def ev(x):
        key = x.tobytes()
        if key not in cache:
            cache[key] = evaluate(x, label)
        return cache[key]

    def project(v):
        v = np.clip(v, image - eps32, image + eps32)
        return np.clip(v, 0, 1).astype(np.float32)

    def close(x, k):
        return np.abs(x - iterates[k]).max() <= ITERATE_ATOL

    def keep_more_adversarial(best_x, best_mis, x):
        """[(best_x, best_misclassified, ties, flips), ...] after candidate x."""
        _, loss, logits = ev(x)
        mis_options = _may_be_misclassified(logits, label)
        outcomes = []
        for mis, mis_flipped in mis_options:
            if mis != best_mis:
                better_options = [(mis, False)]
            else:
                better_options = _may_exceed(
                    loss, ev(best_x)[1], np.array_equal(x, best_x)
                )
            for better, better_flipped in better_options:
                outcomes.append((
                    *((x, mis) if better else (best_x, best_mis)),
                    (len(mis_options) > 1) + (len(better_options) > 1),
                    mis_flipped + better_flipped,
                ))
        return outcomes

    if not close(start, 0):
        return [], 0
    branches = []
    for clean_mis, flipped in _may_be_misclassified(ev(image)[2], label):
        for best_x, best_mis, ties, flips in keep_more_adversarial(
            image, clean_mis, start
        ):
            branches.append(_Branch(
                x=start, x_prev=start, eta=np.float32(2 * epsilon), x_max=start,
                increases=0, improved=False, halved=False, best_x=best_x,
                best_misclassified=best_mis, num_halved=0, num_ties=ties,
                first_tie=0 if ties else num_steps, halved_before_tie=0,
                num_flips=flips + flipped,
            ))
    last_check = 0
    for k in range(num_steps):
        a = np.float32(1.0 if k == 0 else alpha)
        merged = {}
        for b in branches:
            grad, loss, _ = ev(b.x)

            def step(sign):
                z = project(b.x + b.eta * sign)
                momentum = (np.float32(1) - a) * (b.x - b.x_prev)
                return project(b.x + a * (z - b.x) + momentum)

            sign = np.sign(grad).astype(np.float32)
            x_new = step(sign)
            # Near-zero gradient coordinates: every coordinate of the step only
            # depends on its own sign, so take each one's sign from the attack.
            near = np.abs(grad) <= TIE_RTOL * np.abs(grad).max()
            ties, flips = int(near.any()), 0
            for other in (-1.0, 0.0, 1.0):
                if not near.any():
                    break
                x_other = step(np.where(near, np.float32(other), sign))
                target = iterates[k + 1]
                take = (
                    near
                    & (np.abs(x_new - target) > ITERATE_ATOL)
                    & (np.abs(x_other - target) <= ITERATE_ATOL)
                )
                x_new, flips = np.where(take, x_other, x_new), flips + int(take.any())
            if not close(x_new, k + 1):
                continue
            loss_new, loss_max = ev(x_new)[1], ev(b.x_max)[1]
            increased = _may_exceed(loss_new, loss, np.array_equal(x_new, b.x))
            new_max = _may_exceed(loss_new, loss_max, np.array_equal(x_new, b.x_max))
            ties += (len(increased) > 1) + (len(new_max) > 1)
            adversarial = keep_more_adversarial(b.best_x, b.best_misclassified, x_new)
            for (inc, f1), (imp, f2), (best_x, best_mis, t3, f3) in itertools.product(
                increased, new_max, adversarial
            ):
                n = b._replace(
                    x=x_new, x_prev=b.x, increases=b.increases + inc,
                    improved=b.improved or imp, best_x=best_x,
                    best_misclassified=best_mis, num_ties=b.num_ties + ties + t3,
                    num_flips=b.num_flips + flips + f1 + f2 + f3,
                )
                if ties + t3 and b.first_tie == num_steps:
                    n = n._replace(first_tie=k)
                if imp:
                    n = n._replace(x_max=x_new)
                if k + 1 in checks:
                    condition_1 = n.increases < rho * (k + 1 - last_check)
                    condition_2 = not n.halved and not n.improved
                    halve = condition_1 or condition_2
                    n = n._replace(increases=0, improved=False, halved=halve)
                    if halve:
                        n = n._replace(
                            x=n.x_max, eta=n.eta / 2, num_halved=n.num_halved + 1,
                            halved_before_tie=(
                                n.halved_before_tie + (n.first_tie == num_steps)
                            ),
                        )
                old = merged.get(n.key())
                rank = (n.num_flips, n.num_ties)
                if old is None or rank < (old.num_flips, old.num_ties):
                    merged[n.key()] = n
        if k + 1 in checks:
            last_check = k + 1
        branches = list(merged.values())
        if not branches:
            return [], k + 1
    return branches, num_steps + 1


def _tf_oracle(logits_fn):
    """(image, label) -> (CE gradient, CE, logits) of one image, via TF."""

    def evaluate(image, label):
        x = tf.constant(image[np.newaxis])
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = logits_fn(x)
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=[label], logits=logits
            )
        grad = tape.gradient(loss, x).numpy()[0]
        return grad, float(loss.numpy()[0]), logits.numpy()[0]

    return evaluate


def _recording(logits_fn):
    """(logits_fn, calls): the same model, recording every batch it is given.

    Eagerly only: each call appends its input, as numpy, to `calls`.
    """
    calls = []

    def recording_fn(x):
        calls.append(np.array(x))
        return logits_fn(x)

    return recording_fn, calls


def _np_dlr(logits, labels):
    logits = logits.astype(np.float64)
    ordered = np.sort(logits, axis=1)[:, ::-1]
    rows = np.arange(len(logits))
    true = logits[rows, labels]
    others = logits.copy()
    others[rows, labels] = -np.inf
    return -(true - others.max(axis=1)) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


def _ce(logits_fn, x, labels):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=logits_fn(tf.constant(x))
    ).numpy()


def _run(logits_fn=None, images=None, labels=None, **kwargs):
    kwargs = {"epsilon": EPS, "num_steps": 6, "seed": [3, 4], **kwargs}
    return apgd.apgd(
        logits_fn or _mlp_logits_fn(),
        _images() if images is None else images,
        _labels() if labels is None else labels,
        **kwargs,
    )


# === Tests ===


class DlrLossTest(parameterized.TestCase):
    def test_matches_numpy(self):
        rng = np.random.default_rng(0)
        logits = rng.normal(size=(8, 5)).astype(np.float32) * 3
        labels = rng.integers(0, 5, size=8).astype(np.int32)
        labels[0] = np.argmax(logits[0])  # one correctly classified sample
        labels[1] = np.argmin(logits[1])
        expected = _np_dlr(logits, labels)
        self.assertGreater(expected.max(), 0)
        self.assertLess(expected.min(), 0)
        np.testing.assert_allclose(
            apgd.dlr_loss(logits, labels).numpy(), expected, rtol=1e-5, atol=1e-6
        )

    def test_invariant_to_shift_and_scale(self):
        rng = np.random.default_rng(1)
        logits = rng.normal(size=(6, 4)).astype(np.float32)
        labels = np.arange(6, dtype=np.int32) % 4
        np.testing.assert_allclose(
            apgd.dlr_loss(3.0 * logits + 5.0, labels).numpy(),
            apgd.dlr_loss(logits, labels).numpy(),
            rtol=1e-4,
        )

    def test_rejects_fewer_than_three_classes(self):
        with self.assertRaisesRegex(ValueError, r"`logits` must have at least 3 classes"):
            apgd.dlr_loss(np.zeros((2, 2), np.float32), np.zeros((2,), np.int32))


class CheckpointTest(parameterized.TestCase):
    def test_paper_schedule_for_100_steps(self):
        expected = _paper_checkpoints(100)
        self.assertEqual(expected, [0, 22, 41, 57, 70, 80, 87, 93, 99])
        self.assertEqual(apgd.checkpoints(100), expected)

    @parameterized.parameters(1, 5, 7, 20, 33, 250, 1000)
    def test_other_lengths(self, num_steps):
        points = apgd.checkpoints(num_steps)
        self.assertEqual(points, sorted(set(_paper_checkpoints(num_steps))))
        self.assertEqual(points[0], 0)
        self.assertLessEqual(points[-1], num_steps)
        self.assertEqual(points[1], math.ceil(0.22 * num_steps - 1e-9))


class BoundsTest(parameterized.TestCase):
    @parameterized.product(loss=("ce", "dlr"), num_restarts=(1, 2))
    def test_within_epsilon_and_unit_interval(self, loss, num_restarts):
        images = _images()
        x_adv = _run(images=images, loss=loss, num_restarts=num_restarts).numpy()
        self.assertEqual(x_adv.dtype, np.float32)
        self.assertLessEqual(np.abs(x_adv - images).max(), EPS + 1e-7)
        self.assertGreaterEqual(x_adv.min(), 0.0)
        self.assertLessEqual(x_adv.max(), 1.0)
        self.assertGreater(np.abs(x_adv - images).max(), EPS / 2)

    def test_output_carries_no_gradient(self):
        images = tf.constant(_images())
        with tf.GradientTape() as tape:
            tape.watch(images)
            x_adv = _run(images=images)
        self.assertIsNone(tape.gradient(tf.reduce_sum(x_adv), images))


class ReferenceTest(parameterized.TestCase):
    # The reference runs use a steeper first layer than `_mlp_logits_fn`'s
    # default (w1 ~ N(0, 1) instead of N(0, 1/9)): its tanh units saturate
    # within the ε-ball, so along many coordinates the loss peaks inside the
    # ball and the iterates do not all settle in a corner of it. There the step
    # size and the restarts from x_max move the iterates, so a wrong halving
    # rule shows in them; with the gentle default every run ends in a corner,
    # where the step size no longer matters, and e.g. an attack without
    # condition 2 passed the test.
    REFERENCE_MODEL = dict(w1_divisor=1.0)

    @parameterized.parameters((12, EPS, 0.75), (25, 2 * EPS, 0.75), (25, EPS, 0.0))
    def test_matches_numpy_algorithm_1(self, num_steps, epsilon, rho):
        # With rho = 0 only condition 2 can halve the step size.
        # Step by step, not only the returned points: the attack runs eagerly,
        # so a recording logits_fn sees the points it evaluates (the clean
        # images, then x⁰ … x^N, as the module docstring states). Each of them
        # must be the iterate of Algorithm 1 along a branch that near-ties
        # allow (`_np_apgd_branches`), and the returned point the most
        # adversarial point of such a branch. Comparing the returned points
        # alone fails on some CPUs: a comparison decided by rounding sends a
        # sample down another, equally valid, path.
        # The numpy algorithm asks TF for the loss and gradient of one image at
        # a time (a float32 evaluation like the attack's, checked against the
        # closed form by `test_evaluations_agree_with_float64`).
        images, labels = _images(5, (6,) + SHAPE[1:]), _labels(6)
        logits_fn, seed = _mlp_logits_fn(**self.REFERENCE_MODEL), [8, 9]
        recording_fn, calls = _recording(logits_fn)
        x_adv = apgd.apgd(
            recording_fn, images, labels, epsilon=epsilon, num_steps=num_steps,
            seed=seed, rho=rho,
        ).numpy()
        self.assertLen(calls, num_steps + 2)
        np.testing.assert_array_equal(calls[0], images)
        iterates = np.stack(calls[1:])
        start = core.linf_random_start(images, epsilon, seed).numpy()
        oracle = _tf_oracle(logits_fn)
        paths = []
        for n in range(len(images)):
            branches, k = _np_apgd_branches(
                images[n], labels[n], start[n], iterates[:, n], oracle, epsilon,
                num_steps, rho=rho,
            )
            self.assertNotEmpty(
                branches, f"sample {n}: no branch of Algorithm 1 reaches x^{k}"
            )
            returned = [
                b for b in branches
                if np.abs(b.best_x - x_adv[n]).max() <= ITERATE_ATOL
            ]
            self.assertNotEmpty(
                returned, f"sample {n}: the returned point is no branch's best"
            )
            paths.append(min(returned, key=lambda b: (b.num_flips, b.num_ties)))
        # Not vacuous: near-ties leave most of each run to the reference alone.
        # Up to its first near-tie a sample has one branch, so the attack must
        # take the reference's own; at least half of all the steps, and a step
        # size halving in at least half of the samples, come before it. (Both
        # follow from the reference's margins, not from the way the near-ties
        # went on this machine.)
        self.assertGreaterEqual(
            sum(p.first_tie for p in paths), len(images) * num_steps / 2
        )
        self.assertGreaterEqual(
            sum(p.halved_before_tie > 0 for p in paths), len(images) / 2
        )
        # Not vacuous: plain PGD with the same start ends elsewhere.
        x_pgd = pgd.pgd_linf(
            logits_fn, images, labels, epsilon=epsilon, step_size=epsilon / 4,
            num_steps=num_steps, seed=seed,
        ).numpy()
        self.assertGreater(np.abs(x_pgd - x_adv).max(), 1e-3)

    def test_evaluations_agree_with_float64(self):
        # Backs TIE_RTOL: on every point a reference run visits, the attack's
        # batched and the reference's single-image float32 evaluations are
        # each within TIE_RTOL / 4 of the float64 closed form.
        images, labels = _images(5, (6,) + SHAPE[1:]), _labels(6)
        logits_fn = _mlp_logits_fn(**self.REFERENCE_MODEL)
        w1, w2 = (p.astype(np.float64) for p in _mlp_params(**self.REFERENCE_MODEL))
        recording_fn, calls = _recording(logits_fn)
        apgd.apgd(
            recording_fn, images, labels, epsilon=2 * EPS, num_steps=25, seed=[8, 9]
        )
        oracle = _tf_oracle(logits_fn)
        bound = TIE_RTOL / 4
        for x in calls:
            batch = tf.constant(x)
            with tf.GradientTape() as tape:
                tape.watch(batch)
                logits = logits_fn(batch)
                loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=labels, logits=logits
                )
            batched = zip(tape.gradient(loss, batch).numpy(), loss.numpy(), logits.numpy())
            for image, label, batch_values in zip(x, labels, batched):
                grad64, loss64, logits64 = _np_mlp_evaluate(image, label, w1, w2)
                for grad, loss32, logits32 in (batch_values, oracle(image, label)):
                    scale = np.abs(grad64).max()
                    self.assertLessEqual(np.abs(grad - grad64).max(), bound * scale)
                    self.assertLessEqual(abs(loss32 - loss64), bound * max(1, loss64))
                    scale = max(1, np.abs(logits64).max())
                    self.assertLessEqual(np.abs(logits32 - logits64).max(), bound * scale)

    def test_increases_loss(self):
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()
        x_adv = _run(logits_fn, images, labels, num_steps=10).numpy()
        self.assertTrue(
            np.all(_ce(logits_fn, x_adv, labels) > _ce(logits_fn, images, labels))
        )
        # DLR is flat (exactly 1) while the label is the third largest logit,
        # so a sample can stay at its clean value; correct ones must not.
        x_dlr = _run(logits_fn, images, labels, num_steps=10, loss="dlr").numpy()
        adv = apgd.dlr_loss(logits_fn(x_dlr), labels).numpy()
        clean = apgd.dlr_loss(logits_fn(images), labels).numpy()
        correct = clean < 0
        self.assertTrue(np.any(correct))
        self.assertTrue(np.all(adv >= clean))
        self.assertTrue(np.all(adv[correct] > clean[correct]))


class SelectionTest(parameterized.TestCase):
    def _trap_logits_fn(self):
        # One-pixel images at 0.5, label 0. With t = x − 0.5: z0 = 0,
        # z1 = 0.01 − 10t², z2 = −0.01 − 100(0.01 − t²). The clean image
        # (t = 0) is misclassified (z1 > z0) with CE 0.87; at |t| = ε = 0.1
        # the CE is 1.07, its maximum, but the image is classified correctly.
        def logits_fn(x):
            t = tf.reshape(x, [-1]) - 0.5
            return tf.stack(
                [0.0 * t, 0.01 - 10.0 * t**2, -0.01 - 100.0 * (0.01 - t**2)], axis=1
            )

        return logits_fn

    def test_misclassified_sample_stays_misclassified(self):
        logits_fn = self._trap_logits_fn()
        images = np.full((16, 1, 1, 1), 0.5, np.float32)
        labels = np.zeros((16,), np.int32)
        self.assertTrue(np.all(np.argmax(logits_fn(images).numpy(), 1) != labels))
        x_adv = apgd.apgd(
            logits_fn, images, labels, epsilon=0.1, num_steps=10, seed=[0, 0]
        ).numpy()
        self.assertTrue(np.all(np.argmax(logits_fn(x_adv).numpy(), 1) != labels))
        # Not vacuous: the highest-loss point the run reaches is correct.
        edge = np.full_like(images, 0.6)
        self.assertTrue(np.all(np.argmax(logits_fn(edge).numpy(), 1) == labels))
        self.assertTrue(
            np.all(_ce(logits_fn, edge, labels) > _ce(logits_fn, x_adv, labels))
        )

    def test_more_restarts_never_worse(self):
        images, labels = _images(7, (8,) + SHAPE[1:]), _labels(8)
        logits_fn = _mlp_logits_fn(seed=4)

        def key(x):
            logits = logits_fn(tf.constant(x)).numpy()
            return np.argmax(logits, 1) != labels, _ce(logits_fn, x, labels)

        one = _run(logits_fn, images, labels, num_steps=4, epsilon=EPS / 2).numpy()
        three = _run(
            logits_fn, images, labels, num_steps=4, epsilon=EPS / 2, num_restarts=3
        ).numpy()
        (mis_one, loss_one), (mis_three, loss_three) = key(one), key(three)
        self.assertTrue(np.all(mis_three >= mis_one))
        same = mis_three == mis_one
        self.assertTrue(np.all(loss_three[same] >= loss_one[same] - 1e-6))
        self.assertGreater(np.abs(one - three).max(), 0)


class SeedTest(parameterized.TestCase):
    def test_same_seed_same_output_different_seed_different_output(self):
        # A wavy model (sin features), so that the start decides where the
        # run ends; on the smooth MLP every start climbs to the same corner.
        w = np.random.default_rng(3).normal(size=(NUM_PIXELS, NUM_CLASSES))
        w = tf.constant(w, tf.float32)
        logits_fn = lambda x: tf.matmul(
            tf.sin(60.0 * tf.reshape(x, [-1, NUM_PIXELS])), w
        )
        first = _run(logits_fn, seed=[1, 2]).numpy()
        np.testing.assert_array_equal(first, _run(logits_fn, seed=[1, 2]).numpy())
        np.testing.assert_array_equal(
            first, _run(logits_fn, seed=tf.constant([1, 2], tf.int64)).numpy()
        )
        other = _run(logits_fn, seed=[1, 3]).numpy()
        self.assertGreater(np.abs(first - other).max(), 1e-3)


class ModelTest(parameterized.TestCase):
    def test_attack_leaves_model_unchanged(self):
        keras.utils.set_random_seed(0)
        inputs = keras.Input(SHAPE[1:])
        x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dropout(0.5)(x)
        model = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES)(x))
        images = _images()
        model(images, training=True)
        before = testing.weights_by_path(model)
        outputs_before = model(images, training=False).numpy()

        x_adv = _run(lambda x: model(x, training=False), images, loss="dlr").numpy()

        self.assertGreater(np.abs(x_adv - images).max(), 0.0)
        testing.assert_weights_equal(before, testing.weights_by_path(model))
        np.testing.assert_array_equal(
            outputs_before, model(images, training=False).numpy()
        )

    def test_attack_uses_lambda_from_closure(self):
        # logits = A·x + λ·(B·x): λ changes the direction of the gradient.
        keras.utils.set_random_seed(1)
        image = keras.Input(SHAPE[1:], name="image")
        lam = keras.Input((1,), name="lambda")
        flat = keras.layers.Flatten()(image)
        a = keras.layers.Dense(NUM_CLASSES, name="a")(flat)
        b = keras.layers.Dense(NUM_CLASSES, name="b")(flat)
        logits = keras.layers.Add()([a, keras.layers.Multiply()([b, lam])])
        model = keras.Model({"image": image, "lambda": lam}, logits)

        def attack_at(value):
            lam_value = tf.fill([SHAPE[0], 1], value)
            return _run(
                lambda x: model({"image": x, "lambda": lam_value}, training=False)
            ).numpy()

        x0, x0_again, x5 = attack_at(0.0), attack_at(0.0), attack_at(5.0)
        np.testing.assert_array_equal(x0, x0_again)
        self.assertGreater(np.abs(x0 - x5).max(), 1e-3)


class CompileTest(parameterized.TestCase):
    @parameterized.product(
        loss=("ce", "dlr"), jit_compile=(False, True), num_restarts=(1, 2)
    )
    def test_tf_function_matches_eager(self, loss, jit_compile, num_restarts):
        images, labels = _images(), _labels()
        seed = tf.constant([21, 22], tf.int64)

        def attack(x, y, s):
            return _run(
                images=x, labels=y, seed=s, loss=loss, num_steps=5,
                num_restarts=num_restarts,
            )

        eager = attack(images, labels, seed).numpy()
        compiled = tf.function(attack, jit_compile=jit_compile)(images, labels, seed)
        np.testing.assert_allclose(compiled.numpy(), eager, rtol=0, atol=1e-6)
        self.assertGreater(np.abs(eager - images).max(), 0.0)

    def test_xla_while_loop_matches_eager(self):
        # More steps than core.MAX_UNROLLED_STEPS_UNDER_XLA: a loop under XLA.
        num_steps = core.MAX_UNROLLED_STEPS_UNDER_XLA + 5
        images, labels = _images(), _labels()
        attack = lambda x, y: _run(images=x, labels=y, num_steps=num_steps)
        compiled = tf.function(attack, jit_compile=True)(images, labels).numpy()
        eager = attack(images, labels).numpy()
        np.testing.assert_allclose(compiled, eager, rtol=0, atol=1e-6)

    def test_unknown_and_empty_batch(self):
        fn = tf.function(
            lambda x, y: _run(images=x, labels=y),
            input_signature=[
                tf.TensorSpec((None,) + SHAPE[1:], tf.float32),
                tf.TensorSpec((None,), tf.int32),
            ],
        )
        np.testing.assert_allclose(
            fn(_images(), _labels()).numpy(), _run().numpy(), rtol=0, atol=1e-6
        )
        empty = np.zeros((0,) + SHAPE[1:], np.float32)
        no_labels = np.zeros((0,), np.int32)
        self.assertEqual(fn(empty, no_labels).shape, (0,) + SHAPE[1:])
        self.assertEqual(
            _run(images=empty, labels=no_labels, num_restarts=2).shape, (0,) + SHAPE[1:]
        )


class StrengthTest(parameterized.TestCase):
    """APGD-CE against PGD-20 on a small MLP trained on 512 MNIST digits."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        path = os.path.join(testing.SHARED_DATA_DIR, "mnist.npz")
        cls.model = None
        if not os.path.exists(path):
            return
        with np.load(path, allow_pickle=False) as data:
            x_train = data["x_train"][:512].astype(np.float32) / 255.0
            y_train = data["y_train"][:512].astype(np.int32)
            cls.images = data["x_test"][:32].astype(np.float32) / 255.0
            cls.labels = data["y_test"][:32].astype(np.int32)
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ])
        model.compile(
            keras.optimizers.Adam(3e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x_train, y_train, batch_size=64, epochs=10, verbose=0)
        cls.model = model

    def test_at_least_as_strong_as_pgd_20(self):
        if self.model is None:
            self.skipTest("../shared/data/mnist.npz is absent")
        logits_fn = lambda x: self.model(x, training=False)
        images, labels, epsilon = self.images, self.labels, 0.08

        def accuracy_and_loss(x):
            logits = logits_fn(tf.constant(x)).numpy()
            accuracy = np.mean(np.argmax(logits, 1) == labels)
            return accuracy, _ce(logits_fn, x, labels).mean()

        clean_accuracy, _ = accuracy_and_loss(images)
        self.assertGreater(clean_accuracy, 0.8)  # the model learned something
        x_pgd = pgd.pgd_linf(
            logits_fn, images, labels, epsilon=epsilon, step_size=epsilon / 4,
            num_steps=20, seed=[0, 1],
        ).numpy()
        x_apgd = apgd.apgd(
            logits_fn, images, labels, epsilon=epsilon, num_steps=20, seed=[0, 1]
        ).numpy()
        pgd_accuracy, pgd_loss = accuracy_and_loss(x_pgd)
        apgd_accuracy, apgd_loss = accuracy_and_loss(x_apgd)
        self.assertLess(pgd_accuracy, clean_accuracy)  # ε is large enough to matter
        self.assertLessEqual(apgd_accuracy, pgd_accuracy)
        self.assertGreaterEqual(apgd_loss, pgd_loss)
        self.assertLessEqual(np.abs(x_apgd - images).max(), epsilon + 1e-6)


class ErrorTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("negative_epsilon", dict(epsilon=-0.1),
         r"`epsilon` must be .* Received: epsilon=-0.1"),
        ("zero_steps", dict(num_steps=0),
         r"`num_steps` must be an int >= 1. Received: num_steps=0"),
        ("float_steps", dict(num_steps=2.0), r"`num_steps` must be an int >= 1"),
        ("zero_restarts", dict(num_restarts=0),
         r"`num_restarts` must be .* Received: num_restarts=0"),
        ("bad_loss", dict(loss="cw"),
         r"`loss` must be one of \('ce', 'dlr'\). Received: loss='cw'"),
        ("no_seed", dict(seed=None), r"`seed` must be .* Received: seed=None"),
        ("bad_seed", dict(seed=[1, 2, 3]), r"`seed` must be a shape \[2\] integer"),
        ("rho", dict(rho=1.5), r"`rho` must be a number in \[0, 1\]. Received: rho=1.5"),
        ("alpha", dict(alpha=-0.1),
         r"`alpha` must be a number in \[0, 1\]. Received: alpha=-0.1"),
        ("rank3_images", dict(images=np.zeros((4, 6, 6), np.float32)),
         r"`images` must be a float tensor of shape \[N, H, W, C\]"),
        ("labels_length", dict(labels=np.zeros((3,), np.int32)),
         r"`labels` must be integer"),
    )
    def test_rejects(self, overrides, pattern):
        with self.assertRaisesRegex(ValueError, pattern):
            _run(**overrides)

    def test_rejects_bad_models(self):
        with self.assertRaisesRegex(ValueError, "does not depend on the images"):
            _run(lambda x: tf.zeros([tf.shape(x)[0], NUM_CLASSES]))
        with self.assertRaisesRegex(ValueError, r"`logits_fn` must return class logits"):
            _run(lambda x: {"exit_0": tf.reshape(x, [SHAPE[0], -1])})
        with self.assertRaisesRegex(ValueError, r"at least 3 classes"):
            _run(lambda x: tf.reshape(x, [SHAPE[0], -1])[:, :2], loss="dlr")
        with self.assertRaisesRegex(ValueError, r"`num_steps` must be an int >= 1"):
            apgd.checkpoints(0)
