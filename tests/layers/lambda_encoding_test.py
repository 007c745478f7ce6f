"""Tests of the λ encoder: orthogonality, exact training values, interpolation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf.layers import lambda_encoding
from tests import testing

S1 = (0.0, 0.1, 0.2, 0.3, 0.4, 1.0)


@pytest.mark.parametrize("scheme", ["rand", "dct", "onehot"])
def test_codes_are_orthonormal(scheme):
    matrix = lambda_encoding.encoding_matrix(scheme, 6, 16, seed=3)
    assert matrix.shape == (6, 16)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(6), atol=1e-5)


def test_random_matrix_is_seeded():
    a = lambda_encoding.encoding_matrix("rand", 6, 32, seed=1)
    b = lambda_encoding.encoding_matrix("rand", 6, 32, seed=1)
    c = lambda_encoding.encoding_matrix("rand", 6, 32, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_dct_matches_closed_form():
    d = 8
    matrix = lambda_encoding.encoding_matrix("dct", 3, d)
    k = np.arange(d)
    expected_second = np.sqrt(2.0 / d) * np.cos(np.pi * (2 * k + 1) * 1 / (2 * d))
    np.testing.assert_allclose(matrix[0], np.full(d, 1 / np.sqrt(d)), atol=1e-6)
    np.testing.assert_allclose(matrix[1], expected_second, atol=1e-6)


@pytest.mark.parametrize("scheme", ["rand", "dct", "onehot"])
def test_training_values_map_exactly_to_their_codes(scheme):
    encoder = lambda_encoding.LambdaEncoder(S1, scheme=scheme, dim=16, seed=5)
    codes = encoder(tf.constant(S1)).numpy()
    np.testing.assert_array_equal(codes, lambda_encoding.encoding_matrix(scheme, 6, 16, seed=5))


def test_unseen_values_interpolate_linearly():
    encoder = lambda_encoding.LambdaEncoder(S1, scheme="rand", dim=16, seed=0)
    matrix = lambda_encoding.encoding_matrix("rand", 6, 16, seed=0)
    lam = np.array([0.15, 0.25, 0.35, 0.5, 0.7, 0.9, 0.05], "float32")
    values = np.array(S1)
    expected = []
    for v in lam:
        i = np.searchsorted(values, v, side="right") - 1
        t = (v - values[i]) / (values[i + 1] - values[i])
        expected.append((1 - t) * matrix[i] + t * matrix[i + 1])
    np.testing.assert_allclose(encoder(lam), np.stack(expected), atol=1e-6)


def test_values_outside_the_training_range_take_the_nearest_code():
    encoder = lambda_encoding.LambdaEncoder((0.1, 0.4), scheme="onehot", dim=2)
    np.testing.assert_allclose(encoder(tf.constant([0.0, 0.05, 0.9, 1.0])), [[1, 0], [1, 0], [0, 1], [0, 1]])


def test_none_scheme_is_the_scalar():
    encoder = lambda_encoding.LambdaEncoder(S1, scheme="none")
    np.testing.assert_allclose(encoder(tf.constant([0.0, 0.37, 1.0])), [[0.0], [0.37], [1.0]], atol=1e-7)
    assert encoder.code_dim == 1 and not encoder.weights


def test_matrix_is_a_saved_non_trainable_weight(tmp_path):
    lam_in = keras.Input(shape=(), name="lambda")
    model = keras.Model(lam_in, lambda_encoding.LambdaEncoder(S1, dim=8, seed=11)(lam_in))
    encoder = model.layers[-1]
    assert [w.name for w in encoder.non_trainable_weights] == ["encoding_matrix"]
    assert not encoder.trainable_weights
    # Overwrite the matrix: the saved file must carry the weight, not the seed.
    custom = np.linalg.qr(np.random.RandomState(9).randn(8, 8))[0][:, :6].T.astype("float32")
    encoder.encoding_matrix.assign(custom)
    path = str(tmp_path / "encoder.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded(tf.constant(S1)).numpy(), custom)


def test_clean_route():
    route = lambda_encoding.CleanRoute()(tf.constant([0.0, 0.1, 1.0, 0.0]))
    np.testing.assert_array_equal(route, [True, False, False, True])


def test_config_round_trip_and_errors():
    encoder = lambda_encoding.LambdaEncoder((0.0, 0.5, 1.0), scheme="dct", dim=4, seed=2)
    rebuilt = testing.assert_config_round_trip(encoder)
    assert rebuilt.lambda_values == (0.0, 0.5, 1.0)
    with pytest.raises(ValueError, match="scheme"):
        lambda_encoding.LambdaEncoder(scheme="fourier")
    with pytest.raises(ValueError, match="dim"):
        lambda_encoding.LambdaEncoder(S1, dim=4)
    with pytest.raises(ValueError, match="lambda_values"):
        lambda_encoding.LambdaEncoder((0.0, 1.5))
