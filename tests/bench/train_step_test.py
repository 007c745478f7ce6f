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


def test_negative_thread_pools_are_refused_with_the_flag_named():
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    completed = subprocess.run(
        [sys.executable, "-m", "oat_tf.bench", "--models=small_cnn", "--inter_op_threads=-1"],
        capture_output=True, text=True, cwd=repo, check=False,
    )
    assert completed.returncode != 0
    assert "--inter_op_threads=-1" in completed.stderr


def test_benchmark_trainer_builds_the_policy_with_loss_scaling_for_float16():
    from oat_tf.training import optimizers

    trainer, _, _ = train_step.benchmark_trainer(
        "small_cnn", batch_size=4, attack_steps=1, mixed_precision="mixed_float16"
    )
    assert trainer.network.compute_dtype == "float16"
    assert isinstance(trainer.optimizer, optimizers.StepCountingLossScaleOptimizer)
    bfloat16, _, _ = train_step.benchmark_trainer(
        "small_cnn", batch_size=4, attack_steps=1, mixed_precision="mixed_bfloat16"
    )
    assert bfloat16.network.compute_dtype == "bfloat16"
    assert isinstance(bfloat16.optimizer, optimizers.SGDWithL2)
