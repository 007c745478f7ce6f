"""Tests of the "mixture_bn" variant: dual BN routed by the image's domain, no FiLM."""

import keras
import numpy as np
import pytest

from oat_tf.layers import dual_batch_norm
from oat_tf.layers import film
from oat_tf.models import conditioning
from tests.models import model_testing

_SHAPES = {"resnet": (8, 8, 3), "wide_resnet": (8, 8, 3), "small_cnn": (16, 16, 1)}


def _single_bn_twin(mixture, family, group):
    """A "plain" network with the mixture network's weights, BN = the `group` BN."""
    plain = model_testing.tiny_model(family, "plain", **({"dropout": 0.0} if family != "resnet" else {}))
    for layer in plain.layers:
        source = mixture.get_layer(layer.name)
        if isinstance(source, dual_batch_norm.DualBatchNormalization):
            layer.gamma.assign(source.gamma[group])
            layer.beta.assign(source.beta[group])
            layer.moving_mean.assign(source.moving_mean[group])
            layer.moving_variance.assign(source.moving_variance[group])
        else:
            layer.set_weights(source.get_weights())
    return plain


def _randomised(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, dual_batch_norm.DualBatchNormalization):
            for weight in (layer.gamma, layer.beta, layer.moving_mean):
                weight.assign(rng.normal(size=weight.shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=layer.moving_variance.shape))
    return model


@pytest.mark.parametrize("family", model_testing.FAMILIES)
@pytest.mark.parametrize("domain, group", [(0.0, 0), (1.0, 1)])
def test_single_domain_batch_equals_single_bn(family, domain, group):
    kwargs = {"dropout": 0.0} if family != "resnet" else {}
    mixture = _randomised(model_testing.tiny_model(family, "mixture_bn", **kwargs))
    plain = _single_bn_twin(mixture, family, group)
    inputs = model_testing.random_inputs(_SHAPES[family], [domain] * 4, seed=1)
    other_before = {
        layer.name: layer.moving_mean.numpy()[1 - group].copy()
        for layer in mixture.layers
        if isinstance(layer, dual_batch_norm.DualBatchNormalization)
    }
    np.testing.assert_allclose(
        mixture(inputs, training=True).numpy(), plain(inputs, training=True).numpy(), atol=1e-4
    )
    for name, before in other_before.items():
        dual, single = mixture.get_layer(name), plain.get_layer(name)
        np.testing.assert_allclose(dual.moving_mean[group], single.moving_mean, atol=1e-5)
        np.testing.assert_allclose(dual.moving_variance[group], single.moving_variance, atol=1e-5)
        np.testing.assert_array_equal(dual.moving_mean.numpy()[1 - group], before)  # no sample
    np.testing.assert_allclose(
        mixture(inputs, training=False).numpy(), plain(inputs, training=False).numpy(), atol=1e-4
    )


def test_no_film_and_no_encoder_and_every_bn_is_routed():
    model = model_testing.tiny_model("resnet", "mixture_bn")
    assert not any(isinstance(layer, film.FiLM) for layer in model.layers)
    assert "lambda_encoder" not in {layer.name for layer in model.layers}
    assert "clean_route" in {layer.name for layer in model.layers}
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


def test_domain_picks_the_bn_at_test_time():
    model = _randomised(model_testing.tiny_model("resnet", "mixture_bn"))
    inputs = model_testing.random_inputs((8, 8, 3), [0.0, 1.0], seed=2)
    inputs["image"][1] = inputs["image"][0]
    out = model(inputs, training=False).numpy()
    assert not np.allclose(out[0], out[1], atol=1e-4)  # clean BN vs adversarial BN
    # Every λ ≠ 0 is the adversarial domain (the convention is 1).
    other = dict(inputs, **{"lambda": np.array([conditioning.ADVERSARIAL_DOMAIN, 0.5], "float32")})
    out2 = model(other, training=False).numpy()
    np.testing.assert_allclose(out2[0], out[1], atol=1e-6)
    np.testing.assert_allclose(out2[1], out[1], atol=1e-6)
