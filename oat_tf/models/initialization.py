"""Weight initialisation schemes applied to a network after it is built.

The layers here start as Keras initialises them (He-normal convolutions,
Glorot-uniform dense layers, zero biases). The OAT reference code, like most
PyTorch code, keeps PyTorch's defaults instead: `nn.Conv2d` and `nn.Linear`
draw their weight from kaiming_uniform(a=√5), which is U(±1/√fan_in), and
their bias from U(±1/√fan_in), fan_in being the inputs of one output unit
(kernel height × width × input channels per group for a convolution, so
height × width for a depthwise one). `initialize_like_torch` redraws every
Keras `Conv2D`, `DepthwiseConv2D` and `Dense` layer of a network that way.
FiLM generators already draw theirs as the reference does
(`oat_tf.layers.film`), and normalisations start at γ = 1, β = 0 in both
frameworks, so they are left as they are.
"""

from __future__ import annotations

import math
from typing import List

import keras
import numpy as np
from absl import logging

# The variable name of every kernel `initialize_like_torch` covers (Keras 3 names a depthwise
# convolution's kernel "kernel" too).
_KERNEL_NAME = "kernel"


def torch_default_bound(kernel_shape, depthwise: bool = False) -> float:
    """PyTorch's default bound 1/√fan_in for a Keras kernel shape.

    Args:
        kernel_shape: shape of a Keras kernel: (inputs, units) for a dense
            layer, (height, width, inputs per group, filters) for a
            convolution, (height, width, channels, multiplier) for a
            depthwise convolution.
        depthwise: bool, `kernel_shape` is a depthwise kernel.

    Returns:
        float, the bound of the uniform distribution of its weights and bias.
    """
    shape = [int(d) for d in kernel_shape]
    fan_in = math.prod(shape[:2]) if depthwise else math.prod(shape[:-1])
    return 1.0 / math.sqrt(fan_in)


def _layers(model: keras.layers.Layer) -> List[keras.layers.Layer]:
    """The layers of a (possibly nested) functional or sequential model."""
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found += _layers(layer)
    return found


def initialize_like_torch(network: keras.Model, seed: int) -> int:
    """Redraws every convolution and dense layer as PyTorch initialises them.

    Args:
        network: a built Keras model.
        seed: int, seed of the draws (a NumPy generator; the same seed gives
            the same weights).

    Returns:
        int, the number of layers redrawn.

    Raises:
        ValueError: if the network has a kernel outside the covered layer
            types (it would keep its Keras initialisation), naming it.
    """
    targets, seen = [], set()
    for layer in _layers(network):
        if id(layer) in seen:  # a layer shared in the graph is drawn once
            continue
        seen.add(id(layer))
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        if not (depthwise or isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))):
            continue
        bias = layer.bias if layer.use_bias else None
        targets.append((layer.kernel, bias, torch_default_bound(layer.kernel.shape, depthwise=depthwise)))
    # Checked before any draw: a refused network keeps its weights.
    covered = {id(kernel) for kernel, _, _ in targets}
    missed = [v.path for v in network.trainable_weights
              if v.path.rsplit("/", 1)[-1] == _KERNEL_NAME and id(v) not in covered]
    if missed:
        raise ValueError(
            "`weight_init='torch'` covers the kernels of Conv2D, DepthwiseConv2D and Dense layers. "
            f"Received a network with other kernels, which would keep their Keras initialisation: {missed}"
        )
    rng = np.random.default_rng(seed)
    for kernel, bias, bound in targets:
        for variable in (kernel, bias):
            if variable is not None:
                values = rng.uniform(-bound, bound, size=tuple(variable.shape))
                variable.assign(values.astype(variable.dtype))
    count = len(targets)
    logging.info("Initialised %d convolution and dense layers as PyTorch does (seed %d).", count, seed)
    return count
