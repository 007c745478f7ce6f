"""One training run end to end: data → model → fit → evaluation → export.

`run_experiment` is what `python -m oat_tf.train` calls once flags have become
an `ExperimentConfig`; tests call it directly with tiny configs. The exported
SavedModel carries a model card (`evaluation.model_card.make_model_card`): what the model is, how it
was trained, and the SA/RA table measured on the test split at export.

A slimmable run (OATS, PGD-ATS) is evaluated on the test split at every
width (`evaluation.width_grid`): `test_eval.*` stays the full width,
`test_eval_width_<α>.*` holds each narrower width and `test_eval_widths.*`
the λ × width table and plot; the export has one signature per width and
its model card the λ × width table.

With `EvalConfig.bn_statistics="batch"` the test evaluation runs on
`batch_statistics_model(network)` (every BN normalises each test batch with
its own moments, moving statistics untouched; SPEC §4), and with
`ExperimentConfig.export_bn_statistics="batch"` so does the export; the
validation callback always uses the moving statistics.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Optional, Sequence

import keras
import tensorflow as tf
from absl import logging

from oat_tf import atomic_files
from oat_tf import config as config_lib
from oat_tf import data
from oat_tf import evaluation
from oat_tf import export
from oat_tf import models
from oat_tf import output_paths
from oat_tf import reporting
from oat_tf import run_directory
from oat_tf.evaluation import masking_checks
from oat_tf.evaluation import model_card
from oat_tf.evaluation import width_grid
from oat_tf.models import batch_statistics
from oat_tf.models import initialization
from oat_tf.models import precision
from oat_tf.training import adversarial_trainer
from oat_tf.training import callbacks as callbacks_lib
from oat_tf.training import checkpointing
from oat_tf.training import distributed_loop
from oat_tf.training import multi_exit_experiment
from oat_tf.training import optimizers


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Returns the distribution strategy named by `--strategy`.

    Args:
        name: str, "default", "mirrored" (all local devices) or "multi_worker"
            (cluster from the `TF_CONFIG` environment variable).

    Returns:
        tf.distribute.Strategy.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(
        f"`strategy` must be one of {config_lib.STRATEGIES}. Received: strategy={name!r}"
    )


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes results (always True off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def _checkpoint_bytes_estimate(config: config_lib.ExperimentConfig) -> int:
    """A floor on the disk a run needs: its checkpoints, before the model is built.

    Counted from the input size as a generous per-run allowance (16 MiB plus
    the kept checkpoints of a ResNet-sized model when the images are large);
    a full disk is otherwise found only when the first checkpoint is written.
    """
    height, width, channels = (int(d) for d in config.model.input_shape)
    per_checkpoint = 8 * 2**20 if height * width * channels <= 28 * 28 * 3 else 200 * 2**20
    return 16 * 2**20 + config.train.max_checkpoints * per_checkpoint


def _fit(
    fit: Callable[..., Any], split, config, steps_per_epoch: int, start_step: int, callbacks
) -> None:
    """Runs `fit` (`trainer.fit` or a `distributed_loop.DistributedFit`) from `start_step`.

    A partly done epoch is split off first, as a one-epoch fit of its
    remaining steps.
    """
    epochs = config.train.epochs
    total = steps_per_epoch * epochs
    step = start_step
    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        dataset = data.train_dataset(
            split,
            batch_size=config.train.batch_size,
            seed=config.train.seed,
            augment=config.data.augment,
            epochs=epochs,
            start_step=step,
        )
        if offset:
            # Finish the interrupted epoch as a one-epoch fit of the remaining steps.
            fit(
                dataset,
                initial_epoch=epoch,
                epochs=epoch + 1,
                steps_per_epoch=steps_per_epoch - offset,
                callbacks=callbacks,
                verbose=2,
            )
            step = (epoch + 1) * steps_per_epoch
            continue
        fit(
            dataset,
            initial_epoch=epoch,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            callbacks=callbacks,
            verbose=2,
        )
        step = total


def build_trainer(
    config: config_lib.ExperimentConfig, network: keras.Model
) -> adversarial_trainer.AdversarialTrainer:
    """The trainer of a run's method: OAT / PGD-AT / Mixture BN, OATS / PGD-ATS, or RDI-Nets.

    Args:
        config: ExperimentConfig.
        network: the network `models.build_model(config.model)` built.

    Returns:
        An uncompiled `AdversarialTrainer` (`OATTrainer`, `OATSTrainer` for
        slimmable variants, `MultiExitTrainer` for multi-exit architectures).
    """
    if config_lib.is_multi_exit_architecture(config.model.architecture):
        return adversarial_trainer.MultiExitTrainer(
            network,
            attack=config.train_attack,
            defence=config.multi_exit.defence,
            exit_weights=config.multi_exit.exit_weights or None,
            sampling=config.lambda_sampling if config.model.variant != "plain" else None,
            seed=config.train.seed,
            adversarial_bn_statistics=config.train.adversarial_bn_statistics,
        )
    # Slimmable variants (OATS, PGD-ATS) train every width per step (Algorithm 2).
    trainer_class = (
        adversarial_trainer.OATSTrainer if config.model.slimmable else adversarial_trainer.OATTrainer
    )
    return trainer_class(
        network,
        sampling=config.lambda_sampling,
        attack=config.train_attack,
        seed=config.train.seed,
        adversarial_bn_statistics=config.train.adversarial_bn_statistics,
        objective=config.train.objective,
        clean_fraction=config.train.clean_fraction,
    )


def run_experiment(
    config: config_lib.ExperimentConfig,
    *,
    resume: bool = False,
    flags_text: Optional[str] = None,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    strategy: Optional[tf.distribute.Strategy] = None,
) -> Dict[str, Any]:
    """Trains, evaluates and exports one run.

    Args:
        config: ExperimentConfig.
        resume: bool, continue from the run directory's latest checkpoint. A run
            directory that already holds checkpoints is never overwritten
            without it.
        flags_text: str or None, the resolved flags (flagfile format), saved as
            `flags.txt` in the run directory.
        extra_callbacks: Keras callbacks added to `fit`.
        strategy: tf.distribute.Strategy or None, the strategy to train
            under; default: the one `config.train.strategy` names
            (`make_strategy`).

    Returns:
        dict with `run_dir`, `export_dir` (or None), `results` (the test
        evaluation), `table` (its Markdown table) and `history_steps`.
    """
    # Names, output paths and the run directory's state first: nothing is
    # loaded, built or created before they pass.
    run_directory.check_before_training(config, resume=resume)
    strategy = strategy or make_strategy(config.train.strategy)
    chief = is_chief(strategy)
    run_dir = run_directory.run_directory(config)

    try:
        splits = data.load_splits(config.data, seed=config.train.seed)
    except (ValueError, FileNotFoundError) as error:
        raise run_directory.RunRefusedError(f"--dataset={config.data.dataset}: {error}") from None
    config = dataclasses.replace(
        config,
        model=dataclasses.replace(
            config.model,
            input_shape=tuple(splits.image_shape),
            num_classes=splits.num_classes,
        ),
        data=dataclasses.replace(config.data, augment=splits.augment),
    )
    if resume:
        run_directory.check_resume_settings(run_dir, config_lib.to_dict(config))
    try:
        output_paths.check_free_space(
            "runs_dir", config.runs_dir, needed_bytes=_checkpoint_bytes_estimate(config)
        )
    except ValueError as error:
        raise run_directory.RunRefusedError(str(error)) from None
    # Every check passed: only now does the run directory appear. A worker
    # other than the chief saves its checkpoints (which every worker must
    # write under a multi-worker strategy) in scratch space deleted at the
    # end, and resumes from the chief's.
    chief_run_dir = run_dir
    if not chief:
        run_dir = tempfile.mkdtemp(prefix="oat_tf_worker_")
    os.makedirs(run_dir, exist_ok=True)
    atomic_files.write_json(os.path.join(run_dir, "config.json"), config_lib.to_dict(config), sort_keys=True)
    if flags_text is not None:
        atomic_files.write_text(os.path.join(run_dir, "flags.txt"), flags_text)

    steps_per_epoch = data.steps_per_epoch(len(splits.train.labels), config.train.batch_size)
    # Weight initialisation and the layers' own RNGs (dropout) follow the run seed.
    keras.utils.set_random_seed(config.train.seed)
    multi_exit = config_lib.is_multi_exit_architecture(config.model.architecture)
    with strategy.scope():
        network = models.build_model(config.model, precision=config.train.mixed_precision)
        if config.train.weight_init == "torch":
            # A resumed run's checkpoint then replaces these weights, as it replaces Keras's.
            initialization.initialize_like_torch(network, seed=config.train.seed)
        trainer = build_trainer(config, network)
        trainer.compile(
            optimizer=optimizers.make_optimizer(
                config.optimizer,
                steps_per_epoch=steps_per_epoch,
                epochs=config.train.epochs,
                loss_scaling=precision.uses_loss_scaling(config.train.mixed_precision),
            ),
            jit_compile=config.train.jit_compile,
            run_eagerly=config.train.run_eagerly,
        )
    logging.info(
        "Run %s: %s/%s on %s (%s), %d train examples, %d steps/epoch, %d epochs, strategy %s "
        "(%d replicas).",
        config.name,
        config.model.architecture,
        config.model.variant,
        config.data.dataset,
        f"defence {config.multi_exit.defence}" if multi_exit else f"objective {trainer.objective.name}",
        len(splits.train.labels),
        steps_per_epoch,
        config.train.epochs,
        config.train.strategy,
        strategy.num_replicas_in_sync,
    )

    with strategy.scope():  # Restoring builds the optimizer's variables.
        manager, start_step = checkpointing.restore_run(
            trainer,
            run_dir,
            resume=resume,
            max_to_keep=config.train.max_checkpoints,
            restore_dir=chief_run_dir,
        )
    distributed_loop.check_same_start_step(strategy, start_step)

    eval_batch = config.evaluation.batch_size
    validation = splits.validation
    callbacks = [checkpointing.CheckpointCallback(manager, config.train.checkpoint_every_steps)]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=os.path.join(run_dir, "tensorboard")))
    # RDI-Nets calibrate and evaluate their exits after training, not per epoch.
    periodic = bool(config.evaluation.every_epochs) and not multi_exit and chief
    if periodic and validation is not None:
        callbacks.append(
            callbacks_lib.LambdaGridEvaluation(
                data.eval_dataset(validation, batch_size=eval_batch),
                lambdas=config.evaluation.lambdas,
                attacks=config.evaluation.attacks,
                every_epochs=config.evaluation.every_epochs,
                log_dir=os.path.join(run_dir, "tensorboard", "validation"),
                seed=config.train.seed,
            )
        )
    elif periodic:
        logging.warning(
            "--eval_every_epochs=%d but %s has no validation split: periodic "
            "evaluation is off (the test split is never used for it). Set "
            "--validation_size to hold out training examples.",
            config.evaluation.every_epochs,
            config.data.dataset,
        )
    callbacks.extend(extra_callbacks)
    # Keras' fit fails under MultiWorkerMirroredStrategy: the custom loop runs
    # the same train_step and callbacks there.
    fit = (
        distributed_loop.DistributedFit(trainer, strategy)
        if distributed_loop.uses_custom_loop(strategy)
        else trainer.fit
    )
    _fit(fit, splits.train, config, steps_per_epoch, start_step, callbacks)
    if not chief:
        shutil.rmtree(run_dir, ignore_errors=True)
        logging.info("Trained as a worker; the chief evaluates, writes the results and exports.")
        return {
            "run_dir": None,
            "export_dir": None,
            "results": None,
            "width_results": None,
            "table": "",
            "network": network,
            "trainer": trainer,
        }
    if multi_exit:
        # RDI-Nets: exit calibration, the multi-exit evaluation and the adaptive export.
        evaluated = multi_exit_experiment.evaluate_and_export(
            config, network=network, run_dir=run_dir, splits=splits
        )
        logging.info("Test evaluation of %s:\n%s", config.name, evaluated["table"])
        return {"run_dir": run_dir, "width_results": None, **evaluated, "network": network, "trainer": trainer}

    # Every width of a slimmable network (OATS, PGD-ATS), the full width of
    # the others; `results` stays the full-width evaluation. Batch statistics
    # (functional networks only, checked by the config): a view sharing the
    # network's variables whose BNs use each test batch's moments.
    batch_stats = config.evaluation.bn_statistics == "batch"
    if batch_stats:
        logging.info("Test evaluation with batch statistics (BN moving averages unused).")
    width_results = width_grid.evaluate_width_grid(
        batch_statistics.batch_statistics_model(network) if batch_stats else network,
        data.eval_dataset(splits.test, batch_size=eval_batch),
        config.evaluation.lambdas,
        config.evaluation.attacks,
        seed=config.train.seed,
        show_progress=True,
    )
    # The checks that need only the recorded paired counts (a weaker attack
    # overstating robustness, Square beating the white-box attacks, ...).
    for result in width_results["per_width"].values():
        result["masking_checks"] = masking_checks.paired_checks(result)
    results = width_results["per_width"][width_grid.width_key(1.0)]
    failed = [c["name"] for c in results["masking_checks"] if not c["passed"]]
    if failed:
        logging.warning(
            "Masking checks failed on the test evaluation: %s",
            "; ".join(c["detail"] for c in results["masking_checks"] if not c["passed"]),
        )
    if not config.model.slimmable:
        width_results = None
    seen = config.lambda_sampling.values
    table = evaluation.format_table(results, seen_lambdas=seen)
    export_path = None
    title = (
        f"{config.name}: {config.model.architecture}/{config.model.variant} on "
        f"{config.data.dataset} (test split"
        f"{', batch statistics' if batch_stats else ''})"
    )
    reporting.write_report(results, run_dir, prefix="test_eval", seen_lambdas=seen, title=title)
    if width_results is not None:
        for width in width_results["widths"][:-1]:
            key = width_grid.width_key(width)
            reporting.write_report(
                width_results["per_width"][key],
                run_dir,
                prefix=f"test_eval_width_{key}",
                seen_lambdas=seen,
                title=f"{title}, width {key}",
            )
        width_grid.write_width_report(
            width_results, run_dir, prefix="test_eval_widths", title=title
        )
    writer = tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard", "test"))
    reporting.write_scalars(results, writer, step=int(trainer.optimizer.iterations.numpy()))
    writer.flush()
    if config.export_dir:
        export_batch_stats = config.export_bn_statistics == "batch"
        if export_batch_stats:
            logging.info("Exporting with batch statistics (each request batch's moments).")
        export_path = export.export_saved_model(
            batch_statistics.batch_statistics_model(network) if export_batch_stats else network,
            os.path.join(config.export_dir, config.name),
            image_shape=tuple(splits.image_shape),
            model_card=model_card.make_model_card(config_lib.to_dict(config), results, width_results),
        )
    logging.info("Test evaluation of %s:\n%s", config.name, table)
    return {
        "run_dir": run_dir,
        "export_dir": export_path,
        "results": results,
        "width_results": width_results,
        "table": table,
        "network": network,
        "trainer": trainer,
    }
