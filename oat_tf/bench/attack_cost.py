"""Evaluation cost of the attacks: seconds per λ per 1,000 images, against a pass-count prediction.

    python -m oat_tf.bench.attack_cost --run_dir=runs/quickstart \
        --attacks=train,autoattack_fast,autoattack --lambdas=0,1 --num_examples=200

loads a trained run, takes the first `num_examples` test images, and times
`evaluate_lambda_grid` for each attack list entry ("autoattack" and
"autoattack_fast" are timed as a whole, members run on the survivors as in
any evaluation) at each λ, after one untimed call that traces the functions.
It also times one forward pass and one forward+backward (input gradient)
pass over the same batch, and predicts each attack's time from the passes it
makes on the samples it actually attacks:

- PGD-k: k forward+backward passes and 2 forward passes;
- APGD-CE / APGD-DLR (N steps): N + 1 forward+backward and 1 forward;
- APGD-T (N steps, T targets): T·(N + 1) forward+backward and 1 forward;
- FAB-T (N steps, T targets): T·N forward+backward and T·N + 1 forward;
- Square (Q queries): Q forward passes (an upper bound: the reference code
  stops querying a sample once it is broken; ours keeps the batch shape);

plus one forward pass per attack for the accuracy check. An attack whose
measured time is more than about twice its prediction has overhead worth
finding (tracing, small batches, host round trips); the table gives the
ratio. Numbers from one run compare with each other; the machine is shared
and noisy, so compare ratios, and name the CPU (printed with the table).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Dict, List, Sequence

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from absl import logging

from oat_tf import cli
from oat_tf import config as config_lib
from oat_tf import flags as oat_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the benchmark flags."""
    flags.DEFINE_string("run_dir", None, "A run directory of `python -m oat_tf.train`.")
    flags.DEFINE_list("attacks", ["train", "autoattack_fast", "autoattack"], oat_flags.ATTACK_NAMES_HELP)
    flags.DEFINE_list("lambdas", ["0", "1"], "λ values to time.")
    flags.DEFINE_integer("num_examples", 200, "Test images (one batch).")
    flags.DEFINE_integer("seed", 0, "Attack seed.")
    flags.DEFINE_string("output", None, "Also write the rows as JSON here.")


def passes(attack: config_lib.AttackConfig) -> Dict[str, int]:
    """Forward+backward and forward passes per attacked sample (see the module docstring).

    Args:
        attack: AttackConfig.

    Returns:
        dict with `forward_backward` and `forward` (ints), including the
        accuracy check's forward pass.
    """
    if attack.name in ("pgd", "mi_fgsm"):
        counts = (attack.num_steps * attack.num_restarts, 2)
    elif attack.name == "fgsm":
        counts = (1, 1)
    elif attack.name in ("apgd_ce", "apgd_dlr"):
        counts = ((attack.num_steps + 1) * attack.num_restarts, 1)
    elif attack.name == "apgd_t":
        runs = attack.num_target_classes * attack.num_restarts
        counts = (runs * (attack.num_steps + 1), 1)
    elif attack.name == "fab_t":
        runs = attack.num_target_classes * attack.num_restarts
        counts = (runs * attack.num_steps, runs * attack.num_steps + 1)
    elif attack.name == "square":
        counts = (0, attack.num_queries + 1)
    else:
        raise ValueError(f"`attack.name` {attack.name!r} has no pass count.")
    return {"forward_backward": counts[0], "forward": counts[1] + 1}


def _pass_times(model: Any, images: tf.Tensor, labels: tf.Tensor, lam: float, repeats: int = 5):
    lam_vector = tf.fill(tf.shape(images)[:1], tf.constant(lam, tf.float32))

    @tf.function
    def forward(x):
        return model({"image": x, "lambda": lam_vector}, training=False)

    @tf.function
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = model({"image": x, "lambda": lam_vector}, training=False)
            loss = tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            )
        return tape.gradient(loss, x)

    timings = {}
    for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
        fn(images).numpy()
        start = time.perf_counter()
        for _ in range(repeats):
            fn(images).numpy()
        timings[name] = (time.perf_counter() - start) / repeats / int(images.shape[0])
    return timings


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    if not FLAGS.run_dir:
        raise app.UsageError("Pass --run_dir (a training run).")
    from oat_tf import data  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import loading  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import robust_eval  # pylint: disable=import-outside-toplevel
    from oat_tf.sweep import machine_description  # pylint: disable=import-outside-toplevel

    model, run_config = loading.load_network_from_run(FLAGS.run_dir)
    train_attack = config_lib.AttackConfig(**run_config["train_attack"])
    lambdas = [oat_flags.parse_fraction("lambdas", v) for v in FLAGS.lambdas]
    data_config = loading.data_config_from_run(run_config, FLAGS.num_examples)
    split = data.load_splits(data_config).test
    images = tf.constant(split.images.astype(np.float32) / 255.0)
    labels = tf.constant(split.labels.astype(np.int32))
    dataset = tf.data.Dataset.from_tensors((images, labels))
    rows: List[Dict[str, Any]] = []
    for name in FLAGS.attacks:
        attack_list = oat_flags.parse_eval_attacks([name], train_attack)
        for lam in lambdas:
            per_pass = _pass_times(model, images, labels, lam)
            robust_eval.evaluate_lambda_grid(model, dataset, [lam], attack_list, seed=FLAGS.seed)
            start = time.perf_counter()
            result = robust_eval.evaluate_lambda_grid(
                model, dataset, [lam], attack_list, seed=FLAGS.seed
            )
            seconds = time.perf_counter() - start
            key = robust_eval.lambda_key(lam)
            # Samples each attack saw: all for a stand-alone attack; for an
            # ensemble member, the survivors of the members before it.
            attacked = float(result["clean_accuracy"][key])
            predicted = 0.0
            for attack in attack_list:
                counts = passes(attack)
                fraction = attacked if attack.ensemble else 1.0
                predicted += fraction * (
                    counts["forward_backward"] * per_pass["forward_backward"]
                    + counts["forward"] * per_pass["forward"]
                )
                if attack.ensemble:
                    attacked = float(result["robust_accuracy"][attack.describe()][key])
            predicted += per_pass["forward"]  # the clean pass
            rows.append({
                "attacks": name,
                "lambda": lam,
                "num_examples": int(images.shape[0]),
                "seconds_per_1000": 1000.0 * seconds / int(images.shape[0]),
                "predicted_seconds_per_1000": 1000.0 * predicted,
                "ratio": seconds / int(images.shape[0]) / predicted,
                "worst_case_accuracy": result["worst_case_accuracy"][key],
                "forward_ms_per_image": 1000.0 * per_pass["forward"],
                "forward_backward_ms_per_image": 1000.0 * per_pass["forward_backward"],
            })
            logging.info("%s", rows[-1])
    machine = machine_description()
    lines = [
        f"{machine['cpu']} ({machine['cpu_vector_extensions']}), {machine['cpu_count']} cores, "
        f"TensorFlow {machine['tensorflow']}; {FLAGS.run_dir}, batch of {FLAGS.num_examples}",
        "",
        "| attacks | λ | s per 1,000 images | predicted from passes | measured / predicted | "
        "worst-case RA (%) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['attacks']} | {row['lambda']:g} | {row['seconds_per_1000']:.0f} | "
            f"{row['predicted_seconds_per_1000']:.0f} | {row['ratio']:.2f} | "
            f"{100 * row['worst_case_accuracy']:.1f} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    if FLAGS.output:
        with open(FLAGS.output, "w", encoding="utf-8") as f:
            json.dump({"machine": machine, "rows": rows}, f, indent=2)


def run() -> None:
    """The `oat-attack-cost` console script; `python -m oat_tf.bench.attack_cost` runs it too."""
    cli.run_main(main, __name__, define_flags)


if __name__ == "__main__":
    run()
