"""Evaluation of slimmable (OATS) networks over λ × width, its table and plot.

A width-grid result holds one λ-grid result (`evaluate_lambda_grid`'s format,
see `evaluation.results`) per width:

    {"widths": [0.5, 0.75, 1.0],
     "per_width": {"0.5": <λ-grid result>, "0.75": ..., "1.0": ...}}

Widths are keyed like λ (`robust_eval.lambda_key`). `format_width_table` gives
the λ × width table (SA and RA of one attack per width) and
`width_trade_off_figure` the paper's Fig. 6/9 plot: SA and RA against λ per
width, and RA against SA per width.

```python
grid = width_grid.evaluate_width_grid(network, dataset, [0.0, 1.0], attacks, seed=0)
print(width_grid.format_width_table(grid))
```
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence

from matplotlib import figure as figure_lib
from matplotlib.backends import backend_agg

from oat_tf import atomic_files
from oat_tf import operating_point
from oat_tf.evaluation import loading
from oat_tf.evaluation import results as results_lib
from oat_tf.evaluation import robust_eval
from oat_tf.export import saved_model as saved_model_lib
from oat_tf.layers import slimmable
from oat_tf.models import slimmable_network

WIDTH_COLORS = ("#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b")


# The key of a width in a width-grid result ("0.5", "1.0"): the format of every
# operating-point axis.
width_key = operating_point.value_key


def check_widths_of(model: Any, widths: Optional[Sequence[float]]) -> tuple:
    """Returns the widths to evaluate `model` at, sorted.

    Args:
        model: a network; a `SlimmableNetwork` runs at any of its widths,
            any other model only at 1.0.
        widths: sequence of float or None (None: every width of a slimmable
            network, [1.0] for any other model).

    Returns:
        tuple of float.

    Raises:
        ValueError: for a width the model does not have.
    """
    if isinstance(model, slimmable_network.SlimmableNetwork):
        if widths is None:
            return tuple(model.widths)
        return tuple(sorted({slimmable.check_width(float(w), model.widths) for w in widths}))
    if widths is None:
        return (slimmable.FULL_WIDTH,)
    if any(float(w) != slimmable.FULL_WIDTH for w in widths):
        raise ValueError(
            "`widths` other than 1.0 need a slimmable network (variants "
            f"{slimmable_network.SLIMMABLE_VARIANTS}). Received: widths={list(widths)} "
            f"for a {type(model).__name__}"
        )
    return (slimmable.FULL_WIDTH,)


def width_model(model: Any, width: float) -> Any:
    """Returns the model to evaluate at `width` (the network's view, or the model)."""
    if isinstance(model, slimmable_network.SlimmableNetwork):
        return model.width_model(width)
    return model


def evaluate_operating_points(
    model: Any,
    dataset: Any,
    points: Sequence[operating_point.OperatingPoint],
    attacks: Sequence[Any],
    *,
    seed: int = 0,
    show_progress: bool = False,
) -> Dict[str, Any]:
    """Measures SA and RA at each operating point (λ, width) of `points`.

    The points are grouped by width; each width runs `evaluate_lambda_grid`
    over its own λ values, so a width may have other λ than the next.

    Args:
        model: a `SlimmableNetwork` (any width it has), or any oat_tf model
            (width 1.0 only).
        dataset: tf.data.Dataset of (images, labels), as for
            `evaluate_lambda_grid`.
        points: sequence of `operating_point.OperatingPoint` (exit
            thresholds must be None: early exit is measured by
            `multi_exit_eval`).
        attacks: sequence of AttackConfig.
        seed: int, seed of the attacks (the same at every width).
        show_progress: bool, show a tqdm progress bar per width.

    Returns:
        dict with `widths` (sorted floats), `per_width` ({width key: λ-grid
        result}) and `operating_points` (the points, `OperatingPoint.to_json`).

    Raises:
        ValueError: for a width the model does not have, or a point with exit
            thresholds, before anything runs.
    """
    points = operating_point.check_points(points, "points")
    with_thresholds = [str(p) for p in points if p.exit_thresholds is not None]
    if with_thresholds:
        raise ValueError(
            "`points` of a λ × width evaluation must not carry exit thresholds (early exit is "
            f"evaluated by `multi_exit_eval.evaluate_multi_exit`). Received: {with_thresholds}"
        )
    by_width = operating_point.lambdas_by_width(points)
    widths = check_widths_of(model, list(by_width))
    per_width = {
        width_key(w): robust_eval.evaluate_lambda_grid(
            width_model(model, w), dataset, by_width[w], attacks, seed=seed, show_progress=show_progress,
        )
        for w in widths
    }
    return {
        "widths": list(widths),
        "per_width": per_width,
        "operating_points": [p.to_json() for p in points],
    }


def evaluate_width_grid(
    model: Any,
    dataset: Any,
    lambdas: Sequence[float],
    attacks: Sequence[Any],
    *,
    widths: Optional[Sequence[float]] = None,
    seed: int = 0,
    show_progress: bool = False,
) -> Dict[str, Any]:
    """Runs `evaluate_lambda_grid` at every width.

    Args:
        model: a `SlimmableNetwork` (or any oat_tf model, at width 1.0).
        dataset: tf.data.Dataset of (images, labels), as for
            `evaluate_lambda_grid`.
        lambdas: sequence of float.
        attacks: sequence of AttackConfig.
        widths: sequence of float or None (see `check_widths_of`).
        seed: int, seed of the attacks (the same at every width).
        show_progress: bool, show a tqdm progress bar per width.

    Returns:
        dict, as `evaluate_operating_points` over every (width, λ) pair.
    """
    points = operating_point.grid(list(lambdas), check_widths_of(model, widths))
    return evaluate_operating_points(
        model, dataset, points, attacks, seed=seed, show_progress=show_progress
    )


def check_width_grid(grid: Any) -> None:
    """Raises ValueError unless `grid` is a width-grid result."""
    if not isinstance(grid, dict) or "widths" not in grid or "per_width" not in grid:
        keys = sorted(grid) if isinstance(grid, dict) else type(grid).__name__
        raise ValueError(
            "`grid` must be the dict returned by `evaluate_width_grid`, with keys "
            f"['per_width', 'widths']. Received: grid with keys {keys}"
        )
    if [width_key(w) for w in grid["widths"]] != list(grid["per_width"]):
        raise ValueError(
            "`grid['per_width']` must hold one result per width, in the order of "
            f"`grid['widths']`. Received: widths={grid['widths']}, per_width keys "
            f"{list(grid['per_width'])}"
        )
    for result in grid["per_width"].values():
        results_lib.check_result(result)


def _attack_of(grid: dict, attack: Optional[str]) -> Optional[str]:
    """The attack whose RA is shown, or None for the per-sample worst case over all of them."""
    full = grid["per_width"][width_key(grid["widths"][-1])]
    if attack is None:
        evaluated = list(full["robust_accuracy"])
        # One attack is its own worst case: name it.
        return evaluated[0] if len(evaluated) == 1 else None
    if attack not in full["robust_accuracy"]:
        raise ValueError(
            f"`attack` must be one of the evaluated attacks {list(full['robust_accuracy'])}. "
            f"Received: attack={attack!r}"
        )
    return attack


def _ra_name(attack: Optional[str]) -> str:
    if attack is not None:
        return f"RA {attack}"
    return "worst-case RA"


def _worst_case_caption(grid: dict, attack: Optional[str]) -> str:
    """A line naming the attacks of a worst-case column (empty for one attack)."""
    if attack is not None:
        return ""
    attacks = list(grid["per_width"][width_key(grid["widths"][-1])]["robust_accuracy"])
    if not attacks:
        return "\nNo attack was evaluated: the worst-case RA equals SA.\n"
    return "\nWorst-case RA: per sample, the worst over " + ", ".join(attacks) + ".\n"


def _robust(result: dict, attack: Optional[str]) -> dict:
    return result["worst_case_accuracy"] if attack is None else result["robust_accuracy"][attack]


def format_width_table(grid: dict, *, attack: Optional[str] = None) -> str:
    """Formats a width-grid result as one λ × width Markdown table.

    Args:
        grid: dict, as returned by `evaluate_width_grid`.
        attack: optional str, the attack label of the RA columns (default:
            the per-sample worst case over every evaluated attack, named in a
            line under the table; a single attack is named in the header).

    Returns:
        str: one row per λ, an SA and an RA column per width, in percent.
    """
    check_width_grid(grid)
    attack = _attack_of(grid, attack)
    ra_name = _ra_name(attack)
    keys = [width_key(w) for w in grid["widths"]]
    header = ["λ"]
    for key in keys:
        header += [f"SA α={key} (%)", f"{ra_name} α={key} (%)"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    first = grid["per_width"][keys[0]]
    for lam_key in results_lib.lambda_keys(first):
        row = [lam_key]
        for key in keys:
            result = grid["per_width"][key]
            row.append(f"{100.0 * result['clean_accuracy'][lam_key]:.2f}")
            row.append(f"{100.0 * _robust(result, attack)[lam_key]:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n" + _worst_case_caption(grid, attack)


def width_trade_off_figure(
    grid: dict, *, attack: Optional[str] = None, title: Optional[str] = None
) -> figure_lib.Figure:
    """SA and RA against λ per width, and RA against SA per width (paper Fig. 6/9).

    Args:
        grid: dict, as returned by `evaluate_width_grid`.
        attack: optional str, the attack of the RA (default: the per-sample
            worst case over every evaluated attack).
        title: optional str, the figure's title.

    Returns:
        matplotlib.figure.Figure with two axes.
    """
    check_width_grid(grid)
    attack = _attack_of(grid, attack)
    ra_name = _ra_name(attack)
    fig = figure_lib.Figure(figsize=(11.0, 4.5), dpi=100)
    backend_agg.FigureCanvasAgg(fig)
    by_lambda = fig.add_subplot(1, 2, 1)
    ra_vs_sa = fig.add_subplot(1, 2, 2)
    for index, width in enumerate(grid["widths"]):
        key = width_key(width)
        result = grid["per_width"][key]
        lam_keys = results_lib.lambda_keys(result)
        sa = [100.0 * result["clean_accuracy"][k] for k in lam_keys]
        ra = [100.0 * _robust(result, attack)[k] for k in lam_keys]
        color = WIDTH_COLORS[index % len(WIDTH_COLORS)]
        by_lambda.plot(result["lambdas"], sa, "o-", color=color, label=f"SA, α={key}")
        by_lambda.plot(result["lambdas"], ra, "s--", color=color, label=f"RA, α={key}")
        ra_vs_sa.plot(sa, ra, "o-", color=color, label=f"α={key}")
        for lam_key, x, y in zip(lam_keys, sa, ra):
            ra_vs_sa.annotate(f"λ={lam_key}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    by_lambda.set_xlabel("λ")
    by_lambda.set_ylabel("accuracy (%)")
    by_lambda.set_title(f"SA and {ra_name} against λ per width")
    by_lambda.legend(loc="best", fontsize=8)
    by_lambda.grid(True, alpha=0.3)
    ra_vs_sa.set_xlabel("SA (%)")
    ra_vs_sa.set_ylabel(f"{ra_name} (%)")
    ra_vs_sa.set_title("RA vs SA per width")
    ra_vs_sa.legend(loc="best", fontsize=8)
    ra_vs_sa.grid(True, alpha=0.3)
    ra_vs_sa.margins(0.15)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def write_width_report(
    grid: dict,
    out_dir: str,
    *,
    prefix: str,
    attack: Optional[str] = None,
    title: Optional[str] = None,
) -> Dict[str, str]:
    """Writes `<prefix>.json` (the grid), `<prefix>.md` (the table) and `<prefix>.png` (the plot).

    Args:
        grid: dict, as returned by `evaluate_width_grid` (may hold more keys).
        out_dir: str, local directory, created if missing.
        prefix: str, file name prefix.
        attack: optional str, the attack of the RA (default: the per-sample worst case).
        title: optional str, the Markdown page's and the plot's title.

    Returns:
        dict with the written paths: "json", "markdown", "plot".
    """
    check_width_grid(grid)
    attack = _attack_of(grid, attack)
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "json": os.path.join(out_dir, f"{prefix}.json"),
        "markdown": os.path.join(out_dir, f"{prefix}.md"),
        "plot": os.path.join(out_dir, f"{prefix}.png"),
    }
    atomic_files.write_figure(paths["plot"], width_trade_off_figure(grid, attack=attack, title=title))
    markdown = f"# {title or 'SA and RA per λ and width'}\n\n" + format_width_table(grid, attack=attack)
    markdown += f"\n![SA/RA per width]({os.path.basename(paths['plot'])})\n"
    atomic_files.write_text(paths["markdown"], markdown)
    atomic_files.write_json(paths["json"], grid)
    return paths


def is_slimmable(model: Any, saved_model: Optional[str] = None) -> bool:
    """Whether a model has widths to choose from.

    Args:
        model: the loaded network, or a `SavedModelClassifier`.
        saved_model: str or None, the SavedModel directory `model` was loaded
            from (its signatures give its widths).

    Returns:
        True for a `SlimmableNetwork`, or a SavedModel with more than one
        width signature.
    """
    if saved_model:
        return len(saved_model_lib.signature_widths(saved_model)) > 1
    return isinstance(model, slimmable_network.SlimmableNetwork)


def select_widths(model: Any, widths: Optional[Sequence[Any]], saved_model: Optional[str]):
    """Returns [(width, model at that width)] for `--widths`, sorted by width.

    Args:
        model: the loaded network, or a `SavedModelClassifier` (full width).
        widths: the `--widths` strings (or floats), or None for every width
            of the model.
        saved_model: str or None, the `--saved_model` directory (its
            signatures give its widths).

    Returns:
        list of (float, model) pairs.

    Raises:
        ValueError: for a width the model does not have.
    """
    requested = None
    if widths is not None:
        try:
            requested = [float(w) for w in widths]
        except ValueError:
            raise ValueError(f"widths must be numbers. Received: widths={list(widths)}") from None
    if saved_model:
        available = saved_model_lib.signature_widths(saved_model)
        by_width = {w: name for name, w in available.items()}
        chosen = sorted(by_width) if requested is None else sorted(set(requested))
        missing = [w for w in chosen if w not in by_width]
        if missing:
            raise ValueError(
                f"the SavedModel has the widths {sorted(by_width)} (one signature each). "
                f"Received: widths={chosen}"
            )
        return [
            (w, model if by_width[w] == saved_model_lib.SIGNATURE_KEY
             else loading.SavedModelClassifier(saved_model, signature_name=by_width[w]))
            for w in chosen
        ]
    chosen = check_widths_of(model, requested)
    return [(w, width_model(model, w)) for w in chosen]
