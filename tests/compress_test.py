"""The pruning + defence command line: TFMOT in its own process, pruned, measured, exported, resumed."""

import json
import os
import pkgutil
import subprocess
import sys

import numpy as np
import pytest

import oat_tf
from oat_tf import config as config_lib
from oat_tf import data
from oat_tf.export import saved_model
from oat_tf.training import experiment
from tests import testing

ATTACK = config_lib.AttackConfig(epsilon=0.3, step_size=0.1, num_steps=2)
NUM_EVAL = 24


@pytest.fixture(scope="module")
def backbone_run(tmp_path_factory):
    """A tiny RDI-SmallCNN trained on its final output only: the backbone of an RDI run."""
    root = tmp_path_factory.mktemp("compress")
    config = config_lib.ExperimentConfig(
        name="backbone",
        runs_dir=str(root / "runs"),
        export_dir=str(root / "export"),
        data=config_lib.DataConfig(
            dataset="embedded", num_train_examples=64, validation_size=40, num_eval_examples=NUM_EVAL
        ),
        model=config_lib.ModelConfig(architecture="rdi_small_cnn", variant="plain"),
        lambda_sampling=config_lib.LambdaSamplingConfig(sampling="fixed", values=(1.0,)),
        train_attack=ATTACK,
        optimizer=config_lib.OptimizerConfig(learning_rate=0.01),
        train=config_lib.TrainConfig(epochs=1, batch_size=16, seed=1),
        evaluation=config_lib.EvalConfig(lambdas=(1.0,), attacks=(ATTACK,), batch_size=NUM_EVAL),
        multi_exit=config_lib.MultiExitConfig(defence="main", exit_weights=(0.0, 0.0, 1.0)),
    )
    return experiment.run_experiment(config)["run_dir"], root


def _compress(*flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=testing.REPO_ROOT)
    env.pop("TF_USE_LEGACY_KERAS", None)
    return subprocess.run(
        [sys.executable, "-m", "oat_tf.compress", *flags], capture_output=True, text=True, env=env, timeout=900
    )


def _test_images():
    splits = data.load_splits(config_lib.DataConfig(dataset="embedded", validation_size=40, num_eval_examples=NUM_EVAL))
    return splits.test.images.astype(np.float32) / 255.0, splits.test.labels


def test_prunes_to_the_target_measures_exports_and_resumes(backbone_run):
    run_dir, root = backbone_run
    out = root / "pruned"
    flags = [f"--run_dir={run_dir}", "--sparsities=0.5,0.75", f"--output_dir={out}", "--pruning_frequency=1"]
    first = _compress(*flags)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((out / "compress_results.json").read_text())
    assert [row["name"] for row in summary["rows"]] == ["dense", "dense_finetuned", "sparsity_0.5", "sparsity_0.75"]
    assert [row["fine_tuned"] for row in summary["rows"]] == [False, True, True, True]
    dense = json.loads((out / "dense" / "results.json").read_text())
    assert dense["sparsity"]["zeros"] < dense["sparsity"]["weights"] * 0.01
    # The control went through the same fine-tuning and stays dense.
    control = json.loads((out / "dense_finetuned" / "results.json").read_text())
    assert control["fine_tuning"]["steps"] == 4
    assert control["sparsity"]["zeros"] < control["sparsity"]["weights"] * 0.01
    images, labels = _test_images()
    for target in (0.5, 0.75):
        result = json.loads((out / f"sparsity_{target:g}" / "results.json").read_text())
        # The rebuild carried the trained weights over (checked before any pruning).
        assert result["rebuild_max_logit_difference"] <= 1e-4
        # TFMOT really pruned: every convolution and dense kernel of the backbone, to the target.
        per_layer = result["sparsity"]["per_layer"]
        assert set(per_layer) == {"block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2", "fc1", "fc2", "logits"}
        for name, entry in per_layer.items():
            assert entry["sparsity"] == pytest.approx(target, abs=0.01), name
        # Effective MACs: every prunable layer at its density, the rest unchanged.
        macs = result["macs"]
        assert macs["dense_macs"] == dense["macs"]["dense_macs"]
        removed = sum(e["dense_macs"] - e["effective_macs"] for e in macs["per_layer"].values())
        assert macs["effective_macs"] == pytest.approx(macs["dense_macs"] - removed)
        assert removed == pytest.approx(target * sum(e["dense_macs"] for e in macs["per_layer"].values()), rel=0.02)
        assert result["fine_tuning"]["steps"] == 4 and result["fine_tuning"]["end_step"] == 2
        # The export serves the pruned backbone: its accuracy is the measured SA, and λ is ignored.
        export_dir = str(out / f"sparsity_{target:g}" / "saved_model")
        serve = saved_model.load_serving_fn(export_dir)
        for lam in (0.0, 1.0):
            classes = serve(image=images, lambda_value=np.full(len(labels), lam, np.float32))
            accuracy = float(np.mean(classes[saved_model.CLASSES_OUTPUT_NAME].numpy() == labels))
            assert accuracy == pytest.approx(result["test_evaluation"]["clean_accuracy"]["1.0"])
        card = saved_model.load_model_card(export_dir)
        assert card["compression"]["target_sparsity"] == target
        assert card["compression"]["kernel_sparsity"] == result["sparsity"]["sparsity"]
        # RA is the worst case and never above SA.
        evaluation = result["test_evaluation"]
        assert evaluation["worst_case_accuracy"]["1.0"] <= evaluation["clean_accuracy"]["1.0"]
    assert "--sparsities=0.5,0.75" in (out / "flags.txt").read_text()
    before = testing.file_tree(out)

    again = _compress(*flags)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("done before with the same settings, skipped") == 4
    after = testing.file_tree(out)
    for name in ("dense/results.json", "sparsity_0.5/results.json", "sparsity_0.75/results.json"):
        assert after[name] == before[name]

    changed = _compress(*flags, "--epochs=2")
    assert changed.returncode != 0
    assert "holds a result made with other settings" in changed.stderr and "--overwrite" in changed.stderr
    assert testing.file_tree(out)["sparsity_0.5/results.json"] == before["sparsity_0.5/results.json"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--sparsity=0.5", "--sparsities=0.3"], "Exactly one of --sparsity and --sparsities is required"),
        (["--sparsity=1.0"], "Every sparsity must be in (0, 1)"),
        (["--sparsities=0.3,abc"], "--sparsities must be numbers in (0, 1)"),
        (["--sparsity=0.5", "--epochs=0"], "--epochs must be > 0"),
        (["--sparsity=0.5", "--pruning_end_fraction=1.5"], "--pruning_end_fraction must be in (0, 1]"),
        (["--sparsity=0.5", "--clean_loss_weight=-1"], "--clean_loss_weight must be >= 0"),
    ],
)
def test_bad_flags_are_refused_before_any_work(backbone_run, tmp_path, flags, message):
    run_dir, _ = backbone_run
    out = tmp_path / "out"
    result = _compress(f"--run_dir={run_dir}", f"--output_dir={out}", *flags)
    assert result.returncode != 0
    assert message in result.stderr
    assert not out.exists()


def test_conditioned_and_missing_runs_are_refused(tmp_path):
    oat_run = tmp_path / "oat_run"
    oat_run.mkdir()
    (oat_run / "config.json").write_text(json.dumps({"model": {"variant": "oat"}, "train_attack": {"name": "pgd"}}))
    result = _compress(f"--run_dir={oat_run}", "--sparsity=0.5", f"--output_dir={tmp_path / 'out'}")
    assert result.returncode != 0 and "must be a run of a plain network (variant 'plain')" in result.stderr
    result = _compress(f"--run_dir={tmp_path / 'nowhere'}", "--sparsity=0.5", f"--output_dir={tmp_path / 'out'}")
    assert result.returncode != 0 and "--run_dir" in result.stderr and "config.json" in result.stderr
    assert not (tmp_path / "out").exists()


def test_importing_oat_tf_never_imports_tfmot():
    """Every module of oat_tf but the compress CLI and its TFMOT module, in a fresh process."""
    skipped = {"oat_tf.compress", "oat_tf.compression.tfmot_pruning"}
    modules = [
        info.name for info in pkgutil.walk_packages(oat_tf.__path__, "oat_tf.")
        if info.name not in skipped and not info.name.endswith("__main__")
    ]
    assert "oat_tf.compression.legacy_keras" in modules and "oat_tf.export_tflite" in modules
    script = (
        "import importlib, os, sys\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as error:\n"
        "        if error.name != 'torch':\n"  # The optional PyTorch benchmark.
        "            raise\n"
        "print('tfmot' if 'tensorflow_model_optimization' in sys.modules else 'no tfmot')\n"
        "print(os.environ.get('TF_USE_LEGACY_KERAS', 'unset'))\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=testing.REPO_ROOT)
    env.pop("TF_USE_LEGACY_KERAS", None)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["no", "tfmot", "unset"]
