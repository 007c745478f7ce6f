"""Tests of the gradient-masking checks on synthetic results and toy models."""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf.attacks import autoattack
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


def _paired_result(ra, only, num_examples=200):
    """A result at one λ ("0.5") with paired counts {(a, b): samples robust under a only}."""
    result = _result({label: (value, value) for label, value in ra.items()}, num_examples)
    labels = list(ra)
    result["robust_accuracy"] = {label: {"0.5": value} for label, value in ra.items()}
    result["robust_only"] = {
        a: {b: {"0.5": only.get((a, b), 0)} for b in labels if b != a} for a in labels
    }
    return result


@pytest.mark.parametrize("first, second", [(0, 0), (3, 1), (5, 0), (9, 2), (12, 30), (40, 10)])
def test_mcnemar_p_value_matches_the_binomial_tail(first, second):
    n = first + second
    expected = sum(math.comb(n, k) for k in range(first, n + 1)) / 2**n if n else 1.0
    assert masking_checks.mcnemar_p_value(first, second) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_p_value_large_counts_and_bad_input():
    # n = 4,000 disagreements: the normal approximation (with continuity
    # correction) of the tail at a 4-sigma excess, p ≈ 3.2e-5.
    first, n = 2127, 4000
    z = (first - 0.5 - n / 2) / math.sqrt(n / 4)
    expected = 0.5 * math.erfc(z / math.sqrt(2))
    assert masking_checks.mcnemar_p_value(first, n - first) == pytest.approx(expected, rel=0.05)
    for bad in (-1, 1.5, True, None):
        with pytest.raises(ValueError, match="only_first"):
            masking_checks.mcnemar_p_value(bad, 3)


def test_paired_counts_tell_noise_from_a_weaker_stronger_attack():
    # The quickstart case: PGD-20 keeps 2 of 200 more digits than PGD-10
    # (3 only under PGD-20, 1 only under PGD-10): chance, p = 5/16.
    noise = _paired_result(
        {"PGD-10": 0.91, "PGD-20": 0.92, "Square-100": 0.96},
        {("PGD-20", "PGD-10"): 3, ("PGD-10", "PGD-20"): 1, ("Square-100", "PGD-10"): 10,
         ("Square-100", "PGD-20"): 8},
    )
    check = masking_checks.stronger_pgd_not_weaker(noise)
    assert check["passed"], check["detail"]
    (pair,) = check["pairs"]
    assert (pair["only_lower"], pair["only_other"]) == (3, 1)
    assert pair["p_value"] == pytest.approx(5 / 16)
    # Same RA gap from 12 digits only PGD-20 keeps and 10 only PGD-10 keeps:
    # still chance. 10 against 0 is not (p = 1/1024 < 0.05).
    assert masking_checks.stronger_pgd_not_weaker(_paired_result(
        {"PGD-10": 0.91, "PGD-20": 0.92, "Square-100": 0.96},
        {("PGD-20", "PGD-10"): 12, ("PGD-10", "PGD-20"): 10},
    ))["passed"]
    masked = masking_checks.stronger_pgd_not_weaker(_paired_result(
        {"PGD-10": 0.91, "PGD-20": 0.96, "Square-100": 0.96},
        {("PGD-20", "PGD-10"): 10},
    ))
    assert not masked["passed"]
    assert "λ=0.5 (PGD-20 96.00% > PGD-10 91.00%)" in masked["detail"]


def test_black_box_check_with_paired_counts():
    ra = {"PGD-10": 0.60, "PGD-20": 0.50, "Square-100": 0.45}
    # Square keeps 10 fewer digits than PGD-20, the strongest: 2 only under
    # Square against 12 only under PGD-20, p(PGD-20 ≥ 12 of 14) ≈ 0.0065 <
    # 0.05: Square is significantly stronger, which fails the check.
    masked = _paired_result(ra, {("PGD-20", "Square-100"): 12, ("Square-100", "PGD-20"): 2,
                                 ("PGD-10", "Square-100"): 30})
    check = masking_checks.black_box_not_stronger(masked)
    assert not check["passed"]
    assert check["comparisons"][0]["white_box"] == "PGD-20"
    assert check["comparisons"][0]["p_value"] == pytest.approx(
        sum(math.comb(14, k) for k in range(12, 15)) / 2**14
    )
    # PGD-10 (30 against 0) is named as overstating robustness.
    assert [w["white_box"] for w in check["weaker_than_black_box"]] == ["PGD-10"]
    # The same RAs from disagreements that could be chance (12 against 2 is
    # not; 25 against 15 is: p ≈ 0.077) pass.
    noisy = _paired_result(ra, {("PGD-20", "Square-100"): 25, ("Square-100", "PGD-20"): 15,
                                ("PGD-10", "Square-100"): 30})
    check = masking_checks.black_box_not_stronger(noisy)
    assert check["passed"], check["detail"]


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


AA_FAST = list(autoattack.attack_configs("fast", PGD10.epsilon))


def _with_autoattack(ra, only, num_examples=1000):
    """A result at λ = 0.0 with PGD-10 and AutoAttack-fast (cumulative members)."""
    attacks = [PGD10] + AA_FAST
    labels = [a.describe() for a in attacks]
    return {
        "num_examples": num_examples,
        "attacks": [_attack_entry(a) for a in attacks],
        "clean_accuracy": {"0.0": 0.99},
        "robust_accuracy": {label: {"0.0": ra[label]} for label in labels},
        "robust_only": {
            a: {b: {"0.0": only.get((a, b), 0)} for b in labels if b != a} for a in labels
        },
    }


def test_weaker_attack_overstating_fails_on_the_quickstart_case():
    # The λ = 0 quickstart model: PGD-10 42%, APGD-CE 6%; PGD-10 kept
    # 36 digits (of 100 here: the counts scale) that APGD-CE broke and
    # APGD-CE kept none that PGD-10 broke. Square (87%) was weaker than both,
    # so the black-box check passed; this one must not.
    pgd, ce, t = (a.describe() for a in [PGD10] + AA_FAST)
    result = _with_autoattack(
        {pgd: 0.42, ce: 0.06, t: 0.06},
        {(pgd, ce): 36, (pgd, t): 36},
        num_examples=100,
    )
    check = masking_checks.weaker_attacks_not_overstating(result)
    assert not check["passed"]
    assert check["overstating"] == {"PGD-10": ["0.0"]}
    (comparison,) = check["comparisons"]
    # The strongest is the first attack with the lowest RA; ensemble members
    # are never the ones held to it.
    assert comparison["strongest"] == ce and comparison["weaker"] == "PGD-10"
    assert (comparison["only_lower"], comparison["only_other"]) == (36, 0)
    assert comparison["p_value"] == pytest.approx(2.0**-36)
    assert "PGD-10 at λ=0.0" in check["detail"] and "36 samples robust only under it" in check["detail"]
    assert check in masking_checks.paired_checks(result)


def test_weaker_attack_within_noise_passes():
    # λ = 1: PGD-10 88.7% against AutoAttack-fast 88.3%: 6 digits only PGD-10
    # keeps, 2 only AutoAttack keeps (p = 37/256 ≈ 0.14): chance.
    pgd, ce, t = (a.describe() for a in [PGD10] + AA_FAST)
    result = _with_autoattack(
        {pgd: 0.887, ce: 0.885, t: 0.883}, {(pgd, t): 6, (t, pgd): 2, (pgd, ce): 4, (ce, pgd): 2}
    )
    check = masking_checks.weaker_attacks_not_overstating(result)
    assert check["passed"], check["detail"]
    assert [c["strongest"] for c in check["comparisons"]] == [t]
    assert check["comparisons"][0]["p_value"] == pytest.approx(37 / 256)
    # Nothing to compare when only the ensemble ran.
    only_aa = _with_autoattack({pgd: 0.5, ce: 0.5, t: 0.5}, {})
    only_aa["attacks"] = only_aa["attacks"][1:]
    del only_aa["robust_accuracy"][pgd]
    assert masking_checks.weaker_attacks_not_overstating(only_aa)["comparisons"] == []
