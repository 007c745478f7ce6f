"""Tests of `oat_tf.models.multi_exit`: output names, stage views, per-exit MACs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import flops
from oat_tf.models import multi_exit
from oat_tf.models import rdi_networks
from oat_tf.models import small_cnn
from tests.models import model_testing

SHAPE = (16, 16, 1)
OUTPUTS = ("exit_1", "exit_2", "final")
TINY = dict(filters=(4, 8), hidden_units=8, exit_conv_filters=4, exit_hidden_units=8)


def _tiny(variant, **kwargs):
    return rdi_networks.rdi_small_cnn(
        variant=variant,
        image_shape=SHAPE,
        encoder=model_testing.TINY_ENCODER,
        **{**TINY, **kwargs},
    )


def _toy(output_keys=("exit_1", "final"), skip_across_exit=False):
    """conv → relu (exit point) → head; relu → conv → final (+ a skip from the image)."""
    inputs = conditioning_lib.model_inputs((6, 6, 1))
    x = keras.layers.Conv2D(2, 3, name="conv1")(inputs["image"])
    x = keras.layers.ReLU(name="relu1")(x)
    head = keras.layers.Dense(3, name="head")(keras.layers.Flatten(name="head_flat")(x))
    y = keras.layers.Conv2D(2, 3, name="conv2")(x)
    y = keras.layers.Flatten(name="flat")(y)
    if skip_across_exit:
        skip = keras.layers.Flatten(name="skip_flat")(inputs["image"])
        y = keras.layers.Concatenate(name="concat")([y, skip])
    final = keras.layers.Dense(3, name="final_logits")(y)
    model = keras.Model(inputs, dict(zip(output_keys, (head, final))))
    model.exit_feature_layers = ("relu1",)
    return model


def test_output_names_of_a_multi_exit_network():
    model = _tiny("plain")
    assert multi_exit.is_multi_exit(model)
    assert multi_exit.output_names(model) == OUTPUTS
    assert multi_exit.output_names_for(2) == OUTPUTS
    assert multi_exit.exit_output_name(3) == "exit_3"


def test_networks_that_are_not_multi_exit():
    backbone = small_cnn.SmallCNN(image_shape=SHAPE, filters=(4, 8), hidden_units=8)
    assert not multi_exit.is_multi_exit(backbone)
    assert not multi_exit.is_multi_exit("not a model")
    assert not multi_exit.is_multi_exit(_toy(("exit_2", "final")))  # exit_1 missing.
    assert not multi_exit.is_multi_exit(_toy(("exit_1", "last")))
    with pytest.raises(ValueError, match="`model` must be a multi-exit network.*Received: model="):
        multi_exit.output_names(backbone)
    with pytest.raises(ValueError, match=r"Received: .*'exit_2', 'final'"):
        multi_exit.output_names(_toy(("exit_2", "final")))
    with pytest.raises(ValueError, match="`index`"):
        multi_exit.exit_output_name(0)
    with pytest.raises(ValueError, match="`num_exits`"):
        multi_exit.output_names_for(0)


@pytest.mark.parametrize("variant", model_testing.VARIANTS)
def test_chained_stage_views_equal_the_full_model(variant):
    model = _tiny(variant)
    model_testing.randomize_normalizations(model, seed=2)
    rng = np.random.default_rng(5)
    lambdas = rng.uniform(size=6).astype("float32")
    lambdas[:2] = 0.0  # Both dual-BN routes.
    inputs = model_testing.random_inputs(SHAPE, lambdas, seed=5)
    expected = model(inputs, training=False)
    views = multi_exit.stage_views(model)
    assert [view.output_name for view in views] == list(OUTPUTS)
    assert [view.is_final for view in views] == [False, False, True]
    features = tf.constant(inputs["image"])
    for view, name in zip(views, OUTPUTS):
        features, logits = view(features, tf.constant(lambdas))
        np.testing.assert_allclose(logits, expected[name], rtol=0, atol=1e-6, err_msg=name)
        if name == "exit_1":
            assert features.shape == (6, 14, 14, 4)  # block1_relu1 → the next stage.
    assert features is None


def test_stage_views_are_cached_and_share_the_network_layers():
    model = _tiny("oat")
    views = multi_exit.stage_views(model)
    assert [v.model for v in multi_exit.stage_views(model)] == [v.model for v in views]
    assert views[1].model.get_layer("block1_conv2") is model.get_layer("block1_conv2")
    assert views[2].model.get_layer("fc1_film") is model.get_layer("fc1_film")
    # Each stage holds its own layers only (and recomputes the λ encoding).
    stage1 = {layer.name for layer in views[1].model.layers}
    assert "block1_conv1" not in stage1 and "exit1_logits" not in stage1
    assert {"block1_conv2", "block2_conv1", "exit2_logits", "lambda_encoder"} <= stage1
    # A weight change of the network shows in its views.
    kernel = model.get_layer("exit2_logits").kernel
    kernel.assign(kernel.numpy() * 2.0)
    inputs = model_testing.random_inputs(SHAPE, [0.0, 0.5])
    features, _ = views[0](inputs["image"], inputs["lambda"])
    _, logits = views[1](features, inputs["lambda"])
    np.testing.assert_allclose(logits, model(inputs)["exit_2"], atol=1e-6)


def test_exit_macs_by_hand():
    model = _tiny("plain")  # No BN: convolutions and dense layers only.
    # Backbone on 16×16×1: conv1 → 14×14×4, conv2 → 12×12×4, pool → 6, conv3 →
    # 4×4×8, conv4 → 2×2×8, pool → 1×1×8, fc 8 → 8 → 8 → 10.
    conv1 = 9 * 1 * 4 * 14 * 14
    conv2 = 9 * 4 * 4 * 12 * 12
    conv3 = 9 * 4 * 8 * 4 * 4
    conv4 = 9 * 8 * 8 * 2 * 2
    dense = 8 * 8 + 8 * 8 + 8 * 10
    # Exit 1 on 14×14×4: conv stride 2 → 6×6×4, pool → 3×3×4 = 36 → 8 → 8 → 10.
    head1 = 9 * 4 * 4 * 6 * 6 + 36 * 8 + 8 * 8 + 8 * 10
    # Exit 2 on 4×4×8: pool → 2×2×8 = 32 → 8 → 8 → 10.
    head2 = 32 * 8 + 8 * 8 + 8 * 10
    assert multi_exit.exit_macs(model) == {
        "exit_1": conv1 + head1,
        "exit_2": conv1 + conv2 + conv3 + head1 + head2,
        "final": conv1 + conv2 + conv3 + conv4 + dense + head1 + head2,
    }
    assert multi_exit.backbone_macs(model) == conv1 + conv2 + conv3 + conv4 + dense


@pytest.mark.parametrize("variant", model_testing.VARIANTS)
def test_macs_agree_with_count_flops(variant):
    model = _tiny(variant)
    costs = multi_exit.exit_macs(model)
    assert list(costs) == list(OUTPUTS)
    assert costs["exit_1"] < costs["exit_2"] < costs["final"]
    assert costs["final"] == flops.count_flops(model)["macs"]  # Every layer, once.
    backbone = small_cnn.SmallCNN(
        variant=variant,
        image_shape=SHAPE,
        encoder=model_testing.TINY_ENCODER,
        filters=TINY["filters"],
        hidden_units=TINY["hidden_units"],
        use_batch_norm=model.exits[0].use_batch_norm,
    )
    assert multi_exit.backbone_macs(model) == flops.count_flops(backbone)["macs"]


def test_toy_model_stage_views_and_macs():
    model = _toy()
    views = multi_exit.stage_views(model)
    images = np.random.default_rng(0).uniform(size=(3, 6, 6, 1)).astype("float32")
    lambdas = np.zeros(3, "float32")
    features, head = views[0](images, lambdas)
    _, final = views[1](features, lambdas)
    expected = model({"image": images, "lambda": lambdas})
    np.testing.assert_allclose(head, expected["exit_1"], atol=1e-6)
    np.testing.assert_allclose(final, expected["final"], atol=1e-6)
    conv1, conv2 = 9 * 2 * 4 * 4, 9 * 2 * 2 * 2 * 2
    assert multi_exit.exit_macs(model) == {
        "exit_1": conv1 + 32 * 3,
        "final": conv1 + conv2 + 8 * 3 + 32 * 3,
    }
    assert multi_exit.backbone_macs(model) == conv1 + conv2 + 8 * 3


def test_exit_points_that_do_not_cut_the_network_raise():
    with pytest.raises(ValueError, match="must cut .* into stages"):
        multi_exit.stage_views(_toy(skip_across_exit=True))
    model = _toy()
    model.exit_feature_layers = ("no_such_layer",)
    with pytest.raises(ValueError, match="`model.exit_feature_layers` must name layers"):
        multi_exit.stage_views(model)
    model = _toy()
    model.exit_feature_layers = ("relu1", "conv2")  # One name per side exit.
    with pytest.raises(ValueError, match="`exit_feature_layers`"):
        multi_exit.exit_macs(model)
    model = _toy()
    del model.exit_feature_layers
    with pytest.raises(ValueError, match="`exit_feature_layers`.*Received: model="):
        multi_exit.stage_views(model)
