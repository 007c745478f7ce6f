"""End-to-end: a tiny Mixture BN run with the mixed-batch objective (issue 6 switches)."""

import dataclasses
import json
import os

import numpy as np
import pytest

from oat_tf import config as config_lib
from oat_tf import data
from oat_tf import export
from oat_tf.evaluation import loading
from oat_tf.models import batch_statistics
from oat_tf.training import experiment
from tests import testing

ATTACK = config_lib.AttackConfig(epsilon=0.1, step_size=0.05, num_steps=2)


def test_mixture_bn_mixed_batch_run_with_batch_statistics(tmp_path):
    """One tiny run covers the mixed-batch objective, sizes and batch statistics.

    Mixture BN, clean fraction 0.25, `filters`/`hidden_units` from the config,
    the test evaluation and the export with batch statistics.
    """
    config = config_lib.ExperimentConfig(
        name="batchstats",
        runs_dir=str(tmp_path / "runs"),
        export_dir=str(tmp_path / "export"),
        export_bn_statistics="batch",
        data=config_lib.DataConfig(dataset="embedded", num_train_examples=32, num_eval_examples=16),
        model=config_lib.ModelConfig(
            architecture="small_cnn", variant="mixture_bn", filters=(4, 8), hidden_units=8
        ),
        train_attack=ATTACK,
        optimizer=config_lib.OptimizerConfig(learning_rate=0.05),
        train=config_lib.TrainConfig(
            epochs=1, batch_size=16, seed=1, objective="mixed_batch", clean_fraction=0.25
        ),
        evaluation=config_lib.EvalConfig(
            lambdas=(0.0, 1.0), attacks=(ATTACK,), batch_size=16, bn_statistics="batch"
        ),
    )
    run = experiment.run_experiment(config)
    network, run_dir = run["network"], run["run_dir"]
    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    assert saved["train"]["objective"] == "mixed_batch"
    assert saved["train"]["clean_fraction"] == 0.25
    assert saved["model"]["variant"] == "mixture_bn"
    assert saved["model"]["filters"] == [4, 8] and saved["model"]["hidden_units"] == 8
    assert saved["evaluation"]["bn_statistics"] == "batch" and saved["export_bn_statistics"] == "batch"
    assert network.get_layer("block1_conv1").filters == 4
    with open(os.path.join(run_dir, "test_eval.md")) as f:
        assert "batch statistics" in f.read()

    # The test evaluation: SA of the batch-statistics view on the test batches.
    splits = data.load_splits(dataclasses.replace(config.data, augment=False), seed=1)
    view = batch_statistics.batch_statistics_model(network)
    (images, labels), = data.eval_dataset(splits.test, batch_size=16).as_numpy_iterator()
    for lam in (0.0, 1.0):
        inputs = {"image": images, "lambda": np.full(len(labels), lam, "float32")}
        accuracy = float(np.mean(np.argmax(view(inputs), axis=-1) == labels))
        assert run["results"]["clean_accuracy"][str(lam)] == pytest.approx(accuracy)
    # Neither the evaluation nor the export moved the moving statistics: they
    # equal the checkpoint's (written before the test evaluation).
    restored, _ = loading.load_network_from_run(run_dir)
    testing.assert_weights_equal(testing.weights_by_path(restored), testing.weights_by_path(network))

    # The export serves the view (each request batch's moments), not the moving statistics.
    serve = export.load_serving_fn(run["export_dir"])
    lambdas = np.ones(len(labels), "float32")
    served = serve(image=images, lambda_value=lambdas)["logits"].numpy()
    np.testing.assert_allclose(served, view({"image": images, "lambda": lambdas}).numpy(), atol=1e-5)
    moving = network({"image": images, "lambda": lambdas}, training=False).numpy()
    assert not np.allclose(served, moving, atol=1e-4)
    card = export.load_model_card(run["export_dir"])
    assert (card["objective"], card["clean_fraction"], card["test_bn"]) == ("mixed_batch", 0.25, "adversarial")
    assert card["bn_statistics"] == "batch" and card["export_bn_statistics"] == "batch"
