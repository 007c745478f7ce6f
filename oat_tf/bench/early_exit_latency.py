"""Wall-clock cost of early exit: the adaptive SavedModel against the full backbone.

    python -m oat_tf.bench.early_exit_latency --run_dir=runs/rdi_mnist_smallcnn_maxavg \
        --num_examples=2000 --batch_sizes=1,128

Loads a trained multi-exit run (its network and the thresholds calibrated on
its validation split, `exit_thresholds.json` or `--thresholds_file`) and exports two SavedModels to a
temporary directory, served the same way:

- **adaptive**: `export_adaptive_saved_model`, where the samples that exit
  early are not computed further (the deployment of an RDI-Net);
- **backbone**: the same network cut to its final output (the side exits are
  not part of the graph), exported with `export_saved_model`: the cost of
  the backbone alone, which is what the paper's saving is measured against.

Without `--run_dir`, `--architecture` (rdi_small_cnn, rdi_resnet38,
rdi_mobilenet_v2) builds that network with random weights (the timing does not
depend on them), feeds it `num_examples` uniform random images of
`--image_shape`, and sets the thresholds from the side exits' entropies on those
images so that `--exit_distribution` (fractions per output, side exits first)
is the distribution the adaptive model takes.

Both are fed the first `num_examples` test images (early exit depends on the
data), split into batches of each `batch_sizes` value; one timed run is a
pass over all of them. Per batch size, `warmup` untimed passes, then `runs`
timed passes, alternating adaptive and backbone so that a change of the
machine's load hits both alike. Reported: the median pass time of each,
throughput, the wall-clock saving 1 − t_adaptive / t_backbone, and the MACs
saving of the same images (from the exits the adaptive model returned and
`multi_exit.exit_macs`), which the wall-clock saving should approach. With
`--stage_bound` (default), each stage is also timed alone on a full batch and
the row gets `stage_time_bound`: the saving an adaptive model whose gathers and
conditionals cost nothing would reach with those stage times. The gap between
it and the wall-clock saving is the early-exit bookkeeping; the gap between it
and the MACs saving is the stages' differing time per MAC. No timing is
asserted anywhere: the machine is shared and noisy.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from typing import Any, Dict, List, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from absl import logging

from oat_tf import atomic_files
from oat_tf import cli
from oat_tf import data
from oat_tf import export
from oat_tf import operating_point
from oat_tf.evaluation import loading
from oat_tf.evaluation import multi_exit_eval
from oat_tf.export import adaptive_saved_model
from oat_tf.models import exit_rule
from oat_tf.models import multi_exit

FLAGS = flags.FLAGS
THRESHOLDS_FILE = "exit_thresholds.json"


def define_flags() -> None:
    """Defines the benchmark flags."""
    flags.DEFINE_string("run_dir", None, "A multi-exit training run (config.json, checkpoints, exit_thresholds.json).")
    flags.DEFINE_string(
        "thresholds_file", THRESHOLDS_FILE,
        "Thresholds in the run directory: exit_thresholds.json (training run) or an "
        "exit_thresholds_<tag>.json of `oat_tf.calibrate_exits`.",
    )
    flags.DEFINE_integer("num_examples", 2000, "Time a pass over the first N test images.")
    flags.DEFINE_list("batch_sizes", ["1", "128"], "Batch sizes to time.")
    flags.DEFINE_integer("runs", 5, "Timed passes per model and batch size (the median is reported).")
    flags.DEFINE_integer("warmup", 1, "Untimed passes first, per model and batch size.")
    flags.DEFINE_float("lambda_value", None, "λ fed to the models (default: the run's evaluation λ).")
    flags.DEFINE_string("output_json", None, "Also write the rows as JSON here.")
    flags.DEFINE_string(
        "architecture", None,
        "Without --run_dir: a multi-exit architecture (rdi_small_cnn, rdi_resnet38, rdi_mobilenet_v2) "
        "with random weights, on random images.",
    )
    flags.DEFINE_list("image_shape", ["32", "32", "3"], "H,W,C of the random images (with --architecture).")
    flags.DEFINE_list(
        "exit_distribution", None,
        "With --architecture: the fraction of images per output, side exits first (sums to 1); "
        "the thresholds are set to produce it.",
    )
    flags.DEFINE_integer("seed", 0, "Seed of the random weights and images (with --architecture).")
    flags.DEFINE_enum(
        "variant", "oat", ["plain", "oat"],
        "With --architecture: the network's variant, plain (BN, the paper's RDI-Nets) or oat (FiLM + dual BN).",
    )
    flags.DEFINE_boolean(
        "fused_normalization", False,
        "With --architecture --variant=oat: dual BN + FiLM as one per-sample scale and shift "
        "(`EncoderConfig.fused_normalization`).",
    )
    flags.DEFINE_boolean(
        "stage_bound", True,
        "Also time each stage alone on a full batch and report the saving a gather of no cost would "
        "reach with those stage times (`stage_time_bound`).",
    )


def backbone_model(network: keras.Model) -> keras.Model:
    """The network cut to its final output: the side exits are not in the graph.

    Args:
        network: a multi-exit functional keras.Model.

    Returns:
        keras.Model with the same inputs, returning the final logits.
    """
    if not multi_exit.is_multi_exit(network):
        raise ValueError(f"`network` must be a multi-exit network. Received: {network.name}")
    return keras.Model(network.input, network.output["final"], name=f"{network.name}_backbone")


def _passes(serve, images: np.ndarray, lam: float, batch_size: int, extra: Dict[str, Any]) -> List[Any]:
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = tf.constant(images[start : start + batch_size])
        outputs.append(
            serve(image=batch, lambda_value=tf.fill([batch.shape[0]], tf.constant(lam, tf.float32)), **extra)
        )
    return outputs


def measure(
    adaptive_fn, backbone_fn, images: np.ndarray, lam: float, batch_size: int, *, runs: int, warmup: int
) -> Dict[str, Any]:
    """Median pass times of the two serving functions over `images`.

    Args:
        adaptive_fn, backbone_fn: loaded serving signatures (keyword inputs
            `image`, `lambda_value`).
        images: float32 [N, H, W, C].
        lam: float, λ fed to both.
        batch_size: int.
        runs: int, timed passes of each.
        warmup: int, untimed passes of each first.

    Returns:
        dict: `batch_size`, `adaptive_s`, `backbone_s` (median seconds per
        pass), their 10th/90th percentiles, throughputs (images/s),
        `wall_clock_saving`, and `exit_index` (int32 [N], from the adaptive
        model).
    """
    for _ in range(warmup):
        _passes(adaptive_fn, images, lam, batch_size, {})
        _passes(backbone_fn, images, lam, batch_size, {})
    times = {"adaptive": [], "backbone": []}
    exits = None
    for _ in range(runs):
        for name, fn in (("adaptive", adaptive_fn), ("backbone", backbone_fn)):
            start = time.perf_counter()
            outputs = _passes(fn, images, lam, batch_size, {})
            [o["logits"].numpy() for o in outputs]  # pylint: disable=expression-not-assigned
            times[name].append(time.perf_counter() - start)
            if name == "adaptive" and exits is None:
                exits = np.concatenate([o["exit"].numpy() for o in outputs])
    adaptive, backbone = (np.median(times[n]) for n in ("adaptive", "backbone"))
    return {
        "batch_size": int(batch_size),
        "adaptive_s": float(adaptive),
        "backbone_s": float(backbone),
        "adaptive_p10_p90_s": [float(np.percentile(times["adaptive"], q)) for q in (10, 90)],
        "backbone_p10_p90_s": [float(np.percentile(times["backbone"], q)) for q in (10, 90)],
        "adaptive_images_per_s": float(len(images) / adaptive),
        "backbone_images_per_s": float(len(images) / backbone),
        "wall_clock_saving": float(1.0 - adaptive / backbone),
        "exit_index": exits,
    }


def stage_seconds(
    views: Sequence[multi_exit.StageView], images: np.ndarray, lam: float, batch_size: int, *, runs: int
) -> List[float]:
    """Median seconds of each stage run alone on one full batch.

    Stage i is fed the features the stages before it computed for the first
    `batch_size` images, so every stage sees the whole batch; a side stage's
    time includes its exit head (the adaptive model runs it for every sample
    that reaches the stage).

    Args:
        views: the network's `multi_exit.stage_views`.
        images: float32 [N, H, W, C], N >= 1.
        lam: float, λ fed to every stage.
        batch_size: int, samples per call (at most N are used).
        runs: int >= 1, timed calls per stage after one untimed call.

    Returns:
        list of float, one per stage.
    """
    batch = tf.constant(images[:batch_size])
    lambdas = tf.fill([batch.shape[0]], tf.constant(lam, tf.float32))
    calls = [tf.function(lambda f, l, view=view: view(f, l, training=False)) for view in views]
    seconds, features = [], batch
    for call in calls:
        outputs = call(features, lambdas)  # Traces, and gives the next stage its input.
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            call(features, lambdas)[1].numpy()
            times.append(time.perf_counter() - start)
        seconds.append(float(np.median(times)))
        features = outputs[0]
    return seconds


def stage_time_bound(seconds: Sequence[float], exit_index: np.ndarray) -> float:
    """The wall-clock saving if each stage's time scaled exactly with the samples reaching it.

    With t_i the time of stage i on a full batch (`stage_seconds`) and r_i
    the share of samples that run stage i (those whose exit is i or later),
    the bound is 1 − Σ r_i t_i / Σ t_i: what an adaptive model whose gathers,
    conditionals and entropy tests cost nothing would save over running every
    stage. It differs from the MACs saving when the stages' time per
    multiply-accumulate differs (early, high-resolution stages with few
    channels spend more time per MAC in normalisation and element-wise ops).
    Σ t_i includes the side heads, which the backbone does not run, so the
    bound is a little pessimistic when the heads are not negligible.

    Args:
        seconds: time of each of the M + 1 stages.
        exit_index: int array [N] of exits taken, in 0..M.

    Returns:
        float.
    """
    seconds = np.asarray(seconds, np.float64)
    exit_index = np.asarray(exit_index)
    if seconds.ndim != 1 or seconds.size < 1 or np.any(seconds < 0):
        raise ValueError(f"`seconds` must be a non-empty list of times >= 0. Received: {seconds.tolist()}")
    if exit_index.size == 0 or np.any(exit_index < 0) or np.any(exit_index >= seconds.size):
        raise ValueError(
            f"`exit_index` must be a non-empty array of exits in 0..{seconds.size - 1}. "
            f"Received: values in [{exit_index.min() if exit_index.size else None}, "
            f"{exit_index.max() if exit_index.size else None}]"
        )
    reach = np.array([np.mean(exit_index >= i) for i in range(seconds.size)])
    return float(1.0 - np.dot(reach, seconds) / seconds.sum())


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
    """Markdown table of `measure` rows (with `macs_saving` added)."""
    lines = [
        "| batch | adaptive (s / pass) | backbone (s / pass) | adaptive img/s | backbone img/s "
        "| wall-clock saving | MACs saving | share of the MACs saving | stage-time bound |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        share = row["wall_clock_saving"] / row["macs_saving"] if row["macs_saving"] > 0 else float("nan")
        bound = row.get("stage_time_bound")
        lines.append(
            f"| {row['batch_size']} | {row['adaptive_s']:.3f} | {row['backbone_s']:.3f} | "
            f"{row['adaptive_images_per_s']:.0f} | {row['backbone_images_per_s']:.0f} | "
            f"{100 * row['wall_clock_saving']:.1f}% | {100 * row['macs_saving']:.1f}% | "
            f"{100 * share:.0f}% | {'' if bound is None else f'{100 * bound:.1f}%'} |"
        )
    return "\n".join(lines) + "\n"


def thresholds_for_distribution(entropies: np.ndarray, distribution: Sequence[float]) -> List[float]:
    """Entropy thresholds under which the images exit with the given distribution.

    Exit i takes the `distribution[i]` share of all images, chosen among those
    no earlier exit took, as the ones with the lowest entropy at exit i. Ties
    in entropy can make a share larger; the benchmark reports the distribution
    the adaptive model really took.

    Args:
        entropies: float32 array [N, M], the side exits' entropies on the images
            (`exit_rule.entropy`, the rule the adaptive model applies).
        distribution: M + 1 fractions in [0, 1] summing to 1 (the last one: the
            final output).

    Returns:
        list of M floats (+inf / -inf where everything / nothing remaining exits).
    """
    entropies = np.asarray(entropies, np.float32)
    distribution = [float(d) for d in distribution]
    num_side = entropies.shape[1]
    if len(distribution) != num_side + 1 or any(d < 0 for d in distribution) or not np.isclose(
        sum(distribution), 1.0, atol=1e-6
    ):
        raise ValueError(
            f"`exit_distribution` must be {num_side + 1} fractions >= 0 summing to 1, one per "
            f"output, side exits first. Received: {distribution}"
        )
    num_images = entropies.shape[0]
    remaining = np.ones(num_images, bool)
    thresholds = []
    for index, share in enumerate(distribution[:-1]):
        count = int(round(share * num_images))
        candidates = np.sort(entropies[remaining, index])
        if count <= 0:
            threshold = -np.inf
        elif count >= len(candidates):
            threshold = np.inf
        else:  # Just above the count-th smallest: the rule's test is strict.
            threshold = float(np.nextafter(candidates[count - 1], np.float32(np.inf)))
        thresholds.append(threshold)
        remaining &= ~(entropies[:, index] < np.float32(threshold))
    return thresholds


# The side exits of a freshly initialised network all give entropies within a
# hair of log K; its logits layers are scaled up so that entropies spread and a
# distribution can be set (timing does not depend on the weights' values).
RANDOM_LOGITS_SCALE = 20.0


def _random_network():
    """(network, images, thresholds, λ, description) of the --architecture mode."""
    from oat_tf import config as config_lib  # pylint: disable=import-outside-toplevel
    from oat_tf import models  # pylint: disable=import-outside-toplevel

    if not FLAGS.exit_distribution:
        raise app.UsageError("--exit_distribution is required with --architecture.")
    if FLAGS.fused_normalization and FLAGS.variant != "oat":
        raise app.UsageError(
            "--fused_normalization needs --variant=oat (it fuses the dual BN with FiLM). "
            f"Received: --variant={FLAGS.variant}"
        )
    try:
        shape = tuple(int(v) for v in FLAGS.image_shape)
        model_config = config_lib.ModelConfig(
            architecture=FLAGS.architecture,
            variant=FLAGS.variant,
            input_shape=shape,
            encoder=config_lib.EncoderConfig(fused_normalization=FLAGS.fused_normalization),
        )
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    keras.utils.set_random_seed(FLAGS.seed)
    network = models.build_model(model_config)
    for layer in network.layers:
        if layer.name.endswith("logits"):
            layer.kernel.assign(RANDOM_LOGITS_SCALE * layer.kernel)
    images = np.random.default_rng(FLAGS.seed).uniform(size=(FLAGS.num_examples, *shape)).astype(np.float32)
    lam = FLAGS.lambda_value if FLAGS.lambda_value is not None else 1.0
    names = multi_exit.output_names(network)
    outputs = {name: [] for name in names}
    for start in range(0, len(images), 256):
        batch = images[start : start + 256]
        result = network({"image": batch, "lambda": np.full([len(batch)], lam, np.float32)}, training=False)
        for name in names:
            outputs[name].append(result[name].numpy())
    entropies = np.stack(
        [exit_rule.entropy(tf.constant(np.concatenate(outputs[name]))).numpy() for name in names[:-1]], axis=1
    )
    try:
        thresholds = thresholds_for_distribution(entropies, FLAGS.exit_distribution)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    fused = ", fused normalization" if FLAGS.fused_normalization else ""
    description = (
        f"{FLAGS.architecture} ({FLAGS.variant} variant{fused}, random weights, seed {FLAGS.seed}), "
        f"{len(images)} random images {shape}"
    )
    return network, images, thresholds, lam, description


def _trained_network():
    """(network, images, thresholds, λ, description) of a training run."""
    thresholds_path = os.path.join(FLAGS.run_dir, FLAGS.thresholds_file)
    if not os.path.isfile(thresholds_path):
        raise app.UsageError(
            f"--run_dir must hold {FLAGS.thresholds_file} (see --thresholds_file). Received: {FLAGS.run_dir!r}"
        )
    with open(thresholds_path) as f:
        calibration = json.load(f)
    thresholds = multi_exit_eval.thresholds_from_json(calibration["thresholds"])
    network, run_config = loading.load_network_from_run(FLAGS.run_dir)
    lam = FLAGS.lambda_value if FLAGS.lambda_value is not None else float(calibration["lambda"])
    data_config = loading.data_config_from_run(run_config, FLAGS.num_examples)
    split = data.load_splits(data_config).test
    images = split.images.astype(np.float32) / 255.0
    return network, images, thresholds, lam, f"{FLAGS.run_dir}, {len(images)} test images"


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    if bool(FLAGS.run_dir) == bool(FLAGS.architecture):
        raise app.UsageError(
            "Exactly one of --run_dir (a multi-exit training run) and --architecture (random weights) "
            f"is required. Received: --run_dir={FLAGS.run_dir!r}, --architecture={FLAGS.architecture!r}"
        )
    if FLAGS.run_dir:
        network, images, thresholds, lam, description = _trained_network()
    else:
        network, images, thresholds, lam, description = _random_network()
    image_shape = tuple(images.shape[1:])
    names = multi_exit.output_names(network)
    macs = multi_exit.exit_macs(network)
    costs = np.asarray([macs[n] for n in names], np.float64)
    backbone_macs = float(multi_exit.backbone_macs(network))
    with tempfile.TemporaryDirectory() as tmp:
        adaptive_dir = adaptive_saved_model.export_adaptive_saved_model(
            network, os.path.join(tmp, "adaptive"), thresholds=thresholds, image_shape=image_shape
        )
        backbone_dir = export.export_saved_model(
            backbone_model(network), os.path.join(tmp, "backbone"), image_shape=image_shape
        )
        adaptive_fn = adaptive_saved_model.load_adaptive_fn(adaptive_dir)
        backbone_fn = export.load_serving_fn(backbone_dir)
        rows = []
        for batch_size in (int(b) for b in FLAGS.batch_sizes):
            row = measure(
                adaptive_fn, backbone_fn, images, lam, batch_size, runs=FLAGS.runs, warmup=FLAGS.warmup
            )
            exits = row.pop("exit_index")
            distribution = np.bincount(exits, minlength=len(names)) / len(exits)
            row["exit_distribution"] = [float(v) for v in distribution]
            row["average_macs"] = float(np.dot(distribution, costs))
            row["macs_saving"] = float(1.0 - row["average_macs"] / backbone_macs)
            if FLAGS.stage_bound:
                row["stage_seconds"] = stage_seconds(
                    multi_exit.stage_views(network), images, lam, batch_size, runs=max(3, FLAGS.runs)
                )
                row["stage_time_bound"] = stage_time_bound(row["stage_seconds"], exits)
            rows.append(row)
            logging.info("Batch %d: %s", batch_size, row)
    table = format_table(rows)
    machine = f"{platform.machine()}, {os.cpu_count()} logical CPUs, TF {tf.__version__}"
    print(
        f"\nEarly exit against the backbone: {description}, λ = {lam}, "
        f"thresholds {list(thresholds)} ({machine})\n\n{table}"
        f"\nExit distribution {rows[0]['exit_distribution'] if rows else []}; backbone "
        f"{backbone_macs / 1e6:.2f} M MACs per image.\n"
    )
    if FLAGS.output_json:
        atomic_files.write_json(
            FLAGS.output_json,
            {
                "model": description,
                "thresholds": operating_point.thresholds_to_json(thresholds),  # ±inf as strings.
                "machine": machine,
                "rows": rows,
            },
        )


def run() -> None:
    """The `oat-early-exit-latency` console script; `python -m oat_tf.bench.early_exit_latency` runs it too."""
    cli.run_main(main, __name__, define_flags)


if __name__ == "__main__":
    run()
