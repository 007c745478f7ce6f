"""Calibration of a slimmable (OATS) model: (λ, width) chosen under a compute budget."""

import os
import subprocess
import sys

import numpy as np
import pytest

from oat_tf import config as config_lib
from oat_tf import data
from oat_tf import export
from oat_tf.evaluation import calibrate_model
from oat_tf.evaluation import calibration
from oat_tf.evaluation import results as results_lib
from oat_tf.evaluation import robust_eval
from oat_tf.training import experiment
from tests import testing

ATTACK = config_lib.AttackConfig(epsilon=0.3, step_size=0.1, num_steps=2)
LAMBDAS = (0.0, 1.0)
VALIDATION_SIZE = 16


@pytest.fixture(scope="module")
def oats_run(tmp_path_factory):
    """A 2-step OATS run (widths 0.5, 1.0) on 32 digits, 16 held out for validation."""
    root = tmp_path_factory.mktemp("calibrate_widths")
    splits = data.load_splits(config_lib.DataConfig(dataset="embedded"))
    npz = root / "digits.npz"
    train, test = splits.train.take(32 + VALIDATION_SIZE), splits.test.take(8)
    np.savez_compressed(
        npz, x_train=train.images, y_train=train.labels, x_test=test.images, y_test=test.labels
    )
    config = config_lib.ExperimentConfig(
        name="tiny_oats",
        runs_dir=str(root / "runs"),
        export_dir=str(root / "export"),
        data=config_lib.DataConfig(dataset=f"npz:{npz}", validation_size=VALIDATION_SIZE),
        model=config_lib.ModelConfig(
            architecture="small_cnn", variant="oats", encoder=config_lib.EncoderConfig(dim=8),
            widths=(0.5, 1.0),
        ),
        train_attack=ATTACK,
        train=config_lib.TrainConfig(epochs=1, batch_size=16),
        evaluation=config_lib.EvalConfig(lambdas=(0.0,), attacks=(ATTACK,), batch_size=16),
    )
    summary = experiment.run_experiment(config)
    validation = data.load_splits(
        config_lib.DataConfig(dataset=f"npz:{npz}", validation_size=VALIDATION_SIZE)
    ).validation
    return summary, root, data.eval_dataset(validation, batch_size=16)


def _curve(network, width, dataset):
    result = results_lib.merge_results([
        robust_eval.evaluate_lambda_grid(network.width_model(width), dataset, [lam], [ATTACK], seed=0)
        for lam in LAMBDAS
    ])
    return calibration.curve_from_evaluation(result)


def test_budget_restricts_the_widths_and_the_card_records_the_choice(oats_run, tmp_path):
    summary, _, dataset = oats_run
    record = calibrate_model.calibrate(
        run_dir=summary["run_dir"], min_sa=0.0, lambdas=LAMBDAS, attacks=["train"],
        max_width=0.5, output_dir=str(tmp_path / "out"), export_dir=str(tmp_path / "export"),
        progress=False,
    )
    choice = record["choice"]
    assert choice["feasible"] and choice["width"] == 0.5 and choice["signature_name"] == "width_0_5"
    assert record["operating_point"] == {"lambda": choice["lambda"], "width": 0.5}
    assert record["widths"] == [0.5] and record["max_width"] == 0.5
    assert list(record["curves"]) == ["0.5"]
    assert record["curves"]["0.5"] == _curve(summary["network"], 0.5, dataset) == record["curve"]
    card = export.load_model_card(str(tmp_path / "export"))
    assert card["calibration"]["choice"]["width"] == 0.5
    assert card["widths"] == {"width_0_5": 0.5, "serving_default": 1.0}
    assert "test_evaluation_per_width" in card
    assert export.signature_widths(str(tmp_path / "export")) == card["widths"]


def test_without_a_budget_every_width_is_a_candidate(oats_run, tmp_path):
    summary, _, dataset = oats_run
    record = calibrate_model.calibrate(
        run_dir=summary["run_dir"], min_sa=0.0, lambdas=LAMBDAS, attacks=["train"],
        output_dir=str(tmp_path), progress=False,
    )
    assert record["widths"] == [0.5, 1.0] and list(record["curves"]) == ["0.5", "1.0"]
    assert record["curves"]["1.0"] == _curve(summary["network"], 1.0, dataset)
    expected = calibration.choose_lambda_and_width(
        {0.5: record["curves"]["0.5"], 1.0: record["curves"]["1.0"]}, min_sa=0.0
    )
    assert (record["choice"]["width"], record["choice"]["lambda"]) == (expected["width"], expected["lambda"])
    with pytest.raises(calibrate_model.CalibrationError, match="max_width"):
        calibrate_model.calibrate(
            run_dir=summary["run_dir"], min_sa=0.0, lambdas=LAMBDAS, max_width=0.25,
            output_dir=str(tmp_path), progress=False,
        )
    with pytest.raises(calibrate_model.CalibrationError, match="widths"):
        calibrate_model.calibrate(
            run_dir=summary["run_dir"], min_sa=0.0, lambdas=LAMBDAS, widths=[0.75],
            output_dir=str(tmp_path), progress=False,
        )


def test_cli_on_a_saved_model_uses_its_width_signatures(oats_run, tmp_path):
    summary, _, _ = oats_run
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=testing.REPO_ROOT)
    run = subprocess.run(
        [sys.executable, "-m", "oat_tf.calibrate", f"--saved_model={summary['export_dir']}",
         "--min_sa=0", "--max_width=0.5", "--lambdas=0,1", "--attacks=train",
         f"--output_dir={tmp_path}"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Width 0.5:" in run.stdout and "width=0.5 (signature 'width_0_5')" in run.stdout
