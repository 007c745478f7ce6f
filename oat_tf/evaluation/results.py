"""The result dict of a λ-grid evaluation: checks and accessors.

`robust_eval.evaluate_lambda_grid` returns, and `evaluation.json` /
`test_eval.json` hold, one dict:

- `num_examples`, `seed`, `lambdas` (sorted floats),
- `clean_accuracy` ({λ key: SA}), `robust_accuracy` ({attack label: {λ key:
  RA}}), `worst_case_accuracy` ({λ key: accuracy}), fractions in [0, 1],
- `attacks` (list of dicts: `label` plus every `AttackConfig` field).

The helpers here are what the report, the plots and the TensorBoard logging
share: validation, the λ keys in order, seen/unseen λ, the strongest attack
and an attack's settings.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

RESULT_KEYS = (
    "num_examples",
    "lambdas",
    "clean_accuracy",
    "robust_accuracy",
    "worst_case_accuracy",
)
# What was measured, without what a report adds (plots, paths): the keys a
# model card and a study's combined results copy from a result.
MEASURED_KEYS = (
    "num_examples",
    "seed",
    "lambdas",
    "clean_accuracy",
    "robust_accuracy",
    "worst_case_accuracy",
    "attacks",
)


def check_result(result: Any) -> None:
    """Raises ValueError unless `result` has the keys of an evaluation result.

    Args:
        result: the object to check.
    """
    if not isinstance(result, dict) or any(k not in result for k in RESULT_KEYS):
        keys = sorted(result) if isinstance(result, dict) else type(result).__name__
        raise ValueError(
            "`result` must be the dict returned by `evaluate_lambda_grid`, with keys "
            f"{list(RESULT_KEYS)}. Received: result with keys {keys}"
        )


def lambda_keys(result: dict) -> List[str]:
    """Returns the result's λ keys, in the order of `result["lambdas"]`.

    Args:
        result: dict, an evaluation result.

    Returns:
        list of str, the keys of `clean_accuracy` (one per λ).
    """
    keys = list(result["clean_accuracy"])
    if len(keys) != len(result["lambdas"]):
        raise ValueError(
            "`result` must have one clean accuracy per λ. Received: result with "
            f"lambdas={result['lambdas']} and clean_accuracy keys {keys}"
        )
    return keys


def is_seen(lam: float, seen: Sequence[float]) -> bool:
    """Whether `lam` is one of the training values `seen` (to 1e-9)."""
    return any(math.isclose(lam, s, rel_tol=0.0, abs_tol=1e-9) for s in seen)


def strongest_attack(result: dict) -> Optional[str]:
    """Returns the name of the attack with the lowest RA averaged over λ.

    Args:
        result: dict, as returned by `evaluate_lambda_grid`.

    Returns:
        str, the attack name (the first one on ties), or None without attacks.
    """
    check_result(result)
    robust = result["robust_accuracy"]
    if not robust:
        return None
    return min(robust, key=lambda label: sum(robust[label].values()) / len(robust[label]))


def resolve_attack(result: dict, attack: Optional[str]) -> Optional[str]:
    """Returns the attack label to plot: `attack`, or the strongest one.

    Args:
        result: dict, an evaluation result.
        attack: optional str, an attack label of `result`; None picks
            `strongest_attack(result)`.

    Returns:
        str, a key of `result["robust_accuracy"]`, or None if the result has
        no attacks (and `attack` is None).

    Raises:
        ValueError: `attack` is not one of the result's attacks.
    """
    check_result(result)
    if attack is None:
        return strongest_attack(result)
    if attack not in result["robust_accuracy"]:
        raise ValueError(
            f"`attack` must be one of the evaluated attacks {list(result['robust_accuracy'])}. "
            f"Received: attack={attack!r}"
        )
    return attack


def attack_settings(result: dict, label: str) -> Optional[Dict[str, Any]]:
    """Returns the settings (`AttackConfig` fields) of the attack `label`.

    Args:
        result: dict, an evaluation result.
        label: str, an attack label.

    Returns:
        dict without the `label` key, or None if `result["attacks"]` does not
        describe that attack.
    """
    for attack in result.get("attacks") or ():
        if attack.get("label") == label:
            return {k: v for k, v in attack.items() if k != "label"}
    return None


def merge_results(parts: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Merges per-λ `evaluate_lambda_grid` results into one result.

    Args:
        parts: sequence of results over the same data and attacks.

    Returns:
        dict in the format of `evaluate_lambda_grid`.
    """
    merged = {k: v for k, v in parts[0].items()}
    merged["lambdas"] = sorted(set(l for p in parts for l in p["lambdas"]))
    for field in ("clean_accuracy", "worst_case_accuracy"):
        merged[field] = {k: v for p in parts for k, v in p[field].items()}
    merged["robust_accuracy"] = {
        label: {k: v for p in parts for k, v in p["robust_accuracy"][label].items()}
        for label in parts[0]["robust_accuracy"]
    }
    # Paired counts only when every part has them (parts saved by an older
    # version do not): the masking checks then fall back to comparing RAs.
    if all("robust_only" in p for p in parts):
        merged["robust_only"] = {
            a: {b: {k: v for p in parts for k, v in p["robust_only"][a][b].items()} for b in row}
            for a, row in parts[0]["robust_only"].items()
        }
    else:
        merged.pop("robust_only", None)
    return merged
