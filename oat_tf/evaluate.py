"""Command line: robustness evaluation over a λ grid, with gradient-masking checks.

    python -m oat_tf.evaluate --run_dir=runs/quickstart --lambdas=0:1:0.05 \\
        --attacks=pgd20,apgd_ce,square

Loads a run directory (config + latest checkpoint) or an exported SavedModel
(`--saved_model`, through its serving signature), evaluates SA and RA per attack
and the per-sample worst case for every λ, runs the gradient-masking checks,
and writes `evaluation.json`, `evaluation.md` and the plots into
`--output_dir` (default `<run_dir>/evaluation_<split>`). It is resumable: each
finished λ is saved at once, and a rerun with the same settings continues
from there.

Plots (`<output_dir>/evaluation_<name>.png`, listed in evaluation.json under
"plots"), after the OAT paper's figures:

- `ra_vs_sa` (Fig. 4): RA against SA per λ, with the PGD-AT frontier of
  `--frontier_runs` (fixed-λ runs, labelled with their training λ; a run
  not evaluated with the plot's attack contributes its closest attack, with
  a warning: see `evaluation.frontier`).
- `accuracy_vs_lambda` (Fig. 8): SA, RA per attack and worst case against λ.
- `seen_vs_unseen` (Fig. 5): SA and RA against λ, training λ as circles,
  unseen λ as stars (needs the run's config: not for a SavedModel alone).
- `saliency` (Fig. 10-12): ∇ₓ of the clean cross-entropy for a few test
  images (`--saliency_examples`, `--saliency_indices`) at several λ
  (`--saliency_lambdas`).
- `bn_statistics` (Fig. 2): running mean against running variance of the last
  batch norm of the evaluated run and of `--bn_runs` (both groups of a dual
  batch norm).

A slimmable (OATS, PGD-ATS) model is evaluated at every width of `--widths`
(default: all its widths; of a SavedModel, one per signature): each width
gets the whole evaluation above (resumable, masking checks, plots,
TensorBoard with the HParams `width`) in `<output_dir>/width_<α>/`, and
`<output_dir>/evaluation_widths.{json,md,png}` holds the λ × width table
(`{"widths": [...], "per_width": {"0.5": <evaluation.json>, ...}}`) and the
paper's Fig. 6/9 plot (SA and RA against λ per width, RA against SA per
width; `evaluation.width_grid`). Any other model is evaluated as before, at
full width, straight into `<output_dir>` (`--widths` other than 1.0 is an
error for it).

The RA of the plots and of the frontier is under `--plot_attack` (default:
the strongest attack). TensorBoard summaries (per-λ scalars, trade-off curves
against λ, the plots, the HParams dashboard) go to `--tensorboard_dir`
(default `<output_dir>/tensorboard`); see `reporting.tensorboard_logging`.

    python -m oat_tf.evaluate --run_dir=runs/oat --lambdas=0:1:0.1 --plot_attack=PGD-20 \\
        --frontier_runs=runs/pgdat_0.1,runs/pgdat_0.3,runs/pgdat_1.0 \\
        --bn_runs=runs/pgdat_0.1,runs/pgdat_1.0

`--bn_statistics=batch` evaluates a run directory's network with batch
statistics (`oat_tf.models.batch_statistics`: every BN normalises each batch
with its own moments, moving statistics untouched; SPEC §4; use a
`--batch_size` as large as in training). It is refused with `--saved_model`
(a SavedModel has no BN layers to switch) and for slimmable or multi-exit
runs. Its default `--output_dir` is `<run_dir>/evaluation_<split>_batch_stats`;
evaluation.json records `"bn_statistics": "moving"|"batch"` (the running
statistics of the BN plot are under `"bn_running_statistics"`), and a saved
state of the other mode is never resumed.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from absl import app
from absl import flags
from absl import logging

from oat_tf import checkpoint_state
from oat_tf import cli
from oat_tf import config as config_lib
from oat_tf import flags as oat_flags

FLAGS = flags.FLAGS
STATE_FILE = "evaluation_state.json"


def define_flags() -> None:
    """Defines the evaluation flags."""
    flags.DEFINE_string("run_dir", None, "Run directory of `oat_tf.train` (config.json + checkpoints).")
    flags.DEFINE_string("saved_model", None, "Exported SavedModel to evaluate instead of a checkpoint.")
    flags.DEFINE_string("dataset", None, "Dataset (default: the run's); required with --saved_model alone.")
    flags.DEFINE_string("data_dir", None, "tensorflow_datasets data directory.")
    flags.DEFINE_enum("split", "test", ["test", "validation"], "Split to evaluate.")
    flags.DEFINE_list(
        "lambdas", None,
        "λ values, or a range START:STOP:STEP (inclusive), e.g. 0:1:0.05. "
        "Default: the run's training values plus S3.",
    )
    flags.DEFINE_list(
        "attacks", ["train", "pgd20", "autoattack_fast", "square"],
        oat_flags.ATTACK_NAMES_HELP,
    )
    oat_flags.define_attack_budget_flags("the run's", "examples of --split")
    flags.DEFINE_string("output_dir", None, "Where results go (default: <run_dir>/evaluation_<split>).")
    flags.DEFINE_list(
        "widths", None,
        "Widths of a slimmable (OATS, PGD-ATS) model to evaluate, e.g. 0.5,1.0. Default: every "
        "width of a slimmable model (of a SavedModel: one per signature); 1.0 only for others.",
    )
    flags.DEFINE_bool("masking_checks", True, "Run the gradient-masking checks.")
    flags.DEFINE_integer("check_examples", 200, "Examples used by the ε-sweep and gradient checks.")
    flags.DEFINE_string(
        "plot_attack", None,
        "Attack label (e.g. PGD-20) of the RA in the plots and the frontier points. Default: the "
        "strongest attack (lowest mean RA).",
    )
    flags.DEFINE_list(
        "frontier_runs", [],
        "PGD-AT runs trained at one fixed λ, plotted as the SA-RA frontier: training run "
        "directories (test_eval.json) or evaluation directories (evaluation.json).",
    )
    flags.DEFINE_bool(
        "plots", True,
        "Write the plots besides RA vs SA: SA/RA against λ, seen vs unseen λ, Jacobian saliency "
        "and the last batch norm's running statistics.",
    )
    flags.DEFINE_integer(
        "saliency_examples", 4, "Saliency plot: the first N examples of the split (0: no saliency plot)."
    )
    flags.DEFINE_list(
        "saliency_indices", None, "Saliency plot: these example indices instead of the first N."
    )
    flags.DEFINE_list(
        "saliency_lambdas", None,
        "λ columns of the saliency plot. Default: the run's training values (S1 without a run).",
    )
    flags.DEFINE_list(
        "bn_runs", [],
        "Further run directories whose last batch norm's running mean/variance are plotted "
        "with the evaluated run's.",
    )
    flags.DEFINE_enum(
        "bn_statistics", "moving", list(config_lib.BN_STATISTICS),
        "moving: BN moving averages (default); batch: every BN normalises each evaluated batch "
        "with its own moments (train-mode BN, moving statistics untouched; SPEC §4); evaluate "
        "with --batch_size as large as in training. --run_dir only (not --saved_model), not "
        "for slimmable or multi-exit runs.",
    )
    flags.DEFINE_string(
        "tensorboard_dir", None,
        "TensorBoard directory of this evaluation (default: <output_dir>/tensorboard; an empty "
        "value writes none). Its earlier event files are replaced.",
    )


def _load_state(path: str, settings: Dict[str, Any]) -> Dict[str, Any]:
    """The saved per-λ results of an interrupted evaluation with the same settings.

    The settings include the model's identity (`checkpoint_state`: the
    checkpoint's path, step and index digest, or the SavedModel's digest):
    results measured on another model (e.g. the run trained on since) are
    dropped, with a log line, and the evaluation starts over.
    """
    fresh = {"settings": settings, "per_lambda": {}}
    if not os.path.isfile(path):
        return fresh
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError) as error:
        logging.warning("Ignoring unreadable evaluation state %s (%s): starting over.", path, error)
        return fresh
    saved = state.get("settings") if isinstance(state, dict) else None
    if isinstance(saved, dict) and "bn_statistics" not in saved:
        # States written before `--bn_statistics` existed used moving statistics.
        saved = {**saved, "bn_statistics": "moving"}
        state["settings"] = saved
    if isinstance(saved, dict) and saved.get("model") != settings.get("model"):
        logging.info(
            "%s was measured on another model (%s; now %s): starting the evaluation over.",
            path, saved.get("model"), settings.get("model"),
        )
        return fresh
    if saved != settings:
        raise ValueError(
            f"{path} holds an evaluation with other settings. Expected the same "
            "model, split, attacks, seed and BN statistics to resume, or another --output_dir. "
            f"Received: {state.get('settings')} vs {settings}"
        )
    return state


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    if not FLAGS.run_dir and not FLAGS.saved_model:
        raise app.UsageError("Pass --run_dir (a training run) or --saved_model (an export).")
    try:
        oat_flags.check_model_paths(FLAGS.run_dir, FLAGS.saved_model, FLAGS.output_dir)
    except ValueError as error:
        raise app.UsageError(str(error)) from None

    from oat_tf import data  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import loading  # pylint: disable=import-outside-toplevel
    from oat_tf.training import determinism  # pylint: disable=import-outside-toplevel

    determinism.configure(FLAGS.deterministic)
    from oat_tf.evaluation import frontier as frontier_lib  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import saliency  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import width_grid  # pylint: disable=import-outside-toplevel

    run_config = loading.read_run_config(FLAGS.run_dir) if FLAGS.run_dir else None
    batch_stats = FLAGS.bn_statistics == "batch"
    if batch_stats:
        check_batch_statistics_source(FLAGS.saved_model, run_config)
    # Flags that need neither the model nor the data are checked before either is loaded.
    dataset_name = FLAGS.dataset or (run_config["data"]["dataset"] if run_config else None)
    if dataset_name is None:
        raise app.UsageError("--dataset is required when evaluating a SavedModel without --run_dir.")
    train_attack_dict = dict(run_config["train_attack"]) if run_config else {}
    train_attack = config_lib.AttackConfig(**train_attack_dict) if run_config else config_lib.AttackConfig()
    if FLAGS.epsilon or FLAGS.step_size:
        train_attack = config_lib.AttackConfig(
            **{
                **config_lib.to_dict(train_attack),
                "epsilon": oat_flags.parse_fraction("epsilon", FLAGS.epsilon) if FLAGS.epsilon else train_attack.epsilon,
                "step_size": oat_flags.parse_fraction("step_size", FLAGS.step_size) if FLAGS.step_size else train_attack.step_size,
            }
        )
    attack_list = oat_flags.parse_eval_attacks(FLAGS.attacks, train_attack)
    attack_labels = [a.describe() for a in attack_list]
    if FLAGS.plot_attack is not None and FLAGS.plot_attack not in attack_labels:
        raise app.UsageError(
            f"--plot_attack must be one of the evaluated attacks {attack_labels}. "
            f"Received: {FLAGS.plot_attack!r}"
        )
    try:
        frontier_runs = [frontier_lib.load_frontier_run(d) for d in FLAGS.frontier_runs]
        bn_run_configs = [loading.read_run_config(d) for d in FLAGS.bn_runs]
    except (FileNotFoundError, ValueError) as error:
        raise app.UsageError(f"--frontier_runs / --bn_runs: {error}") from None
    saliency_lambdas = oat_flags.parse_lambdas(FLAGS.saliency_lambdas) if FLAGS.saliency_lambdas else None
    if FLAGS.lambdas:
        lambdas = oat_flags.parse_lambdas(FLAGS.lambdas)
    else:
        seen = tuple(run_config["lambda_sampling"]["values"]) if run_config else config_lib.S1
        lambdas = config_lib.check_lambda_values("lambdas", seen + config_lib.S3)
    seen_lambdas = tuple(run_config["lambda_sampling"]["values"]) if run_config else None
    output_dir = FLAGS.output_dir or (
        os.path.join(FLAGS.run_dir, default_output_name(FLAGS.split, FLAGS.bn_statistics))
        if FLAGS.run_dir else None
    )
    if output_dir is None:
        raise app.UsageError("--output_dir is required when evaluating a SavedModel without --run_dir.")

    if FLAGS.saved_model:
        model = loading.SavedModelClassifier(FLAGS.saved_model)
        source = os.path.abspath(FLAGS.saved_model)
        model_identity = checkpoint_state.saved_model_identity(FLAGS.saved_model)
    else:
        model, _ = loading.load_network_from_run(FLAGS.run_dir)
        source = os.path.abspath(FLAGS.run_dir)
        model_identity = checkpoint_state.checkpoint_identity(
            checkpoint_state.latest_checkpoint(os.path.join(FLAGS.run_dir, "checkpoints"))
        )
        if batch_stats:
            from oat_tf.models import batch_statistics  # pylint: disable=import-outside-toplevel

            try:
                model = batch_statistics.batch_statistics_model(model)
            except ValueError as error:
                raise app.UsageError(f"--bn_statistics=batch: {error}") from None
            logging.info("Evaluating with batch statistics (BN moving averages unused).")

    data_config = config_lib.DataConfig(
        dataset=dataset_name,
        data_dir=FLAGS.data_dir or (run_config["data"].get("data_dir") if run_config else None),
        validation_size=run_config["data"].get("validation_size") if run_config else None,
        num_eval_examples=FLAGS.num_examples,
    )
    splits = data.load_splits(data_config)
    split = splits.test if FLAGS.split == "test" else splits.validation
    if split is None:
        raise app.UsageError(f"{dataset_name} has no {FLAGS.split} split (see --validation_size).")

    try:
        saliency_indices = saliency.select_indices(
            split.num_examples, FLAGS.saliency_examples,
            [int(i) for i in FLAGS.saliency_indices] if FLAGS.saliency_indices else None,
        ) if FLAGS.plots else []
    except ValueError as error:
        raise app.UsageError(f"--saliency_indices / --saliency_examples: {error}") from None
    try:
        width_models = width_grid.select_widths(model, FLAGS.widths, FLAGS.saved_model)
    except ValueError as error:
        raise app.UsageError(f"--widths: {error}") from None
    slimmable = width_grid.is_slimmable(model, FLAGS.saved_model)
    os.makedirs(output_dir, exist_ok=True)
    settings = {
        "source": source,
        "dataset": dataset_name,
        "split": FLAGS.split,
        "num_examples": int(split.num_examples),
        "attacks": [config_lib.to_dict(a) for a in attack_list],
        "seed": FLAGS.seed,
        "bn_statistics": FLAGS.bn_statistics,
        "model": model_identity,
    }
    dataset = data.eval_dataset(split, batch_size=FLAGS.batch_size)
    common = dict(
        split=split, dataset=dataset, dataset_name=dataset_name, settings=settings,
        attack_list=attack_list, lambdas=lambdas, seen_lambdas=seen_lambdas, source=source,
        frontier_runs=frontier_runs, run_config=run_config, bn_run_configs=bn_run_configs,
        saliency_lambdas=saliency_lambdas, saliency_indices=saliency_indices,
    )
    if not slimmable:
        tensorboard_dir = (
            os.path.join(output_dir, "tensorboard") if FLAGS.tensorboard_dir is None else FLAGS.tensorboard_dir
        )
        evaluate_width(width_models[0][1], None, output_dir, tensorboard_dir, **common)
        return

    from oat_tf.evaluation import width_grid  # pylint: disable=import-outside-toplevel

    per_width = {}
    for width, width_model in width_models:
        key = width_grid.width_key(width)
        width_dir = os.path.join(output_dir, f"width_{key}")
        tensorboard_dir = (
            os.path.join(width_dir, "tensorboard") if FLAGS.tensorboard_dir is None
            else (os.path.join(FLAGS.tensorboard_dir, f"width_{key}") if FLAGS.tensorboard_dir else "")
        )
        logging.info("Width %s: results in %s.", key, width_dir)
        per_width[key] = evaluate_width(width_model, width, width_dir, tensorboard_dir, **common)
    grid = {"widths": [w for w, _ in width_models], "per_width": per_width}
    title = f"{os.path.basename(source.rstrip('/'))} on {dataset_name} ({FLAGS.split}), per width"
    paths = width_grid.write_width_report(
        grid, output_dir, prefix="evaluation_widths", attack=FLAGS.plot_attack, title=title
    )
    sys.stdout.write(
        f"\nSA / RA per λ and width ({dataset_name}, {FLAGS.split})\n\n"
        + width_grid.format_width_table(grid, attack=FLAGS.plot_attack)
        + f"\nResults: {paths['json']}, {paths['markdown']}, {paths['plot']}\n"
    )


def default_output_name(split: str, bn_statistics: str = "moving") -> str:
    """Returns the default `--output_dir` name under the run directory.

    Args:
        split: str, "test" or "validation".
        bn_statistics: str, "moving" or "batch".

    Returns:
        str, `evaluation_<split>`, with `_batch_stats` appended for "batch".
    """
    return f"evaluation_{split}" + ("_batch_stats" if bn_statistics == "batch" else "")


def check_batch_statistics_source(saved_model: Optional[str], run_config: Optional[Dict[str, Any]]) -> None:
    """Raises `app.UsageError` unless `--bn_statistics=batch` can apply to the source.

    Args:
        saved_model: str or None, `--saved_model`.
        run_config: dict or None, the config.json of `--run_dir`.

    Raises:
        app.UsageError: with `--saved_model` (no BN layers to switch), without
            a run directory, or for a slimmable or multi-exit run.
    """
    if saved_model:
        raise app.UsageError(
            "--bn_statistics=batch needs --run_dir: a SavedModel has no BN layers to switch "
            "(export with --export_bn_statistics=batch instead). "
            f"Received: --saved_model={saved_model!r}"
        )
    if run_config is None:
        raise app.UsageError("--bn_statistics=batch needs --run_dir.")
    model = run_config.get("model", {})
    try:
        config_lib.check_bn_statistics(
            "bn_statistics", "batch", model.get("architecture", ""), model.get("variant", "")
        )
    except ValueError as error:
        raise app.UsageError(f"--bn_statistics=batch: {error}") from None


def evaluate_width(
    model: Any,
    width: Optional[float],
    output_dir: str,
    tensorboard_dir: str,
    *,
    split: Any,
    dataset: Any,
    dataset_name: str,
    settings: Dict[str, Any],
    attack_list: Sequence[Any],
    lambdas: Sequence[float],
    seen_lambdas: Optional[Sequence[float]],
    source: str,
    frontier_runs: Sequence[Any],
    run_config: Optional[Dict[str, Any]],
    bn_run_configs: Sequence[Dict[str, Any]],
    saliency_lambdas: Optional[Sequence[float]],
    saliency_indices: Sequence[int],
) -> Dict[str, Any]:
    """Evaluates one width (None: a model that is not slimmable) into `output_dir`; returns the result."""
    import tqdm  # pylint: disable=import-outside-toplevel

    from oat_tf import atomic_files  # pylint: disable=import-outside-toplevel
    from oat_tf import evaluation  # pylint: disable=import-outside-toplevel
    from oat_tf import reporting  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import frontier as frontier_lib  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import masking_checks  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import results as results_lib  # pylint: disable=import-outside-toplevel

    os.makedirs(output_dir, exist_ok=True)
    if width is not None:
        settings = {**settings, "width": float(width)}
    state_path = os.path.join(output_dir, STATE_FILE)
    state = _load_state(state_path, settings)

    todo = [lam for lam in lambdas if evaluation.lambda_key(lam) not in state["per_lambda"]]
    if len(todo) < len(lambdas):
        logging.info("Resuming: %d of %d λ already evaluated.", len(lambdas) - len(todo), len(lambdas))
    width_note = "" if width is None else f", width {evaluation.lambda_key(width)}"
    desc = f"λ{width_note}"
    for lam in tqdm.tqdm(todo, desc=desc, unit="λ", file=sys.stderr):
        part = evaluation.evaluate_lambda_grid(
            model, dataset, [lam], attack_list, seed=FLAGS.seed, show_progress=True
        )
        state["per_lambda"][evaluation.lambda_key(lam)] = part
        atomic_files.write_json(state_path, state, sort_keys=True)
    result = results_lib.merge_results([state["per_lambda"][evaluation.lambda_key(l)] for l in lambdas])

    checks: List[Dict[str, Any]] = []
    if FLAGS.masking_checks:
        checks = run_masking_checks(model, split, result, attack_list, lambdas, masking_checks, evaluation)
    result["masking_checks"] = checks
    result["source"] = source
    result["split"] = FLAGS.split
    result["dataset"] = dataset_name
    result["bn_statistics"] = settings.get("bn_statistics", "moving")
    if width is not None:
        result["width"] = float(width)

    batch_note = ", batch statistics" if result["bn_statistics"] == "batch" else ""
    title = f"{os.path.basename(source.rstrip('/'))} on {dataset_name} ({FLAGS.split}{batch_note})"
    title += width_note
    plot_attack = FLAGS.plot_attack or evaluation.strongest_attack(result)
    frontier_points = []
    if frontier_runs and plot_attack is None:
        logging.warning("No attack evaluated: the frontier runs have no RA to compare; not plotted.")
    elif frontier_runs:
        settings_of_attack = results_lib.attack_settings(result, plot_attack)
        frontier_points = [
            frontier_lib.frontier_point(
                run, plot_attack, settings_of_attack,
                dataset=dataset_name, num_examples=result["num_examples"],
            )
            for run in frontier_runs
        ]
        result["frontier"] = [p.to_dict() for p in frontier_points]

    figures = {}
    if FLAGS.plots:
        figures = make_figures(
            result, model, split, run_config, bn_run_configs, seen_lambdas, plot_attack,
            frontier_points, title, saliency_lambdas, saliency_indices,
        )
    paths = reporting.write_report(
        result, output_dir, prefix="evaluation", seen_lambdas=seen_lambdas, title=title,
        attack=plot_attack, frontier=frontier_points, figures=figures,
    )
    if tensorboard_dir:
        reporting.log_evaluation(
            result, tensorboard_dir, plot_paths=paths["plots"], width=1.0 if width is None else width
        )
    table = evaluation.format_table(result, seen_lambdas=seen_lambdas)
    lines = [
        f"\nSA / RA per λ ({dataset_name}, {FLAGS.split}, {result['num_examples']} examples{width_note})\n",
        table, "",
    ]
    for check in checks:
        status = "PASS" if check["passed"] else "FAIL"
        lines.append(f"[{status}] {check['name']}: {check['detail']}")
    lines.append(f"\nResults: {output_dir}")
    lines.append("Plots: " + ", ".join(os.path.basename(p) for p in paths["plots"].values()))
    if tensorboard_dir:
        lines.append(f"TensorBoard: tensorboard --logdir {tensorboard_dir}")
    sys.stdout.write("\n".join(lines) + "\n")
    if not all(c["passed"] for c in checks):
        logging.warning("Gradient-masking checks failed: %s", [c["name"] for c in checks if not c["passed"]])
    return result


def run_label(run_dir: str, run_config: Dict[str, Any]) -> str:
    """Returns a short label of a run: "<name> (<variant>[, λ=<value>])".

    Args:
        run_dir: str, the run directory.
        run_config: dict, its config.json.

    Returns:
        str; the fixed λ is named for runs trained at one λ (PGD-AT).
    """
    name = run_config.get("name") or os.path.basename(os.path.abspath(run_dir))
    variant = run_config.get("model", {}).get("variant", "?")
    values = run_config.get("lambda_sampling", {}).get("values", [])
    return f"{name} ({variant}, λ={values[0]:g})" if len(values) == 1 else f"{name} ({variant})"


def make_figures(
    result: Dict[str, Any],
    model: Any,
    split: Any,
    run_config: Optional[Dict[str, Any]],
    bn_run_configs: Sequence[Dict[str, Any]],
    seen_lambdas: Optional[Sequence[float]],
    plot_attack: Optional[str],
    frontier_points: Sequence[Any],
    title: str,
    saliency_lambdas: Optional[Sequence[float]],
    saliency_indices: Sequence[int],
) -> Dict[str, Any]:
    """Builds the plots besides RA vs SA; records saliency and BN details in `result`.

    Args:
        result: dict, the merged evaluation result (gets "saliency" and
            "bn_running_statistics" entries).
        model: the evaluated model (Keras network or SavedModelClassifier).
        split: ArraySplit, the evaluated split (saliency images).
        run_config: optional dict, the run's config.json.
        bn_run_configs: sequence of dict, configs of `--bn_runs`.
        seen_lambdas: optional sequence of float, the training λ values.
        plot_attack: optional str, the attack of the RA plots.
        frontier_points: sequence of FrontierPoint.
        title: str, the plots' title.
        saliency_lambdas: optional sequence of float, the saliency columns.
        saliency_indices: sequence of int, the saliency images (empty: none).

    Returns:
        dict {name: matplotlib Figure}: "accuracy_vs_lambda", and when
        possible "seen_vs_unseen", "saliency" and "bn_statistics".
    """
    import keras  # pylint: disable=import-outside-toplevel
    import tqdm  # pylint: disable=import-outside-toplevel

    from oat_tf import evaluation  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import bn_statistics  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import loading  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import saliency  # pylint: disable=import-outside-toplevel
    from oat_tf.reporting import plots  # pylint: disable=import-outside-toplevel

    figures = {
        "accuracy_vs_lambda": plots.accuracy_vs_lambda_figure(result, frontier=frontier_points, title=title)
    }
    if seen_lambdas is not None:
        figures["seen_vs_unseen"] = plots.seen_vs_unseen_figure(
            result, seen_lambdas, attack=plot_attack, frontier=frontier_points, title=title
        )
    else:
        logging.info("The training λ values are unknown (no --run_dir): no seen-vs-unseen plot.")

    indices = saliency_indices
    if indices:
        columns = saliency_lambdas or tuple(seen_lambdas or config_lib.S1)
        images = split.images[indices].astype(np.float32) / 255.0
        labels = split.labels[indices]
        gradients = [
            saliency.input_gradients(model, images, labels, lam)
            for lam in tqdm.tqdm(columns, desc="saliency λ", unit="λ", file=sys.stderr)
        ]
        gradients = np.stack(gradients, axis=1)  # [N, L, H, W, C]
        alignment = np.stack([saliency.alignment(images, gradients[:, j]) for j in range(len(columns))], axis=1)
        figures["saliency"] = plots.saliency_figure(
            images, saliency.display_maps(gradients), columns, labels=labels, alignment=alignment,
            title=f"∇ₓ CE(f(x, λ), y) — {title} (under each map: |cos(x, ∇ₓ)|)",
        )
        result["saliency"] = {
            "gradient": "input gradient of the clean cross-entropy, true label",
            "indices": [int(i) for i in indices],
            "lambdas": [float(lam) for lam in columns],
            "alignment": {
                evaluation.lambda_key(lam): [float(a) for a in alignment[:, j]]
                for j, lam in enumerate(columns)
            },
        }

    runs = []
    if FLAGS.run_dir:
        # The running statistics live in the network, not in a batch-statistics view.
        network = getattr(model, "network", model)
        runs.append((FLAGS.run_dir, run_config, network if isinstance(network, keras.Model) else None))
    runs += [(run_dir, config, None) for run_dir, config in zip(FLAGS.bn_runs, bn_run_configs)]
    series = []
    for run_dir, config, network in tqdm.tqdm(
        runs, desc="BN statistics", unit="run", file=sys.stderr, disable=len(runs) < 2
    ):
        if network is None:
            network, _ = loading.load_network_from_run(run_dir)
        try:
            series += bn_statistics.running_statistics(network, run_label(run_dir, config))
        except ValueError as error:
            logging.warning("No batch norm statistics for %s: %s", run_dir, error)
    if series:
        figures["bn_statistics"] = plots.bn_statistics_figure(series)
        result["bn_running_statistics"] = [{"label": s.label, "layer": s.layer_name} for s in series]
    else:
        logging.info("No run directory with batch norm layers: no batch norm statistics plot.")
    return figures


def run_masking_checks(model, split, result, attack_list, lambdas, masking_checks, evaluation):
    """Runs the gradient-masking checks: the first two on a subset of the split, the rest on `result`'s counts."""
    from oat_tf import data  # pylint: disable=import-outside-toplevel

    subset = split.take(min(FLAGS.check_examples, split.num_examples))
    images = subset.images.astype(np.float32) / 255.0
    checks = [masking_checks.input_gradients(model, images, subset.labels, lambdas)]
    pgd = next((a for a in attack_list if a.name == "pgd"), None)
    if pgd is not None:
        check_lambdas = sorted({lambdas[0], lambdas[-1]})
        subset_dataset = data.eval_dataset(subset, batch_size=FLAGS.batch_size)

        def robust_accuracy_at(epsilon):
            attack = config_lib.AttackConfig(**{**config_lib.to_dict(pgd), "epsilon": epsilon})
            part = evaluation.evaluate_lambda_grid(
                model, subset_dataset, check_lambdas, [attack], seed=FLAGS.seed
            )
            return part["robust_accuracy"][attack.describe()]

        checks.append(
            masking_checks.epsilon_monotonicity(robust_accuracy_at, pgd.epsilon, subset.num_examples)
        )
    checks.extend(masking_checks.paired_checks(result))
    return checks


def run() -> None:
    """The `oat-evaluate` console script; `python -m oat_tf.evaluate` runs it too."""
    cli.run_main(main, __name__, define_flags)


if __name__ == "__main__":
    run()
