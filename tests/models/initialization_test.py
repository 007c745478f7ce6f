"""PyTorch's default initialisation: bounds, spread, coverage, determinism, refusals."""

import math

import keras
import numpy as np
import pytest

from oat_tf.models import initialization
from oat_tf.models import rdi_networks
from oat_tf.models import small_cnn

ENCODER = {"lambda_values": [0.0, 1.0], "dim": 8, "seed": 0}


def test_bound_is_one_over_root_fan_in_of_one_output_unit():
    assert initialization.torch_default_bound((100, 10)) == pytest.approx(1 / 10)  # nn.Linear(100, 10)
    assert initialization.torch_default_bound((3, 3, 16, 32)) == pytest.approx(1 / 12)  # nn.Conv2d(16, 32, 3)
    # nn.Conv2d(32, 32, 3, groups=32): the weight is [32, 1, 3, 3], fan_in 9.
    assert initialization.torch_default_bound((3, 3, 32, 1), depthwise=True) == pytest.approx(1 / 3)


def test_every_convolution_and_dense_layer_is_redrawn_and_nothing_else():
    keras.utils.set_random_seed(0)
    network = small_cnn.SmallCNN(variant="oat", encoder=ENCODER, filters=(16, 32), hidden_units=100,
                                 use_batch_norm=True)
    before = {v.path: v.numpy().copy() for v in network.weights}
    assert initialization.initialize_like_torch(network, seed=3) == 7  # 4 convs, fc1, fc2, logits
    for layer in network.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            bound = 1.0 / math.sqrt(np.prod(layer.kernel.shape[:-1]))
            kernel = layer.kernel.numpy()
            assert np.abs(kernel).max() <= bound
            # U(±b) has standard deviation b/√3 (the largest layers pin it within 5%).
            if kernel.size >= 4000:
                assert kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.05), layer.name
            if layer.use_bias:
                bias = layer.bias.numpy()
                assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0
    after = {v.path: v.numpy() for v in network.weights}
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    kernels = {v.path for v in network.weights if v.path.rsplit("/", 1)[-1] in ("kernel", "bias")
               and isinstance(network.get_layer(v.path.split("/")[0]), (keras.layers.Conv2D, keras.layers.Dense))}
    # Only the convolutions' and dense layers' kernels and biases: BN, FiLM and the encoding keep theirs.
    assert changed == kernels


def test_the_same_seed_gives_the_same_weights():
    def draw(seed):
        keras.utils.set_random_seed(seed + 100)  # Keras's own draw differs: it must not matter
        network = small_cnn.SmallCNN(variant="plain", filters=(4, 8), hidden_units=8)
        initialization.initialize_like_torch(network, seed=seed)
        return [w.numpy() for w in network.trainable_weights]

    first, again, other = draw(1), draw(1), draw(2)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_depthwise_kernels_use_the_fan_in_of_one_channel():
    keras.utils.set_random_seed(0)
    network = rdi_networks.rdi_mobilenet_v2(num_classes=10, image_shape=(32, 32, 3))
    initialization.initialize_like_torch(network, seed=0)
    depthwise = [l for l in network.layers if isinstance(l, keras.layers.DepthwiseConv2D)]
    assert depthwise
    for layer in depthwise:
        kernel = layer.kernel.numpy()
        bound = 1.0 / math.sqrt(kernel.shape[0] * kernel.shape[1])
        assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.5 * bound


def test_a_kernel_outside_the_covered_layers_is_refused_before_any_draw():
    inputs = keras.Input((8, 3))
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Conv1D(4, 3)(inputs)))
    network = keras.Model(inputs, outputs)
    before = [w.numpy().copy() for w in network.weights]
    with pytest.raises(ValueError, match=r"weight_init='torch'.*conv1d.*kernel"):
        initialization.initialize_like_torch(network, seed=0)
    for value, weight in zip(before, network.weights):
        np.testing.assert_array_equal(value, weight.numpy())
