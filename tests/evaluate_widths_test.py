"""The evaluation command line on a slimmable (OATS) run: λ × width, from a run and an export."""

import glob
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf
from tensorboard.plugins.hparams import metadata as hp_metadata

from oat_tf import config as config_lib
from oat_tf.training import experiment
from tests import testing


@pytest.fixture(scope="module")
def oats_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate_widths")
    attack = config_lib.AttackConfig(epsilon=0.3, step_size=0.1, num_steps=2)
    config = config_lib.ExperimentConfig(
        name="tiny_oats",
        runs_dir=str(root / "runs"),
        export_dir=str(root / "export"),
        data=config_lib.DataConfig(dataset="embedded", num_train_examples=32, num_eval_examples=8),
        model=config_lib.ModelConfig(
            architecture="small_cnn",
            variant="oats",
            encoder=config_lib.EncoderConfig(dim=8),
            widths=(0.5, 1.0),
        ),
        train_attack=attack,
        train=config_lib.TrainConfig(epochs=1, batch_size=16),
        evaluation=config_lib.EvalConfig(lambdas=(0.0,), attacks=(attack,), batch_size=8),
    )
    return experiment.run_experiment(config), root


def _evaluate(*flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=testing.REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "oat_tf.evaluate", "--num_examples=8", "--attacks=pgd3",
         "--check_examples=8", "--lambdas=0,1", *flags],
        capture_output=True, text=True, env=env, timeout=600,
    )


def _hparam_width(tensorboard_dir):
    session_dir = os.path.join(tensorboard_dir, "hparams", "lambda_0.0")
    for path in glob.glob(os.path.join(session_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == hp_metadata.SESSION_START_INFO_TAG:
                    info = hp_metadata.parse_session_start_info_plugin_data(
                        value.metadata.plugin_data.content
                    )
                    return info.hparams["width"].number_value
    return None


def test_every_width_is_evaluated_with_checks_tables_and_plots(oats_run):
    summary, root = oats_run
    out = root / "eval"
    run = _evaluate(f"--run_dir={summary['run_dir']}", f"--output_dir={out}", "--saliency_examples=0")
    assert run.returncode == 0, run.stderr[-3000:]
    grid = json.loads((out / "evaluation_widths.json").read_text())
    assert grid["widths"] == [0.5, 1.0]
    for key in ("0.5", "1.0"):
        result = json.loads((out / f"width_{key}" / "evaluation.json").read_text())
        assert result["width"] == float(key)
        assert set(result["clean_accuracy"]) == {"0.0", "1.0"}
        assert [c["name"] for c in result["masking_checks"]][:2] == ["input_gradients", "epsilon_monotonicity"]
        assert grid["per_width"][key]["clean_accuracy"] == result["clean_accuracy"]
        assert (out / f"width_{key}" / "evaluation.md").is_file()
        assert _hparam_width(str(out / f"width_{key}" / "tensorboard")) == float(key)
        assert f"width {key}" in run.stdout
    assert (out / "evaluation_widths.png").is_file()
    assert "SA α=0.5 (%)" in (out / "evaluation_widths.md").read_text()
    assert "SA α=0.5 (%)" in run.stdout
    assert not (out / "evaluation.json").exists()

    # The SavedModel's width signature gives the same accuracies as the run at that width.
    from_export = _evaluate(
        f"--saved_model={summary['export_dir']}", "--dataset=embedded", "--epsilon=0.3",
        "--step_size=0.1", "--widths=0.5", f"--output_dir={root / 'export_eval'}",
        "--nomasking_checks", "--noplots",
    )
    assert from_export.returncode == 0, from_export.stderr[-3000:]
    exported = json.loads((root / "export_eval" / "width_0.5" / "evaluation.json").read_text())
    assert exported["clean_accuracy"] == grid["per_width"]["0.5"]["clean_accuracy"]
    assert not (root / "export_eval" / "width_1.0").exists()


def test_unknown_widths_are_refused(oats_run):
    summary, root = oats_run
    run = _evaluate(f"--run_dir={summary['run_dir']}", f"--output_dir={root / 'bad'}", "--widths=0.75")
    assert run.returncode != 0 and "--widths" in run.stderr, run.stderr[-2000:]
    run = _evaluate(
        f"--saved_model={summary['export_dir']}", "--dataset=embedded",
        f"--output_dir={root / 'bad'}", "--widths=0.75",
    )
    assert run.returncode != 0 and "--widths" in run.stderr, run.stderr[-2000:]
    assert not glob.glob(str(root / "bad" / "**" / "evaluation_state.json"), recursive=True)
