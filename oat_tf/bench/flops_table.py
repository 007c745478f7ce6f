"""`python -m oat_tf.bench.flops_table`: parameters and MACs per architecture, variant and width.

Prints a Markdown table of `oat_tf.models.flops.count_flops` (thop's
convention) for each architecture and model variant; the slimmable variants
get one row per width, their overhead measured against PGD-ATS at the same
width, the others against the plain network.

    python -m oat_tf.bench.flops_table --architectures=resnet34,wrn16_8,wrn40_2:96,small_cnn \
        --variants=plain,oat,oat_single_bn,ats,oats
"""

from __future__ import annotations

import sys
from typing import List, Sequence

from absl import flags
from absl import logging

from oat_tf import cli
from oat_tf import config as config_lib
from oat_tf.layers import slimmable
from oat_tf.models import flops
from oat_tf.models import registry

# Default input per architecture for the table (the paper's datasets).
DEFAULT_IMAGE_SIZES = {"small_cnn": (28, 28, 1), "wrn40_2": (96, 96, 3)}
DEFAULT_IMAGE_SHAPE = (32, 32, 3)


def _parse_architecture(spec: str):
    """Splits "name[:size]" into the name and an (H, W, C) image shape."""
    name, _, size = spec.partition(":")
    shape = DEFAULT_IMAGE_SIZES.get(name, DEFAULT_IMAGE_SHAPE)
    if size:
        if not size.isdigit() or int(size) < 1:
            raise ValueError(
                "`architectures` entries must be NAME or NAME:SIZE with a positive "
                f"integer SIZE. Received: architectures entry {spec!r}"
            )
        shape = (int(size), int(size), shape[2])
    return name, shape


def _table_row(name, variant, shape, width, result, baseline_macs) -> str:
    overhead = 100.0 * (result["macs"] - baseline_macs) / baseline_macs
    return (
        f"| {name} | {variant} | {shape[0]}×{shape[1]}×{shape[2]} | {float(width)} | "
        f"{result['params']:,} | {result['trainable_params']:,} | "
        f"{result['macs'] / 1e6:,.2f} M | {result['film_macs'] / 1e6:,.2f} M | "
        f"{overhead:+.2f}% |"
    )


def flops_table(
    architectures: Sequence[str],
    variants: Sequence[str],
    widths: Sequence[float] = slimmable.DEFAULT_WIDTHS,
) -> str:
    """Returns a Markdown table of parameters and MACs per architecture, variant and width.

    Args:
        architectures: sequence of "name" or "name:size" (e.g. "wrn40_2:96");
            without a size, 28×28×1 for small_cnn, 96×96×3 for wrn40_2 and
            32×32×3 otherwise.
        variants: sequence of model variants ("plain", "oat", "oat_single_bn",
            "oats", "oats_single_bn", "ats").
        widths: sequence of float, the widths of the slimmable variants (one
            row each).

    Returns:
        str, the table. The overhead column compares each row's MACs with its
        baseline: the plain network for "plain", "oat" and "oat_single_bn";
        PGD-ATS ("ats") at the same width for the slimmable variants (OATS's
        overhead against PGD-ATS). Architectures without a slimmable network
        (Wide ResNets) get no slimmable rows.
    """
    rows: List[str] = [
        "| model | variant | input | width | params (all) | params (trainable) | MACs | "
        "FiLM MACs | overhead vs baseline |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    plain_variants = [v for v in variants if v not in config_lib.SLIMMABLE_VARIANTS]
    slim_variants = [v for v in variants if v in config_lib.SLIMMABLE_VARIANTS]
    for spec in architectures:
        name, shape = _parse_architecture(spec)
        if plain_variants:
            results = {}
            for variant in dict.fromkeys(("plain", *plain_variants)):
                model_config = config_lib.ModelConfig(
                    architecture=name, variant=variant, input_shape=shape
                )
                results[variant] = flops.count_flops(registry.build_model(model_config))
            for variant in plain_variants:
                rows.append(
                    _table_row(name, variant, shape, 1.0, results[variant], results["plain"]["macs"])
                )
        if not slim_variants:
            continue
        try:
            registry.parse_architecture(name, slimmable=True)
        except ValueError:
            logging.warning("flops_table: %s has no slimmable network; no OATS rows.", name)
            continue
        per_width = {}
        for variant in dict.fromkeys(("ats", *slim_variants)):
            model_config = config_lib.ModelConfig(
                architecture=name, variant=variant, input_shape=shape, widths=tuple(widths)
            )
            per_width[variant] = flops.count_width_flops(registry.build_model(model_config))
        for variant in slim_variants:
            for width, result in sorted(per_width[variant].items(), reverse=True):
                baseline = per_width["ats"][width]["macs"]
                rows.append(_table_row(name, variant, shape, width, result, baseline))
    return "\n".join(rows) + "\n"


def define_flags() -> None:
    """Defines the command-line flags of the table."""
    flags.DEFINE_list(
        "architectures",
        ["resnet34", "wrn16_8", "wrn40_2:96", "small_cnn"],
        "Architectures, each NAME or NAME:SIZE (square input of SIZE pixels).",
    )
    flags.DEFINE_list(
        "variants",
        ["plain", "oat", "oat_single_bn", "ats", "oats"],
        "Model variants; the slimmable ones (ats, oats, oats_single_bn) get one row per width.",
    )
    flags.DEFINE_list("widths", [str(w) for w in slimmable.DEFAULT_WIDTHS], "Widths of the slimmable variants.")


def main(argv: Sequence[str]) -> None:
    del argv  # Unused.
    widths = [float(w) for w in flags.FLAGS.widths]
    table = flops_table(flags.FLAGS.architectures, flags.FLAGS.variants, widths)
    sys.stdout.write(table)


def run() -> None:
    """The `oat-flops-table` console script; `python -m oat_tf.bench.flops_table` runs it too."""
    cli.run_main(main, __name__, define_flags)


if __name__ == "__main__":
    run()
