"""Reports of a multi-exit evaluation: the paper's Tables 2–4 and Fig. 2.

`write_multi_exit_report` writes, for one `multi_exit_eval.evaluate_multi_exit`
result, a JSON file, a Markdown table laid out as the RDI-Nets paper's Tables
2–4 (rows TA, ATA per attack form, worst-case ATA, MFLOPs and the saving
against the backbone; one column per λ) and a PNG of the exit distribution of
clean and worst-case adversarial images (Fig. 2). `format_comparison_table`
lays several runs side by side (one column per defence or model), as the
paper's tables compare defences.

"MFLOPs" are millions of multiply-accumulates per image, the paper's unit
(its SmallCNN backbone, 9.25 "MFLOPs", is 9.95 M multiply-accumulates here:
the same order, not twice it).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
from absl import logging
from matplotlib import figure as figure_lib
from matplotlib.backends import backend_agg

from oat_tf import atomic_files

EXIT_DISTRIBUTION = "exit_distribution"


def _percent(value: float) -> str:
    return f"{100.0 * value:.2f}%"


def _form_order(result: Mapping[str, Any], attack: str, key: str) -> List[str]:
    forms = list(result["per_lambda"][key]["attacks"][attack])
    branches = sorted((f for f in forms if f.startswith("Branch ")), key=lambda f: int(f.split()[1]))
    rest = [f for f in ("Main Branch", "Average", "Max-Average", "Random") if f in forms]
    return branches + rest + [f for f in forms if f not in branches and f not in rest]


def column(result: Mapping[str, Any], key: str) -> Dict[str, str]:
    """One table column (row label → cell) of a result at λ `key`.

    Args:
        result: dict from `evaluate_multi_exit`.
        key: str, a λ key of `result["per_lambda"]`.

    Returns:
        dict, ordered: "TA", "ATA (<form>)" per attack form (prefixed with
        the attack label when there are several attacks), "ATA (Worst-Case)",
        "ATA (per-sample worst case)", "MFLOPs", "Saving", then the
        efficiency attack's rows when present.
    """
    entry = result["per_lambda"][key]
    backbone = float(result["backbone_macs"])
    rows: Dict[str, str] = {"TA": _percent(entry["clean"]["accuracy"])}
    attacks = list(entry["attacks"])
    for attack in attacks:
        prefix = f"{attack} " if len(attacks) > 1 else ""
        for form in _form_order(result, attack, key):
            rows[f"ATA {prefix}({form})"] = _percent(entry["attacks"][attack][form]["accuracy"])
        worst = entry["worst_case"].get(attack)
        if worst:
            rows[f"ATA {prefix}(Worst-Case)"] = _percent(worst["accuracy"])
            rows[f"ATA {prefix}(per-sample worst case)"] = _percent(worst["per_sample_accuracy"])
    clean_macs = entry["clean"]["average_macs"]
    rows["MFLOPs"] = f"{clean_macs / 1e6:.2f}"
    rows["Saving"] = f"{100.0 * (1.0 - clean_macs / backbone):.1f}%" if backbone > 0 else "n/a"
    delayed = entry.get("efficiency_attack")
    if delayed:
        rows["MFLOPs under the delay-exit attack"] = f"{delayed['average_macs'] / 1e6:.2f}"
        rows["Saving under the delay-exit attack"] = (
            f"{100.0 * (1.0 - delayed['average_macs'] / backbone):.1f}%" if backbone > 0 else "n/a"
        )
    return rows


def _markdown_table(columns: Mapping[str, Mapping[str, str]]) -> str:
    names = list(columns)
    row_labels: List[str] = []
    for values in columns.values():
        row_labels.extend(label for label in values if label not in row_labels)
    lines = [
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for label in row_labels:
        lines.append(f"| {label} | " + " | ".join(columns[n].get(label, "") for n in names) + " |")
    return "\n".join(lines) + "\n"


def format_table(result: Mapping[str, Any]) -> str:
    """The Markdown table of one result: one column per λ (the paper's layout).

    Args:
        result: dict from `evaluate_multi_exit`.

    Returns:
        str, Markdown.
    """
    keys = list(result["per_lambda"])
    return _markdown_table({f"λ = {key}": column(result, key) for key in keys})


def format_comparison_table(results: Mapping[str, Mapping[str, Any]], key: Optional[str] = None) -> str:
    """Several runs side by side, one column each, as the paper's Tables 2–4.

    Args:
        results: {column name (e.g. "Max-Average" or "SmallCNN backbone"):
            result from `evaluate_multi_exit`}.
        key: str, the λ key to show; default each result's first λ.

    Returns:
        str, Markdown.
    """
    if not results:
        raise ValueError("`results` must hold at least one evaluation. Received: results={}")
    columns = {}
    for name, result in results.items():
        column_key = key if key is not None else next(iter(result["per_lambda"]))
        if column_key not in result["per_lambda"]:
            raise ValueError(
                f"`key` must be a λ of every result. Received: key={key!r}, not in "
                f"{name!r} ({list(result['per_lambda'])})"
            )
        columns[name] = column(result, column_key)
    return _markdown_table(columns)


def exit_distribution_figure(result: Mapping[str, Any], key: str, title: str = "") -> figure_lib.Figure:
    """Exit usage of clean and worst-case adversarial images (the paper's Fig. 2).

    Args:
        result: dict from `evaluate_multi_exit`.
        key: str, a λ key.
        title: str, the figure title.

    Returns:
        matplotlib Figure (Agg canvas): one bar per output and input kind;
        the adversarial bars are those of the attack form with the lowest ATA
        of the first attack, plus the delay-exit attack when present.
    """
    entry = result["per_lambda"][key]
    names = result["output_names"]
    series = [("clean", entry["clean"]["exit_distribution"])]
    attacks = list(entry["worst_case"])
    if attacks:
        worst = entry["worst_case"][attacks[0]]
        series.append(
            (f"{attacks[0]} {worst['form']} (worst case)",
             entry["attacks"][attacks[0]][worst["form"]]["exit_distribution"])
        )
    if entry.get("efficiency_attack"):
        series.append(("delay-exit attack", entry["efficiency_attack"]["exit_distribution"]))
    fig = figure_lib.Figure(figsize=(1.6 + 1.1 * len(names), 3.6), dpi=100)
    backend_agg.FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(series)
    positions = np.arange(len(names))
    for index, (label, values) in enumerate(series):
        ax.bar(positions + (index - (len(series) - 1) / 2) * width, [100.0 * v for v in values], width, label=label)
    ax.set_xticks(positions)
    ax.set_xticklabels(["Main" if n == "final" else n.replace("exit_", "Branch ") for n in names])
    ax.set_ylabel("samples exiting (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title(title or f"Exit distribution, λ = {key}", fontsize=10)
    fig.tight_layout()
    return fig


def write_multi_exit_report(
    result: Mapping[str, Any], out_dir: str, *, prefix: str = "test_eval_multi_exit", title: str = ""
) -> Dict[str, str]:
    """Writes `<prefix>.json`, `<prefix>.md` and `<prefix>_exit_distribution_<λ>.png`.

    Args:
        result: dict from `evaluate_multi_exit`.
        out_dir: str, the directory (created if missing).
        prefix: str, file name prefix.
        title: str, heading of the Markdown file and plots.

    Returns:
        dict with the paths: "json", "markdown", "plots" ({λ key: path}).
    """
    os.makedirs(out_dir, exist_ok=True)
    plots = {}
    for key in result["per_lambda"]:
        path = os.path.join(out_dir, f"{prefix}_{EXIT_DISTRIBUTION}_{key}.png")
        atomic_files.write_figure(path, exit_distribution_figure(result, key, title=f"{title} λ = {key}".strip()))
        plots[key] = path
    paths = {
        "json": os.path.join(out_dir, f"{prefix}.json"),
        "markdown": os.path.join(out_dir, f"{prefix}.md"),
        "plots": plots,
    }
    atomic_files.write_json(paths["json"], {**result, "plots": {k: os.path.basename(p) for k, p in plots.items()}})
    markdown = (f"# {title}\n\n" if title else "") + format_table(result)
    markdown += (
        f"\n{result['num_examples']} examples; thresholds "
        f"{result.get('lambda_thresholds') or result['thresholds']} (per λ when a table); "
        f"backbone {result['backbone_macs'] / 1e6:.2f} MFLOPs (multiply-accumulates).\n\n"
    )
    markdown += "\n".join(f"![exit distribution λ={k}]({os.path.basename(p)})" for k, p in plots.items()) + "\n"
    atomic_files.write_text(paths["markdown"], markdown)
    logging.info("Wrote multi-exit report: %s, %s", paths["json"], paths["markdown"])
    return paths


def load_run_result(run_dir: str, prefix: str = "test_eval_multi_exit") -> Dict[str, Any]:
    """Reads `<run_dir>/<prefix>.json`, the test evaluation of a multi-exit run.

    Args:
        run_dir: str, a multi-exit run directory.
        prefix: str, the report's file name prefix.

    Returns:
        dict, the `evaluate_multi_exit` result.
    """
    import json  # pylint: disable=import-outside-toplevel

    path = os.path.join(run_dir, f"{prefix}.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"`run_dir` must hold {prefix}.json (a finished multi-exit run). Received: run_dir={run_dir!r}"
        )
    with open(path) as f:
        result = json.load(f)
    if "per_lambda" not in result or "backbone_macs" not in result:
        raise ValueError(f"{path} is not a multi-exit evaluation (no per_lambda / backbone_macs).")
    return result


def main(argv: Sequence[str]) -> None:
    """`python -m oat_tf.reporting.multi_exit_report --run_dirs=A,B --names=RDI,Backbone`."""
    from absl import flags  # pylint: disable=import-outside-toplevel

    del argv
    run_dirs = flags.FLAGS.run_dirs
    names = flags.FLAGS.names or [os.path.basename(d.rstrip("/")) for d in run_dirs]
    if len(names) != len(run_dirs):
        raise ValueError(f"--names must name every run of --run_dirs. Received: {names} for {run_dirs}")
    results = {name: load_run_result(d) for name, d in zip(names, run_dirs)}
    print(format_comparison_table(results, key=flags.FLAGS.lambda_key), end="")


def run() -> None:
    """The `oat-multi-exit-report` console script; `python -m oat_tf.reporting.multi_exit_report` runs it too.

    Defines the command's flags and runs `main` through `cli.run_main` (absl's
    `app.run`), which parses `sys.argv` and exits the process.
    """
    from absl import flags as absl_flags  # pylint: disable=import-outside-toplevel

    from oat_tf import cli  # pylint: disable=import-outside-toplevel

    absl_flags.DEFINE_list("run_dirs", [], "Multi-exit run directories, one table column each.")
    absl_flags.DEFINE_list("names", [], "Column names (default: the run directories' names).")
    absl_flags.DEFINE_string("lambda_key", None, "λ to show (default: each run's first).")
    cli.run_main(main, __name__)


if __name__ == "__main__":
    run()
