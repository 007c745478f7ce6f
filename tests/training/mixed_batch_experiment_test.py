"""End-to-end: a tiny Mixture BN run with the mixed-batch objective (issue 6 switches)."""

import json
import os

from oat_tf import config as config_lib
from oat_tf.training import experiment

ATTACK = config_lib.AttackConfig(epsilon=0.1, step_size=0.05, num_steps=2)


def test_mixture_bn_mixed_batch_run(tmp_path):
    config = config_lib.ExperimentConfig(
        name="mixbn",
        runs_dir=str(tmp_path / "runs"),
        export_dir=None,
        data=config_lib.DataConfig(dataset="embedded", num_train_examples=32, num_eval_examples=16),
        model=config_lib.ModelConfig(architecture="small_cnn", variant="mixture_bn"),
        train_attack=ATTACK,
        optimizer=config_lib.OptimizerConfig(learning_rate=0.05),
        train=config_lib.TrainConfig(
            epochs=1, batch_size=16, seed=1, objective="mixed_batch", clean_fraction=0.25
        ),
        evaluation=config_lib.EvalConfig(lambdas=(0.0, 1.0), attacks=(ATTACK,), batch_size=16),
    )
    run = experiment.run_experiment(config)
    with open(os.path.join(run["run_dir"], "config.json")) as f:
        saved = json.load(f)
    assert saved["train"]["objective"] == "mixed_batch"
    assert saved["train"]["clean_fraction"] == 0.25
    assert saved["model"]["variant"] == "mixture_bn"
    assert run["results"] is not None
