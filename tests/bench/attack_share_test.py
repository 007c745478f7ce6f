"""The attack-share benchmark runs and accounts its FLOPs consistently (no timing is asserted)."""

import pytest

from oat_tf.bench import attack_share
from oat_tf.bench import random_batch
from oat_tf import config as config_lib
from oat_tf import models
from oat_tf.models import flops


def test_attack_flops_count_a_forward_and_a_backward_pass_per_step():
    result = attack_share.attack_flops_per_second(
        "small_cnn", batch_size=4, attack_steps=2, precision="mixed_bfloat16", mode="function", repeats=1
    )
    assert result["seconds"] > 0
    network = models.build_model(
        config_lib.ModelConfig(architecture="small_cnn", variant="oat", input_shape=random_batch.input_shape("small_cnn"))
    )
    macs = flops.count_flops(network, batch_size=4)["macs"]
    assert result["flops_per_second"] * result["seconds"] == pytest.approx(2 * 2 * 2 * macs, rel=1e-9)


def test_conv_flops_are_positive():
    assert attack_share.conv_flops_per_second(2, "float32", "function", repeats=1) > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(attack_steps=0), "attack_steps"),
        (dict(mode="graph"), "mode"),
        (dict(precision="float64"), "mixed_precision"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(kwargs, message):
    arguments = dict(batch_size=4, attack_steps=1, precision="float32", mode="function", repeats=1)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        attack_share.attack_flops_per_second("small_cnn", **arguments)
