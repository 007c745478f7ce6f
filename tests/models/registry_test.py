"""Tests of `build_model` and of λ conditioning across every family."""

import numpy as np
import pytest

from oat_tf import config as config_lib
from oat_tf.layers import dual_batch_norm
from oat_tf.models import registry
from oat_tf.models import resnet
from oat_tf.models import small_cnn
from oat_tf.models import wide_resnet
from tests.models import model_testing

_SHAPES = {"resnet": (8, 8, 3), "wide_resnet": (8, 8, 3), "small_cnn": (16, 16, 1)}


@pytest.mark.parametrize(
    "architecture, model_class, expected",
    [
        ("resnet18", resnet.ResNet, {"depth": 18}),
        ("ResNet34", resnet.ResNet, {"depth": 34}),
        ("wrn16_8", wide_resnet.WideResNet, {"depth": 16, "width": 8, "dropout": 0.3}),
        ("wrn40_2", wide_resnet.WideResNet, {"depth": 40, "width": 2, "dropout": 0.3}),
        ("small_cnn", small_cnn.SmallCNN, {}),
    ],
)
def test_parse_architecture(architecture, model_class, expected):
    assert registry.parse_architecture(architecture) == (model_class, expected)


@pytest.mark.parametrize(
    "architecture, overrides, model_class",
    [
        ("resnet18", {"stage_filters": (4, 8, 8, 8)}, resnet.ResNet),
        ("wrn10_1", {}, wide_resnet.WideResNet),
        ("small_cnn", {"filters": (4, 8), "hidden_units": 8}, small_cnn.SmallCNN),
    ],
)
def test_build_model_uses_the_config(architecture, overrides, model_class):
    shape = (16, 16, 1) if architecture == "small_cnn" else (8, 8, 3)
    model_config = config_lib.ModelConfig(
        architecture=architecture,
        variant="oat",
        num_classes=7,
        input_shape=shape,
        encoder=config_lib.EncoderConfig(dim=8, seed=3),
    )
    model = registry.build_model(model_config, **overrides)
    assert type(model) is model_class
    assert model.variant == "oat"
    assert model.get_layer("lambda_encoder").dim == 8
    assert model.get_layer("lambda_encoder").seed == 3
    assert model(model_testing.random_inputs(shape, [0.0, 1.0])).shape == (2, 7)


@pytest.mark.parametrize(
    "architecture, shape, argument",
    [
        ("vgg16", (32, 32, 3), "architecture"),
        ("resnet", (32, 32, 3), "architecture"),
        ("resnet60", (32, 32, 3), "depth"),
        ("wrn15_2", (32, 32, 3), "depth"),
        ("wrn16_0", (32, 32, 3), "width"),
        ("resnet18", (4, 4, 3), "image_shape"),
        ("small_cnn", (8, 8, 1), "image_shape"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(architecture, shape, argument):
    model_config = config_lib.ModelConfig(architecture=architecture, input_shape=shape)
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}="):
        registry.build_model(model_config)


@pytest.mark.parametrize("family", model_testing.FAMILIES)
@pytest.mark.parametrize("variant", model_testing.VARIANTS)
def test_outputs_depend_on_lambda_only_when_conditioned(family, variant):
    model = model_testing.tiny_model(family, variant)
    inputs = model_testing.random_inputs(_SHAPES[family], [0.1, 0.1])
    inputs["image"][1] = inputs["image"][0]
    base = model(inputs, training=False).numpy()
    np.testing.assert_allclose(base[0], base[1], atol=1e-6)
    for lam in (0.0, 0.3, 1.0):
        other = dict(inputs, **{"lambda": np.array([0.1, lam], "float32")})
        out = model(other, training=False).numpy()
        if variant == "plain":
            np.testing.assert_allclose(out[1], base[0], atol=1e-6)
        else:
            assert not np.allclose(out[1], base[0], atol=1e-4), (family, variant, lam)


@pytest.mark.parametrize("family", model_testing.FAMILIES)
def test_dual_bn_routes_lambda_zero_to_clean_statistics(family):
    model = model_testing.tiny_model(family, "oat")
    inputs = model_testing.random_inputs(_SHAPES[family], [0.0, 0.3], seed=4)
    before = model(inputs, training=False).numpy()
    rng = np.random.default_rng(5)
    dual_layers = [
        layer for layer in model.layers
        if isinstance(layer, dual_batch_norm.DualBatchNormalization)
    ]
    assert dual_layers
    for layer in dual_layers:
        mean = layer.moving_mean.numpy()
        variance = layer.moving_variance.numpy()
        mean[0] = rng.normal(size=mean.shape[1])
        variance[0] = rng.uniform(0.2, 3.0, size=variance.shape[1])
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(variance)
    after = model(inputs, training=False).numpy()
    assert not np.allclose(after[0], before[0], atol=1e-4)  # λ = 0: clean group
    np.testing.assert_allclose(after[1], before[1], atol=1e-6)  # λ = 0.3: adversarial


@pytest.mark.parametrize(
    "architecture, overrides, model_class",
    [
        ("resnet18", {"stage_filters": (4, 8, 8, 8)}, "SlimmableResNet"),
        ("small_cnn", {"filters": (4, 8), "hidden_units": 8}, "SlimmableSmallCNN"),
    ],
)
@pytest.mark.parametrize("variant", ["oats", "ats"])
def test_slimmable_variants_build_slimmable_networks(architecture, overrides, model_class, variant):
    shape = (16, 16, 1) if architecture == "small_cnn" else (8, 8, 3)
    model_config = config_lib.ModelConfig(
        architecture=architecture,
        variant=variant,
        num_classes=4,
        input_shape=shape,
        encoder=config_lib.EncoderConfig(dim=8),
        widths=(0.5, 1.0),
    )
    model = registry.build_model(model_config, **overrides)
    assert type(model).__name__ == model_class and model.variant == variant
    assert model.widths == (0.5, 1.0)
    inputs = model_testing.random_inputs(shape, [0.0, 1.0])
    assert model(inputs, width=0.5).shape == (2, 4)


def test_no_slimmable_wide_resnet():
    model_config = config_lib.ModelConfig(architecture="wrn16_8", variant="oats")
    with pytest.raises(ValueError, match="slimmable.*Received: architecture='wrn16_8'"):
        registry.build_model(model_config)


@pytest.mark.parametrize(
    "architecture, variant, sizes, expected",
    [
        ("small_cnn", "plain", {"filters": (4, 8), "hidden_units": 8}, {"filters": (4, 8), "hidden_units": 8}),
        ("small_cnn", "ats", {"filters": (4, 6)}, {"filters": (4, 6), "hidden_units": 200}),
        ("resnet10", "plain", {"filters": (4, 4, 4, 8)}, {"stage_filters": (4, 4, 4, 8)}),
        ("resnet10", "oats", {"filters": (4, 4, 8, 8)}, {"stage_filters": (4, 4, 8, 8)}),
    ],
)
def test_build_model_takes_filters_and_hidden_units_from_the_config(architecture, variant, sizes, expected):
    shape = (16, 16, 1) if architecture == "small_cnn" else (8, 8, 3)
    model_config = config_lib.ModelConfig(
        architecture=architecture, variant=variant, num_classes=3, input_shape=shape,
        encoder=config_lib.EncoderConfig(dim=8), widths=(0.5, 1.0), **sizes,
    )
    model = registry.build_model(model_config)
    for name, value in expected.items():
        assert tuple(np.atleast_1d(getattr(model, name))) == tuple(np.atleast_1d(value)), name
    assert model(model_testing.random_inputs(shape, [0.0, 1.0]), training=False).shape == (2, 3)


@pytest.mark.parametrize(
    "architecture, sizes, message",
    [
        ("resnet18", {"filters": (4, 4, 4)}, r"`filters` must hold 4 ints for 'resnet18'.*Received: filters=\[4, 4, 4\]"),
        ("small_cnn", {"filters": (4, 8, 16)}, r"`filters` must hold 2 ints.*Received: filters=\[4, 8, 16\]"),
        ("wrn16_8", {"filters": (4, 8)}, r"`filters` is for 'small_cnn'.*'wrn16_8'.*Received: filters=\[4, 8\]"),
        ("rdi_small_cnn", {"filters": (4, 8)}, r"`filters` is for.*'rdi_small_cnn'.*Received: filters="),
        ("resnet18", {"hidden_units": 8}, r"`hidden_units` is for 'small_cnn' only.*Received: hidden_units=8"),
        ("small_cnn", {"filters": (4, 0)}, r"`filters` must be a list of positive ints.*Received: filters="),
        ("small_cnn", {"hidden_units": -1}, r"`hidden_units` must be an int >= 0.*Received: hidden_units=-1"),
    ],
)
def test_sizes_the_architecture_does_not_take_raise(architecture, sizes, message):
    with pytest.raises(ValueError, match=message):
        config_lib.ModelConfig(architecture=architecture, **sizes)
