"""Tests for oat_tf.evaluation.bn_statistics: exactly the last batch norm's statistics."""

import keras
import numpy as np
import pytest

from oat_tf.evaluation import bn_statistics
from oat_tf.layers import dual_batch_norm
from oat_tf.layers import lambda_encoding
from oat_tf.models import small_cnn


def _set_distinct_statistics(model):
    """Gives every batch norm its own known statistics; returns {name: (mean, var)}."""
    values = {}
    for offset, layer in enumerate(bn_statistics.batch_norm_layers(model)):
        shape = tuple(layer.moving_mean.shape)
        mean = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 10.0 * offset
        variance = 1.0 + 0.5 * mean
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(variance)
        values[layer.name] = (mean, variance)
    return values


def test_dual_batch_norm_gives_clean_and_adversarial_rows():
    model = small_cnn.SmallCNN(variant="oat", image_shape=(16, 16, 1), filters=(2, 3), hidden_units=4,
                               encoder={"dim": 8})
    values = _set_distinct_statistics(model)
    assert len(values) == 6
    layer = bn_statistics.last_batch_norm(model)
    assert isinstance(layer, dual_batch_norm.DualBatchNormalization) and layer.name == "fc2_bn"
    series = bn_statistics.running_statistics(model, "run")
    mean, variance = values["fc2_bn"]
    assert [s.label for s in series] == ["run clean", "run adversarial"]
    for s, row in zip(series, (dual_batch_norm.CLEAN, dual_batch_norm.ADVERSARIAL)):
        assert s.layer_name == "fc2_bn"
        np.testing.assert_array_equal(s.mean, mean[row])
        np.testing.assert_array_equal(s.variance, variance[row])


def test_keras_batch_norm_gives_one_series():
    model = small_cnn.SmallCNN(variant="plain", image_shape=(16, 16, 1), filters=(2, 3), hidden_units=4)
    values = _set_distinct_statistics(model)
    (series,) = bn_statistics.running_statistics(model, "pgdat")
    assert series.label == "pgdat" and series.layer_name == "fc2_bn"
    np.testing.assert_array_equal(series.mean, values["fc2_bn"][0])
    np.testing.assert_array_equal(series.variance, values["fc2_bn"][1])


def test_last_means_last_in_the_graph_inside_nested_models():
    # Layers created in the reverse of their graph order; the last one sits
    # in a nested model.
    late = keras.layers.BatchNormalization(name="late")
    early = dual_batch_norm.DualBatchNormalization(name="early")
    inner_input = keras.Input((3,))
    inner = keras.Model(inner_input, late(keras.layers.Dense(3)(inner_input)), name="inner")
    image = keras.Input((3,), name="image")
    lam = keras.Input((), name="lambda")
    clean = lambda_encoding.CleanRoute()(lam)
    x = early(keras.layers.Dense(3)(image), clean)
    model = keras.Model({"image": image, "lambda": lam}, inner(x))
    assert [layer.name for layer in bn_statistics.batch_norm_layers(model)] == ["early", "late"]
    late.moving_mean.assign([1.0, 2.0, 3.0])
    late.moving_variance.assign([4.0, 5.0, 6.0])
    (series,) = bn_statistics.running_statistics(model, "m")
    np.testing.assert_array_equal(series.mean, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(series.variance, [4.0, 5.0, 6.0])


def test_a_model_without_batch_norm_is_refused():
    model = small_cnn.SmallCNN(variant="plain", image_shape=(16, 16, 1), filters=(2, 3), hidden_units=4,
                               use_batch_norm=False)
    with pytest.raises(ValueError, match="batch norm"):
        bn_statistics.last_batch_norm(model)
