"""Tests of the MAC and parameter counter against closed forms."""

import keras
import numpy as np
import pytest

from oat_tf.layers import dual_batch_norm
from oat_tf.layers import film
from oat_tf.models import flops
from oat_tf.models import resnet


def test_conv2d_closed_form():
    inputs = keras.Input((9, 9, 3))
    outputs = keras.layers.Conv2D(5, 3, strides=2, padding="valid")(inputs)
    result = flops.count_flops(keras.Model(inputs, outputs))
    # kh·kw·C_in·C_out·H_out·W_out with a 4×4 output; the bias adds no MACs.
    assert result["conv_macs"] == result["macs"] == 3 * 3 * 3 * 5 * 4 * 4
    assert result["params"] == result["trainable_params"] == 3 * 3 * 3 * 5 + 5


def test_dense_closed_form_and_batch_size():
    inputs = keras.Input((7,))
    outputs = keras.layers.Dense(4)(inputs)
    model = keras.Model(inputs, outputs)
    assert flops.count_flops(model)["dense_macs"] == 28
    assert flops.count_flops(model, batch_size=3)["macs"] == 84


def test_norm_and_film_closed_form():
    image = keras.Input((5, 5, 6))
    code = keras.Input((8,))
    clean = keras.Input((), dtype="bool")
    x = keras.layers.BatchNormalization(name="bn")(image)
    x = dual_batch_norm.DualBatchNormalization(name="dual")(x, clean)
    x = film.FiLM(name="film")(x, code)
    result = flops.count_flops(keras.Model([image, code, clean], x))
    elements = 5 * 5 * 6
    assert result["norm_macs"] == 2 * elements + 2 * elements
    # MLP 8 → 12 → 12, plus one multiply and one add per element.
    assert result["film_macs"] == 8 * 12 + 12 * 12 + 2 * elements
    assert result["per_layer"]["film"] == result["film_macs"]
    # BN: γ, β + moving mean, variance; dual: twice that.
    assert result["trainable_params"] == 12 + 24 + (8 * 12 + 12 + 12 * 12 + 12)
    assert result["params"] == result["trainable_params"] + 12 + 24


def test_nested_model_is_walked():
    inner_in = keras.Input((6,))
    inner = keras.Model(inner_in, keras.layers.Dense(3)(inner_in))
    outer_in = keras.Input((6,))
    outer = keras.Model(outer_in, keras.layers.Dense(2)(inner(outer_in)))
    assert flops.count_flops(outer)["macs"] == 18 + 6


def test_subclassed_model_is_rejected():
    class Linear(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="`model`"):
        flops.count_flops(Linear())


def test_resnet34_macs_and_film_overhead():
    plain = flops.count_flops(resnet.ResNet(depth=34, variant="plain"))
    oat = flops.count_flops(resnet.ResNet(depth=34, variant="oat"))
    # ≈1.16 G multiply-accumulates per CIFAR-10 image (OAT reference: 1.1635 G).
    assert plain["macs"] == pytest.approx(1.16e9, rel=0.01)
    assert plain["film_macs"] == 0
    overhead = (oat["macs"] - plain["macs"]) / plain["macs"]
    assert 0.005 < overhead < 0.03, overhead
    assert oat["macs"] - plain["macs"] == oat["film_macs"]  # dual BN costs as BN


def test_markdown_table():
    table = flops.flops_table(["small_cnn:16"], ["plain", "oat"])
    lines = table.strip().splitlines()
    assert lines[0].startswith("| model | variant | input |")
    assert len(lines) == 4
    assert lines[2].startswith("| small_cnn | plain | 16×16×1 |")
    assert lines[3].startswith("| small_cnn | oat |") and lines[3].endswith("% |")
