"""Output paths: checked before any work, exports replaced only by themselves, file modes.

Every command line that writes (training, evaluation, calibration, export)
checks its output paths first, so that a read-only directory, a file where a
directory is expected or a full disk is reported within seconds, naming the
flag, rather than as a bare `OSError` after an hour of training. Nothing here
creates anything: a check that fails leaves the file system as it was.

An export is built in a temporary sibling directory (`.<name>.tmp-XXXX`) and
renamed into place; an existing export at the target is renamed aside
(`.<name>.old-XXXX`) and deleted only once the new one is in place. Three
rules keep a user's files safe:

- `check_export_target` refuses a target that is not an export's own
  directory: an existing file, or a non-empty directory without
  `saved_model.pb` (e.g. the parent of several exports, which an empty run
  name would otherwise point at). Callers run it before training or loading,
  so the error comes first.
- `replace_export_dir` runs the same check again at the moment of replacing.
- `make_export_temp_dir` first deletes the temporary and backup siblings that
  a killed export of the same target left behind (only those of that target).

Files and directories written by oat_tf get the usual modes, 0644 and 0755
less the process umask, so that a TF Serving process running as another user
can read an export (temporary files from `tempfile` would otherwise keep 0600
and 0700).

```python
output_paths.check_writable_directory("runs_dir", "runs")
output_paths.check_free_space("runs_dir", "runs", needed_bytes=3 * 2**20)
os.chmod(path, output_paths.file_mode())
```

Pure Python: importing it loads no TensorFlow.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import uuid
from typing import Optional

from absl import logging


def _umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """0644 less the umask: the mode of a file oat_tf writes."""
    return 0o666 & ~_umask()


def directory_mode() -> int:
    """0755 less the umask: the mode of a directory oat_tf writes."""
    return 0o777 & ~_umask()


def apply_default_modes(root: str) -> None:
    """Gives `root` and everything below it the default modes (`file_mode`, `directory_mode`).

    Args:
        root: str, a directory (or file) oat_tf has just written, e.g. the
            temporary directory of an export before it is renamed into place.
    """
    files, directories = file_mode(), directory_mode()
    if not os.path.isdir(root):
        os.chmod(root, files)
        return
    os.chmod(root, directories)
    for parent, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(parent, name), directories)
        for name in filenames:
            os.chmod(os.path.join(parent, name), files)


def _nearest_existing(path: str) -> str:
    current = os.path.abspath(path)
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def check_writable_directory(argument: str, path: Optional[str]) -> None:
    """Checks that `path` is, or can be created as, a writable directory.

    Args:
        argument: str, the flag or argument that named the path (for the
            message), e.g. "runs_dir".
        path: str, the directory; it need not exist yet.

    Raises:
        ValueError: the path is empty, an existing file, lies under a file, or
            its nearest existing directory is not writable by this process.
    """
    if not isinstance(path, str) or not path:
        raise ValueError(
            f"`{argument}` must be a directory path. Received: {argument}={path!r}"
        )
    absolute = os.path.abspath(path)
    if os.path.exists(absolute) and not os.path.isdir(absolute):
        raise ValueError(
            f"`{argument}` must be a directory, not an existing file. Received: {argument}={path!r}"
        )
    existing = _nearest_existing(absolute)
    if not os.path.isdir(existing):
        raise ValueError(
            f"`{argument}` cannot be created: {existing!r} on its path is a file, not a "
            f"directory. Received: {argument}={path!r}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == absolute else f"cannot be created in {existing!r} (not writable)"
        raise ValueError(
            f"`{argument}` must be a writable directory: {path!r} {what} by this process. "
            f"Expected a directory you can write to. Received: {argument}={path!r}"
        )


def check_free_space(argument: str, path: str, needed_bytes: int) -> None:
    """Checks that the file system of `path` has at least `needed_bytes` free.

    Args:
        argument: str, the flag or argument that named the path.
        path: str, a directory (it need not exist yet).
        needed_bytes: int, the space the output will need at least.

    Raises:
        ValueError: less space is free than needed.
    """
    existing = _nearest_existing(path)
    free = shutil.disk_usage(existing).free
    if free < needed_bytes:
        raise ValueError(
            f"`{argument}` has too little free space: {path!r} needs about "
            f"{needed_bytes / 2**20:.1f} MiB (checkpoints and results), but its file system "
            f"has {free / 2**20:.1f} MiB free. Expected a file system with room for the run. "
            f"Received: {argument}={path!r}"
        )


SAVED_MODEL_FILENAME = "saved_model.pb"


def _is_export(path: str) -> bool:
    return os.path.isfile(os.path.join(path, SAVED_MODEL_FILENAME))


def check_export_target(path: str, argument: str = "export_dir") -> str:
    """Checks that `path` may receive an export, and returns it absolute.

    Args:
        path: str, the export's own directory (e.g. `<export_dir>/<name>`).
        argument: str, the flag or argument that named it (for the message).

    Returns:
        str, the absolute target path.

    Raises:
        ValueError: the target is an existing file, or an existing non-empty
            directory that is not a SavedModel (replacing it would delete
            files that are not this export's), or its parent cannot be
            created or written.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"`{argument}` must be a directory path. Received: {argument}={path!r}")
    target = os.path.abspath(os.fspath(path))
    if os.path.exists(target):
        if not os.path.isdir(target):
            raise ValueError(
                f"`{argument}` must be a directory path, not an existing file. "
                f"Received: {argument}={os.fspath(path)!r}"
            )
        if os.listdir(target) and not _is_export(target):
            raise ValueError(
                f"`{argument}` would replace {target!r}, a non-empty directory that is not a "
                f"SavedModel (no {SAVED_MODEL_FILENAME}). An export only ever replaces its own "
                "directory. Expected a new or empty directory, or an earlier export of the same "
                f"model. Received: {argument}={os.fspath(path)!r}"
            )
    check_writable_directory(argument, os.path.dirname(target))
    return target


def _stale_siblings(target: str):
    parent, base = os.path.split(target)
    for kind in ("tmp", "old"):
        yield from glob.glob(os.path.join(parent, f".{glob.escape(base)}.{kind}-*"))


def make_export_temp_dir(target: str) -> str:
    """Creates the temporary sibling directory an export of `target` is built in.

    Deletes first the temporary and backup directories that a killed export
    of the same target left behind.

    Args:
        target: str, the absolute export directory.

    Returns:
        str, the new temporary directory.
    """
    parent, base = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    for stale in _stale_siblings(target):
        logging.info("Removing %s, left behind by an interrupted export.", stale)
        shutil.rmtree(stale, ignore_errors=True)
    return tempfile.mkdtemp(dir=parent, prefix=f".{base}.tmp-")


def replace_export_dir(source: str, target: str) -> None:
    """Renames the finished export `source` to `target`, replacing an earlier export.

    Args:
        source: str, the temporary directory holding the complete export.
        target: str, the absolute export directory.

    Raises:
        ValueError: `target` exists and is not an export (see
            `check_export_target`); `source` is left for the caller to remove.
    """
    check_export_target(target)
    apply_default_modes(source)
    if not os.path.exists(target):
        os.rename(source, target)
        return
    parent, base = os.path.split(target)
    backup = os.path.join(parent, f".{base}.old-{uuid.uuid4().hex}")
    os.rename(target, backup)
    try:
        os.rename(source, target)
    except BaseException:
        os.rename(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)
