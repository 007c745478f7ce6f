"""Tests of the CIFAR-style ResNet: parameter counts, shapes, names, arguments."""

import keras
import numpy as np
import pytest

from oat_tf.layers import dual_batch_norm
from oat_tf.layers import film
from oat_tf.models import resnet
from tests.models import model_testing


def _closed_form_params(blocks, filters=(64, 128, 256, 512), channels=3, classes=10):
    """Trainable parameters of the PyTorch reference ResNet (BN: γ and β)."""
    total = 9 * channels * filters[0] + 2 * filters[0]  # stem conv + BN
    in_ch = filters[0]
    for stage, (width, num) in enumerate(zip(filters, blocks)):
        for block in range(num):
            total += 9 * in_ch * width + 2 * width + 9 * width * width + 2 * width
            if (stage > 0 and block == 0) or in_ch != width:
                total += in_ch * width + 2 * width  # 1×1 shortcut conv + BN
            in_ch = width
    return total + in_ch * classes + classes


@pytest.mark.parametrize("depth, published", [(18, 11_173_962), (34, 21_282_122)])
def test_plain_parameter_count_matches_published(depth, published):
    model = resnet.ResNet(depth=depth, num_classes=10)
    assert _closed_form_params(resnet.stage_blocks_for_depth(depth)) == published
    assert model_testing.trainable_count(model) == published
    # Non-trainable: moving mean and variance of every BN.
    bn_channels = sum(
        layer.moving_mean.shape[-1]
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert model.count_params() == published + 2 * bn_channels


@pytest.mark.parametrize("variant", model_testing.VARIANTS)
def test_logits_shape(variant):
    model = model_testing.tiny_model("resnet", variant)
    inputs = model_testing.random_inputs((8, 8, 3), [0.0, 0.3])
    assert model(inputs).shape == (2, 10)
    assert model(inputs, training=True).shape == (2, 10)


def test_oat_film_and_dual_bn_placement():
    model = model_testing.tiny_model("resnet", "oat", stage_blocks=(2, 1, 1, 1))
    names = {layer.name: layer for layer in model.layers}
    for name in ("stem_bn", "stage2_block1_bn1", "stage2_block1_bn2", "stage2_block1_shortcut_bn"):
        assert isinstance(names[name], dual_batch_norm.DualBatchNormalization), name
    for name in ("stem_film", "stage2_block1_film1", "stage2_block1_film2"):
        assert isinstance(names[name], film.FiLM), name
    assert "stage2_block1_shortcut_film" not in names
    assert "stage1_block1_shortcut_conv" not in names  # identity shortcut
    # FiLM after the stem and both BNs of each of the 5 residual branches.
    assert sum(isinstance(layer, film.FiLM) for layer in model.layers) == 1 + 2 * 5
    assert model.get_layer("stage4_block1_conv1").strides == (2, 2)
    assert model.get_layer("stage1_block1_conv1").strides == (1, 1)


def test_depth_to_blocks():
    assert resnet.stage_blocks_for_depth(18) == (2, 2, 2, 2)
    assert resnet.stage_blocks_for_depth(34) == (3, 4, 6, 3)
    assert resnet.stage_blocks_for_depth(26) == (3, 3, 3, 3)


@pytest.mark.parametrize("depth", [20, 50, 4, "34"])
def test_unsupported_depth_names_the_argument(depth):
    with pytest.raises(ValueError, match="`depth`.*Received: depth="):
        resnet.ResNet(depth=depth)


def test_input_too_small_names_the_argument():
    with pytest.raises(ValueError, match="`image_shape`.*Received: image_shape="):
        resnet.ResNet(depth=18, image_shape=(7, 32, 3))


def test_bad_stage_filters_name_the_argument():
    with pytest.raises(ValueError, match="`stage_filters`"):
        resnet.ResNet(depth=18, stage_filters=(64, 128))


def test_any_input_of_at_least_eight_pixels():
    model = model_testing.tiny_model("resnet", "plain", image_shape=(11, 9, 3))
    out = model(model_testing.random_inputs((11, 9, 3), [0.0, 1.0]))
    assert out.shape == (2, 10)
    assert np.all(np.isfinite(out))
