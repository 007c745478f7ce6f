"""Markdown tables of a λ-grid evaluation, one row per λ.

`format_table(result)` takes the dict returned by
`robust_eval.evaluate_lambda_grid` (see `results`) and gives SA, RA per attack
and the worst case, in percent. The training loop, the evaluation CLI and the
model card print it; `oat_tf.reporting.report` puts it in the report pages.
"""

from __future__ import annotations

from typing import Optional, Sequence

from oat_tf import config as config_lib
from oat_tf.evaluation import results as results_lib


def format_percent(value: float) -> str:
    """A fraction in [0, 1] as a percentage with two decimals, e.g. "87.40"."""
    return f"{100.0 * value:.2f}"


def format_table(result: dict, seen_lambdas: Optional[Sequence[float]] = None) -> str:
    """Formats a λ-grid evaluation as a Markdown table.

    Args:
        result: dict, as returned by `evaluate_lambda_grid`.
        seen_lambdas: optional sequence of float, the λ values used in
            training; adds a column marking each row "seen" or "unseen".

    Returns:
        str, the table: a header, a separator and one row per λ, with columns
        λ, (seen), SA, RA (the per-sample worst case over every attack: the
        headline robustness) and then the RA of each attack, labelled with
        its name; accuracies in percent with two decimals.
    """
    results_lib.check_result(result)
    if seen_lambdas is not None:
        seen_lambdas = config_lib.check_lambda_values("seen_lambdas", seen_lambdas)
    labels = list(result["robust_accuracy"])
    header = ["λ"]
    if seen_lambdas is not None:
        header.append("seen")
    header += ["SA (%)", "RA worst case (%)"] + [f"RA {label} (%)" for label in labels]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for lam, key in zip(result["lambdas"], results_lib.lambda_keys(result)):
        row = [key]
        if seen_lambdas is not None:
            row.append("seen" if results_lib.is_seen(lam, seen_lambdas) else "unseen")
        row.append(format_percent(result["clean_accuracy"][key]))
        row.append(format_percent(result["worst_case_accuracy"][key]))
        row += [format_percent(result["robust_accuracy"][label][key]) for label in labels]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
