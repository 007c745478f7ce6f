"""Multiply-accumulates (MACs) and parameters of a functional Keras model.

Counts follow `thop` (the profiler of the OAT reference code), per image:

- `Conv1D/2D/3D`: kernel size · C_in / groups · C_out · output positions
  (kh·kw·C_in·C_out·H_out·W_out for an ungrouped 2-D convolution); no bias.
- `Dense`: in · out per output row.
- `BatchNormalization` and `DualBatchNormalization`: 2 per element.
- `FiLM`: the MACs of its generator MLP plus 2 per modulated element, also
  reported on their own as `film_macs`.
- Everything else (activations, pooling, additions, λ encoding): 0.

Slimmable layers count what their width uses: the `width` of each call is read
from the graph's nodes, so `count_flops(network.width_model(α))` gives the
MACs and parameters of the width-α sub-network of a slimmable network
(`count_width_flops` does it for every width): `SlimmableConv2D` and
`SlimmableDense` their sliced kernels, the switchable batch norms the width's
own sublayer, `SlimmableFiLM` its slimmed generator.

The graph is walked through the model's own nodes, so layers shared with other
models count once per use in this one; nested functional models are walked
recursively. Output shapes come from the nodes' symbolic tensors. Parameters
are those of the layers in the graph (each layer once).

`python -m oat_tf.bench.flops_table` prints these counts as a Markdown table.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

import keras
from absl import logging

from oat_tf.layers import dual_batch_norm
from oat_tf.layers import film
from oat_tf.layers import lambda_encoding
from oat_tf.layers import slimmable
from oat_tf.layers import slimmable_conv
from oat_tf.layers import slimmable_dense
from oat_tf.layers import slimmable_film
from oat_tf.layers import switchable_batch_norm

_CONV_TYPES = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSED_TYPES = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
_NORM_TYPES = (
    keras.layers.BatchNormalization,
    dual_batch_norm.DualBatchNormalization,
    switchable_batch_norm.SwitchableBatchNormalization,
    switchable_batch_norm.SwitchableDualBatchNormalization,
)
_SWITCHABLE_TYPES = (
    switchable_batch_norm.SwitchableBatchNormalization,
    switchable_batch_norm.SwitchableDualBatchNormalization,
)
# Layers with weights but no multiply-accumulates worth counting.
_ZERO_COST_TYPES = (lambda_encoding.LambdaEncoder,)


def _elements(shape: Sequence[Optional[int]]) -> int:
    """Elements per sample of a symbolic shape (batch axis excluded)."""
    return int(math.prod(int(d) for d in shape[1:]))


def _weight_count(weights: Sequence[Any]) -> int:
    return int(sum(math.prod(int(d) for d in w.shape) for w in weights))


def _node_width(layer: keras.layers.Layer, node: Any) -> float:
    """The `width` call argument of a slimmable layer's node (1.0 if absent)."""
    width = node.arguments.kwargs.get("width")
    return slimmable.check_width(width, layer.widths)


def _film_generator_weights(layer: film.FiLM, channels: int) -> Dict[str, int]:
    """Kernel and bias sizes of a FiLM generator modulating `channels` channels."""
    code_dim = int(layer.hidden_kernel.shape[0])
    hidden = 2 * channels * layer.hidden_multiplier
    return {
        "kernels": code_dim * hidden + hidden * 2 * channels,
        "biases": hidden + 2 * channels,
    }


def _node_macs(layer: keras.layers.Layer, node: Any) -> Dict[str, int]:
    """MACs per sample of one call of `layer`, by category."""
    outputs = [t for t in node.outputs if hasattr(t, "shape")]
    if not outputs:
        return {}
    out_shape = outputs[0].shape
    if isinstance(layer, (slimmable_conv.SlimmableConv2D, slimmable_dense.SlimmableDense)):
        in_channels, out_channels = layer.channels_at(_node_width(layer, node))
        if isinstance(layer, slimmable_conv.SlimmableConv2D):
            per_position = math.prod(int(k) for k in layer.kernel_size) * in_channels * out_channels
            return {"conv_macs": per_position * math.prod(int(d) for d in out_shape[1:-1])}
        rows = math.prod(int(d) for d in out_shape[1:-1])
        return {"dense_macs": in_channels * out_channels * rows}
    if isinstance(layer, slimmable_film.SlimmableFiLM):
        channels = slimmable.slimmed_channels(layer.channels, _node_width(layer, node))
        mlp = _film_generator_weights(layer, channels)["kernels"]
        return {"film_macs": mlp + 2 * _elements(out_shape)}
    if isinstance(layer, _CONV_TYPES) and not isinstance(layer, _TRANSPOSED_TYPES):
        positions = math.prod(int(d) for d in out_shape[1:-1])
        return {"conv_macs": int(math.prod(int(d) for d in layer.kernel.shape)) * positions}
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        positions = math.prod(int(d) for d in out_shape[1:-1])
        kernel = layer.kernel.shape  # Keras 3's name of the depthwise kernel: [kh, kw, C, multiplier].
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


def _node_params(layer: keras.layers.Layer, node: Any) -> Dict[str, int]:
    """Trainable and all parameters `layer` uses in one call (its width's for slimmable ones)."""
    if isinstance(layer, _SWITCHABLE_TYPES):
        norm = layer.norm_at(_node_width(layer, node))
        return {
            "trainable": _weight_count(norm.trainable_weights),
            "all": _weight_count(norm.weights),
        }
    if isinstance(layer, (slimmable_conv.SlimmableConv2D, slimmable_dense.SlimmableDense)):
        in_channels, out_channels = layer.channels_at(_node_width(layer, node))
        kernel = in_channels * out_channels
        if isinstance(layer, slimmable_conv.SlimmableConv2D):
            kernel *= math.prod(int(k) for k in layer.kernel_size)
        count = kernel + (out_channels if layer.use_bias else 0)
        return {"trainable": count if layer.trainable else 0, "all": count}
    if isinstance(layer, slimmable_film.SlimmableFiLM):
        channels = slimmable.slimmed_channels(layer.channels, _node_width(layer, node))
        count = sum(_film_generator_weights(layer, channels).values())
        return {"trainable": count if layer.trainable else 0, "all": count}
    return {
        "trainable": _weight_count(layer.trainable_weights),
        "all": _weight_count(layer.weights),
    }


def _graph_macs(
    model: keras.Model,
    totals: Dict[str, int],
    per_layer: Dict[str, int],
    params: Dict[int, Dict[str, int]],
) -> None:
    """Adds the per-sample MACs of every node of `model`'s graph to `totals`.

    `params` maps id(layer) to the parameters it uses (first call), so each
    layer counts once.
    """
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.operation
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth"):
                _graph_macs(layer, totals, per_layer, params)
                continue
            if id(layer) not in params:
                params[id(layer)] = _node_params(layer, node)
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
            functional model made of Keras layers), or a slimmable network
            (counted at full width; `count_width_flops` counts every width).
        batch_size: int, number of images the MACs are counted for (1: per
            image).

    Returns:
        Dict with:
        - "macs": int, all counted MACs (conv + dense + norm + FiLM).
        - "conv_macs", "dense_macs", "norm_macs", "film_macs": int, by kind;
          `film_macs` is the FiLM overhead (generator MLPs + modulation).
        - "params": int, all weights (trainable and non-trainable, e.g. BN
          moving statistics and the λ encoding matrix) of the layers in the
          graph; for slimmable layers, those their width uses.
        - "trainable_params": int, trainable weights only (PyTorch's count).
        - "per_layer": dict layer name → MACs.

    Raises:
        ValueError: if `model` is not a functional model or `batch_size` < 1.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
    if hasattr(model, "width_model") and not hasattr(model, "_nodes_by_depth"):
        model = model.width_model(slimmable.FULL_WIDTH)
    if not hasattr(model, "_nodes_by_depth"):
        raise ValueError(
            "`model` must be a functional keras.Model (built from keras.Input). "
            f"Received: model={type(model).__name__}"
        )
    totals = {"conv_macs": 0, "dense_macs": 0, "norm_macs": 0, "film_macs": 0}
    per_layer: Dict[str, int] = {}
    params: Dict[int, Dict[str, int]] = {}
    _graph_macs(model, totals, per_layer, params)
    totals = {key: value * batch_size for key, value in totals.items()}
    return {
        "macs": sum(totals.values()),
        **totals,
        "params": sum(p["all"] for p in params.values()),
        "trainable_params": sum(p["trainable"] for p in params.values()),
        "per_layer": {name: value * batch_size for name, value in per_layer.items()},
    }


def count_width_flops(network: keras.Model, batch_size: int = 1) -> Dict[float, Dict[str, Any]]:
    """Counts MACs and parameters of every width of a slimmable network.

    Args:
        network: a `SlimmableNetwork` (with `widths` and `width_model`).
        batch_size: int, number of images the MACs are counted for.

    Returns:
        Dict width → `count_flops` result of the width-α sub-network; its
        parameters are those the width uses (sliced kernels, its own BNs).

    Raises:
        ValueError: if `network` is not slimmable.
    """
    if not hasattr(network, "width_model") or not hasattr(network, "widths"):
        raise ValueError(
            "`network` must be a slimmable network (with `widths` and `width_model`). "
            f"Received: network={type(network).__name__}"
        )
    return {
        width: count_flops(network.width_model(width), batch_size=batch_size)
        for width in network.widths
    }
