"""The training attack's share of the device's plain convolution throughput.

    python -m oat_tf.bench.attack_share --architecture=resnet34 --batch_size=128 \
        --attack_steps=7 --precisions=float32,mixed_float16 --modes=function,xla

For each dtype policy and execution mode, times in one process:

- plain convolution: one 3×3 convolution, SAME padding, batch N, 16×16×256 →
  256 channels (the convolutions of ResNet-34's third stage), forward only;
  its FLOP/s (2 · MACs / time) stands for what the device gives a dense
  convolution at this batch and precision;
- the attack loop: PGD-k (`attacks.pgd.pgd_linf`, random start, ε = 8/255,
  step 2/255) on a fresh OAT network in inference mode at batch N, as the
  training step runs it. Each step is one forward and one backward-data pass
  (the weight gradients are never taken), so its FLOP/s is
  2 · 2 · k · MACs(network, N) / time with MACs from `oat_tf.models.flops`.

The share is the attack loop's FLOP/s over the plain convolution's: how much
of the device's convolution speed the attack keeps once it runs through the
whole network (small early layers, BN, FiLM, the sign-and-project steps and
the loop). Issue 19 asks for at least 50% on a GPU. Prints a Markdown table.
"""

from __future__ import annotations

import platform
import sys
import time
from typing import Dict, List

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from oat_tf import cli
from oat_tf import config as config_lib
from oat_tf import models
from oat_tf.attacks import pgd
from oat_tf.bench import random_batch
from oat_tf.models import flops
from oat_tf.models import precision as precision_lib

FLAGS = flags.FLAGS

MODES = ("function", "xla")
# The plain convolution timed: ResNet-34's third-stage 3×3 convolution.
CONV_SIZE, CONV_CHANNELS = 16, 256


def define_flags() -> None:
    """Defines the benchmark flags."""
    flags.DEFINE_string("architecture", "resnet34", "Network (a key of oat_tf.bench.random_batch.INPUT_SHAPES).")
    flags.DEFINE_integer("batch_size", 128, "Images per attack call and per convolution.")
    flags.DEFINE_integer("attack_steps", 7, "PGD steps.")
    flags.DEFINE_list(
        "precisions", ["float32"], f"Dtype policies: {' | '.join(config_lib.PRECISIONS)}."
    )
    flags.DEFINE_list("modes", list(MODES), "function | xla.")
    flags.DEFINE_integer("repeats", 3, "Timed calls of each function (after one untimed call).")


def _check_args(batch_size: int, attack_steps: int, repeats: int, mode: str, precision: str) -> None:
    for name, value in (("batch_size", batch_size), ("attack_steps", attack_steps), ("repeats", repeats)):
        if value < 1:
            raise ValueError(f"`{name}` must be >= 1. Received: {name}={value}")
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    precision_lib.check_precision(precision)


def _seconds_per_call(fn, *args, repeats: int) -> float:
    """Mean wall time of `fn(*args)` over `repeats` calls, after one untimed call."""
    np.asarray(fn(*args))  # Trace / compile, and wait.
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn(*args)
    np.asarray(result)
    return (time.perf_counter() - start) / repeats


def conv_flops_per_second(batch_size: int, precision: str, mode: str, repeats: int = 3) -> float:
    """FLOP/s of one plain 3×3 convolution (16×16×256 → 256, SAME), forward.

    Args:
        batch_size: int, images per call.
        precision: str, dtype policy of the layer (`config.PRECISIONS`).
        mode: str, "function" or "xla".
        repeats: int, timed calls.

    Returns:
        float, 2 · MACs / seconds per call.
    """
    _check_args(batch_size, 1, repeats, mode, precision)
    with precision_lib.dtype_policy_scope(precision):
        conv = keras.layers.Conv2D(CONV_CHANNELS, 3, padding="same", use_bias=False)
    images = tf.random.stateless_uniform([batch_size, CONV_SIZE, CONV_SIZE, CONV_CHANNELS], seed=[0, 1])
    conv.build(images.shape)
    call = tf.function(lambda x: tf.reduce_sum(tf.cast(conv(x), tf.float32)), jit_compile=mode == "xla")
    seconds = _seconds_per_call(call, images, repeats=repeats)
    macs = batch_size * CONV_SIZE * CONV_SIZE * CONV_CHANNELS * CONV_CHANNELS * 9
    return 2.0 * macs / seconds


def attack_flops_per_second(
    architecture: str, batch_size: int, attack_steps: int, precision: str, mode: str, repeats: int = 3
) -> Dict[str, float]:
    """FLOP/s of the PGD-k attack loop on a fresh OAT network.

    Args:
        architecture: str, a key of `random_batch.INPUT_SHAPES`.
        batch_size: int, images per attack call.
        attack_steps: int, PGD steps.
        precision: str, dtype policy of the network.
        mode: str, "function" or "xla".
        repeats: int, timed calls.

    Returns:
        dict with `seconds` (per attack call) and `flops_per_second`.
    """
    _check_args(batch_size, attack_steps, repeats, mode, precision)
    shape = random_batch.input_shape(architecture)
    keras.utils.set_random_seed(0)
    network = models.build_model(
        config_lib.ModelConfig(architecture=architecture, variant="oat", input_shape=shape),
        precision=precision,
    )
    images, labels = random_batch.random_batch(architecture, batch_size, seed=0)
    lambdas = tf.fill([batch_size], 0.5)

    def attack(x, y):
        adversarial = pgd.pgd_linf(
            lambda z: network({"image": z, "lambda": lambdas}, training=False), x, y,
            epsilon=8 / 255, step_size=2 / 255, num_steps=attack_steps, seed=[0, 1],
        )
        return tf.reduce_sum(adversarial)

    call = tf.function(attack, jit_compile=mode == "xla")
    seconds = _seconds_per_call(call, tf.constant(images), tf.constant(labels), repeats=repeats)
    macs = flops.count_flops(network, batch_size=batch_size)["macs"]
    return {"seconds": seconds, "flops_per_second": 2.0 * 2.0 * attack_steps * macs / seconds}


def main(argv) -> None:
    del argv
    rows: List[str] = [
        f"Attack share of convolution throughput: {FLAGS.architecture} OAT, batch {FLAGS.batch_size}, "
        f"PGD-{FLAGS.attack_steps}; TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"{platform.machine()}, GPUs: {[d.name for d in tf.config.list_physical_devices('GPU')]}",
        "",
        "| precision | mode | conv TFLOP/s | attack s/call | attack TFLOP/s | share |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for precision in FLAGS.precisions:
        for mode in FLAGS.modes:
            conv = conv_flops_per_second(FLAGS.batch_size, precision, mode, FLAGS.repeats)
            attack = attack_flops_per_second(
                FLAGS.architecture, FLAGS.batch_size, FLAGS.attack_steps, precision, mode, FLAGS.repeats
            )
            rows.append(
                f"| {precision} | {mode} | {conv / 1e12:.2f} | {attack['seconds']:.3f} | "
                f"{attack['flops_per_second'] / 1e12:.2f} | {attack['flops_per_second'] / conv:.0%} |"
            )
            sys.stdout.write(rows[-1] + "\n")
            sys.stdout.flush()
    sys.stdout.write("\n".join(rows) + "\n")


def run() -> None:
    """The `oat-attack-share` console script."""
    cli.run_main(main, __name__, define_flags)


if __name__ == "__main__":
    run()
