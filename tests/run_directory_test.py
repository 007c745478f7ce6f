"""Checks before a run starts, and what a resumed run may change (oat_tf.run_directory)."""

import json
import os

import pytest

from oat_tf import config as config_lib
from oat_tf import run_directory
from tests import testing


def _config(tmp_path, **kwargs):
    kwargs.setdefault("name", "run")
    return config_lib.ExperimentConfig(
        runs_dir=str(tmp_path / "runs"), export_dir=str(tmp_path / "exports"), **kwargs
    )


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a\\b", " x", "x\n"])
def test_run_names_must_be_one_path_component(name):
    with pytest.raises(ValueError, match="`name` must be one non-empty path component"):
        config_lib.ExperimentConfig(name=name)


def test_checks_create_nothing(tmp_path):
    run_directory.check_before_training(_config(tmp_path), resume=False)
    assert os.listdir(tmp_path) == []


def test_export_parent_of_other_models_is_refused_before_any_work(tmp_path):
    other = tmp_path / "exports" / "other_model"
    other.mkdir(parents=True)
    (other / "saved_model.pb").write_bytes(b"another user's model")
    # A run named like a directory that holds other files (not an export).
    (tmp_path / "exports" / "notes").mkdir()
    (tmp_path / "exports" / "notes" / "readme.txt").write_text("keep")
    with pytest.raises(run_directory.RunRefusedError, match="not a SavedModel"):
        run_directory.check_before_training(_config(tmp_path, name="notes"), resume=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flag", ["runs_dir", "export_dir"])
def test_an_output_path_that_is_a_file_is_refused(tmp_path, flag):
    (tmp_path / "file").write_text("x")
    config = config_lib.ExperimentConfig(
        runs_dir=str(tmp_path / ("file" if flag == "runs_dir" else "runs")),
        export_dir=str(tmp_path / ("file" if flag == "export_dir" else "exports")),
    )
    with pytest.raises(run_directory.RunRefusedError, match=f"`{flag}` must be a directory"):
        run_directory.check_before_training(config, resume=False)


def test_resume_needs_an_existing_run(tmp_path):
    with pytest.raises(run_directory.RunRefusedError, match="`--resume` needs an existing run"):
        run_directory.check_before_training(_config(tmp_path), resume=True)
    # The sweep's record alone does not make a run.
    (tmp_path / "runs" / "run").mkdir(parents=True)
    (tmp_path / "runs" / "run" / "sweep_run.json").write_text("{}")
    with pytest.raises(run_directory.RunRefusedError, match="holds no config.json"):
        run_directory.check_before_training(_config(tmp_path), resume=True)


def test_a_garbage_checkpoint_state_is_refused_and_nothing_is_touched(tmp_path):
    checkpoints = tmp_path / "runs" / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (tmp_path / "runs" / "run" / "config.json").write_text("{}")
    (checkpoints / "ckpt-54.index").write_bytes(b"index")
    (checkpoints / "ckpt-54.data-00000-of-00001").write_bytes(b"weights")
    (checkpoints / "checkpoint").write_text("this is not a checkpoint state\n")
    before = testing.file_tree(tmp_path)
    for resume in (True, False):
        with pytest.raises(run_directory.RunRefusedError, match="checkpoints/checkpoint is corrupt"):
            run_directory.check_before_training(_config(tmp_path), resume=resume)
    assert testing.file_tree(tmp_path) == before


def test_existing_checkpoints_need_resume(tmp_path):
    checkpoints = tmp_path / "runs" / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "ckpt-5.index").write_bytes(b"i")
    (checkpoints / "checkpoint").write_text('model_checkpoint_path: "ckpt-5"\n')
    with pytest.raises(run_directory.RunRefusedError, match="already holds checkpoints"):
        run_directory.check_before_training(_config(tmp_path), resume=False)


def _recorded(tmp_path, config):
    run_dir = tmp_path / "runs" / config.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config_lib.to_dict(config)))
    return str(run_dir)


def test_resume_with_changed_settings_lists_each_change(tmp_path):
    import dataclasses  # pylint: disable=import-outside-toplevel

    config = _config(tmp_path)
    run_dir = _recorded(tmp_path, config)
    changed = dataclasses.replace(
        config,
        optimizer=dataclasses.replace(config.optimizer, learning_rate=0.5),
        train=dataclasses.replace(config.train, seed=7),
    )
    with pytest.raises(run_directory.RunRefusedError) as error:
        run_directory.check_resume_settings(run_dir, config_lib.to_dict(changed))
    message = str(error.value)
    assert "optimizer.learning_rate: 0.1 -> 0.5" in message and "train.seed: 0 -> 7" in message
    assert "train.epochs" in message  # The allow-list is named.


def test_resume_may_extend_a_run_and_move_its_outputs(tmp_path):
    import dataclasses  # pylint: disable=import-outside-toplevel

    config = _config(tmp_path)
    run_dir = _recorded(tmp_path, config)
    extended = dataclasses.replace(
        config,
        export_dir=None,
        train=dataclasses.replace(config.train, epochs=400, max_checkpoints=5, checkpoint_every_steps=10),
        evaluation=dataclasses.replace(config.evaluation, batch_size=64, every_epochs=2),
    )
    run_directory.check_resume_settings(run_dir, config_lib.to_dict(extended))
    assert run_directory.changed_settings(
        config_lib.to_dict(config), config_lib.to_dict(extended)
    ) == []


def test_settings_added_after_a_run_was_recorded_count_as_their_default(tmp_path):
    config = _config(tmp_path)
    recorded = config_lib.to_dict(config)
    del recorded["train"]["objective"]  # A run recorded before `objective` existed.
    assert run_directory.changed_settings(recorded, config_lib.to_dict(config)) == []


def test_unreadable_config_json_is_refused(tmp_path):
    run_dir = tmp_path / "runs" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{ truncated")
    with pytest.raises(run_directory.RunRefusedError, match="cannot be read"):
        run_directory.check_resume_settings(str(run_dir), {})
