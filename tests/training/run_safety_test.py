"""A run never destroys or half-writes: refusals come before any work (issue 15).

One tiny run (1 epoch on 32 digits) is trained once; every test then tries to
misuse it, and checks both the error and that nothing changed on disk.
"""

import dataclasses
import json
import os
import stat

import numpy as np
import pytest

from oat_tf import config as config_lib
from oat_tf import run_directory
from oat_tf.training import experiment
from tests import testing

ATTACK = config_lib.AttackConfig(epsilon=0.3, step_size=0.1, num_steps=1)


def _config(root, name="run", **kwargs):
    return config_lib.ExperimentConfig(
        name=name,
        runs_dir=str(root / "runs"),
        export_dir=str(root / "exports"),
        data=config_lib.DataConfig(dataset="embedded", num_train_examples=32, num_eval_examples=8),
        model=config_lib.ModelConfig(
            architecture="small_cnn", variant="oat", encoder=config_lib.EncoderConfig(dim=8),
            filters=(4, 8), hidden_units=16,
        ),
        train_attack=ATTACK,
        optimizer=config_lib.OptimizerConfig(learning_rate=0.05),
        train=config_lib.TrainConfig(epochs=1, batch_size=16, seed=1),
        evaluation=config_lib.EvalConfig(lambdas=(0.0, 1.0), attacks=(ATTACK,), batch_size=8),
        **kwargs,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    old_umask = os.umask(0o022)
    try:
        experiment.run_experiment(_config(root))
    finally:
        os.umask(old_umask)
    return root


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_run_files_and_export_are_readable_by_others(trained):
    # TF Serving running as another user must read the export (umask 022 here).
    run_dir = trained / "runs" / "run"
    assert _mode(run_dir / "config.json") == 0o644 and _mode(run_dir / "test_eval.json") == 0o644
    export_dir = trained / "exports" / "run"
    for parent, dirnames, filenames in os.walk(export_dir):
        assert _mode(parent) == 0o755, parent
        for name in filenames:
            assert _mode(os.path.join(parent, name)) == 0o644, name


def test_resume_with_changed_settings_is_refused_and_the_record_kept(trained):
    config = _config(trained)
    before = testing.file_tree(trained)
    changed = dataclasses.replace(
        config,
        optimizer=dataclasses.replace(config.optimizer, learning_rate=0.5),
        train=dataclasses.replace(config.train, seed=7),
    )
    with pytest.raises(run_directory.RunRefusedError) as error:
        experiment.run_experiment(changed, resume=True)
    assert "optimizer.learning_rate: 0.05 -> 0.5" in str(error.value)
    assert "train.seed: 1 -> 7" in str(error.value)
    assert testing.file_tree(trained) == before


def test_a_garbage_checkpoint_state_stops_the_run_and_keeps_the_checkpoints(trained, tmp_path):
    import shutil  # pylint: disable=import-outside-toplevel

    shutil.copytree(trained / "runs", tmp_path / "runs")
    state = tmp_path / "runs" / "run" / "checkpoints" / "checkpoint"
    state.write_text("\x00\x01 not a state file")
    before = testing.file_tree(tmp_path)
    for resume in (True, False):
        with pytest.raises(run_directory.RunRefusedError, match="checkpoints/checkpoint is corrupt"):
            experiment.run_experiment(_config(tmp_path), resume=resume)
    assert testing.file_tree(tmp_path) == before


def test_resume_without_a_run_is_refused(tmp_path):
    with pytest.raises(run_directory.RunRefusedError, match="`--resume` needs an existing run"):
        experiment.run_experiment(_config(tmp_path), resume=True)
    assert not (tmp_path / "runs").exists()


def test_bad_data_leaves_no_run_directory(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=40)
    labels[3] = 200  # One label far outside 0–9.
    path = tmp_path / "bad_labels.npz"
    np.savez(
        path, x_train=rng.integers(0, 255, (40, 8, 8, 1), dtype=np.uint8), y_train=labels,
        x_test=rng.integers(0, 255, (10, 8, 8, 1), dtype=np.uint8), y_test=labels[:10] % 10,
    )
    config = dataclasses.replace(
        _config(tmp_path), data=config_lib.DataConfig(dataset=f"npz:{path}", validation_size=0)
    )
    with pytest.raises(run_directory.RunRefusedError, match=r"0 … K-1.*maximum 200"):
        experiment.run_experiment(config)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "exports").exists()


def test_an_unusable_export_dir_is_found_before_training(tmp_path):
    (tmp_path / "exports").write_text("a file, not a directory")
    with pytest.raises(run_directory.RunRefusedError, match="`export_dir` must be a directory"):
        experiment.run_experiment(_config(tmp_path))
    assert not (tmp_path / "runs").exists()


def test_a_run_named_like_another_directory_never_replaces_it(trained, tmp_path):
    # The export target of a new run is a directory holding someone's files.
    target = tmp_path / "exports" / "mine"
    target.mkdir(parents=True)
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(run_directory.RunRefusedError, match="not a SavedModel"):
        experiment.run_experiment(_config(tmp_path, name="mine"))
    assert (target / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "runs").exists()


def test_config_json_records_the_run_that_was_trained(trained):
    with open(trained / "runs" / "run" / "config.json") as f:
        recorded = json.load(f)
    assert recorded["optimizer"]["learning_rate"] == 0.05 and recorded["train"]["seed"] == 1


def test_a_full_disk_while_checkpointing_names_the_flag_and_path():
    import errno  # pylint: disable=import-outside-toplevel
    import types  # pylint: disable=import-outside-toplevel

    from oat_tf.training import checkpointing  # pylint: disable=import-outside-toplevel

    def save(checkpoint_number):
        raise OSError(errno.ENOSPC, "No space left on device")

    manager = types.SimpleNamespace(save=save, directory="/runs/full/checkpoints")
    callback = checkpointing.CheckpointCallback(manager)
    callback.set_model(types.SimpleNamespace(
        optimizer=types.SimpleNamespace(iterations=types.SimpleNamespace(numpy=lambda: 12))))
    with pytest.raises(OSError, match=r"step 12 to /runs/full/checkpoints \(--runs_dir\).*No space left"):
        callback.on_epoch_end(0)
