"""Tests of SlimmableConv2D against plain keras Conv2D layers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf.layers import slimmable
from oat_tf.layers import slimmable_conv
from tests import testing

WIDTHS = slimmable.DEFAULT_WIDTHS
CONV_ARGS = dict(kernel_size=3, strides=2, padding="same", use_bias=True)


def _images(channels=8, seed=0):
    return np.random.RandomState(seed).randn(2, 7, 7, channels).astype("float32")


def _built_layer(slim_inputs=True, slim_outputs=True, **kwargs):
    layer = slimmable_conv.SlimmableConv2D(
        12, slim_inputs=slim_inputs, slim_outputs=slim_outputs, **{**CONV_ARGS, **kwargs}
    )
    layer(_images(8), width=1.0)
    rng = np.random.RandomState(1)
    for w in layer.weights:
        w.assign(rng.randn(*w.shape).astype("float32"))
    return layer


def _plain_conv(kernel, bias, **kwargs):
    plain = keras.layers.Conv2D(kernel.shape[-1], **{**CONV_ARGS, **kwargs})
    plain.build((None, 7, 7, kernel.shape[-2]))
    plain.kernel.assign(kernel)
    plain.bias.assign(bias)
    return plain


def test_full_width_equals_plain_conv_with_the_same_weights():
    layer = _built_layer(activation="relu")
    plain = _plain_conv(layer.kernel.numpy(), layer.bias.numpy(), activation="relu")
    x = _images(8)
    np.testing.assert_array_equal(layer(x, width=1.0), plain(x))
    np.testing.assert_array_equal(layer(x), plain(x))  # the default width is the full one


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("slim_inputs, slim_outputs", [(True, True), (False, True), (True, False)])
def test_width_equals_plain_conv_built_from_the_sliced_kernel(width, slim_inputs, slim_outputs):
    layer = _built_layer(slim_inputs, slim_outputs)
    c_in = slimmable.slimmed_channels(8, width) if slim_inputs else 8
    c_out = slimmable.slimmed_channels(12, width) if slim_outputs else 12
    assert layer.channels_at(width) == (c_in, c_out)
    plain = _plain_conv(layer.kernel.numpy()[:, :, :c_in, :c_out], layer.bias.numpy()[:c_out])
    x = _images(c_in)
    out = layer(x, width=width)
    assert out.shape == (2, 4, 4, c_out)
    np.testing.assert_allclose(out, plain(x), atol=1e-5)


def test_gradient_reaches_only_the_kernel_slice_of_the_width():
    layer = _built_layer()
    x = _images(4)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, width=0.5) ** 2)
    kernel_grad = tape.gradient(loss, layer.kernel).numpy()
    assert np.all(kernel_grad[:, :, 4:, :] == 0) and np.all(kernel_grad[:, :, :, 6:] == 0)
    assert np.all(np.abs(kernel_grad[:, :, :4, :6]).sum(axis=(0, 1)) > 0)


def test_symbolic_output_shape_per_width():
    layer = slimmable_conv.SlimmableConv2D(12, 3, padding="same", slim_inputs=False)
    image = keras.Input((7, 7, 3))
    for width in sorted(WIDTHS, reverse=True):
        assert layer(image, width=width).shape == (None, 7, 7, slimmable.slimmed_channels(12, width))
    assert layer.kernel.shape == (3, 3, 3, 12)


def test_each_width_is_its_own_trace_and_matches_eager():
    layer = _built_layer()
    fn = tf.function(lambda x, width: layer(x, width=width))
    for width in WIDTHS:
        x = _images(slimmable.slimmed_channels(8, width))
        np.testing.assert_allclose(fn(tf.constant(x), width), layer(x, width=width), atol=1e-5)
    assert fn.experimental_get_tracing_count() == len(WIDTHS)


def test_compiles_with_xla():
    layer = _built_layer()
    x = _images(6)
    out = testing.call_in_graph(lambda a: layer(a, width=0.75), x, jit_compile=True)
    np.testing.assert_allclose(out, layer(x, width=0.75), atol=1e-5)


def test_wrong_width_or_channels_raise_clear_errors():
    layer = _built_layer()
    with pytest.raises(ValueError, match=r"`width` must be one of \(0.5, 0.75, 1.0\). Received: width=0.25"):
        layer(_images(2), width=0.25)
    with pytest.raises(ValueError, match="must have 4 channels .* at width=0.5. Received: inputs with 8 channels"):
        layer(_images(8), width=0.5)
    unbuilt = slimmable_conv.SlimmableConv2D(12, 3)
    with pytest.raises(ValueError, match="call it first with width=1.0"):
        unbuilt(_images(4), width=0.5)
    # Without slimmed inputs the full kernel is known at any width.
    first = slimmable_conv.SlimmableConv2D(12, 3, slim_inputs=False)
    assert first(_images(3), width=0.5).shape[-1] == 6
    assert first.kernel.shape == (3, 3, 3, 12)


def test_config_round_trip_and_argument_errors():
    layer = slimmable_conv.SlimmableConv2D(16, 3, widths=(1.0, 0.25), slim_outputs=False, strides=2)
    rebuilt = testing.assert_config_round_trip(layer)
    assert rebuilt.widths == (0.25, 1.0) and rebuilt.slim_outputs is False and rebuilt.strides == (2, 2)
    with pytest.raises(ValueError, match="groups"):
        slimmable_conv.SlimmableConv2D(16, 3, groups=2)
    with pytest.raises(ValueError, match="data_format"):
        slimmable_conv.SlimmableConv2D(16, 3, data_format="channels_first")
    with pytest.raises(ValueError, match="widths"):
        slimmable_conv.SlimmableConv2D(16, 3, widths=(0.5,))
