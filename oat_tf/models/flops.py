"""Multiply-accumulates (MACs) and parameters of a functional Keras model.

Counts follow `thop` (the profiler of the OAT reference code), per image:

- `Conv1D/2D/3D`: kernel size · C_in / groups · C_out · output positions
  (kh·kw·C_in·C_out·H_out·W_out for an ungrouped 2-D convolution); no bias.
- `Dense`: in · out per output row.
- `BatchNormalization` and `DualBatchNormalization`: 2 per element.
- `FiLM`: the MACs of its generator MLP plus 2 per modulated element, also
  reported on their own as `film_macs`.
- Everything else (activations, pooling, additions, λ encoding): 0.

The graph is walked through the model's own nodes, so layers shared with other
models count once per use in this one; nested functional models are walked
recursively. Output shapes come from the nodes' symbolic tensors.

Command line (prints a Markdown table):

    python -m oat_tf.models.flops --architectures=resnet34,wrn16_8,wrn40_2:96,small_cnn
"""

from __future__ import annotations

import math
import sys
from typing import Any, Dict, List, Optional, Sequence

import keras
from absl import app
from absl import flags
from absl import logging

from oat_tf.layers import dual_batch_norm
from oat_tf.layers import film
from oat_tf.layers import lambda_encoding

_CONV_TYPES = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSED_TYPES = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
_NORM_TYPES = (keras.layers.BatchNormalization, dual_batch_norm.DualBatchNormalization)
# Layers with weights but no multiply-accumulates worth counting.
_ZERO_COST_TYPES = (lambda_encoding.LambdaEncoder,)


def _elements(shape: Sequence[Optional[int]]) -> int:
    """Elements per sample of a symbolic shape (batch axis excluded)."""
    return int(math.prod(int(d) for d in shape[1:]))


def _weight_count(weights: Sequence[Any]) -> int:
    return int(sum(math.prod(int(d) for d in w.shape) for w in weights))


def _node_macs(layer: keras.layers.Layer, node: Any) -> Dict[str, int]:
    """MACs per sample of one call of `layer`, by category."""
    outputs = [t for t in node.outputs if hasattr(t, "shape")]
    if not outputs:
        return {}
    out_shape = outputs[0].shape
    if isinstance(layer, _CONV_TYPES) and not isinstance(layer, _TRANSPOSED_TYPES):
        positions = math.prod(int(d) for d in out_shape[1:-1])
        return {"conv_macs": int(math.prod(int(d) for d in layer.kernel.shape)) * positions}
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        positions = math.prod(int(d) for d in out_shape[1:-1])
        kernel = layer.depthwise_kernel.shape
        return {"conv_macs": int(math.prod(int(d) for d in kernel)) * positions}
    if isinstance(layer, keras.layers.Dense):
        rows = math.prod(int(d) for d in out_shape[1:-1])
        return {"dense_macs": int(math.prod(int(d) for d in layer.kernel.shape)) * rows}
    if isinstance(layer, _NORM_TYPES):
        return {"norm_macs": 2 * _elements(out_shape)}
    if isinstance(layer, film.FiLM):
        mlp = _weight_count([layer.hidden_kernel, layer.output_kernel])
        return {"film_macs": mlp + 2 * _elements(out_shape)}
    return {}


def _graph_macs(model: keras.Model, totals: Dict[str, int], per_layer: Dict[str, int]) -> None:
    """Adds the per-sample MACs of every node of `model`'s graph to `totals`."""
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.operation
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth"):
                _graph_macs(layer, totals, per_layer)
                continue
            counts = _node_macs(layer, node)
            if not counts and layer.weights and not isinstance(layer, _ZERO_COST_TYPES):
                logging.log_first_n(
                    logging.WARNING,
                    "count_flops: no MAC rule for %s (%s); counted as 0.",
                    10,
                    layer.name,
                    type(layer).__name__,
                )
            for key, value in counts.items():
                totals[key] += value
                per_layer[layer.name] = per_layer.get(layer.name, 0) + value


def count_flops(model: keras.Model, batch_size: int = 1) -> Dict[str, Any]:
    """Counts multiply-accumulates (thop's convention) and parameters of a model.

    Args:
        model: keras.Model, a built functional model (an oat_tf network or any
            functional model made of Keras layers).
        batch_size: int, number of images the MACs are counted for (1: per
            image).

    Returns:
        Dict with:
        - "macs": int, all counted MACs (conv + dense + norm + FiLM).
        - "conv_macs", "dense_macs", "norm_macs", "film_macs": int, by kind;
          `film_macs` is the FiLM overhead (generator MLPs + modulation).
        - "params": int, all weights (trainable and non-trainable, e.g. BN
          moving statistics and the λ encoding matrix).
        - "trainable_params": int, trainable weights only (PyTorch's count).
        - "per_layer": dict layer name → MACs.

    Raises:
        ValueError: if `model` is not a functional model or `batch_size` < 1.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
    if not hasattr(model, "_nodes_by_depth"):
        raise ValueError(
            "`model` must be a functional keras.Model (built from keras.Input). "
            f"Received: model={type(model).__name__}"
        )
    totals = {"conv_macs": 0, "dense_macs": 0, "norm_macs": 0, "film_macs": 0}
    per_layer: Dict[str, int] = {}
    _graph_macs(model, totals, per_layer)
    totals = {key: value * batch_size for key, value in totals.items()}
    return {
        "macs": sum(totals.values()),
        **totals,
        "params": _weight_count(model.weights),
        "trainable_params": _weight_count(model.trainable_weights),
        "per_layer": {name: value * batch_size for name, value in per_layer.items()},
    }


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


def flops_table(architectures: Sequence[str], variants: Sequence[str]) -> str:
    """Returns a Markdown table of parameters and MACs per architecture and variant.

    Args:
        architectures: sequence of "name" or "name:size" (e.g. "wrn40_2:96");
            without a size, 28×28×1 for small_cnn, 96×96×3 for wrn40_2 and
            32×32×3 otherwise.
        variants: sequence of model variants ("plain", "oat", "oat_single_bn").

    Returns:
        str, the table; the overhead column compares each variant's MACs with
        the plain model's.
    """
    from oat_tf import config as config_lib
    from oat_tf.models import registry

    rows: List[str] = [
        "| model | variant | input | params (all) | params (trainable) | MACs | "
        "FiLM MACs | overhead vs plain |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for spec in architectures:
        name, shape = _parse_architecture(spec)
        results = {}
        for variant in dict.fromkeys(("plain", *variants)):
            model_config = config_lib.ModelConfig(
                architecture=name, variant=variant, input_shape=shape
            )
            results[variant] = count_flops(registry.build_model(model_config))
        plain_macs = results["plain"]["macs"]
        for variant in variants:
            result = results[variant]
            overhead = 100.0 * (result["macs"] - plain_macs) / plain_macs
            rows.append(
                f"| {name} | {variant} | {shape[0]}×{shape[1]}×{shape[2]} | "
                f"{result['params']:,} | {result['trainable_params']:,} | "
                f"{result['macs'] / 1e6:,.2f} M | {result['film_macs'] / 1e6:,.2f} M | "
                f"{overhead:+.2f}% |"
            )
    return "\n".join(rows) + "\n"


def define_flags() -> None:
    """Defines the command-line flags of the table."""
    flags.DEFINE_list(
        "architectures",
        ["resnet34", "wrn16_8", "wrn40_2:96", "small_cnn"],
        "Architectures, each NAME or NAME:SIZE (square input of SIZE pixels).",
    )
    flags.DEFINE_list("variants", ["plain", "oat", "oat_single_bn"], "Model variants.")


def main(argv: Sequence[str]) -> None:
    del argv  # Unused.
    table = flops_table(flags.FLAGS.architectures, flags.FLAGS.variants)
    sys.stdout.write(table)


if __name__ == "__main__":
    define_flags()
    app.run(main)
