"""Tests for oat_tf.bench.attack_cost: the pass counts behind its predictions."""

import pytest

from oat_tf import config as config_lib
from oat_tf.attacks import autoattack
from oat_tf.bench import attack_cost


def test_pass_counts_of_each_attack():
    standard = autoattack.attack_configs("standard", 0.3)
    counts = [attack_cost.passes(a) for a in standard]
    # APGD-CE-100: x⁰ … x¹⁰⁰; APGD-T: 9 runs of 101; FAB-T: 9 runs of 100
    # gradient steps and 100 forward checks; Square: one query per step.
    assert [c["forward_backward"] for c in counts] == [101, 909, 900, 0]
    assert [c["forward"] for c in counts] == [2, 2, 902, 5002]
    pgd = attack_cost.passes(config_lib.AttackConfig(num_steps=10, num_restarts=2))
    assert pgd == {"forward_backward": 20, "forward": 3}
    with pytest.raises(ValueError, match="pass count"):
        attack_cost.passes(type("A", (), {"name": "cw"})())
