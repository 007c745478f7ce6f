"""The evaluation command line: λ ranges, resuming, SavedModel input, checks."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from matplotlib import image as image_lib

from oat_tf import config as config_lib
from oat_tf import evaluate
from oat_tf.training import experiment
from tests import testing


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
    # A PGD-AT frontier run: the tiny run's test evaluation, relabelled as trained at λ = 1.
    frontier_dir = root / "pgdat_1"
    frontier_dir.mkdir()
    (frontier_dir / "test_eval.json").write_text(
        (root / "runs" / "tiny" / "test_eval.json").read_text()
    )
    (frontier_dir / "config.json").write_text(json.dumps(
        {"name": "pgdat_1", "lambda_sampling": {"values": [1.0]}, "model": {"variant": "plain"},
         "data": {"dataset": "embedded"}}
    ))
    return summary, root


def _evaluate(*flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=testing.REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "oat_tf.evaluate", "--num_examples=8", "--attacks=pgd3,pgd6,square20",
         "--check_examples=8", *flags],
        capture_output=True, text=True, env=env, timeout=600,
    )


PLOTS = ("ra_vs_sa", "accuracy_vs_lambda", "seen_vs_unseen", "saliency", "bn_statistics")


def test_evaluate_run_dir_resumes_and_reports_checks(tiny_run):
    summary, root = tiny_run
    out = root / "eval"
    plot_flags = [f"--frontier_runs={root / 'pgdat_1'}", f"--bn_runs={summary['run_dir']}"]
    first = _evaluate(f"--run_dir={summary['run_dir']}", "--lambdas=0,1", f"--output_dir={out}", *plot_flags)
    assert first.returncode == 0, first.stderr[-3000:]
    second = _evaluate(f"--run_dir={summary['run_dir']}", "--lambdas=0:1:0.5", f"--output_dir={out}",
                       "--saliency_indices=1,3", *plot_flags)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming: 2 of 3" in second.stderr
    # The resume state records which checkpoint was measured (path, step, index digest).
    model = json.loads((out / evaluate.STATE_FILE).read_text())["settings"]["model"]
    assert model["checkpoint"].endswith("ckpt-2") and model["step"] == 2 and len(model["index_sha256"]) == 64
    result = json.loads((out / "evaluation.json").read_text())
    assert set(result["clean_accuracy"]) == {"0.0", "0.5", "1.0"}
    assert set(result["robust_accuracy"]) == {"PGD-3", "PGD-6", "Square-20"}
    names = [c["name"] for c in result["masking_checks"]]
    assert names == ["input_gradients", "epsilon_monotonicity", "stronger_pgd_not_weaker",
                     "black_box_not_stronger", "weaker_attacks_not_overstating"]
    assert result["masking_checks"][2]["pairs"], "PGD-6 against PGD-3 must be compared"
    for check in result["masking_checks"]:
        assert ("[PASS] " if check["passed"] else "[FAIL] ") + check["name"] in second.stdout
    assert (out / "evaluation.md").is_file() and (out / "evaluation_ra_vs_sa.png").is_file()

    # Every plot is written, listed and decodes to a non-blank image.
    assert result["plots"] == {name: f"evaluation_{name}.png" for name in PLOTS}
    for file_name in result["plots"].values():
        pixels = image_lib.imread(str(out / file_name))
        assert pixels.shape[0] > 100 and len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 10
    # The frontier point: the tiny run's own test evaluation (PGD-2) at λ = 1,
    # read under the closest attack, with a note saying so.
    (point,) = result["frontier"]
    tiny_eval = json.loads((root / "runs" / "tiny" / "test_eval.json").read_text())
    assert point["name"] == "pgdat_1" and point["lambda_value"] == 1.0 and point["attack"] == "PGD-2"
    assert point["robust_accuracy"] == tiny_eval["robust_accuracy"]["PGD-2"][point["lambda_key"]]
    assert point["notes"] and "closest attack PGD-2" in point["notes"][0]
    assert "closest attack PGD-2" in second.stderr
    assert result["saliency"]["indices"] == [1, 3]
    assert result["saliency"]["lambdas"] == list(config_lib.S1)
    assert [s["layer"] for s in result["bn_running_statistics"]] == ["fc2_bn"] * 4
    assert result["bn_statistics"] == "moving"

    # TensorBoard: the trade-off curve and one HParams session per λ.
    tb_dir = out / "tensorboard"
    trade_off = {}
    for path in glob.glob(str(tb_dir / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "trade_off/sa":
                    trade_off[event.step] = float(tf.make_ndarray(value.tensor))
    assert trade_off.keys() == {0, 500, 1000}
    for key, step in (("0.0", 0), ("0.5", 500), ("1.0", 1000)):
        np.testing.assert_allclose(trade_off[step], result["clean_accuracy"][key], rtol=1e-6)
    assert sorted(p.name for p in (tb_dir / "hparams").iterdir() if p.is_dir()) == [
        "lambda_0.0", "lambda_0.5", "lambda_1.0"]
    # Other settings in the same directory are refused rather than mixed.
    third = _evaluate(f"--run_dir={summary['run_dir']}", "--lambdas=0", f"--output_dir={out}", "--seed=3")
    assert third.returncode != 0 and "other settings" in third.stderr


def test_bad_plot_flags_fail_before_evaluating(tiny_run):
    summary, root = tiny_run
    # The run's config without its checkpoints: flags that need no model are refused
    # before the model is loaded (loading it would fail on the missing checkpoint).
    untrained = root / "untrained"
    untrained.mkdir(exist_ok=True)
    (untrained / "config.json").write_text((root / "runs" / "tiny" / "config.json").read_text())
    for run_dir, flag, message in (
        (untrained, f"--frontier_runs={summary['run_dir']}", "one fixed λ"),
        (untrained, f"--bn_runs={root}", "config.json"),
        (untrained, "--plot_attack=PGD-20", "plot_attack"),
        (summary["run_dir"], "--saliency_indices=99", "saliency_indices"),
        (summary["run_dir"], "--widths=0.5,1.0", "slimmable"),
    ):
        run = _evaluate(f"--run_dir={run_dir}", "--lambdas=0", f"--output_dir={root / 'bad'}", flag)
        assert run.returncode != 0 and message in run.stderr, run.stderr[-2000:]
    assert not (root / "bad" / "evaluation_state.json").exists()


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
    # Saliency through the serving signature equals saliency of the network.
    assert a["saliency"]["lambdas"] == b["saliency"]["lambdas"] == list(config_lib.S1)
    for key, alignment in a["saliency"]["alignment"].items():
        np.testing.assert_allclose(b["saliency"]["alignment"][key], alignment, rtol=1e-3, atol=1e-6)
    # Without the run's config and weights: no seen/unseen and no BN plot.
    assert set(b["plots"]) == {"ra_vs_sa", "accuracy_vs_lambda", "saliency"}


def test_evaluate_with_batch_statistics(tiny_run):
    from oat_tf import data
    from oat_tf.evaluation import loading
    from oat_tf.models import batch_statistics

    summary, _ = tiny_run
    run_dir = summary["run_dir"]
    run = _evaluate(f"--run_dir={run_dir}", "--lambdas=0,1", "--attacks=pgd3", "--bn_statistics=batch",
                    "--nomasking_checks", "--noplots")
    assert run.returncode == 0, run.stderr[-3000:]
    out = os.path.join(run_dir, "evaluation_test_batch_stats")  # the default --output_dir
    with open(os.path.join(out, "evaluation.json")) as f:
        result = json.load(f)
    assert result["bn_statistics"] == "batch"
    with open(os.path.join(out, "evaluation.md")) as f:
        assert "batch statistics" in f.read()
    # SA equals the batch-statistics view's on the same (single) batch of 8,
    # and computing it leaves the network's moving statistics unchanged.
    network, run_config = loading.load_network_from_run(run_dir)
    before = testing.weights_by_path(network)
    splits = data.load_splits(config_lib.DataConfig(
        dataset="embedded", validation_size=run_config["data"]["validation_size"], num_eval_examples=8))
    view = batch_statistics.batch_statistics_model(network)
    images = splits.test.images.astype("float32") / 255.0
    for lam in (0.0, 1.0):
        logits = view({"image": images, "lambda": np.full(8, lam, "float32")}).numpy()
        accuracy = float(np.mean(np.argmax(logits, axis=-1) == splits.test.labels))
        assert result["clean_accuracy"][str(lam)] == pytest.approx(accuracy)
    testing.assert_weights_equal(before, testing.weights_by_path(network))



def test_batch_statistics_need_a_functional_run():
    from absl import app

    with pytest.raises(app.UsageError, match="a SavedModel has no BN layers to switch"):
        evaluate.check_batch_statistics_source("saved_models/run", None)
    for model, message in (
        ({"architecture": "small_cnn", "variant": "oats"}, "slimmable variants"),
        ({"architecture": "rdi_small_cnn", "variant": "plain"}, "multi-exit"),
    ):
        with pytest.raises(app.UsageError, match=message):
            evaluate.check_batch_statistics_source(None, {"model": model})
    evaluate.check_batch_statistics_source(None, {"model": {"architecture": "resnet18", "variant": "plain"}})


def test_bn_statistics_is_part_of_the_resume_settings(tmp_path):
    path = str(tmp_path / evaluate.STATE_FILE)
    settings = {"source": "run", "seed": 0}
    with open(path, "w") as f:
        json.dump({"settings": settings, "per_lambda": {"0.0": {}}}, f)
    # A state written before --bn_statistics existed is a moving-statistics one.
    state = evaluate._load_state(path, {**settings, "bn_statistics": "moving"})
    assert state["per_lambda"] == {"0.0": {}}
    with pytest.raises(ValueError, match="other settings"):
        evaluate._load_state(path, {**settings, "bn_statistics": "batch"})
    assert evaluate.default_output_name("test", "batch") == "evaluation_test_batch_stats"
    assert evaluate.default_output_name("validation", "moving") == "evaluation_validation"


def test_resume_state_is_keyed_on_the_model(tmp_path, monkeypatch):
    path = str(tmp_path / evaluate.STATE_FILE)
    first = {"checkpoint": "/runs/a/checkpoints/ckpt-9", "step": 9, "index_sha256": "aa"}
    settings = {"source": "/runs/a", "seed": 0, "bn_statistics": "moving", "model": first}
    with open(path, "w") as f:
        json.dump({"settings": settings, "per_lambda": {"0.0": {"clean": 1}}}, f)
    assert evaluate._load_state(path, settings)["per_lambda"] == {"0.0": {"clean": 1}}
    # Same directory, trained further (another step and digest): start over, never mix.
    retrained = {**settings, "model": {**first, "step": 18, "index_sha256": "bb"}}
    logged = []
    monkeypatch.setattr(evaluate.logging, "info", lambda message, *args: logged.append(message % args))
    state = evaluate._load_state(path, retrained)
    assert state == {"settings": retrained, "per_lambda": {}}
    assert any("measured on another model" in line for line in logged)
    # Same step, rewritten weights: also another model.
    assert evaluate._load_state(path, {**settings, "model": {**first, "index_sha256": "cc"}})["per_lambda"] == {}


def test_model_paths_are_checked_before_loading(tiny_run, tmp_path):
    summary, _ = tiny_run
    as_saved_model = _evaluate(f"--saved_model={summary['run_dir']}", "--dataset=embedded",
                               f"--output_dir={tmp_path / 'out'}")
    assert as_saved_model.returncode != 0
    assert "`--saved_model` must be a SavedModel directory" in as_saved_model.stderr
    assert "pass it as --run_dir" in as_saved_model.stderr and "Traceback" not in as_saved_model.stderr
    not_a_run = _evaluate(f"--run_dir={tmp_path}")
    assert not_a_run.returncode != 0 and "`--run_dir` must be a training run directory" in not_a_run.stderr
    (tmp_path / "file").write_text("x")
    bad_output = _evaluate(f"--run_dir={summary['run_dir']}", f"--output_dir={tmp_path / 'file'}")
    assert bad_output.returncode != 0 and "`output_dir` must be a directory" in bad_output.stderr
