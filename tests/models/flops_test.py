"""Tests of the MAC and parameter counter against closed forms."""

import keras
import pytest

from oat_tf.layers import dual_batch_norm
from oat_tf.layers import film
from oat_tf.layers import slimmable
from oat_tf.models import flops
from oat_tf.models import resnet
from oat_tf.models import slimmable_resnet
from oat_tf.models import small_cnn
from tests.models import model_testing


def test_conv2d_closed_form():
    inputs = keras.Input((9, 9, 3))
    outputs = keras.layers.Conv2D(5, 3, strides=2, padding="valid")(inputs)
    result = flops.count_flops(keras.Model(inputs, outputs))
    # kh·kw·C_in·C_out·H_out·W_out with a 4×4 output; the bias adds no MACs.
    assert result["conv_macs"] == result["macs"] == 3 * 3 * 3 * 5 * 4 * 4
    assert result["params"] == result["trainable_params"] == 3 * 3 * 3 * 5 + 5


def test_depthwise_conv2d_closed_form():
    inputs = keras.Input((8, 8, 4))
    outputs = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False)(inputs)
    result = flops.count_flops(keras.Model(inputs, outputs))
    # kh·kw·C_in·multiplier per output position, 8×8 positions.
    assert result["conv_macs"] == result["macs"] == 3 * 3 * 4 * 2 * 8 * 8
    assert result["params"] == 3 * 3 * 4 * 2


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


@pytest.mark.parametrize("variant", ["oats", "ats"])
def test_each_width_counts_as_the_small_cnn_of_its_channels(variant):
    network = model_testing.tiny_slimmable_model("small_cnn", variant)
    per_width = flops.count_width_flops(network)
    assert sorted(per_width) == [0.5, 0.75, 1.0]
    for width, result in per_width.items():
        reference = small_cnn.SmallCNN(
            variant=model_testing.MATCHING_VARIANT[variant],
            encoder=model_testing.TINY_ENCODER,
            filters=tuple(slimmable.slimmed_channels(f, width) for f in (4, 8)),
            hidden_units=slimmable.slimmed_channels(8, width),
            image_shape=(20, 20, 1),
            dropout=0.0,
        )
        expected = flops.count_flops(reference)
        for key in ("macs", "norm_macs", "film_macs", "params", "trainable_params"):
            assert result[key] == expected[key], (width, key)
        # fc1 is a convolution over the whole feature map here, a Dense there.
        fc1 = expected["per_layer"]["fc1"]
        assert result["per_layer"]["fc1"] == fc1
        assert result["conv_macs"] == expected["conv_macs"] + fc1
    # A slimmable network itself counts at full width.
    assert flops.count_flops(network)["macs"] == per_width[1.0]["macs"]


def test_resnet34_oats_overhead_against_pgd_ats_per_width():
    ats = flops.count_width_flops(slimmable_resnet.SlimmableResNet(depth=34, variant="ats"))
    oats = flops.count_width_flops(slimmable_resnet.SlimmableResNet(depth=34, variant="oats"))
    plain = flops.count_flops(resnet.ResNet(depth=34, variant="plain"))
    assert ats[1.0]["macs"] == plain["macs"] and ats[1.0]["params"] == plain["params"]
    # MACs scale about as α² (the stem input and the logits are not slimmed).
    assert ats[0.5]["macs"] == pytest.approx(plain["macs"] / 4, rel=0.01)
    for width in (0.5, 0.75, 1.0):
        overhead = (oats[width]["macs"] - ats[width]["macs"]) / ats[width]["macs"]
        assert 0.005 < overhead < 0.03, (width, overhead)
        assert oats[width]["macs"] - ats[width]["macs"] == oats[width]["film_macs"]
