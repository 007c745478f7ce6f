"""Tests of the CIFAR-style ResNet: parameter counts, shapes, names, arguments."""

import keras
import numpy as np
import pytest

from oat_tf.layers import dual_batch_norm
from oat_tf.layers import film
from oat_tf.models import resnet
from tests import testing
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


@pytest.mark.parametrize("depth", [20, 60, 4, "34"])
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


def _closed_form_bottleneck_params(
    blocks, filters=(64, 128, 256, 512), channels=3, classes=10, stem_kernel=3
):
    """Trainable parameters of a bottleneck ResNet (torchvision / kuangliu layout)."""
    total = stem_kernel**2 * channels * filters[0] + 2 * filters[0]  # stem conv + BN
    in_ch = filters[0]
    for stage, (width, num) in enumerate(zip(filters, blocks)):
        out_ch = 4 * width
        for block in range(num):
            total += in_ch * width + 2 * width  # 1×1 reduce + BN
            total += 9 * width * width + 2 * width  # 3×3 + BN
            total += width * out_ch + 2 * out_ch  # 1×1 expand + BN
            if block == 0:
                total += in_ch * out_ch + 2 * out_ch  # 1×1 shortcut + BN
            in_ch = out_ch
    return total + in_ch * classes + classes


@pytest.mark.parametrize(
    "depth, torchvision_count",
    [(50, 25_557_032), (101, 44_549_160), (152, 60_192_808)],
)
def test_bottleneck_closed_form_matches_torchvision_imagenet_counts(depth, torchvision_count):
    # The same formula with torchvision's 7×7 stem and 1,000 classes gives the
    # published ImageNet counts, so it is an independent reference.
    block_type, blocks = resnet.blocks_for_depth(depth)
    assert block_type == "bottleneck"
    assert resnet.depth_of(block_type, blocks) == depth
    count = _closed_form_bottleneck_params(blocks, classes=1000, stem_kernel=7)
    assert count == torchvision_count


def test_resnet50_parameter_count_matches_kuangliu():
    model = resnet.ResNet(depth=50, num_classes=10)
    published = 23_520_842  # kuangliu pytorch-cifar ResNet50, 10 classes
    assert _closed_form_bottleneck_params((3, 4, 6, 3)) == published
    assert model_testing.trainable_count(model) == published
    assert model.name == "resnet50_plain"


@pytest.mark.parametrize("depth, shortcuts", [(18, 3), (34, 3), (50, 4)])
def test_number_of_weighted_layers_is_the_depth(depth, shortcuts):
    model = resnet.ResNet(depth=depth, num_classes=10)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    projections = [layer for layer in convs if layer.name.endswith("_shortcut_conv")]
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    # Main path: depth − 1 convolutions and one dense layer; plus one 1×1
    # projection per stage whose input width changes.
    assert len(convs) - len(projections) == depth - 1
    assert len(dense) == 1 and len(projections) == shortcuts


def test_depth_selects_the_block_type():
    assert resnet.blocks_for_depth(18) == ("basic", (2, 2, 2, 2))
    assert resnet.blocks_for_depth(26) == ("basic", (3, 3, 3, 3))
    assert resnet.blocks_for_depth(101) == ("bottleneck", (3, 4, 23, 3))
    assert resnet.blocks_for_depth(152) == ("bottleneck", (3, 8, 36, 3))
    assert resnet.blocks_for_depth(200) == ("bottleneck", (3, 24, 36, 3))
    with pytest.raises(ValueError, match="`depth` 50 names a bottleneck ResNet"):
        resnet.stage_blocks_for_depth(50)


def test_tiny_bottleneck_oat_places_film_after_every_branch_bn():
    model = model_testing.tiny_model(
        "resnet", "oat", block="bottleneck", stage_blocks=(1, 1, 1, 1), stage_filters=(2, 4, 4, 4)
    )
    names = {layer.name for layer in model.layers}
    for suffix in ("conv3", "bn3", "film3", "relu2", "shortcut_conv", "shortcut_bn"):
        assert f"stage1_block1_{suffix}" in names, suffix
    assert sum(isinstance(layer, film.FiLM) for layer in model.layers) == 1 + 3 * 4
    assert model.name == "resnet14_oat"
    assert model.get_layer("stage2_block1_conv2").strides == (2, 2)
    assert model.get_layer("stage2_block1_conv1").strides == (1, 1)
    out = model(model_testing.random_inputs((8, 8, 3), [0.0, 1.0]), training=True)
    assert out.shape == (2, 10) and np.all(np.isfinite(out))


def test_block_argument_round_trip_and_errors():
    model = model_testing.tiny_model("resnet", "plain", block="bottleneck")
    rebuilt = testing.assert_config_round_trip(model)
    assert model_testing.trainable_count(rebuilt) == model_testing.trainable_count(model)
    with pytest.raises(ValueError, match="`block` must be None or one of.*Received: block="):
        resnet.ResNet(depth=18, block="wide")
    with pytest.raises(ValueError, match="`block` must match `depth`.*Received: block="):
        resnet.ResNet(depth=50, block="basic")


def test_a_checkpoint_of_the_earlier_class_loads_and_gives_its_outputs():
    # testdata/resnet_oat.*: written before ResNet built its layers through the
    # conditioning's layer kit; the checkpoint keys and the outputs must not change.
    model = resnet.ResNet(
        variant="oat",
        encoder=model_testing.FIXTURE_ENCODER,
        stage_blocks=(1, 2, 1, 1),
        stage_filters=(4, 8, 8, 8),
        image_shape=(8, 8, 3),
    )
    model_testing.assert_restores_fixture(model, "resnet_oat", "resnet_outputs.npz", prefix="oat")


def test_a_three_stage_cifar_resnet_is_6n_plus_2_deep():
    # The CIFAR ResNet-20 of He et al.: 3×3 stem with 16 filters, 3 stages of 3 basic blocks.
    model = resnet.ResNet(stage_filters=(16, 32, 64), stage_blocks=(3, 3, 3))
    assert model.name == "resnet20_plain"
    assert model.get_layer("stage3_block3_out_relu").output.shape[1:] == (8, 8, 64)
    with pytest.raises(ValueError, match="stage3_block4"):
        model.get_layer("stage3_block4_out_relu")
    # He et al. report 0.27 M parameters for ResNet-20 (with 1×1 projection shortcuts here).
    convs = 9 * 3 * 16 + 3 * 2 * 9 * 16 * 16 + (9 * 16 * 32 + 9 * 32 * 32 + 16 * 32) + 2 * 2 * 9 * 32 * 32
    convs += (9 * 32 * 64 + 9 * 64 * 64 + 32 * 64) + 2 * 2 * 9 * 64 * 64
    # γ and β of every BN: stem, two per block, and the shortcuts of stages 2 and 3.
    batch_norms = 2 * (16 + 6 * 16 + (6 * 32 + 32) + (6 * 64 + 64))
    assert model_testing.trainable_count(model) == convs + batch_norms + 64 * 10 + 10
    with pytest.raises(ValueError, match="`stage_filters` must be 3 positive ints"):
        resnet.ResNet(stage_filters=(16, 32), stage_blocks=(3, 3, 3))
    with pytest.raises(ValueError, match="`stage_blocks` must be one or more positive ints"):
        resnet.ResNet(stage_filters=(16, 32, 64), stage_blocks=())
