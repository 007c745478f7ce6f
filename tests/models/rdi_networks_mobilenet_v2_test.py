"""Tests of rdi_networks.rdi_mobilenet_v2 (RDI-MobileNetV2): backbone size and MACs, exits, variants, saving, stages."""

import os

import keras
import numpy as np
import pytest

from oat_tf.layers import dual_batch_norm
from oat_tf.layers import film
from oat_tf.models import flops
from oat_tf.models import mobilenet_v2
from oat_tf.models import multi_exit
from oat_tf.models import multi_exit_network
from oat_tf.models import rdi_networks
from tests import testing
from tests.models import model_testing

OUTPUTS = ("exit_1", "exit_2", "final")
TINY_SHAPE = (16, 16, 3)
# Blocks: 1 (4 ch, 16×16), 2 (8, stride 2 → 8×8), 3 (8, identity shortcut),
# 4 (12, 1×1 shortcut), 5 (16, stride 2 → 4×4).
TINY_SETTINGS = ((1, 4, 1, 1), (2, 8, 2, 2), (2, 12, 1, 1), (2, 16, 1, 2))


def _tiny(variant, **kwargs):
    args = dict(
        block_settings=TINY_SETTINGS,
        stem_filters=4,
        head_filters=16,
        exit_blocks=(2, 4),
        exit_filters=(4, 8),
        image_shape=TINY_SHAPE,
        encoder=model_testing.TINY_ENCODER,
    )
    args.update(kwargs)
    return rdi_networks.rdi_mobilenet_v2(variant=variant, **args)


@pytest.fixture(scope="module")
def standard():
    return rdi_networks.rdi_mobilenet_v2()


def _blocks(settings=mobilenet_v2.DEFAULT_BLOCK_SETTINGS):
    """(C_in, expansion, C_out, stride) of every block, by hand from the groups."""
    blocks, channels = [], 32
    for expansion, out, count, stride in settings:
        for index in range(count):
            blocks.append((channels, expansion, out, stride if index == 0 else 1))
            channels = out
    return blocks


def test_standard_backbone_parameter_count_matches_kuangliu(standard):
    total = 9 * 3 * 32 + 2 * 32  # stem conv + BN
    for c_in, expansion, c_out, stride in _blocks():
        hidden = expansion * c_in
        total += c_in * hidden + 2 * hidden  # 1×1 expansion + BN
        total += 9 * hidden + 2 * hidden  # 3×3 depthwise + BN
        total += hidden * c_out + 2 * c_out  # 1×1 projection + BN
        if stride == 1 and c_in != c_out:
            total += c_in * c_out + 2 * c_out  # 1×1 shortcut + BN
    total += 320 * 1280 + 2 * 1280 + 1280 * 10 + 10  # head conv + BN, classifier
    assert total == 2_296_922  # kuangliu pytorch-cifar MobileNetV2, 10 classes
    backbone = sum(
        model_testing.trainable_count(layer)
        for layer in standard.layers
        if not layer.name.startswith("exit")
    )
    assert backbone == total
    exits = (9 * 32 * 64 + 2 * 64 + 64 * 10 + 10) + (9 * 96 * 128 + 2 * 128 + 128 * 10 + 10)
    assert model_testing.trainable_count(standard) == total + exits
    assert len(_blocks()) == 17


def test_standard_backbone_macs_match_the_paper(standard):
    size, conv, bn = 32, 9 * 3 * 32 * 32 * 32, 2 * 32 * 32 * 32
    for c_in, expansion, c_out, stride in _blocks():
        hidden = expansion * c_in
        conv += c_in * hidden * size * size
        bn += 2 * hidden * size * size
        size //= stride
        conv += (9 * hidden + hidden * c_out) * size * size
        bn += 2 * (hidden + c_out) * size * size
        if stride == 1 and c_in != c_out:
            conv += c_in * c_out * size * size
            bn += 2 * c_out * size * size
    assert size == 4
    conv += 320 * 1280 * 4 * 4
    bn += 2 * 1280 * 4 * 4
    assert conv == 91_142_144
    # The paper's "86.91 MFLOPs": convolution MACs in units of 2^20 (86.9199…, truncated).
    assert int(conv / 2**20 * 100) == 8691
    result = flops.count_flops(standard)
    backbone_conv = sum(
        macs
        for name, macs in result["per_layer"].items()
        if "conv" in name and not name.startswith("exit")
    )
    assert backbone_conv == conv
    assert multi_exit.backbone_macs(standard) == conv + bn + 1280 * 10


@pytest.mark.parametrize("variant", ["plain", "oat"])
def test_two_exit_branches_cost_under_two_percent_of_the_backbone(standard, variant):
    model = standard if variant == "plain" else rdi_networks.rdi_mobilenet_v2(variant=variant)
    backbone = multi_exit.backbone_macs(model)
    costs = multi_exit.exit_macs(model)
    assert tuple(costs) == OUTPUTS
    heads = costs["final"] - backbone
    assert heads == flops.count_flops(model)["macs"] - backbone
    assert 0 < heads < 0.02 * backbone
    assert costs["exit_1"] < costs["exit_2"] < costs["final"]
    if variant == "plain":
        exit_1 = 9 * 32 * 64 * 6 * 6 + 2 * 64 * 6 * 6 + 64 * 10  # 16×16 → pool 8×8 → 6×6
        exit_2 = 9 * 96 * 128 * 2 * 2 + 2 * 128 * 2 * 2 + 128 * 10  # 8×8 → pool 4×4 → 2×2
        assert heads == exit_1 + exit_2


def test_exits_follow_blocks_six_and_thirteen(standard):
    assert standard.exit_feature_layers == ("block6_out", "block13_out")
    shapes = [standard.get_layer(name).output.shape[1:] for name in standard.exit_feature_layers]
    assert shapes == [(16, 16, 32), (8, 8, 96)]
    # Stride 1 in the stem and the second group: 32×32 until block 3.
    assert standard.get_layer("block3_out").output.shape[1:] == (32, 32, 24)
    assert standard.get_layer("block17_out").output.shape[1:] == (4, 4, 320)
    assert standard.name == "rdi_mobilenet_v2_plain"


def test_block_structure():
    model = _tiny("oat")
    names = {layer.name for layer in model.layers}
    assert "block2_add" not in names  # stride 2: no shortcut
    assert "block3_add" in names and "block3_shortcut_conv" not in names  # identity
    assert "block4_shortcut_conv" in names and "block4_shortcut_bn" in names
    assert "block4_shortcut_film" not in names
    assert model.get_layer("block2_conv2").strides == (2, 2)
    assert isinstance(model.get_layer("block2_conv2"), keras.layers.DepthwiseConv2D)
    assert model.get_layer("block1_conv1").output.shape[-1] == 4  # expansion 1
    assert model.get_layer("block3_conv1").output.shape[-1] == 16  # expansion 2
    # FiLM after the stem, the head and the three BNs of each of the 5 blocks, plus the exits.
    films = [layer for layer in model.layers if isinstance(layer, film.FiLM)]
    assert len(films) == 1 + 1 + 3 * 5 + 2
    assert isinstance(model.get_layer("exit2_conv_bn"), dual_batch_norm.DualBatchNormalization)


@pytest.mark.parametrize("variant", model_testing.VARIANTS)
def test_output_keys_and_shapes(variant):
    model = _tiny(variant, num_classes=5)
    assert multi_exit.output_names(model) == OUTPUTS
    inputs = model_testing.random_inputs(TINY_SHAPE, [0.0, 0.3, 1.0])
    for training in (False, True):
        outputs = model(inputs, training=training)
        assert tuple(outputs) == OUTPUTS
        for name in OUTPUTS:
            assert outputs[name].shape == (3, 5)
            assert np.all(np.isfinite(outputs[name]))


def test_plain_ignores_lambda():
    model = _tiny("plain")
    inputs = model_testing.random_inputs(TINY_SHAPE, [0.0, 1.0], seed=2)
    inputs["image"][1] = inputs["image"][0]
    outputs = model(inputs, training=False)
    for name in OUTPUTS:
        np.testing.assert_allclose(outputs[name][0], outputs[name][1], atol=1e-6)


def test_oat_lambda_zero_and_one_differ_and_route_the_batch_norms():
    model = _tiny("oat")
    model_testing.randomize_normalizations(model, seed=3)
    inputs = model_testing.random_inputs(TINY_SHAPE, [0.0, 1.0], seed=4)
    inputs["image"][1] = inputs["image"][0]
    outputs = model(inputs, training=False)
    for name in OUTPUTS:
        assert not np.allclose(outputs[name][0], outputs[name][1], atol=1e-4), name

    # An adversarial-only training batch moves the adversarial statistics only.
    layers = [model.get_layer(name) for name in ("block2_bn2", "exit1_conv_bn", "head_bn")]
    before = [layer.moving_variance.numpy().copy() for layer in layers]
    adversarial = model_testing.random_inputs(TINY_SHAPE, [1.0, 0.5, 0.2], seed=5)
    model(adversarial, training=True)
    for layer, old in zip(layers, before):
        new = layer.moving_variance.numpy()
        np.testing.assert_array_equal(new[dual_batch_norm.CLEAN], old[dual_batch_norm.CLEAN])
        assert not np.allclose(
            new[dual_batch_norm.ADVERSARIAL], old[dual_batch_norm.ADVERSARIAL]
        ), layer.name


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


def test_xla_forward_pass_equals_eager():
    model = _tiny("oat")
    inputs = model_testing.random_inputs(TINY_SHAPE, [0.0, 0.3, 1.0], seed=2)
    eager = model(inputs, training=False)
    compiled = testing.call_in_graph(lambda x: model(x, training=False), inputs, jit_compile=True)
    for name in OUTPUTS:
        np.testing.assert_allclose(compiled[name], eager[name], atol=1e-5, err_msg=name)


def test_config_round_trip_with_three_exits():
    model = _tiny("plain", exit_blocks=(1, 3, 5), exit_filters=(2, 2, 2), image_shape=(24, 24, 3))
    rebuilt = testing.assert_config_round_trip(model)
    assert rebuilt.exit_feature_layers == ("block1_out", "block3_out", "block5_out")
    assert multi_exit.output_names(rebuilt) == ("exit_1", "exit_2", "exit_3", "final")


def test_chained_stage_views_equal_the_full_model():
    model = _tiny("oat_single_bn")
    model_testing.randomize_normalizations(model, seed=6)
    inputs = model_testing.random_inputs(TINY_SHAPE, [0.0, 0.2, 1.0], seed=7)
    expected = model(inputs, training=False)
    features = inputs["image"]
    for view, name in zip(multi_exit.stage_views(model), OUTPUTS):
        features, logits = view(features, inputs["lambda"])
        np.testing.assert_allclose(logits, expected[name], atol=1e-5, err_msg=name)
    assert features is None


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"block_settings": ((6, 24, 2, 3),)}, "block_settings"),
        ({"block_settings": ((6, 24, 2),)}, "block_settings"),
        ({"block_settings": ()}, "block_settings"),
        ({"stem_filters": 0}, "stem_filters"),
        ({"head_filters": -1}, "head_filters"),
        ({"exit_blocks": (6, 18)}, "exit_blocks"),
        ({"exit_blocks": (6, 6)}, "exit_blocks"),
        ({"exit_filters": (64,)}, "exit_filters"),
        ({"num_classes": 0}, "num_classes"),
        ({"variant": "mixture_bn"}, "variant"),
        ({"image_shape": (16, 16, 3)}, "image_shape"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}="):
        rdi_networks.rdi_mobilenet_v2(**kwargs)


def test_a_checkpoint_written_before_the_backbone_was_tapped_still_loads():
    # testdata/rdi_mobilenet_v2_oat was written by the class at 1d2fe1a (exits
    # built inside the block loop); the class now taps apply_mobilenet_v2's
    # graph by layer name. Every variable must load and the outputs match.
    keras.utils.set_random_seed(7)  # Other initial weights than the writer's.
    model = rdi_networks.rdi_mobilenet_v2(
        variant="oat",
        encoder=model_testing.FIXTURE_ENCODER,
        image_shape=(16, 16, 3),
        block_settings=((1, 4, 1, 1), (2, 8, 2, 2)),
        stem_filters=4,
        head_filters=8,
        exit_blocks=(1, 2),
        exit_filters=(4, 4),
    )
    model_testing.assert_restores_fixture(
        model, "rdi_mobilenet_v2_oat", "rdi_mobilenet_v2_outputs.npz", prefix="oat"
    )
