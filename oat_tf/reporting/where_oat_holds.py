"""Where OAT holds: one OAT model against the PGD-AT frontier over a capacity × budget grid.

    python -m oat_tf.reporting.where_oat_holds \
        --cells='docs/results/where_oat_holds/cells/*/results.json' \
        --output=docs/results/where_oat_holds/results.json
    python -m oat_tf.reporting.where_oat_holds \
        --results=docs/results/where_oat_holds/results.json --check

Each cell of the grid is one sweep study (`python -m oat_tf.sweep`, `--report=oat`):
PGD-AT models at the λ values of S1 (the frontier) and λ-conditioned runs
(the baseline dual-BN OAT, and method changes) with the same network, data
and training budget. `collect` reads the cells' results.json files and keeps,
per cell, what the page needs: the capacity (architecture, channel widths,
MACs per image of the plain network), the budget (epochs, training images),
and per S1 λ the SA and RA of the frontier and of every conditioned run. That
summary is this page's own results.json; `render` writes the page and its
summary figure from it, so `--check` regenerates the Markdown byte for byte.

The page gives, for every cell and conditioned run, the SA and RA gaps to the
frontier at each S1 λ and how many of the 6 are within 1.5 points (in SA and
in RA, being above counts as within), a table of the baseline's count over
capacity × budget, and a figure of that count against MACs, one line per
budget. A second view compares each run's (SA, RA) points with the frontier
curve at the same SA, whatever λ gives them: whether the one model's
trade-off is as good as the frontier's, apart from what λ means. A cell
whose runs, the frontier included, were repeated with other training seeds
gets the baseline per seed, against that seed's PGD-AT models, and the
mean (min–max). Each cell's section shows the RA-vs-SA plot of the cell's
own study page.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from absl import app
from absl import flags
from matplotlib import figure as figure_lib
from matplotlib import ticker

from oat_tf import atomic_files
from oat_tf import cli
from oat_tf.reporting import pages
from oat_tf.reporting import study_oat
from oat_tf.reporting import study_report
from oat_tf.reporting import study_results

BASELINE_RUN = "oat_dual_ro128"
SUMMARY_VERSION = 1


def _mac_count(model: Dict[str, Any]) -> int:
    """MACs per image of the plain network of a run's model config."""
    from oat_tf import config as config_lib  # pylint: disable=import-outside-toplevel
    from oat_tf import models  # pylint: disable=import-outside-toplevel
    from oat_tf.models import flops  # pylint: disable=import-outside-toplevel

    network = models.build_model(config_lib.ModelConfig(
        architecture=model["architecture"], variant="plain", num_classes=model["num_classes"],
        input_shape=tuple(model["input_shape"]), filters=tuple(model.get("filters", ())),
        hidden_units=model.get("hidden_units", 0),
    ))
    return int(flops.count_flops(network)["macs"])


def cell_summary(results: Dict[str, Any], results_path: str, macs: Optional[int] = None) -> Dict[str, Any]:
    """What the page needs of one cell (a sweep study with the "oat" report).

    Args:
        results: dict, the cell's results.json (`oat_tf.sweep`).
        results_path: str, where it was read, for the page's link to the cell.
        macs: int or None, MACs per image of the cell's plain network; None
            builds the network to count them.

    Returns:
        dict with `study`, `results_path`, `architecture`, `filters`,
        `hidden_units`, `macs`, `epochs`, `train_examples`, `frontier`
        ({λ: {SA, RA}}) and `runs` (name -> {variant, per λ {SA, RA}}), of
        the first seed; and `seeds` ({seed: {frontier, runs}}, the first seed
        included) where the baseline and the whole frontier were repeated.

    Raises:
        ValueError: if the cell is not an "oat" study, has no frontier, or
            mixes networks or budgets.
    """
    if results.get("report") != "oat":
        raise ValueError(
            f"A cell must be a sweep study with --report=oat. Received: report="
            f"{results.get('report')!r} in {results_path}"
        )
    # One seed per cell: the first seed's runs, frontier included (a cell repeated with other
    # seeds must not compare its first-seed runs with another seed's PGD-AT models).
    runs = [run for run in results["runs"] if not run.get("repeat_of")]
    frontier_points, conditioned = _seed_points({**results, "runs": runs})
    if not frontier_points:
        raise ValueError(
            f"A cell needs PGD-AT runs at S1 λ (the frontier). None in {results_path}")
    shapes = {json.dumps({k: run["config"]["model"].get(k) for k in (
        "architecture", "filters", "hidden_units", "input_shape")}, sort_keys=True) for run in runs}
    budgets = {(run["config"]["train"]["epochs"], run["config"]["data"].get("num_train_examples"))
               for run in runs}
    if len(shapes) != 1 or len(budgets) != 1:
        raise ValueError(
            "A cell's runs must share the network and the budget (epochs, training images). "
            f"Received {len(shapes)} networks and budgets {sorted(budgets, key=str)} in {results_path}"
        )
    model = runs[0]["config"]["model"]
    epochs, examples = budgets.pop()
    summary = {
        "study": results["study"],
        "results_path": results.get("results_path") or results_path,
        "architecture": model["architecture"],
        "filters": list(model.get("filters") or []),
        "hidden_units": model.get("hidden_units", 0),
        "macs": _mac_count(model) if macs is None else int(macs),
        "epochs": int(epochs),
        "train_examples": examples,
        "frontier": frontier_points,
        "runs": conditioned,
    }
    # Seeds: where the baseline and the whole frontier were repeated with other training seeds
    # (the best cell), each seed's points, to be compared with that seed's own PGD-AT models.
    replicas = study_results.seed_replicas(results)
    per_seed = {str(seed): _seed_points(replica) for seed, replica in replicas.items()}
    if len(per_seed) > 1 and all(
        BASELINE_RUN in runs_of_seed and set(frontier_of_seed) == set(frontier_points)
        for frontier_of_seed, runs_of_seed in per_seed.values()
    ):
        summary["seeds"] = {seed: {"frontier": frontier_of_seed, "runs": runs_of_seed}
                            for seed, (frontier_of_seed, runs_of_seed) in per_seed.items()}
    return summary


def _seed_points(results: Dict[str, Any]) -> tuple:
    """({λ key: {SA, RA}} of the PGD-AT runs at the S1 λ, {name: {variant, lambdas}} of the rest)."""

    def point(result, lam):
        return {"SA": study_results.accuracy(result, lam, "SA"),
                "RA": study_results.accuracy(result, lam, "RA")}

    frontier = {f"{lam:g}": point(result, lam)
                for lam, result in study_oat.frontier_points(results).items() if lam in study_oat.S1}
    conditioned = {}
    for run in results["runs"]:
        if study_results.is_frontier_run(run):
            continue
        conditioned[run["name"]] = {
            "variant": run["config"]["model"]["variant"],
            "lambdas": {f"{lam:g}": point(run["test_eval"], lam) for lam in study_oat.S1},
        }
    return frontier, conditioned


def within_count(cell: Dict[str, Any], run_name: str) -> Dict[str, Any]:
    """How a conditioned run of a cell compares with the frontier at the S1 λ.

    Args:
        cell: one entry of the summary's `cells`.
        run_name: str, a key of `cell["runs"]`.

    Returns:
        dict with `compared` and `within` (lists of λ keys), and `gaps`
        ({λ key: (SA − frontier SA, RA − frontier RA)}, fractions).
    """
    gaps, within = {}, []
    for key, ours in cell["runs"][run_name]["lambdas"].items():
        ref = cell["frontier"].get(key)
        if ref is None or None in (ours["SA"], ours["RA"], ref["SA"], ref["RA"]):
            continue
        gaps[key] = (ours["SA"] - ref["SA"], ours["RA"] - ref["RA"])
        if min(gaps[key]) >= -study_oat.WITHIN_POINTS / 100.0 - 1e-9:
            within.append(key)
    return {"compared": list(gaps), "within": within, "gaps": gaps}


def frontier_ra_at(frontier: Dict[str, Dict[str, float]], sa: float) -> Optional[float]:
    """The best RA the frontier reaches at an SA of at least `sa`.

    The frontier curve is the PGD-AT points joined in λ order by straight
    segments (a mix of two neighbouring models reaches any point between
    them). Its RA at `sa` is the largest RA of any curve point whose SA is at
    least `sa`, so a point of the curve that another one dominates does not
    lower it.

    Args:
        frontier: {λ key: {"SA", "RA"}} fractions, a cell's `frontier`.
        sa: float, the SA (fraction) of the point being compared.

    Returns:
        float, the frontier's RA there; None if no curve point has an SA of
        `sa` or more (the point is beyond the frontier's most accurate model).
    """
    points = [frontier[key] for key in sorted(frontier, key=float)
              if None not in (frontier[key]["SA"], frontier[key]["RA"])]
    reached = [p["RA"] for p in points if p["SA"] >= sa]
    for a, b in zip(points, points[1:]):
        if (a["SA"] - sa) * (b["SA"] - sa) < 0:  # the segment crosses SA = sa
            t = (sa - a["SA"]) / (b["SA"] - a["SA"])
            reached.append(a["RA"] + t * (b["RA"] - a["RA"]))
    return max(reached) if reached else None


def curve_gaps(cell: Dict[str, Any], run_name: str) -> Dict[str, Any]:
    """A conditioned run's RA against the frontier curve at the same SA.

    `within_count` asks the paper's question: does λ buy what PGD-AT trained
    at that λ buys? This asks whether the run's trade-off is as good as the
    frontier's, whatever λ gives it: each of the run's (SA, RA) points is
    compared with `frontier_ra_at` its SA.

    Args:
        cell: one entry of the summary's `cells`.
        run_name: str, a key of `cell["runs"]`.

    Returns:
        dict with `gaps` ({λ key: RA − frontier RA at that SA, a fraction, or
        None where the point's SA is beyond every frontier model's}), `within`
        (λ keys at most 1.5 points below the curve, or beyond it), and
        `highest_sa` (the run's and the frontier's largest SA over S1).
    """
    gaps, within = {}, []
    run_points = cell["runs"][run_name]["lambdas"]
    for key in sorted(run_points, key=float):
        ours = run_points[key]
        if None in (ours["SA"], ours["RA"]):
            continue
        reference = frontier_ra_at(cell["frontier"], ours["SA"])
        gaps[key] = None if reference is None else ours["RA"] - reference
        if gaps[key] is None or gaps[key] >= -study_oat.WITHIN_POINTS / 100.0 - 1e-9:
            within.append(key)

    def highest(points):
        return max((p["SA"] for p in points.values() if p["SA"] is not None), default=None)

    return {"gaps": gaps, "within": within,
            "highest_sa": (highest(run_points), highest(cell["frontier"]))}


def collect(cell_paths: Sequence[str], command: str, reading: Optional[str] = None) -> Dict[str, Any]:
    """Reads the cells and returns the page's summary (its results.json).

    Args:
        cell_paths: paths of the cells' results.json.
        command: str, the command that collected them (shown on the page).
        reading: str or None, the page's plain reading (Markdown, written by
            a person from the numbers), kept in the summary so that the page
            regenerates from it alone.

    Returns:
        dict with `version`, `command`, `cells` (sorted by MACs, then epochs)
        and, when given, `reading`.
    """
    if not cell_paths:
        raise ValueError("`cells` must name at least one results.json. Received none.")
    cells = []
    for path in cell_paths:
        with open(path, encoding="utf-8") as f:
            cells.append(cell_summary(json.load(f), path))
    cells.sort(key=lambda c: (c["macs"], c["epochs"], c["study"]))
    summary = {"version": SUMMARY_VERSION, "command": command, "cells": cells}
    if reading is not None:
        if not reading.strip():
            raise ValueError("`reading` must be Markdown text, not empty. Received an empty reading.")
        summary["reading"] = reading.strip() + "\n"
    return summary


def _trend_lines(cells: Sequence[Dict[str, Any]], counts: Sequence[Dict[str, Any]]) -> List[str]:
    """The baseline's gaps at the two ends of S1 and its SA spread over λ, cell by cell."""
    lines = [
        "## The trend: where the baseline misses", "",
        "Per cell (by MACs, then epochs): the baseline's SA gap at the smallest S1 λ (where a "
        "standard model is the reference), its RA gap at the largest, and how far its SA moves "
        "over λ against the frontier's move (the \"collapse\" is a small ratio). Points, "
        "percent of test images.", "",
        "| cell | MACs/image | epochs | SA gap at λ = 0 | RA gap at λ = 1 | SA moved by λ | frontier SA moved by λ |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cell, cell_counts in zip(cells, counts):
        if BASELINE_RUN not in cell_counts:
            continue
        gaps = cell_counts[BASELINE_RUN]["gaps"]
        keys = sorted(gaps, key=float)
        if not keys:
            continue
        ours = [cell["runs"][BASELINE_RUN]["lambdas"][k]["SA"] for k in keys]
        frontier = [cell["frontier"][k]["SA"] for k in keys]
        lines.append(
            f"| {cell['study']} | {cell['macs'] / 1e6:,.1f} M | {cell['epochs']} | "
            f"{100 * gaps[keys[0]][0]:+.1f} | {100 * gaps[keys[-1]][1]:+.1f} | "
            f"{100 * (max(ours) - min(ours)):.1f} | {100 * (max(frontier) - min(frontier)):.1f} |"
        )
    return lines + [""]


def _curve_lines(cells: Sequence[Dict[str, Any]], curves: Sequence[Dict[str, Any]]) -> List[str]:
    """Every conditioned run against the frontier curve at equal SA, cell by cell.

    Args:
        cells: the cells, as `cell_summary` returns them.
        curves: per cell, {run name: `curve_gaps` of that run}.

    Returns:
        list of str, the section's Markdown lines.
    """
    keys = [f"{lam:g}" for lam in study_oat.S1]
    lines = [
        "## Against the frontier curve: the trade-off, whatever λ gives it", "",
        "The count above asks whether λ buys what PGD-AT trained at that λ buys. This table asks "
        "whether the one model's trade-off is as good as the frontier's: each of its (SA, RA) "
        "points against the frontier curve (the PGD-AT points joined in λ order) at the same SA, "
        "that is, its RA minus the best RA a PGD-AT model or a mix of two neighbouring ones "
        "reaches at that SA or more. \"beyond\" marks an SA above every PGD-AT model's. "
        f"\"On the curve\" counts the λ at most {study_oat.WITHIN_POINTS:g} points below it (or "
        "beyond). The last column is how far the one model's SA reaches against the frontier's: "
        "the standard end of the trade-off.", "",
        "| cell | run | on the curve | " + " | ".join(f"λ={k} RA gap" for k in keys)
        + " | highest SA: run / frontier |",
        "|---|---|---:|" + "---:|" * len(keys) + "---|",
    ]
    for cell, cell_curves in zip(cells, curves):
        for name in sorted(cell["runs"], key=lambda n: (n != BASELINE_RUN, n)):
            curve = cell_curves[name]
            cells_text = []
            for key in keys:
                if key not in curve["gaps"]:
                    cells_text.append("–")
                elif curve["gaps"][key] is None:
                    cells_text.append("beyond")
                else:
                    cells_text.append(f"{100 * curve['gaps'][key]:+.1f}")
            ours, theirs = curve["highest_sa"]
            reach = "–" if None in (ours, theirs) else f"{100 * ours:.1f} / {100 * theirs:.1f}"
            lines.append(f"| {cell['study']} | {name} | {len(curve['within'])}/{len(curve['gaps'])} | "
                         + " | ".join(cells_text) + f" | {reach} |")
    return lines + [""]


def _seed_lines(cells: Sequence[Dict[str, Any]]) -> List[str]:
    """The baseline per training seed, in the cells repeated with other seeds."""
    repeated = [cell for cell in cells if cell.get("seeds")]
    if not repeated:
        return []
    lines = [
        "## Spread over seeds", "",
        "Cells whose runs, the frontier included, were repeated with other training seeds: the "
        "baseline of each seed against the PGD-AT models of the same seed. The tables above give "
        "the first seed.", "",
        "| cell | seed | within (per λ) | on the curve | SA gap at λ = 0 | RA gap at λ = 1 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for cell in repeated:
        rows = []
        for seed, seed_cell in sorted(cell["seeds"].items(), key=lambda item: int(item[0])):
            count = within_count(seed_cell, BASELINE_RUN)
            keys = sorted(count["gaps"], key=float)
            ends = ((count["gaps"][keys[0]][0], count["gaps"][keys[-1]][1]) if keys else (None, None))
            rows.append((seed, len(count["within"]), len(curve_gaps(seed_cell, BASELINE_RUN)["within"]),
                         ends, len(count["compared"])))
            lines.append(
                f"| {cell['study']} | {seed} | {rows[-1][1]}/{rows[-1][4]} | {rows[-1][2]}/{rows[-1][4]} | "
                f"{study_results.signed_percent(ends[0])} | {study_results.signed_percent(ends[1])} |"
            )
        counts_text = [f"{sum(v) / len(v):.1f} ({min(v)}–{max(v)})"
                       for v in ([r[1] for r in rows], [r[2] for r in rows])]
        lines.append(
            f"| {cell['study']} | mean (min–max) | {counts_text[0]} | {counts_text[1]} | "
            f"{study_results.spread_text([r[3][0] for r in rows], signed=True)} | "
            f"{study_results.spread_text([r[3][1] for r in rows], signed=True)} |"
        )
    return lines + [""]


def _capacity(cell: Dict[str, Any]) -> str:
    widths = "/".join(str(f) for f in cell["filters"]) or "default widths"
    dense = f", dense {cell['hidden_units']}" if cell["hidden_units"] else ""
    return f"{cell['architecture']} {widths}{dense}"


def _budget(cell: Dict[str, Any]) -> str:
    images = "all" if cell["train_examples"] is None else f"{cell['train_examples']:,}"
    return f"{cell['epochs']} epochs × {images} images"


def render(summary: Dict[str, Any], plot_dir: str) -> str:
    """The page's Markdown; writes its summary figure into `plot_dir`.

    Args:
        summary: dict, `collect`'s result.
        plot_dir: str, existing directory for the figure; the page links it
            as `<basename(plot_dir)>/within_vs_macs.png`.

    Returns:
        str, the Markdown.
    """
    cells = summary["cells"]
    # within_count of every conditioned run, once: [cell index][run name].
    counts = [{name: within_count(cell, name) for name in cell["runs"]} for cell in cells]
    # curve_gaps of every conditioned run, once, for the table and the figure.
    curves = [{name: curve_gaps(cell, name) for name in cell["runs"]} for cell in cells]
    lines = [
        "# Where OAT holds",
        "",
        f"Collected by `{summary['command']}` from {len(cells)} cell(s), each a sweep study "
        "(its own page has the runs' commands, seeds, machine and RA-vs-SA plot).",
        f"\"Within\" means at most {study_oat.WITHIN_POINTS:g} points below the PGD-AT model "
        "trained at that λ, in SA and in RA (being above counts as within); RA is each study's "
        "per-sample worst case over its attacks.",
        "",
        f"## The baseline (`{BASELINE_RUN}`): S1 λ within {study_oat.WITHIN_POINTS:g} points",
        "",
    ]
    capacities = sorted({(c["macs"], _capacity(c)) for c in cells})
    budgets = sorted({(c["epochs"], c["train_examples"] or 0, _budget(c)) for c in cells})
    lines += ["| capacity | MACs/image | " + " | ".join(b[2] for b in budgets) + " |",
              "|---|---:|" + "---:|" * len(budgets)]
    for macs, capacity in capacities:
        row = []
        for epochs, examples, _ in budgets:
            match = [i for i, c in enumerate(cells) if c["macs"] == macs and _capacity(c) == capacity
                     and c["epochs"] == epochs and (c["train_examples"] or 0) == examples]
            if match and BASELINE_RUN in counts[match[0]]:
                count = counts[match[0]][BASELINE_RUN]
                row.append(f"{len(count['within'])}/{len(count['compared'])}")
            else:
                row.append("–")
        lines.append(f"| {capacity} | {macs / 1e6:,.1f} M | " + " | ".join(row) + " |")
    lines.append("")
    # Every run at the best count, baseline runs first: a tie is named in full.
    ranked = sorted(
        ((len(count["within"]), name != BASELINE_RUN, cell["study"], name, cell)
         for cell, cell_counts in zip(cells, counts) for name, count in cell_counts.items()),
        key=lambda entry: (-entry[0], entry[1], entry[2], entry[3]),
    )
    if ranked:
        top = [entry for entry in ranked if entry[0] == ranked[0][0]]
        holds = [c["study"] for c, cell_counts in zip(cells, counts) if BASELINE_RUN in cell_counts
                 and len(cell_counts[BASELINE_RUN]["within"]) == len(study_oat.S1)]
        lines += [
            f"Best: {top[0][0]} of {len(study_oat.S1)} S1 λ within, by "
            + "; ".join(f"`{name}` in {study} ({_capacity(cell)}, {_budget(cell)})"
                        for _, _, study, name, cell in top)
            + ". "
            + (f"The baseline holds at every S1 λ in: {', '.join(holds)}." if holds
               else "The baseline holds at every S1 λ in no cell."),
            "",
        ]
    lines += _trend_lines(cells, counts)
    lines += _curve_lines(cells, curves)
    lines += _seed_lines(cells)
    if summary.get("reading"):
        lines += ["## Reading", "", summary["reading"].rstrip("\n"), ""]
    lines += ["## Every cell", ""]
    for cell, cell_counts in zip(cells, counts):
        page = os.path.splitext(os.path.dirname(cell["results_path"]))[0] + ".md"
        plot = os.path.join(os.path.dirname(cell["results_path"]), study_oat.RA_VS_SA_PLOT)
        lines += [f"### {cell['study']}: {_capacity(cell)}, {_budget(cell)}", "",
                  f"[the cell's page]({os.path.relpath(page, 'docs/results')})", "",
                  f"![{cell['study']}: RA against SA with the PGD-AT frontier]"
                  f"({os.path.relpath(plot, 'docs/results')})", "",
                  "| run | variant | within | " + " | ".join(
                      f"λ={k} SA / RA gap" for k in sorted(cell["frontier"], key=float)) + " |",
                  "|---|---|---:|" + "---|" * len(cell["frontier"])]
        for name in sorted(cell["runs"], key=lambda n: (n != BASELINE_RUN, n)):
            count = cell_counts[name]
            gaps = [count["gaps"].get(k) for k in sorted(cell["frontier"], key=float)]
            lines.append(
                f"| {name} | {cell['runs'][name]['variant']} | "
                f"{len(count['within'])}/{len(count['compared'])} | "
                + " | ".join("–" if g is None else f"{100 * g[0]:+.1f} / {100 * g[1]:+.1f}" for g in gaps)
                + " |"
            )
        lines.append("")
    name = "within_vs_macs.png"
    atomic_files.write_figure(os.path.join(plot_dir, name), _within_figure(cells, counts, curves))
    lines += ["## Summary figure", "",
              f"![The baseline's S1 λ within {study_oat.WITHIN_POINTS:g} points, of PGD-AT at that λ "
              "(left) and of the frontier curve (right), against MACs, one line per budget]"
              f"({os.path.basename(plot_dir)}/{name})", ""]
    return "\n".join(lines)


def _within_figure(cells: Sequence[Dict[str, Any]], counts: Sequence[Dict[str, Any]],
                   curves: Sequence[Dict[str, Any]]) -> figure_lib.Figure:
    """The baseline's two counts against MACs, one line per budget: per λ (left), on the curve (right).

    Args:
        cells: the cells, as `cell_summary` returns them.
        counts: per cell, {run name: `within_count` of that run}.
        curves: per cell, {run name: `curve_gaps` of that run}.

    Returns:
        The figure.
    """
    fig = figure_lib.Figure(figsize=(9.0, 3.8))
    panels = (
        (f"S1 λ within {study_oat.WITHIN_POINTS:g} points of PGD-AT at that λ",
         lambda index: len(counts[index][BASELINE_RUN]["within"])),
        (f"S1 λ within {study_oat.WITHIN_POINTS:g} points of the frontier curve",
         lambda index: len(curves[index][BASELINE_RUN]["within"])),
    )
    macs = sorted({cell["macs"] for cell in cells})
    for panel, (title, count_of) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, 2, panel)
        by_budget: Dict[tuple, List[tuple]] = {}
        for index, cell in enumerate(cells):
            if BASELINE_RUN in counts[index]:
                key = (cell["epochs"], cell["train_examples"] or 0, _budget(cell))
                by_budget.setdefault(key, []).append((cell["macs"], count_of(index)))
        # Budgets in increasing order, each a smaller marker than the last, so that equal counts
        # at the same MACs stay visible one inside the other.
        for order, (key, points) in enumerate(sorted(by_budget.items())):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="osD^v"[order % 5],
                    markersize=max(11 - 3 * order, 4), label=key[2])
        ax.set_xscale("log")
        ax.set_xticks(macs, [f"{m / 1e6:,.1f} M" for m in macs])
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("MACs per image (plain network)")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(-0.2, len(study_oat.S1) + 0.2)
        if by_budget and panel == 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write(summary_path: str, check: bool = False) -> str:
    """Writes (or, with `check`, compares) the page of a summary file.

    Args:
        summary_path: str, `<dir>/results.json` written by `collect` (via `main`).
        check: bool, compare the Markdown with the existing `<dir>.md` instead.

    Returns:
        str, the Markdown path.

    Raises:
        FileNotFoundError: if `summary_path` does not exist.
        ValueError: if it is not a summary, or with `check` if the page differs.
    """
    if not os.path.isfile(summary_path):
        raise FileNotFoundError(f"`results` must be an existing results.json. Received: {summary_path!r}")
    with open(summary_path, encoding="utf-8") as f:
        summary = json.load(f)
    if summary.get("version") != SUMMARY_VERSION or "cells" not in summary:
        raise ValueError(
            f"`results` must be a where-OAT-holds summary (version {SUMMARY_VERSION}). "
            f"Received keys {sorted(summary)} in {summary_path}"
        )
    markdown_path, plot_dir = study_report.report_paths(summary_path)
    return pages.write_or_check(
        markdown_path, plot_dir, lambda directory: render(summary, directory),
        source=summary_path, check=check,
    )


def check_output_path(output: str) -> None:
    """Refuses a summary path whose page would land somewhere unexpected or overwrite a user's file.

    The page of `<dir>/results.json` is `<dir>.md` beside the directory, and
    its figure goes into `<dir>/`: a path not named results.json (say
    /tmp/x.json) would put the page at /tmp.md.

    Args:
        output: str, the `--output` summary path.

    Raises:
        ValueError: if it is not `<dir>/results.json` under a named directory,
            or if it exists and is not a where-OAT-holds summary (a sweep's
            results.json, say), which collecting would overwrite.
    """
    directory = os.path.dirname(os.path.abspath(output))
    if os.path.basename(output) != "results.json" or directory == os.path.dirname(directory):
        raise ValueError(
            "`--output` must be <dir>/results.json with a named <dir> (the page is written to "
            f"<dir>.md, its figure into <dir>/). Received: --output={output}"
        )
    if os.path.exists(output):
        try:
            with open(output, encoding="utf-8") as f:
                existing = json.load(f)
        except (OSError, ValueError):
            existing = None
        if not isinstance(existing, dict) or existing.get("version") != SUMMARY_VERSION or "cells" not in existing:
            raise ValueError(
                "`--output` exists and is not a where-OAT-holds summary; collecting would overwrite it. "
                f"Expected a new path or an earlier summary. Received: --output={output}"
            )


def define_flags() -> None:
    """Defines the command's flags."""
    flags.DEFINE_list("cells", None, "Globs of the cells' results.json (sweep studies, --report=oat).")
    flags.DEFINE_string("output", None, "The summary results.json to write (its page is <dir>.md).")
    flags.DEFINE_string("results", None, "An existing summary results.json to regenerate the page from.")
    flags.DEFINE_bool("check", False, "With --results: compare the regenerated page instead of writing it.")
    flags.DEFINE_string(
        "reading", None,
        "With --cells: a Markdown file with the page's plain reading, kept in the summary (so that "
        "--results regenerates the page from the summary alone).",
    )


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    f = flags.FLAGS
    try:
        if f.results is not None:
            if f.cells or f.output or f.reading:
                raise ValueError(
                    "Give either --results (regenerate) or --cells with --output (and --reading) to collect."
                )
            path = write(f.results, check=f.check)
        else:
            if not f.cells or not f.output or f.check:
                raise ValueError(
                    "`--cells` and `--output` are needed to collect a grid (or --results to "
                    f"regenerate a page). Received: --cells={f.cells} --output={f.output}"
                )
            check_output_path(f.output)
            reading = None
            if f.reading is not None:
                if not os.path.isfile(f.reading):
                    raise ValueError(f"`--reading` must be an existing Markdown file. Received: --reading={f.reading}")
                with open(f.reading, encoding="utf-8") as reading_file:
                    reading = reading_file.read()
            paths = sorted({p for pattern in f.cells for p in glob.glob(pattern)})
            if not paths:
                raise ValueError(f"`--cells` matched no results.json. Received: --cells={','.join(f.cells)}")
            command = ("python -m oat_tf.reporting.where_oat_holds "
                       f"--cells={','.join(f.cells)} --output={f.output}"
                       + (f" --reading={f.reading}" if f.reading else ""))
            atomic_files.write_json(f.output, collect(paths, command, reading))
            path = write(f.output)
    except (FileNotFoundError, ValueError) as error:
        raise app.UsageError(str(error)) from None
    sys.stdout.write(f"{'Checked' if f.check else 'Wrote'} {path}\n")


def run() -> None:
    """The `oat-where-oat-holds` console script; `python -m oat_tf.reporting.where_oat_holds` runs it too."""
    cli.run_main(main, __name__, define_flags)


if __name__ == "__main__":
    run()
