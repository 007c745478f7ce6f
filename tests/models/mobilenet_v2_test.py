"""Tests of the MobileNetV2 backbone: kuangliu's size, variants, the RDI network's final output."""

import keras
import numpy as np
import pytest

from oat_tf.layers import dual_batch_norm
from oat_tf.models import mobilenet_v2
from oat_tf.models import rdi_networks
from tests import testing
from tests.models import model_testing

TINY = dict(block_settings=((1, 4, 1, 1), (2, 8, 2, 2)), stem_filters=4, head_filters=8)


def test_parameter_count_matches_kuangliu():
    model = mobilenet_v2.MobileNetV2()
    assert model.num_blocks == 17 and model.name == "mobilenet_v2_plain"
    # kuangliu pytorch-cifar MobileNetV2, 10 classes (the hand count of the RDI test).
    assert model_testing.trainable_count(model) == 2_296_922
    assert model.get_layer("block17_out").output.shape[1:] == (4, 4, 320)


@pytest.mark.parametrize("variant", ["plain", "oat", "oat_single_bn", "mixture_bn"])
def test_variants_build_and_round_trip(variant):
    model = mobilenet_v2.MobileNetV2(variant=variant, image_shape=(8, 8, 3), encoder=model_testing.TINY_ENCODER, **TINY)
    rebuilt = testing.assert_config_round_trip(model)
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in model.layers]
    outputs = model(model_testing.random_inputs((8, 8, 3), [0.0, 1.0]), training=False)
    assert outputs.shape == (2, 10) and np.all(np.isfinite(outputs))
    dual = isinstance(model.get_layer("stem_bn"), dual_batch_norm.DualBatchNormalization)
    assert dual == (variant in ("oat", "mixture_bn"))


def test_the_rdi_networks_final_output_is_the_backbone():
    keras.utils.set_random_seed(3)
    network = rdi_networks.rdi_mobilenet_v2(
        variant="oat", image_shape=(16, 16, 3), encoder=model_testing.TINY_ENCODER,
        exit_blocks=(1, 2), exit_filters=(4, 4), **TINY,
    )
    backbone = mobilenet_v2.MobileNetV2(
        variant="oat", image_shape=(16, 16, 3), encoder=model_testing.TINY_ENCODER, **TINY
    )
    model_testing.randomize_normalizations(network, seed=4)
    # Copy the shared layers' weights by name into the separately built backbone.
    for layer in backbone.layers:
        layer.set_weights(network.get_layer(layer.name).get_weights())
    inputs = model_testing.random_inputs((16, 16, 3), [0.0, 0.3, 1.0], seed=5)
    np.testing.assert_allclose(
        network(inputs, training=False)["final"], backbone(inputs, training=False), atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"block_settings": ((6, 24, 2, 3),)}, "block_settings"),
        ({"stem_filters": 0}, "stem_filters"),
        ({"head_filters": -1}, "head_filters"),
        ({"image_shape": (7, 8, 3)}, "image_shape"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}="):
        mobilenet_v2.MobileNetV2(**kwargs)
