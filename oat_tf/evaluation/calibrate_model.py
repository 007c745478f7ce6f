"""Calibrating λ (and width) of a trained model on held-out validation data.

The library behind `python -m oat_tf.calibrate` (see that module for the
command line and exit codes): `calibrate` measures the SA-RA curve of a run or
SavedModel on the validation split the training run held out (never the test
split), chooses λ under the requirement with `calibration.choose_lambda` (or
λ × width with `choose_lambda_and_width`), writes calibration.json atomically
and, when asked and feasible, exports a SavedModel whose model card records
the choice.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, Optional, Sequence

import tqdm
from absl import logging

from oat_tf import atomic_files
from oat_tf import config as config_lib
from oat_tf import data
from oat_tf import export
from oat_tf import flags as oat_flags
from oat_tf import operating_point
from oat_tf import output_paths
from oat_tf.evaluation import calibration
from oat_tf.evaluation import loading
from oat_tf.evaluation import model_card
from oat_tf.evaluation import results as results_lib
from oat_tf.evaluation import robust_eval
from oat_tf.evaluation import width_grid
from oat_tf.export import saved_model as saved_model_lib

CALIBRATION_FILENAME = "calibration.json"
CALIBRATION_VERSION = 1
WORST_CASE = calibration.WORST_CASE


class CalibrationError(ValueError):
    """A request that cannot be calibrated as given (the message says why)."""


def _source_records(run_dir: Optional[str], saved_model: Optional[str]):
    """Returns (run config or None, model card or None) of the source."""
    if run_dir is not None:
        return loading.read_run_config(run_dir), None
    if not os.path.isfile(os.path.join(saved_model, "saved_model.pb")):
        raise CalibrationError(
            "`saved_model` must be a SavedModel directory (holding saved_model.pb). "
            f"Received: saved_model={saved_model!r}"
        )
    return None, saved_model_lib.load_model_card(saved_model)


def _data_config(
    recorded: Optional[Dict[str, Any]],
    where: str,
    dataset: Optional[str],
    data_dir: Optional[str],
    validation_size: Optional[int],
    num_examples: Optional[int],
) -> config_lib.DataConfig:
    """The data config whose validation split is the training run's held-out set."""
    if recorded is not None:
        if validation_size is not None:
            raise CalibrationError(
                f"`validation_size` must not be given: {where} records the training data "
                "config, and the validation split is the one that training held out "
                f"(validation_size={recorded.get('validation_size')!r}, None meaning the "
                f"dataset's default). Received: validation_size={validation_size}"
            )
        validation_size = recorded.get("validation_size")
        dataset = dataset or recorded.get("dataset")
        data_dir = data_dir or recorded.get("data_dir")
    elif dataset is None or validation_size is None:
        raise CalibrationError(
            f"`dataset` and `validation_size` are required: {where} records no training data "
            "config (an export without a model card from `oat_tf.train`). Pass the dataset and "
            "the number of training examples the training run held out (its --validation_size); "
            "a wrong value calibrates on examples the model was trained on. "
            f"Received: dataset={dataset!r}, validation_size={validation_size!r}"
        )
    return config_lib.DataConfig(
        dataset=dataset,
        data_dir=data_dir,
        validation_size=validation_size,
        num_eval_examples=num_examples,
    )


def load_validation_split(data_config: config_lib.DataConfig):
    """Returns the validation split named by `data_config`, and only it.

    The test split that `load_splits` also returns is dropped here, unread:
    nothing downstream of this function can reach it.

    Args:
        data_config: DataConfig of the training run (its validation size).

    Returns:
        ArraySplit, the validation examples.
    """
    splits = data.load_splits(data_config)
    validation = splits.validation
    del splits
    if validation is None:
        default = " (the dataset's default)" if data_config.validation_size is None else ""
        raise CalibrationError(
            f"{data_config.dataset!r} has no validation split for this model: its training run "
            f"held out no training examples (`--validation_size` was 0{default}). λ is chosen "
            "on held-out validation data only, never on the test split: retrain with "
            "`python -m oat_tf.train ... --validation_size=N` (e.g. 500 for the embedded "
            f"digits). Received: dataset={data_config.dataset!r}, "
            f"validation_size={data_config.validation_size!r}"
        )
    return validation


def _train_attack(
    recorded: Optional[Dict[str, Any]],
    where: str,
    epsilon: Optional[float],
    step_size: Optional[float],
) -> config_lib.AttackConfig:
    if recorded is None and (epsilon is None or step_size is None):
        raise CalibrationError(
            f"`epsilon` and `step_size` are required: {where} records no training attack (an "
            "export without a model card from `oat_tf.train`), and the attacks are defined "
            "relative to it. "
            f"Received: epsilon={epsilon!r}, step_size={step_size!r}"
        )
    attack = config_lib.AttackConfig(**recorded) if recorded is not None else config_lib.AttackConfig()
    fields = config_lib.to_dict(attack)
    if epsilon is not None:
        fields["epsilon"] = float(epsilon)
    if step_size is not None:
        fields["step_size"] = float(step_size)
    return config_lib.AttackConfig(**fields)


def _resolve_ra_attack(
    ra_attack: str, attack_list: Sequence[config_lib.AttackConfig], train_attack: config_lib.AttackConfig
) -> str:
    """Returns WORST_CASE or the label of one evaluated attack."""
    if ra_attack == WORST_CASE:
        return WORST_CASE
    labels = [a.describe() for a in attack_list]
    for label in labels:
        if label.lower() == str(ra_attack).strip().lower():
            return label
    try:
        parsed = oat_flags.parse_eval_attacks([ra_attack], train_attack)[0].describe()
    except ValueError:
        parsed = None
    if parsed in labels:
        return parsed
    raise CalibrationError(
        f"`ra_attack` must be {WORST_CASE!r} or one of the evaluated attacks {labels} (by label, "
        f"or by its --attacks name). Received: ra_attack={ra_attack!r}"
    )


def _check_export_dir(export_dir: str, saved_model: Optional[str]) -> None:
    target = os.path.abspath(export_dir)
    if saved_model is not None and target == os.path.abspath(saved_model):
        return
    try:
        output_paths.check_export_target(export_dir, argument="export_dir")
    except ValueError as error:
        raise CalibrationError(str(error)) from None


def _width_models(model, saved_model, widths, max_width):
    """[(width, model)] to calibrate over, or None for a model calibrated over λ only."""
    if not width_grid.is_slimmable(model, saved_model) and widths is None and max_width is None:
        return None
    if max_width is not None and not 0.0 < float(max_width) <= 1.0:
        raise CalibrationError(f"`max_width` must be in (0, 1]. Received: max_width={max_width!r}")
    try:
        candidates = width_grid.select_widths(model, widths, saved_model)
    except ValueError as error:
        raise CalibrationError(f"`widths`: {error}") from None
    if max_width is not None:
        within = [(w, m) for w, m in candidates if w <= float(max_width) + 1e-9]
        if not within:
            raise CalibrationError(
                f"`max_width` must allow at least one of the widths {[w for w, _ in candidates]}. "
                f"Received: max_width={max_width!r}"
            )
        candidates = within
    return candidates


def calibrate(
    *,
    run_dir: Optional[str] = None,
    saved_model: Optional[str] = None,
    min_sa: Optional[float] = None,
    min_ra: Optional[float] = None,
    lambdas: Sequence[float],
    attacks: Sequence[str] = config_lib.DEFAULT_CALIBRATION_ATTACKS,
    ra_attack: str = WORST_CASE,
    dataset: Optional[str] = None,
    data_dir: Optional[str] = None,
    validation_size: Optional[int] = None,
    epsilon: Optional[float] = None,
    step_size: Optional[float] = None,
    num_examples: Optional[int] = None,
    batch_size: int = 256,
    seed: int = 0,
    output_dir: Optional[str] = None,
    export_dir: Optional[str] = None,
    progress: bool = True,
    widths: Optional[Sequence[float]] = None,
    max_width: Optional[float] = None,
) -> Dict[str, Any]:
    """Measures the SA-RA curve on the validation split and chooses λ.

    Library form of the command line (see the module docstring); thresholds
    are fractions here.

    Args:
        run_dir: str or None, a training run directory.
        saved_model: str or None, an exported SavedModel. Exactly one of
            `run_dir` and `saved_model`.
        min_sa: float or None, required SA, a fraction in [0, 1].
        min_ra: float or None, required RA, a fraction in [0, 1]. Exactly one
            of `min_sa` and `min_ra`.
        lambdas: sequence of float, the λ grid, each in [0, 1].
        attacks: sequence of str, attack names as `--attacks`.
        ra_attack: str, "worst_case" or one attack (label or name).
        dataset: str or None, overrides the source's dataset.
        data_dir: str or None, overrides the source's tfds data directory.
        validation_size: int or None, only for a source that records no data
            config: the training run's validation size.
        epsilon: float or None, overrides the training attack's ε.
        step_size: float or None, overrides the training attack's step size.
        num_examples: int or None, use the first N validation examples.
        batch_size: int, evaluation batch size.
        seed: int, seed of the attacks.
        output_dir: str or None, where calibration.json goes (default
            `<run_dir>/calibration`; required with `saved_model`).
        export_dir: str or None, where the calibrated SavedModel goes (only
            written when a λ meets the requirement).
        progress: bool, show a progress bar over λ on stderr.
        widths: sequence of float or None, the candidate widths of a
            slimmable model (None: all of them). For a slimmable source (or
            with `widths` or `max_width`) the choice is a (λ, width) pair
            (`calibration.choose_lambda_and_width`) and the record gains
            `widths`, `max_width`, `curves` and `evaluation_per_width` (per
            width key); `curve` and `evaluation` are then those of the
            chosen (or closest) width, and `choice` has `width` and
            `signature_name`.
        max_width: float or None, the compute budget: only widths ≤ it.

    Returns:
        dict, the record written to calibration.json (`choice["feasible"]`
        says whether a λ meets the requirement; `operating_point` is the
        chosen point as `OperatingPoint.to_json`, or None; `export_dir` is
        None when nothing was exported).
    """
    constraint = calibration.check_constraint(min_sa=min_sa, min_ra=min_ra)
    if (run_dir is None) == (saved_model is None):
        raise CalibrationError(
            "Exactly one of `run_dir` and `saved_model` must be given. "
            f"Received: run_dir={run_dir!r}, saved_model={saved_model!r}"
        )
    where = f"run directory {run_dir!r}" if run_dir is not None else f"SavedModel {saved_model!r}"
    output_dir = output_dir or (os.path.join(run_dir, "calibration") if run_dir is not None else None)
    if output_dir is None:
        raise CalibrationError(
            "`output_dir` is required with `saved_model` (the default is <run_dir>/calibration). "
            "Received: output_dir=None"
        )
    if export_dir is not None:
        _check_export_dir(export_dir, saved_model)
    lambdas = config_lib.check_lambda_values("lambdas", lambdas)

    run_config, card = _source_records(run_dir, saved_model)
    recorded = run_config if run_config is not None else (card or {})
    data_config = _data_config(
        recorded.get("data"), where, dataset, data_dir, validation_size, num_examples
    )
    validation = load_validation_split(data_config)
    train_attack = _train_attack(recorded.get("train_attack"), where, epsilon, step_size)
    attack_list = oat_flags.parse_eval_attacks(list(attacks), train_attack)
    ra_label = _resolve_ra_attack(ra_attack, attack_list, train_attack)

    if run_dir is not None:
        model, _ = loading.load_network_from_run(run_dir)
    else:
        model = loading.SavedModelClassifier(saved_model)
    logging.info(
        "Calibrating %s on %d validation examples of %s: %d λ, attacks %s, RA = %s, requirement %s.",
        where, validation.num_examples, data_config.dataset, len(lambdas),
        [a.describe() for a in attack_list], ra_label, calibration.describe_constraint(constraint),
    )
    dataset_batches = data.eval_dataset(validation, batch_size=batch_size)
    per_width = _width_models(model, saved_model, widths, max_width)

    def evaluate_model(evaluated, desc):
        parts = [
            robust_eval.evaluate_lambda_grid(evaluated, dataset_batches, [lam], attack_list, seed=seed)
            for lam in tqdm.tqdm(lambdas, desc=desc, unit="λ", file=sys.stderr, disable=not progress)
        ]
        return results_lib.merge_results(parts)

    width_fields = {}
    if per_width is None:
        result = evaluate_model(model, "λ")
        curve = calibration.curve_from_evaluation(result, ra_label)
        choice = calibration.choose_lambda(curve, **{f"min_{constraint['metric']}": constraint["minimum"]})
    else:
        results = {w: evaluate_model(m, f"λ (width {w:g})") for w, m in per_width}
        curves = {w: calibration.curve_from_evaluation(r, ra_label) for w, r in results.items()}
        choice = calibration.choose_lambda_and_width(
            curves, **{f"min_{constraint['metric']}": constraint["minimum"]}, max_width=max_width
        )
        shown = choice["width"] if choice["feasible"] else choice["closest"]["width"]
        choice["signature_name"] = (
            export.width_signature_name(choice["width"]) if choice["feasible"] else None
        )
        result, curve = results[shown], curves[shown]
        width_fields = {
            "widths": [w for w, _ in per_width],
            "max_width": max_width,
            "curves": {robust_eval.lambda_key(w): c for w, c in curves.items()},
            "evaluation_per_width": {
                robust_eval.lambda_key(w): {
                    key: r[key] for key in ("clean_accuracy", "robust_accuracy", "worst_case_accuracy")
                }
                for w, r in results.items()
            },
        }

    record = {
        "calibration_version": CALIBRATION_VERSION,
        "source": {
            "run_dir": os.path.abspath(run_dir) if run_dir is not None else None,
            "saved_model": os.path.abspath(saved_model) if saved_model is not None else None,
        },
        "dataset": data_config.dataset,
        "split": "validation",
        "validation_size": data_config.validation_size,
        "num_examples": result["num_examples"],
        "lambdas": list(lambdas),
        "attacks": result["attacks"],
        "ra_attack": ra_label,
        "seed": seed,
        "constraint": choice["constraint"],
        "curve": curve,
        "choice": choice,
        # The chosen (λ, width), None when no λ meets the requirement.
        "operating_point": (
            operating_point.OperatingPoint(choice["lambda"], choice.get("width", 1.0)).to_json()
            if choice["feasible"] else None
        ),
        "evaluation": {
            key: result[key] for key in ("clean_accuracy", "robust_accuracy", "worst_case_accuracy")
        },
        **width_fields,
        "accuracy": "fractions in [0, 1]",
    }
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, CALIBRATION_FILENAME)
    atomic_files.write_json(path, {**record, "export_dir": None}, sort_keys=True)
    card_entry = dict(record)
    record["export_dir"] = None
    if export_dir is None or not choice["feasible"]:
        if export_dir is not None:
            logging.warning(
                "No λ meets %s: nothing exported to %s.",
                calibration.describe_constraint(constraint), export_dir,
            )
        return record

    if run_dir is not None:
        test_path = os.path.join(run_dir, "test_eval.json")
        # Test *results* of training, carried in the card as training wrote them;
        # they play no part in the choice above.
        test_results = None
        if os.path.isfile(test_path):
            with open(test_path) as f:
                test_results = json.load(f)
        widths_path = os.path.join(run_dir, "test_eval_widths.json")
        width_results = None
        if os.path.isfile(widths_path):
            with open(widths_path) as f:
                width_results = json.load(f)
        base_card = model_card.make_model_card(run_config, test_results, width_results)
        export.export_saved_model(
            model, export_dir, image_shape=tuple(run_config["model"]["input_shape"]),
            model_card=calibration.add_calibration(base_card, card_entry),
        )
    else:
        export.copy_with_model_card(
            saved_model, export_dir, calibration.add_calibration(card, card_entry)
        )
    record["export_dir"] = os.path.abspath(export_dir)
    atomic_files.write_json(path, record, sort_keys=True)
    return record
