"""Tests for oat_tf.export.saved_model."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from oat_tf.export import saved_model

IMAGE_SHAPE = (8, 8, 1)
NUM_CLASSES = 4


def _model(seed=0):
    """A tiny conv net whose logits depend on the image and on λ."""
    image = keras.Input(shape=IMAGE_SHAPE, name="image")
    lam = keras.Input(shape=(), name="lambda")
    initializer = keras.initializers.GlorotUniform(seed=seed)
    h = keras.layers.Conv2D(2, 3, kernel_initializer=initializer, name="conv")(image)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Concatenate()([h, keras.layers.Reshape((1,))(lam)])
    h = keras.layers.Dense(6, activation="relu", kernel_initializer=initializer)(h)
    logits = keras.layers.Dense(NUM_CLASSES, kernel_initializer=initializer)(h)
    return keras.Model({"image": image, "lambda": lam}, logits)


def _inputs(batch_size, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(batch_size, *IMAGE_SHAPE)).astype("float32")
    lambdas = rng.uniform(size=batch_size).astype("float32")
    return images, lambdas


def _serve(serving_fn, images, lambdas):
    return serving_fn(image=tf.constant(images), lambda_value=tf.constant(lambdas))


def _signature_def(export_dir):
    # What `saved_model_cli show` prints and TF Serving reads.
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return proto.meta_graphs[0].signature_def["serving_default"]


def test_exported_outputs_match_the_model_for_two_batch_sizes(tmp_path):
    model = _model()
    export_dir = str(tmp_path / "oat" / "1")
    assert saved_model.export_saved_model(model, export_dir, image_shape=IMAGE_SHAPE) == export_dir
    serving_fn = saved_model.load_serving_fn(export_dir)
    for batch_size in (3, 5):
        images, lambdas = _inputs(batch_size, seed=batch_size)
        outputs = _serve(serving_fn, images, lambdas)
        assert set(outputs) == {"logits", "probabilities"}
        expected = model({"image": images, "lambda": lambdas}, training=False)
        np.testing.assert_allclose(outputs["logits"], expected, atol=1e-5)
        np.testing.assert_allclose(
            outputs["probabilities"], tf.nn.softmax(expected), atol=1e-5
        )
        np.testing.assert_allclose(
            np.sum(outputs["probabilities"], axis=-1), np.ones(batch_size), atol=1e-5
        )
    # λ reaches the model: the same images at another λ give other logits.
    images, lambdas = _inputs(3)
    changed = _serve(serving_fn, images, 1.0 - lambdas)["logits"]
    assert not np.allclose(changed, _serve(serving_fn, images, lambdas)["logits"])


def test_signature_inputs_and_outputs(tmp_path):
    export_dir = str(tmp_path / "export")
    saved_model.export_saved_model(_model(), export_dir, image_shape=IMAGE_SHAPE)
    serving_fn = saved_model.load_serving_fn(export_dir)
    args, kwargs = serving_fn.structured_input_signature
    assert args == ()
    assert kwargs == {
        "image": tf.TensorSpec([None, *IMAGE_SHAPE], tf.float32, name="image"),
        "lambda_value": tf.TensorSpec([None], tf.float32, name="lambda_value"),
    }
    assert set(serving_fn.structured_outputs) == {"logits", "probabilities"}

    signature = _signature_def(export_dir)
    assert signature.method_name == "tensorflow/serving/predict"
    inputs = {
        key: (tf.as_dtype(info.dtype), [d.size for d in info.tensor_shape.dim])
        for key, info in signature.inputs.items()
    }
    assert inputs == {
        "image": (tf.float32, [-1, *IMAGE_SHAPE]),
        "lambda_value": (tf.float32, [-1]),
    }
    outputs = {
        key: [d.size for d in info.tensor_shape.dim] for key, info in signature.outputs.items()
    }
    assert outputs == {"logits": [-1, NUM_CLASSES], "probabilities": [-1, NUM_CLASSES]}


def test_signature_input_cannot_be_named_lambda(tmp_path):
    # Why the λ input is `lambda_value`: TensorFlow makes every signature input
    # a Python keyword argument, and `lambda` is a reserved word. If this test
    # starts failing, TensorFlow accepts the name and the export can use it.
    module = tf.Module()
    module.serve = tf.function(
        lambda x: {"y": x}, input_signature=[tf.TensorSpec([None], tf.float32, name="lambda")]
    )
    with pytest.raises(ValueError, match="not a valid parameter name"):
        tf.saved_model.save(
            module, str(tmp_path / "named_lambda"), signatures={"serving_default": module.serve}
        )


def test_export_replaces_an_existing_export_without_leftovers(tmp_path):
    export_dir = str(tmp_path / "oat")
    images, lambdas = _inputs(2)
    saved_model.export_saved_model(_model(seed=0), export_dir, image_shape=IMAGE_SHAPE)
    new_model = _model(seed=1)
    saved_model.export_saved_model(new_model, export_dir, image_shape=IMAGE_SHAPE)
    assert os.listdir(str(tmp_path)) == ["oat"]
    outputs = _serve(saved_model.load_serving_fn(export_dir), images, lambdas)
    np.testing.assert_allclose(
        outputs["logits"], new_model({"image": images, "lambda": lambdas}), atol=1e-5
    )


def test_failed_export_keeps_the_old_export(tmp_path, monkeypatch):
    export_dir = str(tmp_path / "oat")
    images, lambdas = _inputs(2)
    old_model = _model(seed=0)
    saved_model.export_saved_model(old_model, export_dir, image_shape=IMAGE_SHAPE)

    def failing_write_out(self, filepath, options=None, verbose=True):
        with open(os.path.join(filepath, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    # `ExportArchive()` returns an instance of a backend-specific subclass.
    archive_class = type(keras.export.ExportArchive())
    monkeypatch.setattr(archive_class, "write_out", failing_write_out)
    with pytest.raises(RuntimeError, match="disk full"):
        saved_model.export_saved_model(_model(seed=1), export_dir, image_shape=IMAGE_SHAPE)
    assert os.listdir(str(tmp_path)) == ["oat"]
    outputs = _serve(saved_model.load_serving_fn(export_dir), images, lambdas)
    np.testing.assert_allclose(
        outputs["logits"], old_model({"image": images, "lambda": lambdas}), atol=1e-5
    )


@pytest.mark.parametrize("image_shape", [(8, 8), (8, 0, 1), (8.5, 8, 1), "881", None])
def test_invalid_image_shape_raises(tmp_path, image_shape):
    with pytest.raises(ValueError, match="image_shape"):
        saved_model.export_saved_model(_model(), str(tmp_path / "x"), image_shape=image_shape)


def test_export_dir_that_is_a_file_raises(tmp_path):
    path = tmp_path / "file"
    path.write_text("not a directory")
    with pytest.raises(ValueError, match="export_dir"):
        saved_model.export_saved_model(_model(), str(path), image_shape=IMAGE_SHAPE)
