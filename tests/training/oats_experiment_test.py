"""End-to-end OATS run on tiny data: train, evaluate and export every width, resume."""

import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf import export
from oat_tf.models import slimmable_small_cnn
from oat_tf.training import experiment
from oat_tf.training import adversarial_trainer

ATTACK = config_lib.AttackConfig(epsilon=0.3, step_size=0.1, num_steps=2)


def _config(root, name, **train):
    train_config = dict(epochs=2, batch_size=16, seed=1, checkpoint_every_steps=1)
    train_config.update(train)
    return config_lib.ExperimentConfig(
        name=name,
        runs_dir=str(root / "runs"),
        export_dir=str(root / "export"),
        data=config_lib.DataConfig(dataset="embedded", num_train_examples=48, num_eval_examples=16),
        model=config_lib.ModelConfig(
            architecture="small_cnn",
            variant="oats",
            encoder=config_lib.EncoderConfig(dim=8),
            widths=(0.5, 1.0),
        ),
        train_attack=ATTACK,
        optimizer=config_lib.OptimizerConfig(learning_rate=0.05),
        train=config_lib.TrainConfig(**train_config),
        evaluation=config_lib.EvalConfig(lambdas=(0.0, 1.0), attacks=(ATTACK,), batch_size=16),
    )


class _Killed(Exception):
    pass


class _KillAtStep(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            raise _Killed()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("oats_uninterrupted")
    return experiment.run_experiment(_config(root, "oats")), root


def test_oats_run_trains_every_width_and_evaluates_the_full_width(uninterrupted):
    summary, root = uninterrupted
    network, trainer = summary["network"], summary["trainer"]
    assert isinstance(network, slimmable_small_cnn.SlimmableSmallCNN)
    assert isinstance(trainer, adversarial_trainer.OATSTrainer)
    assert int(trainer.optimizer.iterations.numpy()) == 6
    results = summary["results"]
    assert set(results["clean_accuracy"]) == {"0.0", "1.0"}
    assert os.path.exists(os.path.join(summary["run_dir"], "config.json"))
    # Every width is exported: serving_default at full width, width_0_5.
    loaded = tf.saved_model.load(summary["export_dir"])
    assert sorted(loaded.signatures) == ["serving_default", "width_0_5"]
    images = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype("float32")
    lambdas = np.array([0.0, 1.0], "float32")
    for name, width in (("serving_default", 1.0), ("width_0_5", 0.5)):
        expected = network({"image": images, "lambda": lambdas}, training=False, width=width).numpy()
        outputs = loaded.signatures[name](image=tf.constant(images), lambda_value=tf.constant(lambdas))
        np.testing.assert_allclose(outputs["logits"].numpy(), expected, atol=1e-5)


def test_oats_run_evaluates_every_width_and_the_card_lists_the_table(uninterrupted):
    summary, _ = uninterrupted
    grid = summary["width_results"]
    assert grid["widths"] == [0.5, 1.0]
    assert list(grid["per_width"]) == ["0.5", "1.0"]
    assert grid["per_width"]["1.0"] == summary["results"]
    assert set(grid["per_width"]["0.5"]["clean_accuracy"]) == {"0.0", "1.0"}
    run_dir = summary["run_dir"]
    for name in ("test_eval.json", "test_eval_width_0.5.json", "test_eval_width_0.5.md",
                 "test_eval_widths.json", "test_eval_widths.md", "test_eval_widths.png"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    card = export.load_model_card(summary["export_dir"])
    assert card["widths"] == {"width_0_5": 0.5, "serving_default": 1.0}
    per_width = card["test_evaluation_per_width"]
    assert per_width["widths"] == [0.5, 1.0]
    assert per_width["per_width"]["0.5"]["clean_accuracy"] == grid["per_width"]["0.5"]["clean_accuracy"]
    assert "SA α=0.5 (%)" in per_width["table"] and "SA α=1.0 (%)" in per_width["table"]
    assert card["test_evaluation"]["clean_accuracy"] == summary["results"]["clean_accuracy"]
    # The card's operating points are the measured (λ, width) pairs.
    assert card["operating_points"] == [
        {"lambda": lam, "width": width} for width in (0.5, 1.0) for lam in (0.0, 1.0)
    ]


def test_killed_and_resumed_oats_run_ends_with_the_same_weights(uninterrupted, tmp_path):
    summary, _ = uninterrupted
    # No export: the weights are compared in memory (the export is tested above).
    config = dataclasses.replace(_config(tmp_path, "oats"), export_dir=None)
    with pytest.raises(_Killed):
        experiment.run_experiment(config, extra_callbacks=[_KillAtStep(4)])
    resumed = experiment.run_experiment(config, resume=True)
    for a, b in zip(summary["network"].weights, resumed["network"].weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-6, err_msg=a.path)
