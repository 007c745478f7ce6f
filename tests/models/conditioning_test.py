"""Tests of the shared λ conditioning: inputs, variants, normalisation, padding."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf.layers import dual_batch_norm
from oat_tf.layers import film
from oat_tf.layers import lambda_encoding
from oat_tf.models import conditioning
from oat_tf.models import resnet
from oat_tf.models import small_cnn


def _layers_after_normalization(variant, film_name="film"):
    inputs = conditioning.model_inputs((4, 4, 2))
    cond = conditioning.apply_lambda_conditioning(inputs["lambda"], variant, {"dim": 8})
    outputs = conditioning.apply_normalization(
        inputs["image"], cond, norm_name="bn", film_name=film_name
    )
    model = keras.Model(inputs, outputs)
    return {layer.name: layer for layer in model.layers}


def test_model_inputs_are_named_image_and_lambda():
    inputs = conditioning.model_inputs((28, 28, 1))
    assert inputs["image"].shape == (None, 28, 28, 1)
    assert inputs["lambda"].shape == (None,)
    assert inputs["image"].name == "image" and inputs["lambda"].name == "lambda"


@pytest.mark.parametrize(
    "variant, norm_type, has_film, has_route",
    [
        ("plain", keras.layers.BatchNormalization, False, False),
        ("oat", dual_batch_norm.DualBatchNormalization, True, True),
        ("oat_single_bn", keras.layers.BatchNormalization, True, False),
        ("mixture_bn", dual_batch_norm.DualBatchNormalization, False, True),
    ],
)
def test_variant_selects_normalization_and_film(variant, norm_type, has_film, has_route):
    layers = _layers_after_normalization(variant)
    assert type(layers["bn"]) is norm_type
    assert layers["bn"].momentum == pytest.approx(0.9)
    assert layers["bn"].epsilon == pytest.approx(1e-5)
    assert ("film" in layers) == has_film
    assert ("lambda_encoder" in layers) == has_film
    assert ("clean_route" in layers) == has_route
    if has_film:
        assert isinstance(layers["film"], film.FiLM)
        assert isinstance(layers["lambda_encoder"], lambda_encoding.LambdaEncoder)


def test_no_film_without_film_name():
    layers = _layers_after_normalization("oat", film_name=None)
    assert isinstance(layers["bn"], dual_batch_norm.DualBatchNormalization)
    assert not any(isinstance(layer, film.FiLM) for layer in layers.values())


def test_encoder_config_dataclass_is_accepted():
    from oat_tf import config as config_lib

    kwargs = conditioning.encoder_kwargs(config_lib.EncoderConfig(dim=16, scheme="dct"))
    assert kwargs == {
        "lambda_values": [0.0, 0.1, 0.2, 0.3, 0.4, 1.0],
        "scheme": "dct",
        "dim": 16,
        "seed": 0,
    }


def test_bad_variant_names_the_argument():
    with pytest.raises(ValueError, match="`variant`"):
        conditioning.check_variant("dual")


@pytest.mark.parametrize("shape", [(7, 8, 3), (8, 8), "32x32"])
def test_bad_image_shape_names_the_argument(shape):
    with pytest.raises(ValueError, match="`image_shape`.*Received: image_shape="):
        conditioning.check_image_shape(shape, min_size=8)


@pytest.mark.parametrize("size", [6, 7])
def test_strided_conv_pads_symmetrically_like_pytorch(size):
    # PyTorch's padding=1: output ceil(H/2), and the first window is centred on
    # pixel (0, 0), so a ones-kernel on a ones-image sums 4 pixels there.
    inputs = keras.Input((size, size, 1))
    outputs = conditioning.Conditioning("plain").conv(inputs, 1, 3, 2, name="conv")
    model = keras.Model(inputs, outputs)
    model.get_layer("conv").kernel.assign(np.ones((3, 3, 1, 1), "float32"))
    out = model(np.ones((1, size, size, 1), "float32")).numpy()[0, :, :, 0]
    assert out.shape == (-(-size // 2),) * 2
    assert out[0, 0] == 4.0
    assert out[1, 1] == 9.0


def test_a_wider_film_generator_is_recorded_only_when_it_differs_from_the_reference():
    from oat_tf import config as config_lib

    default = conditioning.encoder_kwargs(config_lib.EncoderConfig(dim=16))
    assert conditioning.FILM_HIDDEN_MULTIPLIER_KEY not in default
    wide = conditioning.encoder_kwargs(config_lib.EncoderConfig(dim=16, film_hidden_multiplier=3))
    assert wide[conditioning.FILM_HIDDEN_MULTIPLIER_KEY] == 3
    assert conditioning.film_hidden_multiplier(wide) == 3
    assert conditioning.film_hidden_multiplier(default) == 1
    assert conditioning.FILM_HIDDEN_MULTIPLIER_KEY not in conditioning.lambda_encoder_kwargs(wide)
    # A config written before the setting existed builds the reference FiLM.
    assert conditioning.film_hidden_multiplier({"dim": 16}) == 1


@pytest.mark.parametrize("multiplier", [0, -1, 1.5, True, "2"])
def test_a_bad_film_hidden_multiplier_names_the_argument(multiplier):
    with pytest.raises(ValueError, match=r"`film_hidden_multiplier` must be a positive int"):
        conditioning.encoder_kwargs({"dim": 16, "film_hidden_multiplier": multiplier})


def test_film_hidden_multiplier_sets_every_generator_hidden_width():
    inputs = conditioning.model_inputs((4, 4, 2))
    cond = conditioning.apply_lambda_conditioning(
        inputs["lambda"], "oat", {"dim": 8, "film_hidden_multiplier": 3}
    )
    outputs = conditioning.apply_normalization(inputs["image"], cond, norm_name="bn", film_name="film")
    model = keras.Model(inputs, outputs)
    layer = model.get_layer("film")
    # code (8) -> 3 · 2C hidden units (C = 2) -> 2C.
    assert tuple(layer.hidden_kernel.shape) == (8, 12)
    assert tuple(layer.output_kernel.shape) == (12, 4)
    out = model({"image": np.ones((3, 4, 4, 2), "float32"), "lambda": np.array([0.0, 0.5, 1.0], "float32")})
    assert out.shape == (3, 4, 4, 2)


@pytest.mark.parametrize("multiplier", [0, 2.0, False])
def test_encoder_config_refuses_a_bad_film_hidden_multiplier(multiplier):
    from oat_tf import config as config_lib

    with pytest.raises(ValueError, match=r"`film_hidden_multiplier` must be a positive int"):
        config_lib.EncoderConfig(film_hidden_multiplier=multiplier)


def test_fused_normalization_is_recorded_only_when_on_and_refuses_non_bools():
    assert conditioning.FUSED_NORMALIZATION_KEY not in conditioning.encoder_kwargs(config_lib.EncoderConfig())
    on = conditioning.encoder_kwargs(config_lib.EncoderConfig(fused_normalization=True))
    assert on[conditioning.FUSED_NORMALIZATION_KEY] is True
    assert conditioning.FUSED_NORMALIZATION_KEY not in conditioning.lambda_encoder_kwargs(on)
    assert conditioning.fused_normalization(on) and not conditioning.fused_normalization(None)
    with pytest.raises(ValueError, match="`fused_normalization` must be a bool"):
        conditioning.encoder_kwargs({"fused_normalization": 1})
    with pytest.raises(ValueError, match="`fused_normalization` must be a bool"):
        config_lib.EncoderConfig(fused_normalization="yes")


@pytest.mark.parametrize("architecture", ["small_cnn", "resnet"])
def test_fused_network_computes_the_unfused_function_with_the_same_weights(architecture):
    def build(fused):
        keras.utils.set_random_seed(0)
        encoder = {"lambda_values": [0.0, 0.5, 1.0], "dim": 8, "fused_normalization": fused}
        if architecture == "small_cnn":
            return small_cnn.SmallCNN(
                num_classes=3, image_shape=(16, 16, 1), variant="oat", encoder=encoder,
                filters=(4, 8), hidden_units=8, dropout=0.0,
            )
        return resnet.ResNet(depth=10, num_classes=3, image_shape=(16, 16, 3), variant="oat", encoder=encoder)

    unfused, fused = build(False), build(True)
    assert [w.path for w in unfused.weights] == [w.path for w in fused.weights]
    fused.set_weights(unfused.get_weights())
    # The fused graph hands scale and shift over: some dual BN returns three tensors.
    assert any(
        isinstance(layer, dual_batch_norm.DualBatchNormalization) and layer.return_scale_shift
        for layer in fused.layers
    )
    rng = np.random.default_rng(1)
    shape = (16, 16, 1) if architecture == "small_cnn" else (16, 16, 3)
    images = rng.uniform(size=(6,) + shape).astype(np.float32)
    inputs = {"image": images, "lambda": np.array([0.0, 0.5, 1.0, 0.0, 0.5, 1.0], np.float32)}
    for training in (True, False):
        with tf.GradientTape(persistent=True) as tape:
            expected = unfused(inputs, training=training)
            got = fused(inputs, training=training)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)
        for g_fused, g_unfused in zip(
            tape.gradient(got, fused.trainable_weights), tape.gradient(expected, unfused.trainable_weights)
        ):
            np.testing.assert_allclose(g_fused.numpy(), g_unfused.numpy(), rtol=1e-3, atol=1e-4)
    for a, b in zip(fused.non_trainable_weights, unfused.non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kernel_size, strides, expected",
    [(3, 1, (0, "same")), (3, 2, (1, "valid")), (7, 2, (3, "valid")), (1, 1, (0, "valid")), (1, 2, (0, "valid"))],
)
def test_conv_padding_is_pytorchs_kernel_size_over_two(kernel_size, strides, expected):
    # PyTorch pads k // 2 on every side: Keras' "same" does that at stride 1 for odd k; a
    # strided k > 1 convolution pads explicitly; a 1×1 convolution needs no padding.
    assert conditioning.conv_padding(kernel_size, strides) == expected


def test_the_kit_adds_each_layer_under_its_name():
    inputs = keras.Input((6, 6, 2))
    kit = conditioning.Conditioning("plain")
    x = kit.conv(inputs, 4, 3, 2, name="c")
    x = kit.relu(kit.normalize(x, norm_name="bn", film_name="film"), name="r")
    x = kit.dropout(kit.flatten_dense(x, 5, name="fc"), 0.5, seed=0, name="drop")
    model = keras.Model(inputs, kit.logits(x, 3))
    names = [layer.name for layer in model.layers[1:]]
    # A plain network has no FiLM; the strided convolution pads explicitly first.
    assert names == ["c_pad", "c", "bn", "r", "flatten", "fc", "drop", "logits"]
    assert model.get_layer("logits").dtype_policy.compute_dtype == "float32"


@pytest.mark.parametrize("variant", ["plain", "oat", "oat_single_bn", "mixture_bn"])
def test_conditioning_of_a_network_is_the_one_its_layers_read(variant):
    encoder = {"dim": 8, conditioning.FILM_HIDDEN_MULTIPLIER_KEY: 2}
    network = resnet.ResNet(
        variant=variant, encoder=encoder, stage_blocks=(1, 1, 1, 1), stage_filters=(4, 4, 4, 4),
        image_shape=(8, 8, 3),
    )
    recovered = conditioning.conditioning_of(network)
    assert recovered.variant == variant
    names = {layer.name for layer in network.layers}
    if variant in ("oat", "oat_single_bn"):
        assert recovered.code is network.get_layer("lambda_encoder").output
        assert recovered.film_hidden_multiplier == 2
    else:
        assert recovered.code is None and "lambda_encoder" not in names
    if variant in ("oat", "mixture_bn"):
        assert recovered.clean is network.get_layer("clean_route").output
    else:
        assert recovered.clean is None and "clean_route" not in names
    with pytest.raises(ValueError, match="`network`.*Received: network of type"):
        conditioning.conditioning_of(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
