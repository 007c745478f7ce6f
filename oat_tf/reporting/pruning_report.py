"""The pruning + defence baseline against RDI-Nets at equal MACs (the RDI-Nets paper's Fig. 6).

    python -m oat_tf.reporting.pruning_report \
        --compress_results=runs/pruned_backbone/compress_results.json \
        --rdi_results="budget 0.55=docs/results/rdi_nets/maxavg_flops_budget_0.55.json" \
        --output_prefix=docs/results/rdi_nets/pruning

Reads the rows `oat_tf.compress` wrote (one per sparsity, the unpruned control
fine-tuned the same way, and the backbone as trained) and the multi-exit evaluations of RDI networks
(`multi_exit_report`'s JSON), and writes PREFIX.md (the pruned backbones'
table, then each RDI network next to the pruned backbone interpolated to the
same average MACs) and PREFIX.png (TA and ATA against MFLOPs). An RDI network's
ATA is its per-sample worst case over the attack forms it was evaluated with,
its cost the average MACs per clean test image; a pruned backbone's ATA is its
worst case over its evaluation attacks, its cost the effective MACs.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from absl import app
from absl import flags
from absl import logging
from matplotlib import figure as figure_lib
from matplotlib.backends import backend_agg

from oat_tf import atomic_files
from oat_tf import cli

FLAGS = flags.FLAGS


def format_summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown table of `compress_results.json`'s rows.

    Args:
        rows: sequence of dicts as in `compress_results.json["rows"]`.

    Returns:
        str, a Markdown table: sparsity, MACs, SA, worst-case RA and RA per attack.
    """
    attacks = list(rows[0]["robust_accuracy"]) if rows else []
    header = ["model", "target sparsity", "kernel sparsity", "MACs (M)", "saving", "SA", "RA (worst case)"]
    header += [f"RA {attack}" for attack in attacks]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for row in rows:
        cells = [
            row["name"] + ("" if fine_tuned(row) else " (as trained)"),
            f"{row['target_sparsity']:.2f}",
            f"{100 * row['kernel_sparsity']:.1f}%",
            f"{row['effective_macs'] / 1e6:.2f}",
            f"{100 * row['macs_saving']:.1f}%",
            f"{100 * row['clean_accuracy']:.2f}%",
            f"**{100 * row['worst_case_accuracy']:.2f}%**",
        ] + [f"{100 * row['robust_accuracy'][attack]:.2f}%" for attack in attacks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def fine_tuned(row: Mapping[str, Any]) -> bool:
    """Whether a row went through the fine-tuning (pruned, or the unpruned control), not the backbone as trained."""
    return bool(row.get("fine_tuned", row["name"] != "dense"))


def rdi_point(result: Mapping[str, Any], key: Optional[str] = None) -> Dict[str, float]:
    """TA, worst-case ATA and average MACs of one multi-exit evaluation.

    Args:
        result: dict, a `multi_exit_eval.evaluate_multi_exit` result.
        key: str or None, the λ key (None: the first).

    Returns:
        dict with `clean_accuracy`, `worst_case_accuracy` (per sample, over
        every attack and form; the lowest if there are several attacks),
        `macs` (average per clean image) and `attacks` (their labels).
    """
    key = key or next(iter(result["per_lambda"]))
    entry = result["per_lambda"][key]
    worst = entry["worst_case"]
    return {
        "clean_accuracy": float(entry["clean"]["accuracy"]),
        "worst_case_accuracy": float(min(value["per_sample_accuracy"] for value in worst.values())),
        "macs": float(entry["clean"]["average_macs"]),
        "attacks": sorted(worst),
    }


def interpolate_at(rows: Sequence[Mapping[str, Any]], macs: float) -> Optional[Dict[str, float]]:
    """SA and worst-case RA of the pruned series, linearly interpolated at `macs`.

    Args:
        rows: `compress_results.json` rows; only the fine-tuned ones (pruned
            backbones and the unpruned control) make the series.
        macs: float, effective MACs to read the series at.

    Returns:
        dict with `clean_accuracy` and `worst_case_accuracy`, or None when
        `macs` lies outside the series' range (no extrapolation).
    """
    points = sorted(
        (row["effective_macs"], row["clean_accuracy"], row["worst_case_accuracy"]) for row in rows if fine_tuned(row)
    )
    xs = [p[0] for p in points]
    if not points or macs < xs[0] or macs > xs[-1]:
        return None
    return {
        "clean_accuracy": float(np.interp(macs, xs, [p[1] for p in points])),
        "worst_case_accuracy": float(np.interp(macs, xs, [p[2] for p in points])),
    }


def format_comparison(rows: Sequence[Mapping[str, Any]], rdi: Mapping[str, Mapping[str, float]]) -> str:
    """Each RDI network next to the pruned backbone read at the same MACs.

    Args:
        rows: `compress_results.json` rows.
        rdi: {label: `rdi_point` result}.

    Returns:
        str, a Markdown table: MFLOPs, TA and ATA of both, and the differences.
    """
    lines = [
        "| RDI network | MFLOPs | RDI TA | pruned TA | RDI ATA | pruned ATA | ATA: RDI − pruned |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, point in rdi.items():
        pruned = interpolate_at(rows, point["macs"])
        if pruned is None:
            lines.append(f"| {label} | {point['macs'] / 1e6:.2f} | {100 * point['clean_accuracy']:.2f}% | "
                         f"(outside the series) | {100 * point['worst_case_accuracy']:.2f}% | | |")
            continue
        lines.append(
            f"| {label} | {point['macs'] / 1e6:.2f} | {100 * point['clean_accuracy']:.2f}% | "
            f"{100 * pruned['clean_accuracy']:.2f}% | {100 * point['worst_case_accuracy']:.2f}% | "
            f"{100 * pruned['worst_case_accuracy']:.2f}% | "
            f"{100 * (point['worst_case_accuracy'] - pruned['worst_case_accuracy']):+.2f} |"
        )
    return "\n".join(lines) + "\n"


def pruning_figure(rows: Sequence[Mapping[str, Any]], rdi: Mapping[str, Mapping[str, float]]) -> figure_lib.Figure:
    """TA and ATA against MFLOPs: the pruned series as a line, each RDI network as a marker.

    Args:
        rows: `compress_results.json` rows.
        rdi: {label: `rdi_point` result}.

    Returns:
        matplotlib Figure with two panels (TA, ATA).
    """
    fig = figure_lib.Figure(figsize=(9.0, 3.8))
    backend_agg.FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    ordered = sorted((row for row in rows if fine_tuned(row)), key=lambda row: row["effective_macs"])
    as_trained = [row for row in rows if not fine_tuned(row)]
    for axis, field, title in zip(axes, ("clean_accuracy", "worst_case_accuracy"), ("TA", "ATA (worst case)")):
        xs = [row["effective_macs"] / 1e6 for row in ordered]
        axis.plot(xs, [100 * row[field] for row in ordered], "o-", color="tab:gray", label="pruned backbone + PGD")
        for row, x in zip(ordered, xs):
            axis.annotate(f"{row['target_sparsity']:g}", (x, 100 * row[field]), textcoords="offset points",
                          xytext=(3, 3), fontsize=7, color="tab:gray")
        for row in as_trained:
            axis.plot(row["effective_macs"] / 1e6, 100 * row[field], marker="x", markersize=8, linestyle="none",
                      color="black", label="backbone as trained (no fine-tuning)")
        for index, (label, point) in enumerate(rdi.items()):
            axis.plot(point["macs"] / 1e6, 100 * point[field], marker="*", markersize=11, linestyle="none",
                      color=f"C{index}", label=f"RDI: {label}")
        axis.set_xlabel("MFLOPs (M multiply-accumulates per image)")
        axis.set_ylabel(f"{title} (%)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def _parse_rdi(entries: Sequence[str]) -> List[Tuple[str, str]]:
    pairs = []
    for entry in entries:
        label, separator, path = entry.partition("=")
        if not separator or not label or not path:
            raise app.UsageError(f"--rdi_results entries must be LABEL=PATH. Received: {entry!r}")
        pairs.append((label, path))
    return pairs


def _read_json(flag: str, path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise app.UsageError(f"--{flag}: cannot read {path!r}: {error}") from None


def define_flags() -> None:
    """Defines the flags."""
    flags.DEFINE_string("compress_results", None, "compress_results.json written by oat_tf.compress.")
    flags.DEFINE_list("rdi_results", [], "LABEL=PATH of multi-exit evaluation JSON files (multi_exit_report's).")
    flags.DEFINE_string("output_prefix", None, "Writes PREFIX.md and PREFIX.png.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    if not FLAGS.compress_results or not FLAGS.output_prefix:
        raise app.UsageError("--compress_results and --output_prefix are required.")
    pairs = _parse_rdi(FLAGS.rdi_results)
    rows = _read_json("compress_results", FLAGS.compress_results).get("rows")
    if not rows:
        raise app.UsageError(f"--compress_results: {FLAGS.compress_results!r} has no rows.")
    try:
        rdi = {label: rdi_point(_read_json("rdi_results", path)) for label, path in pairs}
    except (KeyError, StopIteration, TypeError) as error:
        raise app.UsageError(f"--rdi_results: not a multi-exit evaluation ({error!r})") from None
    text = "Pruned backbones:\n\n" + format_summary_table(rows)
    if rdi:
        text += "\nAt the same MACs (the pruned series interpolated linearly):\n\n" + format_comparison(rows, rdi)
    atomic_files.write_text(FLAGS.output_prefix + ".md", text)
    atomic_files.write_figure(FLAGS.output_prefix + ".png", pruning_figure(rows, rdi))
    logging.info("Wrote %s.md and %s.png.", FLAGS.output_prefix, FLAGS.output_prefix)


def run() -> None:
    """The `oat-pruning-report` console script: flags, then `main`."""
    cli.run_main(main, __name__, define_flags)


if __name__ == "__main__":
    run()
