"""Tests for oat_tf.attacks.multi_exit: the attack forms against numpy
references on a toy linear multi-exit model, the max-average choice, seeds,
bounds, tf.function, the delay-exit attack and argument errors."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from oat_tf import config as config_lib
from oat_tf.attacks import core
from oat_tf.attacks import multi_exit
from oat_tf.attacks import pgd
from oat_tf.models import exit_rule
from tests import testing

EPS = 0.1
SHAPE = (8, 4, 4, 2)  # N, H, W, C
NUM_PIXELS = 4 * 4 * 2
NUM_CLASSES = 3
NAMES = ("exit_1", "exit_2", "final")

PGD = config_lib.AttackConfig(
    name="pgd", epsilon=EPS, step_size=EPS / 3, num_steps=4, random_start=True
)
PGD_NO_START = config_lib.AttackConfig(
    name="pgd", epsilon=EPS, step_size=EPS / 3, num_steps=3, random_start=False
)
FGSM = config_lib.AttackConfig(name="fgsm", epsilon=EPS)


# === Toy models and numpy references ===


def _images(seed=0, shape=SHAPE):
    return testing.images_with_extremes(shape, seed)


def _labels(n=SHAPE[0]):
    return np.arange(n, dtype=np.int32) % NUM_CLASSES


def _linear_heads(seed=1, num_outputs=len(NAMES)):
    """One linear head [P, K] + bias [K] per output, float32."""
    rng = np.random.default_rng(seed)
    return [
        (
            (rng.normal(size=(NUM_PIXELS, NUM_CLASSES)) * 0.3).astype(np.float32),
            rng.normal(size=(NUM_CLASSES,)).astype(np.float32),
        )
        for _ in range(num_outputs)
    ]


def _linear_logits_fn(heads, names=NAMES):
    tensors = [(tf.constant(w), tf.constant(b)) for w, b in heads]

    def logits_fn(x):
        flat = tf.reshape(x, [-1, NUM_PIXELS])
        return {name: tf.matmul(flat, w) + b for name, (w, b) in zip(names, tensors)}

    return logits_fn


def _mlp_logits_fn(seed=2, hidden=12, names=NAMES):
    """A shared tanh trunk with one linear head per output (non-linear)."""
    rng = np.random.default_rng(seed)
    trunk = tf.constant((rng.normal(size=(NUM_PIXELS, hidden)) / 2.0).astype(np.float32))
    heads = [
        tf.constant((rng.normal(size=(hidden, NUM_CLASSES)) * 1.5).astype(np.float32))
        for _ in names
    ]

    def logits_fn(x):
        h = tf.tanh(tf.matmul(tf.reshape(x, [-1, NUM_PIXELS]), trunk))
        return {name: tf.matmul(h, head) for name, head in zip(names, heads)}

    return logits_fn


def _np_softmax(logits):
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _np_ce(x, head, labels):
    """Per-sample CE of one linear head, float64."""
    w, b = head
    probs = _np_softmax(x.reshape(len(x), -1).astype(np.float64) @ w + b)
    return -np.log(probs[np.arange(len(x)), labels])


def _np_ce_grad(x, head, labels):
    """d CE / d x of one linear head in closed form: W (softmax - onehot)."""
    w, b = head
    probs = _np_softmax(x.reshape(len(x), -1).astype(np.float64) @ w + b)
    probs[np.arange(len(x)), labels] -= 1.0
    return (probs @ w.T.astype(np.float64)).reshape(x.shape)


def _np_weighted_grad(x, heads, labels, weights):
    """Gradient of Σ_i w_i CE_i, with weights [N, M + 1]."""
    grads = np.stack([_np_ce_grad(x, head, labels) for head in heads], axis=1)
    return np.einsum("no,no...->n...", weights, grads)


def _np_project(x, images, eps):
    x = np.clip(x, images - np.float32(eps), images + np.float32(eps))
    return np.clip(x, np.float32(0), np.float32(1)).astype(np.float32)


def _np_sign_ascent(images, start, grad_fn, eps, step, steps):
    x = start.copy()
    for _ in range(steps):
        x = _np_project(x + np.float32(step) * np.sign(grad_fn(x)).astype(np.float32), images, eps)
    return x


def _attack(form, logits_fn, images, labels, attack=PGD, seed=(3, 4), **kwargs):
    if form == "single":
        kwargs.setdefault("exit_name", "exit_2")
    return multi_exit.multi_exit_attack(
        logits_fn, images, labels, form=form, attack=attack, output_names=NAMES,
        seed=list(seed) if isinstance(seed, tuple) else seed, **kwargs,
    )


def _fold(seed, index):
    return tf.cast(
        tf.random.experimental.stateless_fold_in(tf.constant(seed, tf.int64), index, alg="philox"),
        tf.int64,
    )


FORMS = tuple((form,) for form in multi_exit.FORMS)


# === Forms against numpy ===


class FormTest(parameterized.TestCase):
    @parameterized.parameters(0, 1, 2)
    def test_fgsm_single_matches_numpy(self, index):
        images, labels, heads = _images(), _labels(), _linear_heads()
        x_adv = _attack(
            "single", _linear_logits_fn(heads), images, labels, attack=FGSM,
            seed=None, exit_name=NAMES[index],
        ).numpy()
        grad = _np_ce_grad(images, heads[index], labels)
        expected = _np_project(images + np.float32(EPS) * np.sign(grad).astype(np.float32), images, EPS)
        np.testing.assert_array_equal(x_adv, expected)

    def test_fgsm_average_matches_hand_derived_mean_ce(self):
        images, labels, heads = _images(), _labels(), _linear_heads()
        x_adv = _attack(
            "average", _linear_logits_fn(heads), images, labels, attack=FGSM, seed=None
        ).numpy()
        # ∇ (1/3) Σ_i CE_i = (1/3) Σ_i W_i (softmax_i − onehot).
        uniform = np.full((SHAPE[0], len(NAMES)), 1.0 / len(NAMES))
        grad = _np_weighted_grad(images, heads, labels, uniform)
        expected = _np_project(images + np.float32(EPS) * np.sign(grad).astype(np.float32), images, EPS)
        np.testing.assert_array_equal(x_adv, expected)

    def test_fgsm_random_matches_numpy_with_drawn_weights(self):
        images, labels, heads = _images(), _labels(), _linear_heads()
        seed = [5, 6]
        x_adv = _attack(
            "random", _linear_logits_fn(heads), images, labels, attack=FGSM, seed=seed
        ).numpy()
        weights = multi_exit.random_exit_weights(SHAPE[0], len(NAMES), seed).numpy()
        grad = _np_weighted_grad(images, heads, labels, weights.astype(np.float64))
        expected = _np_project(images + np.float32(EPS) * np.sign(grad).astype(np.float32), images, EPS)
        np.testing.assert_array_equal(x_adv, expected)

    def test_pgd_average_matches_numpy_from_same_start(self):
        images, labels, heads = _images(), _labels(), _linear_heads()
        seed = [7, 8]
        x_adv = _attack("average", _linear_logits_fn(heads), images, labels, seed=seed).numpy()
        start = core.linf_random_start(tf.constant(images), EPS, seed).numpy()
        uniform = np.full((SHAPE[0], len(NAMES)), 1.0 / len(NAMES))
        expected = _np_sign_ascent(
            images, start, lambda x: _np_weighted_grad(x, heads, labels, uniform),
            EPS, PGD.step_size, PGD.num_steps,
        )
        np.testing.assert_allclose(x_adv, expected, rtol=0, atol=1e-6)

    def test_pgd_random_matches_numpy(self):
        """Weights from `seed`; the start from stateless_fold_in(seed, 1)."""
        images, labels, heads = _images(), _labels(), _linear_heads()
        seed = [9, 10]
        x_adv = _attack("random", _linear_logits_fn(heads), images, labels, seed=seed).numpy()
        weights = multi_exit.random_exit_weights(SHAPE[0], len(NAMES), seed).numpy()
        start = core.linf_random_start(tf.constant(images), EPS, _fold(seed, 1)).numpy()
        expected = _np_sign_ascent(
            images, start,
            lambda x: _np_weighted_grad(x, heads, labels, weights.astype(np.float64)),
            EPS, PGD.step_size, PGD.num_steps,
        )
        np.testing.assert_allclose(x_adv, expected, rtol=0, atol=1e-6)

    @parameterized.parameters(*[(name, restarts) for name in NAMES for restarts in (1, 3)])
    def test_single_equals_pgd_linf_on_that_exit(self, name, restarts):
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()
        attack = config_lib.AttackConfig(
            name="pgd", epsilon=EPS, step_size=EPS / 3, num_steps=3, num_restarts=restarts
        )
        x_adv = _attack(
            "single", logits_fn, images, labels, attack=attack, seed=(11, 12), exit_name=name
        ).numpy()
        expected = pgd.pgd_linf(
            lambda x: logits_fn(x)[name], images, labels, epsilon=EPS,
            step_size=EPS / 3, num_steps=3, num_restarts=restarts, seed=[11, 12],
        ).numpy()
        np.testing.assert_array_equal(x_adv, expected)

    def test_restarts_keep_best_objective_per_sample(self):
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()
        runs = [
            _attack(
                "average", logits_fn, images, labels, attack=PGD, seed=tuple(s.numpy())
            ).numpy()
            for s in core.restart_seeds([13, 14], 3)
        ]
        attack = config_lib.AttackConfig(
            name="pgd", epsilon=EPS, step_size=EPS / 3, num_steps=4, num_restarts=3
        )
        x_adv = _attack("average", logits_fn, images, labels, attack=attack, seed=(13, 14)).numpy()

        def average_ce(x):
            return multi_exit.exit_losses(logits_fn(tf.constant(x)), labels, NAMES).numpy().mean(1)

        objectives = np.stack([average_ce(x) for x in runs])  # [R, N]
        expected = np.stack(runs)[objectives.argmax(0), np.arange(SHAPE[0])]
        np.testing.assert_array_equal(x_adv, expected)
        self.assertGreater(len(set(objectives.argmax(0).tolist())), 1)

    def test_forms_raise_their_objective(self):
        images, labels, heads = _images(), _labels(), _linear_heads()
        logits_fn = _linear_logits_fn(heads)
        clean = np.stack([_np_ce(images, h, labels) for h in heads], 1)
        for form in ("average", "max_average"):
            x_adv = _attack(form, logits_fn, images, labels).numpy()
            adv = np.stack([_np_ce(x_adv, h, labels) for h in heads], 1)
            self.assertGreater(adv.mean(1).mean(), clean.mean(1).mean() + 0.1, form)
        x_adv = _attack("single", logits_fn, images, labels, exit_name="exit_1").numpy()
        self.assertTrue(np.all(_np_ce(x_adv, heads[0], labels) > clean[:, 0]))


# === Max-average ===


class MaxAverageTest(parameterized.TestCase):
    def _check_choice(self, x_adv, candidates, heads, labels):
        averages = np.stack(
            [np.stack([_np_ce(c, h, labels) for h in heads], 1).mean(1) for c in candidates],
            axis=1,
        )  # [N, M + 1]
        choice = averages.argmax(1)
        expected = np.stack(candidates, 1)[np.arange(len(choice)), choice]
        np.testing.assert_array_equal(x_adv, expected)
        return choice

    def test_fgsm_picks_highest_average_loss_per_sample(self):
        images, labels = _images(shape=(16,) + SHAPE[1:]), _labels(16)
        heads = _linear_heads(seed=4)
        logits_fn = _linear_logits_fn(heads)
        x_adv = _attack("max_average", logits_fn, images, labels, attack=FGSM, seed=None).numpy()
        # The single FGSM attacks, by hand.
        candidates = [
            _np_project(
                images + np.float32(EPS) * np.sign(_np_ce_grad(images, h, labels)).astype(np.float32),
                images, EPS,
            )
            for h in heads
        ]
        choice = self._check_choice(x_adv, candidates, heads, labels)
        # Not vacuous: samples pick different exits.
        self.assertGreater(len(set(choice.tolist())), 1)

    def test_pgd_picks_among_single_attacks_with_output_seeds(self):
        images, labels = _images(shape=(16,) + SHAPE[1:]), _labels(16)
        heads = _linear_heads(seed=4)
        logits_fn = _linear_logits_fn(heads)
        seed = (15, 16)
        x_adv = _attack("max_average", logits_fn, images, labels, seed=seed).numpy()
        seeds = multi_exit.output_seeds(list(seed), len(NAMES)).numpy()
        candidates = [
            _attack("single", logits_fn, images, labels, seed=tuple(s), exit_name=name).numpy()
            for name, s in zip(NAMES, seeds)
        ]
        choice = self._check_choice(x_adv, candidates, heads, labels)
        self.assertGreater(len(set(choice.tolist())), 1)

    def test_select_max_average(self):
        candidates = tf.reshape(tf.range(3 * 2 * 4, dtype=tf.float32), [3, 2, 2, 2, 1])
        losses = tf.constant([[1.0, 2.0], [float("nan"), 0.5], [3.0, 3.0]])
        chosen = multi_exit.select_max_average(candidates, losses).numpy()
        np.testing.assert_array_equal(chosen, candidates.numpy()[[0, 1, 2], [1, 1, 0]])

    def test_output_seeds_are_fold_ins(self):
        seeds = multi_exit.output_seeds([1, 2], 3).numpy()
        self.assertEqual(seeds.shape, (3, 2))
        for i in range(3):
            np.testing.assert_array_equal(seeds[i], _fold([1, 2], i).numpy())


# === Random weights ===


class RandomWeightsTest(parameterized.TestCase):
    def test_on_simplex_and_uniform(self):
        weights = multi_exit.random_exit_weights(20000, 3, [1, 2]).numpy()
        self.assertEqual(weights.shape, (20000, 3))
        self.assertEqual(weights.dtype, np.float32)
        self.assertGreater(weights.min(), 0.0)
        np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-6)
        # Flat Dirichlet: each marginal is Beta(1, 2), mean 1/3, P(w < 1/2) = 3/4.
        np.testing.assert_allclose(weights.mean(0), 1.0 / 3.0, atol=0.01)
        np.testing.assert_allclose((weights < 0.5).mean(0), 0.75, atol=0.015)

    def test_reproducible_from_seed(self):
        a = multi_exit.random_exit_weights(5, 4, [3, 4]).numpy()
        np.testing.assert_array_equal(a, multi_exit.random_exit_weights(5, 4, [3, 4]).numpy())
        self.assertFalse(np.allclose(a, multi_exit.random_exit_weights(5, 4, [3, 5]).numpy()))
        fn = tf.function(
            lambda n: multi_exit.random_exit_weights(n, 4, [3, 4]),
            input_signature=[tf.TensorSpec([], tf.int32)],
            autograph=False,
        )
        np.testing.assert_array_equal(fn(tf.constant(5)).numpy(), a)

    def test_random_form_reproducible(self):
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()
        a = _attack("random", logits_fn, images, labels, seed=(1, 1)).numpy()
        np.testing.assert_array_equal(a, _attack("random", logits_fn, images, labels, seed=(1, 1)).numpy())
        b = _attack("random", logits_fn, images, labels, attack=FGSM, seed=(1, 2)).numpy()
        c = _attack("random", logits_fn, images, labels, attack=FGSM, seed=(1, 1)).numpy()
        self.assertFalse(np.array_equal(b, c))  # FGSM too: the weights differ.


# === Invariants ===


class InvariantTest(parameterized.TestCase):
    @parameterized.product(form=multi_exit.FORMS, attacker=("pgd", "fgsm"))
    def test_bounds_no_gradient_and_seed(self, form, attacker):
        images, labels, logits_fn = tf.constant(_images()), _labels(), _mlp_logits_fn()
        attack = PGD if attacker == "pgd" else FGSM
        with tf.GradientTape() as tape:
            tape.watch(images)
            x_adv = _attack(form, logits_fn, images, labels, attack=attack)
        self.assertIsNone(tape.gradient(x_adv, images))
        x_adv = x_adv.numpy()
        self.assertEqual(x_adv.shape, SHAPE)
        self.assertEqual(x_adv.dtype, np.float32)
        delta = np.abs(x_adv.astype(np.float64) - images.numpy())
        self.assertLessEqual(delta.max(), EPS + 1e-6)
        self.assertGreater(delta.max(), EPS - 1e-6)
        self.assertGreaterEqual(x_adv.min(), 0.0)
        self.assertLessEqual(x_adv.max(), 1.0)
        again = _attack(form, logits_fn, images, labels, attack=attack).numpy()
        np.testing.assert_array_equal(x_adv, again)
        if attacker == "pgd" or form == "random":
            other = _attack(form, logits_fn, images, labels, attack=attack, seed=(3, 5)).numpy()
            self.assertFalse(np.array_equal(x_adv, other))

    @parameterized.parameters(*FORMS)
    def test_tf_function_with_unknown_batch(self, form):
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()
        fn = tf.function(
            lambda x, y, s: _attack(form, logits_fn, x, y, seed=s),
            input_signature=[
                tf.TensorSpec((None,) + SHAPE[1:], tf.float32),
                tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((2,), tf.int64),
            ],
            autograph=False,
        )
        seed = tf.constant([3, 4], tf.int64)
        np.testing.assert_allclose(
            fn(images, labels, seed).numpy(),
            _attack(form, logits_fn, images, labels).numpy(),
            rtol=0, atol=1e-6,
        )
        empty = fn(np.zeros((0,) + SHAPE[1:], np.float32), np.zeros((0,), np.int32), seed)
        self.assertEqual(empty.shape, (0,) + SHAPE[1:])

    @parameterized.parameters(*FORMS)
    def test_xla_matches_eager(self, form):
        images, labels, logits_fn = _images(), _labels(), _mlp_logits_fn()
        fn = tf.function(
            lambda x, y, s: _attack(form, logits_fn, x, y, seed=s),
            jit_compile=True, autograph=False,
        )
        np.testing.assert_allclose(
            fn(images, labels, tf.constant([3, 4], tf.int64)).numpy(),
            _attack(form, logits_fn, images, labels).numpy(),
            rtol=0, atol=1e-6,
        )

    def test_delay_exit_under_tf_function(self):
        images, logits_fn = _images(), _mlp_logits_fn()
        fn = tf.function(
            lambda x: multi_exit.delay_exit_attack(
                logits_fn, x, attack=PGD, output_names=NAMES, seed=[1, 2]
            ),
            input_signature=[tf.TensorSpec((None,) + SHAPE[1:], tf.float32)],
            autograph=False,
        )
        eager = multi_exit.delay_exit_attack(
            logits_fn, images, attack=PGD, output_names=NAMES, seed=[1, 2]
        )
        np.testing.assert_allclose(fn(images).numpy(), eager.numpy(), rtol=0, atol=1e-6)


# === Delay-exit attack ===


class DelayExitTest(parameterized.TestCase):
    def _side_entropy(self, logits_fn, x):
        logits = logits_fn(tf.constant(x))
        return np.stack(
            [exit_rule.entropy(logits[name]).numpy() for name in NAMES[:-1]], 1
        ).mean(1)

    @parameterized.parameters("pgd", "fgsm")
    def test_raises_early_exit_entropy(self, attacker):
        images, logits_fn = _images(), _mlp_logits_fn()
        # One FGSM step of ε = 0.1 overshoots this toy model's entropy peaks.
        attack = PGD if attacker == "pgd" else config_lib.AttackConfig(name="fgsm", epsilon=EPS / 2)
        x_adv = multi_exit.delay_exit_attack(
            logits_fn, images, attack=attack, output_names=NAMES, seed=[4, 5]
        ).numpy()
        before = self._side_entropy(logits_fn, images)
        after = self._side_entropy(logits_fn, x_adv)
        self.assertGreater(after.mean(), before.mean() + 0.05)
        self.assertGreaterEqual(np.mean(after > before), 0.75)
        self.assertLessEqual(np.abs(x_adv - images).max(), attack.epsilon + 1e-6)
        self.assertGreaterEqual(x_adv.min(), 0.0)
        self.assertLessEqual(x_adv.max(), 1.0)

    def test_matches_numpy_entropy_ascent_and_ignores_final(self):
        """One FGSM step on linear exits: sign of ∇ mean_i H_i, by finite
        differences of the numpy entropy; the final head plays no part."""
        images = _images()
        heads = _linear_heads(seed=6)
        other_final = heads[:2] + _linear_heads(seed=7)[2:]
        x_adv = multi_exit.delay_exit_attack(
            _linear_logits_fn(heads), images, attack=FGSM, output_names=NAMES, seed=None
        ).numpy()
        x_other = multi_exit.delay_exit_attack(
            _linear_logits_fn(other_final), images, attack=FGSM, output_names=NAMES, seed=None
        ).numpy()
        np.testing.assert_array_equal(x_adv, x_other)

        def objective(x):
            flat = x.reshape(len(x), -1).astype(np.float64)
            return np.mean(
                [exit_rule.entropy_numpy(flat @ w + b) for w, b in heads[:2]], axis=0
            )

        flat = images.reshape(len(images), -1).astype(np.float64)
        grad = np.zeros_like(flat)
        h = 1e-5
        for p in range(NUM_PIXELS):
            step = np.zeros_like(flat)
            step[:, p] = h
            grad[:, p] = (
                objective((flat + step).reshape(images.shape))
                - objective((flat - step).reshape(images.shape))
            ) / (2 * h)
        grad = grad.reshape(images.shape)
        expected = _np_project(images + np.float32(EPS) * np.sign(grad).astype(np.float32), images, EPS)
        clear = np.abs(grad) > 1e-6  # Skip components too small to sign reliably.
        np.testing.assert_array_equal(x_adv[clear], expected[clear])
        self.assertGreater(clear.mean(), 0.95)


# === Errors ===


class ErrorTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("form", {"form": "worst"}, "`form`"),
        ("attack_name", {"attack": config_lib.AttackConfig(name="mi_fgsm")}, "`attack.name`"),
        ("attack_type", {"attack": {"name": "pgd"}}, "`attack`"),
        ("targeted", {"attack": config_lib.AttackConfig(targeted=True)}, "`attack.targeted`"),
        ("single_no_exit", {"form": "single"}, "`exit_name`"),
        ("single_unknown_exit", {"form": "single", "exit_name": "exit_9"}, "`exit_name`"),
        ("exit_for_average", {"form": "average", "exit_name": "final"}, "`exit_name`"),
        ("no_seed", {"seed": None}, "`seed`"),
        ("random_no_seed", {"form": "random", "attack": FGSM, "seed": None}, "`seed`"),
        ("bad_seed", {"seed": [1, 2, 3]}, "`seed`"),
        ("names_str", {"output_names": "final"}, "`output_names`"),
        ("names_dup", {"output_names": ("final", "final")}, "`output_names`"),
        ("names_mismatch", {"output_names": ("exit_1", "final")}, "output_names"),
        ("labels", {"labels": np.zeros((3,), np.int32)}, "`labels`"),
    )
    def test_multi_exit_attack_rejects(self, overrides, pattern):
        kwargs = {
            "form": "average", "attack": PGD, "output_names": NAMES, "seed": [1, 2],
            "labels": _labels(),
        }
        kwargs.update(overrides)
        labels = kwargs.pop("labels")
        with self.assertRaisesRegex(ValueError, pattern):
            multi_exit.multi_exit_attack(_mlp_logits_fn(), _images(), labels, **kwargs)

    def test_logits_fn_must_return_dict(self):
        with self.assertRaisesRegex(ValueError, "dict of logits"):
            multi_exit.multi_exit_attack(
                lambda x: tf.reshape(x, [-1, NUM_PIXELS]), _images(), _labels(),
                form="average", attack=FGSM, output_names=NAMES, seed=None,
            )

    def test_delay_exit_rejects(self):
        logits_fn = _mlp_logits_fn(names=("final",))
        with self.assertRaisesRegex(ValueError, "side exit"):
            multi_exit.delay_exit_attack(
                logits_fn, _images(), attack=FGSM, output_names=("final",), seed=None
            )
        with self.assertRaisesRegex(ValueError, "`seed`"):
            multi_exit.delay_exit_attack(
                _mlp_logits_fn(), _images(), attack=PGD, output_names=NAMES, seed=None
            )
        with self.assertRaisesRegex(ValueError, "`attack.name`"):
            multi_exit.delay_exit_attack(
                _mlp_logits_fn(), _images(),
                attack=config_lib.AttackConfig(name="square"), output_names=NAMES, seed=[1, 2],
            )

    def test_pgd_objective_checks(self):
        with self.assertRaisesRegex(ValueError, "`objective_fn`"):
            pgd.pgd_objective(
                lambda x: tf.reduce_sum(x), _images(), epsilon=EPS, step_size=EPS,
                num_steps=1, random_start=False,
            )
        with self.assertRaisesRegex(ValueError, "`seed`"):
            pgd.pgd_objective(
                lambda x: tf.reduce_sum(x, [1, 2, 3]), _images(), epsilon=EPS,
                step_size=EPS, num_steps=1,
            )
        with self.assertRaisesRegex(ValueError, "`images`"):
            pgd.fgsm_objective(lambda x: tf.reduce_sum(x, [1]), np.zeros((2, 3), np.float32), epsilon=EPS)
