"""The "mixture_bn" layout of a study page: clean fraction, mixture BN, BN statistics, depth (SPEC §4).

One row per run and further evaluation (depth, BN, clean fraction, BN used at
test time, moving or batch statistics) and the four comparisons of the issue,
each with its difference and a two-sample z-score; SA and RA against depth for
adversarial and standard training.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Dict, List, Optional

from matplotlib import figure as figure_lib

from oat_tf.reporting import study_results

_RESNET = re.compile(r"resnet(\d+)")


def _depth(run: Dict[str, Any]) -> Optional[int]:
    match = _RESNET.fullmatch(study_results.run_config(run)["model"]["architecture"])
    return int(match.group(1)) if match else None


def mixture_rows(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One row per run and further evaluation, with its settings and accuracies.

    Returns:
        list of dicts with `name`, `run`, `depth`, `variant`, `clean_fraction`,
        `test_bn` ("adversarial" / "clean" for mixture BN, "–" otherwise),
        `bn_statistics`, `lambda`, `result`.
    """
    rows = []
    for run in results["runs"]:
        entries = [(run["name"], run["test_eval"], "moving")]
        for evaluation in run.get("evaluations", []):
            stats = evaluation["results"].get("bn_statistics", "moving")
            entries.append((f"{run['name']}/{evaluation['label']}", evaluation["results"], stats))
        for name, result, stats in entries:
            for lam in study_results.lambdas_of(result):
                variant = study_results.run_config(run)["model"]["variant"]
                rows.append(
                    {
                        "name": name,
                        "run": run,
                        "depth": _depth(run),
                        "variant": variant,
                        "clean_fraction": float(study_results.train_config(run).get("clean_fraction", 0.5)),
                        "test_bn": (
                            ("clean" if lam == 0 else "adversarial") if variant == "mixture_bn" else "–"
                        ),
                        "bn_statistics": stats,
                        "lambda": lam,
                        "result": result,
                    }
                )
    return rows


def z_score(a: float, b: float, n_a: int, n_b: int) -> float:
    """Two-sample z of a − b for accuracies measured on n_a and n_b samples."""
    variance = a * (1 - a) / max(n_a, 1) + b * (1 - b) / max(n_b, 1)
    return 0.0 if variance <= 0 else (a - b) / math.sqrt(variance)


def _verdict(difference: float, z: float) -> str:
    if difference > 0:
        return "holds" if z >= 1.96 else "same direction, within noise (z < 1.96)"
    return "does not hold" + (" (significantly reversed)" if z <= -1.96 else " (within noise)")


def _find(rows, **criteria) -> Optional[Dict[str, Any]]:
    for row in rows:
        if all(row[k] == v for k, v in criteria.items()):
            return row
    return None


def _claim_rows(rows):
    """The rows claims (1)-(3) compare, at the shallowest depth with moving statistics.

    Returns:
        (single BN clean fraction 0, single BN clean fraction 0.5, mixture BN
        with adversarial BN at test, the same with batch statistics); None
        where the study lacks that run or evaluation.
    """
    base = min((r["depth"] for r in rows if r["depth"]), default=None)
    moving = dict(bn_statistics="moving")
    mixture = dict(variant="mixture_bn", clean_fraction=0.5, depth=base, test_bn="adversarial")
    return (
        _find(rows, variant="plain", clean_fraction=0.0, depth=base, **moving),
        _find(rows, variant="plain", clean_fraction=0.5, depth=base, **moving),
        _find(rows, **mixture, **moving),
        _find(rows, **mixture, bn_statistics="batch"),
    )


def _comparison_line(claim: str, better, worse, metric: str = "RA") -> str:
    if better is None or worse is None:
        return f"| {claim} | – | – | – | not run |"
    a = study_results.accuracy(better["result"], better["lambda"], metric)
    b = study_results.accuracy(worse["result"], worse["lambda"], metric)
    z = z_score(a, b, better["result"]["num_examples"], worse["result"]["num_examples"])
    return (
        f"| {claim} | {better['name']}: {study_results.percent(a)} | {worse['name']}: {study_results.percent(b)} | "
        f"{study_results.signed_percent(a - b)} (z = {z:.2f}) | {_verdict(a - b, z)} |"
    )


def sections(results: Dict[str, Any], plot_dir: str, plot_prefix: str) -> List[str]:
    rows = mixture_rows(results)
    attacks = [a["label"] for a in study_results.first_attacks(results)]
    lines = ["## Results", ""]
    lines += [
        "| run / evaluation | depth | BN | clean fraction | BN at test | BN statistics | SA | "
        + " | ".join(f"RA {a}" for a in attacks)
        + " | RA (worst case) |",
        "|---|---:|---|---:|---|---|---:|" + "---:|" * len(attacks) + "---:|",
    ]
    for row in rows:
        result, lam = row["result"], row["lambda"]
        bn = {"plain": "single", "mixture_bn": "mixture"}.get(row["variant"], row["variant"])
        lines.append(
            f"| {row['name']} | {row['depth'] or '–'} | {bn} | {row['clean_fraction']:g} | "
            f"{row['test_bn']} | {row['bn_statistics']} | {study_results.percent(study_results.accuracy(result, lam, 'SA'))} | "
            + " | ".join(study_results.percent(study_results.accuracy(result, lam, a)) for a in attacks)
            + f" | {study_results.percent(study_results.accuracy(result, lam, 'RA'))} |"
        )
    lines.append("")
    single_zero, single_half, mixture, mixture_batch = _claim_rows(rows)
    lines += [
        "## The paper's claims at this scale",
        "",
        "Each line compares RA (worst case) of two models or evaluations on the same test images. "
        "z is the two-sample z-score of the difference (independent binomial errors); |z| < 1.96 "
        "is within sampling noise at 95%. Line (4) compares where the curves peak, and the gain "
        "from the shallowest to the deepest network with its z-score.",
        "",
        "| claim (SPEC §4) | expected higher | expected lower | difference | verdict |",
        "|---|---|---|---|---|",
        _comparison_line(
            "(1) BN on clean + adversarial images hurts robustness: clean fraction 0 beats 0.5 (single BN)",
            single_zero,
            single_half,
        ),
        _comparison_line(
            "(2) mixture BN (adversarial BN at test) beats single BN at clean fraction 0.5",
            mixture,
            single_half,
        ),
        _comparison_line(
            "(3) batch statistics at test time raise robustness further (mixture BN)", mixture_batch, mixture
        ),
    ]
    sweep = _depth_sweep(rows)
    adv, std = sweep.get("adversarial", {}), sweep.get("standard", {})
    if adv and std:
        adv_peak = max(
            adv, key=lambda d: (study_results.accuracy(adv[d]["result"], adv[d]["lambda"], "RA"), -d)
        )
        std_peak = max(
            std, key=lambda d: (study_results.accuracy(std[d]["result"], std[d]["lambda"], "SA"), -d)
        )
        holds = adv_peak > std_peak
        lines.append(
            f"| (4) RA of adversarial training keeps rising with depth longer than SA of standard "
            f"training | adversarial RA peaks at depth {adv_peak} | standard SA peaks at depth "
            f"{std_peak} (ties: the shallower) | {_depth_gain(adv, 'RA', 'adversarial RA')}; "
            f"{_depth_gain(std, 'SA', 'standard SA')} | "
            f"{'holds' if holds else 'does not hold'} (peak depths; the gains carry the noise test) |"
        )
    lines.append("")
    if adv or std:
        lines += [
            "### Depth sweep",
            "",
            "| depth | adversarial: SA | adversarial: RA (worst case) | standard: SA | standard: RA (worst case) |",
            "|---:|---:|---:|---:|---:|",
        ]
        for depth in sorted(set(adv) | set(std)):
            cells = []
            for group in (adv, std):
                row = group.get(depth)
                for metric in ("SA", "RA"):
                    cells.append(
                        "–"
                        if row is None
                        else study_results.percent(
                            study_results.accuracy(row["result"], row["lambda"], metric)
                        )
                    )
            lines.append(f"| {depth} | " + " | ".join(cells) + " |")
        lines.append("")
        name = f"{plot_prefix}depth.png"
        study_results.save_figure(_depth_figure(adv, std), os.path.join(plot_dir, name))
        lines += [f"![SA and RA against depth]({os.path.basename(plot_dir)}/{name})", ""]
    return lines


def _depth_gain(group: Dict[int, Dict[str, Any]], metric: str, label: str) -> str:
    """'label d0→d1: +x.x (z = …)': the change from the shallowest to the deepest network."""
    low, high = group[min(group)], group[max(group)]
    a = study_results.accuracy(high["result"], high["lambda"], metric)
    b = study_results.accuracy(low["result"], low["lambda"], metric)
    z = z_score(a, b, high["result"]["num_examples"], low["result"]["num_examples"])
    return f"{label} {min(group)}→{max(group)}: {study_results.signed_percent(a - b)} (z = {z:.2f})"


def _depth_sweep(rows) -> Dict[str, Dict[int, Dict[str, Any]]]:
    """{"adversarial": {depth: row}, "standard": {depth: row}} of single-BN moving-statistics runs."""
    sweep: Dict[str, Dict[int, Dict[str, Any]]] = {"adversarial": {}, "standard": {}}
    for row in rows:
        if row["variant"] != "plain" or row["bn_statistics"] != "moving" or row["depth"] is None:
            continue
        if row["name"] != row["run"]["name"]:
            continue
        if row["clean_fraction"] == 0.0:
            sweep["adversarial"].setdefault(row["depth"], row)
        elif row["clean_fraction"] == 1.0:
            sweep["standard"].setdefault(row["depth"], row)
    return {k: v for k, v in sweep.items() if len(v) >= 2}


def _depth_figure(adv, std) -> figure_lib.Figure:
    fig = study_results.new_figure(7.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for group, style, label in ((adv, "o-", "adversarial training"), (std, "s--", "standard training")):
        if not group:
            continue
        depths = sorted(group)
        for metric, color in (("SA", "tab:blue"), ("RA", "tab:red")):
            ax.plot(
                depths,
                [
                    100 * study_results.accuracy(group[d]["result"], group[d]["lambda"], metric)
                    for d in depths
                ],
                style,
                color=color,
                label=f"{label}: {metric}",
            )
    ax.set_xlabel("ResNet depth")
    ax.set_ylabel("study_results.accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def seed_rows(replicas: Dict[int, Dict[str, Any]]) -> List[str]:
    rows_per_seed = [mixture_rows(r) for r in replicas.values()]
    first_rows = rows_per_seed[0]
    lines = ["| run / evaluation | λ | SA | RA |", "|---|---:|---:|---:|"]

    def figure(rows, name, lam, metric):
        row = _find(rows, name=name, **{"lambda": lam})
        return None if row is None else study_results.accuracy(row["result"], lam, metric)

    for row in first_rows:
        cells = [
            study_results.spread_text([figure(rows, row["name"], row["lambda"], m) for rows in rows_per_seed])
            for m in ("SA", "RA")
        ]
        lines.append(f"| {row['name']} | {row['lambda']:g} | " + " | ".join(cells) + " |")
    lines.append("")
    claims = []
    for rows in rows_per_seed:
        single_zero, single_half, mixture, batch = _claim_rows(rows)
        claims.append([(single_zero, single_half), (mixture, single_half), (batch, mixture)])
    labels = (
        "(1) clean fraction 0 − 0.5 (single BN)",
        "(2) mixture BN − single BN (clean fraction 0.5)",
        "(3) batch − moving statistics (mixture BN)",
    )
    lines += ["| claim | RA difference per seed | mean (min–max) |", "|---|---|---:|"]
    for index, label in enumerate(labels):
        differences = []
        for pairs in claims:
            better, worse = pairs[index]
            differences.append(
                None
                if better is None or worse is None
                else study_results.difference(
                    study_results.accuracy(better["result"], better["lambda"], "RA"),
                    study_results.accuracy(worse["result"], worse["lambda"], "RA"),
                )
            )
        if all(d is None for d in differences):
            continue
        per_seed = ", ".join(study_results.signed_percent(d) for d in differences)
        lines.append(f"| {label} | {per_seed} | {study_results.spread_text(differences, signed=True)} |")
    return lines + [""]
