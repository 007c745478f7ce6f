"""The report of a study (`oat_tf.sweep`), regenerated from its results JSON alone.

    python -m oat_tf.reporting.study_report --results=docs/results/oat_mnist/results.json

writes `docs/results/oat_mnist.md` and its plots in `docs/results/oat_mnist/`.
The Markdown depends only on the JSON, so rerunning the command on committed
results regenerates the same file byte for byte (`--check` compares instead of
writing and fails on any difference). Accuracies are in percent.

Every report starts with the study's command, machine, wall time and a table of
its runs (architecture, variant, training λ, attack, budget). Then, by the
study's `report` layout:

- "oat" (the OAT paper's claims, SPEC §1): the PGD-AT frontier (runs trained at
  one fixed λ); each λ-conditioned run per λ with its difference to the
  dedicated PGD-AT model at the same λ; a summary per run (λ of S1 and unseen λ
  within 1.5 points of the dedicated model in SA and RA, the SA and RA range
  over λ: a collapsed single-BN model has a small range); the RA-vs-SA plot with
  the frontier (Fig. 4) and SA/RA against λ.
- "mixture_bn" (SPEC §4): one row per run and further evaluation (depth, BN,
  clean fraction, BN used at test time, moving or batch statistics) and the
  four comparisons of the issue, each with its difference and a two-sample
  z-score; SA and RA against depth for adversarial and standard training.
- "width" (OATS, SPEC §2): per width, the λ table of every run; at each width
  the most robust and the most accurate OATS point against PGD-ATS at the
  same λ; RA against SA per width.

"RA" in the comparisons is the per-sample worst case over the evaluated
attacks (a sample counts only if it survives every attack), the strictest of
the measured robust accuracies.

A study whose headline runs were repeated with further training seeds
(`--repeat_seeds` / `--repeat_runs` of the sweep) keeps its tables on the
first seed and ends with "Spread over seeds": the layout's headline figures
computed on each seed's copy of the repeated runs, as mean (min–max), with
what the repeats cost.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
from matplotlib import figure as figure_lib
from matplotlib.backends import backend_agg

from oat_tf import atomic_files
from oat_tf import cli
from oat_tf import cpu_kernels
from oat_tf.reporting import pages

WITHIN_POINTS = 1.5
S1 = (0.0, 0.1, 0.2, 0.3, 0.4, 1.0)
_RESNET = re.compile(r"resnet(\d+)")


# --- reading results -------------------------------------------------------


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{100.0 * value:.1f}"


def _signed(value: Optional[float]) -> str:
    return "–" if value is None else f"{100.0 * value:+.1f}"


def _lambda_key(result: Dict[str, Any], lam: float) -> Optional[str]:
    for key in result.get("clean_accuracy", {}):
        if abs(float(key) - lam) < 1e-9:
            return key
    return None


def attack_labels(result: Dict[str, Any]) -> List[str]:
    """The attack labels of a result, in evaluation order."""
    return [a["label"] for a in result.get("attacks", [])] or sorted(result.get("robust_accuracy", {}))


def accuracy(result: Dict[str, Any], lam: float, metric: str) -> Optional[float]:
    """One accuracy of a λ-grid result.

    Args:
        result: dict, an `evaluate_lambda_grid` result.
        lam: float, the λ.
        metric: str, "SA", "RA" (the per-sample worst case over the attacks)
            or an attack label (its RA).

    Returns:
        float in [0, 1], or None when the result lacks it.
    """
    key = _lambda_key(result, lam)
    if key is None:
        return None
    if metric == "SA":
        return result["clean_accuracy"][key]
    if metric == "RA":
        return result.get("worst_case_accuracy", {}).get(key)
    return result.get("robust_accuracy", {}).get(metric, {}).get(key)


def _lambdas(result: Dict[str, Any]) -> List[float]:
    return sorted(float(k) for k in result.get("clean_accuracy", {}))


def _config(run: Dict[str, Any]) -> Dict[str, Any]:
    return run["config"]


def is_frontier_run(run: Dict[str, Any]) -> bool:
    """A PGD-AT (or PGD-ATS) run: one fixed λ."""
    return _config(run)["lambda_sampling"]["sampling"] == "fixed"


def fixed_lambda(run: Dict[str, Any]) -> float:
    return float(_config(run)["lambda_sampling"]["values"][0])


def training_lambdas(run: Dict[str, Any]) -> List[float]:
    return [float(v) for v in _config(run)["lambda_sampling"]["values"]]


def _train(run: Dict[str, Any]) -> Dict[str, Any]:
    return _config(run).get("train", {})


def _encoding(run: Dict[str, Any]) -> str:
    model = _config(run)["model"]
    if model["variant"] in ("plain", "ats", "mixture_bn"):
        return "–"
    encoder = model["encoder"]
    names = {"rand": "RO", "dct": "DCT", "onehot": "one-hot"}
    multiplier = encoder.get("film_hidden_multiplier", 1)
    film = "" if multiplier == 1 else f", FiLM hidden ×{multiplier}"
    if encoder["scheme"] == "none":
        return "none" + film
    return f"{names.get(encoder['scheme'], encoder['scheme'])}-{encoder['dim']}{film}"


def _lambda_text(run: Dict[str, Any]) -> str:
    if _train(run).get("objective", "oat") == "mixed_batch":
        return "–"
    sampling = _config(run)["lambda_sampling"]
    values = ", ".join(f"{float(v):g}" for v in sampling["values"])
    if sampling["sampling"] == "fixed":
        return f"fixed {values}"
    return f"{sampling['sampling']} {{{values}}}"


def _attack_text(attack: Dict[str, Any]) -> str:
    if attack["name"] in ("pgd", "mi_fgsm"):
        return f"{attack['name'].upper()}-{attack['num_steps']}, ε {attack['epsilon']:g}, step {attack['step_size']:g}"
    return f"{attack['name']}, ε {attack['epsilon']:g}"


def _training_attack_text(run: Dict[str, Any]) -> str:
    train = _train(run)
    if train.get("objective", "oat") == "mixed_batch" and float(train.get("clean_fraction", 0.5)) >= 1.0:
        return "none (standard training)"
    if is_frontier_run(run) and fixed_lambda(run) == 0.0:
        return "none (λ = 0)"
    return _attack_text(_config(run)["train_attack"])


def _objective_text(run: Dict[str, Any]) -> str:
    train = _train(run)
    if train.get("objective", "oat") == "mixed_batch":
        return f"mixed batch, clean {float(train.get('clean_fraction', 0.5)):g}"
    return "OAT (λ-weighted)"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60.0:.1f}"


def _run_filters(run: Dict[str, Any]) -> str:
    filters = _config(run)["model"].get("filters") or []
    return "/".join(str(f) for f in filters) if filters else "default"


# --- common sections -------------------------------------------------------


def _machine_text(machine: Dict[str, Any]) -> str:
    return (
        f"{machine.get('platform', '?')}, {machine.get('cpu_count', '?')} CPU cores, "
        f"{machine.get('gpus', 0)} GPUs; TensorFlow {machine.get('tensorflow', '?')}, "
        f"Keras {machine.get('keras', '?')}.{cpu_kernels.kernels_text(machine)}"
    )


def _machines_line(results: Dict[str, Any]) -> str:
    """The page's machine line: one machine, or each machine a study's jobs ran on."""
    machines = results.get("machines")
    if not machines:
        return f"- Machine: {_machine_text(results.get('machine') or {})}"
    parts = [
        f"{_machine_text(m['machine'] or {})} ({m['jobs']} job{'' if m['jobs'] == 1 else 's'})" for m in machines
    ]
    return f"- Machines (the jobs ran on {len(machines)}): " + "; ".join(parts)


def _header(results: Dict[str, Any], results_path: str) -> List[str]:
    total = float(results.get("total_wall_seconds", 0.0))
    lines = [
        f"# Study `{results['study']}`",
        "",
        results.get("description", ""),
        "",
        f"- Rerun the study: `{results['command']}` (finished runs are skipped, a killed one resumes).",
        f"- Regenerate this page from the results: "
        f"`python -m oat_tf.reporting.study_report --results={results_path}`.",
        _machines_line(results),
        f"- Wall time of the whole study: {total / 3600.0:.2f} h ({_minutes(total)} min, training "
        "and evaluation of every run, summed).",
        "- Accuracies in percent. RA is the per-sample worst case over the evaluated attacks "
        "(a test image counts only if it survives every attack); the per-attack RAs are in the "
        "tables.",
    ]
    if results.get("missing"):
        lines.append(f"- **Not finished:** {', '.join(results['missing'])}.")
    lines += ["", "## Runs", ""]
    lines += [
        "| run | architecture | channels | variant | objective | training λ | encoding | training attack "
        "| epochs | training images | test images | wall (min) |",
        "|---|---|---|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for run in results["runs"]:
        config = _config(run)
        model = config["model"]
        lines.append(
            f"| {run['name']} | {model['architecture']} | {_run_filters(run)} | {model['variant']} | "
            f"{_objective_text(run)} | {_lambda_text(run)} | {_encoding(run)} | "
            f"{_training_attack_text(run)} | {_train(run).get('epochs', '?')} | "
            f"{config['data'].get('num_train_examples') or 'all'} | "
            f"{run['test_eval'].get('num_examples', '?')} | {_minutes(run['wall_seconds'])} |"
        )
    lines.append("")
    attacks = _first_attacks(results)
    if attacks:
        lines.append(
            "Evaluation attacks: " + "; ".join(f"**{a['label']}** ({_attack_text(a)})" for a in attacks) + "."
        )
        lines.append("")
    return lines


def _first_attacks(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    for run in results["runs"]:
        if run["test_eval"].get("attacks"):
            return run["test_eval"]["attacks"]
    return []


def _new_figure(width: float, height: float) -> figure_lib.Figure:
    fig = figure_lib.Figure(figsize=(width, height), dpi=100)
    backend_agg.FigureCanvasAgg(fig)
    return fig


def _save(fig: figure_lib.Figure, path: str) -> None:
    # No "Software" metadata: the PNG depends on the data and matplotlib only.
    atomic_files.write_atomic(
        path, lambda f: fig.savefig(f, format="png", metadata={"Software": None}), binary=True
    )


# --- "oat": OAT against the PGD-AT frontier --------------------------------


def frontier_points(results: Dict[str, Any]) -> Dict[float, Dict[str, Any]]:
    """{training λ: the PGD-AT run's test result at that λ}."""
    points = {}
    for run in results["runs"]:
        if is_frontier_run(run) and _config(run)["model"]["variant"] == "plain":
            points[fixed_lambda(run)] = run["test_eval"]
    return dict(sorted(points.items()))


def compare_to_frontier(
    run: Dict[str, Any], frontier: Dict[float, Dict[str, Any]], lambdas: Sequence[float]
) -> Dict[str, Any]:
    """Differences of a λ-conditioned run to the dedicated PGD-AT models.

    Args:
        run: dict, a run of the results.
        frontier: `frontier_points(results)`.
        lambdas: the λ values to compare (those with a dedicated model count).

    Returns:
        dict with `compared` (λ values with a dedicated model), `within`
        (those where the run is at most `WITHIN_POINTS` below in SA and in RA),
        `worst_sa_drop` and `worst_ra_drop` (largest shortfall, fractions;
        negative means the run is above at every λ).
    """
    compared, within, sa_drops, ra_drops = [], [], [], []
    for lam in lambdas:
        if lam not in frontier:
            continue
        sa = accuracy(run["test_eval"], lam, "SA")
        ra = accuracy(run["test_eval"], lam, "RA")
        if sa is None or ra is None:
            continue
        sa_drop = accuracy(frontier[lam], lam, "SA") - sa
        ra_drop = accuracy(frontier[lam], lam, "RA") - ra
        compared.append(lam)
        sa_drops.append(sa_drop)
        ra_drops.append(ra_drop)
        if max(sa_drop, ra_drop) <= WITHIN_POINTS / 100.0 + 1e-9:
            within.append(lam)
    return {
        "compared": compared,
        "within": within,
        "worst_sa_drop": max(sa_drops) if sa_drops else None,
        "worst_ra_drop": max(ra_drops) if ra_drops else None,
    }


def _range(result: Dict[str, Any], metric: str, lambdas: Sequence[float]) -> Optional[float]:
    values = [accuracy(result, lam, metric) for lam in lambdas]
    values = [v for v in values if v is not None]
    return (max(values) - min(values)) if values else None


def _oat_sections(results: Dict[str, Any], plot_dir: str, plot_prefix: str) -> List[str]:
    frontier = frontier_points(results)
    attacks = [a["label"] for a in _first_attacks(results)]
    lines = ["## The SA-RA frontier: PGD-AT trained at each fixed λ", ""]
    lines += [
        "| λ | SA | " + " | ".join(f"RA {a}" for a in attacks) + " | RA (worst case) |",
        "|---:|---:|" + "---:|" * len(attacks) + "---:|",
    ]
    for lam, result in frontier.items():
        cells = [_pct(accuracy(result, lam, a)) for a in attacks]
        lines.append(
            f"| {lam:g} | {_pct(accuracy(result, lam, 'SA'))} | " + " | ".join(cells)
            + f" | {_pct(accuracy(result, lam, 'RA'))} |"
        )
    lines.append("")
    conditioned = [run for run in results["runs"] if not is_frontier_run(run)]
    summary = []
    for run in conditioned:
        result = run["test_eval"]
        seen = training_lambdas(run)
        lines += [f"## `{run['name']}`: {_config(run)['model']['variant']}, {_encoding(run)}, {_lambda_text(run)}", ""]
        lines += [
            "| λ | seen | SA | " + " | ".join(f"RA {a}" for a in attacks)
            + " | RA (worst case) | SA − PGD-AT | RA − PGD-AT |",
            "|---:|---|---:|" + "---:|" * len(attacks) + "---:|---:|---:|",
        ]
        for lam in _lambdas(result):
            sa, ra = accuracy(result, lam, "SA"), accuracy(result, lam, "RA")
            ref = frontier.get(lam)
            d_sa = None if ref is None else sa - accuracy(ref, lam, "SA")
            d_ra = None if ref is None else ra - accuracy(ref, lam, "RA")
            lines.append(
                f"| {lam:g} | {'seen' if any(abs(lam - s) < 1e-9 for s in seen) else 'unseen'} | "
                f"{_pct(sa)} | " + " | ".join(_pct(accuracy(result, lam, a)) for a in attacks)
                + f" | {_pct(ra)} | {_signed(d_sa)} | {_signed(d_ra)} |"
            )
        lines.append("")
        on_s1 = compare_to_frontier(run, frontier, S1)
        unseen = [lam for lam in _lambdas(result) if lam not in S1]
        off_s1 = compare_to_frontier(run, frontier, unseen)
        positive = [lam for lam in _lambdas(result) if lam > 0]
        summary.append((run, on_s1, off_s1, positive))
    if summary:
        lines += [
            "## Summary against the paper's claims",
            "",
            f"\"Within\" means at most {WITHIN_POINTS:g} points below the PGD-AT model trained at "
            "that λ, in SA and in RA (being above counts as within). The ranges are max − min over "
            "λ > 0: the paper's single-BN \"collapse\" shows as a small range (one model for every λ).",
            "",
            "| run | variant | encoding | S1 λ within 1.5 | unseen λ within 1.5 | largest SA shortfall "
            "| largest RA shortfall | SA range (λ > 0) | RA range (λ > 0) | SA at λ=0 | RA at λ=1 |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for run, on_s1, off_s1, positive in summary:
            result = run["test_eval"]
            lines.append(
                f"| {run['name']} | {_config(run)['model']['variant']} | {_encoding(run)} | "
                f"{len(on_s1['within'])}/{len(on_s1['compared'])} | "
                f"{len(off_s1['within'])}/{len(off_s1['compared'])} | "
                f"{_signed(on_s1['worst_sa_drop'] and -on_s1['worst_sa_drop'])} | "
                f"{_signed(on_s1['worst_ra_drop'] and -on_s1['worst_ra_drop'])} | "
                f"{_pct(_range(result, 'SA', positive))} | {_pct(_range(result, 'RA', positive))} | "
                f"{_pct(accuracy(result, 0.0, 'SA'))} | {_pct(accuracy(result, 1.0, 'RA'))} |"
            )
        lines.append("")
        lines.append(
            "Shortfalls are signed as run − PGD-AT at the λ where the run is furthest below "
            "(positive: the run is above the frontier at every λ)."
        )
        lines.append("")
    if frontier or conditioned:
        name = f"{plot_prefix}ra_vs_sa.png"
        _save(_ra_vs_sa_figure(frontier, conditioned), os.path.join(plot_dir, name))
        name2 = f"{plot_prefix}accuracy_vs_lambda.png"
        _save(_accuracy_vs_lambda_figure(frontier, conditioned), os.path.join(plot_dir, name2))
        rel = os.path.basename(plot_dir)
        lines += [
            "## Plots",
            "",
            f"![RA against SA with the PGD-AT frontier (Fig. 4)]({rel}/{name})",
            "",
            f"![SA and RA against λ]({rel}/{name2})",
            "",
        ]
    return lines


_COLORS = ("tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def _ra_vs_sa_figure(frontier, conditioned) -> figure_lib.Figure:
    fig = _new_figure(7.0, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    if frontier:
        xs = [100 * accuracy(r, lam, "SA") for lam, r in frontier.items()]
        ys = [100 * accuracy(r, lam, "RA") for lam, r in frontier.items()]
        ax.plot(xs, ys, "s--", color="tab:red", label="PGD-AT (frontier)")
        for lam, x, y in zip(frontier, xs, ys):
            ax.annotate(f"{lam:g}", (x, y), textcoords="offset points", xytext=(4, -10),
                        fontsize=7, color="tab:red")
    for index, run in enumerate(conditioned):
        result = run["test_eval"]
        lams = _lambdas(result)
        xs = [100 * accuracy(result, lam, "SA") for lam in lams]
        ys = [100 * accuracy(result, lam, "RA") for lam in lams]
        color = _COLORS[index % len(_COLORS)]
        ax.plot(xs, ys, "o-", color=color, label=run["name"], markersize=4)
        if index == 0:
            for lam, x, y in zip(lams, xs, ys):
                ax.annotate(f"{lam:g}", (x, y), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=color)
    ax.set_xlabel("SA (%)")
    ax.set_ylabel("RA, worst case over the attacks (%)")
    ax.set_title("RA against SA (labels: λ)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _accuracy_vs_lambda_figure(frontier, conditioned) -> figure_lib.Figure:
    fig = _new_figure(10.0, 4.5)
    for column, metric in enumerate(("SA", "RA")):
        ax = fig.add_subplot(1, 2, column + 1)
        if frontier:
            ax.plot(list(frontier), [100 * accuracy(r, lam, metric) for lam, r in frontier.items()],
                    "s--", color="tab:red", label="PGD-AT (frontier)")
        for index, run in enumerate(conditioned):
            lams = _lambdas(run["test_eval"])
            ax.plot(lams, [100 * accuracy(run["test_eval"], lam, metric) for lam in lams], "o-",
                    color=_COLORS[index % len(_COLORS)], label=run["name"], markersize=4)
        ax.set_xlabel("λ")
        ax.set_ylabel(f"{metric} (%)" + (" (worst case)" if metric == "RA" else ""))
        ax.grid(alpha=0.3)
        if column == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# --- "mixture_bn": clean fraction, mixture BN, BN statistics, depth --------


def _depth(run: Dict[str, Any]) -> Optional[int]:
    match = _RESNET.fullmatch(_config(run)["model"]["architecture"])
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
            for lam in _lambdas(result):
                variant = _config(run)["model"]["variant"]
                rows.append(
                    {
                        "name": name,
                        "run": run,
                        "depth": _depth(run),
                        "variant": variant,
                        "clean_fraction": float(_train(run).get("clean_fraction", 0.5)),
                        "test_bn": ("clean" if lam == 0 else "adversarial") if variant == "mixture_bn" else "–",
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
    a = accuracy(better["result"], better["lambda"], metric)
    b = accuracy(worse["result"], worse["lambda"], metric)
    z = z_score(a, b, better["result"]["num_examples"], worse["result"]["num_examples"])
    return (
        f"| {claim} | {better['name']}: {_pct(a)} | {worse['name']}: {_pct(b)} | "
        f"{_signed(a - b)} (z = {z:.2f}) | {_verdict(a - b, z)} |"
    )


def _mixture_sections(results: Dict[str, Any], plot_dir: str, plot_prefix: str) -> List[str]:
    rows = mixture_rows(results)
    attacks = [a["label"] for a in _first_attacks(results)]
    lines = ["## Results", ""]
    lines += [
        "| run / evaluation | depth | BN | clean fraction | BN at test | BN statistics | SA | "
        + " | ".join(f"RA {a}" for a in attacks) + " | RA (worst case) |",
        "|---|---:|---|---:|---|---|---:|" + "---:|" * len(attacks) + "---:|",
    ]
    for row in rows:
        result, lam = row["result"], row["lambda"]
        bn = {"plain": "single", "mixture_bn": "mixture"}.get(row["variant"], row["variant"])
        lines.append(
            f"| {row['name']} | {row['depth'] or '–'} | {bn} | {row['clean_fraction']:g} | "
            f"{row['test_bn']} | {row['bn_statistics']} | {_pct(accuracy(result, lam, 'SA'))} | "
            + " | ".join(_pct(accuracy(result, lam, a)) for a in attacks)
            + f" | {_pct(accuracy(result, lam, 'RA'))} |"
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
        _comparison_line("(1) BN on clean + adversarial images hurts robustness: clean fraction 0 beats 0.5 (single BN)", single_zero, single_half),
        _comparison_line("(2) mixture BN (adversarial BN at test) beats single BN at clean fraction 0.5", mixture, single_half),
        _comparison_line("(3) batch statistics at test time raise robustness further (mixture BN)", mixture_batch, mixture),
    ]
    sweep = _depth_sweep(rows)
    adv, std = sweep.get("adversarial", {}), sweep.get("standard", {})
    if adv and std:
        adv_peak = max(adv, key=lambda d: (accuracy(adv[d]["result"], adv[d]["lambda"], "RA"), -d))
        std_peak = max(std, key=lambda d: (accuracy(std[d]["result"], std[d]["lambda"], "SA"), -d))
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
                    cells.append("–" if row is None else _pct(accuracy(row["result"], row["lambda"], metric)))
            lines.append(f"| {depth} | " + " | ".join(cells) + " |")
        lines.append("")
        name = f"{plot_prefix}depth.png"
        _save(_depth_figure(adv, std), os.path.join(plot_dir, name))
        lines += [f"![SA and RA against depth]({os.path.basename(plot_dir)}/{name})", ""]
    return lines


def _depth_gain(group: Dict[int, Dict[str, Any]], metric: str, label: str) -> str:
    """'label d0→d1: +x.x (z = …)': the change from the shallowest to the deepest network."""
    low, high = group[min(group)], group[max(group)]
    a = accuracy(high["result"], high["lambda"], metric)
    b = accuracy(low["result"], low["lambda"], metric)
    z = z_score(a, b, high["result"]["num_examples"], low["result"]["num_examples"])
    return f"{label} {min(group)}→{max(group)}: {_signed(a - b)} (z = {z:.2f})"


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
    fig = _new_figure(7.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for group, style, label in ((adv, "o-", "adversarial training"), (std, "s--", "standard training")):
        if not group:
            continue
        depths = sorted(group)
        for metric, color in (("SA", "tab:blue"), ("RA", "tab:red")):
            ax.plot(depths, [100 * accuracy(group[d]["result"], group[d]["lambda"], metric) for d in depths],
                    style, color=color, label=f"{label}: {metric}")
    ax.set_xlabel("ResNet depth")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


# --- "width": OATS against PGD-ATS -----------------------------------------


def _width_results(run: Dict[str, Any]) -> Dict[float, Dict[str, Any]]:
    per_width = run.get("test_eval_widths", {}).get("per_width")
    if not per_width:
        return {1.0: run["test_eval"]}
    return {float(k): v for k, v in sorted(per_width.items(), key=lambda kv: float(kv[0]))}


def _width_sections(results: Dict[str, Any], plot_dir: str, plot_prefix: str) -> List[str]:
    attacks = [a["label"] for a in _first_attacks(results)]
    widths = sorted({w for run in results["runs"] for w in _width_results(run)})
    baselines = [run for run in results["runs"] if is_frontier_run(run)]
    conditioned = [run for run in results["runs"] if not is_frontier_run(run)]
    lines = []
    for width in widths:
        lines += [f"## Width {width:g}", ""]
        lines += [
            "| run | λ | SA | " + " | ".join(f"RA {a}" for a in attacks) + " | RA (worst case) |",
            "|---|---:|---:|" + "---:|" * len(attacks) + "---:|",
        ]
        for run in baselines + conditioned:
            result = _width_results(run).get(width)
            if result is None:
                continue
            for lam in _lambdas(result):
                lines.append(
                    f"| {run['name']} | {lam:g} | {_pct(accuracy(result, lam, 'SA'))} | "
                    + " | ".join(_pct(accuracy(result, lam, a)) for a in attacks)
                    + f" | {_pct(accuracy(result, lam, 'RA'))} |"
                )
        lines.append("")
    lines += [
        "## OATS against PGD-ATS at the same λ",
        "",
        "OATS (one model) evaluated at the λ each PGD-ATS model was trained at; differences "
        "OATS − PGD-ATS. The paper (SPEC §2): at width 0.75 the most robust OATS point beats the "
        "most robust PGD-ATS point by 0.67 SA and 1.34 RA points.",
        "",
        "| width | λ | OATS run | SA OATS − PGD-ATS | RA OATS − PGD-ATS |",
        "|---:|---:|---|---:|---:|",
    ]
    for width in widths:
        for base in baselines:
            lam = fixed_lambda(base)
            ref = _width_results(base).get(width)
            for run in conditioned:
                result = _width_results(run).get(width)
                if ref is None or result is None or accuracy(result, lam, "SA") is None:
                    continue
                lines.append(
                    f"| {width:g} | {lam:g} | {run['name']} | "
                    f"{_signed(accuracy(result, lam, 'SA') - accuracy(ref, lam, 'SA'))} | "
                    f"{_signed(accuracy(result, lam, 'RA') - accuracy(ref, lam, 'RA'))} |"
                )
    lines.append("")
    name = f"{plot_prefix}ra_vs_sa_per_width.png"
    _save(_width_figure(widths, baselines, conditioned), os.path.join(plot_dir, name))
    lines += [f"![RA against SA per width]({os.path.basename(plot_dir)}/{name})", ""]
    return lines


def _width_figure(widths, baselines, conditioned) -> figure_lib.Figure:
    fig = _new_figure(4.0 * max(len(widths), 1), 4.0)
    for column, width in enumerate(widths):
        ax = fig.add_subplot(1, max(len(widths), 1), column + 1)
        points = [(fixed_lambda(b), _width_results(b).get(width)) for b in baselines]
        points = sorted((lam, r) for lam, r in points if r is not None)
        if points:
            ax.plot([100 * accuracy(r, lam, "SA") for lam, r in points],
                    [100 * accuracy(r, lam, "RA") for lam, r in points], "s--", color="tab:red",
                    label="PGD-ATS")
        for index, run in enumerate(conditioned):
            result = _width_results(run).get(width)
            if result is None:
                continue
            lams = _lambdas(result)
            ax.plot([100 * accuracy(result, lam, "SA") for lam in lams],
                    [100 * accuracy(result, lam, "RA") for lam in lams], "o-",
                    color=_COLORS[index % len(_COLORS)], label=run["name"], markersize=4)
        ax.set_title(f"width {width:g}")
        ax.set_xlabel("SA (%)")
        if column == 0:
            ax.set_ylabel("RA, worst case (%)")
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# --- entry points ----------------------------------------------------------

_SECTIONS = {"oat": _oat_sections, "mixture_bn": _mixture_sections, "width": _width_sections}


# --- spread over seeds -------------------------------------------------------


def _seed(run: Dict[str, Any]) -> int:
    return int(_train(run).get("seed", 0))


def seed_replicas(results: Dict[str, Any]) -> Dict[int, Dict[str, Any]]:
    """One copy of the results per training seed, holding only the repeated runs.

    Args:
        results: dict, a sweep's results; repeats carry `repeat_of` and `seed`.

    Returns:
        {seed: results with `runs` = the runs repeated with that seed, each
        under the name of the run it repeats}, seeds in increasing order; the
        first seed's copy holds the original runs. Empty without repeats.
    """
    repeats = [run for run in results["runs"] if run.get("repeat_of")]
    names = {run["repeat_of"] for run in repeats}
    replicas: Dict[int, List[Dict[str, Any]]] = {}
    for run in results["runs"]:
        if not run.get("repeat_of") and run["name"] in names:
            replicas.setdefault(_seed(run), []).append(run)
    for run in repeats:
        replicas.setdefault(int(run["seed"]), []).append({**run, "name": run["repeat_of"]})
    return {seed: {**results, "runs": replicas[seed]} for seed in sorted(replicas)}


def spread_text(values: Sequence[Optional[float]], signed: bool = False) -> str:
    """'mean (min–max)' in percent of the values that exist ('–' if none).

    Args:
        values: fractions (None where a seed lacks the figure).
        signed: bool, print differences with their sign.

    Returns:
        str; with a value missing, the number of seeds it is over is added.
    """
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    form = "{:+.1f}" if signed else "{:.1f}"
    text = (
        form.format(100.0 * sum(present) / len(present)) + " ("
        + form.format(100.0 * min(present)) + "–" + form.format(100.0 * max(present)) + ")"
    )
    return text if len(present) == len(values) else f"{text}, {len(present)} seeds"


def _figure_of(replica: Dict[str, Any], name: str, lam: float, metric: str, width: Optional[float] = None):
    for run in replica["runs"]:
        if run["name"] == name:
            result = run["test_eval"] if width is None else _width_results(run).get(width)
            return None if result is None else accuracy(result, lam, metric)
    return None


def _difference(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else a - b


def _oat_seed_rows(replicas: Dict[int, Dict[str, Any]]) -> List[str]:
    seeds = list(replicas)
    first = replicas[seeds[0]]
    frontier_names = {fixed_lambda(r): r["name"] for r in first["runs"] if is_frontier_run(r)}
    conditioned = [r for r in first["runs"] if not is_frontier_run(r)]
    lines: List[str] = []
    if frontier_names and not conditioned:
        lines += ["| λ | PGD-AT SA | PGD-AT RA |", "|---:|---:|---:|"]
        for lam, name in sorted(frontier_names.items()):
            cells = [spread_text([_figure_of(r, name, lam, m) for r in replicas.values()]) for m in ("SA", "RA")]
            lines.append(f"| {lam:g} | " + " | ".join(cells) + " |")
        return lines + [""]
    for run in conditioned:
        name = run["name"]
        lines += [
            f"`{name}` against the PGD-AT model of its own seed:",
            "",
            "| λ | PGD-AT SA | PGD-AT RA | SA | RA | SA − PGD-AT | RA − PGD-AT |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for lam in _lambdas(run["test_eval"]):
            ref = frontier_names.get(lam)
            cells = []
            for metric in ("SA", "RA"):
                cells.append(spread_text([
                    None if ref is None else _figure_of(r, ref, lam, metric) for r in replicas.values()
                ]))
            for metric in ("SA", "RA"):
                cells.append(spread_text([_figure_of(r, name, lam, metric) for r in replicas.values()]))
            for metric in ("SA", "RA"):
                cells.append(spread_text([
                    None if ref is None else _difference(
                        _figure_of(r, name, lam, metric), _figure_of(r, ref, lam, metric)
                    )
                    for r in replicas.values()
                ], signed=True))
            lines.append(f"| {lam:g} | " + " | ".join(cells) + " |")
        counts = []
        for seed, replica in replicas.items():
            own = next((r for r in replica["runs"] if r["name"] == name), None)
            if own is None:
                counts.append(f"seed {seed}: not run")
                continue
            comparison = compare_to_frontier(own, frontier_points(replica), S1)
            counts.append(f"seed {seed}: {len(comparison['within'])}/{len(comparison['compared'])}")
        lines += [
            "",
            f"S1 λ within {WITHIN_POINTS:g} points of PGD-AT in SA and RA: " + ", ".join(counts) + ".",
            "",
        ]
    return lines


def _width_seed_rows(replicas: Dict[int, Dict[str, Any]]) -> List[str]:
    first = next(iter(replicas.values()))
    baselines = [r for r in first["runs"] if is_frontier_run(r)]
    conditioned = [r for r in first["runs"] if not is_frontier_run(r)]
    widths = sorted({w for run in first["runs"] for w in _width_results(run)})
    lines = [
        "| width | λ | run | SA | RA | SA − PGD-ATS | RA − PGD-ATS |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for width in widths:
        for base in baselines:
            lam = fixed_lambda(base)
            for run in [base] + conditioned:
                values = {
                    m: [_figure_of(r, run["name"], lam, m, width) for r in replicas.values()] for m in ("SA", "RA")
                }
                if not any(v is not None for v in values["SA"]):
                    continue
                cells = [spread_text(values["SA"]), spread_text(values["RA"])]
                for metric in ("SA", "RA"):
                    cells.append("–" if run is base else spread_text([
                        _difference(_figure_of(r, run["name"], lam, metric, width),
                                    _figure_of(r, base["name"], lam, metric, width))
                        for r in replicas.values()
                    ], signed=True))
                lines.append(f"| {width:g} | {lam:g} | {run['name']} | " + " | ".join(cells) + " |")
    return lines + [""]


def _mixture_seed_rows(replicas: Dict[int, Dict[str, Any]]) -> List[str]:
    rows_per_seed = [mixture_rows(r) for r in replicas.values()]
    first_rows = rows_per_seed[0]
    lines = ["| run / evaluation | λ | SA | RA |", "|---|---:|---:|---:|"]

    def figure(rows, name, lam, metric):
        row = _find(rows, name=name, **{"lambda": lam})
        return None if row is None else accuracy(row["result"], lam, metric)

    for row in first_rows:
        cells = [spread_text([figure(rows, row["name"], row["lambda"], m) for rows in rows_per_seed]) for m in ("SA", "RA")]
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
            differences.append(None if better is None or worse is None else _difference(
                accuracy(better["result"], better["lambda"], "RA"), accuracy(worse["result"], worse["lambda"], "RA")
            ))
        if all(d is None for d in differences):
            continue
        per_seed = ", ".join(_signed(d) for d in differences)
        lines.append(f"| {label} | {per_seed} | {spread_text(differences, signed=True)} |")
    return lines + [""]


_SEED_ROWS = {"oat": _oat_seed_rows, "mixture_bn": _mixture_seed_rows, "width": _width_seed_rows}


def _seed_sections(results: Dict[str, Any]) -> List[str]:
    replicas = seed_replicas(results)
    if len(replicas) < 2:
        return []
    repeats = [run for run in results["runs"] if run.get("repeat_of")]
    names = list(dict.fromkeys(run["repeat_of"] for run in repeats))
    cost = sum(float(run["wall_seconds"]) for run in repeats) + sum(
        float(e["wall_seconds"]) for run in repeats for e in run.get("evaluations", [])
    )
    total = float(results.get("total_wall_seconds", 0.0))
    lines = [
        "## Spread over seeds",
        "",
        f"The headline runs ({', '.join(f'`{n}`' for n in names)}) trained with seeds "
        f"{', '.join(str(s) for s in replicas)}; each figure is computed per seed (a run against "
        "the baseline of its own seed) and shown as mean (min–max) over the seeds. The repeats "
        f"cost {_minutes(cost)} min of the study's {_minutes(total)} min.",
        "",
    ]
    return lines + _SEED_ROWS[results["report"]](replicas)


def report_paths(results_path: str) -> Tuple[str, str]:
    """(Markdown path, plot directory) of a results file `<dir>/results.json`: `<dir>.md`, `<dir>/`."""
    plot_dir = os.path.dirname(os.path.abspath(results_path))
    return plot_dir + ".md", plot_dir


def render_study_report(results: Dict[str, Any], results_path: str, plot_dir: str) -> str:
    """Returns the report's Markdown (and writes its plots into `plot_dir`).

    Args:
        results: dict, the sweep's results (`oat_tf.sweep.collect_results`).
        results_path: str, the results file's path as shown in the report.
        plot_dir: str, existing directory the plots are written to; the
            Markdown links them as `<basename(plot_dir)>/<plot>.png`.

    Returns:
        str, the Markdown.

    Raises:
        ValueError: if the results lack `study`, `runs` or a known `report`.
    """
    for key in ("study", "runs", "report", "command"):
        if key not in results:
            raise ValueError(
                f"`results` must be a sweep's results.json with a {key!r} entry. "
                f"Received keys: {sorted(results)}"
            )
    if results["report"] not in _SECTIONS:
        raise ValueError(
            f"`report` must be one of {sorted(_SECTIONS)}. Received: report={results['report']!r}"
        )
    lines = _header(results, results_path)
    first_seed = {**results, "runs": [run for run in results["runs"] if not run.get("repeat_of")]}
    lines += _SECTIONS[results["report"]](first_seed, plot_dir, "")
    lines += _seed_sections(results)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_study_report(results_path: str, check: bool = False) -> str:
    """Writes (or, with `check`, compares) the report of a results file.

    Args:
        results_path: str, `<dir>/results.json` written by `oat_tf.sweep`.
        check: bool, compare the Markdown with the existing `<dir>.md`
            instead of writing it (the plots are then not written either).

    Returns:
        str, the Markdown path.

    Raises:
        FileNotFoundError: if `results_path` does not exist.
        ValueError: if it is not a sweep's results, or with `check` if the
            Markdown differs.
    """
    if not os.path.isfile(results_path):
        raise FileNotFoundError(f"`results` must be an existing results.json. Received: {results_path!r}")
    with open(results_path, encoding="utf-8") as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"`results` {results_path!r} is not valid JSON: {error}") from None
    markdown_path, plot_dir = report_paths(results_path)
    # The path the sweep wrote (relative to where it ran): the same text from any directory.
    shown = results.get("results_path") or results_path
    return pages.write_or_check(
        markdown_path,
        plot_dir,
        lambda directory: render_study_report(results, shown, directory),
        source=results_path,
        check=check,
    )


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    try:
        path = write_study_report(flags.FLAGS.results, check=flags.FLAGS.check)
    except (FileNotFoundError, ValueError) as error:
        raise app.UsageError(str(error)) from None
    sys.stdout.write(f"{'Checked' if flags.FLAGS.check else 'Wrote'} {path}\n")


def run() -> None:
    """The `oat-study-report` console script; `python -m oat_tf.reporting.study_report` runs it too.

    Defines the command's flags and runs `main` through `cli.run_main` (absl's
    `app.run`), which parses `sys.argv` and exits the process.
    """
    flags.DEFINE_string("results", None, "results.json of a study (written by `python -m oat_tf.sweep`).")
    flags.DEFINE_bool("check", False, "Compare the regenerated Markdown with the existing file instead of writing it.")
    flags.mark_flag_as_required("results")
    cli.run_main(main, __name__)


if __name__ == "__main__":
    run()
