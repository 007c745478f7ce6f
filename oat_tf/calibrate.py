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

import json
import os
import sys
from typing import Any, Dict, Optional, Sequence

from absl import app
from absl import flags
from absl import logging

from oat_tf import cli
from oat_tf import config as config_lib
from oat_tf import evaluate as evaluate_lib
from oat_tf import flags as oat_flags
from oat_tf import output_paths

FLAGS = flags.FLAGS
CALIBRATION_FILENAME = "calibration.json"
CALIBRATION_VERSION = 1
DEFAULT_LAMBDAS = "0:1:0.05"
DEFAULT_ATTACKS = ("pgd20",)
WORST_CASE = "worst_case"  # As `calibration.WORST_CASE` (kept light: no TF at flag time).
EXIT_INFEASIBLE = 3


class CalibrationError(ValueError):
    """A request that cannot be calibrated as given (the message says why)."""


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
    flags.DEFINE_string("epsilon", None, "L∞ radius (default: the source's training ε).")
    flags.DEFINE_string("step_size", None, "PGD step size (default: the source's training step size).")
    flags.DEFINE_integer("num_examples", None, "Use the first N validation examples.")
    flags.DEFINE_integer("batch_size", 256, "Evaluation batch size.")
    flags.DEFINE_integer("seed", 0, "Seed of the attacks' random starts.")
    flags.DEFINE_bool(
        "deterministic", True,
        "Turn on TensorFlow op determinism (same seed, same machine: bit-identical results; see BENCHMARKS.md for its cost). --nodeterministic turns it off.",
    )
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


def _source_records(run_dir: Optional[str], saved_model: Optional[str]):
    """Returns (run config or None, model card or None) of the source."""
    from oat_tf.evaluation import loading  # pylint: disable=import-outside-toplevel
    from oat_tf.export import saved_model as saved_model_lib  # pylint: disable=import-outside-toplevel

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
    from oat_tf import data  # pylint: disable=import-outside-toplevel

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
    from oat_tf.export import saved_model as saved_model_lib  # pylint: disable=import-outside-toplevel
    from oat_tf.models import slimmable_network  # pylint: disable=import-outside-toplevel

    if saved_model is not None:
        slimmable = len(saved_model_lib.signature_widths(saved_model)) > 1
    else:
        slimmable = isinstance(model, slimmable_network.SlimmableNetwork)
    if not slimmable and widths is None and max_width is None:
        return None
    if max_width is not None and not 0.0 < float(max_width) <= 1.0:
        raise CalibrationError(f"`max_width` must be in (0, 1]. Received: max_width={max_width!r}")
    try:
        candidates = evaluate_lib.select_widths(model, widths, saved_model)
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
    attacks: Sequence[str] = DEFAULT_ATTACKS,
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
        says whether a λ meets the requirement; `export_dir` is None when
        nothing was exported).
    """
    # pylint: disable=import-outside-toplevel
    import tqdm

    from oat_tf import data
    from oat_tf import evaluation
    from oat_tf import export
    from oat_tf.evaluation import atomic_files
    from oat_tf.evaluation import calibration
    from oat_tf.evaluation import loading
    from oat_tf.training import experiment

    # pylint: enable=import-outside-toplevel
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
            evaluation.evaluate_lambda_grid(evaluated, dataset_batches, [lam], attack_list, seed=seed)
            for lam in tqdm.tqdm(lambdas, desc=desc, unit="λ", file=sys.stderr, disable=not progress)
        ]
        return evaluate_lib.merge_results(parts)

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
            "curves": {evaluation.lambda_key(w): c for w, c in curves.items()},
            "evaluation_per_width": {
                evaluation.lambda_key(w): {
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
        base_card = experiment.make_model_card(run_config, test_results, width_results)
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
        lambdas = evaluate_lib.parse_lambdas(FLAGS.lambdas)
        epsilon = oat_flags.parse_fraction("epsilon", FLAGS.epsilon) if FLAGS.epsilon else None
        step_size = oat_flags.parse_fraction("step_size", FLAGS.step_size) if FLAGS.step_size else None
        # Model and output paths before anything loads (a run directory passed
        # as --saved_model, a file as --output_dir, ...).
        evaluate_lib.check_model_paths(FLAGS.run_dir, FLAGS.saved_model, FLAGS.output_dir)
    except ValueError as error:
        raise app.UsageError(str(error)) from None

    from oat_tf.evaluation import calibration  # pylint: disable=import-outside-toplevel
    from oat_tf.training import determinism  # pylint: disable=import-outside-toplevel

    determinism.configure(FLAGS.deterministic)

    try:
        record = calibrate(
            run_dir=FLAGS.run_dir,
            saved_model=FLAGS.saved_model,
            min_sa=min_sa,
            min_ra=min_ra,
            lambdas=lambdas,
            attacks=FLAGS.attacks,
            ra_attack=FLAGS.ra_attack,
            dataset=FLAGS.dataset,
            data_dir=FLAGS.data_dir,
            validation_size=FLAGS.validation_size,
            epsilon=epsilon,
            step_size=step_size,
            num_examples=FLAGS.num_examples,
            batch_size=FLAGS.batch_size,
            seed=FLAGS.seed,
            output_dir=FLAGS.output_dir,
            export_dir=FLAGS.export_dir,
            widths=FLAGS.widths,
            max_width=FLAGS.max_width,
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
    lines.append(f"\nResults: {os.path.join(output_dir, CALIBRATION_FILENAME)}")
    if record["export_dir"]:
        lines.append(f"SavedModel (model card with the calibration): {record['export_dir']}")
    elif FLAGS.export_dir:
        lines.append(f"Nothing exported to {FLAGS.export_dir}: no λ meets the requirement.")
    sys.stdout.write("\n".join(lines) + "\n")
    if not choice["feasible"]:
        logging.error("No λ meets %s.", calibration.describe_constraint(choice["constraint"]))
        sys.exit(EXIT_INFEASIBLE)


def run() -> None:
    """The `oat-calibrate` console script; `python -m oat_tf.calibrate` runs it too.

    Defines the command's flags and runs `main` through `cli.run_main` (absl's
    `app.run`), which parses `sys.argv` and exits the process.
    """
    define_flags()
    cli.run_main(main, __name__)


if __name__ == "__main__":
    run()
