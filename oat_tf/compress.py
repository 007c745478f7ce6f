"""Command line: prune a plain backbone run with TFMOT while fine-tuning it adversarially.

    python -m oat_tf.compress --run_dir=runs/rdi_mnist_smallcnn_backbone \
        --sparsities=0.3,0.5,0.7,0.9 --output_dir=runs/pruned_backbone

The "pruning + defence" baseline of RDI-Nets (§4.3, Fig. 6). For each sparsity:
1. the run's network (variant "plain"; a multi-exit network is reduced to its
   backbone, the path to its "final" output) is rebuilt as a tf_keras functional
   model and given its trained weights (the logits are checked equal);
2. TFMOT's `prune_low_magnitude` wraps every convolution and dense layer with a
   polynomial schedule from 0 to the sparsity at `--pruning_end_fraction` of the
   fine-tuning, while every step trains on PGD examples crafted against the
   current masked network (the run's training attack; the loss
   `clean_weight·CE(x) + adversarial_weight·CE(x_adv)`, by default the run's own:
   the RDI hybrid loss 1·CE(x) + 1·CE(x_adv) for a multi-exit run, (1 − λ, λ) for
   a fixed-λ run);
3. the wrappers are stripped and the masked weights copied back into the Keras 3
   backbone, which is measured: kernel sparsity, effective MACs (each layer's MACs
   times its nonzero fraction), SA and RA (the run's evaluation attacks, worst case
   per sample, on its test examples);
4. it is exported as a SavedModel with the usual serving contract
   (`image`, `lambda_value`; λ is ignored by a plain network) and a model card.

Output: OUTPUT_DIR/sparsity_<s>/ with `results.json` and `saved_model/`; with
`--evaluate_dense` also OUTPUT_DIR/dense/results.json (the backbone as trained,
measured the same way) and with `--finetune_dense` OUTPUT_DIR/dense_finetuned/ (the
control: the same fine-tuning with nothing pruned, so that the pruned backbones are
compared at equal training); OUTPUT_DIR/compress_results.json and .md gather them,
and OUTPUT_DIR/flags.txt holds the resolved flags. Every file is written
atomically. A killed sweep resumes: a sparsity whose results.json exists with
the same settings is skipped; one with other settings stops the command unless
`--overwrite` is given.

TFMOT is imported only here, after the flags are checked: it sets
TF_USE_LEGACY_KERAS=1 for its whole process, and no other oat_tf entry point
imports it.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

from absl import app
from absl import flags
from absl import logging

from oat_tf import cli

FLAGS = flags.FLAGS

RESULTS_FILENAME = "results.json"
SUMMARY_BASENAME = "compress_results"
EXPORT_SUBDIR = "saved_model"
DENSE_SUBDIR = "dense"
FINETUNED_DENSE_SUBDIR = "dense_finetuned"
# Largest |logit difference| allowed between the Keras 3 network and its tf_keras rebuild.
REBUILD_TOLERANCE = 1e-4


def define_flags() -> None:
    """Defines the flags."""
    flags.DEFINE_string("run_dir", None, "Run directory of a plain backbone (config.json and checkpoints/).")
    flags.DEFINE_float("sparsity", None, "One target sparsity in (0, 1).")
    flags.DEFINE_list("sparsities", None, "Several target sparsities in (0, 1), e.g. 0.3,0.5,0.7,0.9.")
    flags.DEFINE_string("output_dir", None, "Directory of the results (created).")
    flags.DEFINE_float("epochs", 1.0, "Fine-tuning epochs over the run's training split (may be fractional).")
    flags.DEFINE_float("pruning_end_fraction", 0.5, "Share of the fine-tuning after which the sparsity is reached.")
    flags.DEFINE_integer("pruning_frequency", 10, "Steps between two mask updates.")
    flags.DEFINE_float("learning_rate", None, "Initial fine-tuning rate (cosine to 0); default: the run's.")
    flags.DEFINE_float("clean_loss_weight", None, "Weight of CE(x); default from the run (see the module doc).")
    flags.DEFINE_float("adversarial_loss_weight", None, "Weight of CE(x_adv); default from the run.")
    flags.DEFINE_list(
        "eval_attacks", None,
        "Evaluation attacks (names as oat_tf.train's --eval_attacks); default: the run's.",
    )
    flags.DEFINE_integer("num_eval_examples", None, "Test examples to evaluate on; default: the run's.")
    flags.DEFINE_integer("eval_batch_size", 500, "Evaluation batch size.")
    flags.DEFINE_bool("evaluate_dense", True, "Also measure the unpruned backbone the same way (sparsity 0).")
    flags.DEFINE_bool(
        "finetune_dense", True,
        "Also fine-tune the unpruned backbone exactly as the pruned ones (the control at equal training).",
    )
    flags.DEFINE_integer("seed", 0, "Seed of the fine-tuning order, its attacks and the evaluation attacks.")
    flags.DEFINE_bool("overwrite", False, "Redo sparsities whose results were made with other settings.")


def _sparsities() -> List[float]:
    """The target sparsities from --sparsity / --sparsities, checked."""
    if (FLAGS.sparsity is None) == (FLAGS.sparsities is None):
        raise app.UsageError(
            "Exactly one of --sparsity and --sparsities is required. "
            f"Received: --sparsity={FLAGS.sparsity!r} --sparsities={FLAGS.sparsities!r}"
        )
    raw = [FLAGS.sparsity] if FLAGS.sparsity is not None else FLAGS.sparsities
    values = []
    for item in raw:
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise app.UsageError(f"--sparsities must be numbers in (0, 1). Received: {item!r}") from None
        if not 0.0 < value < 1.0:
            raise app.UsageError(f"Every sparsity must be in (0, 1) (exclusive). Received: {item!r}")
        values.append(value)
    if len(set(values)) != len(values):
        raise app.UsageError(f"--sparsities must not repeat a value. Received: {raw}")
    return sorted(values)


def _check_run(run_config: Dict[str, Any]) -> None:
    """Refuses runs whose network is not plain (FiLM, dual BN and slimmable layers have no tf_keras rebuild)."""
    model = run_config.get("model", {})
    if model.get("variant") != "plain":
        raise app.UsageError(
            "--run_dir must be a run of a plain network (variant 'plain'): FiLM, dual BN and "
            f"slimmable layers have no tf_keras rebuild. Received: variant={model.get('variant')!r} "
            f"in {FLAGS.run_dir}/config.json"
        )
    if run_config.get("train_attack", {}).get("name") not in ("pgd", "fgsm"):
        raise app.UsageError(
            "--run_dir must have been trained with PGD or FGSM (its training attack is the "
            f"fine-tuning attack). Received: {run_config.get('train_attack', {}).get('name')!r}"
        )


def _loss_weights(run_config: Dict[str, Any]) -> Dict[str, float]:
    """The fine-tuning loss weights: the flags, or the run's own objective."""
    from oat_tf import config as config_lib  # pylint: disable=import-outside-toplevel

    clean, adversarial = FLAGS.clean_loss_weight, FLAGS.adversarial_loss_weight
    if clean is None or adversarial is None:
        if config_lib.is_multi_exit_architecture(run_config["model"]["architecture"]):
            default = (1.0, 1.0)  # The RDI hybrid loss of a plain backbone.
        else:
            values = run_config.get("lambda_sampling", {}).get("values", [])
            if run_config.get("lambda_sampling", {}).get("sampling") != "fixed" or len(values) != 1:
                raise app.UsageError(
                    "--clean_loss_weight and --adversarial_loss_weight are required for a run "
                    "not trained at one fixed λ. Received: lambda_sampling="
                    f"{run_config.get('lambda_sampling')!r}"
                )
            default = (1.0 - values[0], values[0])
        clean = default[0] if clean is None else clean
        adversarial = default[1] if adversarial is None else adversarial
    for name, value in (("clean_loss_weight", clean), ("adversarial_loss_weight", adversarial)):
        if not value >= 0.0:
            raise app.UsageError(f"--{name} must be >= 0. Received: {value!r}")
    if clean + adversarial <= 0.0:
        raise app.UsageError("--clean_loss_weight and --adversarial_loss_weight must not both be 0.")
    return {"clean": float(clean), "adversarial": float(adversarial)}


def _check_flags() -> Dict[str, Any]:
    """Every flag checked before any work; app.UsageError naming the flag.

    Returns:
        dict: `sparsities`, `run_config`, `loss_weights`, `attacks` (the
        evaluation AttackConfigs), `learning_rate`.
    """
    from oat_tf import checkpoint_state  # pylint: disable=import-outside-toplevel
    from oat_tf import config as config_lib  # pylint: disable=import-outside-toplevel
    from oat_tf import flags as flags_lib  # pylint: disable=import-outside-toplevel
    from oat_tf import output_paths  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import loading  # pylint: disable=import-outside-toplevel

    if not FLAGS.run_dir:
        raise app.UsageError("--run_dir (a plain backbone run directory) is required.")
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required.")
    sparsities = _sparsities()
    try:
        run_config = loading.read_run_config(FLAGS.run_dir)
        checkpoint = checkpoint_state.latest_checkpoint(os.path.join(FLAGS.run_dir, "checkpoints"))
    except (FileNotFoundError, ValueError) as error:
        raise app.UsageError(f"--run_dir: {error}") from None
    _check_run(run_config)
    if checkpoint is None:
        raise app.UsageError(f"--run_dir must hold a checkpoint in checkpoints/. Received: --run_dir={FLAGS.run_dir!r}")
    if os.path.exists(FLAGS.output_dir) and not os.path.isdir(FLAGS.output_dir):
        raise app.UsageError(f"--output_dir must be a directory. Received: {FLAGS.output_dir!r} (a file)")
    try:
        output_paths.check_writable_directory("output_dir", FLAGS.output_dir)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    if not FLAGS.epochs > 0:
        raise app.UsageError(f"--epochs must be > 0. Received: {FLAGS.epochs!r}")
    if not 0.0 < FLAGS.pruning_end_fraction <= 1.0:
        raise app.UsageError(f"--pruning_end_fraction must be in (0, 1]. Received: {FLAGS.pruning_end_fraction!r}")
    if FLAGS.pruning_frequency < 1:
        raise app.UsageError(f"--pruning_frequency must be >= 1. Received: {FLAGS.pruning_frequency!r}")
    learning_rate = FLAGS.learning_rate
    if learning_rate is None:
        learning_rate = run_config.get("optimizer", {}).get("learning_rate")
    if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
        raise app.UsageError(f"--learning_rate must be > 0. Received: {learning_rate!r}")
    if FLAGS.num_eval_examples is not None and FLAGS.num_eval_examples < 1:
        raise app.UsageError(f"--num_eval_examples must be >= 1. Received: {FLAGS.num_eval_examples!r}")
    if FLAGS.eval_batch_size < 1:
        raise app.UsageError(f"--eval_batch_size must be >= 1. Received: {FLAGS.eval_batch_size!r}")
    if FLAGS.seed < 0:
        raise app.UsageError(f"--seed must be >= 0. Received: {FLAGS.seed!r}")
    train_attack = config_lib.AttackConfig(**run_config["train_attack"])
    if FLAGS.eval_attacks is None:
        attacks = tuple(config_lib.AttackConfig(**entry) for entry in run_config["evaluation"]["attacks"])
    else:
        try:
            attacks = flags_lib.parse_eval_attacks(FLAGS.eval_attacks, train_attack)
        except ValueError as error:
            raise app.UsageError(f"--eval_attacks: {error}") from None
    return {
        "sparsities": sparsities,
        "run_config": run_config,
        "loss_weights": _loss_weights(run_config),
        "attacks": attacks,
        "train_attack": train_attack,
        "learning_rate": float(learning_rate),
    }


def _settings(checked: Dict[str, Any], sparsity: Optional[float]) -> Dict[str, Any]:
    """What a sparsity's result depends on (compared when resuming)."""
    from oat_tf import config as config_lib  # pylint: disable=import-outside-toplevel

    settings = {
        "run_dir": os.path.abspath(FLAGS.run_dir),
        "target_sparsity": sparsity,
        "num_eval_examples": FLAGS.num_eval_examples,
        "evaluation_attacks": [config_lib.to_dict(attack) for attack in checked["attacks"]],
        "seed": FLAGS.seed,
    }
    if sparsity is not None:
        settings.update(
            epochs=FLAGS.epochs,
            pruning_end_fraction=FLAGS.pruning_end_fraction,
            pruning_frequency=FLAGS.pruning_frequency,
            learning_rate=checked["learning_rate"],
            loss_weights=checked["loss_weights"],
            train_attack=config_lib.to_dict(checked["train_attack"]),
        )
    return settings


def _previous_result(directory: str, settings: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """A finished result with the same settings, None if there is none; refuses other settings."""
    path = os.path.join(directory, RESULTS_FILENAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, json.JSONDecodeError):
        result = None
    if result is not None and result.get("settings") == settings:
        return result
    if not FLAGS.overwrite:
        raise app.UsageError(
            f"{path} holds a result made with other settings (or is corrupt); pass --overwrite to "
            "redo it, or choose another --output_dir."
        )
    return None


def _data_config(run_config: Dict[str, Any]):
    """The run's data: its dataset, validation split, training subset and augmentation."""
    from oat_tf.evaluation import loading  # pylint: disable=import-outside-toplevel

    return loading.data_config_from_run(run_config, FLAGS.num_eval_examples, training=True)


def _load_backbone():
    """The run's network reduced to its backbone (fresh weights from the checkpoint each call)."""
    from oat_tf.compression import legacy_keras  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import loading  # pylint: disable=import-outside-toplevel

    network, _ = loading.load_network_from_run(FLAGS.run_dir)
    return legacy_keras.plain_backbone(network)


def _measure(backbone, checked, splits, settings: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    """Sparsity, effective MACs, SA and RA of a Keras 3 backbone."""
    from oat_tf import data  # pylint: disable=import-outside-toplevel
    from oat_tf.compression import sparsity as sparsity_lib  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import robust_eval  # pylint: disable=import-outside-toplevel

    evaluation = robust_eval.evaluate_lambda_grid(
        backbone,
        data.eval_dataset(splits.test, batch_size=FLAGS.eval_batch_size),
        checked["run_config"]["evaluation"]["lambdas"],
        checked["attacks"],
        seed=FLAGS.seed,
    )
    return {
        "settings": settings,
        "sparsity": sparsity_lib.kernel_sparsity(backbone),
        "macs": sparsity_lib.effective_macs(backbone),
        "test_evaluation": evaluation,
        **extra,
    }


def _export(backbone, checked, directory: str, result: Dict[str, Any]) -> str:
    """Exports the pruned backbone with its model card; returns the export path."""
    from oat_tf.evaluation import model_card  # pylint: disable=import-outside-toplevel
    from oat_tf.export import saved_model  # pylint: disable=import-outside-toplevel

    run_config = dict(checked["run_config"])
    target = result["settings"]["target_sparsity"]
    run_config["name"] = f"{run_config.get('name', 'run')}_pruned_{target:g}"
    card = model_card.make_model_card(run_config, result["test_evaluation"])
    card["compression"] = {
        "method": "TFMOT prune_low_magnitude (polynomial schedule) with PGD adversarial fine-tuning",
        "source_run": result["settings"]["run_dir"],
        "network": "the backbone only (the path to the 'final' output; side exits removed)",
        "target_sparsity": target,
        "kernel_sparsity": result["sparsity"]["sparsity"],
        "dense_macs": result["macs"]["dense_macs"],
        "effective_macs": result["macs"]["effective_macs"],
        "settings": result["settings"],
    }
    export_dir = os.path.join(directory, EXPORT_SUBDIR)
    image_shape = tuple(checked["run_config"]["model"]["input_shape"])
    return saved_model.export_saved_model(backbone, export_dir, image_shape=image_shape, model_card=card)


def _check_rebuild(backbone, rebuilt, images) -> float:
    """The largest |logit difference| between the Keras 3 backbone and its tf_keras rebuild; raises past tolerance."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    lambdas = np.ones([images.shape[0]], np.float32)
    reference = np.asarray(backbone({"image": images, "lambda": lambdas}, training=False))
    difference = float(np.max(np.abs(reference - np.asarray(rebuilt(images, training=False)))))
    if difference > REBUILD_TOLERANCE:
        raise RuntimeError(
            f"The tf_keras rebuild of {FLAGS.run_dir} differs from the network by {difference:g} in "
            f"its logits (tolerance {REBUILD_TOLERANCE:g})."
        )
    return difference


def _prune_one(sparsity: float, checked, splits) -> Tuple[Any, Dict[str, Any]]:
    """Prunes (nothing at sparsity 0) and fine-tunes one backbone (see the module doc).

    Returns:
        (the Keras 3 backbone holding the fine-tuned weights, dict of the
        fine-tuning record and the rebuild check to add to its result).
    """
    from oat_tf import data  # pylint: disable=import-outside-toplevel
    from oat_tf.compression import legacy_keras  # pylint: disable=import-outside-toplevel
    from oat_tf.compression import tfmot_pruning  # pylint: disable=import-outside-toplevel

    backbone = _load_backbone()
    rebuilt = legacy_keras.to_tf_keras(backbone)
    legacy_keras.copy_weights(backbone, rebuilt)
    probe = splits.test.images[:16].astype("float32") / 255.0
    rebuild_difference = _check_rebuild(backbone, rebuilt, probe)

    batch_size = checked["run_config"]["train"]["batch_size"]
    schedule = tfmot_pruning.PruningSchedule(
        target_sparsity=sparsity,
        total_steps=tfmot_pruning.steps_for(len(splits.train.labels), batch_size, FLAGS.epochs),
        end_fraction=FLAGS.pruning_end_fraction,
        frequency=FLAGS.pruning_frequency,
    )
    settings = tfmot_pruning.FinetuneSettings(
        attack=checked["train_attack"],
        clean_weight=checked["loss_weights"]["clean"],
        adversarial_weight=checked["loss_weights"]["adversarial"],
        learning_rate=checked["learning_rate"],
        momentum=checked["run_config"].get("optimizer", {}).get("momentum", 0.9),
        seed=FLAGS.seed,
    )
    batches = data.train_dataset(
        splits.train,
        batch_size=batch_size,
        seed=FLAGS.seed,
        augment=splits.augment,
        epochs=math.ceil(FLAGS.epochs),
    )
    logging.info(
        "Pruning to sparsity %g: %d fine-tuning steps, target reached at step %d, masks every %d steps.",
        sparsity, schedule.total_steps, schedule.end_step, schedule.update_every,
    )
    if sparsity > 0.0:
        wrapped = tfmot_pruning.wrap_for_pruning(rebuilt, schedule)
        finetune = tfmot_pruning.finetune_with_pruning(wrapped, batches, schedule, settings)
        rebuilt = tfmot_pruning.strip_pruning(wrapped)
    else:  # The control: the same fine-tuning, nothing pruned.
        finetune = tfmot_pruning.finetune_with_pruning(rebuilt, batches, schedule, settings)
    legacy_keras.copy_weights(rebuilt, backbone)
    return backbone, {
        "fine_tuning": {**finetune, "end_step": schedule.end_step, "frequency": schedule.update_every},
        "rebuild_max_logit_difference": rebuild_difference,
    }


def _summary_rows(results: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per result: sparsity, MACs, SA and worst-case RA at the run's (first) λ."""
    rows = []
    for name, result in results.items():
        evaluation = result["test_evaluation"]
        key = next(iter(evaluation["clean_accuracy"]))
        rows.append({
            "name": name,
            "target_sparsity": result["settings"]["target_sparsity"] or 0.0,
            "fine_tuned": result["settings"]["target_sparsity"] is not None,
            "kernel_sparsity": result["sparsity"]["sparsity"],
            "dense_macs": result["macs"]["dense_macs"],
            "effective_macs": result["macs"]["effective_macs"],
            "macs_saving": result["macs"]["saving"],
            "lambda": key,
            "clean_accuracy": evaluation["clean_accuracy"][key],
            "worst_case_accuracy": evaluation["worst_case_accuracy"][key],
            "robust_accuracy": {attack: values[key] for attack, values in evaluation["robust_accuracy"].items()},
        })
    return rows


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    checked = _check_flags()
    directories = {f"sparsity_{s:g}": (s, os.path.join(FLAGS.output_dir, f"sparsity_{s:g}")) for s in checked["sparsities"]}
    if FLAGS.finetune_dense:
        directories = {FINETUNED_DENSE_SUBDIR: (0.0, os.path.join(FLAGS.output_dir, FINETUNED_DENSE_SUBDIR)), **directories}
    if FLAGS.evaluate_dense:
        directories = {DENSE_SUBDIR: (None, os.path.join(FLAGS.output_dir, DENSE_SUBDIR)), **directories}
    settings = {name: _settings(checked, s) for name, (s, _) in directories.items()}
    previous = {name: _previous_result(path, settings[name]) for name, (_, path) in directories.items()}

    from oat_tf import data  # pylint: disable=import-outside-toplevel
    from oat_tf import atomic_files  # pylint: disable=import-outside-toplevel
    from oat_tf.reporting import pruning_report  # pylint: disable=import-outside-toplevel

    os.makedirs(FLAGS.output_dir, exist_ok=True)
    atomic_files.write_text(os.path.join(FLAGS.output_dir, "flags.txt"), FLAGS.flags_into_string())
    splits = data.load_splits(_data_config(checked["run_config"]))
    results: Dict[str, Dict[str, Any]] = {}
    for name, (sparsity, directory) in directories.items():
        if previous[name] is not None:
            logging.info("%s: done before with the same settings, skipped.", name)
            results[name] = previous[name]
            continue
        os.makedirs(directory, exist_ok=True)
        if sparsity is None:
            result = _measure(_load_backbone(), checked, splits, settings[name], {})
        else:
            backbone, extra = _prune_one(sparsity, checked, splits)
            result = _measure(backbone, checked, splits, settings[name], extra)
            result["export_dir"] = os.path.abspath(_export(backbone, checked, directory, result))
        atomic_files.write_json(os.path.join(directory, RESULTS_FILENAME), result)
        results[name] = result
        logging.info("%s: %s", name, json.dumps(_summary_rows({name: result})[0]))
    rows = _summary_rows(results)
    atomic_files.write_json(
        os.path.join(FLAGS.output_dir, SUMMARY_BASENAME + ".json"),
        {"source_run": os.path.abspath(FLAGS.run_dir), "rows": rows},
    )
    table = pruning_report.format_summary_table(rows)
    atomic_files.write_text(os.path.join(FLAGS.output_dir, SUMMARY_BASENAME + ".md"), table)
    sys.stdout.write(table)
    logging.info("Done.")


def run() -> None:
    """The `oat-compress` console script (and `python -m oat_tf.compress`): flags, then `main`."""
    cli.run_main(main, __name__, define_flags)


if __name__ == "__main__":
    run()
