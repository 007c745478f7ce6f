"""Reading a study's results.json: accuracies, run settings as text, seeds, figures.

The helpers every part of a study page (`study_report` and its layouts
`study_oat`, `study_mixture`, `study_widths`) shares: one accuracy of a λ-grid
result, what a run was trained with, the per-seed copies of repeated runs and
their spread, and the figure and PNG writer of the plots. Accuracies are
fractions; the text helpers print percent.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from matplotlib import figure as figure_lib
from matplotlib.backends import backend_agg

from oat_tf import atomic_files

COLORS = ("tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def percent(value: Optional[float]) -> str:
    return "–" if value is None else f"{100.0 * value:.1f}"


def signed_percent(value: Optional[float]) -> str:
    return "–" if value is None else f"{100.0 * value:+.1f}"


def lambda_key(result: Dict[str, Any], lam: float) -> Optional[str]:
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
    key = lambda_key(result, lam)
    if key is None:
        return None
    if metric == "SA":
        return result["clean_accuracy"][key]
    if metric == "RA":
        return result.get("worst_case_accuracy", {}).get(key)
    return result.get("robust_accuracy", {}).get(metric, {}).get(key)


def lambdas_of(result: Dict[str, Any]) -> List[float]:
    return sorted(float(k) for k in result.get("clean_accuracy", {}))


def run_config(run: Dict[str, Any]) -> Dict[str, Any]:
    return run["config"]


def is_frontier_run(run: Dict[str, Any]) -> bool:
    """A PGD-AT (or PGD-ATS) run: one fixed λ."""
    return run_config(run)["lambda_sampling"]["sampling"] == "fixed"


def fixed_lambda(run: Dict[str, Any]) -> float:
    return float(run_config(run)["lambda_sampling"]["values"][0])


def training_lambdas(run: Dict[str, Any]) -> List[float]:
    return [float(v) for v in run_config(run)["lambda_sampling"]["values"]]


def train_config(run: Dict[str, Any]) -> Dict[str, Any]:
    return run_config(run).get("train", {})


def encoding_text(run: Dict[str, Any]) -> str:
    model = run_config(run)["model"]
    if model["variant"] in ("plain", "ats", "mixture_bn"):
        return "–"
    encoder = model["encoder"]
    names = {"rand": "RO", "dct": "DCT", "onehot": "one-hot"}
    multiplier = encoder.get("film_hidden_multiplier", 1)
    film = "" if multiplier == 1 else f", FiLM hidden ×{multiplier}"
    if encoder["scheme"] == "none":
        return "none" + film
    return f"{names.get(encoder['scheme'], encoder['scheme'])}-{encoder['dim']}{film}"


def lambda_text(run: Dict[str, Any]) -> str:
    if train_config(run).get("objective", "oat") == "mixed_batch":
        return "–"
    sampling = run_config(run)["lambda_sampling"]
    values = ", ".join(f"{float(v):g}" for v in sampling["values"])
    if sampling["sampling"] == "fixed":
        return f"fixed {values}"
    return f"{sampling['sampling']} {{{values}}}"


def attack_text(attack: Dict[str, Any]) -> str:
    if attack["name"] in ("pgd", "mi_fgsm"):
        return f"{attack['name'].upper()}-{attack['num_steps']}, ε {attack['epsilon']:g}, step {attack['step_size']:g}"
    return f"{attack['name']}, ε {attack['epsilon']:g}"


def training_attack_text(run: Dict[str, Any]) -> str:
    train = train_config(run)
    if train.get("objective", "oat") == "mixed_batch" and float(train.get("clean_fraction", 0.5)) >= 1.0:
        return "none (standard training)"
    if is_frontier_run(run) and fixed_lambda(run) == 0.0:
        return "none (λ = 0)"
    return attack_text(run_config(run)["train_attack"])


def objective_text(run: Dict[str, Any]) -> str:
    train = train_config(run)
    if train.get("objective", "oat") == "mixed_batch":
        return f"mixed batch, clean {float(train.get('clean_fraction', 0.5)):g}"
    return "OAT (λ-weighted)"


def minutes(seconds: float) -> str:
    return f"{seconds / 60.0:.1f}"


def filters_text(run: Dict[str, Any]) -> str:
    filters = run_config(run)["model"].get("filters") or []
    return "/".join(str(f) for f in filters) if filters else "default"


def width_results(run: Dict[str, Any]) -> Dict[float, Dict[str, Any]]:
    per_width = run.get("test_eval_widths", {}).get("per_width")
    if not per_width:
        return {1.0: run["test_eval"]}
    return {float(k): v for k, v in sorted(per_width.items(), key=lambda kv: float(kv[0]))}


def training_seed(run: Dict[str, Any]) -> int:
    return int(train_config(run).get("seed", 0))


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
            replicas.setdefault(training_seed(run), []).append(run)
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
        form.format(100.0 * sum(present) / len(present))
        + " ("
        + form.format(100.0 * min(present))
        + "–"
        + form.format(100.0 * max(present))
        + ")"
    )
    return text if len(present) == len(values) else f"{text}, {len(present)} seeds"


def figure_of(replica: Dict[str, Any], name: str, lam: float, metric: str, width: Optional[float] = None):
    for run in replica["runs"]:
        if run["name"] == name:
            result = run["test_eval"] if width is None else width_results(run).get(width)
            return None if result is None else accuracy(result, lam, metric)
    return None


def difference(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else a - b


def first_attacks(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The evaluation attacks of the first run that has any (every run is evaluated alike)."""
    for run in results["runs"]:
        if run["test_eval"].get("attacks"):
            return run["test_eval"]["attacks"]
    return []


def new_figure(width: float, height: float) -> figure_lib.Figure:
    fig = figure_lib.Figure(figsize=(width, height), dpi=100)
    backend_agg.FigureCanvasAgg(fig)
    return fig


def save_figure(fig: figure_lib.Figure, path: str) -> None:
    # No "Software" metadata: the PNG depends on the data and matplotlib only.
    atomic_files.write_atomic(
        path, lambda f: fig.savefig(f, format="png", metadata={"Software": None}), binary=True
    )
