"""Tests for oat_tf.export.saved_model.

The TF Serving binary cannot be installed here, so the export is checked the
way TF Serving uses it: the SignatureDef that `saved_model_cli show` prints, a
REST `predict` body through `predict_rest_json`, the warmup file replayed
through the signature, and invalid requests both through the loaded signature
and through a C++ session fed as TF Serving feeds it.
"""

import json
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from oat_tf.export import saved_model
from tests import testing

IMAGE_SHAPE = (8, 8, 1)
NUM_CLASSES = 4
MODEL_CARD = {
    "model": "tiny",
    "lambdas": [0.0, 0.5, 1.0],
    "clean_accuracy": {"0": 0.9, "0.5": 0.85, "1": 0.8},
    "robust_accuracy": {"pgd10": {"0": 0.1, "0.5": 0.4, "1": 0.5}},
    "note": "λ-conditioned",
}


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


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export with a model card, shared by the tests that only read it."""
    model = _model()
    export_dir = str(tmp_path_factory.mktemp("shared") / "oat" / "1")
    path = saved_model.export_saved_model(
        model, export_dir, image_shape=IMAGE_SHAPE, model_card=MODEL_CARD
    )
    return types.SimpleNamespace(
        model=model,
        path=path,
        export_dir=export_dir,
        serving_fn=saved_model.load_serving_fn(export_dir),
    )


def _expected(model, images, lambdas):
    return model({"image": images, "lambda": lambdas}, training=False).numpy()


def test_exported_outputs_match_the_model_for_several_batch_sizes(exported):
    assert exported.path == exported.export_dir
    for batch_size in (1, 3, 5):
        images, lambdas = _inputs(batch_size, seed=batch_size)
        outputs = _serve(exported.serving_fn, images, lambdas)
        assert set(outputs) == {"logits", "probabilities", "classes"}
        expected = _expected(exported.model, images, lambdas)
        np.testing.assert_allclose(outputs["logits"], expected, atol=1e-5)
        np.testing.assert_allclose(outputs["probabilities"], tf.nn.softmax(expected), atol=1e-5)
        np.testing.assert_allclose(
            np.sum(outputs["probabilities"], axis=-1), np.ones(batch_size), atol=1e-5
        )
        assert outputs["classes"].dtype == tf.int64
        np.testing.assert_array_equal(outputs["classes"], np.argmax(expected, axis=-1))
    # λ reaches the model: the same images at another λ give other logits.
    images, lambdas = _inputs(3)
    changed = _serve(exported.serving_fn, images, 1.0 - lambdas)["logits"]
    assert not np.allclose(changed, _serve(exported.serving_fn, images, lambdas)["logits"])


def test_signature_inputs_and_outputs(exported):
    serving_fn = exported.serving_fn
    args, kwargs = serving_fn.structured_input_signature
    assert args == ()
    assert kwargs == {
        "image": tf.TensorSpec([None, *IMAGE_SHAPE], tf.float32, name="image"),
        "lambda_value": tf.TensorSpec([None], tf.float32, name="lambda_value"),
    }
    assert serving_fn.structured_outputs == {
        "logits": tf.TensorSpec([None, NUM_CLASSES], tf.float32, name="logits"),
        "probabilities": tf.TensorSpec([None, NUM_CLASSES], tf.float32, name="probabilities"),
        "classes": tf.TensorSpec([None], tf.int64, name="classes"),
    }

    signature = _signature_def(exported.export_dir)
    assert signature.method_name == "tensorflow/serving/predict"

    def described(tensor_infos):
        return {
            key: (tf.as_dtype(info.dtype), [d.size for d in info.tensor_shape.dim])
            for key, info in tensor_infos.items()
        }

    assert described(signature.inputs) == {
        "image": (tf.float32, [-1, *IMAGE_SHAPE]),
        "lambda_value": (tf.float32, [-1]),
    }
    assert described(signature.outputs) == {
        "logits": (tf.float32, [-1, NUM_CLASSES]),
        "probabilities": (tf.float32, [-1, NUM_CLASSES]),
        "classes": (tf.int64, [-1]),
    }


def test_serving_fn_works_inside_a_tf_function_with_gradients(exported):
    # `load_serving_fn` keeps the loaded SavedModel alive; the evaluation of
    # an export runs attacks through the signature inside tf.functions.
    serving_fn = saved_model.load_serving_fn(exported.export_dir)
    images, lambdas = _inputs(2)

    @tf.function
    def logits_and_gradient(x, lam):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = serving_fn(image=x, lambda_value=lam)["logits"]
            loss = tf.reduce_sum(logits[:, 0])
        return logits, tape.gradient(loss, x)

    logits, gradient = logits_and_gradient(tf.constant(images), tf.constant(lambdas))
    np.testing.assert_allclose(logits, _expected(exported.model, images, lambdas), atol=1e-5)
    assert gradient.shape == images.shape
    assert np.any(gradient.numpy() != 0)


def _rest_request(images, lambdas, **extra):
    instances = [
        {"image": image.tolist(), "lambda_value": float(lam)} for image, lam in zip(images, lambdas)
    ]
    return json.dumps({**extra, "instances": instances})


def test_rest_predict_matches_the_model(exported):
    images, lambdas = _inputs(3, seed=7)
    lambdas[0], lambdas[1] = 0.0, 1.0
    response = saved_model.predict_rest_json(
        exported.export_dir, _rest_request(images, lambdas, signature_name="serving_default")
    )
    assert json.loads(json.dumps(response)) == response  # A plain JSON body.
    predictions = response["predictions"]
    assert [sorted(p) for p in predictions] == [["classes", "logits", "probabilities"]] * 3
    expected = _expected(exported.model, images, lambdas)
    np.testing.assert_allclose([p["logits"] for p in predictions], expected, atol=1e-5)
    np.testing.assert_allclose(
        [p["probabilities"] for p in predictions], tf.nn.softmax(expected), atol=1e-5
    )
    assert [p["classes"] for p in predictions] == np.argmax(expected, axis=-1).tolist()
    assert all(type(p["classes"]) is int for p in predictions)

    # `signature_name` defaults to serving_default; integers are valid floats.
    request = json.dumps({"instances": [{"image": np.ones(IMAGE_SHAPE, int).tolist(), "lambda_value": 1}]})
    response = saved_model.predict_rest_json(exported.export_dir, request)
    np.testing.assert_allclose(
        response["predictions"][0]["logits"],
        _expected(exported.model, np.ones((1, *IMAGE_SHAPE), "float32"), np.ones(1, "float32"))[0],
        atol=1e-5,
    )


def _instance(image_shape=IMAGE_SHAPE, lam=0.5):
    return {"image": np.full(image_shape, 0.5).tolist(), "lambda_value": lam}


@pytest.mark.parametrize(
    "request_body, match",
    [
        ({"inputs": {"image": [], "lambda_value": []}}, "instances"),
        ({"instances": []}, "instances"),
        ({"instances": [[0.5]]}, "keys"),
        ({"instances": [{"image": np.full(IMAGE_SHAPE, 0.5).tolist()}]}, "keys"),
        ({"instances": [{**_instance(), "lambda": 0.5}]}, "keys"),
        ({"instances": [_instance(), _instance((9, 8, 1))]}, "same shape"),
        ({"instances": [{"image": [[0.5], [0.5, 0.5]], "lambda_value": 0.5}]}, "rectangular"),
        ({"instances": [_instance(lam="0.5")]}, "numbers"),
        ({"signature_name": "predict", "instances": [_instance()]}, "signature_name"),
    ],
)
def test_rest_predict_rejects_malformed_requests(exported, request_body, match):
    with pytest.raises(ValueError, match=match):
        saved_model.predict_rest_json(exported.export_dir, json.dumps(request_body))


@pytest.mark.parametrize(
    "instances, match",
    [
        ([_instance(lam=1.5)], "lambda_value"),
        ([_instance(lam=float("nan"))], "lambda_value"),
        ([_instance((9, 8, 1))], "image"),
        ([_instance((8, 8))], "image"),
        ([{"image": np.full(IMAGE_SHAPE, 255.0).tolist(), "lambda_value": 0.5}], "image"),
    ],
)
def test_rest_predict_invalid_values_raise_in_the_graph(exported, instances, match):
    # Well-formed JSON that the graph rejects: TF Serving's HTTP 400.
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        saved_model.predict_rest_json(exported.export_dir, json.dumps({"instances": instances}))


def test_warmup_requests_run_through_the_signature(exported):
    path = os.path.join(exported.export_dir, "assets.extra", "tf_serving_warmup_requests")
    logs = [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(path)
    ]
    seen = []
    for log in logs:
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.signature_name == "serving_default"
        assert set(request.inputs) == {"image", "lambda_value"}
        images = tf.make_ndarray(request.inputs["image"])
        lambdas = tf.make_ndarray(request.inputs["lambda_value"])
        assert images.dtype == np.float32 and lambdas.dtype == np.float32
        assert images.shape == (len(lambdas), *IMAGE_SHAPE)
        outputs = _serve(exported.serving_fn, images, lambdas)
        np.testing.assert_allclose(
            outputs["logits"], _expected(exported.model, images, lambdas), atol=1e-5
        )
        seen.append((len(lambdas), float(lambdas[0])))
    assert sorted(seen) == [(1, 0.0), (1, 1.0), (4, 0.0), (4, 1.0)]


def test_model_card_round_trips_as_plain_json(exported, tmp_path):
    path = os.path.join(exported.export_dir, "assets.extra", "model_card.json")
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == MODEL_CARD
    assert saved_model.load_model_card(exported.export_dir) == MODEL_CARD

    # Without a card: no file, and `load_model_card` says so with None.
    export_dir = str(tmp_path / "no_card")
    saved_model.export_saved_model(_model(), export_dir, image_shape=IMAGE_SHAPE)
    assert os.listdir(os.path.join(export_dir, "assets.extra")) == ["tf_serving_warmup_requests"]
    assert saved_model.load_model_card(export_dir) is None
    with pytest.raises(ValueError, match="export_dir"):
        saved_model.load_model_card(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    "model_card",
    [[("sa", 0.9)], {"sa": float("nan")}, {"sa": np.float32(0.9)}, {"model": object()}],
)
def test_invalid_model_card_raises_before_writing(tmp_path, model_card):
    export_dir = str(tmp_path / "oat")
    old_model = _model(seed=0)
    saved_model.export_saved_model(old_model, export_dir, image_shape=IMAGE_SHAPE)
    with pytest.raises(ValueError, match="model_card"):
        saved_model.export_saved_model(
            _model(seed=1), export_dir, image_shape=IMAGE_SHAPE, model_card=model_card
        )
    assert os.listdir(str(tmp_path)) == ["oat"]
    images, lambdas = _inputs(2)
    outputs = _serve(saved_model.load_serving_fn(export_dir), images, lambdas)
    np.testing.assert_allclose(outputs["logits"], _expected(old_model, images, lambdas), atol=1e-5)


_VALID_IMAGES = np.full((2, *IMAGE_SHAPE), 0.5, np.float32)
_VALID_LAMBDAS = np.array([0.2, 0.7], np.float32)


def _with_pixel(value):
    images = _VALID_IMAGES.copy()
    images[1, 3, 4, 0] = value
    return images


# (images, lambdas, name of the input the error must name)
_INVALID_INPUTS = {
    "lambda_above_1": (_VALID_IMAGES, np.array([0.2, 1.5], np.float32), "lambda_value"),
    "lambda_below_0": (_VALID_IMAGES, np.array([-0.1, 0.5], np.float32), "lambda_value"),
    "lambda_nan": (_VALID_IMAGES, np.array([np.nan, 0.5], np.float32), "lambda_value"),
    "lambda_inf": (_VALID_IMAGES, np.array([0.5, np.inf], np.float32), "lambda_value"),
    "lambda_batch_too_long": (_VALID_IMAGES, np.array([0.2, 0.3, 0.4], np.float32), "lambda_value"),
    "lambda_batch_too_short": (_VALID_IMAGES, np.array([0.2], np.float32), "lambda_value"),
    "lambda_rank_2": (_VALID_IMAGES, _VALID_LAMBDAS[:, None], "lambda_value"),
    "lambda_scalar": (_VALID_IMAGES, np.float32(0.2), "lambda_value"),
    "image_nan": (_with_pixel(np.nan), _VALID_LAMBDAS, "image"),
    "image_inf": (_with_pixel(-np.inf), _VALID_LAMBDAS, "image"),
    "image_above_1": (_with_pixel(1.01), _VALID_LAMBDAS, "image"),
    "image_below_0": (_with_pixel(-1e-4), _VALID_LAMBDAS, "image"),
    "image_0_to_255": (_VALID_IMAGES * 255, _VALID_LAMBDAS, "image"),
    "image_wrong_height": (np.full((2, 9, 8, 1), 0.5, np.float32), _VALID_LAMBDAS, "image"),
    "image_wrong_channels": (np.full((2, 8, 8, 3), 0.5, np.float32), _VALID_LAMBDAS, "image"),
    # A rank-3 image that reaches the oneDNN convolution aborts the process.
    "image_rank_3": (np.full((8, 8, 1), 0.5, np.float32), np.full(8, 0.2, np.float32), "image"),
    "image_rank_5": (np.full((2, *IMAGE_SHAPE, 1), 0.5, np.float32), _VALID_LAMBDAS, "image"),
}


@pytest.mark.parametrize("case", sorted(_INVALID_INPUTS))
def test_invalid_inputs_raise_naming_the_input(exported, case):
    images, lambdas, name = _INVALID_INPUTS[case]
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"`{name}`"):
        _serve(exported.serving_fn, images, lambdas)


@pytest.fixture(scope="module")
def session_predict(exported):
    """The signature run as TF Serving runs it: a C++ session fed by tensor name.

    Unlike `Session.run`, a callable skips Python's check of the fed shapes
    against the placeholders, as TF Serving does, so a wrong shape reaches the
    graph (and the graph optimizer sees the placeholders' static shapes).
    """
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], exported.export_dir)
    signature = meta_graph.signature_def["serving_default"]
    options = config_pb2.CallableOptions(
        feed=[signature.inputs["image"].name, signature.inputs["lambda_value"].name],
        fetch=[signature.outputs["logits"].name],
    )
    predict = session._make_callable_from_options(options)
    yield lambda images, lambdas: predict(images, lambdas)[0]
    session.close()


@pytest.mark.parametrize("case", sorted(_INVALID_INPUTS))
def test_invalid_inputs_raise_in_a_tf_serving_session(exported, session_predict, case):
    images, lambdas, name = _INVALID_INPUTS[case]
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"`{name}`"):
        session_predict(images, lambdas)


def test_valid_inputs_pass_in_a_tf_serving_session(exported, session_predict):
    images, lambdas = _inputs(3, seed=3)
    np.testing.assert_allclose(
        session_predict(images, lambdas), _expected(exported.model, images, lambdas), atol=1e-5
    )


def test_image_values_within_the_tolerance_are_accepted(exported):
    images = _VALID_IMAGES.copy()
    images[0, 0, 0, 0] = 1.0 + 0.5 * saved_model.IMAGE_RANGE_TOLERANCE
    images[1, 0, 0, 0] = -0.5 * saved_model.IMAGE_RANGE_TOLERANCE
    lambdas = np.array([0.0, 1.0], np.float32)  # λ bounds are valid, exactly.
    outputs = _serve(exported.serving_fn, images, lambdas)
    np.testing.assert_allclose(
        outputs["logits"], _expected(exported.model, images, lambdas), atol=1e-5
    )


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
    saved_model.export_saved_model(
        _model(seed=0), export_dir, image_shape=IMAGE_SHAPE, model_card={"version": 1}
    )
    new_model = _model(seed=1)
    saved_model.export_saved_model(
        new_model, export_dir, image_shape=IMAGE_SHAPE, model_card={"version": 2}
    )
    assert os.listdir(str(tmp_path)) == ["oat"]
    outputs = _serve(saved_model.load_serving_fn(export_dir), images, lambdas)
    np.testing.assert_allclose(outputs["logits"], _expected(new_model, images, lambdas), atol=1e-5)
    assert saved_model.load_model_card(export_dir) == {"version": 2}


def _fail_write_out(monkeypatch):
    def failing_write_out(self, filepath, options=None, verbose=True):
        with open(os.path.join(filepath, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    # `ExportArchive()` returns an instance of a backend-specific subclass.
    archive_class = type(keras.export.ExportArchive())
    monkeypatch.setattr(archive_class, "write_out", failing_write_out)


def _fail_warmup(monkeypatch):
    # The SavedModel is complete; writing assets.extra fails.
    def failing_write_warmup_requests(path, image_shape, signature_names, extra_inputs=None):
        with open(path, "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(saved_model, "write_warmup_requests", failing_write_warmup_requests)


@pytest.mark.parametrize("make_it_fail", [_fail_write_out, _fail_warmup])
def test_failed_export_keeps_the_old_export(tmp_path, monkeypatch, make_it_fail):
    export_dir = str(tmp_path / "oat")
    images, lambdas = _inputs(2)
    old_model = _model(seed=0)
    saved_model.export_saved_model(
        old_model, export_dir, image_shape=IMAGE_SHAPE, model_card={"version": 1}
    )
    make_it_fail(monkeypatch)
    with pytest.raises(RuntimeError, match="disk full"):
        saved_model.export_saved_model(
            _model(seed=1), export_dir, image_shape=IMAGE_SHAPE, model_card={"version": 2}
        )
    assert os.listdir(str(tmp_path)) == ["oat"]
    outputs = _serve(saved_model.load_serving_fn(export_dir), images, lambdas)
    np.testing.assert_allclose(outputs["logits"], _expected(old_model, images, lambdas), atol=1e-5)
    assert saved_model.load_model_card(export_dir) == {"version": 1}
    warmup = os.path.join(export_dir, "assets.extra", "tf_serving_warmup_requests")
    assert sum(1 for _ in tf.data.TFRecordDataset(warmup)) == 4


@pytest.mark.parametrize("image_shape", [(8, 8), (8, 0, 1), (8.5, 8, 1), "881", None])
def test_invalid_image_shape_raises(tmp_path, image_shape):
    with pytest.raises(ValueError, match="image_shape"):
        saved_model.export_saved_model(_model(), str(tmp_path / "x"), image_shape=image_shape)


def test_export_dir_that_is_a_file_raises(tmp_path):
    path = tmp_path / "file"
    path.write_text("not a directory")
    with pytest.raises(ValueError, match="export_dir"):
        saved_model.export_saved_model(_model(), str(path), image_shape=IMAGE_SHAPE)


def test_copy_with_model_card_copies_everything_but_the_card(exported, tmp_path):
    card_path = os.path.join("assets.extra", "model_card.json")
    new_card = {**MODEL_CARD, "calibration": {"lambda": 0.2, "feasible": True}}
    copy_dir = str(tmp_path / "calibrated" / "1")
    assert saved_model.copy_with_model_card(exported.export_dir, copy_dir, new_card) == copy_dir
    assert saved_model.load_model_card(copy_dir) == new_card
    assert saved_model.load_model_card(exported.export_dir) == MODEL_CARD  # Source untouched.
    source_files, copy_files = testing.file_tree(exported.export_dir), testing.file_tree(copy_dir)
    assert set(source_files) == set(copy_files)
    for name in source_files:
        if name != card_path:
            assert source_files[name] == copy_files[name], name
    images, lambdas = _inputs(3)
    outputs = _serve(saved_model.load_serving_fn(copy_dir), images, lambdas)
    np.testing.assert_allclose(outputs["logits"], _expected(exported.model, images, lambdas), atol=1e-5)
    assert os.listdir(str(tmp_path / "calibrated")) == ["1"]


def test_copy_with_model_card_updates_an_export_in_place(tmp_path):
    export_dir = str(tmp_path / "oat")
    model = _model(seed=0)
    saved_model.export_saved_model(model, export_dir, image_shape=IMAGE_SHAPE)  # No card yet.
    saved_model.copy_with_model_card(export_dir, export_dir, {"version": 2})
    assert os.listdir(str(tmp_path)) == ["oat"]
    assert saved_model.load_model_card(export_dir) == {"version": 2}
    images, lambdas = _inputs(2)
    outputs = _serve(saved_model.load_serving_fn(export_dir), images, lambdas)
    np.testing.assert_allclose(outputs["logits"], _expected(model, images, lambdas), atol=1e-5)


def test_failed_card_update_keeps_the_old_export(tmp_path, monkeypatch):
    export_dir = str(tmp_path / "oat")
    saved_model.export_saved_model(
        _model(seed=0), export_dir, image_shape=IMAGE_SHAPE, model_card={"version": 1}
    )
    before = testing.file_tree(export_dir)
    real_shutil = saved_model.shutil

    def failing_copytree(source, target, **kwargs):
        real_shutil.copytree(source, target, **kwargs)
        with open(os.path.join(target, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    # The copy is half written when it fails.
    monkeypatch.setattr(
        saved_model, "shutil", types.SimpleNamespace(copytree=failing_copytree, rmtree=real_shutil.rmtree)
    )
    with pytest.raises(RuntimeError, match="disk full"):
        saved_model.copy_with_model_card(export_dir, export_dir, {"version": 2})
    assert os.listdir(str(tmp_path)) == ["oat"]
    assert testing.file_tree(export_dir) == before


def test_copy_with_model_card_rejects_bad_arguments_before_writing(exported, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "not_a_saved_model").mkdir()
    cases = [
        (exported.export_dir, str(tmp_path / "a"), {"sa": float("nan")}, "model_card"),
        (exported.export_dir, str(tmp_path / "a"), [("sa", 0.9)], "model_card"),
        (str(tmp_path / "not_a_saved_model"), str(tmp_path / "a"), {}, "source_dir"),
        (exported.export_dir, str(tmp_path / "file"), {}, "export_dir"),
        (exported.export_dir, os.path.join(exported.export_dir, "inner"), {}, "inside `source_dir`"),
    ]
    for source_dir, export_dir, card, match in cases:
        with pytest.raises(ValueError, match=match):
            saved_model.copy_with_model_card(source_dir, export_dir, card)
    assert sorted(os.listdir(str(tmp_path))) == ["file", "not_a_saved_model"]
    assert not os.path.exists(os.path.join(exported.export_dir, "inner"))
    assert saved_model.load_model_card(exported.export_dir) == MODEL_CARD


def _model_with_batch_norm(seed=0):
    """A tiny conv net with a BN whose moving statistics are far from any batch's."""
    image = keras.Input(shape=IMAGE_SHAPE, name="image")
    lam = keras.Input(shape=(), name="lambda")
    initializer = keras.initializers.GlorotUniform(seed=seed)
    h = keras.layers.Conv2D(3, 3, kernel_initializer=initializer, name="conv")(image)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Concatenate()([h, keras.layers.Reshape((1,))(lam)])
    logits = keras.layers.Dense(NUM_CLASSES, kernel_initializer=initializer)(h)
    model = keras.Model({"image": image, "lambda": lam}, logits)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full((3,), 0.7, np.float32))
    bn.moving_variance.assign(np.full((3,), 3.0, np.float32))
    return model


def test_batch_statistics_export_serves_the_view(tmp_path):
    from oat_tf.models import batch_statistics

    model = _model_with_batch_norm()
    view = batch_statistics.batch_statistics_model(model)
    moving_dir = saved_model.export_saved_model(model, str(tmp_path / "moving"), image_shape=IMAGE_SHAPE)
    batch_dir = saved_model.export_saved_model(view, str(tmp_path / "batch"), image_shape=IMAGE_SHAPE)
    images, lambdas = _inputs(6, seed=4)
    batch_logits = _serve(saved_model.load_serving_fn(batch_dir), images, lambdas)["logits"].numpy()
    moving_logits = _serve(saved_model.load_serving_fn(moving_dir), images, lambdas)["logits"].numpy()
    np.testing.assert_allclose(batch_logits, _expected(view, images, lambdas), atol=1e-5)
    np.testing.assert_allclose(moving_logits, _expected(model, images, lambdas), atol=1e-5)
    assert not np.allclose(batch_logits, moving_logits, atol=1e-3)
    # Serving uses each request batch's moments and never moves the statistics.
    np.testing.assert_allclose(model.get_layer("bn").moving_mean.numpy(), 0.7)
