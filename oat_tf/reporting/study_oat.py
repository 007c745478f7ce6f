"""The "oat" layout of a study page: OAT against the PGD-AT frontier (SPEC §1).

The PGD-AT frontier (runs trained at one fixed λ); each λ-conditioned run per
λ with its difference to the dedicated PGD-AT model at the same λ; a summary
per run (λ of S1 and unseen λ within 1.5 points of the dedicated model in SA
and RA, the SA and RA range over λ: a collapsed single-BN model has a small
range); the RA-vs-SA plot with the frontier (Fig. 4) and SA/RA against λ.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

from matplotlib import figure as figure_lib

from oat_tf import config as config_lib
from oat_tf.reporting import study_results

WITHIN_POINTS = 1.5
# The RA-vs-SA plot with the frontier (Fig. 4), after a page's plot prefix.
RA_VS_SA_PLOT = "ra_vs_sa.png"
S1 = config_lib.S1


def frontier_points(results: Dict[str, Any]) -> Dict[float, Dict[str, Any]]:
    """{training λ: the PGD-AT run's test result at that λ}."""
    points = {}
    for run in results["runs"]:
        if (
            study_results.is_frontier_run(run)
            and study_results.run_config(run)["model"]["variant"] == "plain"
        ):
            points[study_results.fixed_lambda(run)] = run["test_eval"]
    return dict(sorted(points.items()))


def compare_to_frontier(
    run: Dict[str, Any], frontier: Dict[float, Dict[str, Any]], lambdas: Sequence[float]
) -> Dict[str, Any]:
    """Differences of a λ-conditioned run to the dedicated PGD-AT models.

    Args:
        run: dict, a run of the results.
        frontier: `frontier_points(results)`.
        lambdas: the λ values to compare (those with a dedicated model count).

    Returns:
        dict with `compared` (λ values with a dedicated model), `within`
        (those where the run is at most `WITHIN_POINTS` below in SA and in RA),
        `worst_sa_drop` and `worst_ra_drop` (largest shortfall, fractions;
        negative means the run is above at every λ).
    """
    compared, within, sa_drops, ra_drops = [], [], [], []
    for lam in lambdas:
        if lam not in frontier:
            continue
        sa = study_results.accuracy(run["test_eval"], lam, "SA")
        ra = study_results.accuracy(run["test_eval"], lam, "RA")
        if sa is None or ra is None:
            continue
        sa_drop = study_results.accuracy(frontier[lam], lam, "SA") - sa
        ra_drop = study_results.accuracy(frontier[lam], lam, "RA") - ra
        compared.append(lam)
        sa_drops.append(sa_drop)
        ra_drops.append(ra_drop)
        if max(sa_drop, ra_drop) <= WITHIN_POINTS / 100.0 + 1e-9:
            within.append(lam)
    return {
        "compared": compared,
        "within": within,
        "worst_sa_drop": max(sa_drops) if sa_drops else None,
        "worst_ra_drop": max(ra_drops) if ra_drops else None,
    }


def _range(result: Dict[str, Any], metric: str, lambdas: Sequence[float]) -> Optional[float]:
    values = [study_results.accuracy(result, lam, metric) for lam in lambdas]
    values = [v for v in values if v is not None]
    return (max(values) - min(values)) if values else None


def sections(results: Dict[str, Any], plot_dir: str, plot_prefix: str) -> List[str]:
    frontier = frontier_points(results)
    attacks = [a["label"] for a in study_results.first_attacks(results)]
    lines = ["## The SA-RA frontier: PGD-AT trained at each fixed λ", ""]
    lines += [
        "| λ | SA | " + " | ".join(f"RA {a}" for a in attacks) + " | RA (worst case) |",
        "|---:|---:|" + "---:|" * len(attacks) + "---:|",
    ]
    for lam, result in frontier.items():
        cells = [study_results.percent(study_results.accuracy(result, lam, a)) for a in attacks]
        lines.append(
            f"| {lam:g} | {study_results.percent(study_results.accuracy(result, lam, 'SA'))} | "
            + " | ".join(cells)
            + f" | {study_results.percent(study_results.accuracy(result, lam, 'RA'))} |"
        )
    lines.append("")
    conditioned = [run for run in results["runs"] if not study_results.is_frontier_run(run)]
    summary = []
    for run in conditioned:
        result = run["test_eval"]
        seen = study_results.training_lambdas(run)
        lines += [
            f"## `{run['name']}`: {study_results.run_config(run)['model']['variant']}, {study_results.encoding_text(run)}, {study_results.lambda_text(run)}",
            "",
        ]
        lines += [
            "| λ | seen | SA | "
            + " | ".join(f"RA {a}" for a in attacks)
            + " | RA (worst case) | SA − PGD-AT | RA − PGD-AT |",
            "|---:|---|---:|" + "---:|" * len(attacks) + "---:|---:|---:|",
        ]
        for lam in study_results.lambdas_of(result):
            sa, ra = study_results.accuracy(result, lam, "SA"), study_results.accuracy(result, lam, "RA")
            ref = frontier.get(lam)
            d_sa = None if ref is None else sa - study_results.accuracy(ref, lam, "SA")
            d_ra = None if ref is None else ra - study_results.accuracy(ref, lam, "RA")
            lines.append(
                f"| {lam:g} | {'seen' if any(abs(lam - s) < 1e-9 for s in seen) else 'unseen'} | "
                f"{study_results.percent(sa)} | "
                + " | ".join(study_results.percent(study_results.accuracy(result, lam, a)) for a in attacks)
                + f" | {study_results.percent(ra)} | {study_results.signed_percent(d_sa)} | {study_results.signed_percent(d_ra)} |"
            )
        lines.append("")
        on_s1 = compare_to_frontier(run, frontier, S1)
        unseen = [lam for lam in study_results.lambdas_of(result) if lam not in S1]
        off_s1 = compare_to_frontier(run, frontier, unseen)
        positive = [lam for lam in study_results.lambdas_of(result) if lam > 0]
        summary.append((run, on_s1, off_s1, positive))
    if summary:
        lines += [
            "## Summary against the paper's claims",
            "",
            f'"Within" means at most {WITHIN_POINTS:g} points below the PGD-AT model trained at '
            "that λ, in SA and in RA (being above counts as within). The ranges are max − min over "
            'λ > 0: the paper\'s single-BN "collapse" shows as a small range (one model for every λ).',
            "",
            "| run | variant | encoding | S1 λ within 1.5 | unseen λ within 1.5 | largest SA shortfall "
            "| largest RA shortfall | SA range (λ > 0) | RA range (λ > 0) | SA at λ=0 | RA at λ=1 |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for run, on_s1, off_s1, positive in summary:
            result = run["test_eval"]
            lines.append(
                f"| {run['name']} | {study_results.run_config(run)['model']['variant']} | {study_results.encoding_text(run)} | "
                f"{len(on_s1['within'])}/{len(on_s1['compared'])} | "
                f"{len(off_s1['within'])}/{len(off_s1['compared'])} | "
                f"{study_results.signed_percent(on_s1['worst_sa_drop'] and -on_s1['worst_sa_drop'])} | "
                f"{study_results.signed_percent(on_s1['worst_ra_drop'] and -on_s1['worst_ra_drop'])} | "
                f"{study_results.percent(_range(result, 'SA', positive))} | {study_results.percent(_range(result, 'RA', positive))} | "
                f"{study_results.percent(study_results.accuracy(result, 0.0, 'SA'))} | {study_results.percent(study_results.accuracy(result, 1.0, 'RA'))} |"
            )
        lines.append("")
        lines.append(
            "Shortfalls are signed as run − PGD-AT at the λ where the run is furthest below "
            "(positive: the run is above the frontier at every λ)."
        )
        lines.append("")
    if frontier or conditioned:
        name = f"{plot_prefix}{RA_VS_SA_PLOT}"
        study_results.save_figure(_ra_vs_sa_figure(frontier, conditioned), os.path.join(plot_dir, name))
        name2 = f"{plot_prefix}accuracy_vs_lambda.png"
        study_results.save_figure(
            _accuracy_vs_lambda_figure(frontier, conditioned), os.path.join(plot_dir, name2)
        )
        rel = os.path.basename(plot_dir)
        lines += [
            "## Plots",
            "",
            f"![RA against SA with the PGD-AT frontier (Fig. 4)]({rel}/{name})",
            "",
            f"![SA and RA against λ]({rel}/{name2})",
            "",
        ]
    return lines


def _ra_vs_sa_figure(frontier, conditioned) -> figure_lib.Figure:
    fig = study_results.new_figure(7.0, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    if frontier:
        xs = [100 * study_results.accuracy(r, lam, "SA") for lam, r in frontier.items()]
        ys = [100 * study_results.accuracy(r, lam, "RA") for lam, r in frontier.items()]
        ax.plot(xs, ys, "s--", color="tab:red", label="PGD-AT (frontier)")
        for lam, x, y in zip(frontier, xs, ys):
            ax.annotate(
                f"{lam:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7, color="tab:red"
            )
    for index, run in enumerate(conditioned):
        result = run["test_eval"]
        lams = study_results.lambdas_of(result)
        xs = [100 * study_results.accuracy(result, lam, "SA") for lam in lams]
        ys = [100 * study_results.accuracy(result, lam, "RA") for lam in lams]
        color = study_results.COLORS[index % len(study_results.COLORS)]
        ax.plot(xs, ys, "o-", color=color, label=run["name"], markersize=4)
        if index == 0:
            for lam, x, y in zip(lams, xs, ys):
                ax.annotate(
                    f"{lam:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color
                )
    ax.set_xlabel("SA (%)")
    ax.set_ylabel("RA, worst case over the attacks (%)")
    ax.set_title("RA against SA (labels: λ)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _accuracy_vs_lambda_figure(frontier, conditioned) -> figure_lib.Figure:
    fig = study_results.new_figure(10.0, 4.5)
    for column, metric in enumerate(("SA", "RA")):
        ax = fig.add_subplot(1, 2, column + 1)
        if frontier:
            ax.plot(
                list(frontier),
                [100 * study_results.accuracy(r, lam, metric) for lam, r in frontier.items()],
                "s--",
                color="tab:red",
                label="PGD-AT (frontier)",
            )
        for index, run in enumerate(conditioned):
            lams = study_results.lambdas_of(run["test_eval"])
            ax.plot(
                lams,
                [100 * study_results.accuracy(run["test_eval"], lam, metric) for lam in lams],
                "o-",
                color=study_results.COLORS[index % len(study_results.COLORS)],
                label=run["name"],
                markersize=4,
            )
        ax.set_xlabel("λ")
        ax.set_ylabel(f"{metric} (%)" + (" (worst case)" if metric == "RA" else ""))
        ax.grid(alpha=0.3)
        if column == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def seed_rows(replicas: Dict[int, Dict[str, Any]]) -> List[str]:
    seeds = list(replicas)
    first = replicas[seeds[0]]
    frontier_names = {
        study_results.fixed_lambda(r): r["name"] for r in first["runs"] if study_results.is_frontier_run(r)
    }
    conditioned = [r for r in first["runs"] if not study_results.is_frontier_run(r)]
    lines: List[str] = []
    if frontier_names and not conditioned:
        lines += ["| λ | PGD-AT SA | PGD-AT RA |", "|---:|---:|---:|"]
        for lam, name in sorted(frontier_names.items()):
            cells = [
                study_results.spread_text(
                    [study_results.figure_of(r, name, lam, m) for r in replicas.values()]
                )
                for m in ("SA", "RA")
            ]
            lines.append(f"| {lam:g} | " + " | ".join(cells) + " |")
        return lines + [""]
    for run in conditioned:
        name = run["name"]
        lines += [
            f"`{name}` against the PGD-AT model of its own seed:",
            "",
            "| λ | PGD-AT SA | PGD-AT RA | SA | RA | SA − PGD-AT | RA − PGD-AT |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for lam in study_results.lambdas_of(run["test_eval"]):
            ref = frontier_names.get(lam)
            cells = []
            for metric in ("SA", "RA"):
                cells.append(
                    study_results.spread_text(
                        [
                            None if ref is None else study_results.figure_of(r, ref, lam, metric)
                            for r in replicas.values()
                        ]
                    )
                )
            for metric in ("SA", "RA"):
                cells.append(
                    study_results.spread_text(
                        [study_results.figure_of(r, name, lam, metric) for r in replicas.values()]
                    )
                )
            for metric in ("SA", "RA"):
                cells.append(
                    study_results.spread_text(
                        [
                            (
                                None
                                if ref is None
                                else study_results.difference(
                                    study_results.figure_of(r, name, lam, metric),
                                    study_results.figure_of(r, ref, lam, metric),
                                )
                            )
                            for r in replicas.values()
                        ],
                        signed=True,
                    )
                )
            lines.append(f"| {lam:g} | " + " | ".join(cells) + " |")
        counts = []
        for seed, replica in replicas.items():
            own = next((r for r in replica["runs"] if r["name"] == name), None)
            if own is None:
                counts.append(f"seed {seed}: not run")
                continue
            comparison = compare_to_frontier(own, frontier_points(replica), S1)
            counts.append(f"seed {seed}: {len(comparison['within'])}/{len(comparison['compared'])}")
        lines += [
            "",
            f"S1 λ within {WITHIN_POINTS:g} points of PGD-AT in SA and RA: " + ", ".join(counts) + ".",
            "",
        ]
    return lines
