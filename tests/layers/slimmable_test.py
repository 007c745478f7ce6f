"""Tests of the width helpers and of a small slimmable OATS model built from all the layers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf.layers import lambda_encoding
from oat_tf.layers import slimmable
from oat_tf.layers import slimmable_conv
from oat_tf.layers import slimmable_dense
from oat_tf.layers import slimmable_film
from oat_tf.layers import switchable_batch_norm
from tests import testing

WIDTHS = slimmable.DEFAULT_WIDTHS


@pytest.mark.parametrize(
    "channels, width, expected",
    [(64, 0.5, 32), (64, 0.75, 48), (64, 1.0, 64), (200, 0.75, 150), (10, 0.3, 3), (5, 0.5, 3), (6, 0.5, 3), (1, 0.25, 1), (3, 0.1, 1)],
)
def test_slimmed_channels_is_the_ceiling(channels, width, expected):
    assert slimmable.slimmed_channels(channels, width) == expected


def test_slimmed_channels_errors():
    with pytest.raises(ValueError, match="channels"):
        slimmable.slimmed_channels(0, 0.5)
    with pytest.raises(ValueError, match="width"):
        slimmable.slimmed_channels(8, 1.5)


def test_check_widths_sorts_and_validates():
    assert slimmable.check_widths([1, 0.75, 0.5]) == (0.5, 0.75, 1.0)
    assert slimmable.check_widths((1.0,)) == (1.0,)
    for bad in ([], "0.5", [0.5, 0.5, 1.0], [0.0, 1.0], [0.5, 1.5], [True, 1.0], [0.5, 0.75]):
        with pytest.raises(ValueError, match="widths"):
            slimmable.check_widths(bad)


def test_check_width_names_the_argument_and_the_expected_values():
    assert slimmable.check_width(None, WIDTHS) == 1.0
    assert slimmable.check_width(1, WIDTHS) == 1.0
    assert slimmable.check_width(np.float32(0.75), WIDTHS) == 0.75
    assert slimmable.width_index(0.75, WIDTHS) == 1
    with pytest.raises(ValueError, match=r"`width` must be one of \(0.5, 0.75, 1.0\). Received: width=0.6"):
        slimmable.check_width(0.6, WIDTHS)
    with pytest.raises(ValueError, match="static"):
        slimmable.check_width(tf.constant(0.5), WIDTHS)
    with pytest.raises(ValueError, match="Received: width=True"):
        slimmable.check_width(True, WIDTHS)


def _tiny_oats_model():
    """One functional model, outputs `width_<α>` for every width, built from shared layers."""
    image = keras.Input((6, 6, 3), name="image")
    lam = keras.Input((), name="lambda")
    code = lambda_encoding.LambdaEncoder([0.0, 0.5, 1.0], scheme="rand", dim=4, name="encoder")(lam)
    clean = lambda_encoding.CleanRoute(name="route")(lam)
    conv1 = slimmable_conv.SlimmableConv2D(8, 3, padding="same", use_bias=False, slim_inputs=False, name="conv1")
    bn1 = switchable_batch_norm.SwitchableDualBatchNormalization(name="bn1")
    film1 = slimmable_film.SlimmableFiLM(name="film1")
    conv2 = slimmable_conv.SlimmableConv2D(12, 3, strides=2, padding="same", use_bias=False, name="conv2")
    bn2 = switchable_batch_norm.SwitchableBatchNormalization(name="bn2")
    head = slimmable_dense.SlimmableDense(5, slim_outputs=False, name="head")
    pool = keras.layers.GlobalAveragePooling2D(name="pool")
    outputs = {}
    for width in sorted(WIDTHS, reverse=True):  # full width first: it builds the layers
        x = conv1(image, width=width)
        x = film1(bn1(x, clean, width=width), code, width=width)
        x = keras.layers.ReLU()(x)
        x = keras.layers.ReLU()(bn2(conv2(x, width=width), width=width))
        outputs[slimmable.width_name(width)] = head(pool(x), width=width)
    return keras.Model({"image": image, "lambda": lam}, outputs)


def _model_inputs(n=4, seed=0):
    rng = np.random.RandomState(seed)
    return {
        "image": rng.uniform(size=(n, 6, 6, 3)).astype("float32"),
        "lambda": np.array([0.0, 0.5, 1.0, 0.0][:n], "float32"),
    }


def _randomise_statistics(model):
    rng = np.random.RandomState(5)
    for v in model.non_trainable_weights:
        if "moving" in v.path:
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))


def test_model_has_private_statistics_per_width_and_shares_kernels():
    model = _tiny_oats_model()
    paths = [v.path for v in model.weights]
    for width in WIDTHS:
        assert f"bn1/width_{width}/moving_mean" in paths
        assert model.get_layer("bn1").norm_at(width).moving_mean.shape == (2, slimmable.slimmed_channels(8, width))
    assert model.get_layer("conv2").kernel.shape == (3, 3, 8, 12)
    out = model(_model_inputs())
    assert {k: tuple(v.shape) for k, v in out.items()} == {f"width_{w}": (4, 5) for w in WIDTHS}


def test_keras_file_round_trip_gives_the_same_outputs_at_every_width(tmp_path):
    model = _tiny_oats_model()
    _randomise_statistics(model)
    inputs = _model_inputs()
    model(inputs, training=True)  # moves the statistics away from their initial values
    expected = {k: v.numpy() for k, v in model(inputs, training=False).items()}
    path = str(tmp_path / "oats.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.get_layer("bn1")) is switchable_batch_norm.SwitchableDualBatchNormalization
    assert type(loaded.get_layer("film1")) is slimmable_film.SlimmableFiLM
    testing.assert_weights_equal(testing.weights_by_path(model), testing.weights_by_path(loaded))
    actual = loaded(inputs, training=False)
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], atol=1e-6, err_msg=key)


def test_model_compiles_with_xla_at_every_width():
    model = _tiny_oats_model()
    inputs = _model_inputs()
    expected = model(inputs, training=False)
    actual = testing.call_in_graph(lambda x: model(x, training=False), inputs, jit_compile=True)
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], atol=1e-5, err_msg=key)


def test_tf_checkpoint_restores_every_widths_statistics(tmp_path):
    model = _tiny_oats_model()
    _randomise_statistics(model)
    saved = testing.weights_by_path(model)
    path = tf.train.Checkpoint(network=model).write(str(tmp_path / "ckpt"))
    for v in model.weights:
        v.assign(np.zeros(v.shape, "float32"))
    tf.train.Checkpoint(network=model).read(path).assert_consumed()
    testing.assert_weights_equal(saved, testing.weights_by_path(model))
