"""Output path checks, export replacement and file modes (oat_tf.output_paths)."""

import os
import stat

import pytest

from oat_tf import output_paths


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writable_directory_accepts_new_and_existing_directories(tmp_path):
    output_paths.check_writable_directory("runs_dir", str(tmp_path))
    output_paths.check_writable_directory("runs_dir", str(tmp_path / "new" / "deeper"))
    assert not (tmp_path / "new").exists()  # A check creates nothing.


def test_writable_directory_refuses_files_and_paths_under_files(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"`runs_dir` must be a directory, not an existing file"):
        output_paths.check_writable_directory("runs_dir", str(tmp_path / "file"))
    with pytest.raises(ValueError, match=r"`export_dir` cannot be created: .* is a file"):
        output_paths.check_writable_directory("export_dir", str(tmp_path / "file" / "sub"))
    with pytest.raises(ValueError, match="`runs_dir` must be a directory path"):
        output_paths.check_writable_directory("runs_dir", "")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_writable_directory_refuses_read_only_directories(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="`runs_dir` must be a writable directory"):
            output_paths.check_writable_directory("runs_dir", str(locked / "runs"))
    finally:
        locked.chmod(0o755)


def test_read_only_check_uses_access_rights(tmp_path, monkeypatch):
    # Root ignores permission bits, so the refusal is also checked through os.access.
    monkeypatch.setattr(output_paths.os, "access", lambda path, mode: False)
    with pytest.raises(ValueError, match=r"`output_dir` must be a writable directory.*not writable"):
        output_paths.check_writable_directory("output_dir", str(tmp_path / "out"))


def test_free_space_names_the_flag(tmp_path):
    output_paths.check_free_space("runs_dir", str(tmp_path), needed_bytes=1)
    with pytest.raises(ValueError, match=r"`runs_dir` has too little free space"):
        output_paths.check_free_space("runs_dir", str(tmp_path / "new"), needed_bytes=2**62)


def test_export_target_must_be_its_own_directory(tmp_path):
    # New, empty, or an earlier export: fine.
    output_paths.check_export_target(str(tmp_path / "new"))
    (tmp_path / "empty").mkdir()
    output_paths.check_export_target(str(tmp_path / "empty"))
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "saved_model.pb").write_bytes(b"pb")
    output_paths.check_export_target(str(earlier))
    # The parent of other exports (what an empty run name points at): refused.
    with pytest.raises(ValueError, match="not a SavedModel.*only ever replaces its own directory"):
        output_paths.check_export_target(str(tmp_path))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not an existing file"):
        output_paths.check_export_target(str(tmp_path / "file"))


def test_replace_export_dir_never_deletes_a_foreign_directory(tmp_path):
    exports = tmp_path / "exports"
    (exports / "other_model").mkdir(parents=True)
    (exports / "other_model" / "saved_model.pb").write_bytes(b"keep me")
    source = output_paths.make_export_temp_dir(str(exports / "new"))
    (open(os.path.join(source, "saved_model.pb"), "wb")).close()
    with pytest.raises(ValueError, match="not a SavedModel"):
        output_paths.replace_export_dir(source, str(exports))
    assert (exports / "other_model" / "saved_model.pb").read_bytes() == b"keep me"


def test_replace_export_dir_replaces_an_earlier_export_with_default_modes(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "saved_model.pb").write_bytes(b"old")
    source = output_paths.make_export_temp_dir(str(target))
    assert _mode(source) == 0o700  # tempfile's mode, until the export is complete.
    os.makedirs(os.path.join(source, "variables"))
    with open(os.path.join(source, "saved_model.pb"), "wb") as f:
        f.write(b"new")
    os.chmod(os.path.join(source, "saved_model.pb"), 0o600)
    old_umask = os.umask(0o022)
    try:
        output_paths.replace_export_dir(source, str(target))
    finally:
        os.umask(old_umask)
    assert (target / "saved_model.pb").read_bytes() == b"new"
    assert _mode(target) == 0o755 and _mode(target / "variables") == 0o755
    assert _mode(target / "saved_model.pb") == 0o644
    assert os.listdir(tmp_path) == ["model"]  # No backup or temporary directory left.


def test_modes_respect_the_umask():
    old_umask = os.umask(0o077)
    try:
        assert output_paths.file_mode() == 0o600 and output_paths.directory_mode() == 0o700
    finally:
        os.umask(old_umask)
    old_umask = os.umask(0o022)
    try:
        assert output_paths.file_mode() == 0o644 and output_paths.directory_mode() == 0o755
    finally:
        os.umask(old_umask)


def test_stale_temporary_directories_of_the_same_target_are_removed(tmp_path):
    target = tmp_path / "model"
    stale_tmp = tmp_path / ".model.tmp-abc123"
    stale_old = tmp_path / ".model.old-def456"
    other = tmp_path / ".other.tmp-xyz"
    for directory in (stale_tmp, stale_old, other):
        directory.mkdir()
        (directory / "saved_model.pb").write_bytes(b"x")
    fresh = output_paths.make_export_temp_dir(str(target))
    assert not stale_tmp.exists() and not stale_old.exists()
    assert other.exists()  # Another target's export may be in progress.
    assert os.path.basename(fresh).startswith(".model.tmp-")
