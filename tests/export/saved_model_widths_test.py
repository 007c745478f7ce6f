"""Tests of the per-width export of slimmable networks (OATS): one signature per width."""

import json
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from oat_tf.export import saved_model
from tests.models import model_testing

IMAGE_SHAPE = (20, 20, 1)
NUM_CLASSES = 10
WIDTH_SIGNATURES = {"width_0_5": 0.5, "width_0_75": 0.75, "serving_default": 1.0}


def _network():
    keras.utils.set_random_seed(0)
    network = model_testing.tiny_slimmable_model("small_cnn", "oats")
    model_testing.randomize_normalizations(network)
    return network


def _inputs(batch_size, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(batch_size, *IMAGE_SHAPE)).astype("float32")
    lambdas = rng.uniform(size=batch_size).astype("float32")
    lambdas[0] = 0.0  # The clean route of the dual BN too.
    return images, lambdas


def _expected(network, width, images, lambdas):
    view = network.width_model(width)
    return view({"image": images, "lambda": lambdas}, training=False).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    network = _network()
    export_dir = str(tmp_path_factory.mktemp("widths") / "oats" / "1")
    saved_model.export_saved_model(
        network, export_dir, image_shape=IMAGE_SHAPE, model_card={"model": "tiny oats"}
    )
    return types.SimpleNamespace(network=network, export_dir=export_dir)


@pytest.mark.parametrize(
    "width, name",
    [(1.0, "serving_default"), (0.5, "width_0_5"), (0.75, "width_0_75"), (0.25, "width_0_25")],
)
def test_width_signature_names(width, name):
    assert saved_model.width_signature_name(width) == name
    assert saved_model.signature_width(name) == width


@pytest.mark.parametrize("name", ["predict", "width_1_0", "width_0_50", "width_x", "width_1_5"])
def test_other_signature_names_have_no_width(name):
    assert saved_model.signature_width(name) is None


def test_every_width_has_a_signature_that_reloads_to_its_view(exported):
    assert saved_model.signature_widths(exported.export_dir) == WIDTH_SIGNATURES
    loaded = tf.saved_model.load(exported.export_dir)
    assert sorted(loaded.signatures) == sorted(WIDTH_SIGNATURES)
    results = {}
    for name, width in WIDTH_SIGNATURES.items():
        serving_fn = saved_model.load_serving_fn(exported.export_dir, signature_name=name)
        for batch_size in (1, 3):
            images, lambdas = _inputs(batch_size, seed=batch_size)
            outputs = serving_fn(image=tf.constant(images), lambda_value=tf.constant(lambdas))
            expected = _expected(exported.network, width, images, lambdas)
            np.testing.assert_allclose(outputs["logits"], expected, atol=1e-5)
            np.testing.assert_array_equal(outputs["classes"], np.argmax(expected, axis=-1))
            results[name, batch_size] = outputs["logits"].numpy()
    # The widths are different sub-networks.
    assert not np.allclose(results["width_0_5", 3], results["serving_default", 3])
    assert not np.allclose(results["width_0_75", 3], results["serving_default", 3])


def test_every_width_signature_has_the_same_inputs_and_outputs(exported):
    loaded = tf.saved_model.load(exported.export_dir)
    for name in WIDTH_SIGNATURES:
        serving_fn = loaded.signatures[name]
        assert serving_fn.structured_input_signature == (
            (),
            {
                "image": tf.TensorSpec([None, *IMAGE_SHAPE], tf.float32, name="image"),
                "lambda_value": tf.TensorSpec([None], tf.float32, name="lambda_value"),
            },
        )
        assert serving_fn.structured_outputs == {
            "logits": tf.TensorSpec([None, NUM_CLASSES], tf.float32, name="logits"),
            "probabilities": tf.TensorSpec([None, NUM_CLASSES], tf.float32, name="probabilities"),
            "classes": tf.TensorSpec([None], tf.int64, name="classes"),
        }


def test_signature_defs_read_without_loading_match_the_loaded_signatures(exported):
    defs = saved_model.signature_defs(exported.export_dir)
    assert set(WIDTH_SIGNATURES) <= set(defs)
    loaded = tf.saved_model.load(exported.export_dir)
    for name in WIDTH_SIGNATURES:
        image = defs[name].inputs["image"].tensor_shape.dim
        assert [d.size for d in image] == [-1, *IMAGE_SHAPE]
        assert set(defs[name].outputs) == set(loaded.signatures[name].structured_outputs)


@pytest.mark.parametrize("name", ["width_0_5", "serving_default"])
def test_every_width_validates_its_inputs_in_the_graph(exported, name):
    serving_fn = saved_model.load_serving_fn(exported.export_dir, signature_name=name)
    images, lambdas = _inputs(2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="lambda_value"):
        serving_fn(image=tf.constant(images), lambda_value=tf.constant([0.5, 1.5]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image"):
        serving_fn(image=tf.constant(images * 255.0), lambda_value=tf.constant(lambdas))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image"):
        serving_fn(image=tf.zeros([2, 9, 9, 1]), lambda_value=tf.constant(lambdas))


def test_rest_predict_with_a_width_signature(exported):
    images, lambdas = _inputs(2, seed=5)
    instances = [
        {"image": image.tolist(), "lambda_value": float(lam)} for image, lam in zip(images, lambdas)
    ]
    request = json.dumps({"signature_name": "width_0_5", "instances": instances})
    response = saved_model.predict_rest_json(exported.export_dir, request)
    np.testing.assert_allclose(
        [p["logits"] for p in response["predictions"]],
        _expected(exported.network, 0.5, images, lambdas),
        atol=1e-5,
    )


def test_warmup_requests_cover_every_signature(exported):
    path = os.path.join(exported.export_dir, "assets.extra", "tf_serving_warmup_requests")
    loaded = tf.saved_model.load(exported.export_dir)
    seen = []
    for record in tf.data.TFRecordDataset(path):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        name = request.model_spec.signature_name
        images = tf.make_ndarray(request.inputs["image"])
        lambdas = tf.make_ndarray(request.inputs["lambda_value"])
        outputs = loaded.signatures[name](image=tf.constant(images), lambda_value=tf.constant(lambdas))
        np.testing.assert_allclose(
            outputs["logits"],
            _expected(exported.network, WIDTH_SIGNATURES[name], images, lambdas),
            atol=1e-5,
        )
        seen.append((name, len(lambdas), float(lambdas[0])))
    assert sorted(seen) == sorted(
        (name, batch_size, lam)
        for name in WIDTH_SIGNATURES
        for batch_size in (1, 4)
        for lam in (0.0, 1.0)
    )


def test_a_subset_of_widths_can_be_exported(tmp_path):
    network = _network()
    export_dir = str(tmp_path / "half")
    saved_model.export_saved_model(network, export_dir, image_shape=IMAGE_SHAPE, widths=[1.0, 0.5])
    assert saved_model.signature_widths(export_dir) == {"width_0_5": 0.5, "serving_default": 1.0}


def test_invalid_widths_raise_before_writing(tmp_path):
    network = _network()
    export_dir = str(tmp_path / "bad")
    with pytest.raises(ValueError, match="must contain 1.0"):
        saved_model.export_saved_model(network, export_dir, image_shape=IMAGE_SHAPE, widths=[0.5])
    with pytest.raises(ValueError, match="must be one of"):
        saved_model.export_saved_model(
            network, export_dir, image_shape=IMAGE_SHAPE, widths=[1.0, 0.3]
        )
    image = keras.Input(shape=IMAGE_SHAPE, name="image")
    lam = keras.Input(shape=(), name="lambda")
    logits = keras.layers.Dense(2)(keras.layers.Flatten()(image))
    plain = keras.Model({"image": image, "lambda": lam}, logits)
    with pytest.raises(ValueError, match="slimmable network"):
        saved_model.export_saved_model(
            plain, export_dir, image_shape=IMAGE_SHAPE, widths=[0.5, 1.0]
        )
    assert not os.path.exists(export_dir)
    # [1.0] is the default export of a plain model.
    saved_model.export_saved_model(plain, export_dir, image_shape=IMAGE_SHAPE, widths=[1.0])
    assert saved_model.signature_widths(export_dir) == {"serving_default": 1.0}
