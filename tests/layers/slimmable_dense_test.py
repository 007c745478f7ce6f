"""Tests of SlimmableDense against plain keras Dense layers."""

import keras
import numpy as np
import pytest

from oat_tf.layers import slimmable
from oat_tf.layers import slimmable_dense
from tests import testing

WIDTHS = slimmable.DEFAULT_WIDTHS


def _features(channels, seed=0):
    return np.random.RandomState(seed).randn(3, channels).astype("float32")


def _built_layer(slim_inputs=True, slim_outputs=True, **kwargs):
    layer = slimmable_dense.SlimmableDense(10, slim_inputs=slim_inputs, slim_outputs=slim_outputs, **kwargs)
    layer(_features(16), width=1.0)
    rng = np.random.RandomState(1)
    for w in layer.weights:
        w.assign(rng.randn(*w.shape).astype("float32"))
    return layer


def _plain_dense(kernel, bias, **kwargs):
    plain = keras.layers.Dense(kernel.shape[1], **kwargs)
    plain.build((None, kernel.shape[0]))
    plain.kernel.assign(kernel)
    plain.bias.assign(bias)
    return plain


def test_full_width_equals_plain_dense_with_the_same_weights():
    layer = _built_layer(activation="tanh")
    plain = _plain_dense(layer.kernel.numpy(), layer.bias.numpy(), activation="tanh")
    x = _features(16)
    np.testing.assert_array_equal(layer(x, width=1.0), plain(x))


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("slim_inputs, slim_outputs", [(True, True), (True, False), (False, True)])
def test_width_equals_plain_dense_built_from_the_sliced_kernel(width, slim_inputs, slim_outputs):
    layer = _built_layer(slim_inputs, slim_outputs)
    c_in = slimmable.slimmed_channels(16, width) if slim_inputs else 16
    c_out = slimmable.slimmed_channels(10, width) if slim_outputs else 10
    plain = _plain_dense(layer.kernel.numpy()[:c_in, :c_out], layer.bias.numpy()[:c_out])
    x = _features(c_in)
    out = layer(x, width=width)
    assert out.shape == (3, c_out)
    np.testing.assert_allclose(out, plain(x), atol=1e-5)


def test_classifier_keeps_its_logits_at_every_width():
    layer = slimmable_dense.SlimmableDense(10, slim_outputs=False)
    features = keras.Input((16,))
    assert layer(features, width=1.0).shape == (None, 10)
    assert layer(keras.Input((8,)), width=0.5).shape == (None, 10)


def test_compiles_with_xla():
    layer = _built_layer()
    x = _features(12)
    out = testing.call_in_graph(lambda a: layer(a, width=0.75), x, jit_compile=True)
    np.testing.assert_allclose(out, layer(x, width=0.75), atol=1e-5)


def test_errors_and_config_round_trip():
    layer = _built_layer()
    with pytest.raises(ValueError, match="must have 8 channels .* Received: inputs with 16 channels"):
        layer(_features(16), width=0.5)
    with pytest.raises(ValueError, match="`width` must be one of"):
        layer(_features(16), width=2.0)
    with pytest.raises(ValueError, match="call it first with width=1.0"):
        slimmable_dense.SlimmableDense(4)(_features(8), width=0.5)
    with pytest.raises(NotImplementedError):
        layer.quantize("int8")
    config_layer = slimmable_dense.SlimmableDense(7, widths=(0.5, 1.0), slim_inputs=False, use_bias=False)
    rebuilt = testing.assert_config_round_trip(config_layer)
    assert rebuilt.widths == (0.5, 1.0) and rebuilt.slim_inputs is False and rebuilt.use_bias is False
