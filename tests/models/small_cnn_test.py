"""Tests of SmallCNN: parameters, shapes, saving, XLA, arguments."""

import os

import keras
import numpy as np
import pytest

from oat_tf.models import small_cnn
from tests import testing
from tests.models import model_testing


def test_plain_parameter_count_closed_form():
    model = small_cnn.SmallCNN(variant="plain")
    convs = 9 * 1 * 32 + 9 * 32 * 32 + 9 * 32 * 64 + 9 * 64 * 64  # no bias before BN
    dense = 4 * 4 * 64 * 200 + 200 * 200 + (200 * 10 + 10)
    bn = 2 * (32 + 32 + 64 + 64 + 200 + 200)
    assert model_testing.trainable_count(model) == convs + dense + bn == 312_794


def test_without_batch_norm_is_the_original_backbone():
    model = small_cnn.SmallCNN(variant="plain", use_batch_norm=False)
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers
    )
    assert model.get_layer("block1_conv1").use_bias
    assert model.get_layer("fc1").use_bias
    # 9·32+32, 9·32·32+32, 9·32·64+64, 9·64·64+64, 1024·200+200, 200·200+200, 200·10+10
    assert model.count_params() == 320 + 9248 + 18496 + 36928 + 205000 + 40200 + 2010


@pytest.mark.parametrize("variant", model_testing.VARIANTS)
def test_logits_shape(variant):
    model = model_testing.tiny_model("small_cnn", variant)
    inputs = model_testing.random_inputs((16, 16, 1), [0.0, 0.3])
    assert model(inputs).shape == (2, 10)
    assert model(inputs, training=True).shape == (2, 10)


def test_mnist_shape_and_layer_names():
    model = small_cnn.SmallCNN(variant="oat", filters=(4, 8), hidden_units=8)
    assert model.get_layer("block2_pool").output.shape == (None, 4, 4, 8)
    for name in ("block1_bn1", "block1_film1", "block2_film2", "fc1_film", "fc2_bn", "fc1_dropout"):
        model.get_layer(name)
    out = model(model_testing.random_inputs((28, 28, 1), [0.0, 1.0]))
    assert out.shape == (2, 10)


@pytest.mark.parametrize("variant", model_testing.VARIANTS)
def test_keras_save_round_trip(variant, tmp_path):
    model = model_testing.tiny_model("small_cnn", variant)
    inputs = model_testing.random_inputs((16, 16, 1), [0.0, 0.3, 1.0, 0.15], seed=1)
    expected = model(inputs, training=False).numpy()
    path = os.path.join(tmp_path, f"{variant}.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is small_cnn.SmallCNN
    assert restored.get_config() == model.get_config()
    testing.assert_weights_equal(testing.weights_by_path(model), testing.weights_by_path(restored))
    np.testing.assert_allclose(restored(inputs, training=False), expected, atol=1e-6)


def test_xla_forward_pass_equals_eager():
    model = model_testing.tiny_model("small_cnn", "oat")
    inputs = model_testing.random_inputs((16, 16, 1), [0.0, 0.3, 1.0, 0.25], seed=2)
    eager = model(inputs, training=False).numpy()
    compiled = testing.call_in_graph(
        lambda x: model(x, training=False), inputs, jit_compile=True
    )
    np.testing.assert_allclose(compiled, eager, atol=1e-5)


def test_oat_requires_batch_norm():
    with pytest.raises(ValueError, match="`use_batch_norm`"):
        small_cnn.SmallCNN(variant="oat", use_batch_norm=False)


def test_input_too_small_names_the_argument():
    small_cnn.SmallCNN(image_shape=(16, 16, 1), filters=(4, 8), hidden_units=8)
    with pytest.raises(ValueError, match="`image_shape`.*Received: image_shape="):
        small_cnn.SmallCNN(image_shape=(15, 28, 1))


def test_bad_options_name_the_argument():
    with pytest.raises(ValueError, match="`filters`"):
        small_cnn.SmallCNN(filters=())
    with pytest.raises(ValueError, match="`hidden_units`"):
        small_cnn.SmallCNN(hidden_units=0)
    with pytest.raises(ValueError, match="`dropout`"):
        small_cnn.SmallCNN(dropout=-0.1)


def test_a_wider_film_generator_survives_the_config_round_trip():
    encoder = {**model_testing.TINY_ENCODER, "film_hidden_multiplier": 3}
    network = small_cnn.SmallCNN(
        variant="oat", encoder=encoder, filters=(4, 8), hidden_units=8, image_shape=(20, 20, 1)
    )
    film = network.get_layer("block1_film1")
    assert film.hidden_kernel.shape[1] == 3 * 2 * 4
    rebuilt = testing.assert_config_round_trip(network)
    assert rebuilt.get_layer("block1_film1").hidden_kernel.shape == film.hidden_kernel.shape


def test_a_checkpoint_of_the_earlier_class_loads_and_gives_its_outputs():
    # testdata/small_cnn_oat.*: written before SmallCNN built its layers through the
    # conditioning's layer kit; the checkpoint keys and the outputs must not change.
    model = small_cnn.SmallCNN(
        variant="oat",
        encoder=model_testing.FIXTURE_ENCODER,
        filters=(4, 8),
        hidden_units=16,
        image_shape=(20, 20, 1),
    )
    model_testing.assert_restores_fixture(model, "small_cnn_oat", "small_cnn_outputs.npz", prefix="oat")
