"""The "width" layout of a study page: OATS against PGD-ATS (SPEC §2).

Per width, the λ table of every run; at each width the most robust and the
most accurate OATS point against PGD-ATS at the same λ; RA against SA per
width.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

from matplotlib import figure as figure_lib

from oat_tf.reporting import study_results


def sections(results: Dict[str, Any], plot_dir: str, plot_prefix: str) -> List[str]:
    attacks = [a["label"] for a in study_results.first_attacks(results)]
    widths = sorted({w for run in results["runs"] for w in study_results.width_results(run)})
    baselines = [run for run in results["runs"] if study_results.is_frontier_run(run)]
    conditioned = [run for run in results["runs"] if not study_results.is_frontier_run(run)]
    lines = []
    for width in widths:
        lines += [f"## Width {width:g}", ""]
        lines += [
            "| run | λ | SA | " + " | ".join(f"RA {a}" for a in attacks) + " | RA (worst case) |",
            "|---|---:|---:|" + "---:|" * len(attacks) + "---:|",
        ]
        for run in baselines + conditioned:
            result = study_results.width_results(run).get(width)
            if result is None:
                continue
            for lam in study_results.lambdas_of(result):
                lines.append(
                    f"| {run['name']} | {lam:g} | {study_results.percent(study_results.accuracy(result, lam, 'SA'))} | "
                    + " | ".join(
                        study_results.percent(study_results.accuracy(result, lam, a)) for a in attacks
                    )
                    + f" | {study_results.percent(study_results.accuracy(result, lam, 'RA'))} |"
                )
        lines.append("")
    lines += [
        "## OATS against PGD-ATS at the same λ",
        "",
        "OATS (one model) evaluated at the λ each PGD-ATS model was trained at; differences "
        "OATS − PGD-ATS. The paper (SPEC §2): at width 0.75 the most robust OATS point beats the "
        "most robust PGD-ATS point by 0.67 SA and 1.34 RA points.",
        "",
        "| width | λ | OATS run | SA OATS − PGD-ATS | RA OATS − PGD-ATS |",
        "|---:|---:|---|---:|---:|",
    ]
    for width in widths:
        for base in baselines:
            lam = study_results.fixed_lambda(base)
            ref = study_results.width_results(base).get(width)
            for run in conditioned:
                result = study_results.width_results(run).get(width)
                if ref is None or result is None or study_results.accuracy(result, lam, "SA") is None:
                    continue
                lines.append(
                    f"| {width:g} | {lam:g} | {run['name']} | "
                    f"{study_results.signed_percent(study_results.accuracy(result, lam, 'SA') - study_results.accuracy(ref, lam, 'SA'))} | "
                    f"{study_results.signed_percent(study_results.accuracy(result, lam, 'RA') - study_results.accuracy(ref, lam, 'RA'))} |"
                )
    lines.append("")
    name = f"{plot_prefix}ra_vs_sa_per_width.png"
    study_results.save_figure(_width_figure(widths, baselines, conditioned), os.path.join(plot_dir, name))
    lines += [f"![RA against SA per width]({os.path.basename(plot_dir)}/{name})", ""]
    return lines


def _width_figure(widths, baselines, conditioned) -> figure_lib.Figure:
    fig = study_results.new_figure(4.0 * max(len(widths), 1), 4.0)
    for column, width in enumerate(widths):
        ax = fig.add_subplot(1, max(len(widths), 1), column + 1)
        points = [
            (study_results.fixed_lambda(b), study_results.width_results(b).get(width)) for b in baselines
        ]
        points = sorted((lam, r) for lam, r in points if r is not None)
        if points:
            ax.plot(
                [100 * study_results.accuracy(r, lam, "SA") for lam, r in points],
                [100 * study_results.accuracy(r, lam, "RA") for lam, r in points],
                "s--",
                color="tab:red",
                label="PGD-ATS",
            )
        for index, run in enumerate(conditioned):
            result = study_results.width_results(run).get(width)
            if result is None:
                continue
            lams = study_results.lambdas_of(result)
            ax.plot(
                [100 * study_results.accuracy(result, lam, "SA") for lam in lams],
                [100 * study_results.accuracy(result, lam, "RA") for lam in lams],
                "o-",
                color=study_results.COLORS[index % len(study_results.COLORS)],
                label=run["name"],
                markersize=4,
            )
        ax.set_title(f"width {width:g}")
        ax.set_xlabel("SA (%)")
        if column == 0:
            ax.set_ylabel("RA, worst case (%)")
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def seed_rows(replicas: Dict[int, Dict[str, Any]]) -> List[str]:
    first = next(iter(replicas.values()))
    baselines = [r for r in first["runs"] if study_results.is_frontier_run(r)]
    conditioned = [r for r in first["runs"] if not study_results.is_frontier_run(r)]
    widths = sorted({w for run in first["runs"] for w in study_results.width_results(run)})
    lines = [
        "| width | λ | run | SA | RA | SA − PGD-ATS | RA − PGD-ATS |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for width in widths:
        for base in baselines:
            lam = study_results.fixed_lambda(base)
            for run in [base] + conditioned:
                values = {
                    m: [study_results.figure_of(r, run["name"], lam, m, width) for r in replicas.values()]
                    for m in ("SA", "RA")
                }
                if not any(v is not None for v in values["SA"]):
                    continue
                cells = [study_results.spread_text(values["SA"]), study_results.spread_text(values["RA"])]
                for metric in ("SA", "RA"):
                    cells.append(
                        "–"
                        if run is base
                        else study_results.spread_text(
                            [
                                study_results.difference(
                                    study_results.figure_of(r, run["name"], lam, metric, width),
                                    study_results.figure_of(r, base["name"], lam, metric, width),
                                )
                                for r in replicas.values()
                            ],
                            signed=True,
                        )
                    )
                lines.append(f"| {width:g} | {lam:g} | {run['name']} | " + " | ".join(cells) + " |")
    return lines + [""]
