"""Tests for oat_tf.evaluation.calibration: the choice of λ on hand-made curves."""

import json

import numpy as np
import pytest

from oat_tf.evaluation import calibration


def _curve(*points):
    return [{"lambda": lam, "sa": sa, "ra": ra} for lam, sa, ra in points]


# SA falls and RA rises with λ, as OAT intends.
CURVE = _curve(
    (0.0, 0.95, 0.10),
    (0.2, 0.93, 0.40),
    (0.4, 0.90, 0.45),
    (0.6, 0.88, 0.52),
    (1.0, 0.80, 0.55),
)


def test_min_sa_maximises_ra_among_the_feasible():
    choice = calibration.choose_lambda(CURVE, min_sa=0.9)
    assert choice["feasible"] is True
    assert (choice["lambda"], choice["sa"], choice["ra"]) == (0.4, 0.90, 0.45)
    assert choice["feasible_lambdas"] == [0.0, 0.2, 0.4]
    assert choice["constraint"] == {"metric": "sa", "minimum": 0.9}
    assert choice["objective"] == "ra"
    assert choice["closest"] is None and choice["shortfall"] is None
    assert "SA ≥ 90.00%" in choice["reason"] and "3 of 5" in choice["reason"]


def test_min_ra_maximises_sa_among_the_feasible():
    choice = calibration.choose_lambda(CURVE, min_ra=0.5)
    assert choice["feasible"] is True
    assert (choice["lambda"], choice["sa"], choice["ra"]) == (0.6, 0.88, 0.52)
    assert choice["feasible_lambdas"] == [0.6, 1.0]
    assert choice["objective"] == "sa"


def test_the_choice_is_the_best_feasible_point_on_random_curves():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 8))
        # Accuracies on a coarse grid so that ties happen.
        points = _curve(*zip(np.sort(rng.choice(21, n, replace=False)) / 20,
                             rng.integers(0, 5, n) / 4, rng.integers(0, 5, n) / 4))
        threshold = float(rng.integers(0, 5)) / 4
        for metric, other in (("sa", "ra"), ("ra", "sa")):
            choice = calibration.choose_lambda(points, **{f"min_{metric}": threshold})
            feasible = [p for p in points if p[metric] >= threshold]
            assert choice["feasible"] == bool(feasible)
            assert choice["feasible_lambdas"] == [p["lambda"] for p in feasible]
            if feasible:
                assert choice[metric] >= threshold
                assert choice[other] == max(p[other] for p in feasible)
            else:
                assert choice["closest"][metric] == max(p[metric] for p in points)
                assert choice["shortfall"] == pytest.approx(threshold - choice["closest"][metric])


def test_ties_go_to_the_constrained_metric_then_to_the_smaller_lambda():
    curve = _curve((0.0, 0.91, 0.40), (0.3, 0.95, 0.40), (0.5, 0.95, 0.40), (1.0, 0.99, 0.30))
    # RA ties at 0.40 among λ 0, 0.3, 0.5: the higher SA wins (0.3 and 0.5), then the smaller λ.
    assert calibration.choose_lambda(curve, min_sa=0.9)["lambda"] == 0.3
    curve = _curve((0.0, 0.90, 0.40), (0.5, 0.90, 0.50), (0.7, 0.90, 0.50), (1.0, 0.80, 0.60))
    # SA ties at 0.90: the higher RA wins (0.5 and 0.7), then the smaller λ.
    assert calibration.choose_lambda(curve, min_ra=0.4)["lambda"] == 0.5
    # The order of the points does not matter.
    assert calibration.choose_lambda(curve[::-1], min_ra=0.4)["lambda"] == 0.5


def test_boundary_equality_is_feasible_and_just_below_is_not():
    curve = _curve((0.0, 0.9, 0.1), (1.0, 0.8, 0.5))
    assert calibration.choose_lambda(curve, min_sa=0.9)["lambda"] == 0.0
    assert not calibration.choose_lambda(curve, min_sa=0.9 + 1e-6)["feasible"]
    # 1.8% typed as a percentage, above 9 correct of 500 by one float ulp.
    assert 1.8 / 100 > 9 / 500
    curve = _curve((0.0, 9 / 500, 0.1), (1.0, 0.0, 0.5))
    choice = calibration.choose_lambda(curve, min_sa=1.8 / 100)
    assert choice["feasible"] and choice["lambda"] == 0.0


def test_infeasible_names_the_closest_lambda():
    choice = calibration.choose_lambda(CURVE, min_sa=0.97)
    assert choice["feasible"] is False
    assert choice["lambda"] is None and choice["sa"] is None and choice["ra"] is None
    assert choice["closest"] == {"lambda": 0.0, "sa": 0.95, "ra": 0.10}
    assert choice["shortfall"] == pytest.approx(0.02)
    assert choice["feasible_lambdas"] == []
    assert choice["reason"].startswith("no λ meets SA ≥ 97.00%: the highest SA is 95.00% at λ = 0")
    assert "2.00 points short" in choice["reason"]
    choice = calibration.choose_lambda(CURVE, min_ra=0.6)
    assert not choice["feasible"] and choice["closest"]["lambda"] == 1.0
    assert "the highest RA is 55.00% at λ = 1" in choice["reason"]


def test_the_answer_is_plain_json():
    for kwargs in ({"min_sa": 0.9}, {"min_sa": 0.99}):
        choice = calibration.choose_lambda(CURVE, **kwargs)
        assert json.loads(json.dumps(choice, allow_nan=False)) == choice


@pytest.mark.parametrize(
    "curve, kwargs, match",
    [
        (CURVE, {}, "Exactly one of `min_sa` and `min_ra`"),
        (CURVE, {"min_sa": 0.9, "min_ra": 0.3}, "Exactly one of `min_sa` and `min_ra`"),
        (CURVE, {"min_sa": 90}, r"`min_sa` must be a finite number in \[0, 1\].*min_sa=90"),
        (CURVE, {"min_ra": -0.1}, "`min_ra` must be"),
        (CURVE, {"min_ra": float("nan")}, "`min_ra` must be"),
        (CURVE, {"min_sa": True}, "`min_sa` must be"),
        (CURVE, {"min_sa": "0.9"}, "`min_sa` must be"),
        ([], {"min_sa": 0.5}, "`curve` must be a non-empty list"),
        ({"lambda": 0.0, "sa": 1.0, "ra": 1.0}, {"min_sa": 0.5}, "`curve` must be a non-empty list"),
        ([{"lambda": 0.0, "sa": 1.0}], {"min_sa": 0.5}, r"curve\[0\]"),
        (_curve((0.0, 1.2, 0.1)), {"min_sa": 0.5}, r"`curve\[0\]\['sa'\]` must be.*1.2"),
        (_curve((1.5, 0.9, 0.1)), {"min_sa": 0.5}, r"`curve\[0\]\['lambda'\]` must be"),
        (_curve((0.0, 0.9, None)), {"min_sa": 0.5}, r"`curve\[0\]\['ra'\]` must be"),
        (_curve((0.5, 0.9, 0.1), (0.5, 0.8, 0.2)), {"min_sa": 0.5}, "one point per λ"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(curve, kwargs, match):
    with pytest.raises(ValueError, match=match):
        calibration.choose_lambda(curve, **kwargs)


def _result():
    return {
        "num_examples": 4,
        "lambdas": [0.0, 0.5, 1.0],
        "clean_accuracy": {"0.0": 1.0, "0.5": 0.75, "1.0": 0.75},
        "robust_accuracy": {
            "PGD-20": {"0.0": 0.25, "0.5": 0.5, "1.0": 0.75},
            "APGD-CE-100": {"0.0": 0.0, "0.5": 0.5, "1.0": 0.25},
        },
        "worst_case_accuracy": {"0.0": 0.0, "0.5": 0.25, "1.0": 0.25},
        "attacks": [],
    }


def test_curve_from_evaluation_worst_case_and_one_attack():
    assert calibration.curve_from_evaluation(_result()) == _curve(
        (0.0, 1.0, 0.0), (0.5, 0.75, 0.25), (1.0, 0.75, 0.25)
    )
    assert calibration.curve_from_evaluation(_result(), "PGD-20") == _curve(
        (0.0, 1.0, 0.25), (0.5, 0.75, 0.5), (1.0, 0.75, 0.75)
    )
    with pytest.raises(ValueError, match=r"`ra_attack` must be 'worst_case' or one of.*PGD-7"):
        calibration.curve_from_evaluation(_result(), "PGD-7")
    broken = _result()
    del broken["clean_accuracy"]["0.5"]
    with pytest.raises(ValueError, match="λ = 0.5"):
        calibration.curve_from_evaluation(broken)
    with pytest.raises(ValueError, match="`result` must be the dict"):
        calibration.curve_from_evaluation({"lambdas": []})


def test_format_curve_table_marks_the_choice():
    choice = calibration.choose_lambda(CURVE, min_sa=0.9)
    table = calibration.format_curve_table(CURVE, choice, "PGD-20")
    lines = table.splitlines()
    assert lines[0] == "| λ | SA (%) | RA PGD-20 (%) | SA ≥ 90.00% | |"
    assert lines[2] == "| 0 | 95.00 | 10.00 | yes |  |"
    assert lines[4] == "| 0.4 | 90.00 | 45.00 | yes | ◀ chosen |"
    assert lines[5] == "| 0.6 | 88.00 | 52.00 | no |  |"
    assert "chosen" not in calibration.format_curve_table(
        CURVE, calibration.choose_lambda(CURVE, min_sa=0.99), "PGD-20"
    )


def test_add_calibration_keeps_the_rest_of_the_card():
    card = {"name": "run", "test_evaluation": {"clean_accuracy": {"0.0": 0.9}}, "calibration": {"old": 1}}
    new = calibration.add_calibration(card, {"choice": {"lambda": 0.2}})
    assert new == {"name": "run", "test_evaluation": {"clean_accuracy": {"0.0": 0.9}},
                   "calibration": {"choice": {"lambda": 0.2}}}
    assert card["calibration"] == {"old": 1}  # Not modified in place.
    assert calibration.add_calibration(None, {"a": 1}) == {"calibration": {"a": 1}}
    with pytest.raises(ValueError, match="`model_card` must be a dict"):
        calibration.add_calibration([1], {})


# λ × width under a compute budget.
WIDTH_CURVES = {
    0.5: [{"lambda": 0.0, "sa": 0.86, "ra": 0.10}, {"lambda": 1.0, "sa": 0.80, "ra": 0.40}],
    0.75: [{"lambda": 0.0, "sa": 0.90, "ra": 0.12}, {"lambda": 0.5, "sa": 0.88, "ra": 0.35},
           {"lambda": 1.0, "sa": 0.84, "ra": 0.45}],
    1.0: [{"lambda": 0.0, "sa": 0.93, "ra": 0.15}, {"lambda": 0.5, "sa": 0.91, "ra": 0.42},
          {"lambda": 1.0, "sa": 0.89, "ra": 0.50}],
}


def test_choose_lambda_and_width_maximises_the_objective_within_the_budget():
    choice = calibration.choose_lambda_and_width(WIDTH_CURVES, min_sa=0.88, max_width=0.75)
    assert choice["feasible"]
    assert (choice["width"], choice["lambda"], choice["ra"]) == (0.75, 0.5, 0.35)
    assert choice["widths"] == [0.5, 0.75]
    assert choice["feasible_points"] == [{"width": 0.75, "lambda": 0.0}, {"width": 0.75, "lambda": 0.5}]
    assert "width 0.75" in choice["reason"] and "width ≤ 0.75" in choice["reason"]
    # Without a budget the full width wins; under an RA requirement SA is maximised.
    assert calibration.choose_lambda_and_width(WIDTH_CURVES, min_sa=0.88)["width"] == 1.0
    by_ra = calibration.choose_lambda_and_width(WIDTH_CURVES, min_ra=0.40, max_width=0.75)
    assert (by_ra["width"], by_ra["lambda"], by_ra["sa"]) == (0.75, 1.0, 0.84)


def test_choose_lambda_and_width_ties_go_to_the_narrower_width():
    curves = {w: [{"lambda": 0.0, "sa": 0.9, "ra": 0.3}] for w in (1.0, 0.5)}
    assert calibration.choose_lambda_and_width(curves, min_sa=0.5)["width"] == 0.5


def test_choose_lambda_and_width_infeasible_names_the_closest_point():
    choice = calibration.choose_lambda_and_width(WIDTH_CURVES, min_sa=0.92, max_width=0.75)
    assert not choice["feasible"] and choice["width"] is None and choice["lambda"] is None
    assert choice["closest"] == {"lambda": 0.0, "sa": 0.90, "ra": 0.12, "width": 0.75}
    assert choice["shortfall"] == pytest.approx(0.02)
    assert "no (λ, width) meets SA ≥ 92.00% and width ≤ 0.75" in choice["reason"]


def test_choose_lambda_and_width_rejects_bad_budgets():
    with pytest.raises(ValueError, match="max_width"):
        calibration.choose_lambda_and_width(WIDTH_CURVES, min_sa=0.5, max_width=0.25)
    with pytest.raises(ValueError, match="curves"):
        calibration.choose_lambda_and_width({}, min_sa=0.5)
