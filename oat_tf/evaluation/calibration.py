"""Choosing λ for a deployment requirement from a measured SA-RA curve.

OAT's point is that one trained model serves every trade-off: a deployment
states a requirement, "SA ≥ 90%" or "RA ≥ 40%", and gets the λ that meets it
best, with no retraining. This module holds the decision, as pure functions of
numbers already measured (no TensorFlow here):

- `curve_from_evaluation(result, ra_attack)` turns an `evaluate_lambda_grid`
  result into a curve: one point `{"lambda", "sa", "ra"}` per λ, sorted by λ,
  with RA either of one named attack or the per-sample worst case over all
  the evaluated attacks (`WORST_CASE`, the default).
- `choose_lambda(curve, min_sa=...)` or `choose_lambda(curve, min_ra=...)`
  picks the λ. Under `min_sa`: among the λ whose SA ≥ min_sa, the one with the
  highest RA; ties go to the higher SA, then to the smaller λ. Under `min_ra`:
  among the λ whose RA ≥ min_ra, the one with the highest SA; ties go to the
  higher RA, then to the smaller λ. When no λ meets the constraint the answer
  says so (`feasible` False) and names the λ that came closest (the highest
  value of the constrained metric, same tie rules) and by how much it falls
  short.
- `choose_lambda_and_width(curves, min_sa=..., max_width=...)` does the same
  over λ × width for a slimmable (OATS) model, one curve per width, under a
  compute budget: only widths ≤ `max_width` are candidates ("SA ≥ 88% at
  width ≤ 0.75, maximise RA"). Ties of both metrics go to the narrower width
  (the cheaper network), then to the smaller λ.
- `add_calibration(model_card, calibration)` returns a model card with a
  `calibration` entry, keeping everything else it held.

Accuracies and thresholds are fractions in [0, 1] here (the CLI,
`oat_tf.calibrate`, takes percentages and converts them). A point meets a
threshold when its value is ≥ threshold − `TOLERANCE` (1e-9): measured
accuracies are count / n, and a threshold typed in percent and divided by 100
can land one float ulp away from the same rational number; no real accuracy
difference is that small.

The curve must be measured on held-out validation data, never on the test
split, or the test numbers reported next to the choice are no longer an
unbiased estimate of what the deployment gets.

Example:

```python
curve = calibration.curve_from_evaluation(result, ra_attack="worst_case")
choice = calibration.choose_lambda(curve, min_sa=0.9)
if choice["feasible"]:
    serve_with(choice["lambda"])
else:
    print(choice["reason"])  # "no λ meets SA ≥ 90.00%: the highest SA is ..."
```
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Dict, List, Mapping, Optional, Sequence

from oat_tf import config as config_lib

WORST_CASE = config_lib.WORST_CASE
TOLERANCE = 1e-9
METRIC_NAMES = {"sa": "SA", "ra": "RA"}

_RESULT_KEYS = ("lambdas", "clean_accuracy", "robust_accuracy", "worst_case_accuracy")


def _is_number(value: Any) -> bool:
    # numpy scalars register as numbers.Real; bools (and numpy bools) are refused.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_fraction(name: str, value: Any) -> float:
    if not _is_number(value) or not math.isfinite(float(value)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(
            f"`{name}` must be a finite number in [0, 1] (a fraction, not a percentage). "
            f"Received: {name}={value!r}"
        )
    return float(value)


def _percent(value: float) -> str:
    return f"{100.0 * value:.2f}%"


def check_curve(curve: Any) -> List[Dict[str, float]]:
    """Validates a curve and returns a copy sorted by λ.

    Args:
        curve: sequence of mappings with keys "lambda", "sa" and "ra", each a
            finite number in [0, 1]; λ values distinct.

    Returns:
        list of dict `{"lambda", "sa", "ra"}` of floats, sorted by λ.
    """
    if isinstance(curve, (str, bytes, Mapping)) or not isinstance(curve, Sequence) or not curve:
        raise ValueError(
            "`curve` must be a non-empty list of points {'lambda', 'sa', 'ra'}. "
            f"Received: curve={curve!r}"
        )
    points = []
    for index, point in enumerate(curve):
        if not isinstance(point, Mapping) or any(k not in point for k in ("lambda", "sa", "ra")):
            raise ValueError(
                "Every point of `curve` must be a dict with keys 'lambda', 'sa' and 'ra'. "
                f"Received: curve[{index}]={point!r}"
            )
        points.append(
            {key: _check_fraction(f"curve[{index}][{key!r}]", point[key]) for key in ("lambda", "sa", "ra")}
        )
    lambdas = [p["lambda"] for p in points]
    if len(set(lambdas)) != len(lambdas):
        raise ValueError(
            f"`curve` must have one point per λ. Received: curve with λ values {lambdas}"
        )
    return sorted(points, key=lambda p: p["lambda"])


def check_constraint(min_sa: Optional[float] = None, min_ra: Optional[float] = None) -> Dict[str, Any]:
    """Validates a requirement and returns it as `{"metric", "minimum"}`.

    Args:
        min_sa: float or None, the lowest acceptable SA, a fraction in [0, 1].
        min_ra: float or None, the lowest acceptable RA, a fraction in [0, 1].
            Exactly one of the two must be given.

    Returns:
        dict, `metric` ("sa" or "ra") and `minimum` (float).
    """
    if (min_sa is None) == (min_ra is None):
        raise ValueError(
            "Exactly one of `min_sa` and `min_ra` must be given (a fraction in [0, 1]). "
            f"Received: min_sa={min_sa!r}, min_ra={min_ra!r}"
        )
    if min_sa is not None:
        return {"metric": "sa", "minimum": _check_fraction("min_sa", min_sa)}
    return {"metric": "ra", "minimum": _check_fraction("min_ra", min_ra)}


def describe_constraint(constraint: Mapping[str, Any]) -> str:
    """Returns e.g. "SA ≥ 90.00%" for `{"metric": "sa", "minimum": 0.9}`."""
    return f"{METRIC_NAMES[constraint['metric']]} ≥ {_percent(constraint['minimum'])}"


def choose_lambda(
    curve: Sequence[Mapping[str, float]],
    *,
    min_sa: Optional[float] = None,
    min_ra: Optional[float] = None,
) -> Dict[str, Any]:
    """Picks the λ that best meets one accuracy requirement.

    With `min_sa`: among the points with SA ≥ min_sa, the highest RA; ties go
    to the higher SA, then to the smaller λ. With `min_ra`: among the points
    with RA ≥ min_ra, the highest SA; ties go to the higher RA, then to the
    smaller λ. "≥" allows `TOLERANCE` (1e-9) of float round-off.

    Args:
        curve: sequence of `{"lambda", "sa", "ra"}` points, fractions in
            [0, 1], one per λ (see `curve_from_evaluation`).
        min_sa: float or None, the lowest acceptable SA, a fraction in [0, 1].
        min_ra: float or None, the lowest acceptable RA, a fraction in [0, 1].
            Exactly one of `min_sa` and `min_ra` must be given.

    Returns:
        dict, plain JSON:
        `feasible` (bool), `constraint` (`{"metric", "minimum"}`), `objective`
        ("ra" under an SA requirement, "sa" under an RA requirement),
        `lambda`, `sa`, `ra` (the chosen point; None when infeasible),
        `feasible_lambdas` (list of the λ that meet the constraint),
        `closest` (None when feasible; else the point with the highest value
        of the constrained metric), `shortfall` (None when feasible; else by
        how much `closest` misses the minimum, a fraction) and `reason` (one
        sentence, accuracies in percent).
    """
    points = check_curve(curve)
    constraint = check_constraint(min_sa=min_sa, min_ra=min_ra)
    metric, minimum = constraint["metric"], constraint["minimum"]
    objective = "ra" if metric == "sa" else "sa"
    feasible = [p for p in points if p[metric] >= minimum - TOLERANCE]
    answer = {
        "constraint": constraint,
        "objective": objective,
        "feasible_lambdas": [p["lambda"] for p in feasible],
    }
    wanted = describe_constraint(constraint)
    metric_name, objective_name = METRIC_NAMES[metric], METRIC_NAMES[objective]
    if feasible:
        best = min(feasible, key=lambda p: (-p[objective], -p[metric], p["lambda"]))
        reason = (
            f"λ = {best['lambda']:g} (SA {_percent(best['sa'])}, RA {_percent(best['ra'])}) "
            f"has the highest {objective_name} of the {len(feasible)} of {len(points)} λ "
            f"with {wanted}"
        )
        return {
            "feasible": True,
            **answer,
            "lambda": best["lambda"],
            "sa": best["sa"],
            "ra": best["ra"],
            "closest": None,
            "shortfall": None,
            "reason": reason,
        }
    closest = min(points, key=lambda p: (-p[metric], -p[objective], p["lambda"]))
    shortfall = minimum - closest[metric]
    reason = (
        f"no λ meets {wanted}: the highest {metric_name} is {_percent(closest[metric])} at "
        f"λ = {closest['lambda']:g} ({objective_name} {_percent(closest[objective])}), "
        f"{100.0 * shortfall:.2f} points short (of {len(points)} λ measured)"
    )
    return {
        "feasible": False,
        **answer,
        "lambda": None,
        "sa": None,
        "ra": None,
        "closest": dict(closest),
        "shortfall": shortfall,
        "reason": reason,
    }


def choose_lambda_and_width(
    curves: Mapping[float, Sequence[Mapping[str, float]]],
    *,
    min_sa: Optional[float] = None,
    min_ra: Optional[float] = None,
    max_width: Optional[float] = None,
) -> Dict[str, Any]:
    """Picks the (λ, width) that best meets one accuracy requirement within a width budget.

    As `choose_lambda` over the points of every width ≤ `max_width`: the
    highest objective among the points meeting the constraint; ties go to
    the higher constrained metric, then to the narrower width, then to the
    smaller λ. When none does, `closest` is the point with the highest
    constrained metric (same tie rules) and gets a `width` entry.

    Args:
        curves: mapping {width (float in (0, 1]): curve}, one
            `{"lambda", "sa", "ra"}` curve per width.
        min_sa: float or None, the lowest acceptable SA, a fraction.
        min_ra: float or None, the lowest acceptable RA, a fraction.
            Exactly one of `min_sa` and `min_ra`.
        max_width: float or None, the compute budget: the widest width
            allowed (None: every width).

    Returns:
        dict, the keys of `choose_lambda` (its `reason` naming the width)
        plus `width` (the chosen width; None when infeasible), `max_width`,
        `widths` (the candidate widths) and `feasible_points` (list of
        `{"width", "lambda"}` meeting the constraint).
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(
            "`curves` must be a non-empty dict {width: curve}. "
            f"Received: curves of type {type(curves).__name__}"
        )
    widths = sorted(_check_fraction("width", w) for w in curves)
    if any(w <= 0.0 for w in widths):
        raise ValueError(f"Every width of `curves` must be in (0, 1]. Received: widths={widths}")
    if max_width is not None:
        max_width = _check_fraction("max_width", max_width)
        candidates = [w for w in widths if w <= max_width + TOLERANCE]
        if not candidates:
            raise ValueError(
                f"`max_width` must allow at least one of the widths {widths}. "
                f"Received: max_width={max_width}"
            )
    else:
        candidates = widths
    by_width = {float(w): c for w, c in curves.items()}
    choices = {w: choose_lambda(by_width[w], min_sa=min_sa, min_ra=min_ra) for w in candidates}
    first = choices[candidates[0]]
    constraint, objective = first["constraint"], first["objective"]
    metric = constraint["metric"]
    wanted = describe_constraint(constraint)
    budget = f" and width ≤ {max_width:g}" if max_width is not None else ""
    num_points = sum(len(check_curve(by_width[w])) for w in candidates)
    feasible_points = [
        {"width": w, "lambda": lam} for w in candidates for lam in choices[w]["feasible_lambdas"]
    ]
    answer = {
        "constraint": constraint,
        "objective": objective,
        "max_width": max_width,
        "widths": candidates,
        "feasible_points": feasible_points,
    }
    feasible = [(w, c) for w, c in choices.items() if c["feasible"]]
    if feasible:
        width, best = min(feasible, key=lambda wc: (-wc[1][objective], -wc[1][metric], wc[0], wc[1]["lambda"]))
        reason = (
            f"width {width:g}, λ = {best['lambda']:g} (SA {_percent(best['sa'])}, RA "
            f"{_percent(best['ra'])}) has the highest {METRIC_NAMES[objective]} of the "
            f"{len(feasible_points)} of {num_points} (λ, width) points with {wanted}{budget}"
        )
        return {**best, **answer, "width": width, "reason": reason}
    width, closest_choice = min(
        choices.items(),
        key=lambda wc: (-wc[1]["closest"][metric], -wc[1]["closest"][objective], wc[0], wc[1]["closest"]["lambda"]),
    )
    closest = {**closest_choice["closest"], "width": width}
    reason = (
        f"no (λ, width) meets {wanted}{budget}: the highest {METRIC_NAMES[metric]} is "
        f"{_percent(closest[metric])} at width {width:g}, λ = {closest['lambda']:g} "
        f"({METRIC_NAMES[objective]} {_percent(closest[objective])}), "
        f"{100.0 * closest_choice['shortfall']:.2f} points short (of {num_points} points measured)"
    )
    return {**closest_choice, **answer, "width": None, "closest": closest, "reason": reason}


def _check_result(result: Any) -> None:
    if not isinstance(result, Mapping) or any(k not in result for k in _RESULT_KEYS):
        keys = sorted(result) if isinstance(result, Mapping) else type(result).__name__
        raise ValueError(
            "`result` must be the dict returned by `evaluate_lambda_grid`, with keys "
            f"{list(_RESULT_KEYS)}. Received: result with keys {keys}"
        )


def curve_from_evaluation(result: Mapping[str, Any], ra_attack: str = WORST_CASE) -> List[Dict[str, float]]:
    """Builds the SA-RA curve of an `evaluate_lambda_grid` result.

    Args:
        result: dict, as returned by `evaluate_lambda_grid` (or merged by
            `results.merge_results`).
        ra_attack: str, `WORST_CASE` ("worst_case": a sample counts as robust
            only if it is classified correctly clean and under every evaluated
            attack) or the name of one evaluated attack (a key of
            `result["robust_accuracy"]`, e.g. "PGD-20").

    Returns:
        list of dict `{"lambda", "sa", "ra"}`, sorted by λ, fractions.
    """
    _check_result(result)
    if ra_attack == WORST_CASE:
        robust = result["worst_case_accuracy"]
    elif isinstance(ra_attack, str) and ra_attack in result["robust_accuracy"]:
        robust = result["robust_accuracy"][ra_attack]
    else:
        raise ValueError(
            f"`ra_attack` must be {WORST_CASE!r} or one of the evaluated attacks "
            f"{sorted(result['robust_accuracy'])}. Received: ra_attack={ra_attack!r}"
        )
    curve = []
    for lam in result["lambdas"]:
        key = repr(float(lam))  # As `robust_eval.lambda_key`.
        if key not in result["clean_accuracy"] or key not in robust:
            raise ValueError(
                f"`result` must hold SA and RA for every λ of result['lambdas']. "
                f"Received: result without λ = {key} (clean keys "
                f"{sorted(result['clean_accuracy'])}, RA keys {sorted(robust)})"
            )
        curve.append({"lambda": float(lam), "sa": result["clean_accuracy"][key], "ra": robust[key]})
    return check_curve(curve)


def format_curve_table(
    curve: Sequence[Mapping[str, float]], choice: Mapping[str, Any], ra_label: str
) -> str:
    """Formats a curve and a choice as a Markdown table, percentages.

    Args:
        curve: sequence of `{"lambda", "sa", "ra"}` points.
        choice: dict, as returned by `choose_lambda` on that curve.
        ra_label: str, what RA measures (e.g. "worst case" or "PGD-20").

    Returns:
        str, columns λ, SA (%), RA <ra_label> (%), whether the point meets the
        constraint, and "◀ chosen" on the chosen row.
    """
    points = check_curve(curve)
    wanted = describe_constraint(choice["constraint"])
    lines = [
        f"| λ | SA (%) | RA {ra_label} (%) | {wanted} | |",
        "|---|---:|---:|:---:|---|",
    ]
    feasible = set(choice["feasible_lambdas"])
    for p in points:
        chosen = "◀ chosen" if choice["feasible"] and p["lambda"] == choice["lambda"] else ""
        lines.append(
            f"| {p['lambda']:g} | {100.0 * p['sa']:.2f} | {100.0 * p['ra']:.2f} | "
            f"{'yes' if p['lambda'] in feasible else 'no'} | {chosen} |"
        )
    return "\n".join(lines) + "\n"


def add_calibration(
    model_card: Optional[Mapping[str, Any]], calibration: Mapping[str, Any]
) -> Dict[str, Any]:
    """Returns a copy of `model_card` whose `calibration` entry is `calibration`.

    Every other entry (e.g. the test table measured at training time) is kept;
    an earlier `calibration` entry is replaced.

    Args:
        model_card: dict or None (an export without a model card).
        calibration: dict, plain JSON.

    Returns:
        dict, the new model card.
    """
    if model_card is not None and not isinstance(model_card, Mapping):
        raise ValueError(
            "`model_card` must be a dict or None. "
            f"Received: model_card of type {type(model_card).__name__}"
        )
    if not isinstance(calibration, Mapping):
        raise ValueError(
            f"`calibration` must be a dict. Received: calibration of type {type(calibration).__name__}"
        )
    return {**(dict(model_card) if model_card else {}), "calibration": dict(calibration)}
