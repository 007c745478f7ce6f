"""Tests for oat_tf.evaluation.saliency against closed-form gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf.evaluation import saliency

H, W, C, K = 4, 3, 2, 5


def _linear_problem(seed=0):
    rng = np.random.RandomState(seed)
    w = rng.randn(H * W * C, K).astype(np.float32)
    b = rng.randn(K).astype(np.float32)
    images = rng.uniform(size=(3, H, W, C)).astype(np.float32)
    labels = np.array([0, 4, 2])
    return w, b, images, labels


def _linear_model(w, b):
    # logits = (1 + λ)·(x W) + b: the λ input must reach the gradient.
    def model(inputs, training=None):
        assert training is False
        x = tf.reshape(inputs["image"], [-1, H * W * C])
        return (1.0 + inputs["lambda"])[:, None] * tf.matmul(x, w) + b

    return model


def _closed_form(w, b, images, labels, lam):
    # ∇ₓ CE = (1 + λ)·W (softmax(z) − onehot(y)), per image.
    x = images.reshape(len(images), -1).astype(np.float64)
    z = (1.0 + lam) * x @ w + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(labels)), labels] -= 1.0
    return ((1.0 + lam) * p @ w.T).reshape(images.shape)


@pytest.mark.parametrize("lam", [0.0, 0.4, 1.0])
def test_input_gradients_equal_the_closed_form(lam):
    w, b, images, labels = _linear_problem()
    gradients = saliency.input_gradients(_linear_model(w, b), images, labels, lam)
    assert gradients.shape == images.shape and gradients.dtype == np.float32
    np.testing.assert_allclose(gradients, _closed_form(w, b, images, labels, lam), rtol=1e-4, atol=1e-6)


def test_input_gradients_of_a_keras_network_match_finite_differences():
    # A dict-input functional network (as oat_tf's) with a smooth activation.
    image = keras.Input((H, W, C), name="image")
    lam = keras.Input((), name="lambda")
    hidden = keras.layers.Dense(6, activation="tanh")(keras.layers.Flatten()(image))
    hidden = keras.layers.Concatenate()([hidden, keras.layers.Reshape((1,))(lam)])
    model = keras.Model({"image": image, "lambda": lam}, keras.layers.Dense(K)(hidden))
    _, _, images, labels = _linear_problem(1)
    gradients = saliency.input_gradients(model, images, labels, 0.5)

    def loss(x):
        logits = model({"image": x, "lambda": np.full([len(x)], 0.5, np.float32)}, training=False)
        return keras.ops.convert_to_numpy(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        ).astype(np.float64)

    step = 1e-2
    for index in [(0, 0, 0, 0), (1, 2, 1, 1), (2, 3, 2, 0)]:
        plus, minus = images.copy(), images.copy()
        plus[index] += step
        minus[index] -= step
        numeric = (loss(plus) - loss(minus)) / (2 * step)
        # Only image index[0] moved: its own loss changes, the others' do not.
        expected = np.zeros(len(images))
        expected[index[0]] = gradients[index]
        np.testing.assert_allclose(numeric, expected, atol=2e-3)


def test_each_image_gets_its_own_gradient():
    w, b, images, labels = _linear_problem()
    model = _linear_model(w, b)
    batch = saliency.input_gradients(model, images, labels, 0.3)
    alone = saliency.input_gradients(model, images[1:2], labels[1:2], 0.3)
    np.testing.assert_allclose(batch[1:2], alone, rtol=1e-5, atol=1e-7)


def test_input_gradients_refuse_a_constant_model():
    def constant(inputs, training=None):
        return tf.zeros([tf.shape(inputs["image"])[0], K])

    with pytest.raises(ValueError, match="depend on the input"):
        saliency.input_gradients(constant, np.zeros((1, H, W, C)), [0], 1.0)


def test_display_maps_center_zero_and_clip_at_three_rms():
    g = np.zeros((2, 1, 2, 2, 1))
    g[0, 0, 0, 0, 0], g[0, 0, 1, 1, 0] = 3.0, -1.0
    shown = saliency.display_maps(g)
    rms = np.sqrt((9.0 + 1.0) / 4.0)
    np.testing.assert_allclose(shown[0, 0, :, :, 0], [[0.5 + 0.5 * min(3.0 / (3 * rms), 1.0), 0.5],
                                                     [0.5, 0.5 - 0.5 / (3 * rms)]], rtol=1e-6)
    np.testing.assert_array_equal(shown[1], 0.5)  # a zero gradient is flat gray
    spiky = np.zeros((1, 10, 10, 1))
    spiky[0, 0, 0, 0] = 100.0
    assert saliency.display_maps(spiky)[0, 0, 0, 0] == 1.0
    assert shown.min() >= 0.0 and shown.max() <= 1.0
    with pytest.raises(ValueError, match="clip"):
        saliency.display_maps(g, clip=0.0)


def test_alignment_is_the_absolute_cosine():
    images = np.ones((3, 2, 2, 1))
    gradients = np.stack([np.ones((2, 2, 1)), -2.0 * np.ones((2, 2, 1)), np.zeros((2, 2, 1))])
    gradients[2, 0, 0, 0] = 0.0
    np.testing.assert_allclose(saliency.alignment(images, gradients), [1.0, 1.0, 0.0])
    orthogonal = np.array([1.0, -1.0, 1.0, -1.0]).reshape(1, 2, 2, 1)
    np.testing.assert_allclose(saliency.alignment(images[:1], orthogonal), [0.0], atol=1e-12)


def test_select_indices():
    assert saliency.select_indices(10, 3) == [0, 1, 2]
    assert saliency.select_indices(2, 5) == [0, 1]
    assert saliency.select_indices(10, 0) == []
    assert saliency.select_indices(10, 3, [7, 2]) == [7, 2]
    for bad in ([10], [1, 1], [-1]):
        with pytest.raises(ValueError, match="indices"):
            saliency.select_indices(10, 3, bad)
