"""Tests for oat_tf.attacks.pgd: bounds, closed forms, numpy references, seeds,
model state, tf.function / XLA / replica context, dispatch and errors."""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from oat_tf import config as config_lib
from oat_tf.attacks import core
from oat_tf.attacks import pgd
from oat_tf.attacks import registry
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


def _linear_params(seed=1, num_classes=NUM_CLASSES):
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(NUM_PIXELS, num_classes)) * 0.2).astype(np.float32)
    b = rng.normal(size=(num_classes,)).astype(np.float32)
    return w, b


def _linear_logits_fn(w, b):
    w, b = tf.constant(w), tf.constant(b)
    return lambda x: tf.matmul(tf.reshape(x, [-1, NUM_PIXELS]), w) + b


def _mlp_logits_fn(seed=2, hidden=16):
    """A fixed random tanh MLP: non-linear, so restarts find different optima."""
    w1, w2 = (tf.constant(p) for p in _mlp_params(seed, hidden))
    return lambda x: tf.matmul(tf.tanh(tf.matmul(tf.reshape(x, [-1, NUM_PIXELS]), w1)), w2)


def _np_ce(x, w, b, labels):
    """Per-sample softmax cross-entropy of the linear model, float64."""
    logits = x.reshape(len(x), -1).astype(np.float64) @ w + b
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(x)), labels]


def _np_ce_grad(x, w, b, labels):
    """d CE / d x of the linear model in closed form: W (softmax - onehot)."""
    logits = x.reshape(len(x), -1).astype(np.float64) @ w + b
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    probs[np.arange(len(x)), labels] -= 1.0
    return (probs @ w.T.astype(np.float64)).reshape(x.shape)


def _np_project(x, images, eps):
    x = np.clip(x, images - np.float32(eps), images + np.float32(eps))
    return np.clip(x, np.float32(0), np.float32(1)).astype(np.float32)


def _np_pgd(images, w, b, labels, eps, step, steps, start=None):
    x = images.copy() if start is None else start.copy()
    for _ in range(steps):
        g = _np_ce_grad(x, w, b, labels)
        x = _np_project(x + np.float32(step) * np.sign(g).astype(np.float32), images, eps)
    return x


def _mlp_params(seed=2, hidden=16):
    rng = np.random.default_rng(seed)
    w1 = (rng.normal(size=(NUM_PIXELS, hidden)) / 3.0).astype(np.float32)
    w2 = (rng.normal(size=(hidden, NUM_CLASSES)) * 2.0).astype(np.float32)
    return w1, w2


def _np_mlp_ce_grad(x, w1, w2, labels):
    """d CE / d x of logits = tanh(x W1) W2, by the chain rule, float64."""
    h = np.tanh(x.reshape(len(x), -1).astype(np.float64) @ w1)
    logits = h @ w2
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    probs[np.arange(len(x)), labels] -= 1.0
    return (((probs @ w2.T) * (1.0 - h**2)) @ w1.T).reshape(x.shape)


def _np_mi_fgsm(images, grad_fn, labels, eps, step, steps, decay):
    x, momentum = images.copy(), np.zeros(images.shape, np.float64)
    for _ in range(steps):
        g = grad_fn(x, labels)
        l1 = np.abs(g).sum(axis=(1, 2, 3), keepdims=True)
        momentum = decay * momentum + g / l1
        x = _np_project(
            x + np.float32(step) * np.sign(momentum).astype(np.float32), images, eps
        )
    return x


def _ce(logits_fn, x, labels):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=logits_fn(tf.constant(x))
    ).numpy()


def _attack(name, logits_fn, images, labels, **kwargs):
    if name == "pgd":
        kwargs = {"step_size": EPS / 2, "num_steps": 4, "seed": [3, 4], **kwargs}
        return pgd.pgd_linf(logits_fn, images, labels, epsilon=EPS, **kwargs)
    if name == "fgsm":
        return pgd.fgsm(logits_fn, images, labels, epsilon=EPS, **kwargs)
    return pgd.mi_fgsm(logits_fn, images, labels, epsilon=EPS, num_steps=4, **kwargs)


ATTACKS = (("pgd",), ("fgsm",), ("mi_fgsm",))


class BoundsTest(parameterized.TestCase):
    @parameterized.parameters(*ATTACKS)
    def test_within_epsilon_and_unit_interval(self, name):
        images = _images()
        x_adv = _attack(name, _mlp_logits_fn(), images, _labels()).numpy()

        self.assertEqual(x_adv.dtype, np.float32)
        self.assertEqual(x_adv.shape, images.shape)
        delta = np.abs(x_adv.astype(np.float64) - images)
        self.assertLessEqual(delta.max(), EPS + 1e-6)
        self.assertGreaterEqual(x_adv.min(), 0.0)
        self.assertLessEqual(x_adv.max(), 1.0)
        # Not vacuous: the attack moves pixels to the boundary of the ball.
        self.assertGreater(delta.max(), EPS - 1e-6)

    @parameterized.parameters(*ATTACKS)
    def test_output_carries_no_gradient(self, name):
        images = tf.constant(_images())
        with tf.GradientTape() as tape:
            tape.watch(images)
            x_adv = _attack(name, _mlp_logits_fn(), images, _labels())
        self.assertIsNone(tape.gradient(x_adv, images))

    def test_large_step_is_clipped(self):
        images = _images()
        x_adv = pgd.pgd_linf(
            _mlp_logits_fn(), images, _labels(), epsilon=EPS, step_size=0.5,
            num_steps=3, seed=[0, 0],
        ).numpy()
        self.assertLessEqual(np.abs(x_adv.astype(np.float64) - images).max(), EPS + 1e-6)
        self.assertGreaterEqual(x_adv.min(), 0.0)
        self.assertLessEqual(x_adv.max(), 1.0)

    def test_random_start_matches_initialiser(self):
        """PGD with step_size 0 returns the projected uniform start."""
        images = _images()
        x_start = pgd.pgd_linf(
            _mlp_logits_fn(), images, _labels(), epsilon=EPS, step_size=0.0,
            num_steps=1, seed=[5, 6],
        ).numpy()
        noise = x_start - images
        interior = (images > EPS) & (images < 1 - EPS)
        # Uniform on [-ε, ε): mean near 0, spread near ε/√3, both signs used.
        self.assertLess(abs(noise[interior].mean()), 0.15 * EPS)
        np.testing.assert_allclose(noise[interior].std(), EPS / np.sqrt(3), rtol=0.2)
        self.assertLessEqual(np.abs(noise).max(), EPS + 1e-6)
        np.testing.assert_array_equal(
            x_start, core.linf_random_start(tf.constant(images), EPS, [5, 6]).numpy()
        )


class ClosedFormTest(parameterized.TestCase):
    @parameterized.parameters((0, 1.0), (1, -1.0))
    def test_fgsm_two_class_linear_model(self, label, direction):
        # Logits [0, x·w]: with label 0, dCE/dx = σ(x·w)·w, so the step is
        # ε·sign(w); with label 1, dCE/dx = -(1 - σ(x·w))·w.
        images = _images()
        w = np.random.default_rng(7).normal(size=(NUM_PIXELS,)).astype(np.float32)
        w_t = tf.constant(w)

        def logits_fn(x):
            score = tf.linalg.matvec(tf.reshape(x, [-1, NUM_PIXELS]), w_t)
            return tf.stack([tf.zeros_like(score), score], axis=1)

        labels = np.full((SHAPE[0],), label, np.int32)
        x_adv = pgd.fgsm(logits_fn, images, labels, epsilon=EPS).numpy()

        step = np.float32(EPS) * np.float32(direction) * np.sign(w).reshape(SHAPE[1:])
        expected = np.clip(images + step, np.float32(0), np.float32(1))
        np.testing.assert_array_equal(x_adv, expected)

    def test_pgd_one_step_without_random_start_equals_fgsm(self):
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()
        x_pgd = pgd.pgd_linf(
            logits_fn, images, labels, epsilon=EPS, step_size=EPS, num_steps=1,
            random_start=False,
        )
        x_fgsm = pgd.fgsm(logits_fn, images, labels, epsilon=EPS)
        np.testing.assert_array_equal(x_pgd.numpy(), x_fgsm.numpy())
        self.assertGreater(np.abs(x_fgsm.numpy() - images).max(), 0.0)

    @parameterized.parameters((1, 1.0), (3, 0.5), (6, 1.0))
    def test_pgd_without_random_start_matches_numpy(self, steps, step_scale):
        images, labels = _images(), _labels()
        w, b = _linear_params()
        step = EPS * step_scale / 2
        x_adv = pgd.pgd_linf(
            _linear_logits_fn(w, b), images, labels, epsilon=EPS, step_size=step,
            num_steps=steps, random_start=False,
        ).numpy()
        expected = _np_pgd(images, w, b, labels, EPS, step, steps)
        np.testing.assert_allclose(x_adv, expected, rtol=0, atol=1e-6)

    def test_pgd_with_random_start_matches_numpy_from_same_start(self):
        images, labels = _images(), _labels()
        w, b = _linear_params()
        start = core.linf_random_start(tf.constant(images), EPS, [8, 9]).numpy()
        x_adv = pgd.pgd_linf(
            _linear_logits_fn(w, b), images, labels, epsilon=EPS, step_size=EPS / 4,
            num_steps=3, seed=[8, 9],
        ).numpy()
        expected = _np_pgd(images, w, b, labels, EPS, EPS / 4, 3, start=start)
        np.testing.assert_allclose(x_adv, expected, rtol=0, atol=1e-6)

    @parameterized.parameters((None,), (EPS / 3,))
    def test_mi_fgsm_one_step_equals_fgsm_with_step_alpha(self, step_size):
        images, labels = _images(), _labels()
        w, b = _linear_params()
        x_adv = pgd.mi_fgsm(
            _linear_logits_fn(w, b), images, labels, epsilon=EPS, num_steps=1,
            step_size=step_size,
        ).numpy()
        alpha = EPS if step_size is None else step_size
        grad = _np_ce_grad(images, w, b, labels)
        expected = np.clip(
            images + np.float32(alpha) * np.sign(grad).astype(np.float32),
            np.float32(0), np.float32(1),
        )
        np.testing.assert_allclose(x_adv, expected, rtol=0, atol=1e-6)

    @parameterized.product(
        model=("linear", "mlp"), decay_and_step=((1.0, None), (0.5, EPS / 2), (0.0, EPS / 3))
    )
    def test_mi_fgsm_matches_numpy(self, model, decay_and_step):
        decay, step_size = decay_and_step
        images, labels = _images(), _labels()
        if model == "linear":
            w, b = _linear_params()
            logits_fn = _linear_logits_fn(w, b)
            grad_fn = lambda x, y: _np_ce_grad(x, w, b, y)
        else:
            w1, w2 = _mlp_params()
            logits_fn = _mlp_logits_fn()
            grad_fn = lambda x, y: _np_mlp_ce_grad(x, w1, w2, y)
        x_adv = pgd.mi_fgsm(
            logits_fn, images, labels, epsilon=EPS, num_steps=5, decay=decay,
            step_size=step_size,
        ).numpy()
        alpha = EPS / 5 if step_size is None else step_size
        expected = _np_mi_fgsm(images, grad_fn, labels, EPS, alpha, 5, decay)
        np.testing.assert_allclose(x_adv, expected, rtol=0, atol=1e-6)

    def test_mlp_gradient_reference(self):
        """The numpy MLP gradient used above agrees with autodiff."""
        images, labels = _images(), _labels()
        x = tf.constant(images)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=labels, logits=_mlp_logits_fn()(x)))
        w1, w2 = _mlp_params()
        np.testing.assert_allclose(
            tape.gradient(loss, x).numpy(), _np_mlp_ce_grad(images, w1, w2, labels),
            rtol=1e-4, atol=1e-6,
        )

    def test_custom_loss_fn(self):
        # Ascending logit 0 of a linear model steps along sign(w[:, 0]).
        images, labels = _images(), _labels()
        w, b = _linear_params()
        x_adv = pgd.fgsm(
            _linear_logits_fn(w, b), images, labels, epsilon=EPS,
            loss_fn=lambda logits, _: logits[:, 0],
        ).numpy()
        step = np.float32(EPS) * np.sign(w[:, 0]).reshape(SHAPE[1:])
        expected = np.clip(images + step, np.float32(0), np.float32(1))
        np.testing.assert_array_equal(x_adv, expected)


class ObjectiveTest(parameterized.TestCase):
    @parameterized.parameters(*ATTACKS)
    def test_increases_loss(self, name):
        images, labels = _images(), _labels()
        w, b = _linear_params()
        x_adv = _attack(name, _linear_logits_fn(w, b), images, labels).numpy()
        clean = _np_ce(images, w, b, labels)
        adv = _np_ce(x_adv, w, b, labels)
        self.assertTrue(np.all(adv > clean), msg=f"clean={clean} adv={adv}")

    @parameterized.parameters(*ATTACKS)
    def test_targeted_lowers_target_loss(self, name):
        images, labels = _images(), _labels()
        targets = (labels + 1) % NUM_CLASSES
        w, b = _linear_params()
        x_adv = _attack(
            name, _linear_logits_fn(w, b), images, labels, targeted=True,
            target_labels=targets,
        ).numpy()
        clean = _np_ce(images, w, b, targets)
        adv = _np_ce(x_adv, w, b, targets)
        self.assertTrue(np.all(adv < clean), msg=f"clean={clean} adv={adv}")

    def test_restarts_keep_best_per_sample(self):
        images, labels, logits_fn = _images(shape=(8, 6, 6, 2)), _labels(8), _mlp_logits_fn()
        kwargs = dict(epsilon=EPS, step_size=EPS / 4, num_steps=2)
        seed = tf.constant([11, 12])
        seeds = [seed] + [
            tf.random.experimental.stateless_fold_in(seed, r, alg="philox")
            for r in (1, 2)
        ]
        singles = np.stack([
            pgd.pgd_linf(logits_fn, images, labels, seed=s, **kwargs).numpy()
            for s in seeds
        ])
        single_losses = np.stack([_ce(logits_fn, x, labels) for x in singles])
        x_best = pgd.pgd_linf(
            logits_fn, images, labels, seed=seed, num_restarts=3, **kwargs
        ).numpy()
        best_losses = _ce(logits_fn, x_best, labels)

        self.assertTrue(np.all(best_losses >= single_losses.max(axis=0)))
        np.testing.assert_array_equal(
            x_best, singles[single_losses.argmax(axis=0), np.arange(8)]
        )
        # Not vacuous: the restarts differ, and different samples pick
        # different restarts.
        self.assertGreater(np.abs(singles[0] - singles[1]).max(), 0.0)
        self.assertGreater(len(set(single_losses.argmax(axis=0))), 1)
        np.testing.assert_array_equal(
            core.restart_seeds(seed, 3).numpy(), np.stack([s.numpy() for s in seeds])
        )

    def test_restarts_without_random_start_run_once(self):
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()
        kwargs = dict(epsilon=EPS, step_size=EPS / 4, num_steps=2, random_start=False)
        np.testing.assert_array_equal(
            pgd.pgd_linf(logits_fn, images, labels, num_restarts=3, **kwargs).numpy(),
            pgd.pgd_linf(logits_fn, images, labels, **kwargs).numpy(),
        )


class SeedTest(parameterized.TestCase):
    def test_same_seed_same_output_different_seed_different_output(self):
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()

        def run(seed):
            return pgd.pgd_linf(
                logits_fn, images, labels, epsilon=EPS, step_size=EPS / 4,
                num_steps=2, seed=seed,
            ).numpy()

        first = run([1, 2])
        np.testing.assert_array_equal(first, run([1, 2]))
        np.testing.assert_array_equal(first, run(tf.constant([1, 2], tf.int64)))
        self.assertGreater(np.abs(first - run([1, 3])).max(), 1e-3)


class ModelTest(parameterized.TestCase):
    def _bn_dropout_model(self):
        keras.utils.set_random_seed(0)
        inputs = keras.Input(SHAPE[1:])
        x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dropout(0.5)(x)
        outputs = keras.layers.Dense(NUM_CLASSES)(x)
        return keras.Model(inputs, outputs)

    @parameterized.parameters(*ATTACKS)
    def test_attack_leaves_model_unchanged(self, name):
        model = self._bn_dropout_model()
        images, labels = _images(), _labels()
        # Move the moving statistics off their initial values first.
        model(images, training=True)
        before = [v.numpy().copy() for v in model.weights]
        outputs_before = model(images, training=False).numpy()

        x_adv = _attack(
            name, lambda x: model(x, training=False), images, labels
        ).numpy()

        self.assertGreater(np.abs(x_adv - images).max(), 0.0)
        for old, new in zip(before, model.weights):
            np.testing.assert_array_equal(old, new.numpy(), err_msg=new.path)
        np.testing.assert_array_equal(outputs_before, model(images, training=False).numpy())
        # The check can fail: a training-mode call does change the statistics.
        model(images, training=True)
        self.assertFalse(
            all(np.array_equal(o, v.numpy()) for o, v in zip(before, model.weights))
        )

    @parameterized.parameters(*ATTACKS)
    def test_attack_uses_lambda_from_closure(self, name):
        # logits = A·x + λ·(B·x): λ changes the direction of the gradient.
        keras.utils.set_random_seed(1)
        image = keras.Input(SHAPE[1:], name="image")
        lam = keras.Input((1,), name="lambda")
        flat = keras.layers.Flatten()(image)
        a = keras.layers.Dense(NUM_CLASSES, name="a")(flat)
        b = keras.layers.Dense(NUM_CLASSES, name="b")(flat)
        logits = keras.layers.Add()([a, keras.layers.Multiply()([b, lam])])
        model = keras.Model({"image": image, "lambda": lam}, logits)
        images, labels = _images(), _labels()

        def attack_at(value):
            lam_value = tf.fill([SHAPE[0], 1], value)
            logits_fn = lambda x: model({"image": x, "lambda": lam_value}, training=False)
            return _attack(name, logits_fn, images, labels).numpy()

        x0, x0_again, x5 = attack_at(0.0), attack_at(0.0), attack_at(5.0)
        np.testing.assert_array_equal(x0, x0_again)
        self.assertGreater(np.abs(x0 - x5).max(), 1e-3)


class CompileTest(parameterized.TestCase):
    @parameterized.product(
        name=("pgd", "pgd_restarts", "fgsm", "mi_fgsm"), jit_compile=(False, True)
    )
    def test_tf_function_matches_eager(self, name, jit_compile):
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()
        kwargs = {"num_restarts": 2} if name == "pgd_restarts" else {}
        name = "pgd" if name == "pgd_restarts" else name
        seed = tf.constant([21, 22], tf.int64)

        def attack(x, y, s):
            extra = {"seed": s, **kwargs} if name == "pgd" else {}
            return _attack(name, logits_fn, x, y, **extra)

        eager = attack(images, labels, seed).numpy()
        compiled = tf.function(attack, jit_compile=jit_compile)(images, labels, seed)
        np.testing.assert_allclose(compiled.numpy(), eager, rtol=0, atol=1e-6)
        self.assertGreater(np.abs(eager - images).max(), 0.0)

    def test_loop_is_not_unrolled(self):
        logits_fn = _mlp_logits_fn()

        def num_ops(num_steps):
            fn = tf.function(
                lambda x, y: pgd.pgd_linf(
                    logits_fn, x, y, epsilon=EPS, step_size=EPS / 4,
                    num_steps=num_steps, seed=[0, 1],
                )
            )
            graph = fn.get_concrete_function(
                tf.TensorSpec(SHAPE, tf.float32), tf.TensorSpec(SHAPE[:1], tf.int32)
            ).graph
            return len(graph.get_operations())

        self.assertEqual(num_ops(2), num_ops(40))

    @parameterized.parameters(*ATTACKS)
    def test_unknown_and_empty_batch(self, name):
        logits_fn = _mlp_logits_fn()
        fn = tf.function(
            lambda x, y: _attack(name, logits_fn, x, y),
            input_signature=[
                tf.TensorSpec((None,) + SHAPE[1:], tf.float32),
                tf.TensorSpec((None,), tf.int32),
            ],
        )
        images, labels = _images(), _labels()
        np.testing.assert_allclose(
            fn(images, labels).numpy(),
            _attack(name, logits_fn, images, labels).numpy(),
            rtol=0,
            atol=1e-6,
        )
        empty = np.zeros((0,) + SHAPE[1:], np.float32)
        no_labels = np.zeros((0,), np.int32)
        self.assertEqual(fn(empty, no_labels).shape, (0,) + SHAPE[1:])
        self.assertEqual(
            _attack(name, logits_fn, empty, no_labels).shape, (0,) + SHAPE[1:]
        )

    def test_empty_batch_with_restarts(self):
        empty = np.zeros((0,) + SHAPE[1:], np.float32)
        x_adv = pgd.pgd_linf(
            _mlp_logits_fn(), empty, np.zeros((0,), np.int32), epsilon=EPS,
            step_size=EPS / 4, num_steps=2, num_restarts=2, seed=[0, 0],
        )
        self.assertEqual(x_adv.shape, (0,) + SHAPE[1:])

    def test_mirrored_strategy_replica_context(self):
        strategy = testing.two_cpu_mirrored_strategy()
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()
        half = SHAPE[0] // 2
        config = config_lib.AttackConfig(epsilon=EPS, step_size=EPS / 4, num_steps=3)

        def shard(ctx):
            i = ctx.replica_id_in_sync_group
            return images[i * half:(i + 1) * half], labels[i * half:(i + 1) * half]

        def replica_fn(x, y):
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            seed = tf.stack([tf.constant(7), replica])
            return registry.run_attack(config, logits_fn, x, y, seed=seed)

        x, y = strategy.experimental_distribute_values_from_function(shard)
        result = tf.function(lambda x, y: strategy.run(replica_fn, args=(x, y)))(x, y)
        parts = strategy.experimental_local_results(result)

        for i, part in enumerate(parts):
            expected = registry.run_attack(
                config, logits_fn, images[i * half:(i + 1) * half],
                labels[i * half:(i + 1) * half], seed=[7, i],
            )
            np.testing.assert_allclose(part.numpy(), expected.numpy(), rtol=0, atol=1e-6)


class ErrorTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("negative_epsilon", dict(epsilon=-0.1), r"`epsilon` must be .* Received: epsilon=-0.1"),
        ("nan_epsilon", dict(epsilon=float("nan")), r"`epsilon` must be"),
        ("negative_step", dict(step_size=-1.0), r"`step_size` must be .* Received: step_size=-1.0"),
        ("zero_steps", dict(num_steps=0), r"`num_steps` must be an int >= 1. Received: num_steps=0"),
        ("float_steps", dict(num_steps=2.0), r"`num_steps` must be an int >= 1"),
        ("zero_restarts", dict(num_restarts=0), r"`num_restarts` must be .* Received: num_restarts=0"),
        ("no_seed", dict(seed=None), r"`seed` must be .* Received: seed=None"),
        ("bad_seed", dict(seed=[1, 2, 3]), r"`seed` must be a shape \[2\] integer"),
        ("float_seed", dict(seed=[1.0, 2.0]), r"`seed` must be a shape \[2\] integer"),
        ("rank3_images", dict(images=np.zeros((4, 6, 6), np.float32)),
         r"`images` must be a float tensor of shape \[N, H, W, C\]"),
        ("int_images", dict(images=np.zeros(SHAPE, np.uint8)), r"`images` must be a float"),
        ("labels_length", dict(labels=np.zeros((3,), np.int32)), r"`labels` must be integer"),
        ("labels_rank", dict(labels=np.zeros((4, 3), np.int32)), r"`labels` must be integer"),
        ("float_labels", dict(labels=np.zeros((4,), np.float32)), r"`labels` must be integer"),
        ("targeted_no_targets", dict(targeted=True), r"`target_labels` must be given"),
        ("targets_not_targeted", dict(target_labels=np.zeros((4,), np.int32)),
         r"`target_labels` must be None"),
        ("targets_length", dict(targeted=True, target_labels=np.zeros((2,), np.int32)),
         r"`target_labels` must be integer"),
    )
    def test_pgd_rejects(self, overrides, pattern):
        kwargs = dict(
            images=_images(), labels=_labels(), epsilon=EPS, step_size=EPS / 4,
            num_steps=2, seed=[0, 1],
        )
        kwargs.update(overrides)
        images, labels = kwargs.pop("images"), kwargs.pop("labels")
        with self.assertRaisesRegex(ValueError, pattern):
            pgd.pgd_linf(_mlp_logits_fn(), images, labels, **kwargs)

    def test_fgsm_and_mi_fgsm_reject(self):
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()
        with self.assertRaisesRegex(ValueError, r"Received: epsilon=-1"):
            pgd.fgsm(logits_fn, images, labels, epsilon=-1)
        with self.assertRaisesRegex(ValueError, r"Received: num_steps=0"):
            pgd.mi_fgsm(logits_fn, images, labels, epsilon=EPS, num_steps=0)
        with self.assertRaisesRegex(ValueError, r"Received: decay=-0.5"):
            pgd.mi_fgsm(logits_fn, images, labels, epsilon=EPS, decay=-0.5)
        with self.assertRaisesRegex(ValueError, r"`target_labels` must be given"):
            pgd.mi_fgsm(logits_fn, images, labels, epsilon=EPS, targeted=True)

    @parameterized.parameters(*ATTACKS)
    def test_loss_independent_of_images(self, name):
        constant = lambda x: tf.zeros([tf.shape(x)[0], NUM_CLASSES])
        with self.assertRaisesRegex(ValueError, "does not depend on the images"):
            _attack(name, constant, _images(), _labels())
        # Also when the error surfaces while tracing.
        with self.assertRaisesRegex(ValueError, "does not depend on the images"):
            tf.function(lambda x, y: _attack(name, constant, x, y))(_images(), _labels())

    def test_loss_fn_must_be_per_sample(self):
        with self.assertRaisesRegex(ValueError, r"`loss_fn` must return one loss per sample"):
            pgd.fgsm(
                _mlp_logits_fn(), _images(), _labels(), epsilon=EPS,
                loss_fn=lambda logits, labels: tf.reduce_sum(logits),
            )

    def test_logits_must_be_rank_2(self):
        with self.assertRaisesRegex(ValueError, r"`logits` must have shape \[N, K\]"):
            pgd.fgsm(lambda x: x, _images(), _labels(), epsilon=EPS)
