"""Tests for oat_tf.attacks.square: the parts against numpy references, bounds,
the monotone margin, logits-only access, strength against PGD on a trained
model, seeds, model state, tf.function / XLA and errors."""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from oat_tf.attacks import pgd
from oat_tf.attacks import square
from tests import testing

EPS = 8.0 / 255.0
SHAPE = (4, 6, 6, 2)  # N, H, W, C
NUM_PIXELS = 6 * 6 * 2
NUM_CLASSES = 3


# === Helpers ===


def _images(seed=0, shape=SHAPE):
    return testing.images_with_extremes(shape, seed)


def _labels(n=SHAPE[0]):
    return np.arange(n, dtype=np.int32) % NUM_CLASSES


def _mlp_logits_fn(seed=2, hidden=16):
    """A fixed random tanh MLP over SHAPE[1:] images."""
    rng = np.random.default_rng(seed)
    w1 = tf.constant((rng.normal(size=(NUM_PIXELS, hidden)) / 3.0).astype(np.float32))
    w2 = tf.constant((rng.normal(size=(hidden, NUM_CLASSES)) * 2.0).astype(np.float32))
    return lambda x: tf.matmul(
        tf.tanh(tf.matmul(tf.reshape(x, [-1, NUM_PIXELS]), w1)), w2
    )


def _margin(logits_fn, x, labels):
    return square.margin_loss(logits_fn(tf.constant(x)), labels).numpy()


def _correct_labels(logits_fn, images):
    """Labels the model gets right on `images` (so every sample is attacked)."""
    return np.argmax(logits_fn(tf.constant(images)).numpy(), axis=1).astype(np.int32)


def _square(logits_fn, images, labels, **kwargs):
    """square_linf inside a tf.function (eager loops are slow on CI CPUs)."""
    kwargs = {"epsilon": EPS, "num_queries": 30, "seed": [3, 4], **kwargs}
    fn = tf.function(
        lambda x, y: square.square_linf(logits_fn, x, y, **kwargs), autograph=False
    )
    return fn(tf.constant(images), tf.constant(labels)).numpy()


def _search(logits_fn, images, labels, **kwargs):
    """(x_adv, margins [num_queries, N]) of the recording search, in a graph."""
    kwargs = {
        "epsilon": EPS, "num_queries": 30, "p_init": 0.05, "seed": [3, 4], **kwargs
    }
    fn = tf.function(
        lambda x, y: square._square_search(  # pylint: disable=protected-access
            logits_fn, x, y, record_margins=True, **kwargs
        ),
        autograph=False,
    )
    x_adv, margins = fn(tf.constant(images), tf.constant(labels))
    return x_adv.numpy(), margins.numpy()


def _np_p_selection(p_init, it, n_iters):
    """The authors' `p_selection` (square-attack repository, attack.py)."""
    it = int(it / n_iters * 10000)
    if 10 < it <= 50:
        return p_init / 2
    if 50 < it <= 200:
        return p_init / 4
    if 200 < it <= 500:
        return p_init / 8
    if 500 < it <= 1000:
        return p_init / 16
    if 1000 < it <= 2000:
        return p_init / 32
    if 2000 < it <= 4000:
        return p_init / 64
    if 4000 < it <= 6000:
        return p_init / 128
    if 6000 < it <= 8000:
        return p_init / 256
    if 8000 < it <= 10000:
        return p_init / 512
    return p_init


# === Parts ===


class PartsTest(parameterized.TestCase):
    def test_margin_loss_matches_numpy(self):
        logits = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
        labels = np.array([0, 1, 2, 3, 0, 2], np.int32)
        others = logits.copy()
        others[np.arange(6), labels] = -np.inf
        expected = logits[np.arange(6), labels] - others.max(axis=1)
        np.testing.assert_allclose(
            square.margin_loss(logits, labels).numpy(), expected, rtol=0, atol=1e-6
        )
        # Negative exactly for the misclassified samples.
        np.testing.assert_array_equal(expected < 0, logits.argmax(axis=1) != labels)

    @parameterized.parameters(1, 5, 20, 100, 1000, 3000, 10000)
    def test_schedule_matches_reference(self, num_queries):
        p = square.square_fraction(0.05, tf.range(num_queries), num_queries).numpy()
        expected = [_np_p_selection(0.05, i, num_queries) for i in range(num_queries)]
        np.testing.assert_allclose(p, expected, rtol=1e-12, atol=0)

    def test_schedule_halves_at_reference_iterations(self):
        p = square.square_fraction(0.8, tf.range(10000), 10000).numpy()
        changes = np.flatnonzero(np.diff(p)) + 1
        np.testing.assert_array_equal(
            changes, [11, 51, 201, 501, 1001, 2001, 4001, 6001, 8001]
        )
        self.assertEqual(p[-1], 0.8 / 512)

    @parameterized.parameters(
        (0.05, 28, 28, 6),  # round(sqrt(39.2)) = 6
        (0.05, 32, 32, 7),  # round(sqrt(51.2)) = 7
        (0.05 / 512, 32, 32, 1),  # at least one pixel
        (1.0, 6, 8, 6),  # at most min(H, W)
        (0.5, 2, 2, 1),  # round(1.414) = 1
    )
    def test_square_side(self, p, height, width, expected):
        self.assertEqual(square.square_side(p, height, width).numpy(), expected)

    def test_vertical_stripes(self):
        images = _images()
        x = square.vertical_stripes(tf.constant(images), EPS, [1, 2]).numpy()
        plus = np.clip(images + np.float32(EPS), 0, 1)
        minus = np.clip(images - np.float32(EPS), 0, 1)
        self.assertTrue(np.all((x == plus) | (x == minus)))
        # One sign per sample, column and channel, shared by every row.
        signs = np.where(x == plus, 1, -1)[:, 2:]  # rows 0 and 1 are clipped
        self.assertTrue(np.all(signs == signs[:, :1]))
        self.assertGreater(np.mean(signs == 1), 0.2)
        self.assertLess(np.mean(signs == 1), 0.8)

    def test_proposal_changes_one_square_by_plus_minus_epsilon(self):
        images = _images()
        x_best = square.vertical_stripes(tf.constant(images), EPS, [0, 0]).numpy()
        plus = np.clip(images + np.float32(EPS), 0, 1)
        minus = np.clip(images - np.float32(EPS), 0, 1)
        side = 3

        def explanations(candidate, n):
            """The (top, left, signs) whose proposal equals `candidate[n]`."""
            found = []
            for top in range(SHAPE[1] - side + 1):
                for left in range(SHAPE[2] - side + 1):
                    for signs in np.ndindex(*(2,) * SHAPE[3]):
                        expected = x_best[n].copy()
                        window = (slice(top, top + side), slice(left, left + side))
                        for c, sign in enumerate(signs):
                            source = plus if sign else minus
                            expected[window + (c,)] = source[n][window + (c,)]
                        if np.array_equal(expected, candidate[n]):
                            found.append((top, left, signs))
            return found

        for s in range(6):
            candidate = square.square_proposal(
                tf.constant(images), tf.constant(x_best), EPS, tf.constant(side), [s, 9]
            ).numpy()
            for n in range(SHAPE[0]):
                # Never a wasted query.
                self.assertFalse(np.array_equal(candidate[n], x_best[n]))
                self.assertNotEmpty(explanations(candidate, n))

    def test_proposal_positions_cover_the_image(self):
        images = np.full((64, 5, 5, 1), 0.5, np.float32)
        x_best = images - np.float32(EPS)
        tops, lefts = set(), set()
        for s in range(8):
            candidate = square.square_proposal(
                tf.constant(images), tf.constant(x_best), EPS, tf.constant(2), [s, 1]
            ).numpy()
            # The single channel can only change to +ε (−ε is x_best itself).
            for n in range(64):
                rows, cols = np.nonzero(candidate[n, ..., 0] != x_best[n, ..., 0])
                self.assertEqual((len(rows), np.ptp(rows), np.ptp(cols)), (4, 1, 1))
                tops.add(rows.min())
                lefts.add(cols.min())
        self.assertEqual(tops, {0, 1, 2, 3})
        self.assertEqual(lefts, {0, 1, 2, 3})

    def test_proposal_never_repeats_the_current_signs(self):
        """Resampling: uniform over the 2^C − 1 sign vectors that change x."""
        images = np.full((512, 4, 4, 2), 0.5, np.float32)
        x_best = images + np.float32(EPS)  # every window currently holds (+, +)
        candidate = square.square_proposal(
            tf.constant(images), tf.constant(x_best), EPS, tf.constant(4), [5, 5]
        ).numpy()
        signs = np.sign(candidate[:, 0, 0, :] - 0.5).astype(int)
        codes = [tuple(s) for s in signs]
        self.assertNotIn((1, 1), codes)
        counts = [codes.count(c) for c in [(1, -1), (-1, 1), (-1, -1)]]
        self.assertEqual(sum(counts), 512)
        for count in counts:  # 512 / 3 ≈ 171 each; 5 standard deviations ≈ 53.
            self.assertLess(abs(count - 512 / 3), 55)


# === The attack ===


class BoundsTest(parameterized.TestCase):
    def test_within_epsilon_and_unit_interval(self):
        images = _images()
        logits_fn = _mlp_logits_fn()
        labels = _correct_labels(logits_fn, images)
        x_adv = _square(logits_fn, images, labels, epsilon=0.1)

        self.assertEqual(x_adv.dtype, np.float32)
        self.assertEqual(x_adv.shape, images.shape)
        delta = np.abs(x_adv.astype(np.float64) - images)
        self.assertLessEqual(delta.max(), 0.1 + 1e-6)
        self.assertGreaterEqual(x_adv.min(), 0.0)
        self.assertLessEqual(x_adv.max(), 1.0)
        # Pixels at 0 and 1 stay in [0, 1]; some moved inwards by ε.
        self.assertTrue(np.any(x_adv[:, 0] == np.float32(0.1)))
        self.assertTrue(np.any(x_adv[:, 1] == np.float32(1.0) - np.float32(0.1)))
        # Not vacuous: the L∞ search puts pixels on the boundary of the ball.
        self.assertGreater(delta.max(), 0.1 - 1e-6)

    def test_output_carries_no_gradient(self):
        images = tf.constant(_images())
        with tf.GradientTape() as tape:
            tape.watch(images)
            x_adv = square.square_linf(
                _mlp_logits_fn(), images, _labels(), epsilon=EPS, num_queries=3,
                seed=[0, 0],
            )
        self.assertIsNone(tape.gradient(x_adv, images))


class SearchTest(parameterized.TestCase):
    def test_margin_never_increases(self):
        logits_fn = _mlp_logits_fn()
        images = _images(seed=3, shape=(16, 6, 6, 2))
        labels = _correct_labels(logits_fn, images)
        x_adv, margins = _search(
            logits_fn, images, labels, epsilon=0.05, num_queries=40
        )

        self.assertEqual(margins.shape, (40, 16))
        self.assertTrue(np.all(np.diff(margins, axis=0) <= 0.0))
        # Row 0 is the stripes' margin; the search lowered it for every sample
        # that the stripes did not already fool.
        stripes = square.vertical_stripes(tf.constant(images), 0.05, [3, 4])
        np.testing.assert_allclose(
            margins[0], _margin(logits_fn, stripes, labels), atol=1e-6
        )
        attacked = margins[0] >= 0
        self.assertGreaterEqual(attacked.sum(), 12)
        self.assertTrue(np.all(margins[-1][attacked] < margins[0][attacked]))
        self.assertTrue(np.all(margins[:, ~attacked] == margins[0, ~attacked]))
        # The last row is the margin of the returned images.
        np.testing.assert_allclose(
            margins[-1], _margin(logits_fn, x_adv, labels), atol=1e-6
        )
        # A fooled sample (margin < 0) stops changing.
        for n in range(16):
            fooled = np.flatnonzero(margins[:, n] < 0)
            if len(fooled):
                self.assertTrue(np.all(margins[fooled[0]:, n] == margins[fooled[0], n]))

    @parameterized.parameters(1, 5, 20)
    def test_runs_of_few_queries(self, num_queries):
        """Final margin <= the stripes' margin; early stopping changes nothing."""
        logits_fn = _mlp_logits_fn()
        images = _images(seed=4)
        labels = _correct_labels(logits_fn, images)
        kwargs = {"epsilon": 0.05, "num_queries": num_queries}
        x_adv = _square(logits_fn, images, labels, **kwargs)
        recorded, margins = _search(logits_fn, images, labels, **kwargs)

        np.testing.assert_array_equal(x_adv, recorded)
        stripes = square.vertical_stripes(tf.constant(images), 0.05, [3, 4]).numpy()
        final = _margin(logits_fn, x_adv, labels)
        self.assertTrue(np.all(final <= _margin(logits_fn, stripes, labels) + 1e-6))
        if num_queries == 1:
            np.testing.assert_array_equal(x_adv, stripes)

    def test_misclassified_samples_are_returned_unchanged(self):
        logits_fn = _mlp_logits_fn()
        images = _images(seed=5, shape=(8, 6, 6, 2))
        predicted = _correct_labels(logits_fn, images)
        labels = predicted.copy()
        labels[:4] = (predicted[:4] + 1) % NUM_CLASSES  # wrong on clean images
        x_adv, margins = _search(logits_fn, images, labels, num_queries=10)
        np.testing.assert_array_equal(x_adv[:4], images[:4])
        self.assertTrue(np.all(margins[:, :4] < 0))
        moved = np.abs(x_adv[4:] - images[4:]).max(axis=(1, 2, 3))
        self.assertTrue(np.all(moved > 0.0))

    def test_query_budget(self):
        """num_queries − 1 iterations after the stripes, plus the clean query."""
        calls = []
        inner = _mlp_logits_fn()

        def logits_fn(x):
            calls.append(1)
            return inner(x)

        images = _images()
        labels = _correct_labels(inner, images)
        square._square_search(  # pylint: disable=protected-access
            logits_fn, images, labels, epsilon=EPS, num_queries=6, p_init=0.05,
            seed=[0, 0], record_margins=True,
        )
        self.assertEqual(len(calls), 6 + 1)

    def test_uses_only_logits(self):
        """Blocking gradients through the model changes nothing."""
        logits_fn = _mlp_logits_fn()
        blocked = lambda x: tf.stop_gradient(logits_fn(x))
        images = _images()
        labels = _correct_labels(logits_fn, images)
        # The wrapper does block gradients: a gradient attack fails on it.
        with self.assertRaisesRegex(ValueError, "does not depend on the images"):
            pgd.fgsm(blocked, images, labels, epsilon=EPS)

        x_blocked = _square(blocked, images, labels, epsilon=0.05)
        x_open = _square(logits_fn, images, labels, epsilon=0.05)
        np.testing.assert_array_equal(x_blocked, x_open)
        self.assertTrue(
            np.all(
                _margin(logits_fn, x_blocked, labels)
                < _margin(logits_fn, images, labels)
            )
        )


class TrainedModelTest(parameterized.TestCase):
    """Square against PGD-20 on a small MLP trained here on separable data."""

    # Square is a weaker, gradient-free search: on this model (no gradient
    # masking) its robust accuracy may not be below PGD's by more than this.
    # Observed: PGD-20 0.41, Square-300 0.50 at ε = 0.08, clean 1.0.
    TOLERANCE = 2 / 32

    def test_weaker_than_pgd_but_lowers_accuracy(self):
        rng = np.random.default_rng(0)
        prototypes = rng.uniform(0.3, 0.7, size=(NUM_CLASSES, 8, 8, 1))

        def data(n, seed):
            r = np.random.default_rng(seed)
            y = r.integers(0, NUM_CLASSES, n).astype(np.int32)
            x = np.clip(prototypes[y] + r.normal(0, 0.2, size=(n, 8, 8, 1)), 0, 1)
            return x.astype(np.float32), y

        x_train, y_train = data(512, 1)
        x_test, y_test = data(32, 2)
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(NUM_CLASSES),
        ])
        optimizer = keras.optimizers.Adam(1e-2)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def train_step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)

        for _ in range(200):
            train_step(x_train, y_train)

        logits_fn = lambda x: model(x, training=False)

        def accuracy(x):
            return np.mean(np.argmax(logits_fn(x).numpy(), axis=1) == y_test)

        eps = 0.08
        x_pgd = tf.function(
            lambda x, y: pgd.pgd_linf(
                logits_fn, x, y, epsilon=eps, step_size=eps / 4, num_steps=20,
                seed=[0, 1],
            ),
            autograph=False,
        )(x_test, y_test)
        x_square = _square(
            logits_fn, x_test, y_test, epsilon=eps, num_queries=300, seed=[0, 2]
        )
        clean = accuracy(x_test)
        pgd_acc, square_acc = accuracy(x_pgd), accuracy(x_square)

        self.assertGreaterEqual(clean, 0.9)
        self.assertLess(square_acc, clean - 0.2)
        self.assertGreaterEqual(square_acc, pgd_acc - self.TOLERANCE)
        self.assertLessEqual(np.abs(x_square - x_test).max(), eps + 1e-6)


class SeedTest(parameterized.TestCase):
    def test_same_seed_same_output_different_seed_different_output(self):
        logits_fn = _mlp_logits_fn()
        images = _images()
        labels = _correct_labels(logits_fn, images)
        attack = tf.function(
            lambda s: square.square_linf(
                logits_fn, images, labels, epsilon=EPS, num_queries=30, seed=s
            ),
            autograph=False,
        )
        a = attack(tf.constant([1, 2], tf.int64)).numpy()
        b = attack(tf.constant([1, 2], tf.int64)).numpy()
        c = attack(tf.constant([1, 3], tf.int64)).numpy()
        # A list seed in a new trace (and eagerly) draws the same numbers.
        np.testing.assert_array_equal(
            a, _square(logits_fn, images, labels, seed=[1, 2])
        )
        np.testing.assert_array_equal(a, b)
        self.assertGreater(np.abs(a - c).max(), 0.0)


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
        images, labels = _images(), _labels()
        model(images, training=True)  # move the moving statistics
        before = [v.numpy().copy() for v in model.weights]
        outputs_before = model(images, training=False).numpy()

        x_adv = _square(
            lambda x: model(x, training=False), images, labels, num_queries=5
        )

        self.assertGreater(np.abs(x_adv - images).max(), 0.0)
        for old, new in zip(before, model.weights):
            np.testing.assert_array_equal(old, new.numpy(), err_msg=new.path)
        np.testing.assert_array_equal(
            outputs_before, model(images, training=False).numpy()
        )

    def test_attack_uses_lambda_from_closure(self):
        # logits = A·x + λ·(B·x): λ changes which proposals lower the margin.
        keras.utils.set_random_seed(1)
        image = keras.Input(SHAPE[1:], name="image")
        lam = keras.Input((1,), name="lambda")
        flat = keras.layers.Flatten()(image)
        a = keras.layers.Dense(NUM_CLASSES, name="a")(flat)
        b = keras.layers.Dense(NUM_CLASSES, name="b")(flat)
        logits = keras.layers.Add()([a, keras.layers.Multiply()([b, lam])])
        model = keras.Model({"image": image, "lambda": lam}, logits)
        images = tf.constant(_images())

        def logits_at(lam_value):
            return lambda x: model({"image": x, "lambda": lam_value}, training=False)

        @tf.function(autograph=False)
        def attack(lam_value, labels):
            return square.square_linf(
                logits_at(lam_value), images, labels, epsilon=EPS, num_queries=10,
                seed=[3, 4],
            )

        def attack_at(value):
            lam_value = tf.fill([SHAPE[0], 1], value)
            labels = _correct_labels(logits_at(lam_value), images)
            return attack(lam_value, labels).numpy()

        x0, x0_again, x5 = attack_at(0.0), attack_at(0.0), attack_at(5.0)
        np.testing.assert_array_equal(x0, x0_again)
        self.assertGreater(np.abs(x0 - x5).max(), 1e-3)


class CompileTest(parameterized.TestCase):
    @parameterized.parameters(False, True)
    def test_tf_function_matches_eager(self, jit_compile):
        logits_fn = _mlp_logits_fn()
        images = _images()
        labels = _correct_labels(logits_fn, images)
        seed = tf.constant([21, 22], tf.int64)

        def attack(x, y, s):
            return square.square_linf(
                logits_fn, x, y, epsilon=0.05, num_queries=8, seed=s
            )

        eager = attack(images, labels, seed).numpy()
        compiled = tf.function(attack, jit_compile=jit_compile, autograph=False)(
            images, labels, seed
        )
        np.testing.assert_allclose(compiled.numpy(), eager, rtol=0, atol=1e-6)
        self.assertGreater(np.abs(eager - images).max(), 0.0)

    def test_loop_is_not_unrolled(self):
        logits_fn = _mlp_logits_fn()

        def num_ops(num_queries):
            fn = tf.function(
                lambda x, y: square.square_linf(
                    logits_fn, x, y, epsilon=EPS, num_queries=num_queries, seed=[0, 1]
                ),
                autograph=False,
            )
            graph = fn.get_concrete_function(
                tf.TensorSpec(SHAPE, tf.float32), tf.TensorSpec(SHAPE[:1], tf.int32)
            ).graph
            return len(graph.get_operations())

        self.assertEqual(num_ops(2), num_ops(1000))

    def test_unknown_and_empty_batch(self):
        logits_fn = _mlp_logits_fn()
        fn = tf.function(
            lambda x, y: square.square_linf(
                logits_fn, x, y, epsilon=EPS, num_queries=10, seed=[0, 1]
            ),
            input_signature=[
                tf.TensorSpec((None,) + SHAPE[1:], tf.float32),
                tf.TensorSpec((None,), tf.int32),
            ],
            autograph=False,
        )
        images = _images()
        labels = _correct_labels(logits_fn, images)
        np.testing.assert_array_equal(
            fn(images, labels).numpy(),
            _square(logits_fn, images, labels, num_queries=10, seed=[0, 1]),
        )
        empty = np.zeros((0,) + SHAPE[1:], np.float32)
        no_labels = np.zeros((0,), np.int32)
        self.assertEqual(fn(empty, no_labels).shape, (0,) + SHAPE[1:])
        self.assertEqual(
            square.square_linf(
                logits_fn, empty, no_labels, epsilon=EPS, num_queries=3, seed=[0, 1]
            ).shape,
            (0,) + SHAPE[1:],
        )


class ErrorTest(parameterized.TestCase):
    @parameterized.parameters(
        ({"epsilon": -0.1}, "`epsilon` must be"),
        ({"epsilon": float("nan")}, "`epsilon` must be"),
        ({"num_queries": 0}, "`num_queries` must be"),
        ({"num_queries": 2.5}, "`num_queries` must be"),
        ({"num_queries": True}, "`num_queries` must be"),
        ({"p_init": 0.0}, "`p_init` must be"),
        ({"p_init": 1.5}, "`p_init` must be"),
        ({"p_init": float("nan")}, "`p_init` must be"),
        ({"seed": None}, "`seed` must be"),
        ({"seed": [1, 2, 3]}, "`seed` must be"),
        ({"seed": [0.5, 1.0]}, "`seed` must be"),
    )
    def test_rejects_arguments(self, overrides, pattern):
        kwargs = {
            "epsilon": EPS, "num_queries": 5, "p_init": 0.05, "seed": [0, 0],
            **overrides,
        }
        with self.assertRaisesRegex(ValueError, pattern + ".*Received: "):
            square.square_linf(_mlp_logits_fn(), _images(), _labels(), **kwargs)

    def test_rejects_inputs(self):
        kwargs = {"epsilon": EPS, "num_queries": 3, "seed": [0, 0]}
        with self.assertRaisesRegex(ValueError, "`images` must be"):
            square.square_linf(_mlp_logits_fn(), _images()[0], _labels(), **kwargs)
        with self.assertRaisesRegex(ValueError, "`labels` must be"):
            square.square_linf(_mlp_logits_fn(), _images(), _labels(3), **kwargs)

    def test_logits_must_be_rank_2_with_two_classes(self):
        kwargs = {"epsilon": EPS, "num_queries": 3, "seed": [0, 0]}
        logits_fn = _mlp_logits_fn()
        with self.assertRaisesRegex(
            ValueError, r"`logits_fn` must return class logits of shape \[N, K\] \(the margin loss"
        ):
            square.square_linf(
                lambda x: {"exit_0": logits_fn(x)}, _images(), _labels(), **kwargs
            )
        with self.assertRaisesRegex(ValueError, "at least 2 classes"):
            square.square_linf(
                lambda x: logits_fn(x)[:, :1], _images(), _labels(), **kwargs
            )
