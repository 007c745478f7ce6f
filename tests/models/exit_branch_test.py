"""Tests of `apply_exit_branch`: layer order, shapes, conditioning, argument checks."""

import keras
import numpy as np
import pytest

from oat_tf.layers import dual_batch_norm
from oat_tf.layers import film
from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import exit_branch
from tests.models import model_testing


def _branch_model(variant="plain", feature_shape=(10, 10, 3), **kwargs):
    """A model {"image": features, "lambda"} → exit logits (the features are the input)."""
    inputs = conditioning_lib.model_inputs(feature_shape)
    conditioning = conditioning_lib.apply_lambda_conditioning(
        inputs["lambda"], variant, model_testing.TINY_ENCODER
    )
    args = dict(num_classes=5, name="exit1", use_batch_norm=variant != "plain")
    args.update(kwargs)
    logits = exit_branch.apply_exit_branch(inputs["image"], conditioning, **args)
    return keras.Model(inputs, logits)


def _branch_layer_names(model):
    return [layer.name for layer in model.layers if layer.name.startswith("exit1")]


def test_layer_order_with_convolution_pool_and_hidden_layers():
    model = _branch_model(
        "oat", conv_filters=4, conv_stride=2, hidden_units=(6, 7), dropout=0.5, seed=3
    )
    assert _branch_layer_names(model) == [
        "exit1_conv",
        "exit1_conv_bn",
        "exit1_conv_film",
        "exit1_conv_relu",
        "exit1_pool",
        "exit1_flatten",
        "exit1_fc1",
        "exit1_fc1_bn",
        "exit1_fc1_film",
        "exit1_fc1_relu",
        "exit1_fc1_dropout",
        "exit1_fc2",
        "exit1_fc2_bn",
        "exit1_fc2_film",
        "exit1_fc2_relu",
        "exit1_logits",
    ]
    # 10 → valid 3×3 stride 2 → 4 → max-pool 2 → 2: 2·2·4 features.
    assert model.get_layer("exit1_conv").output.shape == (None, 4, 4, 4)
    assert model.get_layer("exit1_flatten").output.shape == (None, 16)
    assert model.get_layer("exit1_fc1").units == 6
    assert model.get_layer("exit1_fc2").units == 7
    assert model.get_layer("exit1_fc1_dropout").rate == 0.5
    assert isinstance(model.get_layer("exit1_conv_bn"), dual_batch_norm.DualBatchNormalization)
    assert isinstance(model.get_layer("exit1_fc2_film"), film.FiLM)
    inputs = model_testing.random_inputs((10, 10, 3), [0.0, 0.4, 1.0])
    assert model(inputs).shape == (3, 5)
    assert model(inputs, training=True).shape == (3, 5)


def test_plain_branch_without_normalisation_has_biases_and_closed_form_parameters():
    model = _branch_model("plain", conv_filters=4, hidden_units=(6,), pool_size=2)
    assert not any("_bn" in name or "_film" in name for name in _branch_layer_names(model))
    assert model.get_layer("exit1_conv").use_bias
    assert model.get_layer("exit1_fc1").use_bias
    # conv 3·3·3·4 + 4 on 10×10 → 8×8, pool → 4×4×4 = 64 features,
    # fc 64·6 + 6, logits 6·5 + 5.
    assert model.count_params() == (27 * 4 + 4) + (64 * 6 + 6) + (6 * 5 + 5)


def test_global_pool_and_no_hidden_layers():
    model = _branch_model("oat_single_bn", conv_filters=4, global_pool=True, hidden_units=())
    assert _branch_layer_names(model) == [
        "exit1_conv",
        "exit1_conv_bn",
        "exit1_conv_film",
        "exit1_conv_relu",
        "exit1_gap",
        "exit1_flatten",
        "exit1_logits",
    ]
    assert model.get_layer("exit1_flatten").output.shape == (None, 4)
    assert isinstance(model.get_layer("exit1_conv_bn"), keras.layers.BatchNormalization)


def test_pool_only_branch():
    model = _branch_model("plain", pool_size=5, hidden_units=(3,))
    assert _branch_layer_names(model)[:2] == ["exit1_pool", "exit1_flatten"]
    assert model.get_layer("exit1_flatten").output.shape == (None, 2 * 2 * 3)


def test_branch_logits_depend_on_lambda_only_when_conditioned():
    images = np.random.default_rng(0).uniform(size=(1, 10, 10, 3)).astype("float32")
    images = np.repeat(images, 2, axis=0)
    lambdas = np.array([0.2, 0.4], "float32")
    for variant, depends in (("plain", False), ("oat", True)):
        model = _branch_model(variant, conv_filters=4, hidden_units=(6,))
        film_layers = [layer for layer in model.layers if isinstance(layer, film.FiLM)]
        for layer in film_layers:  # FiLM starts at the identity; make it act.
            layer.set_weights([w + 0.3 for w in layer.get_weights()])
        logits = model({"image": images, "lambda": lambdas}).numpy()
        assert np.allclose(logits[0], logits[1], atol=1e-6) != depends


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"name": ""}, "name"),
        ({"conv_filters": 0}, "conv_filters"),
        ({"conv_filters": 4, "conv_stride": 0}, "conv_stride"),
        ({"conv_stride": 2}, "conv_stride"),
        ({"pool_size": 0}, "pool_size"),
        ({"hidden_units": (4, 0)}, "hidden_units"),
        ({"hidden_units": 4}, "hidden_units"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": 0.5, "hidden_units": ()}, "dropout"),
        ({"pool_size": 11}, "pool_size"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}="):
        _branch_model("plain", **kwargs)


def test_conditioned_branch_requires_normalisation():
    with pytest.raises(ValueError, match="`use_batch_norm`.*Received: use_batch_norm=False"):
        _branch_model("oat", use_batch_norm=False)


def test_features_too_small_for_the_convolution_raise():
    with pytest.raises(ValueError, match="`x` must be at least 3×3"):
        _branch_model("plain", feature_shape=(2, 2, 3), conv_filters=4)


def test_prepool_comes_first_and_the_branch_matches_numpy():
    model = _branch_model("plain", feature_shape=(6, 6, 2), prepool_size=2, global_pool=True,
                          pool_size=None, hidden_units=())
    assert _branch_layer_names(model) == ["exit1_prepool", "exit1_gap", "exit1_flatten", "exit1_logits"]
    inputs = model_testing.random_inputs((6, 6, 2), [0.0, 1.0], seed=3)
    # 2×2 max-pool (stride 2), global mean, logits.
    pooled = inputs["image"].reshape(2, 3, 2, 3, 2, 2).max(axis=(2, 4)).mean(axis=(1, 2))
    kernel, bias = model.get_layer("exit1_logits").get_weights()
    np.testing.assert_allclose(model(inputs), pooled @ kernel + bias, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="`prepool_size`.*Received: prepool_size=7"):
        _branch_model("plain", feature_shape=(6, 6, 2), prepool_size=7)
    with pytest.raises(ValueError, match="`prepool_size`.*Received: prepool_size=0"):
        _branch_model("plain", prepool_size=0)
