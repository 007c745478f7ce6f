"""Figures of a λ-grid evaluation, after the OAT paper's figures.

Each builder returns a `matplotlib.figure.Figure` on its own Agg canvas (no
pyplot global state, safe in threads and without a display); write it with
`atomic_files.write_figure` or through `report.write_report(figures=...)`.
Accuracies are plotted in percent.

- `ra_vs_sa_figure` (Fig. 4): RA against SA, one point per λ labelled with its
  λ (hollow markers for λ unseen in training), plus the PGD-AT frontier points
  (red, labelled with their training λ).
- `accuracy_vs_lambda_figure` (Fig. 8): SA against λ (top) and RA per attack
  and the worst case against λ (bottom), with the frontier points.
- `seen_vs_unseen_figure` (Fig. 5): SA and RA against λ, circles for λ in the
  training set, stars for unseen λ, red circles for PGD-AT runs.
- `saliency_figure` (Fig. 10-12): rows are images; the first column the image,
  then one saliency map per λ (the paper puts λ in rows; we transpose it so a
  long λ list stays readable).
- `bn_statistics_figure` (Fig. 2): running mean against running variance of
  the last batch norm, one series per run and statistics group.

Every artist that carries data has a label (`get_label()`): "OAT", "OAT, seen
λ", "OAT, unseen λ", "PGD-AT", "SA", "RA <attack>", "worst case", the series
label, or "_oat_line" for the line joining the OAT points (hidden from the
legend), so the plotted values can be read back from the figure.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from matplotlib import figure as figure_lib
from matplotlib.backends import backend_agg

from oat_tf.evaluation import bn_statistics
from oat_tf.evaluation import frontier as frontier_lib
from oat_tf.evaluation import results as results_lib

OAT_COLOR = "tab:blue"
FRONTIER_COLOR = "tab:red"


def _new_figure(width: float, height: float) -> figure_lib.Figure:
    fig = figure_lib.Figure(figsize=(width, height), dpi=100)
    backend_agg.FigureCanvasAgg(fig)
    return fig


def _percent(values) -> list:
    return [100.0 * float(v) for v in values]


def _sorted_frontier(frontier: Sequence[frontier_lib.FrontierPoint]) -> list:
    return sorted(frontier, key=lambda p: p.lambda_value)


def _frontier_label(point: frontier_lib.FrontierPoint) -> str:
    # An asterisk marks a point read under another attack or λ (see its notes).
    return f"λ={point.lambda_value:g}" + ("*" if point.notes else "")


def _robust_series(result: dict, attack: Optional[str]):
    label = results_lib.resolve_attack(result, attack)
    if label is None:
        return label, result["worst_case_accuracy"], "worst case (%)"
    return label, result["robust_accuracy"][label], f"RA under {label} (%)"


def _footnote(fig: figure_lib.Figure, frontier: Sequence[frontier_lib.FrontierPoint]) -> None:
    if any(p.notes for p in frontier):
        fig.text(
            0.01, 0.005, "* PGD-AT point read under another attack or λ (see evaluation.json)",
            fontsize=7, ha="left", va="bottom",
        )


def ra_vs_sa_figure(
    result: dict,
    *,
    seen_lambdas: Optional[Sequence[float]] = None,
    attack: Optional[str] = None,
    frontier: Sequence[frontier_lib.FrontierPoint] = (),
    title: Optional[str] = None,
) -> figure_lib.Figure:
    """RA against SA over λ, with the PGD-AT frontier (paper Fig. 4).

    Args:
        result: dict, an evaluation result.
        seen_lambdas: optional sequence of float, the training λ values;
            unseen λ get hollow markers.
        attack: optional str, the attack whose RA is plotted (default: the
            strongest; the worst case if the result has no attacks).
        frontier: sequence of FrontierPoint, PGD-AT points (read under the
            same attack).
        title: optional str, the axes title.

    Returns:
        matplotlib.figure.Figure.
    """
    results_lib.check_result(result)
    _, robust, y_label = _robust_series(result, attack)
    keys = results_lib.lambda_keys(result)
    sa = _percent(result["clean_accuracy"][k] for k in keys)
    ra = _percent(robust[k] for k in keys)

    fig = _new_figure(5.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(sa, ra, color=OAT_COLOR, linewidth=1.0, zorder=1, label="_oat_line")
    if seen_lambdas is None:
        ax.scatter(sa, ra, color=OAT_COLOR, zorder=2, label="OAT")
    else:
        seen = [results_lib.is_seen(lam, seen_lambdas) for lam in result["lambdas"]]
        for marker_seen, face, name in ((True, OAT_COLOR, "OAT, seen λ"), (False, "white", "OAT, unseen λ")):
            points = [(x, y) for x, y, s in zip(sa, ra, seen) if s == marker_seen]
            if points:
                xs, ys = zip(*points)
                ax.scatter(xs, ys, facecolors=face, edgecolors=OAT_COLOR, zorder=2, label=name)
    for key, x, y in zip(keys, sa, ra):
        ax.annotate(f"λ={key}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if frontier:
        points = _sorted_frontier(frontier)
        fsa = _percent(p.clean_accuracy for p in points)
        fra = _percent(p.robust_accuracy for p in points)
        ax.plot(fsa, fra, "o--", color=FRONTIER_COLOR, linewidth=1.0, zorder=2, label="PGD-AT")
        for point, x, y in zip(points, fsa, fra):
            ax.annotate(
                _frontier_label(point), (x, y), textcoords="offset points", xytext=(4, -10),
                fontsize=8, color=FRONTIER_COLOR,
            )
    if seen_lambdas is not None or frontier:
        ax.legend(loc="best")
    ax.set_xlabel("SA (%)")
    ax.set_ylabel(y_label)
    ax.set_title(title or "RA vs SA per λ")
    ax.grid(True, alpha=0.3)
    ax.margins(0.15)
    fig.tight_layout()
    _footnote(fig, frontier)
    return fig


def _finish_panels(fig, axes, frontier):
    """Grid, legend and margins on each panel of a λ figure, then the layout and footnote."""
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        ax.margins(0.08)
    fig.tight_layout()
    _footnote(fig, frontier)
    return fig


def accuracy_vs_lambda_figure(
    result: dict,
    *,
    frontier: Sequence[frontier_lib.FrontierPoint] = (),
    title: Optional[str] = None,
) -> figure_lib.Figure:
    """SA, and RA per attack with the worst case, against λ (paper Fig. 8).

    Args:
        result: dict, an evaluation result.
        frontier: sequence of FrontierPoint, plotted at their training λ.
        title: optional str, the figure title.

    Returns:
        matplotlib.figure.Figure with two axes: SA (top), RA (bottom).
    """
    results_lib.check_result(result)
    keys = results_lib.lambda_keys(result)
    lambdas = [float(lam) for lam in result["lambdas"]]
    points = _sorted_frontier(frontier)
    fig = _new_figure(6.0, 6.5)
    top = fig.add_subplot(2, 1, 1)
    bottom = fig.add_subplot(2, 1, 2, sharex=top)
    top.plot(lambdas, _percent(result["clean_accuracy"][k] for k in keys), "o-", color=OAT_COLOR, label="SA")
    for label, values in result["robust_accuracy"].items():
        bottom.plot(lambdas, _percent(values[k] for k in keys), "o-", label=f"RA {label}")
    bottom.plot(
        lambdas, _percent(result["worst_case_accuracy"][k] for k in keys), "s--", color="black",
        linewidth=1.0, markersize=4, label="worst case",
    )
    if points:
        flam = [p.lambda_value for p in points]
        top.plot(flam, _percent(p.clean_accuracy for p in points), "o", color=FRONTIER_COLOR, label="PGD-AT")
        attacks = sorted({p.attack for p in points})
        bottom.plot(
            flam, _percent(p.robust_accuracy for p in points), "o", color=FRONTIER_COLOR,
            label="PGD-AT " + "/".join(attacks),
        )
    top.set_ylabel("SA (%)")
    bottom.set_ylabel("RA (%)")
    bottom.set_xlabel("λ")
    top.set_title(title or "SA and RA against λ")
    return _finish_panels(fig, (top, bottom), frontier)


def seen_vs_unseen_figure(
    result: dict,
    seen_lambdas: Sequence[float],
    *,
    attack: Optional[str] = None,
    frontier: Sequence[frontier_lib.FrontierPoint] = (),
    title: Optional[str] = None,
) -> figure_lib.Figure:
    """SA and RA against λ, seen λ as circles, unseen as stars (paper Fig. 5).

    Args:
        result: dict, an evaluation result.
        seen_lambdas: sequence of float, the training λ values.
        attack: optional str, the attack whose RA is plotted (default: the
            strongest).
        frontier: sequence of FrontierPoint, PGD-AT runs at their λ.
        title: optional str, the figure title.

    Returns:
        matplotlib.figure.Figure with two axes: SA (left), RA (right).
    """
    results_lib.check_result(result)
    _, robust, y_label = _robust_series(result, attack)
    keys = results_lib.lambda_keys(result)
    lambdas = [float(lam) for lam in result["lambdas"]]
    seen = [results_lib.is_seen(lam, seen_lambdas) for lam in lambdas]
    points = _sorted_frontier(frontier)
    fig = _new_figure(10.0, 4.2)
    panels = (
        (fig.add_subplot(1, 2, 1), result["clean_accuracy"], "SA (%)", lambda p: p.clean_accuracy),
        (fig.add_subplot(1, 2, 2), robust, y_label, lambda p: p.robust_accuracy),
    )
    for ax, values, y_name, frontier_value in panels:
        ys = _percent(values[k] for k in keys)
        ax.plot(lambdas, ys, color="0.6", linewidth=1.0, zorder=1, label="_oat_line")
        for marker_seen, marker, color, name in (
            (True, "o", "tab:green", "OAT, seen λ"),
            (False, "*", "tab:olive", "OAT, unseen λ"),
        ):
            chosen = [(x, y) for x, y, s in zip(lambdas, ys, seen) if s == marker_seen]
            if chosen:
                xs, cy = zip(*chosen)
                size = 140 if marker == "*" else 50
                ax.scatter(xs, cy, marker=marker, s=size, color=color, zorder=3, label=name)
        if points:
            ax.scatter(
                [p.lambda_value for p in points], _percent(frontier_value(p) for p in points),
                marker="o", s=50, color=FRONTIER_COLOR, zorder=2, label="PGD-AT",
            )
        ax.set_xlabel("λ")
        ax.set_ylabel(y_name)
    fig.suptitle(title or "Seen and unseen λ")
    return _finish_panels(fig, [panel[0] for panel in panels], frontier)


def saliency_figure(
    images: np.ndarray,
    maps: np.ndarray,
    lambdas: Sequence[float],
    *,
    labels: Optional[Sequence[int]] = None,
    alignment: Optional[np.ndarray] = None,
    title: Optional[str] = None,
) -> figure_lib.Figure:
    """A grid of images and their saliency maps per λ (paper Fig. 10-12).

    Args:
        images: float array [N, H, W, C] in [0, 1], C in {1, 3}.
        maps: float array [N, L, H, W, C] in [0, 1], display-ready maps
            (`saliency.display_maps`), one per image and λ.
        lambdas: sequence of L floats, the λ of each column.
        labels: optional sequence of N ints, the true classes (row labels).
        alignment: optional array [N, L], written under each map.
        title: optional str, the figure title.

    Returns:
        matplotlib.figure.Figure: N rows, 1 + L columns; the images are
        drawn with `imshow` (gray colormap, range [0, 1], for C = 1).
    """
    images = np.asarray(images, np.float32)
    maps = np.asarray(maps, np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"`images` must have shape [N, H, W, C] with C in (1, 3). Received: images.shape={images.shape}"
        )
    if maps.shape != (images.shape[0], len(lambdas)) + images.shape[1:]:
        raise ValueError(
            "`maps` must have shape [N, L, H, W, C] for N images and L λ values. "
            f"Received: maps.shape={maps.shape}, images.shape={images.shape}, {len(lambdas)} λ values"
        )
    rows, cols = images.shape[0], 1 + len(lambdas)
    cell = 1.4
    fig = _new_figure(cell * cols + 0.4, cell * rows + 0.8)

    def show(ax, pixels):
        if pixels.shape[-1] == 1:
            ax.imshow(pixels[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(np.clip(pixels, 0.0, 1.0), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])

    for i in range(rows):
        ax = fig.add_subplot(rows, cols, i * cols + 1)
        show(ax, images[i])
        if i == 0:
            ax.set_title("image", fontsize=9)
        if labels is not None:
            ax.set_ylabel(f"class {int(labels[i])}", fontsize=8)
        for j, lam in enumerate(lambdas):
            ax = fig.add_subplot(rows, cols, i * cols + 2 + j)
            show(ax, maps[i, j])
            if i == 0:
                ax.set_title(f"λ={lam:g}", fontsize=9)
            if alignment is not None:
                ax.set_xlabel(f"{float(alignment[i, j]):.2f}", fontsize=7)
    fig.suptitle(
        title or "Jacobian saliency ∇ₓ CE(f(x, λ), y)"
        + (" (under each map: |cos(x, ∇ₓ)|)" if alignment is not None else ""),
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def bn_statistics_figure(
    series: Sequence[bn_statistics.RunningStatistics],
    *,
    title: Optional[str] = None,
) -> figure_lib.Figure:
    """Running mean against running variance of a batch norm (paper Fig. 2).

    Args:
        series: sequence of RunningStatistics, one scatter each (one point
            per channel), labelled with the series' label.
        title: optional str, the axes title.

    Returns:
        matplotlib.figure.Figure.
    """
    if not series:
        raise ValueError("`series` must hold at least one RunningStatistics. Received: series=[]")
    fig = _new_figure(6.0, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    for item in series:
        ax.scatter(item.mean, item.variance, s=8, alpha=0.7, label=item.label)
    layers = sorted({item.layer_name for item in series})
    ax.set_xlabel("running mean")
    ax.set_ylabel("running variance")
    ax.set_title(title or f"Last batch norm ({', '.join(layers)})", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8, markerscale=2)
    fig.tight_layout()
    return fig
