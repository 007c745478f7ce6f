"""Tests of SlimmableResNet: each width against a ResNet from its weights, saving, checkpoints."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf.layers import slimmable
from oat_tf.models import resnet
from oat_tf.models import slimmable_resnet
from tests import testing
from tests.models import model_testing

LAMBDAS = [0.0, 0.3, 1.0, 0.0, 0.15]
SHAPE = (8, 8, 3)
FILTERS = (4, 8, 8, 8)


def _network(variant="oats", **kwargs):
    keras.utils.set_random_seed(0)
    network = model_testing.tiny_slimmable_model("resnet", variant, **kwargs)
    model_testing.randomize_normalizations(network)
    return network


@pytest.mark.parametrize("variant", model_testing.SLIMMABLE_VARIANTS)
@pytest.mark.parametrize("width", [1.0, 0.75, 0.5])
def test_each_width_equals_a_resnet_built_from_its_weights(variant, width):
    """Width 1.0 is ResNet with the same weights; width α is ResNet with α·C channels."""
    network = _network(variant)
    reference = resnet.ResNet(
        variant=model_testing.MATCHING_VARIANT[variant],
        encoder=model_testing.TINY_ENCODER,
        stage_blocks=(1, 2, 1, 1),
        stage_filters=tuple(slimmable.slimmed_channels(f, width) for f in FILTERS),
        image_shape=SHAPE,
    )
    model_testing.copy_width_weights(network, width, reference)
    inputs = model_testing.random_inputs(SHAPE, LAMBDAS, seed=1)
    for training in (False, True):
        np.testing.assert_allclose(
            network(inputs, training=training, width=width).numpy(),
            reference(inputs, training=training).numpy(),
            atol=2e-5,
            err_msg=f"training={training}",
        )


def test_layer_names_follow_resnet_and_shortcuts_are_unmodulated():
    network = _network("oats")
    names = {layer.name for layer in network.layers}
    plain = resnet.ResNet(
        variant="oat", encoder=model_testing.TINY_ENCODER, stage_blocks=(1, 2, 1, 1),
        stage_filters=FILTERS, image_shape=SHAPE,
    )
    weighted = {layer.name for layer in plain.layers if layer.weights}
    assert weighted <= names
    assert "stage2_block1_shortcut_bn" in names and "stage2_block2_shortcut_conv" not in names
    assert not any(name.endswith("shortcut_film") for name in names)


def test_a_training_call_moves_only_its_own_width_statistics():
    network = _network("oats")
    inputs = model_testing.random_inputs(SHAPE, LAMBDAS, seed=2)
    before = testing.weights_by_path(network)
    network(inputs, training=True, width=0.5)
    after = testing.weights_by_path(network)
    moved = {p for p in before if not np.array_equal(before[p], after[p])}
    assert moved and all("/width_0.5/moving_" in p for p in moved)


def test_keras_save_and_checkpoint_round_trips(tmp_path):
    network = _network("oats")
    inputs = model_testing.random_inputs(SHAPE, LAMBDAS, seed=3)
    path = os.path.join(tmp_path, "oats.keras")
    network.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is slimmable_resnet.SlimmableResNet
    assert restored.get_config() == network.get_config()
    for width in network.widths:
        np.testing.assert_allclose(
            restored(inputs, width=width).numpy(), network(inputs, width=width).numpy(), atol=1e-6
        )
    checkpoint = tf.train.Checkpoint(network=network).write(os.path.join(tmp_path, "ckpt"))
    fresh = model_testing.tiny_slimmable_model("resnet", "oats")
    tf.train.Checkpoint(network=fresh).read(checkpoint).assert_existing_objects_matched()
    testing.assert_weights_equal(testing.weights_by_path(network), testing.weights_by_path(fresh))


def test_resnet34_default_widths_and_channels():
    network = slimmable_resnet.SlimmableResNet(depth=34, variant="ats")
    assert network.widths == (0.5, 0.75, 1.0)
    assert network.name == "slimmable_resnet34_ats"
    view = network.width_model(0.75)
    # A shared layer's `.output` is that of its first (full-width) call: read the view's nodes.
    shapes = {
        node.operation.name: tuple(node.outputs[0].shape)
        for nodes in view._nodes_by_depth.values()
        for node in nodes
    }
    assert shapes["stage4_block3_conv2"] == (None, 4, 4, 384)
    assert shapes["stem_conv"] == (None, 32, 32, 48)
    assert view.output.shape == (None, 10)


def test_config_round_trip():
    network = model_testing.tiny_slimmable_model("resnet", "ats", widths=(0.5, 1.0))
    rebuilt = testing.assert_config_round_trip(network)
    assert rebuilt.widths == (0.5, 1.0) and rebuilt.stage_blocks == (1, 2, 1, 1)


@pytest.mark.parametrize("variant", ["oats", "oats_single_bn"])
def test_a_checkpoint_of_the_earlier_class_loads_and_gives_its_outputs(variant):
    # testdata/slimmable_resnet_*: written while the slimmable ResNet had its own
    # forward pass, before it ran `resnet.apply_resnet` through the slimmable kit.
    model = slimmable_resnet.SlimmableResNet(
        variant=variant,
        encoder=model_testing.FIXTURE_ENCODER,
        stage_blocks=(1, 2, 1, 1),
        stage_filters=(4, 8, 8, 8),
        image_shape=(8, 8, 3),
    )
    model_testing.assert_restores_fixture(
        model,
        f"slimmable_resnet_{variant}",
        "slimmable_resnet_outputs.npz",
        prefix=variant.replace("oats_", ""),
        widths=slimmable.DEFAULT_WIDTHS,
    )
