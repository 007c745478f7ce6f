"""End-to-end RDI-Nets runs on tiny data: calibration on validation, report, adaptive export."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf import data
from oat_tf.evaluation import early_exit
from oat_tf.evaluation import multi_exit_eval
from oat_tf.models import exit_rule
from oat_tf.training import experiment
from oat_tf.training import multi_exit_experiment

ATTACK = config_lib.AttackConfig(epsilon=0.3, step_size=0.1, num_steps=1)


def _config(root, name, **multi_exit):
    return config_lib.ExperimentConfig(
        name=name,
        runs_dir=str(root / "runs"),
        export_dir=str(root / "export"),
        data=config_lib.DataConfig(
            dataset="embedded", num_train_examples=72, validation_size=40, num_eval_examples=24
        ),
        model=config_lib.ModelConfig(architecture="rdi_small_cnn", variant="plain"),
        lambda_sampling=config_lib.LambdaSamplingConfig(sampling="fixed", values=(1.0,)),
        train_attack=ATTACK,
        optimizer=config_lib.OptimizerConfig(learning_rate=0.01),
        train=config_lib.TrainConfig(epochs=1, batch_size=16, seed=1),
        evaluation=config_lib.EvalConfig(lambdas=(1.0,), attacks=(ATTACK,), batch_size=24),
        multi_exit=config_lib.MultiExitConfig(**multi_exit),
    )


@pytest.fixture(scope="module")
def rdi_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rdi")
    config = _config(root, "rdi", defence="max_average", eval_forms=("single", "max_average"))
    return experiment.run_experiment(config), config


def test_thresholds_are_calibrated_on_the_validation_split(rdi_run):
    summary, config = rdi_run
    with open(os.path.join(summary["run_dir"], multi_exit_experiment.THRESHOLDS_FILE)) as f:
        calibration = json.load(f)
    assert calibration["split"] == "validation"
    splits = data.load_splits(config.data, seed=config.train.seed)
    assert calibration["num_validation_examples"] == splits.validation.num_examples > 0
    assert calibration["thresholds"] == summary["results"]["thresholds"]
    # Recomputed independently: the validation digits' entropies under the
    # saved thresholds give the recorded usage, close to the target profile.
    images = splits.validation.images.astype(np.float32) / 255.0
    outputs = summary["network"]({"image": images, "lambda": np.ones([len(images)], np.float32)}, training=False)
    entropies = np.stack([exit_rule.entropy_numpy(np.asarray(outputs[n])) for n in ("exit_1", "exit_2")], 1)
    exits = exit_rule.assign_exits(entropies, multi_exit_eval.thresholds_from_json(calibration["thresholds"]))
    usage = np.bincount(exits, minlength=3) / len(exits)
    np.testing.assert_allclose(usage, calibration["validation_exit_distribution"], atol=1e-9)
    np.testing.assert_allclose(usage, early_exit.equal_usage_fractions(2, 0.2), atol=2.5 / len(exits))


def test_report_and_results(rdi_run):
    summary, _ = rdi_run
    run_dir = summary["run_dir"]
    for name in ("test_eval_multi_exit.json", "test_eval_multi_exit.md", "test_eval_multi_exit_exit_distribution_1.0.png"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    entry = summary["results"]["per_lambda"]["1.0"]
    assert set(entry["attacks"]["PGD-1"]) == {"Branch 1", "Branch 2", "Main Branch", "Max-Average"}
    assert summary["results"]["num_examples"] == 24
    assert "| TA |" in summary["table"]


def test_adaptive_export_matches_the_evaluation_rule(rdi_run):
    from oat_tf.export import adaptive_saved_model  # pylint: disable=import-outside-toplevel

    summary, config = rdi_run
    assert summary["export_dir"] and os.path.isdir(summary["export_dir"])
    splits = data.load_splits(config.data, seed=config.train.seed)
    images = splits.test.images[:10].astype(np.float32) / 255.0
    serve = adaptive_saved_model.load_adaptive_fn(summary["export_dir"], "serving_default")
    served = serve(image=tf.constant(images), **{_lambda_input(serve): tf.ones([10], tf.float32)})
    outputs = summary["network"]({"image": images, "lambda": np.ones([10], np.float32)}, training=False)
    thresholds = multi_exit_eval.thresholds_from_json(summary["thresholds"])
    exit_index, chosen = exit_rule.select_exits([outputs[n] for n in ("exit_1", "exit_2", "final")], thresholds)
    np.testing.assert_array_equal(served["exit"].numpy(), exit_index.numpy())
    np.testing.assert_allclose(served["logits"].numpy(), chosen.numpy(), rtol=1e-4, atol=1e-4)


def _lambda_input(serve):
    names = set(serve.structured_input_signature[1])
    (name,) = names - {"image"}
    return name


def test_a_finished_run_is_not_overwritten(rdi_run):
    _, config = rdi_run
    with pytest.raises(ValueError, match="already holds checkpoints"):
        experiment.run_experiment(config)


def test_backbone_baseline_without_early_exit_needs_no_validation(tmp_path):
    config = _config(tmp_path, "backbone", defence="main", exit_weights=(0.0, 0.0, 1.0),
                     threshold_target="none", eval_forms=("single",), efficiency_attack=False)
    config = config_lib.ExperimentConfig(**{
        **{f: getattr(config, f) for f in config.__dataclass_fields__},
        "data": config_lib.DataConfig(dataset="embedded", num_train_examples=32, validation_size=0,
                                      num_eval_examples=16),
        "export_dir": None,
    })
    summary = experiment.run_experiment(config)
    entry = summary["results"]["per_lambda"]["1.0"]
    assert entry["clean"]["exit_distribution"] == [0.0, 0.0, 1.0]
    assert entry["clean"]["average_macs"] == summary["results"]["backbone_macs"]
    assert summary["export_dir"] is None


def test_early_exit_needs_a_validation_split(tmp_path):
    config = _config(tmp_path, "no_validation")
    config = config_lib.ExperimentConfig(**{
        **{f: getattr(config, f) for f in config.__dataclass_fields__},
        "data": config_lib.DataConfig(dataset="embedded", num_train_examples=16, validation_size=0,
                                      num_eval_examples=8),
    })
    with pytest.raises(ValueError, match="validation"):
        experiment.run_experiment(config)


def test_multi_exit_config_checks():
    with pytest.raises(ValueError, match="defence"):
        config_lib.MultiExitConfig(defence="best")
    with pytest.raises(ValueError, match="exit_weights"):
        config_lib.MultiExitConfig(exit_weights=(0.0, 0.0))
    with pytest.raises(ValueError, match="flops_budget"):
        config_lib.MultiExitConfig(threshold_target="flops_budget")
    with pytest.raises(ValueError, match="eval_forms"):
        config_lib.MultiExitConfig(eval_forms=("single", "single"))
    with pytest.raises(ValueError, match="variant"):
        config_lib.ExperimentConfig(model=config_lib.ModelConfig(architecture="rdi_small_cnn", variant="oats"))


def _run_calibrate_exits(*flags):
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    from tests import testing  # pylint: disable=import-outside-toplevel

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=testing.REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "oat_tf.calibrate_exits", *flags],
        capture_output=True, text=True, env=env, timeout=600,
    )


def test_calibrate_exits_meets_a_flops_budget_on_validation(rdi_run):
    summary, _ = rdi_run
    run_dir = summary["run_dir"]
    macs = summary["results"]["exit_macs"]
    backbone = summary["results"]["backbone_macs"]
    # A budget between exiting everyone at exit 1 and running everyone to the end.
    budget = (macs["exit_1"] + macs["final"]) / 2 / backbone
    result = _run_calibrate_exits(
        f"--run_dir={run_dir}", "--exit_thresholds=flops_budget", f"--exit_flops_budget={budget!r}", "--tag=budget"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(os.path.join(run_dir, "exit_thresholds_budget.json")) as f:
        calibration = json.load(f)
    assert calibration["split"] == "validation" and calibration["target"] == "flops_budget"
    assert calibration["validation_average_macs"] <= budget * backbone + 1e-6
    assert os.path.isfile(os.path.join(run_dir, "test_eval_multi_exit_budget.json"))
    assert "| TA |" in result.stdout
    bad = _run_calibrate_exits(f"--run_dir={run_dir}", "--exit_thresholds=flops_budget", "--exit_flops_budget=1.5")
    assert bad.returncode != 0 and "flops_budget" in bad.stderr


def test_multi_exit_oat_gets_thresholds_per_lambda_and_serves_them(tmp_path):
    """Calibrated at every evaluation λ on validation; the export holds the λ → thresholds table."""
    from oat_tf.export import adaptive_saved_model  # pylint: disable=import-outside-toplevel

    config = _config(tmp_path, "rdi_oat", defence="max_average", eval_forms=("single",), efficiency_attack=False)
    config = config_lib.ExperimentConfig(**{
        **{f: getattr(config, f) for f in config.__dataclass_fields__},
        "model": config_lib.ModelConfig(
            architecture="rdi_small_cnn", variant="oat", encoder=config_lib.EncoderConfig(dim=8)
        ),
        "lambda_sampling": config_lib.LambdaSamplingConfig(sampling="element_wise", values=(0.0, 1.0)),
        "evaluation": config_lib.EvalConfig(lambdas=(0.0, 1.0), attacks=(ATTACK,), batch_size=24),
    })
    summary = experiment.run_experiment(config)
    with open(os.path.join(summary["run_dir"], multi_exit_experiment.THRESHOLDS_FILE)) as f:
        calibration = json.load(f)
    assert sorted(calibration["per_lambda"]) == ["0", "1"]
    assert calibration["per_lambda"]["1"]["thresholds"] == calibration["thresholds"]  # The evaluation's λ.
    assert [calibration["per_lambda"][k]["lambda"] for k in ("0", "1")] == [0.0, 1.0]
    splits = data.load_splits(config.data, seed=config.train.seed)
    validation = data.eval_dataset(splits.validation, batch_size=config.evaluation.batch_size)
    for key, lam in (("0", 0.0), ("1", 1.0)):
        # Each row reproduces its λ's recorded validation usage.
        record = calibration["per_lambda"][key]
        row = multi_exit_eval.thresholds_from_json(record["thresholds"])
        entropies = multi_exit_experiment.validation_entropies(summary["network"], validation, lam)
        usage = np.bincount(exit_rule.assign_exits(entropies, row), minlength=3) / len(entropies)
        np.testing.assert_allclose(usage, record["validation_exit_distribution"], atol=1e-9)
    # The test evaluation used each λ's own row.
    assert summary["results"]["lambda_thresholds"] == {
        "0.0": calibration["per_lambda"]["0"]["thresholds"], "1.0": calibration["per_lambda"]["1"]["thresholds"],
    }
    # The export serves these rows (how it applies them: tests/export/adaptive_saved_model_test.py).
    info = adaptive_saved_model.load_early_exit_info(summary["export_dir"])
    assert info["lambda_thresholds"]["lambdas"] == [0.0, 1.0]
    assert info["lambda_thresholds"]["thresholds"] == [
        list(multi_exit_eval.thresholds_from_json(calibration["per_lambda"][k]["thresholds"])) for k in ("0", "1")
    ]
    # The model card lists the same rows as operating points.
    from oat_tf import operating_point  # pylint: disable=import-outside-toplevel
    from oat_tf.export import saved_model  # pylint: disable=import-outside-toplevel

    card_points = [
        operating_point.OperatingPoint.from_json(p)
        for p in saved_model.load_model_card(summary["export_dir"])["operating_points"]
    ]
    assert card_points == [
        operating_point.OperatingPoint(lam, exit_thresholds=calibration["per_lambda"][k]["thresholds"])
        for k, lam in (("0", 0.0), ("1", 1.0))
    ]
