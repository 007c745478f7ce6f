"""The flags every training-step benchmark shares: the attack, warm-up and timed steps, the seed."""

from __future__ import annotations

from absl import flags


def define_step_flags(
    *, timed_steps: bool = True, flag_values: flags.FlagValues = flags.FLAGS
) -> None:
    """Defines --attack_steps, --warmup, --seed and, with `timed_steps`, --steps.

    The defaults are those of every step benchmark: PGD-7, one untimed step,
    two timed ones, seed 0.

    Args:
        timed_steps: bool, also define --steps (a profiler traces one step
            and has none).
        flag_values: where to define them; absl's global flags by default.
    """
    flags.DEFINE_integer(
        "attack_steps", 7, "PGD steps of the training attack.", flag_values=flag_values
    )
    if timed_steps:
        flags.DEFINE_integer(
            "steps", 2, "Timed training steps per measurement.", flag_values=flag_values
        )
    flags.DEFINE_integer(
        "warmup", 1, "Untimed training steps first (tracing, XLA compilation).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "seed", 0, "Seed of the random data, weights, λ draws and attack starts.",
        flag_values=flag_values,
    )
