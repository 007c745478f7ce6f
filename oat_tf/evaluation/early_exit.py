"""Entropy-based early exit for multi-exit networks (RDI-Nets, Appendix C).

A network with M side exits and the final output (M + 1 outputs, exit index
0..M, M meaning "final") lets each input leave at the first side exit i whose
softmax entropy is below its threshold t_i:

    H(p) = −Σ_c p_c log(p_c + ENTROPY_EPSILON),   p = softmax(logits),
    exit(x) = min{i < M : H(f_i(x)) < t_i}, or M when no side exit fires.

The comparison is strict, so a threshold of `min` entropy lets nobody out at
that exit on the data it was computed from, and a NaN entropy never exits.

**Threshold calibration** (`calibrate_thresholds`) runs on a validation split
and chooses the M thresholds one after the other from target usage fractions
u_0..u_M of the M + 1 outputs (Σ u = 1):

1. Cumulative target counts: C_i = floor(N · (u_0 + … + u_i) + 1/2) for
   i < M, so every target count is within one sample of N · u_i and the
   counts sum to N.
2. For side exit i = 0..M−1 in order, among the r samples still remaining
   (not exited at 0..i−1), with sorted exit-i entropies v_1 ≤ … ≤ v_r, the
   number to let out is n = clip(C_i − (samples exited so far), 0, r):
   n = 0 → t_i = v_1; n = r → t_i = the next float32 above v_r; otherwise
   t_i lies strictly between v_n and v_{n+1} (their float32 midpoint, or
   v_{n+1} when no float32 lies between), so exactly n samples exit.
   Ties (v_n = v_{n+1}): the tied block is let out whole or kept whole,
   whichever count is closer to n (kept when equally close); the next
   exit's target absorbs the difference, since targets are cumulative.
   When no sample remains, t_i is the minimum of exit i's entropies.
3. Everything is computed in float32, like `exit_rule.entropy` and
   `exit_rule.select_exits`, so `select_exits` on the calibration logits
   reproduces the calibrated usage.

Targets:

* "equal_usage" (the paper's rule, after Huang et al.'s MSDNet: equal exit
  probabilities, "the contribution of middle branches slightly larger than
  the early branches"): u_i ∝ 1 for the first side exit and for the final
  output, 1 + middle_bonus for the other (middle) side exits. M = 2,
  middle_bonus = 0.2: u = (1, 1.2, 1) / 3.2 = (0.3125, 0.375, 0.3125).
* "flops_budget": one knob s ∈ [−1, 1] blends the equal-usage profile u^eq
  toward "everyone at exit 1" (s < 0: (1 + s)·u^eq − s·e_0) or toward
  "everyone at the final output" (s > 0: (1 − s)·u^eq + s·e_M). The average
  cost on the validation split grows with s; bisection (64 halvings) finds
  the largest s whose thresholds give an average cost ≤ `budget`. Feasible
  budgets lie in [exit_costs[0], exit_costs[M]].

Example:

```python
logits = model({"image": x_val, "lambda": lam}, training=False)
names = ("exit_1", "exit_2", "final")
entropies = np.stack([exit_rule.entropy(logits[n]).numpy() for n in names[:-1]], 1)
thresholds = early_exit.calibrate_thresholds(entropies, exit_costs=costs)
exit_index, chosen = exit_rule.select_exits([logits[n] for n in names], thresholds)
print(early_exit.exit_distribution(exit_index, 3), early_exit.average_cost(exit_index, costs))
```
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple

import numpy as np
from absl import logging

TARGETS = ("equal_usage", "flops_budget")
# Extra usage share of the middle side exits under "equal_usage" (1 for the
# first side exit and the final output, 1 + DEFAULT_MIDDLE_BONUS for the others).
DEFAULT_MIDDLE_BONUS = 0.2
# Halvings of the flops_budget knob s ∈ [−1, 1]: far below one sample's step.
_BISECTION_STEPS = 64


# === Calibration ===


def equal_usage_fractions(
    num_side_exits: int, middle_bonus: float = DEFAULT_MIDDLE_BONUS
) -> np.ndarray:
    """Target usage of the M + 1 outputs under the "equal_usage" rule.

    u_i ∝ 1 for the first side exit and the final output, 1 + middle_bonus
    for side exits 2..M.

    Args:
        num_side_exits: int M >= 1.
        middle_bonus: float >= 0.

    Returns:
        np.ndarray of shape [M + 1], float64, summing to 1.
    """
    _check_int("num_side_exits", num_side_exits, minimum=1)
    _check_nonnegative("middle_bonus", middle_bonus)
    weights = np.ones(num_side_exits + 1, np.float64)
    weights[1:num_side_exits] += middle_bonus
    return weights / weights.sum()


def calibrate_thresholds(
    entropies: np.ndarray,
    *,
    exit_costs: Optional[Sequence[float]] = None,
    target: str = "equal_usage",
    budget: Optional[float] = None,
    middle_bonus: float = DEFAULT_MIDDLE_BONUS,
) -> np.ndarray:
    """Chooses the side exits' entropy thresholds on a validation split.

    See the module docstring for the exact rule: sequential per-exit
    quantiles of the remaining samples' entropies that meet cumulative
    target counts ("equal_usage"), or the equal-usage profile blended toward
    the first or the last output until the average cost meets `budget`
    ("flops_budget").

    Args:
        entropies: array [N, M], float32 entropies (from `exit_rule.entropy`) of the M
            side exits on the validation split, N >= 1, finite.
        exit_costs: M + 1 non-decreasing costs (e.g. MACs per image) of
            leaving at each output (`oat_tf.models.multi_exit.exit_macs`,
            in output order); required by "flops_budget".
        target: "equal_usage" or "flops_budget".
        budget: float, the largest average cost per image allowed; required by
            "flops_budget", must be None otherwise. Feasible budgets lie in
            [exit_costs[0], exit_costs[M]].
        middle_bonus: float >= 0, the extra usage share of the middle side
            exits in the equal-usage profile.

    Returns:
        np.ndarray of shape [M], float32 thresholds.
    """
    entropies = _check_entropies(entropies)
    num_side = entropies.shape[1]
    if target not in TARGETS:
        raise ValueError(f"`target` must be one of {TARGETS}. Received: target={target!r}")
    costs = None if exit_costs is None else _check_costs(exit_costs, num_side)
    fractions = equal_usage_fractions(num_side, middle_bonus)
    if target == "equal_usage":
        if budget is not None:
            raise ValueError(
                "`budget` must be None unless target='flops_budget'. "
                f"Received: budget={budget!r}"
            )
        thresholds, exits = _calibrate_to_fractions(entropies, fractions)
        logging.info(
            "calibrate_thresholds(equal_usage): thresholds=%s usage=%s target=%s",
            thresholds.tolist(),
            exit_distribution(exits, num_side + 1).round(4).tolist(),
            fractions.round(4).tolist(),
        )
        return thresholds
    if costs is None:
        raise ValueError(
            "`exit_costs` must be given (M + 1 costs) for target='flops_budget'. "
            "Received: exit_costs=None"
        )
    if (
        budget is None
        or isinstance(budget, bool)
        or not isinstance(budget, numbers.Real)
        or not math.isfinite(budget)
    ):
        raise ValueError(
            "`budget` must be a finite number (the target average cost per image) "
            f"for target='flops_budget'. Received: budget={budget!r}"
        )
    if not costs[0] <= budget <= costs[-1]:
        raise ValueError(
            f"`budget` must lie in [{costs[0]:g}, {costs[-1]:g}]: every input "
            f"leaving at the first exit costs {costs[0]:g} on average, every input "
            f"running to the final output {costs[-1]:g}. Received: budget={budget!r}"
        )
    return _calibrate_to_budget(entropies, fractions, costs, float(budget))


def exit_distribution(exit_index, num_outputs: int) -> np.ndarray:
    """Fraction of samples that leave at each output.

    Args:
        exit_index: array or tensor [N] of ints in 0..num_outputs − 1, N >= 1.
        num_outputs: int M + 1.

    Returns:
        np.ndarray of shape [num_outputs], float64, summing to 1.
    """
    _check_int("num_outputs", num_outputs, minimum=1)
    exit_index = _check_exit_index(exit_index, num_outputs)
    return np.bincount(exit_index, minlength=num_outputs) / float(len(exit_index))


def average_cost(exit_index, exit_costs: Sequence[float]) -> float:
    """Average cost per sample of leaving at `exit_index`.

    Args:
        exit_index: array or tensor [N] of ints in 0..M, N >= 1.
        exit_costs: M + 1 costs of leaving at each output.

    Returns:
        float, mean of `exit_costs[exit_index]`.
    """
    costs = np.asarray(exit_costs, np.float64)
    if costs.ndim != 1 or costs.size < 1 or not np.all(np.isfinite(costs)):
        raise ValueError(
            "`exit_costs` must be a non-empty sequence of finite numbers. "
            f"Received: exit_costs={exit_costs!r}"
        )
    exit_index = _check_exit_index(exit_index, costs.size)
    return float(costs[exit_index].mean())


# === Calibration internals ===


def _calibrate_to_fractions(
    entropies: np.ndarray, fractions: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """Sequential thresholds for target fractions; returns (thresholds, exits)."""
    num_samples, num_side = entropies.shape
    cumulative = np.floor(num_samples * np.cumsum(fractions)[:num_side] + 0.5)
    cumulative = np.clip(cumulative, 0, num_samples).astype(np.int64)
    remaining = np.ones(num_samples, bool)
    exits = np.full(num_samples, num_side, np.int32)
    thresholds = np.zeros(num_side, np.float32)
    exited = 0
    for i in range(num_side):
        column = entropies[:, i]
        values = np.sort(column[remaining])
        if values.size == 0:
            thresholds[i] = column.min()
            continue
        wanted = int(np.clip(cumulative[i] - exited, 0, values.size))
        thresholds[i] = _threshold_for_count(values, wanted)
        fires = remaining & (column < thresholds[i])
        exits[fires] = i
        exited += int(fires.sum())
        remaining &= ~fires
    return thresholds, exits


def _threshold_for_count(values: np.ndarray, wanted: int) -> np.float32:
    """A float32 t with #(values < t) as close to `wanted` as ties allow.

    Args:
        values: sorted float32 array, non-empty.
        wanted: int in [0, len(values)].
    """
    size = values.size
    if wanted == 0:
        return values[0]
    if wanted == size:
        return _next_up(values[-1])
    below, above = values[wanted - 1], values[wanted]
    if below < above:
        return _between(below, above)
    # A tie straddles the wanted count: let the tied block out or keep it.
    keep_count = int(np.searchsorted(values, below, side="left"))
    out_count = int(np.searchsorted(values, below, side="right"))
    if wanted - keep_count <= out_count - wanted:
        return below
    return _between(below, values[out_count]) if out_count < size else _next_up(below)


def _between(low: np.float32, high: np.float32) -> np.float32:
    """A float32 t with low < t <= high (the midpoint where one exists)."""
    middle = np.float32((np.float64(low) + np.float64(high)) / 2.0)
    return middle if middle > low else high


def _next_up(value: np.float32) -> np.float32:
    return np.nextafter(np.float32(value), np.float32(np.inf))


def _blended_fractions(fractions: np.ndarray, knob: float) -> np.ndarray:
    """s < 0 blends toward everyone at exit 0, s > 0 toward everyone at M."""
    corner = np.zeros_like(fractions)
    corner[0 if knob < 0 else -1] = 1.0
    weight = abs(knob)
    return (1.0 - weight) * fractions + weight * corner


def _calibrate_to_budget(
    entropies: np.ndarray, fractions: np.ndarray, costs: np.ndarray, budget: float
) -> np.ndarray:
    """Bisection on the blend knob for the largest average cost <= budget."""

    def evaluate(knob: float) -> Tuple[np.ndarray, float, np.ndarray]:
        thresholds, exits = _calibrate_to_fractions(
            entropies, _blended_fractions(fractions, knob)
        )
        return thresholds, average_cost(exits, costs), exits

    best = evaluate(1.0)
    if best[1] > budget:
        low, high = -1.0, 1.0
        best = evaluate(low)  # Everyone at exit 0: costs[0] <= budget.
        for _ in range(_BISECTION_STEPS):
            middle = 0.5 * (low + high)
            candidate = evaluate(middle)
            if candidate[1] <= budget:
                low = middle
                if candidate[1] >= best[1]:
                    best = candidate
            else:
                high = middle
    thresholds, cost, exits = best
    logging.info(
        "calibrate_thresholds(flops_budget): budget=%g average cost=%g "
        "thresholds=%s usage=%s",
        budget,
        cost,
        thresholds.tolist(),
        exit_distribution(exits, costs.size).round(4).tolist(),
    )
    return thresholds


# === Argument checks ===


def _check_entropies(entropies: np.ndarray) -> np.ndarray:
    array = np.asarray(entropies)
    if (
        array.ndim != 2
        or array.shape[0] < 1
        or array.shape[1] < 1
        or not np.issubdtype(array.dtype, np.number)
        or not np.all(np.isfinite(array))
    ):
        raise ValueError(
            "`entropies` must be a finite array of shape [N, M] (N >= 1 validation "
            "samples, M >= 1 side exits). Received: entropies with shape "
            f"{array.shape} and dtype {array.dtype}"
        )
    return array.astype(np.float32)


def _check_costs(exit_costs: Sequence[float], num_side: int) -> np.ndarray:
    costs = np.asarray(exit_costs, np.float64)
    if (
        costs.shape != (num_side + 1,)
        or not np.all(np.isfinite(costs))
        or np.any(costs < 0)
        or np.any(np.diff(costs) < 0)
    ):
        raise ValueError(
            f"`exit_costs` must be {num_side + 1} finite, non-negative, "
            "non-decreasing costs (one per output, side exits then final). "
            f"Received: exit_costs={list(np.ravel(exit_costs))!r}"
        )
    return costs


def _check_exit_index(exit_index, num_outputs: int) -> np.ndarray:
    array = np.asarray(exit_index)
    if (
        array.ndim != 1
        or array.size < 1
        or not np.issubdtype(array.dtype, np.integer)
        or array.min() < 0
        or array.max() >= num_outputs
    ):
        raise ValueError(
            f"`exit_index` must be a non-empty 1-D integer array with values in "
            f"[0, {num_outputs}). Received: exit_index with shape {array.shape} "
            f"and dtype {array.dtype}"
        )
    return array.astype(np.int64)


def _check_int(name: str, value: int, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}")


def _check_nonnegative(name: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"`{name}` must be a finite number >= 0. Received: {name}={value!r}")
