"""The "runs" layout of a study page: runs side by side, each against the first.

For studies that vary one thing at a time (an ablation, a reproduction of
another code base's setting) rather than a frontier: per run and evaluated
λ, SA, each attack's RA and the worst-case RA; then every run's SA and
worst-case RA minus those of the study's first run (the reference) at the
same λ. With seed repeats, the spread section gives the same figures as
mean (min–max) over seeds, each difference taken within a seed.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from oat_tf.reporting import study_results


def _metrics(results: Dict[str, Any]) -> List[tuple]:
    """(column title, metric) pairs: SA, each attack's RA, the worst case."""
    attacks = [a["label"] for a in study_results.first_attacks(results)]
    return [("SA", "SA")] + [(f"RA {a}", a) for a in attacks] + [("RA (worst case)", "RA")]


def sections(results: Dict[str, Any], plot_dir: str, plot_prefix: str) -> List[str]:
    """The layout's sections (it draws no plot).

    Args:
        results: dict, a sweep's results (first seed's runs).
        plot_dir: str, unused (the layout has no figure).
        plot_prefix: str, unused.

    Returns:
        list of str, Markdown lines.
    """
    del plot_dir, plot_prefix
    runs = results["runs"]
    metrics = _metrics(results)
    lines = [
        "## Accuracy per run",
        "",
        "| run | λ | " + " | ".join(title for title, _ in metrics) + " |",
        "|---|---:|" + "---:|" * len(metrics),
    ]
    for run in runs:
        for lam in study_results.lambdas_of(run["test_eval"]):
            lines.append(
                f"| {run['name']} | {lam:g} | "
                + " | ".join(study_results.percent(study_results.accuracy(run["test_eval"], lam, m))
                             for _, m in metrics)
                + " |"
            )
    lines.append("")
    if len(runs) > 1:
        reference = runs[0]
        lines += [
            f"## Against `{reference['name']}`",
            "",
            f"Each run minus `{reference['name']}` (the study's first run) at the same λ, in points.",
            "",
            "| run | λ | " + " | ".join(f"{title} difference" for title, _ in metrics) + " |",
            "|---|---:|" + "---:|" * len(metrics),
        ]
        for run in runs[1:]:
            for lam in study_results.lambdas_of(run["test_eval"]):
                cells = [study_results.signed_percent(study_results.difference(
                    study_results.accuracy(run["test_eval"], lam, m),
                    study_results.accuracy(reference["test_eval"], lam, m))) for _, m in metrics]
                lines.append(f"| {run['name']} | {lam:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def seed_rows(replicas: Dict[int, Dict[str, Any]]) -> List[str]:
    """The spread table: every figure of `sections` as mean (min–max) over seeds.

    Args:
        replicas: {seed: results holding that seed's copy of the repeated runs},
            as `study_results.seed_replicas` returns them.

    Returns:
        list of str, Markdown lines.
    """
    first = next(iter(replicas.values()))
    metrics = _metrics(first)
    reference = first["runs"][0]["name"]
    lines = [
        "| run | λ | " + " | ".join(title for title, _ in metrics)
        + " | " + " | ".join(f"{title} − `{reference}`" for title, m in metrics if m in ("SA", "RA")) + " |",
        "|---|---:|" + "---:|" * (len(metrics) + 2),
    ]
    for run in first["runs"]:
        name = run["name"]
        for lam in study_results.lambdas_of(run["test_eval"]):
            cells = [study_results.spread_text(_per_seed(replicas, name, lam, m)) for _, m in metrics]
            for metric in ("SA", "RA"):
                differences = [study_results.difference(a, b) for a, b in zip(
                    _per_seed(replicas, name, lam, metric), _per_seed(replicas, reference, lam, metric))]
                cells.append("–" if name == reference else study_results.spread_text(differences, signed=True))
            lines.append(f"| {name} | {lam:g} | " + " | ".join(cells) + " |")
    return lines + [""]


def _per_seed(replicas: Dict[int, Dict[str, Any]], name: str, lam: float, metric: str) -> List[Optional[float]]:
    """A run's figure at λ in each seed's replica (None where that seed lacks it)."""
    return [study_results.figure_of(replica, name, lam, metric) for replica in replicas.values()]
