"""Study reports: numbers against the results they come from, claims, byte-for-byte regeneration."""

import copy
import glob
import json
import math
import os

import pytest

from oat_tf.reporting import study_mixture
from oat_tf.reporting import study_oat
from oat_tf.reporting import study_report
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
    frontier = study_oat.frontier_points(results)
    assert list(frontier) == [0.0, 0.1, 0.5, 1.0]
    seen = study_oat.compare_to_frontier(results["runs"][-1], frontier, study_oat.S1)
    assert seen["compared"] == [0.0, 0.1, 1.0] and seen["within"] == [0.0]
    assert math.isclose(seen["worst_sa_drop"], 0.02) and math.isclose(seen["worst_ra_drop"], 0.02)
    unseen = study_oat.compare_to_frontier(results["runs"][-1], frontier, [0.5, 0.9])
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


def test_header_names_every_machine_a_study_ran_on(tmp_path):
    results = _oat_results()
    text = study_report.render_study_report(results, "r.json", str(tmp_path))
    assert "- Machine: Linux, 2 CPU cores, 0 GPUs; TensorFlow 2, Keras 3." in text
    other = {"platform": "Linux-other", "cpu_count": 4, "gpus": 0, "tensorflow": "2", "keras": "3", "onednn": "on"}
    results["machines"] = [{"machine": results["machine"], "jobs": 3}, {"machine": other, "jobs": 1}]
    text = study_report.render_study_report(results, "r.json", str(tmp_path))
    assert (
        "- Machines (the jobs ran on 2): Linux, 2 CPU cores, 0 GPUs; TensorFlow 2, Keras 3. (3 jobs); "
        "Linux-other, 4 CPU cores, 0 GPUs; TensorFlow 2, Keras 3. CPU kernels: oneDNN. (1 job)"
    ) in text
    assert "- Machine: " not in text
    # Two machines of the same platform differ by their CPU, which the line names when recorded.
    epyc = dict(other, platform="Linux", cpu="AMD EPYC", cpu_vector_extensions="avx2")
    xeon = dict(other, platform="Linux", cpu="Intel(R) Xeon(R) Processor", cpu_vector_extensions="avx512")
    results["machines"] = [{"machine": epyc, "jobs": 2}, {"machine": xeon, "jobs": 5}]
    text = study_report.render_study_report(results, "r.json", str(tmp_path))
    assert "Linux, AMD EPYC (avx2), 4 CPU cores, 0 GPUs" in text
    assert "Linux, Intel(R) Xeon(R) Processor (avx512), 4 CPU cores, 0 GPUs" in text


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
    z1 = study_mixture.z_score(0.40, 0.30, 1000, 1000)
    assert f"+10.0 (z = {z1:.2f}) | holds |" in text
    # (2) 41.0 vs 30.0: holds. (3) batch statistics 45.0 vs 41.0: z ≈ 1.8, within noise.
    z3 = study_mixture.z_score(0.45, 0.41, 1000, 1000)
    assert f"+4.0 (z = {z3:.2f}) | same direction, within noise (z < 1.96)" in text
    # (4) adversarial RA peaks at 26, standard SA at 18: holds.
    assert "adversarial RA peaks at depth 26 | standard SA peaks at depth 18 (ties: the shallower)" in text
    assert f"adversarial RA 10→34: +3.0 (z = {study_mixture.z_score(0.43, 0.40, 1000, 1000):.2f})" in text
    assert "| 26 | 80.0 | 44.0 | 90.0 | 0.0 |" in text
    assert os.path.isfile(tmp_path / "depth.png")
    reversed_text = study_report.render_study_report(_mixture_results(batch_ra=0.30), "r", str(tmp_path))
    assert "does not hold (significantly reversed)" in reversed_text


def _grid(points_by_width):
    """A slimmable run's per-width results: {width: {λ: (SA, PGD-20, APGD-CE, worst)}}."""
    return {"widths": sorted(points_by_width),
            "per_width": {f"{w}": _result(p) for w, p in points_by_width.items()}}


def test_width_report_compares_oats_with_pgd_ats_at_each_width(tmp_path):
    base = _run("pgdats_1.0", _config("ats", "fixed", (1.0,)), _result({1.0: (0.80, 0.7, 0.7, 0.70)}))
    base["test_eval_widths"] = _grid({0.5: {1.0: (0.75, 0.6, 0.6, 0.60)}, 1.0: {1.0: (0.80, 0.7, 0.7, 0.70)}})
    oats = _run("oats", _config("oats"), _result({0.0: (0.9, 0, 0, 0), 1.0: (0.81, 0.7, 0.7, 0.69)}))
    oats["test_eval_widths"] = _grid({
        0.5: {0.0: (0.85, 0, 0, 0), 1.0: (0.76, 0.62, 0.62, 0.62)},
        1.0: {0.0: (0.9, 0, 0, 0), 1.0: (0.81, 0.7, 0.7, 0.69)},
    })
    results = _oat_results()
    results.update(report="width", runs=[base, oats])
    text = study_report.render_study_report(results, "r", str(tmp_path))
    assert "| 0.5 | 1 | oats | +1.0 | +2.0 |" in text
    assert "| 1 | 1 | oats | +1.0 | -1.0 |" in text
    assert os.path.isfile(tmp_path / "ra_vs_sa_per_width.png")


def _with_seed(run, seed, shift):
    """A repeat of `run` with another seed: every accuracy moved by `shift`."""
    repeat = copy.deepcopy(run)
    for table in (repeat["test_eval"]["clean_accuracy"], repeat["test_eval"]["worst_case_accuracy"]):
        for key in table:
            table[key] = round(min(max(table[key] + shift, 0.0), 1.0), 6)
    repeat["config"]["train"]["seed"] = seed
    repeat.update(name=f"{run['name']}_seed{seed}", repeat_of=run["name"], seed=seed, wall_seconds=60.0)
    return repeat


def test_seed_spread_of_the_oat_headline_pairs_each_seed_with_its_own_frontier(tmp_path):
    results = _oat_results()
    for run in results["runs"]:
        run["config"]["train"]["seed"] = 0
    base = {run["name"]: run for run in results["runs"]}
    # Seed 1: OAT 3 points lower everywhere, its frontier unchanged; seed 2: both 1 point higher.
    results["runs"] += [_with_seed(base["pgdat_0.1"], 1, 0.0), _with_seed(base["oat_dual"], 1, -0.03)]
    results["runs"] += [_with_seed(base["pgdat_0.1"], 2, 0.01), _with_seed(base["oat_dual"], 2, 0.01)]
    results["total_wall_seconds"] = 450.0 + 4 * 60.0
    text = study_report.render_study_report(results, "r", str(tmp_path))
    first_seed = study_report.render_study_report(_oat_results(), "r", str(tmp_path))
    # The single-seed sections are unchanged by the repeats.
    section = text.split("## The SA-RA frontier")[1].split("## Spread over seeds")[0]
    assert section.rstrip("\n") == first_seed.split("## The SA-RA frontier")[1].rstrip("\n")
    spread = text.split("## Spread over seeds")[1]
    assert "seeds 0, 1, 2" in spread and "cost 4.0 min of the study's 11.5 min" in spread
    # λ = 0.1: PGD-AT SA 88/88/89 and RA 50/50/51; OAT SA 86/83/87 and RA 51/48/52;
    # per seed SA −2/−5/−2 and RA +1/−2/+1.
    assert (
        "| 0.1 | 88.3 (88.0–89.0) | 50.3 (50.0–51.0) | 85.3 (83.0–87.0) | 50.3 (48.0–52.0) "
        "| -3.0 (-5.0–-2.0) | +0.0 (-2.0–+1.0) |"
    ) in spread
    # Only the repeated PGD-AT model (λ = 0.1) is a baseline: at λ = 0 OAT stands alone
    # (SA 89.5/86.5/90.5, RA 0/0/1).
    assert "| 0 | – | – | 88.8 (86.5–90.5) | 0.3 (0.0–1.0) | – | – |" in spread
    # λ = 0.1 is the one compared S1 λ, short by 2 SA points or more on every seed.
    assert "seed 0: 0/1, seed 1: 0/1, seed 2: 0/1." in spread


def _runs_results():
    """An ablation: PGD-AT at λ = 1 as the reference, and two changes of it."""
    results = _oat_results()
    config = _config("plain", "fixed", (1.0,))
    results.update(report="runs", runs=[
        _run("pgdat", config, _result({1.0: (0.76, 0.612, 0.603, 0.593)})),
        _run("pgdat_mixed", config, _result({1.0: (0.77, 0.650, 0.610, 0.601)})),
        _run("pgdat_step", config, _result({1.0: (0.75, 0.620, 0.590, 0.580)})),
    ])
    for run in results["runs"]:
        run["config"] = copy.deepcopy(config)
        run["config"]["train"]["seed"] = 0
    return results


def test_runs_report_gives_every_run_and_its_difference_from_the_first(tmp_path):
    text = study_report.render_study_report(_runs_results(), "r", str(tmp_path))
    assert "| run | λ | SA | RA PGD-20 | RA APGD-CE | RA (worst case) |" in text
    assert "| pgdat_mixed | 1 | 77.0 | 65.0 | 61.0 | 60.1 |" in text
    against = text.split("## Against `pgdat`")[1]
    assert "| pgdat_mixed | 1 | +1.0 | +3.8 | +0.7 | +0.8 |" in against
    assert "| pgdat_step | 1 | -1.0 | +0.8 | -1.3 | -1.3 |" in against
    assert "| pgdat | 1 |" not in against  # the reference is not compared with itself
    assert "Spread over seeds" not in text


def test_seed_spread_of_the_runs_report_takes_each_difference_within_a_seed(tmp_path):
    results = _runs_results()
    base = {run["name"]: run for run in results["runs"]}
    # Seed 1: the reference 2 points lower, the mixed run unchanged; seed 2: both 1 point higher.
    results["runs"] += [_with_seed(base["pgdat"], 1, -0.02), _with_seed(base["pgdat_mixed"], 1, 0.0)]
    results["runs"] += [_with_seed(base["pgdat"], 2, 0.01), _with_seed(base["pgdat_mixed"], 2, 0.01)]
    spread = study_report.render_study_report(results, "r", str(tmp_path)).split("## Spread over seeds")[1]
    # Worst-case RA of pgdat 59.3/57.3/60.3 and of pgdat_mixed 60.1/60.1/61.1; per seed
    # +0.8/+2.8/+0.8. SA 76/74/77 and 77/77/78: +1/+3/+1. `_with_seed` moves SA and the worst
    # case only, so each attack's RA is the same on every seed.
    assert "| pgdat | 1 | 75.7 (74.0–77.0) | 61.2 (61.2–61.2) | 60.3 (60.3–60.3) | 59.0 (57.3–60.3) | – | – |" in spread
    assert ("| pgdat_mixed | 1 | 77.3 (77.0–78.0) | 65.0 (65.0–65.0) | 61.0 (61.0–61.0) | 60.4 (60.1–61.1) "
            "| +1.7 (+1.0–+3.0) | +1.5 (+0.8–+2.8) |") in spread
    assert "pgdat_step" not in spread  # not repeated


def test_seed_spread_of_the_mixture_claims(tmp_path):
    results = _mixture_results()
    for run in results["runs"]:
        run["config"]["train"]["seed"] = 0
    repeated = [run for run in results["runs"] if run["config"]["model"]["architecture"] == "resnet10"
                and run["config"]["train"]["clean_fraction"] != 1.0]
    # Seed 1: every RA 2 points lower, the batch-statistics evaluation too.
    for run in repeated:
        repeat = _with_seed(run, 1, -0.02)
        for evaluation in repeat["evaluations"]:
            table = evaluation["results"]["worst_case_accuracy"]
            for key in table:
                table[key] = round(table[key] - 0.02, 6)
        results["runs"].append(repeat)
    text = study_report.render_study_report(results, "r", str(tmp_path))
    spread = text.split("## Spread over seeds")[1]
    # (1) 40 − 30 on both seeds; (3) batch 45 − mixture 41 on both.
    assert "| (1) clean fraction 0 − 0.5 (single BN) | +10.0, +10.0 | +10.0 (+10.0–+10.0) |" in spread
    assert "| (3) batch − moving statistics (mixture BN) | +4.0, +4.0 | +4.0 (+4.0–+4.0) |" in spread
    # The evaluation's SA was left as it was (79), its RA moved (45, 43).
    assert "| mixture_bn_f0.5_resnet10/batch_stats | 1 | 79.0 (79.0–79.0) | 44.0 (43.0–45.0) |" in spread


def test_seed_spread_of_oats_against_pgd_ats_per_width(tmp_path):
    base = _run("pgdats_1.0", _config("ats", "fixed", (1.0,)), _result({1.0: (0.80, 0.7, 0.7, 0.70)}))
    base["test_eval_widths"] = _grid({0.5: {1.0: (0.75, 0.6, 0.6, 0.60)}})
    oats = _run("oats", _config("oats"), _result({1.0: (0.81, 0.7, 0.7, 0.69)}))
    oats["test_eval_widths"] = _grid({0.5: {1.0: (0.76, 0.62, 0.62, 0.62)}})
    runs = [base, oats]
    for run in runs:
        run["config"]["train"]["seed"] = 0
    repeats = []
    for run, ra in ((base, 0.58), (oats, 0.63)):
        repeat = copy.deepcopy(run)
        repeat["config"]["train"]["seed"] = 5
        repeat["test_eval_widths"]["per_width"]["0.5"]["worst_case_accuracy"]["1.0"] = ra
        repeat.update(name=f"{run['name']}_seed5", repeat_of=run["name"], seed=5)
        repeats.append(repeat)
    results = _oat_results()
    results.update(report="width", runs=runs + repeats)
    text = study_report.render_study_report(results, "r", str(tmp_path))
    spread = text.split("## Spread over seeds")[1]
    # RA differences: 62 − 60 = +2 (seed 0), 63 − 58 = +5 (seed 5).
    assert "| 0.5 | 1 | oats | 76.0 (76.0–76.0) | 62.5 (62.0–63.0) | +1.0 (+1.0–+1.0) | +3.5 (+2.0–+5.0) |" in spread
    assert "| 0.5 | 1 | pgdats_1.0 | 75.0 (75.0–75.0) | 59.0 (58.0–60.0) | – | – |" in spread


def _report_kind(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("report")


# Study pages, the where-OAT-holds grid's cells and its side studies included; results with report "none" are seed spreads
# (seed_spread_test checks those), and a summary without a report is the where-OAT-holds page's
# (where_oat_holds_test checks it).
COMMITTED = sorted(
    path
    for pattern in (("*", "results.json"), ("where_oat_holds", "*", "results.json"),
                    ("where_oat_holds", "cells", "*", "results.json"))
    for path in glob.glob(os.path.join(testing.REPO_ROOT, "docs", "results", *pattern))
    if _report_kind(path) not in ("none", None)
)


@pytest.mark.parametrize("path", COMMITTED, ids=[os.path.basename(os.path.dirname(p)) for p in COMMITTED])
def test_committed_reports_regenerate_byte_for_byte(path):
    study_report.write_study_report(path, check=True)



def test_the_committed_studies_are_there():
    names = {os.path.basename(os.path.dirname(p)) for p in COMMITTED}
    assert {"mixture_bn", "oat_fashion_mnist", "oat_mnist", "oats_fashion_mnist", "pgdat_gap"} <= names
