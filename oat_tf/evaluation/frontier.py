"""PGD-AT frontier points: SA and RA of fixed-λ runs, read from their directories.

The OAT paper compares one OAT model against PGD-AT models trained separately
at fixed λ; their (SA, RA) points form the "SA-RA frontier" (Fig. 4, 5, 8).
A frontier run is a directory holding either

- `evaluation.json` (the output directory of `python -m oat_tf.evaluate`), or
- `test_eval.json` (a training run directory of `python -m oat_tf.train`);

`evaluation.json` wins when both are there. The run's training λ is the single
value of `lambda_sampling.values` in its `config.json`, looked up in the
directory itself, then in the result's `source` (the evaluated run), then in
the parent directory (`<run>/evaluation_test/`). A run trained on several λ
is not a frontier point and is refused.

Reading is in two steps, so bad directories fail before a long evaluation:
`load_frontier_run` (files, config, λ) and `frontier_point` (the numbers for
one attack). All points of a plot use the same attack. When a frontier run was
not evaluated with that attack (same `AttackConfig` settings), the closest one
it has is used instead, compared in this order: same attack family
(`name`), same targeted flag, relative ε difference, |log| ratio of steps
(queries for Square), |log| ratio of restarts, relative step-size difference,
then the label; the substitution is logged as a warning and kept in the
point's `notes`. The λ read is the run's training λ, or the closest evaluated
λ (noted, unless the model is `plain`, which ignores λ).

```python
run = frontier.load_frontier_run("runs/pgdat_0.3")
point = frontier.frontier_point(run, "PGD-20", settings, dataset="cifar10")
point.clean_accuracy, point.robust_accuracy
```
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Dict, Optional, Tuple

from absl import logging

from oat_tf.evaluation import results as results_lib

RESULT_FILES = ("evaluation.json", "test_eval.json")


@dataclasses.dataclass(frozen=True)
class FrontierRun:
    """A fixed-λ run's saved evaluation.

    Attributes:
        name: str, the run's name (its config's `name`, else the directory
            name).
        directory: str, the directory given.
        result_path: str, the result file read.
        result: dict, the evaluation result.
        config: dict, the run's `config.json`.
        lambda_value: float, the training λ.
    """

    name: str
    directory: str
    result_path: str
    result: Dict[str, Any]
    config: Dict[str, Any]
    lambda_value: float


@dataclasses.dataclass(frozen=True)
class FrontierPoint:
    """One PGD-AT point of the SA-RA frontier.

    Attributes:
        name: str, the run's name.
        directory: str, the run's directory.
        lambda_value: float, the run's training λ.
        lambda_key: str, the λ key the numbers were read at.
        clean_accuracy: float, SA in [0, 1].
        robust_accuracy: float, RA in [0, 1] under `attack`.
        attack: str, the attack label the RA was read under.
        notes: tuple of str, substitutions made (another attack, another λ,
            other data).
    """

    name: str
    directory: str
    lambda_value: float
    lambda_key: str
    clean_accuracy: float
    robust_accuracy: float
    attack: str
    notes: Tuple[str, ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        """Returns the point as a JSON-serialisable dict."""
        return {**dataclasses.asdict(self), "notes": list(self.notes)}


def _read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def _find_config(directory: str, result: Dict[str, Any]) -> Tuple[Dict[str, Any], str]:
    candidates = [directory]
    if isinstance(result.get("source"), str):
        candidates.append(result["source"])
    candidates.append(os.path.dirname(os.path.abspath(directory)))
    for candidate in candidates:
        if os.path.isfile(os.path.join(candidate, "config.json")):
            return _read_json(os.path.join(candidate, "config.json")), candidate
    raise FileNotFoundError(
        "A frontier run needs its config.json (for its training λ). Expected it in "
        f"{candidates}. Received: frontier run {directory!r}"
    )


def load_frontier_run(directory: str) -> FrontierRun:
    """Reads a fixed-λ run's result and config.

    Args:
        directory: str, a run directory with `test_eval.json` or an
            evaluation directory with `evaluation.json`.

    Returns:
        FrontierRun.

    Raises:
        FileNotFoundError: no result file, or no config.json found.
        ValueError: the result is malformed, or the run was not trained at
            one fixed λ.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"A frontier run must be a directory. Received: frontier run {directory!r}"
        )
    paths = [os.path.join(directory, name) for name in RESULT_FILES]
    result_path = next((p for p in paths if os.path.isfile(p)), None)
    if result_path is None:
        raise FileNotFoundError(
            f"A frontier run must hold one of {list(RESULT_FILES)}. "
            f"Received: frontier run {directory!r}"
        )
    result = _read_json(result_path)
    try:
        results_lib.check_result(result)
    except ValueError as error:
        raise ValueError(f"{result_path}: {error}") from None
    config, _ = _find_config(directory, result)
    values = list(config.get("lambda_sampling", {}).get("values", []))
    if len(values) != 1:
        raise ValueError(
            "A frontier run must be trained at one fixed λ (PGD-AT, "
            "`--lambda_sampling=fixed --lambda_values=λ`). "
            f"Received: frontier run {directory!r} trained on λ values {values}"
        )
    name = config.get("name") or os.path.basename(os.path.abspath(directory))
    return FrontierRun(
        name=str(name),
        directory=directory,
        result_path=result_path,
        result=result,
        config=config,
        lambda_value=float(values[0]),
    )


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def _log_ratio(a: Any, b: Any) -> float:
    a = max(float(a if a is not None else 1), 1.0)
    b = max(float(b if b is not None else 1), 1.0)
    return abs(math.log(a / b))


def _same_settings(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    for key in set(a) & set(b):
        x, y = a[key], b[key]
        if isinstance(x, float) or isinstance(y, float):
            if not math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif x != y:
            return False
    return True


def _distance(settings: Dict[str, Any], target: Dict[str, Any]) -> tuple:
    steps_key = "num_queries" if target.get("name") == "square" else "num_steps"
    return (
        settings.get("name") != target.get("name"),
        bool(settings.get("targeted")) != bool(target.get("targeted")),
        _relative(float(settings.get("epsilon", 0.0)), float(target.get("epsilon", 0.0))),
        _log_ratio(settings.get(steps_key), target.get(steps_key)),
        _log_ratio(settings.get("num_restarts"), target.get("num_restarts")),
        _relative(float(settings.get("step_size", 0.0)), float(target.get("step_size", 0.0))),
    )


def closest_attack(
    result: Dict[str, Any], label: str, settings: Optional[Dict[str, Any]]
) -> Tuple[str, bool]:
    """Returns the attack of `result` that matches, or is closest to, `label`.

    Args:
        result: dict, an evaluation result with at least one attack.
        label: str, the wanted attack's label.
        settings: optional dict, the wanted attack's `AttackConfig` fields;
            without them only labels are compared.

    Returns:
        (label in `result`, whether it is the same attack).

    Raises:
        ValueError: `result` has no attacks.
    """
    candidates = list(result["robust_accuracy"])
    if not candidates:
        raise ValueError(
            "`result` must hold at least one attack to give a robust accuracy. "
            "Received: a result without attacks"
        )
    if settings is None:
        return (label, True) if label in candidates else (candidates[0], False)
    for candidate in candidates:
        own = results_lib.attack_settings(result, candidate)
        if own is not None and _same_settings(own, settings):
            return candidate, True
        if own is None and candidate == label:
            return candidate, True

    def key(candidate: str) -> tuple:
        own = results_lib.attack_settings(result, candidate)
        distance = _distance(own, settings) if own is not None else (True,) * 2 + (math.inf,) * 4
        return distance + (candidate != label, candidate)

    return min(candidates, key=key), False


def _closest_lambda_key(result: Dict[str, Any], lam: float) -> Tuple[str, float]:
    keys = results_lib.lambda_keys(result)
    index = min(range(len(keys)), key=lambda i: abs(float(result["lambdas"][i]) - lam))
    return keys[index], float(result["lambdas"][index])


def frontier_point(
    run: FrontierRun,
    attack: str,
    settings: Optional[Dict[str, Any]] = None,
    *,
    dataset: Optional[str] = None,
    num_examples: Optional[int] = None,
) -> FrontierPoint:
    """Returns a frontier run's SA and RA under `attack` at its training λ.

    Args:
        run: FrontierRun, from `load_frontier_run`.
        attack: str, the attack label used for every point of the plot.
        settings: optional dict, that attack's `AttackConfig` fields (from
            the evaluation's `attacks`), to match attacks by settings.
        dataset: optional str, the dataset of the evaluation the point is
            compared with; a run evaluated on another one gets a note.
        num_examples: optional int, that evaluation's number of examples; a
            run evaluated on another number gets a note.

    Returns:
        FrontierPoint; every substitution is logged as a warning and listed
        in `notes`.
    """
    result, notes = run.result, []
    label, exact = closest_attack(result, attack, settings)
    if not exact:
        notes.append(
            f"no {attack} with the same settings in {run.result_path}; "
            f"RA under its closest attack {label}"
        )
    key, lam = _closest_lambda_key(result, run.lambda_value)
    variant = run.config.get("model", {}).get("variant")
    if not math.isclose(lam, run.lambda_value, abs_tol=1e-9) and variant != "plain":
        notes.append(f"not evaluated at its training λ {run.lambda_value:g}; read at λ {key}")
    run_dataset = result.get("dataset") or run.config.get("data", {}).get("dataset")
    if dataset is not None and run_dataset is not None and run_dataset != dataset:
        notes.append(f"evaluated on {run_dataset}, not {dataset}")
    if num_examples is not None and result.get("num_examples") != num_examples:
        notes.append(f"evaluated on {result.get('num_examples')} examples, not {num_examples}")
    for note in notes:
        logging.warning("Frontier run %s (λ=%g): %s.", run.name, run.lambda_value, note)
    return FrontierPoint(
        name=run.name,
        directory=run.directory,
        lambda_value=run.lambda_value,
        lambda_key=key,
        clean_accuracy=float(result["clean_accuracy"][key]),
        robust_accuracy=float(result["robust_accuracy"][label][key]),
        attack=label,
        notes=tuple(notes),
    )
