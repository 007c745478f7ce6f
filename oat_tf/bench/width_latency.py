"""Wall-clock inference latency of every width signature of an exported OATS model.

    python -m oat_tf.bench.width_latency --architecture=small_cnn --batch_sizes=1,128
    python -m oat_tf.bench.width_latency --saved_model=saved_models/oats_quickstart

Loads a SavedModel written by `oat_tf.export.export_saved_model` (with
`--architecture`, a freshly initialised slimmable network of that
architecture is exported to a temporary directory first: latency does not
depend on the weights) and times each width signature (`serving_default` =
1.0, `width_0_75`, `width_0_5`, ...) as TF Serving runs it: the loaded
signature called with `image` and `lambda_value` (mid-grey images, λ spread
over [0, 1]), input validation included. Per width and batch size, `warmup`
untimed calls, then `runs` timed calls; the median (and the 10th/90th
percentiles) of the wall-clock times are reported, with the MACs per image
of the width when the network is at hand. The widths are timed interleaved
(round robin over the runs), so a change of the machine's load hits every
width alike. No timing is asserted anywhere: the machine is shared and noisy.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import flags
from absl import logging

from oat_tf import config as config_lib
from oat_tf import export
from oat_tf import models

FLAGS = flags.FLAGS

IMAGE_SHAPES = {"small_cnn": (28, 28, 1), "resnet34": (32, 32, 3), "resnet18": (32, 32, 3)}


def define_flags() -> None:
    """Defines the benchmark flags."""
    flags.DEFINE_string("saved_model", None, "Exported SavedModel to time (one signature per width).")
    flags.DEFINE_string(
        "architecture", "small_cnn",
        "Without --saved_model: export a fresh slimmable network of this architecture and time it.",
    )
    flags.DEFINE_string("variant", "oats", "Slimmable variant of the fresh network (oats, oats_single_bn, ats).")
    flags.DEFINE_list("widths", ["0.5", "0.75", "1.0"], "Widths of the fresh network.")
    flags.DEFINE_list("batch_sizes", ["1", "128"], "Batch sizes to time.")
    flags.DEFINE_integer("runs", 20, "Timed calls per width and batch size (the median is reported).")
    flags.DEFINE_integer("warmup", 3, "Untimed calls first, per width and batch size.")
    flags.DEFINE_integer("seed", 0, "Seed of the fresh network's weights.")
    flags.DEFINE_string("output_json", None, "Also write the rows as JSON here.")


def export_fresh_network(
    architecture: str,
    export_dir: str,
    *,
    variant: str = "oats",
    widths: Sequence[float] = (0.5, 0.75, 1.0),
    seed: int = 0,
    **model_overrides: Any,
) -> Dict[float, int]:
    """Exports a freshly initialised slimmable network; returns its MACs per image per width.

    Args:
        architecture: str, an architecture of `oat_tf.models.build_model`.
        export_dir: str, where the SavedModel goes.
        variant: str, a slimmable variant.
        widths: sequence of float, the network's widths.
        seed: int, seed of the weights.
        **model_overrides: passed to `build_model` (e.g. smaller filters in tests).

    Returns:
        dict {width: multiply-accumulates per image}.
    """
    from oat_tf.models import flops  # pylint: disable=import-outside-toplevel

    if variant not in config_lib.SLIMMABLE_VARIANTS:
        raise ValueError(
            f"`variant` must be one of {config_lib.SLIMMABLE_VARIANTS}. Received: variant={variant!r}"
        )
    image_shape = tuple(model_overrides.pop("image_shape", IMAGE_SHAPES.get(architecture, (32, 32, 3))))
    keras.utils.set_random_seed(seed)
    config = config_lib.ModelConfig(
        architecture=architecture,
        variant=variant,
        num_classes=10,
        input_shape=image_shape,
        widths=tuple(sorted(float(w) for w in widths)),
    )
    network = models.build_model(config, **model_overrides)
    export.export_saved_model(network, export_dir, image_shape=image_shape)
    return {w: int(r["macs"]) for w, r in flops.count_width_flops(network).items()}


def measure_latency(
    export_dir: str,
    *,
    batch_sizes: Sequence[int] = (1, 128),
    runs: int = 20,
    warmup: int = 3,
) -> List[Dict[str, Any]]:
    """Times every width signature of an export.

    Args:
        export_dir: str, a SavedModel of `export_saved_model`.
        batch_sizes: sequence of int, the batch sizes.
        runs: int, timed calls per width and batch size.
        warmup: int, untimed calls first.

    Returns:
        list of dict, one per (batch size, width), narrowest width first:
        `width`, `signature`, `batch_size`, `runs`, `median_ms`, `p10_ms`,
        `p90_ms`, `images_per_second` (at the median) and `speedup` (the
        full width's median over this one's, at the same batch size).
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"`runs` must be ≥ 1 and `warmup` ≥ 0. Received: runs={runs}, warmup={warmup}")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"`batch_sizes` must be positive ints. Received: batch_sizes={list(batch_sizes)}")
    widths = export.signature_widths(export_dir)
    loaded = tf.saved_model.load(export_dir)
    rows = []
    for batch_size in (int(b) for b in batch_sizes):
        first = loaded.signatures[export.SIGNATURE_KEY]
        image_spec = first.structured_input_signature[1][export.IMAGE_INPUT_NAME]
        image = tf.fill([batch_size, *image_spec.shape[1:]], 0.5)
        lambda_value = tf.linspace(0.0, 1.0, batch_size) if batch_size > 1 else tf.constant([0.5])
        signatures = {name: loaded.signatures[name] for name in widths}
        for name, fn in signatures.items():
            for _ in range(warmup):
                fn(image=image, lambda_value=lambda_value)["logits"].numpy()
        times = {name: [] for name in widths}
        for _ in range(runs):
            for name, fn in signatures.items():
                start = time.perf_counter()
                fn(image=image, lambda_value=lambda_value)["logits"].numpy()
                times[name].append(time.perf_counter() - start)
        full_median = float(np.median(times[export.SIGNATURE_KEY]))
        for name, width in widths.items():
            median = float(np.median(times[name]))
            rows.append({
                "width": width,
                "signature": name,
                "batch_size": batch_size,
                "runs": runs,
                "median_ms": 1000.0 * median,
                "p10_ms": 1000.0 * float(np.percentile(times[name], 10)),
                "p90_ms": 1000.0 * float(np.percentile(times[name], 90)),
                "images_per_second": batch_size / median,
                "speedup": full_median / median,
            })
    return rows


def format_table(rows: Sequence[Dict[str, Any]], macs: Optional[Dict[float, int]] = None) -> str:
    """Formats `measure_latency` rows as a Markdown table (MACs per image when given)."""
    header = ["batch", "width", "signature"]
    if macs:
        header.append("MACs/image (M)")
    header += ["median (ms)", "p10–p90 (ms)", "images/s", "speed-up vs 1.0"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|"]
    for row in rows:
        cells = [str(row["batch_size"]), str(row["width"]), f"`{row['signature']}`"]
        if macs:
            cells.append(f"{macs[row['width']] / 1e6:,.1f}")
        cells += [
            f"{row['median_ms']:.2f}",
            f"{row['p10_ms']:.2f}–{row['p90_ms']:.2f}",
            f"{row['images_per_second']:.1f}",
            f"{row['speedup']:.2f}×",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv) -> None:
    if len(argv) > 1:
        raise ValueError(f"Unexpected positional arguments: {argv[1:]}")
    batch_sizes = [int(b) for b in FLAGS.batch_sizes]
    macs = None
    with tempfile.TemporaryDirectory() as temp_dir:
        if FLAGS.saved_model:
            export_dir = FLAGS.saved_model
            source = export_dir
        else:
            export_dir = os.path.join(temp_dir, "export")
            macs = export_fresh_network(
                FLAGS.architecture, export_dir, variant=FLAGS.variant,
                widths=[float(w) for w in FLAGS.widths], seed=FLAGS.seed,
            )
            source = f"fresh {FLAGS.architecture} ({FLAGS.variant})"
        logging.info("Timing %s: signatures %s.", source, export.signature_widths(export_dir))
        rows = measure_latency(export_dir, batch_sizes=batch_sizes, runs=FLAGS.runs, warmup=FLAGS.warmup)
    sys.stdout.write(
        f"\nInference latency per width of {source}: median of {FLAGS.runs} calls after "
        f"{FLAGS.warmup} warm-up calls; TensorFlow {tf.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs\n\n" + format_table(rows, macs)
    )
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w", encoding="utf-8") as f:
            json.dump({"source": source, "rows": rows, "macs": macs and {str(k): v for k, v in macs.items()}}, f, indent=2)


def run() -> None:
    """The `oat-width-latency` console script; `python -m oat_tf.bench.width_latency` runs it too."""
    from oat_tf import cli  # pylint: disable=import-outside-toplevel

    cli.run_main(main, __name__, define_flags)


if __name__ == "__main__":
    run()
