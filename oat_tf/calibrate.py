"""Command line: choose λ for a deployment requirement, on held-out validation data.

    python -m oat_tf.calibrate --run_dir=runs/mnist --min_sa=97 \\
        --export_dir=saved_models/mnist_calibrated
    python -m oat_tf.calibrate --saved_model=saved_models/mnist --min_ra=80 \\
        --attacks=pgd20,apgd_ce --output_dir=/tmp/mnist_calibration \\
        --export_dir=saved_models/mnist

A deployment states one requirement, `--min_sa=X` ("SA ≥ X%") or `--min_ra=X`
("RA ≥ X%"), in percent as in every table of the project (`--min_sa=90` is
90%, not 0.9%). The tool measures SA and RA of the trained model on the
**validation split** for every λ of `--lambdas` (default `0:1:0.05`) under
`--attacks` (default `pgd20`: PGD-20 at the training ε and step size, the
paper's RA metric), and picks the λ that maximises the other metric under the
requirement (`oat_tf.evaluation.calibration.choose_lambda`: ties go to the
higher value of the constrained metric, then to the smaller λ). RA is
`--ra_attack`: `worst_case` (default; per sample, correct clean and under
every attack of `--attacks`) or one attack, by label (`PGD-20`) or by its
`--attacks` name (`pgd20`). PGD alone can be misled by gradient masking
(see the README): add `apgd_ce` to `--attacks` when the requirement is about
robustness.

Source: `--run_dir` (a training run: its config and latest checkpoint) or
`--saved_model` (an export; the training data config and attack are read from
its model card, written at export by `oat_tf.train`; for an export without
one pass `--dataset`, `--validation_size` and `--epsilon`/`--step_size`).

**The test split is never used for the choice.** Only
`DatasetSplits.validation` is evaluated: the examples the training run held
out with its `--validation_size`, fixed by the run's config (`--validation_size`
here is refused when the source records it). A run trained without a
validation split cannot be calibrated: retrain with `--validation_size=N`.
(`load_splits` still reads the dataset's files, which hold the test arrays
too; they are dropped unread.)

Writes `<output_dir>/calibration.json` (default output_dir:
`<run_dir>/calibration`; required with `--saved_model`), atomically: source,
dataset, split, number of examples, λ grid, attack settings, seed, the
constraint, the measured curve (λ, SA, RA), the choice and the full
evaluation (RA per attack, worst case); accuracies are fractions there. It
prints the curve and the decision.

With `--export_dir`, and only when some λ meets the requirement, it writes a
SavedModel whose `assets.extra/model_card.json` holds a `calibration` entry
(the same record) next to the card's other content: for `--run_dir`, the
network is exported with the training model card (config, and the test table
of `test_eval.json` when the run has one); for `--saved_model`, the export is
copied with its card updated (`--export_dir` equal to `--saved_model` updates it
in place). Both are atomic: `--export_dir` never holds a half-written export.
An existing `--export_dir` that is not a SavedModel is refused.

Slimmable (OATS) models: the choice is a (λ, width) pair. Every width of the
model (of a SavedModel: one per signature), or those of `--widths`, is
evaluated, and `--max_width=0.75` sets a compute budget ("SA ≥ 88% at width
≤ 0.75, maximise RA": `--min_sa=88 --max_width=0.75`); ties go to the
narrower width. calibration.json then holds the curve of every width
(`curves`), the choice's `width` and `signature_name` (the SavedModel
signature to serve, e.g. `width_0_75`), and the model card the same.

Exit status: 0 when a λ meets the requirement; 3 when none does (the message
names the λ that came closest; calibration.json is written with
`"feasible": false` and nothing is exported); 1 on any error (bad flags, no
validation split, ...). A deployment script can therefore tell "this model
cannot meet the requirement" from a failure.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from absl import app
from absl import flags
from absl import logging

from oat_tf import cli
from oat_tf import config as config_lib
from oat_tf import flags as oat_flags

FLAGS = flags.FLAGS
DEFAULT_LAMBDAS = "0:1:0.05"
DEFAULT_ATTACKS = config_lib.DEFAULT_CALIBRATION_ATTACKS
WORST_CASE = config_lib.WORST_CASE
EXIT_INFEASIBLE = 3


def define_flags() -> None:
    """Defines the calibration flags."""
    flags.DEFINE_string("run_dir", None, "Run directory of `oat_tf.train` (config.json + checkpoints).")
    flags.DEFINE_string("saved_model", None, "Exported SavedModel to calibrate instead of a run directory.")
    flags.DEFINE_float(
        "min_sa", None, "Requirement SA ≥ X, in percent (0-100). Exactly one of --min_sa, --min_ra."
    )
    flags.DEFINE_float(
        "min_ra", None, "Requirement RA ≥ X, in percent (0-100). Exactly one of --min_sa, --min_ra."
    )
    flags.DEFINE_list(
        "lambdas", [DEFAULT_LAMBDAS],
        "λ values to choose from, or a range START:STOP:STEP (inclusive).",
    )
    flags.DEFINE_list(
        "attacks", list(DEFAULT_ATTACKS),
        "Attacks measuring RA: " + oat_flags.ATTACK_NAMES_HELP,
    )
    flags.DEFINE_string(
        "ra_attack", WORST_CASE,
        "RA used for the choice: worst_case (over --attacks) or one attack (label PGD-20 or name pgd20).",
    )
    flags.DEFINE_string(
        "dataset", None, "Dataset (default: the source's); required for an export without a model card."
    )
    flags.DEFINE_string("data_dir", None, "tensorflow_datasets data directory (default: the source's).")
    flags.DEFINE_integer(
        "validation_size", None,
        "Only for an export whose model card records no training data: the training run's --validation_size.",
    )
    oat_flags.define_attack_budget_flags("the source's", "validation examples")
    flags.DEFINE_list(
        "widths", None,
        "Widths of a slimmable (OATS) model to choose from (default: all of a slimmable model; "
        "of a SavedModel, one per signature); the choice is then a (λ, width) pair.",
    )
    flags.DEFINE_float(
        "max_width", None,
        "Compute budget: only widths ≤ this are candidates (e.g. 0.75), for a slimmable model.",
    )
    flags.DEFINE_string("output_dir", None, "Where calibration.json goes (default: <run_dir>/calibration).")
    flags.DEFINE_string(
        "export_dir", None,
        "Write the calibrated SavedModel here (model card with the calibration); may equal --saved_model.",
    )


def _percent_flag(name: str, value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    if not 0.0 <= value <= 100.0:
        raise app.UsageError(
            f"`--{name}` must be a percentage in [0, 100] (e.g. --{name}=90 for 90%). "
            f"Received: {name}={value}"
        )
    if 0.0 < value <= 1.0:
        logging.warning(
            "--%s=%g is read as %g%% (a percentage, not a fraction); pass --%s=%g for %g%%.",
            name, value, value, name, 100.0 * value, 100.0 * value,
        )
    return value / 100.0


# Flags that `calibrate_model.calibrate` takes as they are, by name.
PASSED_FLAGS = (
    "run_dir", "saved_model", "attacks", "ra_attack", "dataset", "data_dir", "validation_size",
    "num_examples", "batch_size", "seed", "output_dir", "export_dir", "widths", "max_width",
)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    if bool(FLAGS.run_dir) == bool(FLAGS.saved_model):
        raise app.UsageError("Pass exactly one of --run_dir (a training run) or --saved_model (an export).")
    if (FLAGS.min_sa is None) == (FLAGS.min_ra is None):
        raise app.UsageError("Pass exactly one requirement: --min_sa=X or --min_ra=X (percent).")
    min_sa = _percent_flag("min_sa", FLAGS.min_sa)
    min_ra = _percent_flag("min_ra", FLAGS.min_ra)
    try:
        lambdas = oat_flags.parse_lambdas(FLAGS.lambdas)
        epsilon = oat_flags.parse_fraction("epsilon", FLAGS.epsilon) if FLAGS.epsilon else None
        step_size = oat_flags.parse_fraction("step_size", FLAGS.step_size) if FLAGS.step_size else None
        # Model and output paths before anything loads (a run directory passed
        # as --saved_model, a file as --output_dir, ...).
        oat_flags.check_model_paths(FLAGS.run_dir, FLAGS.saved_model, FLAGS.output_dir)
    except ValueError as error:
        raise app.UsageError(str(error)) from None

    from oat_tf.evaluation import calibrate_model  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import calibration  # pylint: disable=import-outside-toplevel
    from oat_tf.training import determinism  # pylint: disable=import-outside-toplevel

    determinism.configure(FLAGS.deterministic)

    try:
        record = calibrate_model.calibrate(
            min_sa=min_sa,
            min_ra=min_ra,
            lambdas=lambdas,
            epsilon=epsilon,
            step_size=step_size,
            # The other flags are the arguments of the same name, as given.
            **{name: FLAGS[name].value for name in PASSED_FLAGS},
        )
    except (ValueError, FileNotFoundError) as error:
        # The library's errors name the argument, what was expected and what was received.
        sys.stderr.write(f"Error: {error}\n")
        sys.exit(1)

    choice = record["choice"]
    ra_label = "worst case" if record["ra_attack"] == WORST_CASE else record["ra_attack"]
    attacks = ", ".join(a["label"] for a in record["attacks"]) or "none"
    lines = [
        f"\nSA / RA per λ on the validation split of {record['dataset']} "
        f"({record['num_examples']} examples; attacks: {attacks}; RA = {ra_label})\n",
    ]
    if "curves" in record:
        for key, curve in record["curves"].items():
            width_choice = {
                **choice,
                "feasible_lambdas": [
                    p["lambda"] for p in choice["feasible_points"] if p["width"] == float(key)
                ],
                "feasible": choice["feasible"] and choice["width"] == float(key),
            }
            lines += [f"Width {key}:\n", calibration.format_curve_table(curve, width_choice, ra_label)]
    else:
        lines.append(calibration.format_curve_table(record["curve"], choice, ra_label))
    if choice["feasible"]:
        wanted = calibration.describe_constraint(choice["constraint"])
        lines.append(f"Chosen for {wanted}: {choice['reason']}.")
        lines.append(f"lambda_value={choice['lambda']!r}")
        if "width" in choice:
            lines.append(f"width={choice['width']!r} (signature {choice['signature_name']!r})")
    else:
        lines.append(f"{choice['reason'][0].upper()}{choice['reason'][1:]}.")
    output_dir = FLAGS.output_dir or os.path.join(FLAGS.run_dir, "calibration")
    lines.append(f"\nResults: {os.path.join(output_dir, calibrate_model.CALIBRATION_FILENAME)}")
    if record["export_dir"]:
        lines.append(f"SavedModel (model card with the calibration): {record['export_dir']}")
    elif FLAGS.export_dir:
        lines.append(f"Nothing exported to {FLAGS.export_dir}: no λ meets the requirement.")
    sys.stdout.write("\n".join(lines) + "\n")
    if not choice["feasible"]:
        logging.error("No λ meets %s.", calibration.describe_constraint(choice["constraint"]))
        sys.exit(EXIT_INFEASIBLE)


def run() -> None:
    """The `oat-calibrate` console script; `python -m oat_tf.calibrate` runs it too."""
    cli.run_main(main, __name__, define_flags)


if __name__ == "__main__":
    run()
