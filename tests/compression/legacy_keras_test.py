"""The tf_keras rebuild of plain networks: same logits, weights copied both ways, refusals."""

import keras
import numpy as np
import pytest
import tf_keras

from oat_tf import config as config_lib
from oat_tf import models
from oat_tf.compression import legacy_keras


def _network(architecture, shape, variant="plain", **kwargs):
    keras.utils.set_random_seed(0)
    config = config_lib.ModelConfig(
        architecture=architecture, variant=variant, input_shape=shape, num_classes=10, **kwargs
    )
    return models.build_model(config)


def _perturb_statistics(model, seed=0):
    """Random weights everywhere, BN moving statistics included (defaults would hide a mix-up)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape), rng.normal(size=beta.shape),
                rng.normal(size=mean.shape), rng.uniform(0.5, 2.0, variance.shape),
            ])


CASES = [
    ("small_cnn", (28, 28, 1), {"filters": (4, 8), "hidden_units": 16}),
    ("rdi_small_cnn", (28, 28, 1), {}),
    ("resnet18", (32, 32, 3), {"filters": (4, 8, 8, 8)}),
    ("rdi_mobilenet_v2", (32, 32, 3), {}),
]


@pytest.mark.parametrize("architecture, shape, sizes", CASES, ids=[case[0] for case in CASES])
def test_rebuild_gives_the_same_logits_in_inference_mode(architecture, shape, sizes):
    network = _network(architecture, shape, **sizes)
    _perturb_statistics(network)
    backbone = legacy_keras.plain_backbone(network)
    rebuilt = legacy_keras.to_tf_keras(backbone)
    assert isinstance(rebuilt, tf_keras.Model)
    copied = legacy_keras.copy_weights(backbone, rebuilt)
    images = np.random.default_rng(1).uniform(size=(5, *shape)).astype(np.float32)
    reference = backbone({"image": images, "lambda": np.ones(5, np.float32)}, training=False)
    np.testing.assert_allclose(rebuilt(images, training=False).numpy(), reference.numpy(), atol=1e-5, rtol=1e-5)
    # Every weighted layer of the backbone was carried over, and no side exit.
    weighted = {layer.name for layer in backbone.layers if layer.weights}
    assert set(copied) == weighted
    assert not [name for name in copied if name.startswith("exit")]


def test_multi_exit_backbone_is_the_path_to_the_final_output():
    network = _network("rdi_small_cnn", (28, 28, 1))
    backbone = legacy_keras.plain_backbone(network)
    images = np.random.default_rng(2).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    inputs = {"image": images, "lambda": np.ones(3, np.float32)}
    np.testing.assert_array_equal(backbone(inputs).numpy(), network(inputs)["final"].numpy())
    rebuilt = legacy_keras.to_tf_keras(backbone)
    assert not [layer.name for layer in rebuilt.layers if layer.name.startswith("exit")]
    # The side exits' layers are gone: the rebuild has fewer weights than the network.
    assert rebuilt.count_params() < network.count_params()


def test_weights_copied_back_from_tf_keras_round_trip():
    network = _network("small_cnn", (28, 28, 1), filters=(4, 8), hidden_units=16)
    rebuilt = legacy_keras.to_tf_keras(network)
    legacy_keras.copy_weights(network, rebuilt)
    rng = np.random.default_rng(3)
    for layer in rebuilt.layers:
        layer.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()])
    legacy_keras.copy_weights(rebuilt, network)
    for layer in rebuilt.layers:
        if layer.weights:
            for mine, theirs in zip(layer.get_weights(), network.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(mine, theirs)


def test_conditioned_networks_are_refused():
    network = _network("small_cnn", (28, 28, 1), variant="oat", filters=(4, 8), hidden_units=16)
    with pytest.raises(ValueError, match="has no tf_keras counterpart|reads its 'lambda' input"):
        legacy_keras.to_tf_keras(network)


def test_copy_refuses_a_missing_layer_or_other_shapes():
    small = _network("small_cnn", (28, 28, 1), filters=(4, 8), hidden_units=16)
    wide = _network("small_cnn", (28, 28, 1), filters=(8, 8), hidden_units=16)
    with pytest.raises(ValueError, match="Layer 'block1_conv1': weights of shapes"):
        legacy_keras.copy_weights(wide, legacy_keras.to_tf_keras(small))
    inputs = tf_keras.Input((4,), name="image")
    other = tf_keras.Model(inputs, tf_keras.layers.Dense(2, name="not_there")(inputs))
    with pytest.raises(ValueError, match="Layer 'not_there' of .* has no namesake"):
        legacy_keras.copy_weights(small, other)
