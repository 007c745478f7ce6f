"""Tests of the Wide ResNet: parameter counts, shapes, block layout, arguments."""

import pytest

from oat_tf.layers import dual_batch_norm
from oat_tf.layers import film
from oat_tf.models import wide_resnet
from tests.models import model_testing


def _closed_form_params(depth, width, channels=3, classes=10):
    """Trainable parameters of WRN-depth-width (BN: γ and β)."""
    n = (depth - 4) // 6
    total = 9 * channels * 16  # stem conv, no BN
    in_ch = 16
    for base in (16, 32, 64):
        out_ch = base * width
        for _ in range(n):
            total += 2 * in_ch + 9 * in_ch * out_ch + 2 * out_ch + 9 * out_ch * out_ch
            if in_ch != out_ch:
                total += in_ch * out_ch  # 1×1 shortcut, no BN
            in_ch = out_ch
    return total + 2 * in_ch + in_ch * classes + classes  # final BN + dense


@pytest.mark.parametrize(
    "depth, width, image_shape, published",
    [(16, 8, (32, 32, 3), 10.96e6), (40, 2, (96, 96, 3), 2.24e6)],
)
def test_plain_parameter_count_matches_published(depth, width, image_shape, published):
    model = wide_resnet.WideResNet(depth=depth, width=width, image_shape=image_shape)
    count = model_testing.trainable_count(model)
    assert count == _closed_form_params(depth, width)
    assert count == pytest.approx(published, abs=0.005e6)
    if (depth, width) == (16, 8):
        assert count == 10_961_370
    else:
        assert count == 2_243_546


@pytest.mark.parametrize("variant", model_testing.VARIANTS)
def test_logits_shape(variant):
    model = model_testing.tiny_model("wide_resnet", variant)
    inputs = model_testing.random_inputs((8, 8, 3), [0.0, 0.3])
    assert model(inputs).shape == (2, 10)
    assert model(inputs, training=True).shape == (2, 10)


def test_stl10_resolution():
    model = model_testing.tiny_model("wide_resnet", "oat", image_shape=(96, 96, 3))
    # Strides 1, 2, 2 as in the reference: the last feature map is 24×24 and
    # is pooled whole.
    assert model.get_layer("final_bn").output.shape[1:3] == (24, 24)
    inputs = model_testing.random_inputs((96, 96, 3), [0.0, 1.0])
    assert model(inputs).shape == (2, 10)


def test_oat_block_layout_follows_reference():
    model = model_testing.tiny_model("wide_resnet", "oat")
    names = {layer.name: layer for layer in model.layers}
    assert isinstance(names["stage1_block1_bn1"], dual_batch_norm.DualBatchNormalization)
    assert isinstance(names["stage1_block1_film1"], film.FiLM)
    assert isinstance(names["stage2_block1_film2"], film.FiLM)
    assert isinstance(names["final_bn"], dual_batch_norm.DualBatchNormalization)
    assert "final_film" not in names
    assert names["stage2_block1_dropout"].rate == pytest.approx(0.3)
    assert names["stage2_block1_shortcut_conv"].strides == (2, 2)
    # The shortcut convolution reads the first activation, as in WRN.
    shortcut_input = names["stage2_block1_shortcut_conv"].input
    assert shortcut_input is names["stage2_block1_relu1"].output
    # One block per stage at depth 10: 2 FiLMs each.
    assert sum(isinstance(layer, film.FiLM) for layer in model.layers) == 6


def test_final_film_option():
    model = model_testing.tiny_model("wide_resnet", "oat", film_after_final_norm=True)
    assert isinstance(model.get_layer("final_film"), film.FiLM)


@pytest.mark.parametrize("depth", [15, 4, 12])
def test_bad_depth_names_the_argument(depth):
    with pytest.raises(ValueError, match="`depth`.*Received: depth="):
        wide_resnet.WideResNet(depth=depth, width=2)


def test_bad_width_and_dropout_name_the_argument():
    with pytest.raises(ValueError, match="`width`"):
        wide_resnet.WideResNet(depth=16, width=0)
    with pytest.raises(ValueError, match="`dropout`"):
        wide_resnet.WideResNet(depth=16, width=1, dropout=1.0)


def test_input_too_small_names_the_argument():
    with pytest.raises(ValueError, match="`image_shape`"):
        wide_resnet.WideResNet(depth=10, width=1, image_shape=(3, 3, 3))
