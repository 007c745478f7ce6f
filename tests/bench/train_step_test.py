"""The benchmark runs and reports consistent numbers (no timing is asserted)."""

import pytest

from oat_tf.bench import train_step


def test_time_train_step_reports_consistent_figures():
    result = train_step.time_train_step(
        "small_cnn", "function", batch_size=4, attack_steps=1, steps=1, warmup=1
    )
    assert result["seconds_per_step"] > 0
    assert result["images_per_second"] == pytest.approx(4 / result["seconds_per_step"])


def test_unknown_mode_and_model_are_rejected():
    with pytest.raises(ValueError, match="mode"):
        train_step.time_train_step("small_cnn", "graph")
    with pytest.raises(ValueError, match="architecture"):
        train_step.time_train_step("vgg16", "function")
