"""Headline numbers over seeds: mean and min–max per λ, and a check of a new run against them.

A number from one seed says little about the next seed. A headline table
(the README's quickstart table) is made from the same training run with
several seeds, run by `python -m oat_tf.sweep` (its `results.json` holds
every run's test evaluation, wall time and machine):

    python -m oat_tf.reporting.seed_spread \
        --results=docs/results/quickstart_seeds/results.json \
        --output=docs/results/quickstart_seeds.md

writes the table: per λ, SA, the worst-case RA (the robustness to quote) and
each attack's RA as "mean (min–max)" over the seeds, in percent. A rerun is
checked against the stated spread with

    python -m oat_tf.reporting.seed_spread \
        --results=docs/results/quickstart_seeds/results.json --check_run=runs/quickstart

which exits with status 1 and names every number outside [min − margin,
max + margin]. The margin (`--margin_se`, default 2) is in binomial standard
errors of an accuracy measured on the run's number of examples: three seeds
cannot bound a fourth, and the same seed on another CPU (AVX2 rather than
AVX-512) follows other float roundings, so a new run may leave the min–max by
sampling noise alone. With op determinism (`--deterministic`, the CLIs'
default) the same seed on the same machine kind reproduces its row exactly.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

from absl import app
from absl import flags
from absl import logging

from oat_tf import atomic_files
from oat_tf import cli
from oat_tf import cpu_kernels

WORST_CASE = "worst case"


def summarize(runs: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Mean and min–max over runs of SA, worst-case RA and each attack's RA per λ.

    Args:
        runs: sequence of at least one sweep run record (`results.json`'s
            `runs` entries: `name`, `config` and `test_eval`, an
            `evaluate_lambda_grid` result); every run must have the same λ
            values and attacks.

    Returns:
        dict with `runs` (names), `seeds` (the training seeds), `num_examples`,
        `lambdas` (keys), `metrics` (["SA", "worst case", attack labels ...])
        and `values` ({metric: {λ key: {"per_run", "mean", "min", "max"}}},
        fractions in [0, 1]).
    """
    if not runs:
        raise ValueError("`runs` must hold at least one run. Received: an empty list")
    evaluations = []
    for run in runs:
        if "test_eval" not in run:
            raise ValueError(
                "Every run must have a test evaluation (`test_eval`). Received: run "
                f"{run.get('name')!r} without one"
            )
        evaluations.append(run["test_eval"])
    first = evaluations[0]
    lambdas = list(first["clean_accuracy"])
    attacks = list(first["robust_accuracy"])
    for run, evaluation in zip(runs, evaluations):
        if list(evaluation["clean_accuracy"]) != lambdas or list(evaluation["robust_accuracy"]) != attacks:
            raise ValueError(
                "Every run must be evaluated at the same λ values with the same attacks. "
                f"Received: run {run.get('name')!r} with λ {list(evaluation['clean_accuracy'])} "
                f"and attacks {list(evaluation['robust_accuracy'])}, expected λ {lambdas} and "
                f"attacks {attacks}"
            )
    series = {
        "SA": [e["clean_accuracy"] for e in evaluations],
        WORST_CASE: [e["worst_case_accuracy"] for e in evaluations],
        **{label: [e["robust_accuracy"][label] for e in evaluations] for label in attacks},
    }
    values = {
        metric: {key: _spread([per_run[key] for per_run in per_runs]) for key in lambdas}
        for metric, per_runs in series.items()
    }
    return {
        "runs": [run.get("name") for run in runs],
        "seeds": [run.get("config", {}).get("train", {}).get("seed") for run in runs],
        "num_examples": int(first["num_examples"]),
        "lambdas": lambdas,
        "metrics": list(series),
        "values": values,
    }


def _spread(samples: Sequence[float]) -> Dict[str, Any]:
    return {
        "per_run": [float(v) for v in samples],
        "mean": float(sum(samples) / len(samples)),
        "min": float(min(samples)),
        "max": float(max(samples)),
    }


def format_table(summary: Mapping[str, Any], seen_lambdas: Optional[Sequence[float]] = None) -> str:
    """The Markdown table of a `summarize` result: "mean (min–max)" in percent.

    Args:
        summary: a `summarize` result.
        seen_lambdas: optional training λ values; adds a seen/unseen column.

    Returns:
        str, the table (header, separator, one row per λ).
    """
    header = ["λ"] + (["seen"] if seen_lambdas is not None else [])
    header += ["SA (%)", "RA worst case (%)"] + [
        f"RA {metric} (%)" for metric in summary["metrics"][2:]
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for key in summary["lambdas"]:
        row = [key]
        if seen_lambdas is not None:
            row.append("seen" if any(abs(float(key) - s) < 1e-9 for s in seen_lambdas) else "unseen")
        for metric in summary["metrics"]:
            v = summary["values"][metric][key]
            row.append(f"{100 * v['mean']:.1f} ({100 * v['min']:.1f}–{100 * v['max']:.1f})")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def check_run(
    summary: Mapping[str, Any], evaluation: Mapping[str, Any], margin_se: float = 2.0
) -> List[str]:
    """The numbers of a new run outside the summary's min–max widened by a margin.

    Args:
        summary: a `summarize` result.
        evaluation: the new run's test evaluation (`test_eval.json`).
        margin_se: float >= 0, the margin in binomial standard errors
            sqrt(p(1 − p)/n) of an accuracy p (the summary's mean) on the new
            run's n examples, at least one example.

    Returns:
        list of str, one line per number outside its band (empty: the run
        reproduces the stated spread).
    """
    if not (isinstance(margin_se, (int, float)) and math.isfinite(margin_se) and margin_se >= 0):
        raise ValueError(f"`margin_se` must be a number >= 0. Received: margin_se={margin_se!r}")
    n = int(evaluation["num_examples"])
    measured = {
        "SA": evaluation["clean_accuracy"],
        WORST_CASE: evaluation["worst_case_accuracy"],
        **evaluation["robust_accuracy"],
    }
    problems = []
    for metric in summary["metrics"]:
        if metric not in measured:
            problems.append(f"{metric}: not measured by the new run")
            continue
        for key in summary["lambdas"]:
            if key not in measured[metric]:
                problems.append(f"{metric} at λ={key}: not measured by the new run")
                continue
            band = summary["values"][metric][key]
            p = band["mean"]
            margin = max(margin_se * math.sqrt(max(p * (1 - p), 0.0) / n), 1.0 / n)
            value = float(measured[metric][key])
            if not band["min"] - margin <= value <= band["max"] + margin:
                problems.append(
                    f"{metric} at λ={key}: {100 * value:.2f}% outside "
                    f"[{100 * (band['min'] - margin):.2f}, {100 * (band['max'] + margin):.2f}]% "
                    f"(stated {100 * band['min']:.2f}–{100 * band['max']:.2f}% ± {100 * margin:.2f})"
                )
    return problems


def format_page(results: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    """The Markdown page of a seed study: command, machine, cost and the table."""
    runs = results["runs"]
    first_config = runs[0].get("config", {})
    seen = first_config.get("lambda_sampling", {}).get("values")
    machine = results.get("machine", {})
    walls = [run.get("wall_seconds") for run in runs if run.get("wall_seconds") is not None]
    lines = [
        f"# {results.get('study', 'seeds')}: mean (min–max) over {len(runs)} seeds",
        "",
        results.get("description", ""),
        "",
        f"Command: `{results.get('command', '')}`. Seeds {summary['seeds']}, "
        f"{summary['num_examples']} test examples per run.",
        "",
        f"Machine: {cpu_kernels.cpu_text(machine)}, "
        f"{machine.get('cpu_count', '?')} cores; TensorFlow {machine.get('tensorflow', '?')}, "
        f"Keras {machine.get('keras', '?')}.{cpu_kernels.kernels_text(machine)}",
        "",
    ]
    if walls:
        lines += [
            "Wall time per run (training and test evaluation): "
            + ", ".join(f"{w / 60:.1f}" for w in walls)
            + f" min; {sum(walls) / 60:.1f} min in all.",
            "",
        ]
    lines += [
        format_table(summary, seen_lambdas=seen),
        "RA worst case: a digit counts only if it is classified correctly clean and under every "
        "attack of the row's columns; it is the robustness to quote. The per-attack columns are "
        "each attack's own accuracy; members of AutoAttack-fast are cumulative (after that "
        "attack and the ones before it).",
        "",
    ]
    return "\n".join(lines)


# === Command line ===

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the command-line flags."""
    flags.DEFINE_string("results", None, "A sweep's results.json (the seed runs).")
    flags.DEFINE_string("output", None, "Write the Markdown page here (atomically).")
    flags.DEFINE_string("check_run", None, "A run directory whose test_eval.json is checked against the spread.")
    flags.DEFINE_float("margin_se", 2.0, "Margin around the min–max, in binomial standard errors.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    if not FLAGS.results:
        raise app.UsageError("Pass --results=<sweep results.json>.")
    try:
        with open(FLAGS.results, encoding="utf-8") as f:
            results = json.load(f)
        summary = summarize(results["runs"])
    except (OSError, ValueError, KeyError) as error:
        sys.stderr.write(f"Error: --results={FLAGS.results!r}: {error}\n")
        sys.exit(1)
    page = format_page(results, summary)
    if FLAGS.output:
        atomic_files.write_text(FLAGS.output, page)
        logging.info("Wrote %s.", FLAGS.output)
    sys.stdout.write(page)
    if FLAGS.check_run:
        path = os.path.join(FLAGS.check_run, "test_eval.json")
        try:
            with open(path, encoding="utf-8") as f:
                evaluation = json.load(f)
        except (OSError, ValueError) as error:
            sys.stderr.write(f"Error: --check_run={FLAGS.check_run!r}: cannot read {path}: {error}\n")
            sys.exit(1)
        problems = check_run(summary, evaluation, FLAGS.margin_se)
        if problems:
            sys.stdout.write("\nOutside the stated spread:\n" + "\n".join(f"- {p}" for p in problems) + "\n")
            sys.exit(1)
        sys.stdout.write(f"\n{FLAGS.check_run} reproduces the stated spread (margin {FLAGS.margin_se:g} SE).\n")


def run() -> None:
    """The `oat-seed-spread` console script; `python -m oat_tf.reporting.seed_spread` runs it too."""
    cli.run_main(main, __name__, define_flags)


if __name__ == "__main__":
    run()
