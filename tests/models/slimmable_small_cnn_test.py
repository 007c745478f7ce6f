"""Tests of SlimmableSmallCNN: each width against a SmallCNN from its weights, BN isolation, saving."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf.layers import slimmable
from oat_tf.models import slimmable_small_cnn
from oat_tf.models import small_cnn
from tests import testing
from tests.models import model_testing

LAMBDAS = [0.0, 0.3, 1.0, 0.0, 0.15, 0.4]
SHAPE = (20, 20, 1)


def _network(variant="oats", **kwargs):
    keras.utils.set_random_seed(0)
    network = model_testing.tiny_slimmable_model("small_cnn", variant, **kwargs)
    model_testing.randomize_normalizations(network)
    return network


def _reference(variant, width):
    """The SmallCNN of the matching variant with the channel counts of `width`."""
    filters = tuple(slimmable.slimmed_channels(f, width) for f in (4, 8))
    return small_cnn.SmallCNN(
        variant=model_testing.MATCHING_VARIANT[variant],
        encoder=model_testing.TINY_ENCODER,
        filters=filters,
        hidden_units=slimmable.slimmed_channels(8, width),
        image_shape=SHAPE,
        dropout=0.0,
    )


@pytest.mark.parametrize("variant", model_testing.SLIMMABLE_VARIANTS)
@pytest.mark.parametrize("width", [1.0, 0.75, 0.5])
def test_each_width_equals_a_small_cnn_built_from_its_weights(variant, width):
    """Width 1.0 is SmallCNN with the same weights; width α is SmallCNN with α·C channels."""
    network = _network(variant)
    reference = _reference(variant, width)
    model_testing.copy_width_weights(network, width, reference)
    inputs = model_testing.random_inputs(SHAPE, LAMBDAS, seed=1)
    for training in (False, True):
        np.testing.assert_allclose(
            network(inputs, training=training, width=width).numpy(),
            reference(inputs, training=training).numpy(),
            atol=2e-5,
            err_msg=f"training={training}",
        )


@pytest.mark.parametrize("variant", model_testing.SLIMMABLE_VARIANTS)
def test_width_views_share_the_weights(variant):
    network = _network(variant)
    inputs = model_testing.random_inputs(SHAPE, LAMBDAS, seed=2)
    for width in network.widths:
        view = network.width_model(width)
        assert view is network.width_model(width)  # cached
        assert view.name == f"{network.name}_width_{width}"
        np.testing.assert_allclose(
            view(inputs, training=False).numpy(),
            network(inputs, training=False, width=width).numpy(),
            atol=1e-6,
        )
    # The views add no weights: they are the network's own.
    assert {id(v) for v in network.width_model(0.5).weights} <= {id(v) for v in network.weights}


def test_widths_differ_and_lambda_conditions_only_conditioned_variants():
    inputs = model_testing.random_inputs(SHAPE, [0.3, 0.3], seed=3)
    other = dict(inputs, **{"lambda": np.array([1.0, 1.0], "float32")})
    oats = _network("oats")
    assert not np.allclose(oats(inputs, width=0.5).numpy(), oats(inputs, width=1.0).numpy())
    assert not np.allclose(oats(inputs, width=0.5).numpy(), oats(other, width=0.5).numpy())
    ats = _network("ats")
    np.testing.assert_allclose(ats(inputs, width=0.5).numpy(), ats(other, width=0.5).numpy())
    assert not any("film" in layer.name or "lambda" in layer.name for layer in ats.layers)


@pytest.mark.parametrize("variant", ["oats", "ats"])
def test_a_training_call_moves_only_its_own_width_statistics(variant):
    network = _network(variant)
    inputs = model_testing.random_inputs(SHAPE, LAMBDAS, seed=4)
    for width in network.widths:
        before = testing.weights_by_path(network)
        network(inputs, training=True, width=width)
        after = testing.weights_by_path(network)
        moved = {path for path in before if not np.array_equal(before[path], after[path])}
        statistics = {p for p in before if p.endswith(("moving_mean", "moving_variance"))}
        own = {p for p in statistics if f"/width_{width}/" in p}
        assert moved == own, (width, sorted(moved ^ own)[:5])
        # Inference leaves every statistic alone.
        network(inputs, training=False, width=width)
        testing.assert_weights_equal(after, testing.weights_by_path(network))


def test_dual_routing_per_width_uses_clean_statistics_for_lambda_zero():
    network = _network("oats")
    inputs = model_testing.random_inputs(SHAPE, [0.0, 0.0, 0.3, 1.0], seed=5)
    before = testing.weights_by_path(network)
    inputs["lambda"] = np.array([0.3, 0.3, 0.3, 1.0], "float32")
    network(inputs, training=True, width=0.75)
    after = testing.weights_by_path(network)
    # No λ = 0 sample: the clean group (row 0) of width 0.75 keeps its statistics.
    for path in before:
        if "/width_0.75/moving_" in path:
            np.testing.assert_array_equal(after[path][0], before[path][0])
            assert not np.array_equal(after[path][1], before[path][1])


def test_keras_save_round_trip(tmp_path):
    network = _network("oats")
    inputs = model_testing.random_inputs(SHAPE, LAMBDAS, seed=6)
    path = os.path.join(tmp_path, "oats.keras")
    network.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is slimmable_small_cnn.SlimmableSmallCNN
    assert restored.get_config() == network.get_config()
    testing.assert_weights_equal(testing.weights_by_path(network), testing.weights_by_path(restored))
    for width in network.widths:
        np.testing.assert_allclose(
            restored(inputs, width=width).numpy(), network(inputs, width=width).numpy(), atol=1e-6
        )


def test_checkpoint_round_trip_restores_every_width(tmp_path):
    network = _network("oats")
    path = tf.train.Checkpoint(network=network).write(os.path.join(tmp_path, "ckpt"))
    restored = model_testing.tiny_slimmable_model("small_cnn", "oats")
    status = tf.train.Checkpoint(network=restored).read(path)
    status.assert_existing_objects_matched()
    testing.assert_weights_equal(testing.weights_by_path(network), testing.weights_by_path(restored))
    # Every width's six-BN statistics are in the checkpoint, each under its own name.
    names = [name for name, _ in tf.train.list_variables(path)]
    for index in range(3):
        assert any(f"block1_bn1/norm_{index}/moving_mean" in name for name in names)
    assert len(names) == len(network.weights) + 1  # + the object graph


def test_config_round_trip():
    network = model_testing.tiny_slimmable_model("small_cnn", "oats", widths=(0.25, 1.0), dropout=0.5)
    rebuilt = testing.assert_config_round_trip(network)
    assert rebuilt.widths == (0.25, 1.0) and rebuilt.dropout == 0.5


def test_fc1_is_the_dense_layer_on_flattened_features():
    network = _network("ats")
    fc1 = network.fc1
    assert fc1.kernel.shape == (2, 2, 8, 8) and fc1.padding == "valid"
    # Glorot-uniform limit of a Dense on 2·2·8 = 32 features with 8 units.
    limit = np.sqrt(6.0 / (32 + 8))
    assert np.abs(fc1.kernel.numpy()).max() <= limit


def test_layers_are_built_at_full_width_and_widths_are_checked():
    network = _network("oats")
    assert network.built and network.block1_bn1.channels == 4
    inputs = model_testing.random_inputs(SHAPE, [0.0, 1.0])
    with pytest.raises(ValueError, match="width"):
        network(inputs, width=0.6)
    with pytest.raises(ValueError, match="variant"):
        slimmable_small_cnn.SlimmableSmallCNN(variant="oat")
    with pytest.raises(ValueError, match="widths"):
        slimmable_small_cnn.SlimmableSmallCNN(widths=(0.5, 0.75))


def test_xla_call_matches_eager():
    network = _network("oats")
    inputs = model_testing.random_inputs(SHAPE, LAMBDAS, seed=7)
    for width in (0.5, 1.0):
        compiled = testing.call_in_graph(
            lambda x: network(x, training=False, width=width), inputs, jit_compile=True
        )
        np.testing.assert_allclose(
            compiled.numpy(), network(inputs, training=False, width=width).numpy(), atol=1e-5
        )


def test_a_wider_film_generator_survives_the_config_round_trip():
    encoder = {**model_testing.TINY_ENCODER, "film_hidden_multiplier": 2}
    network = slimmable_small_cnn.SlimmableSmallCNN(
        variant="oats", encoder=encoder, filters=(4, 8), hidden_units=8, image_shape=(20, 20, 1),
        widths=(0.5, 1.0),
    )
    # code -> 2 · 2C hidden units at full width (C = 4 in block 1).
    assert network.block1_film1.hidden_kernel.shape[1] == 2 * 2 * 4
    rebuilt = testing.assert_config_round_trip(network)
    assert rebuilt.block1_film1.hidden_kernel.shape == network.block1_film1.hidden_kernel.shape


@pytest.mark.parametrize("variant", ["oats", "ats"])
def test_a_checkpoint_of_the_earlier_class_loads_and_gives_its_outputs(variant):
    # testdata/slimmable_small_cnn_*: written while the slimmable SmallCNN had its own
    # forward pass, before it ran `small_cnn.apply_small_cnn` through the slimmable kit.
    model = slimmable_small_cnn.SlimmableSmallCNN(
        variant=variant,
        encoder=model_testing.FIXTURE_ENCODER,
        filters=(4, 8),
        hidden_units=16,
        image_shape=(20, 20, 1),
    )
    model_testing.assert_restores_fixture(
        model,
        f"slimmable_small_cnn_{variant}",
        "slimmable_small_cnn_outputs.npz",
        prefix=variant,
        widths=slimmable.DEFAULT_WIDTHS,
    )
