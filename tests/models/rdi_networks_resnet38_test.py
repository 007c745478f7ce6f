"""Tests of rdi_networks.rdi_resnet38 (RDI-ResNet-38): backbone size and MACs, exits, variants, saving, stages."""

import os

import keras
import numpy as np
import pytest

from oat_tf.layers import dual_batch_norm
from oat_tf.layers import film
from oat_tf.models import flops
from oat_tf.models import multi_exit
from oat_tf.models import multi_exit_network
from oat_tf.models import rdi_networks
from tests import testing
from tests.models import model_testing

OUTPUTS = ("exit_1", "exit_2", "exit_3", "exit_4", "exit_5", "exit_6", "final")
TINY_SHAPE = (24, 24, 3)


def _tiny(variant, **kwargs):
    args = dict(
        stage_filters=(4, 8, 8),
        blocks_per_stage=2,
        exit_filters=(4, 4, 8),
        image_shape=TINY_SHAPE,
        encoder=model_testing.TINY_ENCODER,
    )
    args.update(kwargs)
    return rdi_networks.rdi_resnet38(variant=variant, **args)


@pytest.fixture(scope="module")
def standard():
    return rdi_networks.rdi_resnet38()


def _is_exit_layer(layer):
    return layer.name.startswith("exit")


def test_standard_backbone_parameter_count_closed_form(standard):
    # Hand count of the CIFAR ResNet-38 of the reference code (BN: γ and β).
    stem = 9 * 3 * 16 + 2 * 16
    stage1 = 6 * (9 * 16 * 16 + 2 * 16 + 9 * 16 * 16 + 2 * 16)
    stage2 = (9 * 16 * 32 + 2 * 32 + 9 * 32 * 32 + 2 * 32) + (16 * 32 + 2 * 32)
    stage2 += 5 * (2 * (9 * 32 * 32 + 2 * 32))
    stage3 = (9 * 32 * 64 + 2 * 64 + 9 * 64 * 64 + 2 * 64) + (32 * 64 + 2 * 64)
    stage3 += 5 * (2 * (9 * 64 * 64 + 2 * 64))
    classifier = 64 * 10 + 10
    expected = stem + stage1 + stage2 + stage3 + classifier
    assert expected == 564_122
    backbone = sum(
        model_testing.trainable_count(layer)
        for layer in standard.layers
        if not _is_exit_layer(layer)
    )
    assert backbone == expected
    # Exits: conv (no bias) + BN + logits, 32/32/64 filters on 16/32/64 channels.
    exits = 2 * (
        (9 * 16 * 32 + 2 * 32 + 32 * 10 + 10)
        + (9 * 32 * 32 + 2 * 32 + 32 * 10 + 10)
        + (9 * 64 * 64 + 2 * 64 + 64 * 10 + 10)
    )
    assert model_testing.trainable_count(standard) == expected + exits
    # 6n + 2 weighted layers on the main path: 37 convolutions and one dense layer.
    convs = [
        layer
        for layer in standard.layers
        if isinstance(layer, keras.layers.Conv2D)
        and not _is_exit_layer(layer)
        and not layer.name.endswith("_shortcut_conv")
    ]
    assert len(convs) == 37
    assert standard.name == "rdi_resnet38_plain"


def test_standard_backbone_macs_match_the_paper(standard):
    # Convolution MACs by hand: stem, then 12 convolutions per stage (+ shortcut).
    stem = 9 * 3 * 16 * 32 * 32
    stage1 = 12 * 9 * 16 * 16 * 32 * 32
    stage2 = (9 * 16 * 32 + 11 * 9 * 32 * 32 + 16 * 32) * 16 * 16
    stage3 = (9 * 32 * 64 + 11 * 9 * 64 * 64 + 32 * 64) * 8 * 8
    conv = stem + stage1 + stage2 + stage3
    assert conv == 83_279_872
    # The paper's "79.42 MFLOPs": convolution MACs in units of 2^20.
    assert int(conv / 2**20 * 100) == 7942
    result = flops.count_flops(standard)
    backbone_conv = sum(
        macs
        for name, macs in result["per_layer"].items()
        if "conv" in name and not name.startswith("exit")
    )
    assert backbone_conv == conv
    # Whole backbone (thop: conv + BN + dense), without any exit head.
    bn = 2 * (16 * 32 * 32 * 13 + 32 * 16 * 16 * 13 + 64 * 8 * 8 * 13)
    assert multi_exit.backbone_macs(standard) == conv + bn + 64 * 10


@pytest.mark.parametrize("variant", ["plain", "oat"])
def test_six_exit_branches_cost_under_two_percent_of_the_backbone(standard, variant):
    model = standard if variant == "plain" else rdi_networks.rdi_resnet38(variant=variant)
    backbone = multi_exit.backbone_macs(model)
    costs = multi_exit.exit_macs(model)
    assert tuple(costs) == OUTPUTS
    heads = costs["final"] - backbone
    assert heads == flops.count_flops(model)["macs"] - backbone
    assert 0 < heads < 0.02 * backbone
    values = list(costs.values())
    assert all(a < b for a, b in zip(values, values[1:]))
    if variant == "plain":
        # Per exit (pool, conv, BN, logits): hand counts of the module docstring.
        per_head = [
            9 * 16 * 32 * 7 * 7 + 2 * 32 * 7 * 7 + 32 * 10,
            9 * 32 * 32 * 3 * 3 + 2 * 32 * 3 * 3 + 32 * 10,
            9 * 64 * 64 * 2 * 2 + 2 * 64 * 2 * 2 + 64 * 10,
        ]
        assert heads == 2 * sum(per_head)


def test_exits_follow_blocks_two_and_five_of_every_stage(standard):
    assert standard.exit_feature_layers == tuple(
        f"stage{s}_block{b}_out_relu" for s in (1, 2, 3) for b in (2, 5)
    )
    assert rdi_networks.resnet_default_exit_blocks(6) == (2, 5)
    shapes = [standard.get_layer(name).output.shape[1:] for name in standard.exit_feature_layers]
    assert shapes == [(32, 32, 16)] * 2 + [(16, 16, 32)] * 2 + [(8, 8, 64)] * 2
    assert standard.get_layer("exit1_conv").strides == (2, 2)
    assert standard.get_layer("exit6_conv").strides == (1, 1)


@pytest.mark.parametrize("variant", model_testing.VARIANTS)
def test_output_keys_and_shapes(variant):
    model = _tiny(variant, num_classes=7)
    assert multi_exit.output_names(model) == OUTPUTS
    inputs = model_testing.random_inputs(TINY_SHAPE, [0.0, 0.3, 1.0])
    for training in (False, True):
        outputs = model(inputs, training=training)
        assert tuple(outputs) == OUTPUTS
        for name in OUTPUTS:
            assert outputs[name].shape == (3, 7)
            assert np.all(np.isfinite(outputs[name]))
    assert model.exit_feature_layers == tuple(
        f"stage{s}_block{b}_out_relu" for s in (1, 2, 3) for b in (1, 2)
    )


def test_oat_exit_branches_are_conditioned():
    model = _tiny("oat")
    names = {layer.name: layer for layer in model.layers}
    for index in range(1, 7):
        assert isinstance(names[f"exit{index}_conv_bn"], dual_batch_norm.DualBatchNormalization)
        assert isinstance(names[f"exit{index}_conv_film"], film.FiLM)
    single = {layer.name: layer for layer in _tiny("oat_single_bn").layers}
    assert isinstance(single["exit1_conv_bn"], keras.layers.BatchNormalization)
    assert isinstance(single["exit1_conv_film"], film.FiLM)


def test_oat_lambda_zero_and_one_differ_and_route_the_batch_norms():
    keras.utils.set_random_seed(0)  # The weights, so that the test does not depend on the test order.
    model = _tiny("oat")
    model_testing.randomize_normalizations(model, seed=3)
    inputs = model_testing.random_inputs(TINY_SHAPE, [0.0, 1.0], seed=4)
    inputs["image"][1] = inputs["image"][0]
    outputs = model(inputs, training=False)
    for name in OUTPUTS:
        # Deep exits of random weights differ by as little as 5e-5, still 100× float32 rounding;
        # one route for both λ would give equal outputs.
        assert np.abs(outputs[name][0] - outputs[name][1]).max() > 1e-6, name

    # A clean-only training batch moves the clean statistics only.
    layers = [model.get_layer(name) for name in ("stem_bn", "exit1_conv_bn", "exit6_conv_bn")]
    before = [layer.moving_mean.numpy().copy() for layer in layers]
    clean = model_testing.random_inputs(TINY_SHAPE, [0.0, 0.0, 0.0], seed=5)
    model(clean, training=True)
    for layer, old in zip(layers, before):
        new = layer.moving_mean.numpy()
        assert not np.allclose(new[dual_batch_norm.CLEAN], old[dual_batch_norm.CLEAN]), layer.name
        np.testing.assert_array_equal(
            new[dual_batch_norm.ADVERSARIAL], old[dual_batch_norm.ADVERSARIAL]
        )


@pytest.mark.parametrize("variant", model_testing.VARIANTS)
def test_keras_save_round_trip(variant, tmp_path):
    model = _tiny(variant)
    model_testing.randomize_normalizations(model, seed=1)
    inputs = model_testing.random_inputs(TINY_SHAPE, [0.0, 0.3, 1.0], seed=1)
    expected = model(inputs, training=False)
    path = os.path.join(tmp_path, f"{variant}.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is multi_exit_network.MultiExitNetwork
    assert restored.get_config() == model.get_config()
    assert restored.exit_feature_layers == model.exit_feature_layers
    testing.assert_weights_equal(testing.weights_by_path(model), testing.weights_by_path(restored))
    actual = restored(inputs, training=False)
    for name in OUTPUTS:
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-5, err_msg=name)


def test_config_round_trip_with_explicit_exits():
    model = _tiny("plain", blocks_per_stage=3, exit_blocks=(1, 3), exit_filters=(2, 2, 2))
    rebuilt = testing.assert_config_round_trip(model)
    assert rebuilt.exit_feature_layers == model.exit_feature_layers
    assert model.exit_feature_layers[:2] == ("stage1_block1_out_relu", "stage1_block3_out_relu")
    assert model.name == "rdi_resnet20_plain"


def test_chained_stage_views_equal_the_full_model():
    model = _tiny("oat")
    model_testing.randomize_normalizations(model, seed=6)
    inputs = model_testing.random_inputs(TINY_SHAPE, [0.0, 0.2, 1.0], seed=7)
    expected = model(inputs, training=False)
    views = multi_exit.stage_views(model)
    assert len(views) == len(OUTPUTS)
    features = inputs["image"]
    for view, name in zip(views, OUTPUTS):
        features, logits = view(features, inputs["lambda"])
        np.testing.assert_allclose(logits, expected[name], atol=1e-5, err_msg=name)
    assert features is None


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"stage_filters": (16, 32)}, "stage_filters"),
        ({"stage_filters": (16, 0, 64)}, "stage_filters"),
        ({"blocks_per_stage": 0}, "blocks_per_stage"),
        ({"blocks_per_stage": 2.0}, "blocks_per_stage"),
        ({"exit_blocks": (5, 2)}, "exit_blocks"),
        ({"exit_blocks": (2, 7)}, "exit_blocks"),
        ({"exit_filters": (8, 8)}, "exit_filters"),
        ({"num_classes": 0}, "num_classes"),
        ({"variant": "mixture_bn"}, "variant"),
        ({"variant": "oats"}, "variant"),
        ({"image_shape": (16, 32, 3)}, "image_shape"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}="):
        rdi_networks.rdi_resnet38(**kwargs)


def test_a_checkpoint_written_before_the_backbone_was_tapped_still_loads():
    # testdata/rdi_resnet_oat was written by the class at 390536a (exits built
    # inside the stage loop); the class now taps ResNet's graph by layer name.
    keras.utils.set_random_seed(7)  # Other initial weights than the writer's.
    model = rdi_networks.rdi_resnet38(
        variant="oat",
        encoder=model_testing.FIXTURE_ENCODER,
        image_shape=(24, 24, 3),
        stage_filters=(4, 4, 8),
        blocks_per_stage=2,
        exit_blocks=(1,),
    )
    model_testing.assert_restores_fixture(model, "rdi_resnet_oat", "rdi_resnet_outputs.npz", prefix="oat")
