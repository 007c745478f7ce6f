"""Tests of SlimmableFiLM against FiLM and numpy."""

import numpy as np
import pytest

from oat_tf.layers import film
from oat_tf.layers import slimmable
from oat_tf.layers import slimmable_film
from tests import testing

WIDTHS = slimmable.DEFAULT_WIDTHS
CHANNELS = 8


def _leaky(x, slope=0.01):
    return np.where(x > 0, x, slope * x)


def _data(channels, seed=0):
    rng = np.random.RandomState(seed)
    return rng.randn(3, 4, 4, channels).astype("float32"), rng.randn(3, 16).astype("float32")


def _built_layer(**kwargs):
    layer = slimmable_film.SlimmableFiLM(**kwargs)
    inputs, code = _data(CHANNELS)
    layer(inputs, code, width=1.0)
    return layer


def _numpy_slimmed_film(layer, inputs, condition, width):
    """The reference: γ and β of width α are the first C(α) of the full γ and β."""
    c, full = slimmable.slimmed_channels(CHANNELS, width), CHANNELS
    h = 2 * c * layer.hidden_multiplier
    hidden = _leaky(condition @ layer.hidden_kernel.numpy()[:, :h] + layer.hidden_bias.numpy()[:h])
    kernel, bias = layer.output_kernel.numpy()[:h], layer.output_bias.numpy()
    gamma = _leaky(hidden @ kernel[:, :c] + bias[:c])
    beta = _leaky(hidden @ kernel[:, full : full + c] + bias[full : full + c])
    return inputs * gamma[:, None, None, :] + beta[:, None, None, :]


def test_full_width_equals_film_with_the_same_weights():
    layer = _built_layer(hidden_multiplier=2)
    reference = film.FiLM(hidden_multiplier=2)
    inputs, code = _data(CHANNELS, seed=1)
    reference(inputs, code)
    reference.set_weights(layer.get_weights())
    np.testing.assert_array_equal(layer(inputs, code, width=1.0), reference(inputs, code))
    assert layer.count_params() == reference.count_params()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("hidden_multiplier", [1, 2])
def test_width_matches_numpy_with_the_sliced_generator(width, hidden_multiplier):
    layer = _built_layer(hidden_multiplier=hidden_multiplier)
    inputs, code = _data(slimmable.slimmed_channels(CHANNELS, width), seed=2)
    out = layer(inputs, code, width=width).numpy()
    assert out.shape == inputs.shape
    np.testing.assert_allclose(out, _numpy_slimmed_film(layer, inputs, code, width), atol=1e-5)


def test_narrow_modulation_is_the_leading_channels_of_the_full_one_when_hidden_units_agree():
    # With zero weights on the hidden units that width 0.5 drops, γ and β of
    # width 0.5 are exactly the first channels of the full-width γ and β.
    layer = _built_layer()
    kernel = layer.output_kernel.numpy()
    kernel[8:] = 0.0  # hidden units 8..15 exist only at full width
    layer.output_kernel.assign(kernel)
    _, code = _data(CHANNELS, seed=3)
    gamma_full, beta_full = layer.modulation(code, width=1.0)
    gamma_half, beta_half = layer.modulation(code, width=0.5)
    np.testing.assert_allclose(gamma_half, gamma_full[:, :4], atol=1e-6)
    np.testing.assert_allclose(beta_half, beta_full[:, :4], atol=1e-6)


def test_compiles_with_xla():
    layer = _built_layer()
    inputs, code = _data(6)
    out = testing.call_in_graph(lambda a, b: layer(a, b, width=0.75), inputs, code, jit_compile=True)
    np.testing.assert_allclose(out, layer(inputs, code, width=0.75), atol=1e-5)


def test_errors_and_config_round_trip():
    layer = _built_layer()
    inputs, code = _data(CHANNELS)
    with pytest.raises(ValueError, match="must have 4 channels .* Received: inputs with 8 channels"):
        layer(inputs, code, width=0.5)
    with pytest.raises(ValueError, match="call it first with width=1.0"):
        slimmable_film.SlimmableFiLM()(*_data(4), width=0.5)
    config_layer = slimmable_film.SlimmableFiLM(widths=(0.5, 1.0), hidden_multiplier=3, negative_slope=0.2)
    rebuilt = testing.assert_config_round_trip(config_layer)
    assert rebuilt.widths == (0.5, 1.0) and rebuilt.hidden_multiplier == 3
    with pytest.raises(ValueError, match="widths"):
        slimmable_film.SlimmableFiLM(widths=(0.5,))
