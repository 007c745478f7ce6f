"""Tests of MultiExitNetwork: any backbone, exits on its named features, config, errors."""

import inspect
import os

import keras
import numpy as np
import pytest

from oat_tf.layers import dual_batch_norm
from oat_tf.layers import film
from oat_tf.layers import lambda_encoding
from oat_tf.models import exit_branch
from oat_tf.models import multi_exit
from oat_tf.models import multi_exit_network
from tests import testing
from tests.models import model_testing

# A feature layer of each tiny backbone of `model_testing.tiny_model`.
FEATURE_LAYERS = {
    "resnet": "stage2_block1_out_relu",
    "wide_resnet": "stage2_block1_add",
    "small_cnn": "block2_relu1",
}
SHAPES = {"resnet": (8, 8, 3), "wide_resnet": (8, 8, 3), "small_cnn": (16, 16, 1)}
# Global average pooling straight into the logits: exit = mean(features) @ W + b.
GAP_EXIT = dict(pool_size=None, global_pool=True, hidden_units=(), use_batch_norm=True)


def _network(family, variant, **exit_arguments):
    backbone = model_testing.tiny_model(family, variant)
    branch = exit_branch.ExitBranch(FEATURE_LAYERS[family], **{**GAP_EXIT, **exit_arguments})
    return backbone, multi_exit_network.MultiExitNetwork(backbone, [branch])


def test_exit_branch_defaults_are_apply_exit_branchs():
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(exit_branch.apply_exit_branch).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    branch = exit_branch.ExitBranch("layer")
    assert {name: getattr(branch, name) for name in defaults} == defaults


@pytest.mark.parametrize("family", model_testing.FAMILIES)
@pytest.mark.parametrize("variant", ["plain", "oat"])
def test_any_backbone_gets_an_exit_on_its_named_features(family, variant):
    keras.utils.set_random_seed(1)
    backbone, network = _network(family, variant)
    model_testing.randomize_normalizations(backbone, seed=2)
    assert multi_exit.output_names(network) == ("exit_1", "final")
    assert network.name == f"rdi_{backbone.name}" and network.variant == variant
    assert network.exit_feature_layers == (FEATURE_LAYERS[family],)
    inputs = model_testing.random_inputs(SHAPES[family], [0.0, 0.3, 1.0], seed=3)
    outputs = network(inputs, training=False)
    # "final" is the backbone itself: the same layers and weights.
    np.testing.assert_array_equal(outputs["final"], backbone(inputs, training=False))
    assert {id(layer) for layer in backbone.layers} <= {id(layer) for layer in network.layers}
    # The exit against NumPy: the mean of the tapped features times the logits layer.
    features = keras.Model(backbone.input, backbone.get_layer(FEATURE_LAYERS[family]).output)
    pooled = np.mean(np.asarray(features(inputs, training=False)), axis=(1, 2))
    kernel, bias = network.get_layer("exit1_logits").get_weights()
    np.testing.assert_allclose(outputs["exit_1"], pooled @ kernel + bias, rtol=1e-5, atol=1e-5)
    extra = model_testing.trainable_count(network) - model_testing.trainable_count(backbone)
    assert extra == kernel.size + bias.size


def test_exits_read_the_backbones_conditioning():
    backbone, network = _network("small_cnn", "oat", conv_filters=4)
    assert isinstance(network.get_layer("exit1_conv_bn"), dual_batch_norm.DualBatchNormalization)
    assert isinstance(network.get_layer("exit1_conv_film"), film.FiLM)
    # One λ encoder and one route, the backbone's: the exit adds none of its own.
    encoders = [layer for layer in network.layers if isinstance(layer, lambda_encoding.LambdaEncoder)]
    assert [id(layer) for layer in encoders] == [id(backbone.get_layer("lambda_encoder"))]
    routes = [layer for layer in network.layers if isinstance(layer, lambda_encoding.CleanRoute)]
    assert len(routes) == 1
    # λ = 0 and λ = 1 on the same image take different statistics in the exit's BN.
    model_testing.randomize_normalizations(network, seed=5)
    inputs = model_testing.random_inputs((16, 16, 1), [0.0, 1.0], seed=6)
    inputs["image"][1] = inputs["image"][0]
    outputs = network(inputs, training=False)
    assert np.abs(outputs["exit_1"][0] - outputs["exit_1"][1]).max() > 1e-6


def test_config_and_keras_file_round_trips(tmp_path):
    keras.utils.set_random_seed(2)
    _, network = _network("wide_resnet", "oat", conv_filters=4, conv_stride=1)
    model_testing.randomize_normalizations(network, seed=3)
    rebuilt = testing.assert_config_round_trip(network)
    assert rebuilt.exits == network.exits
    assert rebuilt.exit_feature_layers == network.exit_feature_layers
    inputs = model_testing.random_inputs((8, 8, 3), [0.0, 0.4, 1.0], seed=4)
    expected = network(inputs, training=False)
    path = os.path.join(tmp_path, "network.keras")
    network.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is multi_exit_network.MultiExitNetwork
    testing.assert_weights_equal(testing.weights_by_path(network), testing.weights_by_path(restored))
    actual = restored(inputs, training=False)
    for name in ("exit_1", "final"):
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-6, err_msg=name)


def test_exit_branch_config_round_trip():
    branch = exit_branch.ExitBranch(
        "block1_relu1", conv_filters=8, conv_stride=2, prepool_size=2, hidden_units=[16, 16],
        dropout=0.25, use_batch_norm=True, seed=3,
    )
    assert branch.hidden_units == (16, 16)
    assert exit_branch.ExitBranch.from_config(branch.get_config()) == branch
    with pytest.raises(ValueError, match="`config`.*Received: config="):
        exit_branch.ExitBranch.from_config({**branch.get_config(), "kernel_size": 5})
    with pytest.raises(ValueError, match="`feature_layer`.*Received: feature_layer="):
        exit_branch.ExitBranch("")


def test_bad_arguments_name_the_argument():
    backbone = model_testing.tiny_model("small_cnn", "oat")
    branch = exit_branch.ExitBranch("block2_relu1", **GAP_EXIT)
    with pytest.raises(ValueError, match="`exits`.*Received: exits="):
        multi_exit_network.MultiExitNetwork(backbone, [])
    with pytest.raises(ValueError, match="`exits`.*Received: exits="):
        multi_exit_network.MultiExitNetwork(backbone, branch)
    with pytest.raises(ValueError, match="feature_layer.*block9_relu1"):
        multi_exit_network.MultiExitNetwork(
            backbone, [exit_branch.ExitBranch("block9_relu1", **GAP_EXIT)]
        )
    with pytest.raises(ValueError, match="`use_batch_norm`.*Received: use_batch_norm="):
        multi_exit_network.MultiExitNetwork(
            backbone, [exit_branch.ExitBranch("block2_relu1", use_batch_norm=False)]
        )
    mixture = model_testing.tiny_model("small_cnn", "mixture_bn")
    with pytest.raises(ValueError, match="`variant`.*Received: variant="):
        multi_exit_network.MultiExitNetwork(mixture, [branch])
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="`backbone`.*Received: backbone"):
        multi_exit_network.MultiExitNetwork(keras.Model(inputs, keras.layers.Dense(2)(inputs)), [branch])
    # block2_relu1 of a 16×16 input is 4×4: too small for a 3×3 convolution after a 2×2 pool.
    small = exit_branch.ExitBranch("block2_relu1", conv_filters=4, prepool_size=2, **GAP_EXIT)
    with pytest.raises(ValueError, match="`image_shape`.*exit 1.*Received: image_shape="):
        multi_exit_network.MultiExitNetwork(backbone, [small])
