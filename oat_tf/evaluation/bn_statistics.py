"""Running statistics of a network's last batch norm (the OAT paper's Fig. 2).

The paper motivates dual batch norm by plotting the running mean against the
running variance of the last BN layer of PGD-AT models trained at fixed λ:
λ = 0 sits apart from every λ > 0. This module reads those statistics:

- `batch_norm_layers(model)`: every layer with `moving_mean` and
  `moving_variance` weights (`keras.layers.BatchNormalization`,
  `DualBatchNormalization`, and any layer built the same way), in the order
  of `model.layers`, descending into nested models.
- `last_batch_norm(model)`: the last of them.
- `running_statistics(model, label)`: its statistics as one series per group:
  one for a plain batch norm, two for `DualBatchNormalization` (row 0
  "clean", the λ = 0 samples; row 1 "adversarial", every λ ≠ 0), one per row
  for any other layer with [G, C] statistics.
"""

from __future__ import annotations

import dataclasses
from typing import List

import keras
import numpy as np

from oat_tf.layers import dual_batch_norm


@dataclasses.dataclass(frozen=True, eq=False)
class RunningStatistics:
    """One group's running statistics of a batch norm layer.

    Attributes:
        label: str, the series name (run label and group).
        layer_name: str, the layer's name.
        mean: np.ndarray [C], the running (moving) mean per channel.
        variance: np.ndarray [C], the running (moving) variance per channel.
    """

    label: str
    layer_name: str
    mean: np.ndarray
    variance: np.ndarray


def _has_running_statistics(layer: keras.layers.Layer) -> bool:
    return (
        getattr(layer, "moving_mean", None) is not None
        and getattr(layer, "moving_variance", None) is not None
    )


def batch_norm_layers(model: keras.layers.Layer) -> List[keras.layers.Layer]:
    """Returns the layers of `model` that hold running statistics, in order.

    Args:
        model: keras.Model (or layer); nested models are searched in place.

    Returns:
        list of layers, in the order of `model.layers` (topological for
        functional models).
    """
    found = []
    for layer in getattr(model, "layers", None) or ():
        if _has_running_statistics(layer):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(batch_norm_layers(layer))
    return found


def last_batch_norm(model: keras.layers.Layer) -> keras.layers.Layer:
    """Returns the last layer of `model` that holds running statistics.

    Args:
        model: keras.Model.

    Returns:
        keras.layers.Layer.

    Raises:
        ValueError: `model` has no batch norm layer.
    """
    layers = batch_norm_layers(model)
    if not layers:
        raise ValueError(
            "`model` must contain a batch norm layer (a layer with moving_mean and "
            f"moving_variance). Received: model={getattr(model, 'name', model)!r} without one"
        )
    return layers[-1]


def _group_names(layer: keras.layers.Layer, groups: int) -> List[str]:
    if isinstance(layer, dual_batch_norm.DualBatchNormalization):
        names = {dual_batch_norm.CLEAN: "clean", dual_batch_norm.ADVERSARIAL: "adversarial"}
        return [names[i] for i in range(groups)]
    return [f"group {i}" for i in range(groups)]


def running_statistics(model: keras.layers.Layer, label: str) -> List[RunningStatistics]:
    """Reads the running statistics of the last batch norm of `model`.

    Args:
        model: keras.Model, built (e.g. restored from a checkpoint).
        label: str, the run's label; group names are appended for layers
            with several groups ("<label> clean", "<label> adversarial").

    Returns:
        list of RunningStatistics, one per group.
    """
    layer = last_batch_norm(model)
    mean = np.asarray(keras.ops.convert_to_numpy(layer.moving_mean), np.float64)
    variance = np.asarray(keras.ops.convert_to_numpy(layer.moving_variance), np.float64)
    if mean.shape != variance.shape or mean.ndim not in (1, 2):
        raise ValueError(
            "A batch norm's moving_mean and moving_variance must both be [C] or [G, C]. "
            f"Received: layer {layer.name!r} with shapes {mean.shape} and {variance.shape}"
        )
    if mean.ndim == 1:
        return [RunningStatistics(label, layer.name, mean, variance)]
    return [
        RunningStatistics(f"{label} {name}", layer.name, mean[i], variance[i])
        for i, name in enumerate(_group_names(layer, mean.shape[0]))
    ]
