"""OAT training-step throughput (images/s) in eager, tf.function and XLA modes.

`python -m oat_tf.bench --models=small_cnn,resnet34 --modes=eager,function,xla`
(and `--precisions=float32,mixed_bfloat16`, the network's dtype policy) builds
each OAT model (FiLM + dual BN, RO-128, λ ~ S1 element-wise), runs
`warmup` untimed steps (tracing / compilation) and `steps` timed steps of
`OATTrainer.train_step` with PGD-k on random data, and prints a Markdown table.
Numbers from one run are comparable with each other; this machine is shared
and noisy, so compare ratios measured in the same run.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from typing import Dict, List, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import flags
from absl import logging

from oat_tf import cli
from oat_tf import config as config_lib
from oat_tf import models
from oat_tf.bench import random_batch
from oat_tf.bench import step_flags
from oat_tf.models import precision as precision_lib
from oat_tf.training import determinism
from oat_tf.training import adversarial_trainer
from oat_tf.training import optimizers

FLAGS = flags.FLAGS

MODES = ("eager", "function", "xla")


def define_flags() -> None:
    """Defines the benchmark flags."""
    flags.DEFINE_list("models", ["small_cnn", "resnet34"], "Architectures to time.")
    flags.DEFINE_list("modes", list(MODES), "eager | function | xla.")
    flags.DEFINE_list(
        "precisions", ["float32"],
        f"Dtype policies of the network, each timed: {' | '.join(config_lib.PRECISIONS)}.",
    )
    flags.DEFINE_string("variant", "oat", "Model variant (oat, plain, oat_single_bn).")
    flags.DEFINE_integer("batch_size", 128, "Batch size.")
    step_flags.define_step_flags()
    flags.DEFINE_bool(
        "deterministic", False,
        "Time with TensorFlow op determinism on (the CLIs' default; see "
        "oat_tf.training.determinism): run with and without to see its cost.",
    )
    flags.DEFINE_integer(
        "intra_op_threads", 0,
        "TensorFlow's intra-op thread pool (threads per op); 0 keeps its default (the cores).",
    )
    flags.DEFINE_integer(
        "inter_op_threads", 0,
        "TensorFlow's inter-op thread pool (ops run at once); 0 keeps its default.",
    )
    flags.DEFINE_bool(
        "fused_normalization", False,
        "Dual BN + FiLM as one per-sample scale and shift (`EncoderConfig.fused_normalization`).",
    )
    flags.DEFINE_bool(
        "isolate", True,
        "Time each model and mode in its own process (an XLA run can slow later "
        "runs of the same process).",
    )


def benchmark_trainer(
    architecture: str,
    *,
    variant: str = "oat",
    batch_size: int = 128,
    attack_steps: int = 7,
    seed: int = 0,
    run_eagerly: bool = False,
    jit_compile: bool = False,
    fused_normalization: bool = False,
    mixed_precision: str = "float32",
) -> Tuple[adversarial_trainer.OATTrainer, np.ndarray, np.ndarray]:
    """A compiled `OATTrainer` on a fresh network, and one batch of random data.

    Args:
        architecture: str, a key of `random_batch.INPUT_SHAPES`.
        variant: str, model variant.
        batch_size: int, images in the batch.
        attack_steps: int, PGD steps (ε = 8/255, step 2/255, random start).
        seed: int, seed of data, weights and λ.
        run_eagerly: bool, compile for eager execution.
        jit_compile: bool, compile the step with XLA.
        fused_normalization: bool, build the network with the fused dual BN + FiLM.
        mixed_precision: str, the network's dtype policy
            (`config.PRECISIONS`); "mixed_float16" adds dynamic loss scaling.

    Returns:
        (trainer, images [N, H, W, C] float32 in [0, 1], labels [N] int32).
    """
    shape = random_batch.input_shape(architecture)
    keras.utils.set_random_seed(seed)
    network = models.build_model(
        config_lib.ModelConfig(
            architecture=architecture,
            variant=variant,
            input_shape=shape,
            encoder=config_lib.EncoderConfig(fused_normalization=fused_normalization),
        ),
        precision=mixed_precision,
    )
    trainer = adversarial_trainer.OATTrainer(
        network,
        sampling=config_lib.LambdaSamplingConfig(),
        attack=config_lib.AttackConfig(num_steps=attack_steps),
        seed=seed,
    )
    optimizer = optimizers.SGDWithL2(learning_rate=0.01, momentum=0.9)
    if precision_lib.uses_loss_scaling(mixed_precision):
        optimizer = optimizers.StepCountingLossScaleOptimizer(optimizer)
    trainer.compile(
        optimizer=optimizer,
        run_eagerly=run_eagerly,
        jit_compile=jit_compile,
    )
    images, labels = random_batch.random_batch(architecture, batch_size, seed)
    return trainer, images, labels


def time_train_step(
    architecture: str,
    mode: str,
    *,
    variant: str = "oat",
    batch_size: int = 128,
    attack_steps: int = 7,
    steps: int = 2,
    warmup: int = 1,
    seed: int = 0,
    fused_normalization: bool = False,
    mixed_precision: str = "float32",
) -> Dict[str, float]:
    """Times `OATTrainer.train_step` for one model and execution mode.

    Args:
        architecture: str, a `build_model` architecture name.
        mode: str, "eager", "function" or "xla".
        variant: str, model variant.
        batch_size: int, images per step.
        attack_steps: int, PGD steps (ε = 8/255, step 2/255, random start).
        steps: int, timed steps.
        warmup: int, untimed steps before timing.
        seed: int, seed of data, weights and λ.
        fused_normalization: bool, build the network with the fused dual BN + FiLM.
        mixed_precision: str, the network's dtype policy (`config.PRECISIONS`).

    Returns:
        dict with `seconds_per_step`, `images_per_second` and `first_step_seconds`.
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    trainer, images, labels = benchmark_trainer(
        architecture, variant=variant, batch_size=batch_size, attack_steps=attack_steps,
        seed=seed, run_eagerly=mode == "eager", jit_compile=mode == "xla",
        fused_normalization=fused_normalization, mixed_precision=mixed_precision,
    )
    start = time.perf_counter()
    for _ in range(max(1, warmup)):
        trainer.train_on_batch(images, labels)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        logs = trainer.train_on_batch(images, labels, return_dict=True)
    float(logs["loss"])  # Wait for the last step.
    per_step = (time.perf_counter() - start) / steps
    return {
        "seconds_per_step": per_step,
        "images_per_second": batch_size / per_step,
        "first_step_seconds": first / max(1, warmup),
    }


_RESULT_PREFIX = "BENCH_RESULT "


def _time_in_subprocess(architecture: str, mode: str, mixed_precision: str) -> Dict[str, float]:
    """Runs one measurement in a fresh Python process and parses its result."""
    command = [
        sys.executable, "-m", "oat_tf.bench", f"--models={architecture}", f"--modes={mode}",
        f"--precisions={mixed_precision}",
        f"--variant={FLAGS.variant}", f"--batch_size={FLAGS.batch_size}",
        f"--attack_steps={FLAGS.attack_steps}", f"--steps={FLAGS.steps}",
        f"--warmup={FLAGS.warmup}", f"--seed={FLAGS.seed}", "--noisolate",
        "--deterministic" if FLAGS.deterministic else "--nodeterministic",
        f"--intra_op_threads={FLAGS.intra_op_threads}",
        f"--inter_op_threads={FLAGS.inter_op_threads}",
        "--fused_normalization" if FLAGS.fused_normalization else "--nofused_normalization",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in completed.stdout.splitlines():
        if line.startswith(_RESULT_PREFIX):
            return json.loads(line[len(_RESULT_PREFIX):])
    raise RuntimeError(
        f"Benchmark of {architecture} in {mode} mode failed:\n{completed.stderr[-3000:]}"
    )


def main(argv) -> None:
    del argv
    for name in FLAGS.precisions:
        precision_lib.check_precision(name)
    configurations = [(a, m, p) for a in FLAGS.models for m in FLAGS.modes for p in FLAGS.precisions]
    if min(FLAGS.intra_op_threads, FLAGS.inter_op_threads) < 0:
        raise ValueError(
            "`--intra_op_threads` and `--inter_op_threads` must be >= 0 (0: TensorFlow's default). "
            f"Received: --intra_op_threads={FLAGS.intra_op_threads} "
            f"--inter_op_threads={FLAGS.inter_op_threads}"
        )
    if not FLAGS.isolate:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
        determinism.configure(FLAGS.deterministic)
        for architecture, mode, mixed_precision in configurations:
            result = time_train_step(
                architecture, mode, variant=FLAGS.variant, batch_size=FLAGS.batch_size,
                attack_steps=FLAGS.attack_steps, steps=FLAGS.steps, warmup=FLAGS.warmup,
                seed=FLAGS.seed, fused_normalization=FLAGS.fused_normalization,
                mixed_precision=mixed_precision,
            )
            sys.stdout.write(_RESULT_PREFIX + json.dumps(result) + "\n")
        return
    rows: List[str] = [
        f"OAT training step, batch {FLAGS.batch_size}, PGD-{FLAGS.attack_steps}, variant {FLAGS.variant}"
        f"{' (fused normalization)' if FLAGS.fused_normalization else ''}, "
        f"op determinism {'on' if FLAGS.deterministic else 'off'}, "
        f"intra-op threads {FLAGS.intra_op_threads or 'default'}, "
        f"inter-op threads {FLAGS.inter_op_threads or 'default'}; "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {platform.machine()}, "
        f"{len(tf.config.list_physical_devices('CPU'))} CPU device(s), "
        f"GPUs: {len(tf.config.list_physical_devices('GPU'))}",
        "",
        "| model | mode | precision | s/step | images/s | first step (s) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for architecture, mode, mixed_precision in configurations:
        logging.info("Timing %s in %s mode, %s...", architecture, mode, mixed_precision)
        result = _time_in_subprocess(architecture, mode, mixed_precision)
        rows.append(
            f"| {architecture} | {mode} | {mixed_precision} | {result['seconds_per_step']:.2f} | "
            f"{result['images_per_second']:.2f} | {result['first_step_seconds']:.1f} |"
        )
        logging.info(rows[-1])
    sys.stdout.write("\n".join(rows) + "\n")


def run() -> None:
    """The `oat-bench` console script; `python -m oat_tf.bench` runs it too."""
    cli.run_main(main, __name__, define_flags)


if __name__ == "__main__":
    run()
