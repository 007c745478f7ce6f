"""The shared flags of the training-step benchmarks."""

import pytest
from absl import flags

from oat_tf.bench import step_flags


@pytest.mark.parametrize("timed_steps", [True, False])
def test_defines_the_step_flags_with_their_defaults(timed_steps):
    values = flags.FlagValues()
    step_flags.define_step_flags(timed_steps=timed_steps, flag_values=values)
    values(["bench", "--attack_steps=3"])
    expected = {"attack_steps": 3, "warmup": 1, "seed": 0}
    if timed_steps:
        expected["steps"] = 2
    assert {name: values[name].value for name in values} == expected
