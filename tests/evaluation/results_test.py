"""Tests for oat_tf.evaluation.results."""

import pytest

from oat_tf.evaluation import results


def _result():
    return {
        "num_examples": 10,
        "lambdas": [0.0, 0.15, 1.0],
        "clean_accuracy": {"0.0": 0.9, "0.15": 0.85, "1.0": 0.8},
        "robust_accuracy": {
            "PGD-7": {"0.0": 0.1, "0.15": 0.4, "1.0": 0.5},
            "FGSM": {"0.0": 0.2, "0.15": 0.5, "1.0": 0.55},
        },
        "worst_case_accuracy": {"0.0": 0.1, "0.15": 0.4, "1.0": 0.5},
        "attacks": [
            {"label": "PGD-7", "name": "pgd", "epsilon": 0.03, "num_steps": 7},
            {"label": "FGSM", "name": "fgsm", "epsilon": 0.03, "num_steps": 1},
        ],
    }


def test_check_result_names_the_missing_keys():
    results.check_result(_result())
    with pytest.raises(ValueError, match="result"):
        results.check_result({"lambdas": [0.0]})
    with pytest.raises(ValueError, match="result"):
        results.check_result([1, 2])


def test_lambda_keys_follow_the_result_and_must_match_lambdas():
    assert results.lambda_keys(_result()) == ["0.0", "0.15", "1.0"]
    broken = _result()
    broken["lambdas"] = [0.0]
    with pytest.raises(ValueError, match="one clean accuracy per λ"):
        results.lambda_keys(broken)


def test_is_seen_tolerates_float_noise_only():
    assert results.is_seen(0.1 + 1e-12, [0.0, 0.1])
    assert not results.is_seen(0.15, [0.0, 0.1, 0.2])


def test_strongest_attack_has_the_lowest_mean_robust_accuracy():
    assert results.strongest_attack(_result()) == "PGD-7"
    result = _result()
    result["robust_accuracy"] = {}
    assert results.strongest_attack(result) is None


def test_resolve_attack():
    assert results.resolve_attack(_result(), None) == "PGD-7"
    assert results.resolve_attack(_result(), "FGSM") == "FGSM"
    with pytest.raises(ValueError, match="attack"):
        results.resolve_attack(_result(), "PGD-20")


def test_attack_settings_drop_the_label():
    assert results.attack_settings(_result(), "FGSM") == {"name": "fgsm", "epsilon": 0.03, "num_steps": 1}
    assert results.attack_settings(_result(), "Square-10") is None
    assert results.attack_settings({"attacks": None}, "FGSM") is None


def test_merge_results():
    base = {"num_examples": 4, "attacks": [], "seed": 0}
    a = {**base, "lambdas": [0.0], "clean_accuracy": {"0.0": 1.0}, "worst_case_accuracy": {"0.0": 0.5},
         "robust_accuracy": {"PGD-7": {"0.0": 0.5}}}
    b = {**base, "lambdas": [1.0], "clean_accuracy": {"1.0": 0.75}, "worst_case_accuracy": {"1.0": 0.25},
         "robust_accuracy": {"PGD-7": {"1.0": 0.25}}}
    merged = results.merge_results([a, b])
    assert merged["lambdas"] == [0.0, 1.0]
    assert merged["robust_accuracy"] == {"PGD-7": {"0.0": 0.5, "1.0": 0.25}}
    assert merged["clean_accuracy"] == {"0.0": 1.0, "1.0": 0.75}
