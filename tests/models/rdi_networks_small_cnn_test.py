"""Tests of rdi_networks.rdi_small_cnn: parameters, outputs, backbone = SmallCNN, exits, saving."""

import os

import keras
import numpy as np
import pytest

from oat_tf import config as config_lib
from oat_tf.layers import dual_batch_norm
from oat_tf.models import multi_exit_network
from oat_tf.models import rdi_networks
from oat_tf.models import registry
from tests import testing
from tests.models import model_testing

SHAPE = (16, 16, 1)
OUTPUTS = ("exit_1", "exit_2", "final")


def _tiny(variant, **kwargs):
    args = dict(
        filters=(4, 8),
        hidden_units=8,
        exit_conv_filters=4,
        exit_hidden_units=8,
        image_shape=SHAPE,
        encoder=model_testing.TINY_ENCODER,
    )
    args.update(kwargs)
    return rdi_networks.rdi_small_cnn(variant=variant, **args)


def test_plain_parameter_count_closed_form():
    model = rdi_networks.rdi_small_cnn(variant="plain")  # The paper's network: no BN.
    # Backbone: 28 → conv 26 → conv 24 → pool 12 → conv 10 → conv 8 → pool 4.
    backbone = (
        (9 * 1 * 32 + 32)
        + (9 * 32 * 32 + 32)
        + (9 * 32 * 64 + 64)
        + (9 * 64 * 64 + 64)
        + (4 * 4 * 64 * 200 + 200)
        + (200 * 200 + 200)
        + (200 * 10 + 10)
    )
    # Exit 1 on 26×26×32: conv 3×3 stride 2 → 12×12×16 → pool → 6×6×16.
    exit1 = (9 * 32 * 16 + 16) + (6 * 6 * 16 * 200 + 200) + (200 * 200 + 200) + (200 * 10 + 10)
    # Exit 2 on 10×10×64: pool → 5×5×64.
    exit2 = (5 * 5 * 64 * 200 + 200) + (200 * 200 + 200) + (200 * 10 + 10)
    assert model.count_params() == model_testing.trainable_count(model)
    assert model.count_params() == backbone + exit1 + exit2 == 836_846
    assert not any(branch.use_batch_norm for branch in model.exits)
    assert not any(
        isinstance(layer, (keras.layers.BatchNormalization, dual_batch_norm.DualBatchNormalization))
        for layer in model.layers
    )


def test_paper_structure_shapes():
    model = rdi_networks.rdi_small_cnn(variant="oat")
    assert all(branch.use_batch_norm for branch in model.exits)
    assert model.exit_feature_layers == ("block1_relu1", "block2_relu1")
    assert model.get_layer("block1_relu1").output.shape == (None, 26, 26, 32)
    assert model.get_layer("block2_relu1").output.shape == (None, 10, 10, 64)
    exit_conv = model.get_layer("exit1_conv")
    assert (exit_conv.filters, exit_conv.kernel_size, exit_conv.strides) == (16, (3, 3), (2, 2))
    assert exit_conv.padding == "valid"
    assert model.get_layer("exit1_pool").output.shape == (None, 6, 6, 16)
    assert model.get_layer("exit2_pool").output.shape == (None, 5, 5, 64)
    with pytest.raises(ValueError):
        model.get_layer("exit2_conv")
    for prefix in ("exit1", "exit2"):
        assert model.get_layer(f"{prefix}_fc1").units == 200
        assert model.get_layer(f"{prefix}_fc1_dropout").rate == 0.5
        assert model.get_layer(f"{prefix}_fc2").units == 200
        assert model.get_layer(f"{prefix}_logits").units == 10
        # BN + FiLM everywhere in the OAT variant, exits included.
        for name in ("fc1_bn", "fc1_film", "fc2_bn", "fc2_film"):
            model.get_layer(f"{prefix}_{name}")
    model.get_layer("exit1_conv_film")


@pytest.mark.parametrize("variant", model_testing.VARIANTS)
def test_outputs_are_a_dict_of_logits(variant):
    model = _tiny(variant)
    inputs = model_testing.random_inputs(SHAPE, [0.0, 0.3, 1.0])
    for training in (False, True):
        outputs = model(inputs, training=training)
        assert sorted(outputs) == sorted(OUTPUTS)
        assert all(outputs[name].shape == (3, 10) for name in OUTPUTS)


@pytest.mark.parametrize("variant", model_testing.VARIANTS)
def test_final_output_is_the_small_cnn_backbone(variant):
    # Same layer names as SmallCNN: its weights load by name and the final
    # output is SmallCNN's logits.
    use_batch_norm = variant != "plain"
    model = _tiny(variant, use_batch_norm=use_batch_norm)
    backbone = model_testing.tiny_model("small_cnn", variant, use_batch_norm=use_batch_norm)
    model_testing.randomize_normalizations(backbone, seed=1)
    backbone_layers = [layer for layer in backbone.layers if layer.weights]
    for layer in backbone_layers:
        model.get_layer(layer.name).set_weights(layer.get_weights())
    inputs = model_testing.random_inputs(SHAPE, [0.0, 0.2, 1.0, 0.4], seed=3)
    np.testing.assert_allclose(
        model(inputs)["final"], backbone(inputs), atol=1e-5
    )
    # The exits add weights but no backbone layer is missing.
    assert {layer.name for layer in backbone_layers} <= {layer.name for layer in model.layers}


def test_oat_exit_normalisations_route_lambda_zero_to_the_clean_statistics():
    model = _tiny("oat", dropout=0.0)
    exit_norms = [
        layer
        for layer in model.layers
        if layer.name.startswith("exit")
        and isinstance(layer, dual_batch_norm.DualBatchNormalization)
    ]
    assert len(exit_norms) == 5  # exit 1: conv, fc1, fc2; exit 2: fc1, fc2.

    def moving_means():
        return [layer.moving_mean.numpy().copy() for layer in exit_norms]

    before = moving_means()
    model(model_testing.random_inputs(SHAPE, [0.0] * 4, seed=1), training=True)
    clean_step = moving_means()
    for old, new in zip(before, clean_step):
        assert not np.allclose(old[0], new[0])  # Clean statistics (λ = 0) move...
        np.testing.assert_array_equal(old[1], new[1])  # ...adversarial ones do not.
    model(model_testing.random_inputs(SHAPE, [0.3, 1.0, 0.5, 0.1], seed=2), training=True)
    adversarial_step = moving_means()
    for old, new in zip(clean_step, adversarial_step):
        np.testing.assert_array_equal(old[0], new[0])
        assert not np.allclose(old[1], new[1])


@pytest.mark.parametrize("variant", model_testing.VARIANTS)
def test_keras_save_round_trip(variant, tmp_path):
    model = _tiny(variant)
    model_testing.randomize_normalizations(model, seed=4)
    inputs = model_testing.random_inputs(SHAPE, [0.0, 0.3, 1.0, 0.15], seed=1)
    expected = model(inputs, training=False)
    path = os.path.join(tmp_path, f"{variant}.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is multi_exit_network.MultiExitNetwork
    assert restored.get_config() == model.get_config()
    assert restored.exit_feature_layers == model.exit_feature_layers
    testing.assert_weights_equal(testing.weights_by_path(model), testing.weights_by_path(restored))
    outputs = restored(inputs, training=False)
    for name in OUTPUTS:
        np.testing.assert_allclose(outputs[name], expected[name], atol=1e-6)


def test_registry_builds_it_from_a_model_config():
    model_config = config_lib.ModelConfig(
        architecture="rdi_small_cnn", variant="oat", num_classes=7, input_shape=SHAPE
    )
    model = registry.build_model(
        model_config, filters=(4, 8), hidden_units=8, exit_conv_filters=4, exit_hidden_units=8
    )
    assert type(model) is multi_exit_network.MultiExitNetwork
    assert model.variant == "oat" and model.num_classes == 7
    outputs = model(model_testing.random_inputs(SHAPE, [0.0, 1.0]))
    assert all(outputs[name].shape == (2, 7) for name in OUTPUTS)
    with pytest.raises(ValueError, match="slimmable"):
        registry.parse_architecture("rdi_small_cnn", slimmable=True)


def test_exit_dropout_defaults_to_the_backbone_dropout():
    model = _tiny("plain", dropout=0.3)
    assert [branch.dropout for branch in model.exits] == [0.3, 0.3]
    assert model.get_layer("exit2_fc1_dropout").rate == 0.3
    model = _tiny("plain", dropout=0.3, exit_dropout=0.0)
    with pytest.raises(ValueError):
        model.get_layer("exit1_fc1_dropout")


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"filters": (4, 8, 8)}, "filters"),
        ({"filters": (4, 0)}, "filters"),
        ({"hidden_units": 0}, "hidden_units"),
        ({"exit_conv_filters": 0}, "exit_conv_filters"),
        ({"exit_hidden_units": 0}, "exit_hidden_units"),
        ({"num_classes": 0}, "num_classes"),
        ({"dropout": 1.0}, "dropout"),
        ({"exit_dropout": -0.1}, "exit_dropout"),
        ({"variant": "mixture_bn"}, "variant"),
        ({"variant": "oat", "use_batch_norm": False}, "use_batch_norm"),
        ({"image_shape": (15, 16, 1)}, "image_shape"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    args = {"variant": "plain", **kwargs}
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}="):
        _tiny(**args)



@pytest.mark.parametrize("variant", ["plain", "oat"])
def test_a_checkpoint_written_before_the_backbone_was_tapped_still_loads(variant):
    # testdata/rdi_small_cnn_<variant> was written by the class at 390536a, which
    # built the exits inside the backbone's loop; the class now taps SmallCNN's
    # graph by layer name. Every variable must load (same checkpoint keys) and
    # the outputs must be the ones that class computed.
    keras.utils.set_random_seed(5)  # Other initial weights than the writer's.
    model = rdi_networks.rdi_small_cnn(
        variant=variant,
        encoder=model_testing.FIXTURE_ENCODER if variant == "oat" else None,
        filters=(4, 8),
        hidden_units=16,
        exit_conv_filters=4,
        exit_hidden_units=16,
    )
    model_testing.assert_restores_fixture(
        model, f"rdi_small_cnn_{variant}", "rdi_small_cnn_outputs.npz", prefix=variant
    )
