"""Tests of mixed precision: the policy scope, and networks built under a mixed policy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf.layers import dual_batch_norm
from oat_tf.models import precision
from oat_tf.models import registry

# (architecture, variant, input shape): one of each family and conditioning.
NETWORKS = [
    ("small_cnn", "oat", (16, 16, 1)),
    ("small_cnn", "mixture_bn", (16, 16, 1)),
    ("small_cnn", "oats", (16, 16, 1)),
    ("resnet18", "oat", (16, 16, 3)),
    ("wrn16_2", "plain", (16, 16, 3)),
    ("rdi_small_cnn", "oat", (16, 16, 1)),
]
# No dropout: a training pass of two networks must see the same function.
NO_DROPOUT = {"small_cnn": {"dropout": 0.0}, "wrn16_2": {"dropout": 0.0}, "rdi_small_cnn": {"dropout": 0.0}}


def _build(architecture, variant, shape, policy, seed=0):
    keras.utils.set_random_seed(seed)
    return registry.build_model(
        config_lib.ModelConfig(
            architecture=architecture, variant=variant, num_classes=3, input_shape=shape,
            encoder=config_lib.EncoderConfig(dim=8),
        ),
        precision=policy,
        **NO_DROPOUT.get(architecture, {}),
    )


def _inputs(shape, n=16):
    rng = np.random.RandomState(0)
    return {
        "image": tf.constant(rng.uniform(size=(n, *shape)).astype("float32")),
        "lambda": tf.constant(np.linspace(0.0, 1.0, n).astype("float32")),
    }


def test_scope_sets_the_policy_and_restores_it_even_after_an_error():
    assert keras.config.dtype_policy().name == "float32"
    with precision.dtype_policy_scope("mixed_bfloat16"):
        layer = keras.layers.Dense(2)
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"
    assert (layer.compute_dtype, layer.variable_dtype) == ("bfloat16", "float32")
    with pytest.raises(RuntimeError):
        with precision.dtype_policy_scope("mixed_float16"):
            raise RuntimeError("inside")
    assert keras.config.dtype_policy().name == "float32"


def test_unknown_precision_is_rejected_naming_the_argument():
    with pytest.raises(ValueError, match="mixed_precision.*'float64'"):
        with precision.dtype_policy_scope("float64"):
            pass
    with pytest.raises(ValueError, match="mixed_precision"):
        config_lib.TrainConfig(mixed_precision="bf16")
    assert keras.config.dtype_policy().name == "float32"
    assert precision.uses_loss_scaling("mixed_float16")
    assert not precision.uses_loss_scaling("mixed_bfloat16") and not precision.uses_loss_scaling("float32")


@pytest.mark.parametrize("architecture, variant, shape", NETWORKS)
@pytest.mark.parametrize("policy, low", [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
def test_mixed_network_computes_low_and_keeps_float32_variables_and_logits(
    architecture, variant, shape, policy, low
):
    network = _build(architecture, variant, shape, policy)
    assert keras.config.dtype_policy().name == "float32"
    assert precision.compute_dtype(network) == low
    convolutions = [layer for layer in network._flatten_layers() if isinstance(layer, keras.layers.Conv2D)]
    assert convolutions and all(layer.compute_dtype == low for layer in convolutions)
    assert {v.dtype for v in network.weights} == {"float32"}
    for layer in dual_batch_norm.layers_of(network):
        assert layer.compute_dtype == low and layer.moving_mean.dtype == "float32"
    outputs = network(_inputs(shape), training=True)
    for logits in tf.nest.flatten(outputs):
        assert logits.dtype == tf.float32 and np.isfinite(logits.numpy()).all()


@pytest.mark.parametrize("architecture, variant, shape", NETWORKS)
@pytest.mark.parametrize("policy, tolerance", [("mixed_bfloat16", 0.1), ("mixed_float16", 0.02)])
def test_mixed_network_agrees_with_the_float32_network_of_the_same_weights(
    architecture, variant, shape, policy, tolerance
):
    reference = _build(architecture, variant, shape, "float32")
    mixed = _build(architecture, variant, shape, policy, seed=1)
    mixed.set_weights(reference.get_weights())
    inputs = _inputs(shape)
    for training in (False, True):
        want = tf.nest.flatten(reference(inputs, training=training))
        got = tf.nest.flatten(mixed(inputs, training=training))
        for a, b in zip(want, got):
            # Relative to the logits' spread: bfloat16 keeps 8 bits of mantissa, float16 11.
            scale = float(np.abs(a.numpy()).max()) + 1e-3
            np.testing.assert_allclose(b.numpy(), a.numpy(), atol=tolerance * scale)
    # Training passes moved the same moving statistics the same way (float32 in both).
    for a, b in zip(dual_batch_norm.layers_of(reference), dual_batch_norm.layers_of(mixed)):
        np.testing.assert_allclose(b.moving_mean.numpy(), a.moving_mean.numpy(), atol=0.02)
