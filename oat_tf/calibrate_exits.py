"""Command line: re-choose the exit thresholds of a trained RDI-Net, no retraining.

    python -m oat_tf.calibrate_exits --run_dir=runs/rdi_mnist_smallcnn_maxavg \
        --exit_thresholds=flops_budget --exit_flops_budget=0.65

An RDI-Net trades accuracy for cost through its entropy thresholds, and those
are chosen after training. This reloads a multi-exit run's network, calibrates
new thresholds on its **validation** split (`--exit_thresholds=equal_usage`
with `--exit_middle_bonus`, or `flops_budget` with `--exit_flops_budget`, a
fraction of the backbone's cost), evaluates them on the test split exactly as
the training run did (same attacks, forms, seed and examples unless
overridden), and writes `exit_thresholds_<tag>.json` and
`test_eval_multi_exit_<tag>.{json,md,png}` next to the run's own results; with
`--export_dir` it also exports the adaptive SavedModel with these thresholds.
The test split is never used to choose.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging

from oat_tf import cli
from oat_tf import config as config_lib

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the flags."""
    flags.DEFINE_string("run_dir", None, "A multi-exit training run (config.json + checkpoints).")
    flags.DEFINE_enum(
        "exit_thresholds", "flops_budget", ["equal_usage", "flops_budget"],
        "equal usage with middle exits favoured, or a target average cost.",
    )
    flags.DEFINE_float("exit_flops_budget", None, "Average cost per image as a fraction of the backbone's.")
    flags.DEFINE_float("exit_middle_bonus", 0.2, "Extra usage share of the middle exits under equal_usage.")
    flags.DEFINE_string("tag", None, "Suffix of the output files (default: the target, e.g. flops_budget_0.65).")
    flags.DEFINE_integer("num_examples", None, "Test examples (default: the run's --num_eval_examples).")
    flags.DEFINE_string("export_dir", None, "Also export the adaptive SavedModel with these thresholds here.")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    if not FLAGS.run_dir:
        raise app.UsageError("--run_dir (a multi-exit training run) is required.")
    from oat_tf import data  # pylint: disable=import-outside-toplevel
    from oat_tf import atomic_files  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import loading  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import multi_exit_eval  # pylint: disable=import-outside-toplevel
    from oat_tf.reporting import multi_exit_report  # pylint: disable=import-outside-toplevel
    from oat_tf.training import multi_exit_experiment  # pylint: disable=import-outside-toplevel

    run_config = loading.read_run_config(FLAGS.run_dir)
    if not config_lib.is_multi_exit_architecture(run_config["model"]["architecture"]):
        raise app.UsageError(
            f"--run_dir must be a multi-exit (rdi_...) run. Received: {FLAGS.run_dir!r} "
            f"with architecture {run_config['model']['architecture']!r}"
        )
    saved = dict(run_config.get("multi_exit") or {})
    saved["exit_weights"] = tuple(saved.get("exit_weights", ()))
    saved["eval_forms"] = tuple(saved.get("eval_forms", config_lib.EXIT_FORMS))
    try:
        multi_exit_config = config_lib.MultiExitConfig(
            **{
                **saved,
                "threshold_target": FLAGS.exit_thresholds,
                "flops_budget": FLAGS.exit_flops_budget,
                "middle_bonus": FLAGS.exit_middle_bonus,
            }
        )
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    tag = FLAGS.tag or (
        f"flops_budget_{FLAGS.exit_flops_budget:g}" if FLAGS.exit_thresholds == "flops_budget"
        else f"equal_usage_{FLAGS.exit_middle_bonus:g}"
    )
    network, _ = loading.load_network_from_run(FLAGS.run_dir)
    data_config = loading.data_config_from_run(run_config, FLAGS.num_examples)
    splits = data.load_splits(data_config, seed=run_config["train"]["seed"])
    batch_size = run_config["evaluation"]["batch_size"]
    lambdas = tuple(run_config["evaluation"]["lambdas"])
    lam = float(lambdas[-1])
    validation = data.eval_dataset(splits.validation, batch_size=batch_size) if splits.validation is not None else None
    try:
        calibration = multi_exit_experiment.calibrate(network, validation, multi_exit_config, lam)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    atomic_files.write_json(os.path.join(FLAGS.run_dir, f"exit_thresholds_{tag}.json"), calibration)
    attacks = [
        config_lib.AttackConfig(**a) for a in run_config["evaluation"]["attacks"] if a["name"] in ("pgd", "fgsm")
    ]
    conditioned = run_config["model"]["variant"] != "plain"
    result = multi_exit_eval.evaluate_multi_exit(
        network,
        data.eval_dataset(splits.test, batch_size=batch_size),
        thresholds=multi_exit_eval.thresholds_from_json(calibration["thresholds"]),
        lambdas=lambdas if conditioned else (lam,),
        attacks=attacks,
        forms=multi_exit_config.eval_forms,
        efficiency_attack=multi_exit_config.efficiency_attack,
        seed=run_config["train"]["seed"],
    )
    result["calibration"] = calibration
    title = f"{run_config['name']}: thresholds {tag} (validation), test split"
    paths = multi_exit_report.write_multi_exit_report(
        result, FLAGS.run_dir, prefix=f"test_eval_multi_exit_{tag}", title=title
    )
    if FLAGS.export_dir:
        from oat_tf.export import adaptive_saved_model  # pylint: disable=import-outside-toplevel

        adaptive_saved_model.export_adaptive_saved_model(
            network, FLAGS.export_dir,
            thresholds=multi_exit_eval.thresholds_from_json(calibration["thresholds"]),
            image_shape=tuple(splits.image_shape),
            model_card={"name": run_config["name"], "exit_calibration": calibration,
                        "test_evaluation": {"split": "test", "per_lambda": result["per_lambda"]}},
        )
    sys.stdout.write(
        f"\nThresholds {calibration['thresholds']} ({tag}, validation usage "
        f"{calibration['validation_exit_distribution']})\n\n{multi_exit_report.format_table(result)}"
        f"\nResults: {paths['json']}, {paths['markdown']}\n"
    )
    logging.info("Done.")


def run() -> None:
    """The `oat-calibrate-exits` console script; `python -m oat_tf.calibrate_exits` runs it too."""
    cli.run_main(main, __name__, define_flags)


if __name__ == "__main__":
    run()
