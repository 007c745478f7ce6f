"""End-to-end runs on tiny data: resume after a kill, artefacts, SavedModel."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf import export
from oat_tf.models import initialization
from oat_tf.training import experiment

ATTACK = config_lib.AttackConfig(epsilon=0.3, step_size=0.1, num_steps=2)


def _config(root, name, **train):
    train_config = dict(epochs=3, batch_size=16, seed=1, checkpoint_every_steps=1)
    train_config.update(train)
    return config_lib.ExperimentConfig(
        name=name,
        runs_dir=str(root / "runs"),
        export_dir=str(root / "export"),
        data=config_lib.DataConfig(dataset="embedded", num_train_examples=48, num_eval_examples=16),
        model=config_lib.ModelConfig(
            architecture="small_cnn", variant="oat", encoder=config_lib.EncoderConfig(dim=8)
        ),
        train_attack=ATTACK,
        optimizer=config_lib.OptimizerConfig(learning_rate=0.05),
        train=config_lib.TrainConfig(**train_config),
        evaluation=config_lib.EvalConfig(lambdas=(0.0, 0.15, 1.0), attacks=(ATTACK,), batch_size=16),
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
    root = tmp_path_factory.mktemp("uninterrupted")
    return experiment.run_experiment(_config(root, "full")), root


def _weights(network):
    return [v.numpy() for v in network.weights]


def test_run_writes_every_artefact(uninterrupted):
    summary, root = uninterrupted
    run_dir = summary["run_dir"]
    for name in ("config.json", "test_eval.json", "test_eval.md", "test_eval_ra_vs_sa.png"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    assert tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")).endswith("ckpt-9")
    assert any(f.startswith("events") for _, _, files in os.walk(os.path.join(run_dir, "tensorboard")) for f in files)
    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    assert saved["model"]["input_shape"] == [28, 28, 1] and saved["train"]["epochs"] == 3
    results = summary["results"]
    assert results["num_examples"] == 16
    assert set(results["clean_accuracy"]) == {"0.0", "0.15", "1.0"}


def test_saved_model_round_trip(uninterrupted):
    summary, _ = uninterrupted
    network = summary["network"]
    serve = export.load_serving_fn(summary["export_dir"])
    rng = np.random.RandomState(0)
    for batch in (1, 5):
        images = rng.uniform(size=(batch, 28, 28, 1)).astype("float32")
        lambdas = rng.choice([0.0, 0.2, 0.7, 1.0], size=batch).astype("float32")
        expected = network({"image": images, "lambda": lambdas}, training=False).numpy()
        outputs = serve(image=tf.constant(images), **{export.LAMBDA_INPUT_NAME: tf.constant(lambdas)})
        np.testing.assert_allclose(outputs["logits"].numpy(), expected, atol=1e-5)
        np.testing.assert_allclose(outputs["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kill_step", [4, 6])  # mid-epoch, and exactly at an epoch end
def test_killed_and_resumed_run_ends_with_the_same_weights(uninterrupted, tmp_path, kill_step):
    summary, _ = uninterrupted
    # No export: the weights are compared in memory (the export is tested above).
    config = dataclasses.replace(_config(tmp_path, "killed"), export_dir=None)
    with pytest.raises(_Killed):
        experiment.run_experiment(config, extra_callbacks=[_KillAtStep(kill_step)])
    with pytest.raises(ValueError, match="--resume"):
        experiment.run_experiment(config)
    resumed = experiment.run_experiment(config, resume=True)
    assert int(resumed["trainer"].optimizer.iterations.numpy()) == 9
    for a, b in zip(_weights(summary["network"]), _weights(resumed["network"])):
        np.testing.assert_allclose(b, a, atol=1e-6)
    assert resumed["results"] == summary["results"]


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    config = _config(tmp_path, "corrupt", epochs=1)
    experiment.run_experiment(dataclasses.replace(config, export_dir=None))
    checkpoint_dir = os.path.join(config.runs_dir, "corrupt", "checkpoints")
    for name in os.listdir(checkpoint_dir):
        if ".data-" in name:
            with open(os.path.join(checkpoint_dir, name), "wb") as f:
                f.write(b"garbage")
    with pytest.raises(ValueError, match="cannot be restored"):
        experiment.run_experiment(config, resume=True)


def test_mixed_float16_run_resumes_exactly_and_serves_float32_logits(tmp_path):
    # Dynamic loss scaling starts at 2^15 and halves on overflow; a skipped step
    # still counts, so the killed run resumes at its place in the data.
    def fp16_config(root):
        # float16 runs slowly on a CPU: a small batch and a small evaluation.
        config = _config(root, "fp16", epochs=2, batch_size=8, mixed_precision="mixed_float16")
        return dataclasses.replace(
            config,
            data=dataclasses.replace(config.data, num_train_examples=24, num_eval_examples=8),
            evaluation=dataclasses.replace(config.evaluation, lambdas=(0.0, 1.0), batch_size=8),
        )

    full = experiment.run_experiment(fp16_config(tmp_path / "a"))
    trainer = full["trainer"]
    assert int(trainer.optimizer.iterations.numpy()) == 6
    assert trainer.network.compute_dtype == "float16"
    config = dataclasses.replace(fp16_config(tmp_path / "b"), export_dir=None)
    with pytest.raises(_Killed):
        experiment.run_experiment(config, extra_callbacks=[_KillAtStep(4)])
    resumed = experiment.run_experiment(config, resume=True)
    assert int(resumed["trainer"].optimizer.iterations.numpy()) == 6
    assert float(resumed["trainer"].optimizer.dynamic_scale.numpy()) == float(
        trainer.optimizer.dynamic_scale.numpy()
    )
    for a, b in zip(_weights(full["network"]), _weights(resumed["network"])):
        np.testing.assert_allclose(b, a, atol=1e-6)
    assert resumed["results"] == full["results"]
    # The export computes as trained and answers in float32.
    serve = export.load_serving_fn(full["export_dir"])
    images = np.random.RandomState(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    lambdas = np.array([0.0, 0.2, 0.7, 1.0], "float32")
    outputs = serve(image=tf.constant(images), **{export.LAMBDA_INPUT_NAME: tf.constant(lambdas)})
    assert outputs["logits"].dtype == tf.float32
    expected = full["network"]({"image": images, "lambda": lambdas}, training=False).numpy()
    np.testing.assert_allclose(outputs["logits"].numpy(), expected, atol=1e-3)


def test_weight_init_torch_redraws_the_new_network_with_the_run_seed(tmp_path, monkeypatch):
    calls = []
    real = initialization.initialize_like_torch

    def spy(network, seed):
        calls.append(seed)
        count = real(network, seed)
        # The network the run trains starts from these draws: every kernel within 1/√fan_in.
        for layer in network.layers:
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
                assert np.abs(layer.kernel.numpy()).max() <= 1 / np.sqrt(np.prod(layer.kernel.shape[:-1]))
        return count

    monkeypatch.setattr(initialization, "initialize_like_torch", spy)
    config = dataclasses.replace(_config(tmp_path, "torch_init", epochs=1, weight_init="torch"), export_dir=None)
    experiment.run_experiment(config)
    assert calls == [1]  # once, with the run's seed
    recorded = json.loads((tmp_path / "runs" / "torch_init" / "config.json").read_text())
    assert recorded["train"]["weight_init"] == "torch"
