"""Reports of a λ-grid evaluation: JSON, Markdown page, plots, TensorBoard scalars.

Every function takes the dict returned by
`robust_eval.evaluate_lambda_grid` (see `results`):

- `write_report(result, out_dir)`: `<prefix>_ra_vs_sa.png` (RA against SA,
  each point labelled with its λ, as in the OAT paper's Fig. 4; with the
  PGD-AT frontier when given), one `<prefix>_<name>.png` per extra figure,
  then `<prefix>.json` (the result plus `"plots"`: {name: PNG file name,
  relative to `out_dir`}) and `<prefix>.md` (the table and the plots). Every
  file is written atomically (`atomic_files`): a reader never sees a
  half-written file and a failure leaves the previous file untouched. Local
  file systems only.
- `write_scalars(result, summary_writer, step)`: `sa/lambda_<λ>`,
  `ra_<attack>/lambda_<λ>` and `worst_case/lambda_<λ>` scalars.
"""

from __future__ import annotations

import os
from typing import Dict, Mapping, Optional, Sequence

import tensorflow as tf
from absl import logging
from matplotlib import figure as figure_lib

from oat_tf import atomic_files
from oat_tf import config as config_lib
from oat_tf.evaluation import frontier as frontier_lib
from oat_tf.evaluation import results as results_lib
from oat_tf.evaluation import tables
from oat_tf.reporting import plots

RA_VS_SA = "ra_vs_sa"


def _describe_attack(attack: dict) -> str:
    parts = [f"ε = {attack['epsilon']:.4g} ({attack['epsilon'] * 255:.3g}/255)"]
    if attack.get("name") == "square":
        parts.append(f"{attack['num_queries']} queries, p_init {attack['p_init']:g}")
    elif attack.get("name") in ("apgd_ce", "apgd_dlr", "apgd_t", "fab_t"):
        parts.append(f"{attack['num_steps']} steps")
    elif attack.get("name") != "fgsm":
        parts.append(f"step {attack['step_size']:.4g}")
        parts.append(f"{attack['num_steps']} steps")
    if attack.get("name") in ("apgd_t", "fab_t"):
        parts.append(f"{attack.get('num_target_classes', 9)} target classes")
    if attack.get("ensemble"):
        parts.append(
            f"member of {attack['ensemble']}: runs only on the samples its earlier members left "
            "robust, RA after it and them"
        )
    if attack.get("name") == "pgd":
        parts.append("random start" if attack.get("random_start") else "no random start")
    if attack.get("num_restarts", 1) > 1:
        parts.append(f"{attack['num_restarts']} restarts")
    if attack.get("name") == "mi_fgsm":
        parts.append(f"decay {attack['decay']:g}")
    if attack.get("targeted"):
        parts.append("targeted")
    return f"- **{attack['label']}** ({attack['name']}): " + ", ".join(parts)


def _format_markdown(result: dict, seen_lambdas, title: Optional[str]) -> str:
    lines = [f"# {title or 'Clean and robust accuracy per λ'}", ""]
    seed = result.get("seed")
    lines.append(
        f"{result['num_examples']} examples"
        + (f", attack seed {seed}" if seed is not None else "")
        + ". Accuracies in percent."
    )
    lines.append("")
    if result.get("attacks"):
        lines.append("Attacks:")
        lines += [_describe_attack(a) for a in result["attacks"]]
        lines.append("")
    lines.append(tables.format_table(result, seen_lambdas=seen_lambdas))
    lines.append(
        "SA: clean images. RA worst case, the robustness this evaluation "
        "stands behind: a sample counts only if it is classified correctly "
        "clean and under every attack. RA of each attack: its adversarial "
        "images, the attack run against the model at the same λ."
    )
    return "\n".join(lines) + "\n"


def _format_frontier(frontier: Sequence[frontier_lib.FrontierPoint]) -> str:
    lines = [
        "PGD-AT frontier (runs trained at one fixed λ):",
        "",
        "| run | λ | SA (%) | RA (%) | attack | notes |",
        "|---|---:|---:|---:|---|---|",
    ]
    for point in sorted(frontier, key=lambda p: p.lambda_value):
        lines.append(
            f"| {point.name} | {point.lambda_value:g} | {tables.format_percent(point.clean_accuracy)} | "
            f"{tables.format_percent(point.robust_accuracy)} | {point.attack} | {'; '.join(point.notes)} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    result: dict,
    out_dir: str,
    *,
    prefix: str = "eval",
    seen_lambdas: Optional[Sequence[float]] = None,
    title: Optional[str] = None,
    attack: Optional[str] = None,
    frontier: Sequence[frontier_lib.FrontierPoint] = (),
    figures: Optional[Mapping[str, figure_lib.Figure]] = None,
) -> Dict[str, object]:
    """Writes the plots, JSON and Markdown of an evaluation.

    Args:
        result: dict, as returned by `evaluate_lambda_grid`.
        out_dir: str, local directory, created if missing.
        prefix: str, file name prefix (no path separators).
        seen_lambdas: optional sequence of float, the training λ values;
            marks rows of the table and points of the plot as seen/unseen.
        title: optional str, title of the Markdown page and of the plot.
        attack: optional str, the attack of the RA-vs-SA plot (default: the
            strongest).
        frontier: sequence of FrontierPoint, PGD-AT points added to the
            RA-vs-SA plot and listed in the Markdown.
        figures: optional mapping {name: Figure}, further plots, each written
            to `<prefix>_<name>.png` (names: letters, digits, "_", "-").

    Returns:
        dict: "json", "markdown" and "plot" (the RA-vs-SA PNG), the written
        paths, and "plots", {name: path} of every PNG including "ra_vs_sa".
    """
    results_lib.check_result(result)
    if not prefix or os.sep in prefix or (os.altsep and os.altsep in prefix):
        raise ValueError(
            f"`prefix` must be a non-empty file name without separators. Received: prefix={prefix!r}"
        )
    figures = dict(figures or {})
    for name in figures:
        if name == RA_VS_SA or not name or not all(c.isalnum() or c in "_-" for c in name):
            raise ValueError(
                "`figures` names must be non-empty, made of letters, digits, '_' and '-', and "
                f"not {RA_VS_SA!r}. Received: figures with names {list(figures)}"
            )
    if seen_lambdas is not None:
        seen_lambdas = config_lib.check_lambda_values("seen_lambdas", seen_lambdas)
    os.makedirs(out_dir, exist_ok=True)
    figures = {
        RA_VS_SA: plots.ra_vs_sa_figure(
            result, seen_lambdas=seen_lambdas, attack=attack, frontier=frontier, title=title
        ),
        **figures,
    }
    file_names = {name: f"{prefix}_{name}.png" for name in figures}
    plot_paths = {name: os.path.join(out_dir, file_name) for name, file_name in file_names.items()}
    for name, fig in figures.items():
        atomic_files.write_figure(plot_paths[name], fig)
    paths = {
        "json": os.path.join(out_dir, f"{prefix}.json"),
        "markdown": os.path.join(out_dir, f"{prefix}.md"),
        "plot": plot_paths[RA_VS_SA],
        "plots": plot_paths,
    }
    atomic_files.write_json(paths["json"], {**result, "plots": file_names})
    markdown = _format_markdown(result, seen_lambdas, title)
    if frontier:
        markdown += "\n" + _format_frontier(frontier)
    markdown += "\n" + "\n".join(f"![{name}]({file_name})" for name, file_name in file_names.items()) + "\n"
    atomic_files.write_text(paths["markdown"], markdown)
    logging.info("Wrote evaluation report: %s, %s, %s", paths["json"], paths["markdown"], ", ".join(plot_paths.values()))
    return paths


def write_scalars(result: dict, summary_writer: tf.summary.SummaryWriter, step: int) -> None:
    """Writes SA, RA and worst-case accuracy per λ as TensorBoard scalars.

    Tags: `sa/lambda_<λ>`, `ra_<attack>/lambda_<λ>` and
    `worst_case/lambda_<λ>`, values as fractions in [0, 1].

    Args:
        result: dict, as returned by `evaluate_lambda_grid`.
        summary_writer: tf.summary.SummaryWriter to write to.
        step: int, the summary step (e.g. the epoch or training step).
    """
    results_lib.check_result(result)
    with summary_writer.as_default():
        for key in results_lib.lambda_keys(result):
            tf.summary.scalar(f"sa/lambda_{key}", result["clean_accuracy"][key], step=step)
            for label, values in result["robust_accuracy"].items():
                tf.summary.scalar(f"ra_{label}/lambda_{key}", values[key], step=step)
            tf.summary.scalar(
                f"worst_case/lambda_{key}", result["worst_case_accuracy"][key], step=step
            )
    summary_writer.flush()
