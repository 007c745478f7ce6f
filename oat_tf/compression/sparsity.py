"""Sparsity of a network's kernels and the multiply-accumulates a sparse kernel still costs.

Effective MACs follow the convention of the pruning literature (and of the
RDI-Nets paper's Fig. 6): a convolution or dense layer whose kernel has a
fraction d of nonzero weights costs d times its dense MACs; every other
layer (batch norm, pooling) costs what it costs dense.
"""

from __future__ import annotations

from typing import Any, Dict

import keras
import numpy as np

from oat_tf.compression import legacy_keras
from oat_tf.models import flops


def kernel_sparsity(model: Any) -> Dict[str, Any]:
    """The fraction of exactly-zero kernel weights of every prunable layer.

    Args:
        model: keras.Model or tf_keras.Model; its Conv2D, DepthwiseConv2D and
            Dense layers are measured (biases and other weights are not).

    Returns:
        dict with `per_layer` ({layer name: {"weights": int, "zeros": int,
        "sparsity": float}}) and the totals over those layers: `weights`,
        `zeros` and `sparsity` (zeros / weights; 0.0 without such layers).
    """
    per_layer = {}
    for layer in model.layers:
        if type(layer).__name__ not in legacy_keras.PRUNABLE_LAYERS:
            continue
        kernel = np.asarray(layer.get_weights()[0])
        zeros = int(np.count_nonzero(kernel == 0))
        per_layer[layer.name] = {"weights": int(kernel.size), "zeros": zeros, "sparsity": zeros / kernel.size}
    weights = sum(entry["weights"] for entry in per_layer.values())
    zeros = sum(entry["zeros"] for entry in per_layer.values())
    return {
        "per_layer": per_layer,
        "weights": weights,
        "zeros": zeros,
        "sparsity": zeros / weights if weights else 0.0,
    }


def effective_macs(model: keras.Model) -> Dict[str, Any]:
    """Dense and effective multiply-accumulates per image of a (pruned) network.

    Args:
        model: keras.Model, a functional Keras 3 network with one output
            (`legacy_keras.plain_backbone`), counted by
            `oat_tf.models.flops.count_flops`.

    Returns:
        dict with `dense_macs` (int, the network as if no weight were zero),
        `effective_macs` (float, each prunable layer's MACs scaled by its
        kernel's nonzero fraction), `saving` (1 − effective / dense) and
        `per_layer` ({layer name: {"dense_macs": int, "effective_macs": float}}
        for the prunable layers).
    """
    counted = flops.count_flops(model)
    sparsity = kernel_sparsity(model)["per_layer"]
    per_layer = {}
    removed = 0.0
    for name, entry in sparsity.items():
        dense = int(counted["per_layer"].get(name, 0))
        effective = dense * (1.0 - entry["sparsity"])
        per_layer[name] = {"dense_macs": dense, "effective_macs": effective}
        removed += dense - effective
    dense_total = int(counted["macs"])
    effective_total = dense_total - removed
    return {
        "dense_macs": dense_total,
        "effective_macs": effective_total,
        "saving": 1.0 - effective_total / dense_total if dense_total else 0.0,
        "per_layer": per_layer,
    }
