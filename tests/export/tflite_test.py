"""TFLite conversion of OAT/OATS exports: same logits as Keras, λ and width as inputs, checked requests."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf.attacks import square
from oat_tf.export import saved_model
from oat_tf.export import tflite
from oat_tf.models import slimmable_small_cnn
from oat_tf.models import small_cnn

SHAPE = (28, 28, 1)
WIDTHS = (0.5, 0.75, 1.0)
LOGITS_SCALE = 20.0


def _images(n, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, *SHAPE)).astype(np.float32)


def _lambdas(n, seed=1):
    lambdas = np.random.default_rng(seed).uniform(size=n).astype(np.float32)
    lambdas[:2] = (0.0, 1.0)
    return lambdas


@pytest.fixture(scope="module")
def oat_export(tmp_path_factory):
    keras.utils.set_random_seed(3)
    model = small_cnn.SmallCNN(variant="oat", filters=(4, 8), hidden_units=16, encoder={"dim": 8})
    model({"image": _images(2), "lambda": _lambdas(2)})
    # Logits spread as a trained network's are (a freshly initialised one's all lie within ±0.3).
    model.get_layer("logits").kernel.assign(LOGITS_SCALE * model.get_layer("logits").kernel)
    path = saved_model.export_saved_model(
        model, str(tmp_path_factory.mktemp("oat") / "export"), image_shape=SHAPE, model_card={"name": "tiny"}
    )
    return model, path


@pytest.fixture(scope="module")
def oats_export(tmp_path_factory):
    keras.utils.set_random_seed(4)
    model = slimmable_small_cnn.SlimmableSmallCNN(
        variant="oats", widths=WIDTHS, filters=(4, 8), hidden_units=16, encoder={"dim": 8}
    )
    model({"image": _images(2), "lambda": _lambdas(2)}, width=1.0)
    path = saved_model.export_saved_model(model, str(tmp_path_factory.mktemp("oats") / "export"), image_shape=SHAPE)
    return model, path


@pytest.fixture(scope="module")
def oat_float(oat_export):
    return tflite.TFLiteClassifier(tflite.convert_saved_model(oat_export[1], quantization="none"))


def _int8_tensor_count(classifier):
    return sum(d["dtype"] == np.int8 for d in classifier.interpreter.get_tensor_details())


def test_float_conversion_matches_keras_at_every_lambda(oat_export, oat_float):
    model, _ = oat_export
    images, lambdas = _images(16), _lambdas(16)
    outputs = oat_float.predict(images, lambdas, batch_size=5)  # several interpreter calls
    reference = model({"image": images, "lambda": lambdas}, training=False).numpy()
    np.testing.assert_allclose(outputs["logits"], reference, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(outputs["classes"], reference.argmax(axis=1))
    assert _int8_tensor_count(oat_float) == 0


def test_lambda_is_an_input_of_the_converted_model(oat_export, oat_float):
    model, _ = oat_export
    images = _images(4)
    at = {lam: oat_float.predict(images, np.full([4], lam, np.float32))["logits"] for lam in (0.0, 0.3, 1.0)}
    assert np.abs(at[0.0] - at[1.0]).max() > 1e-3  # λ changes the answer ...
    reference = model({"image": images, "lambda": np.full([4], 0.3, np.float32)}, training=False).numpy()
    np.testing.assert_allclose(at[0.3], reference, atol=1e-4, rtol=1e-4)  # ... as in Keras


def test_slimmable_export_keeps_one_signature_per_width(oats_export):
    model, path = oats_export
    classifier = tflite.TFLiteClassifier(tflite.convert_saved_model(path))
    assert classifier.widths == saved_model.signature_widths(path)
    assert list(classifier.widths.values()) == list(WIDTHS)
    images, lambdas = _images(6), _lambdas(6)
    for width in WIDTHS:
        reference = model({"image": images, "lambda": lambdas}, width=width, training=False).numpy()
        np.testing.assert_allclose(classifier.predict(images, lambdas, width=width)["logits"], reference, atol=1e-4)
    with pytest.raises(ValueError, match=r"`width` must be one of the model's widths \[0.5, 0.75, 1.0\]"):
        classifier.predict(images, lambdas, width=0.6)


@pytest.mark.parametrize("quantization", ["dynamic", "int8"])
def test_quantized_models_agree_with_float(oat_export, oat_float, quantization):
    _, path = oat_export
    calibration = _images(32, seed=5)
    classifier = tflite.TFLiteClassifier(
        tflite.convert_saved_model(path, quantization=quantization, calibration_images=calibration)
    )
    assert _int8_tensor_count(classifier) > 0  # the weights (and, for int8, activations) are int8
    images, lambdas = _images(256, seed=6), _lambdas(256)
    quantized = classifier.predict(images, lambdas)["logits"]
    reference = oat_float.predict(images, lambdas)["logits"]
    # int8 rounding moves each logit by about a percent of their spread, and rarely the argmax.
    assert np.abs(quantized - reference).mean() <= 0.05 * reference.std()
    assert np.mean(quantized.argmax(1) == reference.argmax(1)) >= 0.9


def test_int8_keeps_float_inputs_and_outputs_around_int8_kernels(oat_export):
    _, path = oat_export
    classifier = tflite.TFLiteClassifier(
        tflite.convert_saved_model(path, quantization="int8", calibration_images=_images(8))
    )
    runner = classifier.interpreter.get_signature_runner(saved_model.SIGNATURE_KEY)
    inputs = runner.get_input_details()
    assert inputs["image"]["dtype"] == np.float32 and inputs["lambda_value"]["dtype"] == np.float32
    assert runner.get_output_details()["logits"]["dtype"] == np.float32
    conv_weights = [
        d for d in classifier.interpreter.get_tensor_details() if d["dtype"] == np.int8 and len(d["shape"]) == 4
    ]
    assert conv_weights  # int8 convolution kernels


def test_representative_inputs_cover_both_ends_and_are_seeded():
    images = (np.arange(5 * 4 * 4).reshape(5, 4, 4, 1) % 256).astype(np.uint8)
    examples = tflite.representative_inputs(images, seed=7)
    assert len(examples) == 5
    lambdas = [float(e["lambda_value"][0]) for e in examples]
    assert lambdas[:2] == [0.0, 1.0] and all(0.0 <= lam <= 1.0 for lam in lambdas)
    assert [float(e["lambda_value"][0]) for e in tflite.representative_inputs(images, seed=7)] == lambdas
    assert [float(e["lambda_value"][0]) for e in tflite.representative_inputs(images, seed=8)] != lambdas
    np.testing.assert_allclose(examples[3]["image"][0], images[3] / 255.0, atol=1e-7)
    assert examples[3]["image"].shape == (1, 4, 4, 1) and examples[3]["image"].dtype == np.float32
    with pytest.raises(ValueError, match=r"`calibration_images` must have shape \[N, H, W, C\] with N >= 2"):
        tflite.representative_inputs(images[:1])


def test_conversion_refuses_bad_arguments(oat_export, tmp_path):
    _, path = oat_export
    with pytest.raises(ValueError, match=r"`quantization` must be one of \['none', 'dynamic', 'int8'\]"):
        tflite.convert_saved_model(path, quantization="float16")
    with pytest.raises(ValueError, match="`calibration_images` is required for quantization='int8'"):
        tflite.convert_saved_model(path, quantization="int8")
    with pytest.raises(ValueError, match="must be a SavedModel directory"):
        tflite.convert_saved_model(str(tmp_path))
    adaptive = tmp_path / "adaptive"
    (adaptive / "assets.extra").mkdir(parents=True)
    (adaptive / "saved_model.pb").write_bytes(b"")
    (adaptive / "assets.extra" / "early_exit.json").write_text(json.dumps({}))
    with pytest.raises(ValueError, match="early-exit graph of a multi-exit export is not converted"):
        tflite.convert_saved_model(str(adaptive))


def test_export_image_shape(oat_export):
    assert tflite.export_image_shape(oat_export[1]) == SHAPE


@pytest.mark.parametrize(
    "images, lambdas, pattern",
    [
        (_images(2)[:, :20], np.zeros(2), r"`image` must have shape \[N, 28, 28, 1\]\. Received: shape \[2, 20, 28, 1\]"),
        ((_images(2) * 255).astype(np.uint8), np.zeros(2), r"`image` must be floats in \[0, 1\]"),
        (_images(2) * 255, np.zeros(2), r"`image` values must be finite and in \[0, 1\]"),
        (np.full((2, *SHAPE), np.nan, np.float32), np.zeros(2), r"`image` values must be finite"),
        (_images(2), np.zeros(3), r"`lambda_value` must have shape \[N\], one λ per image \(2\)"),
        (_images(2), np.array([0.5, 1.5]), r"`lambda_value` values must be finite numbers in \[0, 1\]"),
        (_images(2), np.array([0.5, np.nan]), r"`lambda_value` values must be finite numbers in \[0, 1\]"),
    ],
)
def test_requests_are_checked_before_the_interpreter(oat_float, images, lambdas, pattern):
    with pytest.raises(ValueError, match=pattern):
        oat_float.predict(images, lambdas)


def test_the_image_range_tolerance_of_the_saved_model_is_kept(oat_float):
    images = _images(2)
    images[0, 0, 0, 0] = 1 + 0.5 * saved_model.IMAGE_RANGE_TOLERANCE
    assert oat_float.predict(images, np.zeros(2))["logits"].shape == (2, 10)


def test_a_file_that_is_not_an_oat_export_is_refused(tmp_path):
    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def double(self, x):
            return {"y": 2.0 * x}

    module = Doubler()
    flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.double.get_concrete_function()], module
    ).convert()
    path = tmp_path / "plain.tflite"
    path.write_bytes(flatbuffer)
    with pytest.raises(ValueError, match=r"`flatbuffer` must be an oat_tf export: its `serving_default` signature"):
        tflite.TFLiteClassifier(str(path))


def test_square_runs_on_the_interpreter(oat_export, oat_float):
    """Black-box RA: Square queries the TFLite model itself through `logits_fn`."""
    model, _ = oat_export
    images = _images(4, seed=9)
    logits_fn = oat_float.logits_fn(0.5)
    np.testing.assert_allclose(
        logits_fn(tf.constant(images)).numpy(),
        model({"image": images, "lambda": np.full([4], 0.5, np.float32)}, training=False).numpy(),
        atol=1e-4,
    )
    labels = tf.constant(oat_float.predict(images, np.full([4], 0.5, np.float32))["classes"], tf.int32)
    epsilon = 0.1
    x_adv = square.square_linf(logits_fn, tf.constant(images), labels, epsilon=epsilon, num_queries=20, seed=[1, 2])
    x_adv = x_adv.numpy()
    assert np.abs(x_adv - images).max() <= epsilon + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
