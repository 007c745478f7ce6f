"""Reading study results: the spread over seeds, accuracies of a λ grid."""

from oat_tf.reporting import study_results


def test_seed_spread_text():
    assert study_results.spread_text([0.5, 0.6, 0.7]) == "60.0 (50.0–70.0)"
    assert study_results.spread_text([-0.01, 0.02], signed=True) == "+0.5 (-1.0–+2.0)"
    assert study_results.spread_text([None, 0.25]) == "25.0 (25.0–25.0), 1 seeds"
    assert study_results.spread_text([None]) == "–"


def test_accuracy_reads_sa_worst_case_and_per_attack_ra_by_lambda():
    result = {
        "clean_accuracy": {"0.0": 0.9, "0.5": 0.8},
        "worst_case_accuracy": {"0.0": 0.1, "0.5": 0.4},
        "robust_accuracy": {"PGD-20": {"0.0": 0.2, "0.5": 0.5}},
    }
    assert study_results.accuracy(result, 0.5, "SA") == 0.8
    assert study_results.accuracy(result, 0.5, "RA") == 0.4
    assert study_results.accuracy(result, 0.0, "PGD-20") == 0.2
    # A λ or an attack the result lacks is None, not an error.
    assert study_results.accuracy(result, 1.0, "SA") is None
    assert study_results.accuracy(result, 0.5, "APGD-CE") is None
