"""Tests for oat_tf.evaluation.tables: the Markdown table of a λ grid."""

import pytest

from oat_tf.evaluation import tables


def _result():
    # SA, per-attack RA and the worst case as fractions, keyed like robust_eval.
    keys = ("0.0", "0.15", "1.0")
    return {
        "num_examples": 200,
        "seed": 0,
        "lambdas": [float(key) for key in keys],
        "clean_accuracy": dict(zip(keys, (0.93126, 0.9, 0.815))),
        "robust_accuracy": {
            "PGD-7": dict(zip(keys, (0.1, 0.40006, 0.5))),
            "FGSM": dict(zip(keys, (0.2, 0.5, 0.55))),
        },
        "worst_case_accuracy": dict(zip(keys, (0.05, 0.395, 0.49))),
        "attacks": [{"label": label, "name": label.lower(), "epsilon": 8 / 255} for label in ("PGD-7", "FGSM")],
    }


def _cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_format_percent_rounds_to_two_decimals():
    assert tables.format_percent(0.87404) == "87.40"
    assert tables.format_percent(0.0) == "0.00"
    assert tables.format_percent(1.0) == "100.00"


def test_format_table_has_one_row_per_lambda_with_percentages():
    lines = tables.format_table(_result()).strip().splitlines()
    # The worst case headlines (right after SA); per-attack RAs follow, named.
    assert _cells(lines[0]) == ["λ", "SA (%)", "RA worst case (%)", "RA PGD-7 (%)", "RA FGSM (%)"]
    assert len(lines) == 2 + 3
    assert _cells(lines[2]) == ["0.0", "93.13", "5.00", "10.00", "20.00"]
    assert _cells(lines[3]) == ["0.15", "90.00", "39.50", "40.01", "50.00"]
    assert _cells(lines[4]) == ["1.0", "81.50", "49.00", "50.00", "55.00"]


def test_format_table_marks_seen_and_unseen_lambdas():
    lines = tables.format_table(_result(), seen_lambdas=[0.0, 0.1, 1.0]).strip().splitlines()
    assert _cells(lines[0])[:3] == ["λ", "seen", "SA (%)"]
    assert [_cells(line)[1] for line in lines[2:]] == ["seen", "unseen", "seen"]


def test_invalid_result_raises():
    with pytest.raises(ValueError, match="result"):
        tables.format_table({"lambdas": [0.0]})
    with pytest.raises(ValueError, match="seen_lambdas"):
        tables.format_table(_result(), seen_lambdas=[2.0])
