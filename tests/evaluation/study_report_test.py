"""Study reports: numbers against the results they come from, claims, byte-for-byte regeneration."""

import copy
import glob
import json
import math
import os

import pytest

from oat_tf.evaluation import study_report
from tests import testing

ATTACKS = [
    {"label": "PGD-20", "name": "pgd", "epsilon": 0.1, "step_size": 0.025, "num_steps": 20},
    {"label": "APGD-CE", "name": "apgd_ce", "epsilon": 0.1, "step_size": 0.025, "num_steps": 100},
]


def _result(points, n=1000):
    """points: {λ: (SA, RA PGD-20, RA APGD-CE, worst)}."""
    keys = {lam: f"{float(lam)}" for lam in points}
    return {
        "num_examples": n,
        "seed": 0,
        "lambdas": sorted(float(l) for l in points),
        "clean_accuracy": {keys[l]: v[0] for l, v in points.items()},
        "robust_accuracy": {
            "PGD-20": {keys[l]: v[1] for l, v in points.items()},
            "APGD-CE": {keys[l]: v[2] for l, v in points.items()},
        },
        "worst_case_accuracy": {keys[l]: v[3] for l, v in points.items()},
        "attacks": ATTACKS,
    }


def _config(variant="oat", sampling="element_wise", values=(0.0, 0.1, 0.2, 0.3, 0.4, 1.0),
            architecture="small_cnn", objective="oat", clean_fraction=0.5, scheme="rand", dim=128):
    return {
        "model": {"architecture": architecture, "variant": variant, "filters": [16, 32],
                  "encoder": {"scheme": scheme, "dim": dim}},
        "lambda_sampling": {"sampling": sampling, "values": list(values)},
        "train": {"epochs": 5, "objective": objective, "clean_fraction": clean_fraction},
        "train_attack": {"name": "pgd", "epsilon": 0.1, "step_size": 0.025, "num_steps": 7},
        "data": {"num_train_examples": 10000},
    }


def _run(name, config, result, evaluations=()):
    return {"name": name, "flags": [], "config": config, "test_eval": result, "wall_seconds": 90.0,
            "evaluations": list(evaluations)}


def _oat_results():
    runs = []
    for lam, sa, ra in ((0.0, 0.90, 0.00), (0.1, 0.88, 0.50), (0.5, 0.84, 0.60), (1.0, 0.80, 0.70)):
        runs.append(_run(f"pgdat_{lam}", _config("plain", "fixed", (lam,)),
                         _result({lam: (sa, ra + 0.02, ra + 0.01, ra)})))
    oat = _result({
        0.0: (0.895, 0.01, 0.01, 0.00),   # −0.5 SA, +0 RA: within
        0.1: (0.860, 0.53, 0.52, 0.51),   # −2.0 SA: not within
        0.5: (0.835, 0.62, 0.61, 0.60),   # unseen, −0.5 / 0: within
        1.0: (0.810, 0.70, 0.69, 0.68),   # +1 SA, −2 RA: not within
    })
    runs.append(_run("oat_dual", _config(), oat))
    return {"study": "toy", "description": "A toy study.", "command": "python -m oat_tf.sweep --flagfile=x",
            "report": "oat", "results_path": "docs/results/toy/results.json",
            "machine": {"platform": "Linux", "cpu_count": 2, "gpus": 0, "tensorflow": "2", "keras": "3"},
            "total_wall_seconds": 450.0, "runs": runs, "missing": []}


def test_compare_to_frontier_counts_lambda_within_1_5_points():
    results = _oat_results()
    frontier = study_report.frontier_points(results)
    assert list(frontier) == [0.0, 0.1, 0.5, 1.0]
    seen = study_report.compare_to_frontier(results["runs"][-1], frontier, study_report.S1)
    assert seen["compared"] == [0.0, 0.1, 1.0] and seen["within"] == [0.0]
    assert math.isclose(seen["worst_sa_drop"], 0.02) and math.isclose(seen["worst_ra_drop"], 0.02)
    unseen = study_report.compare_to_frontier(results["runs"][-1], frontier, [0.5, 0.9])
    assert unseen["compared"] == [0.5] and unseen["within"] == [0.5]


def test_oat_report_tables_hold_the_results(tmp_path):
    results = _oat_results()
    text = study_report.render_study_report(results, "r.json", str(tmp_path))
    assert "| 0.1 | seen | 86.0 | 53.0 | 52.0 | 51.0 | -2.0 | +1.0 |" in text
    assert "| 0.5 | unseen | 83.5 | 62.0 | 61.0 | 60.0 | -0.5 | +0.0 |" in text
    assert "| 1 | 80.0 | 72.0 | 71.0 | 70.0 |" in text  # the frontier row at λ = 1
    # Summary: 1 of 3 S1 λ within, the unseen λ within, shortfalls −2.0.
    assert "| oat_dual | oat | RO-128 | 1/3 | 1/1 | -2.0 | -2.0 |" in text
    assert os.path.isfile(tmp_path / "ra_vs_sa.png") and os.path.isfile(tmp_path / "accuracy_vs_lambda.png")


def test_write_then_check_is_byte_for_byte_and_detects_edits(tmp_path):
    directory = tmp_path / "toy"
    directory.mkdir()
    path = directory / "results.json"
    path.write_text(json.dumps(_oat_results()))
    markdown = study_report.write_study_report(str(path))
    assert markdown == str(tmp_path / "toy.md")
    first = open(markdown, "rb").read()
    plot = open(directory / "ra_vs_sa.png", "rb").read()
    assert study_report.write_study_report(str(path), check=True) == markdown
    study_report.write_study_report(str(path))
    assert open(markdown, "rb").read() == first and open(directory / "ra_vs_sa.png", "rb").read() == plot
    with open(markdown, "a") as f:
        f.write("edited\n")
    with pytest.raises(ValueError, match="differs"):
        study_report.write_study_report(str(path), check=True)


def test_bad_results_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="results"):
        study_report.write_study_report(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        study_report.write_study_report(str(bad))
    results = _oat_results()
    results["report"] = "nope"
    with pytest.raises(ValueError, match="report"):
        study_report.render_study_report(results, "r", str(tmp_path))
    del results["runs"]
    with pytest.raises(ValueError, match="runs"):
        study_report.render_study_report(results, "r", str(tmp_path))


def test_z_score_matches_the_closed_form():
    z = study_report.z_score(0.6, 0.5, 1000, 1000)
    assert math.isclose(z, 0.1 / math.sqrt(0.24 / 1000 + 0.25 / 1000))
    assert study_report.z_score(1.0, 1.0, 10, 10) == 0.0


def _mixture_results(batch_ra=0.45):
    def adv(depth, ra, f=0.0, variant="plain", evaluations=()):
        config = _config(variant, "element_wise", (0.0, 1.0), f"resnet{depth}", "mixed_batch", f)
        return _run(f"{variant}_f{f}_resnet{depth}", config, _result({1.0: (0.80, ra, ra, ra)}), evaluations)

    batch = {"label": "batch_stats", "flags": [], "wall_seconds": 1.0,
             "results": {**_result({1.0: (0.79, batch_ra, batch_ra, batch_ra)}), "bn_statistics": "batch"}}
    runs = [
        adv(10, 0.30, f=0.5),
        adv(10, 0.40, f=0.0),
        adv(10, 0.41, f=0.5, variant="mixture_bn", evaluations=[batch]),
        adv(18, 0.42), adv(26, 0.44), adv(34, 0.43),
    ]
    for depth, sa in ((10, 0.90), (18, 0.91), (26, 0.90), (34, 0.89)):
        config = _config("plain", "element_wise", (0.0, 1.0), f"resnet{depth}", "mixed_batch", 1.0)
        runs.append(_run(f"standard_resnet{depth}", config, _result({1.0: (sa, 0.0, 0.0, 0.0)})))
    results = _oat_results()
    results.update(report="mixture_bn", runs=runs)
    return results


def test_mixture_report_verdicts(tmp_path):
    text = study_report.render_study_report(_mixture_results(), "r", str(tmp_path))
    # (1) 40.0 vs 30.0 on 1,000 images each: z ≈ 4.7, holds.
    z1 = study_report.z_score(0.40, 0.30, 1000, 1000)
    assert f"+10.0 (z = {z1:.2f}) | holds |" in text
    # (2) 41.0 vs 30.0: holds. (3) batch statistics 45.0 vs 41.0: z ≈ 1.8, within noise.
    z3 = study_report.z_score(0.45, 0.41, 1000, 1000)
    assert f"+4.0 (z = {z3:.2f}) | same direction, within noise (z < 1.96)" in text
    # (4) adversarial RA peaks at 26, standard SA at 18: holds.
    assert "adversarial RA peaks at depth 26 | standard SA peaks at depth 18 (ties: the shallower)" in text
    assert f"adversarial RA 10→34: +3.0 (z = {study_report.z_score(0.43, 0.40, 1000, 1000):.2f})" in text
    assert "| 26 | 80.0 | 44.0 | 90.0 | 0.0 |" in text
    assert os.path.isfile(tmp_path / "depth.png")
    reversed_text = study_report.render_study_report(_mixture_results(batch_ra=0.30), "r", str(tmp_path))
    assert "does not hold (significantly reversed)" in reversed_text


def test_width_report_compares_oats_with_pgd_ats_at_each_width(tmp_path):
    def grid(points_by_width):
        return {"widths": sorted(points_by_width),
                "per_width": {f"{w}": _result(p) for w, p in points_by_width.items()}}

    base = _run("pgdats_1.0", _config("ats", "fixed", (1.0,)), _result({1.0: (0.80, 0.7, 0.7, 0.70)}))
    base["test_eval_widths"] = grid({0.5: {1.0: (0.75, 0.6, 0.6, 0.60)}, 1.0: {1.0: (0.80, 0.7, 0.7, 0.70)}})
    oats = _run("oats", _config("oats"), _result({0.0: (0.9, 0, 0, 0), 1.0: (0.81, 0.7, 0.7, 0.69)}))
    oats["test_eval_widths"] = grid({
        0.5: {0.0: (0.85, 0, 0, 0), 1.0: (0.76, 0.62, 0.62, 0.62)},
        1.0: {0.0: (0.9, 0, 0, 0), 1.0: (0.81, 0.7, 0.7, 0.69)},
    })
    results = _oat_results()
    results.update(report="width", runs=[base, oats])
    text = study_report.render_study_report(results, "r", str(tmp_path))
    assert "| 0.5 | 1 | oats | +1.0 | +2.0 |" in text
    assert "| 1 | 1 | oats | +1.0 | -1.0 |" in text
    assert os.path.isfile(tmp_path / "ra_vs_sa_per_width.png")


def _report_kind(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("report")


# Study pages; results with report "none" are seed spreads (seed_spread_test checks those).
COMMITTED = sorted(
    path for path in glob.glob(os.path.join(testing.REPO_ROOT, "docs", "results", "*", "results.json"))
    if _report_kind(path) != "none"
)


@pytest.mark.parametrize("path", COMMITTED, ids=[os.path.basename(os.path.dirname(p)) for p in COMMITTED])
def test_committed_reports_regenerate_byte_for_byte(path):
    study_report.write_study_report(path, check=True)



def test_the_committed_studies_are_there():
    names = {os.path.basename(os.path.dirname(p)) for p in COMMITTED}
    assert {"mixture_bn", "oat_fashion_mnist", "oat_mnist", "oats_fashion_mnist"} <= names
