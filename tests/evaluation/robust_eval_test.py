"""Tests for oat_tf.evaluation.robust_eval."""

import dataclasses
import gc
import json
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf import attacks
from oat_tf import config
from oat_tf.evaluation import robust_eval

IMAGE_SHAPE = (8, 8, 1)
NUM_CLASSES = 3


def _linear_model(seed=0, lambda_scale=0.0):
    """Logits = W·flatten(x) + lambda_scale·λ·[1, -1, 0] + b."""
    image = keras.Input(shape=IMAGE_SHAPE, name="image")
    lam = keras.Input(shape=(), name="lambda")
    features = keras.layers.Flatten()(image)
    features = keras.layers.Concatenate()([features, keras.layers.Reshape((1,))(lam)])
    dense = keras.layers.Dense(NUM_CLASSES)
    logits = dense(features)
    model = keras.Model({"image": image, "lambda": lam}, logits)
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(int(np.prod(IMAGE_SHAPE)) + 1, NUM_CLASSES)).astype("float32")
    kernel[-1] = lambda_scale * np.array([1.0, -1.0, 0.0], "float32")
    dense.set_weights([kernel, rng.normal(size=NUM_CLASSES).astype("float32")])
    return model


def _data(num_examples=20, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(num_examples, *IMAGE_SHAPE)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=num_examples).astype("int64")
    return images, labels


def _dataset(images, labels, batch_size=8):
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)


def _predict(model, images, lam):
    lam = np.full([len(images)], lam, "float32")
    return np.argmax(model({"image": images, "lambda": lam}, training=False), axis=-1)


def _direct_attack_correct(model, attack, images, labels, lam):
    lam_vector = tf.fill([len(images)], tf.constant(lam, tf.float32))

    def logits_fn(x):
        return model({"image": x, "lambda": lam_vector}, training=False)

    adversarial = attacks.run_attack(
        attack, logits_fn, tf.constant(images), tf.constant(labels, tf.int32)
    )
    return np.argmax(logits_fn(adversarial), axis=-1) == labels


def test_clean_accuracy_matches_model_predictions():
    model = _linear_model()
    images, labels = _data()
    result = robust_eval.evaluate_lambda_grid(
        model, _dataset(images, labels), [0.0, 0.5, 1.0], [], seed=0
    )
    assert result["num_examples"] == 20
    for lam in (0.0, 0.5, 1.0):
        expected = np.mean(_predict(model, images, lam) == labels)
        assert result["clean_accuracy"][robust_eval.lambda_key(lam)] == pytest.approx(expected)
        # Without attacks the worst case is the clean accuracy.
        assert result["worst_case_accuracy"][robust_eval.lambda_key(lam)] == pytest.approx(
            expected
        )


def test_lambda_dependent_model_gives_different_clean_accuracy():
    model = _linear_model(seed=1, lambda_scale=40.0)
    images, labels = _data(seed=1)
    lambdas = [0.0, 0.25, 1.0]
    result = robust_eval.evaluate_lambda_grid(model, _dataset(images, labels), lambdas, [])
    accuracies = [result["clean_accuracy"][robust_eval.lambda_key(lam)] for lam in lambdas]
    assert len(set(accuracies)) > 1
    for lam, accuracy in zip(lambdas, accuracies):
        assert accuracy == pytest.approx(np.mean(_predict(model, images, lam) == labels))


def test_zero_epsilon_attacks_equal_clean_accuracy():
    model = _linear_model(seed=2, lambda_scale=5.0)
    images, labels = _data(seed=2)
    zero_attacks = [
        config.AttackConfig(name="pgd", epsilon=0.0, step_size=0.1, num_steps=2),
        config.AttackConfig(name="fgsm", epsilon=0.0, num_steps=1),
        config.AttackConfig(name="mi_fgsm", epsilon=0.0, step_size=0.0, num_steps=2, targeted=True),
    ]
    result = robust_eval.evaluate_lambda_grid(
        model, _dataset(images, labels), [0.0, 1.0], zero_attacks, seed=3
    )
    for key, clean in result["clean_accuracy"].items():
        for label in ("PGD-2", "FGSM", "MI-FGSM-2"):
            assert result["robust_accuracy"][label][key] == clean
        assert result["worst_case_accuracy"][key] == clean


def test_robust_and_worst_case_match_direct_computation():
    model = _linear_model(seed=3, lambda_scale=5.0)
    images, labels = _data(seed=3)
    deterministic_attacks = [
        config.AttackConfig(name="fgsm", epsilon=0.05, num_steps=1),
        config.AttackConfig(
            name="pgd", epsilon=0.05, step_size=0.02, num_steps=3, random_start=False
        ),
    ]
    lambdas = [0.0, 0.6]
    result = robust_eval.evaluate_lambda_grid(
        model, _dataset(images, labels), lambdas, deterministic_attacks
    )
    for lam in lambdas:
        key = robust_eval.lambda_key(lam)
        survived = _predict(model, images, lam) == labels
        for attack in deterministic_attacks:
            correct = _direct_attack_correct(model, attack, images, labels, lam)
            assert result["robust_accuracy"][attack.describe()][key] == pytest.approx(
                np.mean(correct)
            )
            survived &= correct
        assert result["worst_case_accuracy"][key] == pytest.approx(np.mean(survived))
        # Paired counts: samples robust under one attack and not the other.
        fgsm, pgd = (
            _direct_attack_correct(model, attack, images, labels, lam) for attack in deterministic_attacks
        )
        assert result["robust_only"]["FGSM"]["PGD-3"][key] == int(np.sum(fgsm & ~pgd))
        assert result["robust_only"]["PGD-3"]["FGSM"][key] == int(np.sum(pgd & ~fgsm))
        # They tie the two RAs together: RA_a − RA_b = (only_a − only_b) / N.
        assert result["robust_only"]["FGSM"]["PGD-3"][key] - result["robust_only"]["PGD-3"]["FGSM"][key] == (
            int(np.sum(fgsm)) - int(np.sum(pgd))
        )


def test_worst_case_is_at_most_every_accuracy_and_attacks_bite():
    model = _linear_model(seed=4)
    images, labels = _data(seed=4)
    two_attacks = [
        config.AttackConfig(name="pgd", epsilon=0.2, step_size=0.05, num_steps=5),
        config.AttackConfig(name="fgsm", epsilon=0.1, num_steps=1),
    ]
    result = robust_eval.evaluate_lambda_grid(
        model, _dataset(images, labels), [0.2, 0.8], two_attacks, seed=5
    )
    for key, clean in result["clean_accuracy"].items():
        worst = result["worst_case_accuracy"][key]
        assert worst <= clean
        for label in ("PGD-5", "FGSM"):
            assert worst <= result["robust_accuracy"][label][key]
        # A linear model on 8x8 inputs has no defence against ε = 0.2.
        assert result["robust_accuracy"]["PGD-5"][key] < clean


def test_same_seed_reproduces_results():
    model = _linear_model(seed=5)
    images, labels = _data(seed=5)
    random_pgd = [config.AttackConfig(name="pgd", epsilon=0.03, step_size=0.01, num_steps=2)]
    first, second = (
        robust_eval.evaluate_lambda_grid(
            model, _dataset(images, labels), [0.3], random_pgd, seed=11
        )
        for _ in range(2)
    )
    assert first == second


def test_attack_function_is_traced_once_for_all_lambdas_and_batches():
    class CountingModel(keras.Model):
        def __init__(self):
            super().__init__()
            self.flatten = keras.layers.Flatten()
            self.dense = keras.layers.Dense(NUM_CLASSES)
            self.num_calls = 0

        def call(self, inputs, training=None):
            self.num_calls += 1
            features = self.flatten(inputs["image"])
            features = keras.ops.concatenate([features, inputs["lambda"][:, None]], axis=-1)
            return self.dense(features)

    model = CountingModel()
    images, labels = _data(num_examples=20, seed=6)
    model({"image": images[:1], "lambda": np.zeros([1], "float32")})
    pgd = [config.AttackConfig(name="pgd", epsilon=0.03, step_size=0.01, num_steps=2)]

    model.num_calls = 0
    robust_eval.evaluate_lambda_grid(model, _dataset(images[:8], labels[:8]), [0.5], pgd)
    first_call = model.num_calls
    model.num_calls = 0
    # Three λ values and batches of 8, 8 and 4: the cached functions run, no new trace.
    robust_eval.evaluate_lambda_grid(model, _dataset(images, labels), [0.1, 0.5, 0.9], pgd)
    assert first_call > 0
    assert model.num_calls == 0


def test_cached_functions_do_not_keep_the_model_alive():
    model = _linear_model(seed=2)
    images, labels = _data(num_examples=8, seed=2)
    robust_eval.evaluate_lambda_grid(model, _dataset(images, labels), [0.5], [])
    assert model in robust_eval._FUNCTIONS
    reference = weakref.ref(model)
    del model
    gc.collect()
    assert reference() is None


def test_results_per_lambda_and_attack_do_not_depend_on_the_rest_of_the_grid():
    model = _linear_model(seed=4, lambda_scale=2.0)
    images, labels = _data(seed=4)
    fgsm = config.AttackConfig(name="fgsm", epsilon=0.05)
    pgd = config.AttackConfig(name="pgd", epsilon=0.05, step_size=0.02, num_steps=3)
    together = robust_eval.evaluate_lambda_grid(model, _dataset(images, labels), [0.2, 0.7], [fgsm, pgd], seed=3)
    alone = robust_eval.evaluate_lambda_grid(model, _dataset(images, labels), [0.7], [pgd], seed=3)
    label = pgd.describe()
    assert together["robust_accuracy"][label]["0.7"] == alone["robust_accuracy"][label]["0.7"]
    assert together["clean_accuracy"]["0.7"] == alone["clean_accuracy"]["0.7"]


def test_jit_compile_gives_the_same_clean_accuracy():
    model = _linear_model(seed=7, lambda_scale=5.0)
    images, labels = _data(seed=7)
    zero_pgd = [config.AttackConfig(name="pgd", epsilon=0.0, step_size=0.01, num_steps=1)]
    result = robust_eval.evaluate_lambda_grid(
        model, _dataset(images, labels), [0.0, 1.0], zero_pgd, jit_compile=True
    )
    for lam in (0.0, 1.0):
        key = robust_eval.lambda_key(lam)
        expected = np.mean(_predict(model, images, lam) == labels)
        assert result["clean_accuracy"][key] == pytest.approx(expected)
        assert result["robust_accuracy"]["PGD-1"][key] == result["clean_accuracy"][key]


def test_result_is_json_serialisable_with_the_documented_keys():
    model = _linear_model(seed=8)
    images, labels = _data(num_examples=6, seed=8)
    pgd = config.AttackConfig(name="pgd", epsilon=0.03, step_size=0.01, num_steps=2)
    result = robust_eval.evaluate_lambda_grid(
        model, _dataset(images, labels, batch_size=4), [1.0, 0.15, 0.0], [pgd], seed=4
    )
    assert json.loads(json.dumps(result)) == result
    assert result["num_examples"] == 6
    assert result["seed"] == 4
    assert result["lambdas"] == [0.0, 0.15, 1.0]
    assert list(result["clean_accuracy"]) == ["0.0", "0.15", "1.0"]
    assert list(result["robust_accuracy"]) == ["PGD-2"]
    assert list(result["worst_case_accuracy"]) == ["0.0", "0.15", "1.0"]
    assert result["robust_only"] == {"PGD-2": {}}  # one attack: no pair
    assert result["attacks"] == [
        {
            "label": "PGD-2",
            "name": "pgd",
            "epsilon": 0.03,
            "step_size": 0.01,
            "num_steps": 2,
            "random_start": True,
            "num_restarts": 1,
            "decay": 1.0,
            "targeted": False,
            "num_queries": 1000,
            "p_init": 0.05,
            "num_target_classes": 9,
            "ensemble": "",
        }
    ]
    for value in [*result["clean_accuracy"].values(), *result["worst_case_accuracy"].values()]:
        assert 0.0 <= value <= 1.0


@pytest.mark.parametrize(
    "lambdas", [[0.5, 1.5], [-0.1], [float("nan")], [float("inf")], [], "0.5", None]
)
def test_invalid_lambdas_raise(lambdas):
    images, labels = _data(num_examples=2)
    with pytest.raises(ValueError, match="lambdas"):
        robust_eval.evaluate_lambda_grid(_linear_model(), _dataset(images, labels), lambdas, [])


def test_invalid_attacks_raise():
    images, labels = _data(num_examples=2)
    dataset = _dataset(images, labels)
    same_name = [config.AttackConfig(epsilon=0.1), config.AttackConfig(epsilon=0.2)]
    with pytest.raises(ValueError, match="distinct names"):
        robust_eval.evaluate_lambda_grid(_linear_model(), dataset, [0.0], same_name)
    with pytest.raises(ValueError, match="AttackConfig"):
        robust_eval.evaluate_lambda_grid(_linear_model(), dataset, [0.0], ["pgd"])


@pytest.mark.parametrize("seed", [-1, 0.5, None])
def test_invalid_seed_raises(seed):
    images, labels = _data(num_examples=2)
    with pytest.raises(ValueError, match="seed"):
        robust_eval.evaluate_lambda_grid(
            _linear_model(), _dataset(images, labels), [0.0], [], seed=seed
        )


def test_invalid_datasets_raise():
    images, labels = _data(num_examples=2)
    model = _linear_model()
    unbatched = tf.data.Dataset.from_tensor_slices((images, labels))
    with pytest.raises(ValueError, match="batched images"):
        robust_eval.evaluate_lambda_grid(model, unbatched, [0.0], [])
    with pytest.raises(ValueError, match="at least one example"):
        robust_eval.evaluate_lambda_grid(model, _dataset(images, labels).take(0), [0.0], [])


def test_ensemble_members_run_on_survivors_and_report_cumulative_accuracy():
    model = _linear_model(seed=4, lambda_scale=5.0)
    images, labels = _data(num_examples=24, seed=4)
    fgsm = config.AttackConfig(name="fgsm", epsilon=0.04, num_steps=1, ensemble="E")
    # A larger ε than FGSM's, so that the second member has work left (on a
    # linear model FGSM is already the best attack at its own ε).
    pgd = config.AttackConfig(
        name="pgd", epsilon=0.08, step_size=0.04, num_steps=3, random_start=False, ensemble="E"
    )
    alone = config.AttackConfig(name="fgsm", epsilon=0.04, num_steps=1)
    result = robust_eval.evaluate_lambda_grid(
        model, _dataset(images, labels), [0.0, 0.6], [fgsm, pgd, alone]
    )
    assert list(result["robust_accuracy"]) == ["E: FGSM", "E: PGD-3", "FGSM"]
    for lam in (0.0, 0.6):
        key = robust_eval.lambda_key(lam)
        # Both attacks are deterministic per sample, so running them on a
        # subset gives the per-sample outcomes of running them on all.
        clean = _predict(model, images, lam) == labels
        after_fgsm = clean & _direct_attack_correct(model, alone, images, labels, lam)
        after_pgd = after_fgsm & _direct_attack_correct(
            model, dataclasses.replace(pgd, ensemble=""), images, labels, lam
        )
        assert result["robust_accuracy"]["E: FGSM"][key] == pytest.approx(np.mean(after_fgsm))
        assert result["robust_accuracy"]["E: PGD-3"][key] == pytest.approx(np.mean(after_pgd))
        assert result["worst_case_accuracy"][key] == pytest.approx(np.mean(after_pgd))
        # The stand-alone FGSM is not restricted to clean-correct samples.
        assert result["robust_accuracy"]["FGSM"][key] == pytest.approx(
            np.mean(_direct_attack_correct(model, alone, images, labels, lam))
        )
    # Not vacuous: each member breaks something at λ = 0.
    assert result["robust_accuracy"]["E: PGD-3"]["0.0"] < result["robust_accuracy"]["E: FGSM"]["0.0"]
    assert result["robust_accuracy"]["E: FGSM"]["0.0"] < result["clean_accuracy"]["0.0"]
