"""The strict checkpoint state reader and model identities (oat_tf.checkpoint_state)."""

import os

import pytest

from oat_tf import checkpoint_state

# A state file as tf.train.CheckpointManager writes it.
STATE = """model_checkpoint_path: "ckpt-8"
all_model_checkpoint_paths: "ckpt-4"
all_model_checkpoint_paths: "ckpt-8"
all_model_checkpoint_timestamps: 1796324765.8639214
all_model_checkpoint_timestamps: 1796324792.2513466
last_preserved_timestamp: 1796324608.9735844
"""


def _checkpoints(directory, steps=(4, 8), state=STATE):
    directory.mkdir(parents=True, exist_ok=True)
    for step in steps:
        (directory / f"ckpt-{step}.index").write_bytes(b"index %d" % step)
        (directory / f"ckpt-{step}.data-00000-of-00001").write_bytes(b"data")
    if state is not None:
        (directory / "checkpoint").write_text(state)
    return directory


def test_reads_the_latest_checkpoint(tmp_path):
    directory = _checkpoints(tmp_path / "checkpoints")
    assert checkpoint_state.latest_checkpoint(str(directory)) == str(directory / "ckpt-8")
    assert checkpoint_state.checkpoint_step(str(directory / "ckpt-8")) == 8


def test_no_directory_or_empty_directory_has_no_checkpoint(tmp_path):
    assert checkpoint_state.latest_checkpoint(str(tmp_path / "absent")) is None
    (tmp_path / "empty").mkdir()
    assert checkpoint_state.latest_checkpoint(str(tmp_path / "empty")) is None


def test_reads_what_tensorflow_writes(tmp_path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    checkpoint = tf.train.Checkpoint(v=tf.Variable(1.0))
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=2)
    for step in (3, 6, 9):
        manager.save(checkpoint_number=step)
    assert checkpoint_state.latest_checkpoint(str(tmp_path)) == manager.latest_checkpoint


@pytest.mark.parametrize(
    "state, message",
    [
        ("garbage }{ not a proto\n", "corrupt"),
        ('model_checkpoint_path: "ckpt-8"\nrandom bytes\n', "corrupt"),
        ('all_model_checkpoint_paths: "ckpt-8"\n', "names no checkpoint"),
        ('model_checkpoint_path: "ckpt-99"\n', "ckpt-99.index does not exist"),
        ("", "names no checkpoint"),
    ],
)
def test_a_corrupt_state_file_is_an_error_naming_it(tmp_path, state, message):
    directory = _checkpoints(tmp_path / "checkpoints", state=state)
    before = {p: open(os.path.join(directory, p), "rb").read() for p in os.listdir(directory)}
    with pytest.raises(ValueError, match=message) as error:
        checkpoint_state.latest_checkpoint(str(directory))
    assert str(directory / "checkpoint") in str(error.value)
    # Reading never changes anything.
    assert {p: open(os.path.join(directory, p), "rb").read() for p in os.listdir(directory)} == before


def test_checkpoint_files_without_a_state_file_are_an_error(tmp_path):
    directory = _checkpoints(tmp_path / "checkpoints", state=None)
    with pytest.raises(ValueError, match="no state file"):
        checkpoint_state.latest_checkpoint(str(directory))


def test_identity_changes_with_the_checkpoint(tmp_path):
    directory = _checkpoints(tmp_path / "checkpoints")
    first = checkpoint_state.checkpoint_identity(str(directory / "ckpt-8"))
    assert first["step"] == 8 and first["checkpoint"] == str(directory / "ckpt-8")
    assert first == checkpoint_state.checkpoint_identity(str(directory / "ckpt-8"))
    (directory / "ckpt-8.index").write_bytes(b"retrained")
    assert checkpoint_state.checkpoint_identity(str(directory / "ckpt-8"))["index_sha256"] != first["index_sha256"]


def test_saved_model_identity_digests_graph_and_variables(tmp_path):
    (tmp_path / "variables").mkdir()
    (tmp_path / "saved_model.pb").write_bytes(b"graph")
    (tmp_path / "variables" / "variables.index").write_bytes(b"v1")
    first = checkpoint_state.saved_model_identity(str(tmp_path))
    (tmp_path / "variables" / "variables.index").write_bytes(b"v2")
    assert checkpoint_state.saved_model_identity(str(tmp_path))["sha256"] != first["sha256"]
