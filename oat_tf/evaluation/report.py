"""Reports of a λ-grid evaluation: Markdown table, JSON, SA-RA plot, TensorBoard.

Every function takes the dict returned by
`robust_eval.evaluate_lambda_grid`:

- `format_table(result)`: a Markdown table, one row per λ, with SA, RA per
  attack and the worst case, in percent.
- `write_report(result, out_dir)`: `<prefix>.json`, `<prefix>.md` and
  `<prefix>_ra_vs_sa.png` (RA of the strongest attack against SA, each point
  labelled with its λ, as in the OAT paper's Fig. 4). Every file is written to
  a temporary file in `out_dir` and renamed over the target with `os.replace`,
  so a reader never sees a half-written file and a failure leaves the previous
  file untouched. Local file systems only.
- `write_scalars(result, summary_writer, step)`: `sa/lambda_<λ>`,
  `ra_<attack>/lambda_<λ>` and `worst_case/lambda_<λ>` scalars.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from typing import Any, Callable, Dict, IO, Optional, Sequence

import tensorflow as tf
from absl import logging
from matplotlib.backends import backend_agg
from matplotlib import figure as figure_lib

from oat_tf import config as config_lib

_RESULT_KEYS = (
    "num_examples",
    "lambdas",
    "clean_accuracy",
    "robust_accuracy",
    "worst_case_accuracy",
)


def _check_result(result: Any) -> None:
    if not isinstance(result, dict) or any(k not in result for k in _RESULT_KEYS):
        keys = sorted(result) if isinstance(result, dict) else type(result).__name__
        raise ValueError(
            "`result` must be the dict returned by `evaluate_lambda_grid`, with keys "
            f"{list(_RESULT_KEYS)}. Received: result with keys {keys}"
        )


def _lambda_keys(result: dict) -> list:
    # The result's own keys, in the order of `result["lambdas"]`.
    keys = list(result["clean_accuracy"])
    if len(keys) != len(result["lambdas"]):
        raise ValueError(
            "`result` must have one clean accuracy per λ. Received: result with "
            f"lambdas={result['lambdas']} and clean_accuracy keys {keys}"
        )
    return keys


def _is_seen(lam: float, seen: Sequence[float]) -> bool:
    return any(math.isclose(lam, s, rel_tol=0.0, abs_tol=1e-9) for s in seen)


def _percent(value: float) -> str:
    return f"{100.0 * value:.2f}"


def strongest_attack(result: dict) -> Optional[str]:
    """Returns the name of the attack with the lowest RA averaged over λ.

    Args:
        result: dict, as returned by `evaluate_lambda_grid`.

    Returns:
        str, the attack name (the first one on ties), or None without attacks.
    """
    _check_result(result)
    robust = result["robust_accuracy"]
    if not robust:
        return None
    return min(robust, key=lambda label: sum(robust[label].values()) / len(robust[label]))


def format_table(result: dict, seen_lambdas: Optional[Sequence[float]] = None) -> str:
    """Formats a λ-grid evaluation as a Markdown table.

    Args:
        result: dict, as returned by `evaluate_lambda_grid`.
        seen_lambdas: optional sequence of float, the λ values used in
            training; adds a column marking each row "seen" or "unseen".

    Returns:
        str, the table: a header, a separator and one row per λ, with columns
        λ, (seen), SA, RA per attack and worst case, accuracies in percent
        with two decimals.
    """
    _check_result(result)
    if seen_lambdas is not None:
        seen_lambdas = config_lib.check_lambda_values("seen_lambdas", seen_lambdas)
    labels = list(result["robust_accuracy"])
    header = ["λ"]
    if seen_lambdas is not None:
        header.append("seen")
    header += ["SA (%)"] + [f"RA {label} (%)" for label in labels] + ["worst case (%)"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for lam, key in zip(result["lambdas"], _lambda_keys(result)):
        row = [key]
        if seen_lambdas is not None:
            row.append("seen" if _is_seen(lam, seen_lambdas) else "unseen")
        row.append(_percent(result["clean_accuracy"][key]))
        row += [_percent(result["robust_accuracy"][label][key]) for label in labels]
        row.append(_percent(result["worst_case_accuracy"][key]))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _describe_attack(attack: dict) -> str:
    parts = [f"ε = {attack['epsilon']:.4g} ({attack['epsilon'] * 255:.3g}/255)"]
    if attack.get("name") != "fgsm":
        parts.append(f"step {attack['step_size']:.4g}")
        parts.append(f"{attack['num_steps']} steps")
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
    lines.append(format_table(result, seen_lambdas=seen_lambdas))
    lines.append(
        "SA: clean images. RA: adversarial images, the attack run against the "
        "model at the same λ. Worst case: a sample counts only if it is "
        "classified correctly clean and under every attack."
    )
    return "\n".join(lines) + "\n"


def _plot_ra_vs_sa(result: dict, seen_lambdas, title: Optional[str]) -> figure_lib.Figure:
    label = strongest_attack(result)
    if label is None:
        robust, y_label = result["worst_case_accuracy"], "worst case (%)"
    else:
        robust, y_label = result["robust_accuracy"][label], f"RA under {label} (%)"
    keys = _lambda_keys(result)
    sa = [100.0 * result["clean_accuracy"][k] for k in keys]
    ra = [100.0 * robust[k] for k in keys]

    fig = figure_lib.Figure(figsize=(5.5, 4.5), dpi=100)
    backend_agg.FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(sa, ra, color="tab:blue", linewidth=1.0, zorder=1)
    if seen_lambdas is None:
        ax.scatter(sa, ra, color="tab:blue", zorder=2, label="OAT")
    else:
        seen = [_is_seen(lam, seen_lambdas) for lam in result["lambdas"]]
        for marker_seen, face, name in ((True, "tab:blue", "seen λ"), (False, "white", "unseen λ")):
            points = [(x, y) for x, y, s in zip(sa, ra, seen) if s == marker_seen]
            if points:
                xs, ys = zip(*points)
                ax.scatter(xs, ys, facecolors=face, edgecolors="tab:blue", zorder=2, label=name)
        ax.legend(loc="best")
    for key, x, y in zip(keys, sa, ra):
        ax.annotate(f"λ={key}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("SA (%)")
    ax.set_ylabel(y_label)
    ax.set_title(title or "RA vs SA per λ")
    ax.grid(True, alpha=0.3)
    ax.margins(0.15)
    fig.tight_layout()
    return fig


def _atomic_write(path: str, write_fn: Callable[[IO], None], *, binary: bool) -> None:
    """Writes `path` through a temporary sibling file and `os.replace`."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp_path = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        mode, encoding = ("wb", None) if binary else ("w", "utf-8")
        with os.fdopen(fd, mode, encoding=encoding) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp_path, 0o644)
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp_path)
        raise


def write_report(
    result: dict,
    out_dir: str,
    *,
    prefix: str = "eval",
    seen_lambdas: Optional[Sequence[float]] = None,
    title: Optional[str] = None,
) -> Dict[str, str]:
    """Writes the JSON, Markdown and RA-vs-SA plot of an evaluation.

    Args:
        result: dict, as returned by `evaluate_lambda_grid`.
        out_dir: str, local directory, created if missing.
        prefix: str, file name prefix (no path separators).
        seen_lambdas: optional sequence of float, the training λ values;
            marks rows of the table and points of the plot as seen/unseen.
        title: optional str, title of the Markdown page and of the plot.

    Returns:
        dict with keys "json", "markdown" and "plot", the written paths.
    """
    _check_result(result)
    if not prefix or os.sep in prefix or (os.altsep and os.altsep in prefix):
        raise ValueError(
            f"`prefix` must be a non-empty file name without separators. Received: prefix={prefix!r}"
        )
    if seen_lambdas is not None:
        seen_lambdas = config_lib.check_lambda_values("seen_lambdas", seen_lambdas)
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "json": os.path.join(out_dir, f"{prefix}.json"),
        "markdown": os.path.join(out_dir, f"{prefix}.md"),
        "plot": os.path.join(out_dir, f"{prefix}_ra_vs_sa.png"),
    }

    def write_json(f: IO) -> None:
        json.dump(result, f, indent=2, allow_nan=False)
        f.write("\n")

    _atomic_write(paths["json"], write_json, binary=False)
    markdown = _format_markdown(result, seen_lambdas, title)
    _atomic_write(paths["markdown"], lambda f: f.write(markdown), binary=False)
    fig = _plot_ra_vs_sa(result, seen_lambdas, title)
    _atomic_write(paths["plot"], lambda f: fig.savefig(f, format="png"), binary=True)
    logging.info("Wrote evaluation report: %s", ", ".join(paths.values()))
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
    _check_result(result)
    with summary_writer.as_default():
        for key in _lambda_keys(result):
            tf.summary.scalar(f"sa/lambda_{key}", result["clean_accuracy"][key], step=step)
            for label, values in result["robust_accuracy"].items():
                tf.summary.scalar(f"ra_{label}/lambda_{key}", values[key], step=step)
            tf.summary.scalar(
                f"worst_case/lambda_{key}", result["worst_case_accuracy"][key], step=step
            )
    summary_writer.flush()
