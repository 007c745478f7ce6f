"""Tests for oat_tf.reporting.seed_spread: the spread over seeds and the check of a rerun."""

import glob
import json
import os
import subprocess
import sys

import pytest

from oat_tf.reporting import seed_spread
from tests import testing


def _evaluation(sa, worst, pgd, num_examples=500):
    return {
        "num_examples": num_examples,
        "clean_accuracy": {"0.0": sa[0], "1.0": sa[1]},
        "worst_case_accuracy": {"0.0": worst[0], "1.0": worst[1]},
        "robust_accuracy": {"PGD-10": {"0.0": pgd[0], "1.0": pgd[1]}},
    }


def _runs():
    return [
        {"name": f"seed_{s}", "config": {"train": {"seed": s}}, "wall_seconds": 60.0 * (s + 1),
         "test_eval": _evaluation(sa, worst, pgd)}
        for s, (sa, worst, pgd) in enumerate([
            ((0.98, 0.97), (0.0, 0.88), (0.10, 0.90)),
            ((0.96, 0.98), (0.02, 0.86), (0.12, 0.89)),
            ((0.97, 0.96), (0.01, 0.87), (0.14, 0.91)),
        ])
    ]


def test_summary_has_mean_min_max_per_metric_and_lambda():
    summary = seed_spread.summarize(_runs())
    assert summary["metrics"] == ["SA", "worst case", "PGD-10"]
    assert summary["seeds"] == [0, 1, 2] and summary["lambdas"] == ["0.0", "1.0"]
    worst = summary["values"]["worst case"]["1.0"]
    assert worst["per_run"] == [0.88, 0.86, 0.87]
    assert worst["mean"] == pytest.approx(0.87) and (worst["min"], worst["max"]) == (0.86, 0.88)
    table = seed_spread.format_table(summary, seen_lambdas=[0.0, 0.1, 1.0])
    assert table.splitlines()[0] == "| λ | seen | SA (%) | RA worst case (%) | RA PGD-10 (%) |"
    assert table.splitlines()[3] == "| 1.0 | seen | 97.0 (96.0–98.0) | 87.0 (86.0–88.0) | 90.0 (89.0–91.0) |"


def test_check_run_flags_numbers_outside_the_widened_spread():
    summary = seed_spread.summarize(_runs())
    # Inside: the middle of every band.
    assert seed_spread.check_run(summary, _evaluation((0.97, 0.97), (0.01, 0.87), (0.12, 0.90))) == []
    # 2 SE at p = 0.87 on 500 digits is 3.0 points below the minimum of 86:
    # 83.5 passes, 82.5 fails.
    assert seed_spread.check_run(summary, _evaluation((0.97, 0.97), (0.01, 0.835), (0.12, 0.90))) == []
    problems = seed_spread.check_run(summary, _evaluation((0.97, 0.97), (0.01, 0.825), (0.12, 0.90)))
    assert len(problems) == 1 and problems[0].startswith("worst case at λ=1.0: 82.50% outside")
    # A smaller margin is stricter; a missing attack is named.
    assert seed_spread.check_run(summary, _evaluation((0.97, 0.97), (0.01, 0.855), (0.12, 0.9)), 0.0)
    missing = _evaluation((0.97, 0.97), (0.01, 0.87), (0.12, 0.90))
    missing["robust_accuracy"] = {"PGD-20": missing["robust_accuracy"]["PGD-10"]}
    assert seed_spread.check_run(summary, missing) == ["PGD-10: not measured by the new run"]
    with pytest.raises(ValueError, match="margin_se"):
        seed_spread.check_run(summary, missing, -1.0)


def test_runs_must_match():
    runs = _runs()
    runs[1]["test_eval"]["robust_accuracy"] = {"PGD-20": runs[1]["test_eval"]["robust_accuracy"]["PGD-10"]}
    with pytest.raises(ValueError, match="same λ values with the same attacks"):
        seed_spread.summarize(runs)
    with pytest.raises(ValueError, match="at least one run"):
        seed_spread.summarize([])


def test_cli_writes_the_page_and_checks_a_run(tmp_path):
    results = {"study": "quickstart_seeds", "command": "python -m oat_tf.sweep ...", "runs": _runs(),
               "machine": {"cpu": "AMD EPYC", "cpu_vector_extensions": "avx2", "cpu_count": 2,
                           "tensorflow": "2.21.0", "keras": "3.15.1"}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "test_eval.json").write_text(json.dumps(_evaluation((0.97, 0.97), (0.01, 0.80), (0.12, 0.9))))
    env = dict(os.environ, PYTHONPATH=testing.REPO_ROOT)
    command = [sys.executable, "-m", "oat_tf.reporting.seed_spread", f"--results={tmp_path}/results.json",
               f"--output={tmp_path}/page.md", f"--check_run={run_dir}"]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert "worst case at λ=1.0: 80.00% outside" in completed.stdout
    page = (tmp_path / "page.md").read_text()
    assert "AMD EPYC (avx2), 2 cores; TensorFlow 2.21.0" in page
    assert "1.0, 2.0, 3.0 min; 6.0 min in all" in page
    assert seed_spread.format_table(seed_spread.summarize(_runs())) in page


SEED_PAGES = sorted(
    path for path in glob.glob(os.path.join(testing.REPO_ROOT, "docs", "results", "*", "results.json"))
    if json.load(open(path, encoding="utf-8")).get("report") == "none"
)


@pytest.mark.parametrize("path", SEED_PAGES, ids=[os.path.basename(os.path.dirname(p)) for p in SEED_PAGES])
def test_committed_seed_pages_regenerate_byte_for_byte(path):
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    page = seed_spread.format_page(results, seed_spread.summarize(results["runs"]))
    with open(os.path.dirname(path) + ".md", encoding="utf-8") as f:
        assert f.read() == page
