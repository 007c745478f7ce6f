"""Kernel sparsity and effective MACs against counts made by hand."""

import keras
import numpy as np
import pytest

from oat_tf.compression import sparsity
from oat_tf.models import flops


def _model():
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    logits = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, logits)


def test_sparsity_counts_zero_kernel_weights_only():
    model = _model()
    conv = model.get_layer("conv")
    kernel, bias = conv.get_weights()
    kernel = np.ones_like(kernel)
    kernel.reshape(-1)[:9] = 0.0  # 9 of 36
    conv.set_weights([kernel, np.zeros_like(bias)])  # Zero biases are not counted.
    dense = model.get_layer("logits")
    dense_kernel, dense_bias = dense.get_weights()
    dense.set_weights([np.ones_like(dense_kernel), dense_bias])
    result = sparsity.kernel_sparsity(model)
    assert result["per_layer"]["conv"] == {"weights": 36, "zeros": 9, "sparsity": 0.25}
    assert result["per_layer"]["logits"]["zeros"] == 0
    assert result["weights"] == 36 + 144 * 10
    assert result["sparsity"] == pytest.approx(9 / (36 + 1440))


def test_effective_macs_scale_each_prunable_layer_by_its_density():
    model = _model()
    conv = model.get_layer("conv")
    kernel, bias = conv.get_weights()
    kernel = np.ones_like(kernel)
    kernel.reshape(-1)[:18] = 0.0  # half
    conv.set_weights([kernel, bias])
    counted = flops.count_flops(model)
    conv_macs = 6 * 6 * 3 * 3 * 1 * 4
    dense_macs = 144 * 10
    assert counted["per_layer"]["conv"] == conv_macs and counted["per_layer"]["logits"] == dense_macs
    result = sparsity.effective_macs(model)
    assert result["dense_macs"] == counted["macs"]
    dense_kernel = model.get_layer("logits").get_weights()[0]
    dense_density = np.count_nonzero(dense_kernel) / dense_kernel.size
    expected = counted["macs"] - conv_macs * 0.5 - dense_macs * (1 - dense_density)
    assert result["effective_macs"] == pytest.approx(expected)
    assert result["saving"] == pytest.approx(1 - expected / counted["macs"])
    assert result["per_layer"]["conv"] == {"dense_macs": conv_macs, "effective_macs": conv_macs * 0.5}
