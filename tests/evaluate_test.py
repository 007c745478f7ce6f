"""The evaluation command line: λ ranges, resuming, SavedModel input, checks."""

import json
import os
import subprocess
import sys

import pytest

from oat_tf import config as config_lib
from oat_tf import evaluate
from oat_tf.training import experiment
from tests import testing


def test_lambda_range_is_inclusive_and_exact():
    grid = evaluate.parse_lambdas(["0:1:0.05"])
    assert len(grid) == 21 and grid[0] == 0.0 and grid[-1] == 1.0 and 0.05 in grid and 0.15 in grid
    assert evaluate.parse_lambdas(["0.2:0.4:0.1"]) == (0.2, 0.3, 0.4)
    assert evaluate.parse_lambdas(["0.9", "0", "0.5"]) == (0.0, 0.5, 0.9)
    for bad in (["0:1:0"], ["1:0:0.1"], ["0:2:0.5"], ["a:b:c"]):
        with pytest.raises(ValueError, match="lambdas"):
            evaluate.parse_lambdas(bad)


def test_merge_results():
    base = {"num_examples": 4, "attacks": [], "seed": 0}
    a = {**base, "lambdas": [0.0], "clean_accuracy": {"0.0": 1.0}, "worst_case_accuracy": {"0.0": 0.5},
         "robust_accuracy": {"PGD-7": {"0.0": 0.5}}}
    b = {**base, "lambdas": [1.0], "clean_accuracy": {"1.0": 0.75}, "worst_case_accuracy": {"1.0": 0.25},
         "robust_accuracy": {"PGD-7": {"1.0": 0.25}}}
    merged = evaluate.merge_results([a, b])
    assert merged["lambdas"] == [0.0, 1.0]
    assert merged["robust_accuracy"] == {"PGD-7": {"0.0": 0.5, "1.0": 0.25}}
    assert merged["clean_accuracy"] == {"0.0": 1.0, "1.0": 0.75}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    attack = config_lib.AttackConfig(epsilon=0.3, step_size=0.1, num_steps=2)
    config = config_lib.ExperimentConfig(
        name="tiny",
        runs_dir=str(root / "runs"),
        export_dir=str(root / "export"),
        data=config_lib.DataConfig(dataset="embedded", num_train_examples=32, num_eval_examples=8),
        model=config_lib.ModelConfig(architecture="small_cnn", encoder=config_lib.EncoderConfig(dim=8)),
        train_attack=attack,
        train=config_lib.TrainConfig(epochs=1, batch_size=16),
        evaluation=config_lib.EvalConfig(lambdas=(0.0,), attacks=(attack,), batch_size=8),
    )
    summary = experiment.run_experiment(config)
    return summary, root


def _evaluate(*flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=testing.REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "oat_tf.evaluate", "--num_examples=8", "--attacks=pgd3,pgd6,square20",
         "--check_examples=8", *flags],
        capture_output=True, text=True, env=env, timeout=600,
    )


def test_evaluate_run_dir_resumes_and_reports_checks(tiny_run):
    summary, root = tiny_run
    out = root / "eval"
    first = _evaluate(f"--run_dir={summary['run_dir']}", "--lambdas=0,1", f"--output_dir={out}")
    assert first.returncode == 0, first.stderr[-3000:]
    second = _evaluate(f"--run_dir={summary['run_dir']}", "--lambdas=0:1:0.5", f"--output_dir={out}")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming: 2 of 3" in second.stderr
    result = json.loads((out / "evaluation.json").read_text())
    assert set(result["clean_accuracy"]) == {"0.0", "0.5", "1.0"}
    assert set(result["robust_accuracy"]) == {"PGD-3", "PGD-6", "Square-20"}
    names = [c["name"] for c in result["masking_checks"]]
    assert names == ["input_gradients", "epsilon_monotonicity", "stronger_pgd_not_weaker", "black_box_not_stronger"]
    assert result["masking_checks"][2]["pairs"], "PGD-6 against PGD-3 must be compared"
    for check in result["masking_checks"]:
        assert ("[PASS] " if check["passed"] else "[FAIL] ") + check["name"] in second.stdout
    assert (out / "evaluation.md").is_file() and (out / "evaluation_ra_vs_sa.png").is_file()
    # Other settings in the same directory are refused rather than mixed.
    third = _evaluate(f"--run_dir={summary['run_dir']}", "--lambdas=0", f"--output_dir={out}", "--seed=3")
    assert third.returncode != 0 and "other settings" in third.stderr


def test_evaluate_saved_model_matches_run_dir(tiny_run):
    summary, root = tiny_run
    from_run = _evaluate(f"--run_dir={summary['run_dir']}", "--lambdas=0,1", f"--output_dir={root / 'a'}",
                         "--nomasking_checks")
    from_export = _evaluate(f"--saved_model={summary['export_dir']}", "--dataset=embedded", "--epsilon=0.3",
                            "--step_size=0.1", "--lambdas=0,1", f"--output_dir={root / 'b'}", "--nomasking_checks")
    assert from_run.returncode == 0 and from_export.returncode == 0, from_export.stderr[-3000:]
    a = json.loads((root / "a" / "evaluation.json").read_text())
    b = json.loads((root / "b" / "evaluation.json").read_text())
    assert a["clean_accuracy"] == b["clean_accuracy"]
    assert a["robust_accuracy"]["Square-20"] == b["robust_accuracy"]["Square-20"]
