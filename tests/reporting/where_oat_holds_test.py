"""The where-OAT-holds page: cell summaries, counts against the frontier, regeneration."""

import json
import os
import re

import numpy as np
import pytest

from oat_tf.reporting import where_oat_holds

S1 = (0.0, 0.1, 0.2, 0.3, 0.4, 1.0)


def _result(points):
    """A λ-grid result with SA and worst-case RA per λ."""
    return {
        "clean_accuracy": {f"{lam:.1f}": sa for lam, (sa, _) in points.items()},
        "worst_case_accuracy": {f"{lam:.1f}": ra for lam, (_, ra) in points.items()},
    }


def _run(name, variant, sampling, values, points, *, filters=(4, 8), epochs=5, repeat_of=None):
    run = {
        "name": name,
        "config": {
            "model": {"architecture": "small_cnn", "variant": variant, "filters": list(filters),
                      "hidden_units": 16, "input_shape": [28, 28, 1], "num_classes": 10,
                      "encoder": {"dim": 128, "scheme": "rand", "seed": 0, "lambda_values": list(values)}},
            "lambda_sampling": {"sampling": sampling, "values": list(values), "zero_probability": None},
            "train": {"epochs": epochs},
            "data": {"num_train_examples": 10000},
        },
        "test_eval": _result(points),
    }
    if repeat_of:
        run["repeat_of"] = repeat_of
        run["seed"] = int(name.rsplit("_seed", 1)[1])
    return run


def _cell(study, oat_gaps, *, filters=(4, 8), epochs=5):
    """A cell whose frontier has SA 0.9 − λ/2 and RA 0.2 + λ/2; OAT is off by `oat_gaps[λ]` (SA, RA)."""
    runs = [
        _run(f"pgdat_{lam:g}", "plain", "fixed", [lam],
             {lam: (0.9 - lam / 2, 0.2 + lam / 2)}, filters=filters, epochs=epochs)
        for lam in S1
    ]
    oat_points = {lam: (0.9 - lam / 2 + d_sa, 0.2 + lam / 2 + d_ra)
                  for lam, (d_sa, d_ra) in zip(S1, oat_gaps)}
    runs.append(_run("oat_dual_ro128", "oat", "element_wise", S1, oat_points, filters=filters, epochs=epochs))
    # Seed repeats, frontier included, are not part of the grid's single-seed cells.
    runs.append(_run("oat_dual_ro128_seed1", "oat", "element_wise", S1, {lam: (0.0, 0.0) for lam in S1},
                     filters=filters, epochs=epochs, repeat_of="oat_dual_ro128"))
    runs += [_run(f"pgdat_{lam:g}_seed1", "plain", "fixed", [lam], {lam: (0.5, 0.5)}, filters=filters,
                  epochs=epochs, repeat_of=f"pgdat_{lam:g}") for lam in S1]
    return {"study": study, "report": "oat", "runs": runs, "command": "sweep",
            "results_path": f"docs/results/where_oat_holds/cells/{study}/results.json"}


def test_counts_within_one_and_a_half_points_of_the_frontier():
    # λ = 0: SA 1.4 below (within); λ = 0.1: RA 1.6 below (not); above counts as within.
    gaps = [(-0.014, 0.0), (0.0, -0.016), (0.05, 0.05), (-0.02, 0.0), (0.0, 0.0), (0.0, -0.015)]
    cell = where_oat_holds.cell_summary(_cell("c1", gaps), "c1/results.json", macs=1000)
    count = where_oat_holds.within_count(cell, "oat_dual_ro128")
    assert sorted(count["within"], key=float) == ["0", "0.2", "0.4", "1"]
    assert count["gaps"]["0.1"] == pytest.approx((0.0, -0.016))
    assert len(count["compared"]) == 6
    assert set(cell["runs"]) == {"oat_dual_ro128"}  # the seed repeat is left out
    # The frontier is the first seed's, not a repeat's (which would have SA = RA = 0.5).
    assert cell["frontier"]["0.2"] == pytest.approx({"SA": 0.8, "RA": 0.3})
    assert cell["epochs"] == 5 and cell["train_examples"] == 10000 and cell["macs"] == 1000


def _dense_frontier_ra(frontier, sa):
    """Reference for frontier_ra_at: sample each λ-ordered segment densely, best RA at SA >= sa."""
    points = [frontier[k] for k in sorted(frontier, key=float)]
    t = np.linspace(0.0, 1.0, 200001)[:, None]
    samples = np.concatenate([
        (1 - t) * [a["SA"], a["RA"]] + t * [b["SA"], b["RA"]] for a, b in zip(points, points[1:])
    ])
    reached = samples[samples[:, 0] >= sa, 1]
    return reached.max() if reached.size else None


def test_the_frontier_curve_takes_the_best_ra_at_that_sa_or_more():
    # In λ order the curve turns back: (0.7, 0.6) dominates (0.8, 0.5)'s segment end.
    frontier = {"0": {"SA": 0.9, "RA": 0.0}, "0.1": {"SA": 0.7, "RA": 0.6},
                "0.2": {"SA": 0.8, "RA": 0.5}, "1": {"SA": 0.6, "RA": 0.65}}
    for sa in np.linspace(0.55, 0.9, 36):
        assert where_oat_holds.frontier_ra_at(frontier, sa) == pytest.approx(
            _dense_frontier_ra(frontier, sa), abs=1e-5)
    # By hand: at SA 0.75 the segment 0.1 -> 0.2 crosses at RA 0.55, above the other one's 0.45.
    assert where_oat_holds.frontier_ra_at(frontier, 0.75) == pytest.approx(0.55)
    assert where_oat_holds.frontier_ra_at(frontier, 0.91) is None
    # A frontier point is never above its own curve; a dominated one is below it.
    assert where_oat_holds.frontier_ra_at(frontier, 0.8) == pytest.approx(0.5)
    assert where_oat_holds.frontier_ra_at(frontier, 0.6) == pytest.approx(0.65)


def test_curve_gaps_compare_each_point_at_its_own_sa():
    # _cell's frontier is the line RA = 1.1 − SA for SA in [0.4, 0.9]. The one model's points:
    # λ = 0 beyond (SA 0.95), λ = 0.1 on the line but at another λ's place, λ = 0.2 5 points
    # below, λ = 0.3 1 point below, λ = 0.4 above, λ = 1 at SA 0.3 (the curve's best there: 0.7).
    points = {0.0: (0.95, 0.0), 0.1: (0.5, 0.6), 0.2: (0.6, 0.45), 0.3: (0.7, 0.39),
              0.4: (0.8, 0.35), 1.0: (0.3, 0.68)}
    gaps = [(sa - (0.9 - lam / 2), ra - (0.2 + lam / 2)) for lam, (sa, ra) in points.items()]
    cell = where_oat_holds.cell_summary(_cell("c", gaps), "c/results.json", macs=1)
    curve = where_oat_holds.curve_gaps(cell, "oat_dual_ro128")
    assert curve["gaps"]["0"] is None
    assert [curve["gaps"][k] for k in ("0.1", "0.2", "0.3", "0.4", "1")] == pytest.approx(
        [0.0, -0.05, -0.01, 0.05, -0.02])
    assert curve["within"] == ["0", "0.1", "0.3", "0.4"]  # λ = 1 is 2 points below
    assert curve["highest_sa"] == pytest.approx((0.95, 0.9))
    # The per-λ count disagrees: no point is within of the PGD-AT model at its own λ.
    assert where_oat_holds.within_count(cell, "oat_dual_ro128")["within"] == []


def test_a_cell_repeated_with_other_seeds_gets_each_seed_against_its_own_frontier(tmp_path):
    # Seed 0: SA 2 points short at λ = 0, RA 1 short at λ = 1, on the frontier elsewhere (5 of 6).
    # Seed 1 (_cell's repeats): PGD-AT at SA = RA = 0.5 for every λ, the baseline at 0 everywhere.
    gaps = [(-0.02, 0.0)] + [(0.0, 0.0)] * 4 + [(0.0, -0.01)]
    cell = where_oat_holds.cell_summary(_cell("c", gaps), "c/results.json", macs=1)
    assert sorted(cell["seeds"]) == ["0", "1"]
    assert cell["seeds"]["0"]["frontier"] == cell["frontier"]
    assert cell["seeds"]["1"]["frontier"]["0.3"] == pytest.approx({"SA": 0.5, "RA": 0.5})
    assert where_oat_holds.within_count(cell["seeds"]["1"], "oat_dual_ro128")["within"] == []
    directory = tmp_path / "page"
    directory.mkdir()
    (directory / "results.json").write_text(json.dumps({"version": 1, "command": "collect", "cells": [cell]}))
    page = open(where_oat_holds.write(str(directory / "results.json")), encoding="utf-8").read()
    assert "## Spread over seeds" in page
    # λ = 0 is 2 RA points below the curve too (SA 0.88 is reached at RA 0.22 there).
    assert "| c | 0 | 5/6 | 5/6 | -2.0 | -1.0 |" in page
    assert "| c | 1 | 0/6 | 0/6 | -50.0 | -50.0 |" in page
    assert "| c | mean (min–max) | 2.5 (0–5) | 2.5 (0–5) | -26.0 (-50.0–-2.0) | -25.5 (-50.0–-1.0) |" in page
    # Without a repeated frontier the cell has no seeds (the baseline alone is not comparable).
    partial = _cell("c", gaps)
    partial["runs"] = [r for r in partial["runs"] if not r["name"].startswith("pgdat_") or "_seed" not in r["name"]]
    assert "seeds" not in where_oat_holds.cell_summary(partial, "c/results.json", macs=1)


def test_a_cell_must_be_one_network_and_budget_with_a_frontier():
    mixed = _cell("c", [(0, 0)] * 6)
    mixed["runs"][0]["config"]["train"]["epochs"] = 15
    with pytest.raises(ValueError, match="share the network and the budget"):
        where_oat_holds.cell_summary(mixed, "c/results.json", macs=1)
    no_frontier = _cell("c", [(0, 0)] * 6)
    no_frontier["runs"] = [r for r in no_frontier["runs"] if r["name"].startswith("oat_")]
    with pytest.raises(ValueError, match="frontier"):
        where_oat_holds.cell_summary(no_frontier, "c/results.json", macs=1)
    # PGD-AT only at a λ outside S1 is no frontier for the S1 comparison either.
    off_grid = _cell("c", [(0, 0)] * 6)
    off_grid["runs"] = [r for r in off_grid["runs"] if r["name"].startswith("oat_")] + [
        _run("pgdat_0.7", "plain", "fixed", [0.7], {0.7: (0.6, 0.5)})]
    with pytest.raises(ValueError, match="PGD-AT runs at S1 λ"):
        where_oat_holds.cell_summary(off_grid, "c/results.json", macs=1)
    with pytest.raises(ValueError, match="--report=oat"):
        where_oat_holds.cell_summary({**_cell("c", [(0, 0)] * 6), "report": "width"}, "c", macs=1)


def test_the_page_regenerates_byte_for_byte_and_names_the_best_cell(tmp_path):
    paths = []
    for study, filters, epochs, gaps in [
        ("small_e5", (4, 8), 5, [(-0.1, 0.0)] * 6),
        ("small_e15", (4, 8), 15, [(-0.1, 0.0)] * 3 + [(0.0, 0.0)] * 3),
        ("wide_e5", (8, 16), 5, [(0.0, 0.0)] * 6),
    ]:
        directory = tmp_path / "cells" / study
        directory.mkdir(parents=True)
        (directory / "results.json").write_text(
            json.dumps(_cell(study, gaps, filters=filters, epochs=epochs)))
        paths.append(str(directory / "results.json"))
    summary = where_oat_holds.collect(paths, "collect")
    # Sorted by MACs: the wider network last; the counts as built.
    assert [c["study"] for c in summary["cells"]][-1] == "wide_e5"
    assert summary["cells"][0]["macs"] < summary["cells"][-1]["macs"]
    output = tmp_path / "where_oat_holds" / "results.json"
    output.parent.mkdir()
    output.write_text(json.dumps(summary))
    page_path = where_oat_holds.write(str(output))
    page = open(page_path, encoding="utf-8").read()
    assert "Best: 6 of 6 S1 λ within, by `oat_dual_ro128` in wide_e5 (" in page
    assert "The baseline holds at every S1 λ in: wide_e5." in page
    assert "| 0/6 | 3/6 |" in page  # the small network's row: 5 and 15 epochs
    # The curve view: 10 SA points below is 10 RA points below the line RA = 1.1 − SA (λ = 0: SA
    # 0.8 is reached on the curve at RA 0.3, against its 0.2), except at λ = 1, whose SA 0.3 is
    # below the curve's range: the best RA there is the curve's highest, 0.7, which it has.
    assert ("| small_e5 | oat_dual_ro128 | 1/6 | -10.0 | -10.0 | -10.0 | -10.0 | -10.0 | +0.0 "
            "| 80.0 / 90.0 |") in page
    assert "| wide_e5 | oat_dual_ro128 | 6/6 | +0.0 |" in page
    assert os.path.isfile(tmp_path / "where_oat_holds" / "within_vs_macs.png")
    assert where_oat_holds.write(str(output), check=True) == page_path
    with open(page_path, "a", encoding="utf-8") as f:
        f.write("edited\n")
    with pytest.raises(ValueError, match="differs"):
        where_oat_holds.write(str(output), check=True)


def test_an_output_path_that_would_misplace_the_page_or_overwrite_a_file_is_refused(tmp_path):
    # /tmp/x.json would put the page at /tmp.md; a file at the root has no <dir>.md to write.
    for output in (str(tmp_path / "x.json"), "/results.json"):
        with pytest.raises(ValueError, match="--output` must be <dir>/results.json"):
            where_oat_holds.check_output_path(output)
    sweep_results = tmp_path / "cell" / "results.json"
    sweep_results.parent.mkdir()
    sweep_results.write_text(json.dumps(_cell("cell", [(0, 0)] * 6)))
    with pytest.raises(ValueError, match="not a where-OAT-holds summary"):
        where_oat_holds.check_output_path(str(sweep_results))
    assert json.loads(sweep_results.read_text())["report"] == "oat"  # untouched
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a where-OAT-holds summary"):
        where_oat_holds.check_output_path(str(tmp_path / "corrupt" / "results.json"))
    # A new path and an earlier summary (recollecting the grid) are fine.
    where_oat_holds.check_output_path(str(tmp_path / "page" / "results.json"))
    summary = tmp_path / "summary" / "results.json"
    summary.parent.mkdir()
    summary.write_text(json.dumps(where_oat_holds.collect([str(sweep_results)], "collect")))
    where_oat_holds.check_output_path(str(summary))


def test_a_tie_for_the_best_count_names_every_run_baseline_first(tmp_path):
    paths = []
    # c1's method change and c2's baseline both have 1 of 6 within (λ = 1); c1's baseline has 0.
    one = [(-0.1, 0.0)] * 5 + [(0.0, 0.0)]
    for study, runs in (("c1", {"oat_dual_ro128": [(-0.1, 0.0)] * 6, "oat_film4": one}),
                        ("c2", {"oat_dual_ro128": one})):
        cell = _cell(study, runs["oat_dual_ro128"])
        if "oat_film4" in runs:
            film = json.loads(json.dumps(next(r for r in cell["runs"] if r["name"] == "oat_dual_ro128")))
            film["name"] = "oat_film4"
            film["test_eval"] = _result({lam: (0.9 - lam / 2 + d_sa, 0.2 + lam / 2 + d_ra)
                                         for lam, (d_sa, d_ra) in zip(S1, runs["oat_film4"])})
            cell["runs"].append(film)
        directory = tmp_path / study
        directory.mkdir()
        (directory / "results.json").write_text(json.dumps(cell))
        paths.append(str(directory / "results.json"))
    output = tmp_path / "page" / "results.json"
    output.parent.mkdir()
    output.write_text(json.dumps(where_oat_holds.collect(paths, "collect")))
    page = open(where_oat_holds.write(str(output)), encoding="utf-8").read()
    best = next(line for line in page.splitlines() if line.startswith("Best:"))
    assert best.startswith("Best: 1 of 6 S1 λ within, by `oat_dual_ro128` in c2 (")
    assert "; `oat_film4` in c1 (" in best and best.count("`") == 4


def test_collect_needs_cells():
    with pytest.raises(ValueError, match="at least one"):
        where_oat_holds.collect([], "collect")


def test_the_command_needs_cells_and_output_or_results(tmp_path):
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    completed = subprocess.run(
        [sys.executable, "-m", "oat_tf.reporting.where_oat_holds", f"--cells={tmp_path}/none/*.json",
         f"--output={tmp_path}/out/results.json"],
        capture_output=True, text=True, cwd=repo, check=False,
    )
    assert completed.returncode != 0
    assert "--cells` matched no results.json" in completed.stderr
    assert not os.path.exists(tmp_path / "out")


def test_the_trend_table_and_the_reading_are_on_the_regenerated_page(tmp_path):
    directory = tmp_path / "cells" / "c"
    directory.mkdir(parents=True)
    # SA 5 points short at λ = 0 (frontier SA 0.9 there), RA 2 short at λ = 1; SA flat at 0.85 otherwise.
    gaps = [(-0.05, 0.0)] + [(0.85 - (0.9 - lam / 2), 0.0) for lam in S1[1:-1]] + [(0.85 - 0.4, -0.02)]
    (directory / "results.json").write_text(json.dumps(_cell("c", gaps)))
    summary = where_oat_holds.collect([str(directory / "results.json")], "collect", reading="It does not hold.\n\n")
    assert summary["reading"] == "It does not hold.\n"
    output = tmp_path / "page" / "results.json"
    output.parent.mkdir()
    output.write_text(json.dumps(summary))
    page = open(where_oat_holds.write(str(output)), encoding="utf-8").read()
    # SA gap at λ = 0, RA gap at λ = 1; the baseline's SA spans 0.85 only, the frontier's 0.9 − 0.4.
    assert "| c | 0.0 M | 5 | -5.0 | -2.0 | 0.0 | 50.0 |" in page.replace(
        f"{summary['cells'][0]['macs'] / 1e6:,.1f} M", "0.0 M"
    )
    assert "## Reading\n\nIt does not hold.\n\n## Every cell" in page
    assert where_oat_holds.write(str(output), check=True)
    with pytest.raises(ValueError, match="`reading` must be Markdown text"):
        where_oat_holds.collect([str(directory / "results.json")], "collect", reading="  \n")


def test_a_missing_reading_file_is_refused_before_anything_is_written(tmp_path):
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    completed = subprocess.run(
        [sys.executable, "-m", "oat_tf.reporting.where_oat_holds", f"--cells={tmp_path}/*.json",
         f"--output={tmp_path}/out/results.json", f"--reading={tmp_path}/missing.md"],
        capture_output=True, text=True, cwd=repo, check=False,
    )
    assert completed.returncode != 0
    assert "`--reading` must be an existing Markdown file" in completed.stderr
    assert not os.path.exists(tmp_path / "out")


def test_the_committed_page_regenerates_byte_for_byte():
    from tests import testing  # pylint: disable=import-outside-toplevel

    path = os.path.join(testing.REPO_ROOT, "docs", "results", "where_oat_holds", "results.json")
    if not os.path.isfile(path):
        pytest.skip("The grid's page is not committed.")
    page_path = where_oat_holds.write(path, check=True)
    # Every figure the page shows (each cell's RA-vs-SA plot, the summary figure) is committed.
    page = open(page_path, encoding="utf-8").read()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page)
    with open(path, encoding="utf-8") as f:
        assert len(figures) == len(json.load(f)["cells"]) + 1
    for figure in figures:
        assert os.path.isfile(os.path.join(os.path.dirname(page_path), figure)), figure
