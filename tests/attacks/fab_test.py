"""Tests for oat_tf.attacks.fab: the L∞ box projection against a bisection
reference, FAB runs on linear models against the closed-form minimal L∞
distance and against the scalar FAB recursion, FAB-T's ε decisions and target
order, random restarts and seeds, tf.function / XLA, and errors."""

import math

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from oat_tf.attacks import fab
from tests import testing

NUM_CLASSES = 10
IMAGE_SHAPE = (4, 4, 1)
NUM_PIXELS = 16
ETA = 1.05  # the defaults of fab
BETA = 0.9
ALPHA_MAX = 0.1


# === NumPy references ===


def _np_box_projection(point, w, b):
    """min ‖d‖∞ s.t. w·(p + d) = b, p + d in [0, 1], by bisection, in float64.

    Returns (d, λ): λ = ‖d‖∞ of the optimum, +inf where the hyperplane cannot
    be reached inside the box (d then moves every coordinate with w_i ≠ 0 to
    its box limit towards the hyperplane).
    """
    point, w = point.astype(np.float64), w.astype(np.float64)
    needed = float(b) - w @ point
    direction = np.sign(w) * (1.0 if needed > 0 else -1.0)
    room = np.where(direction > 0, 1.0 - point, point)
    weight = np.where(direction != 0, np.abs(w), 0.0)

    def reach(lam):  # g(λ) = Σ|w_i|·min(λ, room_i), non-decreasing
        return np.sum(weight * np.minimum(lam, room))

    if needed == 0:
        return np.zeros_like(point), 0.0
    high = room[weight > 0].max() if np.any(weight > 0) else 0.0
    if reach(high) < abs(needed):
        return direction * room, math.inf
    low = 0.0
    for _ in range(100):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if reach(mid) < abs(needed) else (low, mid)
    return direction * np.minimum(high, room), high


def _np_distance(image, label, target, w_matrix, bias):
    """Minimal L∞ distance from `image` to {z_target ≥ z_label} ∩ [0, 1]^D.

    For logits z = x·W + c the region is the half-space w·x ≥ b with
    w = W_t − W_y, b = c_y − c_t. Returns (distance, bound): distance 0 if
    the image lies in it, +inf if it cannot be reached inside the box;
    bound says whether a box limit binds along FAB's overshoot (some
    coordinate that moves has less room than η·distance), i.e. whether the
    unconstrained recursion `_scalar_fab` does not describe the run.
    """
    w = w_matrix[:, target].astype(np.float64) - w_matrix[:, label]
    b = float(bias[label]) - float(bias[target])
    point = image.reshape(-1).astype(np.float64)
    if w @ point >= b:
        return 0.0, False
    d, lam = _np_box_projection(point, w, b)
    room = np.where(w > 0, 1.0 - point, point)[w != 0]
    return lam, bool(np.any(room < ETA * lam * (1 + 1e-3)))


def _scalar_fab(num_steps, start=0.0):
    """FAB on a linear boundary where no box limit binds, as a scalar.

    With x = x₀ + s·v (v: the minimal step from x₀ to the boundary, so s = 1
    on it) both projections are collinear with v: d₁ = (1 − s)·v, d₂ = v,
    α = min((1 − s)/(2 − s), α_max), s ← (s + η(1 − s))(1 − α) + η·α; where
    s > 1 (misclassified) the best s is kept and s ← β·s. Returns the best s.
    """
    s, best = start, math.inf
    for _ in range(num_steps):
        alpha = min(max((1 - s) / (2 - s), 0.0), ALPHA_MAX)
        s = (s + ETA * (1 - s)) * (1 - alpha) + ETA * alpha
        if s > 1:
            best, s = min(best, s), BETA * s
    return best


# === Models and data ===


def _linear_problem(seed=0, n=12):
    """A random linear 10-class model on 4×4×1 images and its exact distances.

    Half of the images have pixels at exactly 0 and 1 (box limits bind), the
    other half lie in [0.25, 0.75]. Returns (images, labels, logits_fn,
    distances [N, K] (nan at the label), bound [N, K]).
    """
    rng = np.random.default_rng(seed)
    w_matrix = rng.normal(size=(NUM_PIXELS, NUM_CLASSES)).astype(np.float32)
    bias = (0.5 * rng.normal(size=NUM_CLASSES)).astype(np.float32)
    images = rng.uniform(0.25, 0.75, size=(n,) + IMAGE_SHAPE).astype(np.float32)
    images[: n // 2] = testing.images_with_extremes((n // 2,) + IMAGE_SHAPE, seed)
    w_tf, b_tf = tf.constant(w_matrix), tf.constant(bias)

    def logits_fn(x):
        return tf.matmul(tf.reshape(x, [-1, NUM_PIXELS]), w_tf) + b_tf

    labels = np.argmax(logits_fn(images).numpy(), axis=1).astype(np.int32)
    distances = np.full((n, NUM_CLASSES), np.nan)
    bound = np.zeros((n, NUM_CLASSES), bool)
    for i in range(n):
        for t in range(NUM_CLASSES):
            if t != labels[i]:
                distances[i, t], bound[i, t] = _np_distance(
                    images[i], labels[i], t, w_matrix, bias
                )
    return images, labels, logits_fn, distances, bound


def _below(distance):
    """A lower bound on float32 norms of points ≥ `distance` (float64) away.

    The float32 model decides misclassification, and the norm is measured,
    to ~1e-7 absolute; 1e-5 relative plus 1e-6 absolute is ample and still
    far below FAB's 0.5 % overshoot.
    """
    return np.asarray(distance) * (1 - 1e-5) - 1e-6


def _norms(x, images):
    return np.abs(np.asarray(x) - images).reshape(len(images), -1).max(axis=1)


def _predictions(logits_fn, x):
    return np.argmax(logits_fn(tf.constant(x)).numpy(), axis=1)


def _graph(fn, jit_compile=False, input_signature=None):
    return tf.function(
        fn, jit_compile=jit_compile, autograph=False, input_signature=input_signature
    )


def _ranked_model():
    """Label 0 wins everywhere in reach except against class 7.

    Clean logits, largest first: class 0 (0), 3 (−0.1), 9 (−0.2), 1 (−0.3),
    7 (−0.35), then 2, 4, 5, 6, 8 (−0.5 … −0.9). All are constants except
    z₇ = Σᵢ(xᵢ − 0.5) − 0.35, so only class 7 (the 5th largest clean logit,
    i.e. the 4th target) can be reached: at L∞ distance 0.35/16 ≈ 0.022, by
    raising every pixel. The images have pixel sum 8, so the ranking is the
    same for every image.
    """
    constants = np.array([0, -0.3, -0.5, -0.1, -0.6, -0.7, -0.8, -0.35, -0.9, -0.2])
    constants = tf.constant(constants, tf.float32)
    is_seven = tf.one_hot(7, NUM_CLASSES)

    def logits_fn(x):
        flat = tf.reshape(x, [-1, NUM_PIXELS])
        reachable = tf.reduce_sum(flat - 0.5, axis=1, keepdims=True)
        return constants + reachable * is_seven

    noise = np.random.default_rng(5).uniform(-0.2, 0.2, size=(6, NUM_PIXELS))
    noise -= noise.mean(axis=1, keepdims=True)
    images = (0.5 + noise).reshape((6,) + IMAGE_SHAPE).astype(np.float32)
    return images, np.zeros((6,), np.int32), logits_fn


def _bowl_model():
    """Images at 0.5 where the input gradient is 0: FAB from x₀ cannot move.

    z₀ = 0, z₁ = 10·Σ(x − 0.5)² − 0.01, the rest −1; class 1 is reached at
    L∞ distance √(0.001/16) ≈ 0.0079, but only from a start off x₀.
    """

    def logits_fn(x):
        flat = tf.reshape(x, [-1, NUM_PIXELS])
        bowl = 10.0 * tf.reduce_sum((flat - 0.5) ** 2, axis=1, keepdims=True) - 0.01
        rest = -tf.ones_like(flat[:, : NUM_CLASSES - 2])
        return tf.concat([tf.zeros_like(bowl), bowl, rest], axis=1)

    images = np.full((6,) + IMAGE_SHAPE, 0.5, np.float32)
    return images, np.zeros((6,), np.int32), logits_fn


# === Tests ===


class ProjectionTest(parameterized.TestCase):
    def _rows(self, num_pixels, seed=0):
        """Rows of four kinds: free, box-bound, out of reach, on the plane."""
        rng = np.random.default_rng(seed)
        n = 64
        points = rng.uniform(size=(n, num_pixels)).astype(np.float32)
        points[::3, : num_pixels // 4] = 0.0  # some coordinates at the limits
        points[1::3, : num_pixels // 4] = 1.0
        w = rng.normal(size=(n, num_pixels)).astype(np.float32)
        w[::5, -2:] = 0.0  # coordinates that must not move
        scale = np.abs(w).sum(axis=1)
        sign = rng.choice([-1.0, 1.0], size=n)
        # The change of w·x to make, relative to Σ|w|: small (free), about
        # 0.3 (limits bind), 1.2 (beyond any point of the box: out of reach).
        fraction = np.tile([0.02, 0.1, 0.3, 0.45, 1.2, 3.0], n)[:n]
        # Free rows: every coordinate has room 0.3 > λ = 0.02.
        points[::6] = rng.uniform(0.3, 0.7, size=points[::6].shape)
        b = (np.sum(w * points, axis=1) + sign * fraction * scale).astype(np.float32)
        # Last rows: already on the hyperplane (exactly, in float32).
        points[-4:] = 0.25 * rng.integers(0, 5, size=(4, num_pixels))
        w[-4:] = rng.integers(-3, 4, size=(4, num_pixels))
        b[-4:] = np.sum(w[-4:].astype(np.float64) * points[-4:], axis=1)
        return points, w, b

    @parameterized.parameters(16, 300)
    def test_matches_bisection_reference(self, num_pixels):
        points, w, b = self._rows(num_pixels)
        d = fab.projection_linf(points, w, b).numpy()
        self.assertEqual(d.shape, points.shape)
        self.assertEqual(d.dtype, np.float32)
        expected, steps = zip(*(_np_box_projection(*row) for row in zip(points, w, b)))
        expected, steps = np.stack(expected), np.array(steps)
        # float32 sums of D products: λ off by ~√D·2^-24 relative (≤ 1e-6
        # here), far below 1e-5.
        np.testing.assert_allclose(d, expected, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(d[w == 0], 0.0)
        # Every kind of row occurs.
        moving = w != 0
        room = np.where(np.sign(expected) > 0, 1.0 - points, points)
        binds = np.array([
            np.isfinite(s) and np.any(room[i][moving[i]] < s)
            for i, s in enumerate(steps)
        ])
        self.assertGreaterEqual(np.sum(np.isinf(steps)), 10)
        self.assertGreaterEqual(np.sum(binds), 10)
        self.assertGreaterEqual(np.sum(np.isfinite(steps) & ~binds & (steps > 0)), 10)
        self.assertEqual(np.sum(steps == 0), 4)

    def test_reaches_hyperplane_inside_box_with_minimal_step(self):
        points, w, b = self._rows(16, seed=1)
        d = fab.projection_linf(points, w, b).numpy().astype(np.float64)
        moved = points + d
        self.assertGreaterEqual(moved.min(), -1e-7)
        self.assertLessEqual(moved.max(), 1.0 + 1e-7)
        residual = np.sum(w * moved, axis=1) - b
        scale = np.abs(w).sum(axis=1) + np.abs(b)
        steps = np.array([_np_box_projection(*row)[1] for row in zip(points, w, b)])
        feasible = np.isfinite(steps)
        np.testing.assert_array_less(np.abs(residual[feasible]), 1e-6 * scale[feasible])
        # Out of reach: every coordinate that moves sits at a box limit, on
        # the side of the hyperplane it was moved towards.
        out = ~feasible & (w != 0).any(axis=1, keepdims=False)
        at_limit = np.isclose(moved, 0.0, atol=1e-7) | np.isclose(moved, 1.0, atol=1e-7)
        self.assertTrue(np.all(at_limit[out][(w != 0)[out]]))
        start_gap = np.sum(w * points, axis=1) - b
        self.assertTrue(np.all(np.sign(residual[out]) == np.sign(start_gap[out])))
        # Minimal: as long as the bisection's λ, the smallest radius whose
        # box-clipped moves can reach the hyperplane.
        np.testing.assert_allclose(
            np.abs(d[feasible]).max(axis=1), steps[feasible], rtol=1e-5, atol=1e-7
        )

    def test_graph_xla_and_unknown_batch(self):
        points, w, b = self._rows(16, seed=2)
        eager = fab.projection_linf(points, w, b).numpy()
        signature = [
            tf.TensorSpec([None, 16], tf.float32),
            tf.TensorSpec([None, 16], tf.float32),
            tf.TensorSpec([None], tf.float32),
        ]
        for jit_compile in (False, True):
            # One projection, no iteration: only 16-term sums may round
            # differently.
            fn = _graph(fab.projection_linf, jit_compile, signature)
            np.testing.assert_allclose(fn(points, w, b).numpy(), eager, rtol=0, atol=1e-6)


class MinimalAdversarialTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.problem = _linear_problem()

    def _run(self, targets, num_steps):
        images, labels, logits_fn, _, _ = self.problem
        fn = _graph(
            lambda x, y, t: fab.minimal_adversarial_targeted(
                logits_fn, x, y, t, num_steps=num_steps
            )
        )
        x_min, norm = fn(images, labels, targets)
        return x_min.numpy(), norm.numpy()

    def test_scalar_recursion(self):
        # The reference numbers the tolerances below rest on: the first step
        # overshoots by η; the best point comes at step 2 (β·η = 0.945 → …)
        # and later steps cycle above it.
        self.assertAlmostEqual(_scalar_fab(1), ETA)
        self.assertAlmostEqual(_scalar_fab(2), 1.005213, places=6)
        self.assertEqual(_scalar_fab(100), _scalar_fab(2))
        self.assertAlmostEqual(_scalar_fab(1, start=0.5), 1.0275)

    @parameterized.parameters(1, 100)
    def test_closest_target_matches_closed_form(self, num_steps):
        images, labels, logits_fn, distances, bound = self.problem
        rows = np.arange(len(images))
        targets = np.nanargmin(distances, axis=1).astype(np.int32)
        minimal, bound = distances[rows, targets], bound[rows, targets]
        self.assertTrue(np.all(np.isfinite(minimal)) and np.all(minimal > 0))
        self.assertGreaterEqual(np.sum(bound), 3)  # both kinds occur
        self.assertGreaterEqual(np.sum(~bound), 3)
        x_min, norm = self._run(targets, num_steps)

        # The returned points are misclassified, in the box, at `norm`.
        self.assertTrue(np.all(_predictions(logits_fn, x_min) != labels))
        self.assertTrue(np.all((x_min >= 0) & (x_min <= 1)))
        np.testing.assert_allclose(_norms(x_min, images), norm, rtol=0, atol=1e-7)
        # Nothing misclassified is closer than the minimal distance.
        np.testing.assert_array_less(_below(minimal), norm)
        # Where no box limit binds, FAB moves along one line and its norm is
        # the scalar recursion's: η·d after one step, 1.0052·d from step 2
        # on (FAB does not converge onto the boundary: it overshoots by η
        # and steps back by β, and the cycle stays 0.5 %–0.9 % above it).
        # Slack: b = −f + w·x loses ~ulp(w·x) ≈ 5e-7 to cancellation, about
        # 1e-7 of step per iteration (measured: ≤ 8e-5 relative at d ≈ 1e-3).
        ratio = _scalar_fab(num_steps)
        np.testing.assert_allclose(
            norm[~bound], ratio * minimal[~bound], rtol=1e-4, atol=1e-6
        )
        # Where limits bind the projections are no longer collinear; 100
        # steps measured ≤ 0.93 % above the minimum (4 seeds × 32 images),
        # one step the overshoot η at most (see test_any_target_bounds).
        if num_steps > 1:
            np.testing.assert_array_less(norm[bound], 1.02 * minimal[bound])
            self.assertLess(np.max(norm / minimal), 1.02)

    def test_any_target_bounds(self):
        # Every (sample, target) pair: the run cannot beat the minimum over
        # all classes, and its first step already lands beyond the target's
        # boundary (η > 1, the box only clips coordinates that moved further
        # than the projection), so it ends within η of the target's distance
        # (20 steps measured ≤ 1.1 % above it, 4 seeds × 32 images).
        images, labels, logits_fn, distances, _ = self.problem
        n = len(images)
        rows = np.repeat(np.arange(n), NUM_CLASSES - 1)
        targets = np.array(
            [t for i in range(n) for t in range(NUM_CLASSES) if t != labels[i]], np.int32
        )
        fn = _graph(
            lambda x, y, t: fab.minimal_adversarial_targeted(
                logits_fn, x, y, t, num_steps=20
            )
        )
        x_min, norm = (v.numpy() for v in fn(images[rows], labels[rows], targets))
        target_distance = distances[rows, targets]
        overall = np.nanmin(distances, axis=1)[rows]
        reachable = np.isfinite(target_distance)
        self.assertTrue(np.all(reachable))  # this model reaches every class
        self.assertTrue(np.all(norm >= _below(overall)))
        self.assertTrue(np.all(norm <= ETA * target_distance * (1 + 1e-4)))
        self.assertTrue(np.all(norm <= 1.02 * target_distance))
        self.assertTrue(np.all(_predictions(logits_fn, x_min) != labels[rows]))
        # Each run follows its own target: here none meets another class's
        # region before its target's boundary (on this model; not a theorem),
        # so a run that ignored `target_labels` would fail this.
        self.assertTrue(np.all(norm >= _below(target_distance)))
        self.assertGreater(np.max(target_distance / overall), 10)

    def test_start_is_first_iterate(self):
        # Start halfway to the boundary along the minimal step v: the scalar
        # recursion from s = 0.5 (one step: 1.0275, not η).
        images, labels, _, distances, bound = self.problem
        keep = ~bound[np.arange(len(images)), np.nanargmin(distances, axis=1)]
        images, labels = images[keep], labels[keep]
        targets = np.nanargmin(distances[keep], axis=1).astype(np.int32)
        minimal = distances[keep][np.arange(len(images)), targets]
        # v: where no limit binds, every pixel moves by the distance in the
        # direction of the boundary normal's sign.
        logits_fn = self.problem[2]
        with tf.GradientTape() as tape:
            x = tf.constant(images)
            tape.watch(x)
            logits = logits_fn(x)
            gap = tf.reduce_sum(
                tf.gather(logits, targets, batch_dims=1)
                - tf.gather(logits, labels, batch_dims=1)
            )
        normal = tape.gradient(gap, x).numpy()
        step = np.sign(normal) * minimal[:, None, None, None]
        start = images + 0.5 * step
        self.assertTrue(np.all((start >= 0) & (start <= 1)))
        fn = _graph(
            lambda x, y, t, s: fab.minimal_adversarial_targeted(
                logits_fn, x, y, t, num_steps=1, start=s
            )
        )
        _, norm = fn(images, labels, targets, start.astype(np.float32))
        np.testing.assert_allclose(
            norm.numpy(), _scalar_fab(1, 0.5) * minimal, rtol=1e-4, atol=1e-6
        )

    def test_nothing_reachable_returns_clean_image_and_inf(self):
        images, labels, logits_fn, _, _ = self.problem
        far = lambda x: logits_fn(x) + 100.0 * tf.one_hot(labels, NUM_CLASSES)
        targets = (labels + 1) % NUM_CLASSES
        x_min, norm = fab.minimal_adversarial_targeted(
            far, images, labels, targets, num_steps=5
        )
        np.testing.assert_array_equal(norm.numpy(), np.inf)
        np.testing.assert_array_equal(x_min.numpy(), images)

    def test_misclassified_clean_image_has_norm_zero(self):
        images, labels, logits_fn, _, _ = self.problem
        wrong = (labels + 1) % NUM_CLASSES
        targets = (labels + 2) % NUM_CLASSES
        x_min, norm = fab.minimal_adversarial_targeted(
            logits_fn, images, wrong, targets, num_steps=5
        )
        np.testing.assert_array_equal(norm.numpy(), 0.0)
        np.testing.assert_array_equal(x_min.numpy(), images)

    def test_graph_unknown_batch_matches_eager(self):
        images, labels, logits_fn, distances, _ = self.problem
        targets = np.nanargmin(distances, axis=1).astype(np.int32)
        run = lambda x, y, t: fab.minimal_adversarial_targeted(
            logits_fn, x, y, t, num_steps=8
        )
        eager_x, eager_norm = run(images, labels, targets)
        fn = _graph(
            run,
            input_signature=[
                tf.TensorSpec((None,) + IMAGE_SHAPE, tf.float32),
                tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((None,), tf.int32),
            ],
        )
        graph_x, graph_norm = fn(images, labels, targets)
        # Same algorithm, other kernels/fusions: rounding only. The linear
        # model's runs are far from ties (norm ≥ 0.5 % past the boundary).
        np.testing.assert_allclose(graph_norm.numpy(), eager_norm.numpy(), rtol=1e-4)
        np.testing.assert_allclose(graph_x.numpy(), eager_x.numpy(), rtol=0, atol=1e-5)
        empty_x, empty_norm = fn(
            np.zeros((0,) + IMAGE_SHAPE, np.float32), np.zeros((0,), np.int32),
            np.zeros((0,), np.int32),
        )
        self.assertEqual(empty_x.shape, (0,) + IMAGE_SHAPE)
        self.assertEqual(empty_norm.shape, (0,))


class FabTargetedTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        images, labels, logits_fn, distances, _ = _linear_problem(seed=1, n=16)
        labels = labels.copy()
        labels[3] = (labels[3] + 1) % NUM_CLASSES  # misclassified clean
        # Minimal adversarial distance over all classes (= over the 9 targets).
        minimal = np.nanmin(distances, axis=1)
        minimal[3] = 0.0
        cls.problem = (images, labels, logits_fn, minimal)

    @parameterized.parameters(0.0, 0.03, 0.1, 0.3)
    def test_adversarial_exactly_within_epsilon(self, epsilon):
        images, labels, logits_fn, minimal = self.problem
        attack = _graph(lambda x, y: fab.fab_targeted(logits_fn, x, y, epsilon=epsilon))
        x_adv = attack(images, labels).numpy()
        self.assertEqual(x_adv.dtype, np.float32)
        self.assertTrue(np.all((x_adv >= 0) & (x_adv <= 1)))
        norms = _norms(x_adv, images)
        self.assertLessEqual(norms.max(), epsilon + 1e-7)
        fooled = _predictions(logits_fn, x_adv) != labels
        # The run towards the closest class ends ≤ 2 % above the minimal
        # distance (MinimalAdversarialTest); nothing gets below it.
        must = minimal * 1.02 <= epsilon
        cannot = _below(minimal) > epsilon
        np.testing.assert_array_equal(fooled[must], True)
        np.testing.assert_array_equal(fooled[cannot], False)
        self.assertTrue(np.all(norms[fooled] >= _below(minimal[fooled])))
        # Samples that are not fooled come back as their clean image.
        np.testing.assert_array_equal(x_adv[~fooled], images[~fooled])
        self.assertTrue(fooled[3])  # misclassified clean: the clean image
        np.testing.assert_array_equal(x_adv[3], images[3])

    def test_epsilons_cover_both_outcomes(self):
        # Not vacuous: the ε values above split the samples.
        minimal = np.delete(self.problem[3], 3)
        self.assertGreater(np.sum(minimal < 0.03 / 1.02), 2)
        self.assertGreater(np.sum((minimal > 0.03) & (minimal < 0.1 / 1.02)), 2)
        self.assertGreater(np.sum(minimal > 0.1), 2)
        self.assertLess(minimal.max(), 0.3 / 1.02)
        self.assertGreater(minimal.min(), 0.0)

    @parameterized.parameters((3, False), (4, True), (9, True))
    def test_targets_are_kth_largest_clean_logits(self, num_target_classes, reached):
        images, labels, logits_fn = _ranked_model()
        ranking = np.argsort(-logits_fn(images).numpy(), axis=1, kind="stable")
        np.testing.assert_array_equal(ranking[:, 4], 7)  # the 5th largest
        attack = _graph(
            lambda x, y: fab.fab_targeted(
                logits_fn, x, y, epsilon=0.05, num_steps=10,
                num_target_classes=num_target_classes,
            )
        )
        x_adv = attack(images, labels).numpy()
        if reached:
            np.testing.assert_array_equal(_predictions(logits_fn, x_adv), 7)
            np.testing.assert_array_less(_norms(x_adv, images), 0.05 + 1e-7)
            np.testing.assert_array_less(_below(0.35 / 16), _norms(x_adv, images))
        else:
            np.testing.assert_array_equal(x_adv, images)

    def test_random_restarts(self):
        images, labels, logits_fn = _bowl_model()
        attack = _graph(
            lambda seed, num_restarts: fab.fab_targeted(
                logits_fn, images, labels, epsilon=0.05, num_steps=20,
                num_target_classes=1, num_restarts=num_restarts, seed=seed,
            ),
        )
        # Restart 0 starts at x₀, where the gradient is 0: nothing found.
        np.testing.assert_array_equal(
            fab.fab_targeted(
                logits_fn, images, labels, epsilon=0.05, num_steps=3,
                num_target_classes=1,
            ).numpy(),
            images,
        )
        seed = lambda *values: tf.constant(values, tf.int64)
        two = attack(seed(1, 2), 2).numpy()
        self.assertTrue(np.all(_predictions(logits_fn, two) == 1))
        minimal = math.sqrt(0.001 / NUM_PIXELS)
        norms_two = _norms(two, images)
        self.assertTrue(np.all(norms_two >= _below(minimal)))
        self.assertTrue(np.all(norms_two <= 0.05 + 1e-7))
        # Same seed, same result; another seed, another random start.
        np.testing.assert_array_equal(attack(seed(1, 2), 2).numpy(), two)
        self.assertGreater(np.abs(attack(seed(1, 3), 2).numpy() - two).max(), 1e-6)
        # More restarts never do worse: with one target class, restarts 0
        # and 1 draw the same seeds for 2 and 3 restarts (1e-7: two graphs).
        norms_three = _norms(attack(seed(1, 2), 3).numpy(), images)
        self.assertTrue(np.all(norms_three <= norms_two + 1e-7))

    def test_random_start_is_half_epsilon_away(self):
        images = testing.images_with_extremes((5,) + IMAGE_SHAPE, 3)
        start = fab._random_start(images, 0.1, tf.constant([4, 5], tf.int64)).numpy()
        self.assertTrue(np.all((start >= 0) & (start <= 1)))
        np.testing.assert_array_less(_norms(start, images), 0.05 + 1e-7)
        # Each image's largest move before clipping is exactly ε/2: where that
        # pixel is not clipped, the image is ε/2 away.
        norms = _norms(start, images)
        self.assertGreaterEqual(np.sum(np.isclose(norms, 0.05, rtol=0, atol=1e-7)), 3)
        other = fab._random_start(images, 0.1, tf.constant([4, 6], tf.int64)).numpy()
        self.assertGreater(np.abs(other - start).max(), 1e-3)

    def test_output_carries_no_gradient(self):
        images, labels, logits_fn = self.problem[:3]
        images = tf.constant(images)
        with tf.GradientTape() as tape:
            tape.watch(images)
            x_adv = fab.fab_targeted(
                logits_fn, images, labels, epsilon=0.3, num_steps=2,
                num_target_classes=1,
            )
        self.assertIsNone(tape.gradient(tf.reduce_sum(x_adv), images))


class CompileTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.problem = _linear_problem(seed=2, n=8)[:3]

    def _attack(self, images, labels, seed, num_steps, num_target_classes=2):
        logits_fn = self.problem[2]
        return fab.fab_targeted(
            logits_fn, images, labels, epsilon=0.05, num_steps=num_steps,
            num_target_classes=num_target_classes, num_restarts=2, seed=seed,
        )

    def _check_close(self, actual, expected, images):
        # Same algorithm, other kernels/fusions: rounding only, on a linear
        # model whose runs end ≥ 0.5 % past the boundaries and whose closest
        # points lie ≥ 1.5 % from ε = 0.05 (no ties to decide differently).
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)
        norms = _norms(expected, images)
        self.assertGreater(np.sum(norms > 0), 2)  # both outcomes occur
        self.assertGreater(np.sum(norms == 0), 1)

    def test_unknown_batch_matches_eager(self):
        images, labels = self.problem[:2]
        seed = tf.constant([7, 8], tf.int64)
        eager = self._attack(images, labels, seed, 4).numpy()
        fn = _graph(
            lambda x, y, s: self._attack(x, y, s, 4),
            input_signature=[
                tf.TensorSpec((None,) + IMAGE_SHAPE, tf.float32),
                tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((2,), tf.int64),
            ],
        )
        self._check_close(fn(images, labels, seed).numpy(), eager, images)
        empty = fn(
            np.zeros((0,) + IMAGE_SHAPE, np.float32), np.zeros((0,), np.int32), seed
        )
        self.assertEqual(empty.shape, (0,) + IMAGE_SHAPE)

    def test_xla_matches_eager(self):
        # Under XLA the 2 steps are unrolled (core.repeat), the 2 runs (clean
        # and random start) are a loop. Short: XLA compiles for seconds.
        images, labels = self.problem[:2]
        seed = tf.constant([7, 8], tf.int64)
        attack = lambda x, y, s: self._attack(x, y, s, 2, num_target_classes=1)
        eager = attack(images, labels, seed).numpy()
        xla = _graph(attack, jit_compile=True)(images, labels, seed).numpy()
        self._check_close(xla, eager, images)


class ErrorTest(parameterized.TestCase):
    def _run(self, **overrides):
        images, labels, logits_fn = _ranked_model()
        kwargs = dict(epsilon=0.1, num_steps=2, num_target_classes=2)
        kwargs.update(overrides)
        logits_fn = kwargs.pop("logits_fn", logits_fn)
        images = kwargs.pop("images", images)
        labels = kwargs.pop("labels", labels)
        return fab.fab_targeted(logits_fn, images, labels, **kwargs)

    @parameterized.named_parameters(
        ("negative_epsilon", dict(epsilon=-1),
         r"`epsilon` must be a finite number >= 0. Received: epsilon=-1"),
        ("nan_epsilon", dict(epsilon=float("nan")), r"`epsilon` must be"),
        ("zero_steps", dict(num_steps=0),
         r"`num_steps` must be an int >= 1. Received: num_steps=0"),
        ("float_steps", dict(num_steps=2.0), r"`num_steps` must be an int >= 1"),
        ("too_many_targets", dict(num_target_classes=10),
         r"`num_target_classes` must be smaller than the number of classes K = 10 "
         r".*Received: num_target_classes=10"),
        ("zero_targets", dict(num_target_classes=0),
         r"`num_target_classes` must be an int >= 1. Received: num_target_classes=0"),
        ("zero_restarts", dict(num_restarts=0),
         r"`num_restarts` must be an int >= 1. Received: num_restarts=0"),
        ("no_seed", dict(num_restarts=2),
         r"`seed` must be .* when num_restarts > 1.*Received: seed=None"),
        ("bad_seed", dict(seed=[1, 2, 3]), r"`seed` must be a shape \[2\] integer"),
        ("alpha_max", dict(alpha_max=1.5),
         r"`alpha_max` must be a number in \[0, 1\]. Received: alpha_max=1.5"),
        ("beta", dict(beta=-0.1),
         r"`beta` must be a number in \[0, 1\]. Received: beta=-0.1"),
        ("eta", dict(eta=0.5), r"`eta` must be a finite number >= 1 .*Received: eta=0.5"),
        ("rank3_images", dict(images=np.zeros((6, 4, 4), np.float32)),
         r"`images` must be a float tensor of shape \[N, H, W, C\]"),
        ("labels_length", dict(labels=np.zeros((3,), np.int32)),
         r"`labels` must be integer class ids of shape \[N\]"),
        ("dict_logits", dict(logits_fn=lambda x: {"exit": tf.reshape(x, [6, -1])}),
         r"`logits_fn` must return class logits of shape \[N, K\]"),
        ("constant_logits", dict(logits_fn=lambda x: tf.zeros([6, NUM_CLASSES])),
         r"does not depend on the images"),
    )
    def test_rejects(self, overrides, pattern):
        with self.assertRaisesRegex(ValueError, pattern):
            self._run(**overrides)

    def test_minimal_adversarial_rejects(self):
        images, labels, logits_fn = _ranked_model()
        run = lambda **kw: fab.minimal_adversarial_targeted(
            logits_fn, images, labels, kw.pop("targets", labels + 1), **kw
        )
        with self.assertRaisesRegex(ValueError, r"`target_labels` must be integer"):
            run(targets=np.zeros((2,), np.int32))
        with self.assertRaisesRegex(ValueError, r"`start` must be a float tensor"):
            run(start=np.zeros((6, 4, 4, 2), np.float32))
        with self.assertRaisesRegex(ValueError, r"Received: num_steps=0"):
            run(num_steps=0)
        with self.assertRaisesRegex(ValueError, r"Received: eta=inf"):
            run(eta=math.inf)
