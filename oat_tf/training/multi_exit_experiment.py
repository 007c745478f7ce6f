"""One RDI-Nets run: train, calibrate the exits, evaluate, export (SPEC §3).

`python -m oat_tf.train` with a multi-exit architecture ("rdi_small_cnn",
"rdi_resnet38", "rdi_mobilenet_v2") trains in `experiment.run_experiment` like
any run (a `MultiExitTrainer`: the hybrid loss on every exit, adversarial
images from `MultiExitConfig.defence`; checkpoints and TensorBoard, resumable),
then lands here:

1. calibrate the entropy thresholds on the validation split, never the test
   split (`early_exit.calibrate_thresholds`; `threshold_target="none"`
   disables early exit, which evaluates the backbone alone), and save them in
   `<run_dir>/exit_thresholds.json`; a λ-conditioned network is calibrated
   at every evaluation λ as well (`per_lambda`, the λ → thresholds table the
   export serves), and each λ is evaluated with its own row;
2. evaluate on the test split (`multi_exit_eval.evaluate_multi_exit`): TA,
   ATA per attack form, worst case, exit distributions, MFLOPs and the saving,
   and the delay-exit attack; written as `test_eval_multi_exit.{json,md}` and
   the exit-distribution plot;
3. export the adaptive SavedModel (samples that exit early are not computed
   further) with the thresholds and a model card.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from oat_tf import atomic_files
from oat_tf import config as config_lib
from oat_tf import data
from oat_tf import operating_point
from oat_tf.evaluation import early_exit
from oat_tf.evaluation import multi_exit_eval
from oat_tf.export import adaptive_saved_model
from oat_tf.models import exit_rule
from oat_tf.models import multi_exit
from oat_tf.reporting import multi_exit_report

THRESHOLDS_FILE = "exit_thresholds.json"


def validation_entropies(
    network: keras.Model, dataset: tf.data.Dataset, lam: float
) -> np.ndarray:
    """Softmax entropies of every side exit on a (validation) dataset.

    Args:
        network: multi-exit keras.Model.
        dataset: tf.data.Dataset of `(images, labels)` batches.
        lam: float, the λ fed to the network.

    Returns:
        float32 array [N, M], one column per side exit.
    """
    names = multi_exit.output_names(network)

    @tf.function
    def entropies(images):
        images = tf.cast(images, tf.float32)
        outputs = network(
            {"image": images, "lambda": tf.fill(tf.shape(images)[:1], tf.constant(lam, tf.float32))},
            training=False,
        )
        return tf.stack([exit_rule.entropy(outputs[name]) for name in names[:-1]], axis=1)

    parts = [entropies(images).numpy() for images, _ in dataset]
    if not parts:
        raise ValueError("The validation split is empty: thresholds cannot be calibrated on it.")
    return np.concatenate(parts, axis=0).astype(np.float32)


def calibrate(
    network: keras.Model,
    validation: Optional[tf.data.Dataset],
    multi_exit_config: config_lib.MultiExitConfig,
    lam: float,
) -> Dict[str, Any]:
    """Chooses the exit thresholds on the validation split.

    Args:
        network: multi-exit keras.Model.
        validation: tf.data.Dataset of the validation split, or None (allowed
            only with `threshold_target="none"`).
        multi_exit_config: MultiExitConfig.
        lam: float, the λ at which the thresholds are calibrated.

    Returns:
        dict: `thresholds` (JSON values, see
        `operating_point.thresholds_to_json`), `target`, `lambda`,
        `validation_exit_distribution` and `validation_average_macs` (None
        without calibration), `exit_macs`, `backbone_macs`.
    """
    names = multi_exit.output_names(network)
    macs = multi_exit.exit_macs(network)
    costs = [float(macs[n]) for n in names]
    backbone = float(multi_exit.backbone_macs(network))
    target = multi_exit_config.threshold_target
    record: Dict[str, Any] = {
        "target": target, "lambda": float(lam), "exit_macs": {n: int(macs[n]) for n in names},
        "backbone_macs": int(backbone), "split": "validation",
        "validation_exit_distribution": None, "validation_average_macs": None,
    }
    if target == "none":
        record["thresholds"] = operating_point.thresholds_to_json([-np.inf] * (len(names) - 1))
        return record
    if validation is None:
        raise ValueError(
            "Early-exit thresholds are calibrated on a validation split, never the test split. "
            "Expected --validation_size > 0 (or --exit_thresholds=none). Received: no validation split"
        )
    entropies = validation_entropies(network, validation, lam)
    kwargs: Dict[str, Any] = {"exit_costs": costs, "target": target, "middle_bonus": multi_exit_config.middle_bonus}
    if target == "flops_budget":
        kwargs["budget"] = float(multi_exit_config.flops_budget) * backbone
    thresholds = early_exit.calibrate_thresholds(entropies, **kwargs)
    exits = exit_rule.assign_exits(entropies, thresholds)
    record["thresholds"] = operating_point.thresholds_to_json(thresholds)
    record["validation_exit_distribution"] = [
        float(v) for v in early_exit.exit_distribution(exits, len(names))
    ]
    record["validation_average_macs"] = float(early_exit.average_cost(exits, costs))
    record["num_validation_examples"] = int(entropies.shape[0])
    return record


def _evaluation_lambda(config: config_lib.ExperimentConfig) -> float:
    """The λ of a plain network's evaluation (ignored by it) or the calibration λ of an OAT one."""
    return float(config.evaluation.lambdas[-1])


def evaluate_and_export(
    config: config_lib.ExperimentConfig,
    *,
    network: keras.Model,
    run_dir: str,
    splits: data.DatasetSplits,
) -> Dict[str, Any]:
    """Calibrates the exits, evaluates and exports one trained multi-exit run.

    Called by `experiment.run_experiment` after training, on the chief only;
    it returns the run's result with these entries.

    Args:
        config: ExperimentConfig with a multi-exit architecture.
        network: the trained multi-exit network.
        run_dir: str, the run directory.
        splits: DatasetSplits.

    Returns:
        dict: `export_dir` (None without `config.export_dir`), `results` (the
        multi-exit evaluation), `table` (its text table) and `thresholds`
        (the calibrated exit thresholds of the last evaluation λ).
    """
    conditioned = config.model.variant != "plain"
    eval_batch = config.evaluation.batch_size
    lam = _evaluation_lambda(config)
    validation = (
        data.eval_dataset(splits.validation, batch_size=eval_batch) if splits.validation is not None else None
    )
    lambdas = config.evaluation.lambdas if conditioned else (lam,)
    # A λ-conditioned network gets thresholds per λ too (its exits' confidence
    # moves with λ); the export serves each request the row of its nearest λ.
    # `lam` is the last evaluation λ, so its record is one of them.
    per_lambda = {float(l): calibrate(network, validation, config.multi_exit, float(l)) for l in lambdas}
    calibration = dict(per_lambda[lam])
    thresholds = multi_exit_eval.thresholds_from_json(calibration["thresholds"])
    # The calibrated operating points: each λ with its own thresholds.
    lambda_thresholds = None
    if len(per_lambda) > 1:
        calibration["per_lambda"] = {f"{l:g}": record for l, record in per_lambda.items()}
        lambda_thresholds = [
            operating_point.OperatingPoint(l, exit_thresholds=record["thresholds"]) for l, record in per_lambda.items()
        ]
    atomic_files.write_json(os.path.join(run_dir, THRESHOLDS_FILE), calibration)
    logging.info("Exit thresholds (%s, validation): %s", calibration["target"], calibration["thresholds"])
    attacks = [a for a in config.evaluation.attacks if a.name in ("pgd", "fgsm")]
    skipped = [a.describe() for a in config.evaluation.attacks if a.name not in ("pgd", "fgsm")]
    if skipped:
        logging.warning("Multi-exit forms are solved with PGD or FGSM; not evaluated: %s", skipped)
    results = multi_exit_eval.evaluate_multi_exit(
        network,
        data.eval_dataset(splits.test, batch_size=eval_batch),
        thresholds=thresholds,
        lambdas=lambdas,
        attacks=attacks,
        forms=config.multi_exit.eval_forms,
        efficiency_attack=config.multi_exit.efficiency_attack,
        seed=config.train.seed,
        lambda_thresholds=lambda_thresholds,
    )
    results["calibration"] = calibration
    table = multi_exit_report.format_table(results)
    export_path = None
    title = (
        f"{config.name}: {config.model.architecture}/{config.model.variant}, defence "
        f"{config.multi_exit.defence} on {config.data.dataset} (test split)"
    )
    multi_exit_report.write_multi_exit_report(results, run_dir, prefix="test_eval_multi_exit", title=title)
    if config.export_dir:
        export_path = adaptive_saved_model.export_adaptive_saved_model(
            network,
            os.path.join(config.export_dir, config.name),
            thresholds=thresholds,
            image_shape=tuple(splits.image_shape),
            lambda_thresholds=lambda_thresholds,
            model_card={
                "name": config.name,
                "dataset": config.data.dataset,
                "architecture": config.model.architecture,
                "variant": config.model.variant,
                "multi_exit": config_lib.to_dict(config.multi_exit),
                "train_attack": config_lib.to_dict(config.train_attack),
                "exit_calibration": calibration,
                # What serving_default applies: each calibrated λ with its thresholds.
                "operating_points": [
                    point.to_json()
                    for point in lambda_thresholds or [operating_point.OperatingPoint(lam, exit_thresholds=thresholds)]
                ],
                "test_evaluation": {
                    "split": "test",
                    "table": table,
                    "per_lambda": results["per_lambda"],
                    "num_examples": results["num_examples"],
                },
            },
        )
    return {
        "export_dir": export_path,
        "results": results,
        "table": table,
        "thresholds": calibration["thresholds"],
    }
