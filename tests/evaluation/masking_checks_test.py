"""Tests of the gradient-masking checks on synthetic results and toy models."""

import dataclasses

import numpy as np
import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf.evaluation import masking_checks


def _attack_entry(config):
    return {"label": config.describe(), **dataclasses.asdict(config)}


PGD10 = config_lib.AttackConfig(num_steps=10)
PGD20 = config_lib.AttackConfig(num_steps=20)
SQUARE = config_lib.AttackConfig(name="square", num_queries=100)


def _result(ra, num_examples=100):
    attacks = [PGD10, PGD20, SQUARE]
    return {
        "num_examples": num_examples,
        "attacks": [_attack_entry(a) for a in attacks],
        "robust_accuracy": {a.describe(): {"0.0": ra[a.describe()][0], "1.0": ra[a.describe()][1]} for a in attacks},
    }


def test_stronger_pgd_check():
    good = _result({"PGD-10": (0.5, 0.8), "PGD-20": (0.45, 0.8), "Square-100": (0.6, 0.9)})
    check = masking_checks.stronger_pgd_not_weaker(good)
    assert check["passed"] and len(check["pairs"]) == 2
    bad = _result({"PGD-10": (0.5, 0.8), "PGD-20": (0.55, 0.8), "Square-100": (0.6, 0.9)})
    check = masking_checks.stronger_pgd_not_weaker(bad)
    assert not check["passed"]
    assert [p["lambda"] for p in check["pairs"] if not p["passed"]] == ["0.0"]


def test_black_box_check():
    good = _result({"PGD-10": (0.5, 0.8), "PGD-20": (0.45, 0.8), "Square-100": (0.55, 0.9)})
    check = masking_checks.black_box_not_stronger(good)
    assert check["passed"] and len(check["comparisons"]) == 2
    assert [c["white_box"] for c in check["comparisons"]] == ["PGD-20", "PGD-10"]
    assert check["weaker_than_black_box"] == []
    # Square beats PGD-10 but not PGD-20: gradients found the examples, the
    # check passes and PGD-10's number is named as overstated.
    weak_attack = _result({"PGD-10": (0.5, 0.8), "PGD-20": (0.45, 0.8), "Square-100": (0.47, 0.9)})
    check = masking_checks.black_box_not_stronger(weak_attack)
    assert check["passed"] and "PGD-10 at λ=0.0" in check["detail"]
    assert [(w["white_box"], w["lambda"]) for w in check["weaker_than_black_box"]] == [("PGD-10", "0.0")]
    # Square beats every gradient attack at λ=1: masking.
    masked = _result({"PGD-10": (0.5, 0.8), "PGD-20": (0.45, 0.8), "Square-100": (0.5, 0.6)})
    check = masking_checks.black_box_not_stronger(masked)
    assert not check["passed"] and "λ=1.0 (60.00% < PGD-10 80.00%)" in check["detail"]
    # One sample of tolerance: 0.44 against 0.45 with 100 examples still passes.
    close = _result({"PGD-10": (0.5, 0.8), "PGD-20": (0.45, 0.8), "Square-100": (0.44, 0.9)})
    assert masking_checks.black_box_not_stronger(close)["passed"]
    assert masking_checks.black_box_not_stronger(close)["weaker_than_black_box"] != []


def test_epsilon_monotonicity():
    def falling(epsilon):
        return {"0.0": max(0.0, 0.5 - epsilon), "1.0": max(0.0, 0.9 - epsilon)}

    assert masking_checks.epsilon_monotonicity(falling, 0.2, 100)["passed"]

    def rising(epsilon):
        return {"0.0": 0.2 + epsilon, "1.0": 0.5}

    check = masking_checks.epsilon_monotonicity(rising, 0.2, 100)
    assert not check["passed"]
    assert [ra for _, ra in check["curves"]["0.0"]] == [0.30000000000000004, 0.4, 0.6000000000000001]


def _dict_model(logits_fn):
    return lambda inputs, training=None: logits_fn(inputs["image"], inputs["lambda"])


def test_input_gradients_flags_zero_and_nonfinite_gradients():
    rng = np.random.RandomState(0)
    images = rng.uniform(size=(8, 4, 4, 1)).astype("float32")
    labels = rng.randint(0, 3, 8)
    w = tf.constant(rng.randn(16, 3).astype("float32"))

    linear = _dict_model(lambda x, lam: tf.matmul(tf.reshape(x, [-1, 16]), w))
    check = masking_checks.input_gradients(linear, images, labels, [0.0, 1.0])
    assert check["passed"] and check["per_lambda"]["1.0"]["zero_fraction"] == 0.0

    # Rounding the input (a classic masking defence) zeroes every gradient.
    rounded = _dict_model(
        lambda x, lam: tf.matmul(tf.reshape(tf.stop_gradient(tf.round(x)), [-1, 16]), w)
    )
    check = masking_checks.input_gradients(rounded, images, labels, [0.5])
    assert not check["passed"] and check["per_lambda"]["0.5"]["zero_fraction"] == 1.0

    exploding = _dict_model(lambda x, lam: tf.matmul(tf.reshape(tf.sqrt(x - 1.0), [-1, 16]), w))
    check = masking_checks.input_gradients(exploding, images, labels, [0.5])
    assert not check["passed"] and check["per_lambda"]["0.5"]["nonfinite_fraction"] == 1.0
