"""A checkpoint directory's state file, read strictly, and a checkpoint's identity.

TensorFlow's own reader (`tf.train.get_checkpoint_state`) logs "Checkpoint
ignored" and returns None for a state file it cannot parse, and a run resumed
from such a directory would start from step 0 and overwrite the checkpoints.
`latest_checkpoint` here refuses instead: a state file that does not parse, or
that names a checkpoint whose files are missing, is an error naming the file,
and so are checkpoint files left without a state file.

`checkpoint_identity` and `saved_model_identity` say *which* model a result
was measured on (path, step, digest), so that a resumed evaluation never
mixes results of two models.

Pure Python: importing it loads no TensorFlow.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from typing import Any, Dict, Optional

STATE_FILENAME = "checkpoint"
# The fields of TensorFlow's CheckpointState text proto, one per line.
_STATE_LINE = re.compile(
    r'^(model_checkpoint_path|all_model_checkpoint_paths): "((?:[^"\\]|\\.)*)"$'
    r"|^(all_model_checkpoint_timestamps|last_preserved_timestamp): [-+0-9.eE]+$"
)
_STEP = re.compile(r"-(\d+)$")


def _resolve(directory: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(directory, path)


def latest_checkpoint(directory: str) -> Optional[str]:
    """The latest checkpoint of `directory`, from its state file, checked.

    Args:
        directory: str, a checkpoint directory (e.g. `<run_dir>/checkpoints`).

    Returns:
        str, the latest checkpoint's prefix (`<directory>/ckpt-N`), or None
        when the directory does not exist or holds neither a state file nor
        any checkpoint file.

    Raises:
        ValueError: the state file does not parse, names no checkpoint, or
            names one whose `.index` file is missing; or checkpoint files are
            present without a state file.
    """
    state_path = os.path.join(directory, STATE_FILENAME)
    if not os.path.exists(state_path):
        leftovers = sorted(glob.glob(os.path.join(directory, "*.index")))
        if leftovers:
            raise ValueError(
                f"{directory} holds checkpoint files ({os.path.basename(leftovers[-1])}, ...) but "
                f"no state file {STATE_FILENAME!r}. Expected both, as written by training; "
                "restore the state file or move the directory away. Nothing was changed."
            )
        return None
    try:
        with open(state_path, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(
            f"Checkpoint state file {state_path} cannot be read: {error}. Expected the text "
            "file written by training. Nothing was changed."
        ) from None
    latest = None
    for line in lines:
        match = _STATE_LINE.match(line)
        if match is None:
            raise ValueError(
                f"Checkpoint state file {state_path} is corrupt. Expected lines such as "
                f'model_checkpoint_path: "ckpt-54". Received: {line[:80]!r}. The checkpoints '
                "were not touched; restore or delete the state file (and the checkpoints) "
                "by hand."
            )
        if match.group(1) == "model_checkpoint_path":
            latest = match.group(2)
    if latest is None:
        raise ValueError(
            f"Checkpoint state file {state_path} names no checkpoint (no "
            "model_checkpoint_path line). Expected the file written by training. The "
            "checkpoints were not touched."
        )
    prefix = _resolve(directory, latest)
    if not os.path.isfile(prefix + ".index"):
        raise ValueError(
            f"Checkpoint state file {state_path} names {latest!r}, but {prefix}.index does "
            "not exist. Expected the checkpoint files next to their state file. The "
            "checkpoints were not touched."
        )
    return prefix


def checkpoint_step(prefix: str) -> Optional[int]:
    """The step in a checkpoint prefix `.../ckpt-N`, or None."""
    match = _STEP.search(prefix)
    return int(match.group(1)) if match else None


def _digest(paths) -> str:
    sha = hashlib.sha256()
    for path in paths:
        sha.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()


def checkpoint_identity(prefix: str) -> Dict[str, Any]:
    """Which checkpoint: its absolute prefix, step and a digest of its index file.

    Args:
        prefix: str, a checkpoint prefix (`latest_checkpoint`).

    Returns:
        dict with `checkpoint`, `step` and `index_sha256`.
    """
    return {
        "checkpoint": os.path.abspath(prefix),
        "step": checkpoint_step(prefix),
        "index_sha256": _digest([prefix + ".index"]),
    }


def saved_model_identity(export_dir: str) -> Dict[str, Any]:
    """Which SavedModel: its absolute path and a digest of its graph and variable index.

    Args:
        export_dir: str, a SavedModel directory.

    Returns:
        dict with `saved_model` and `sha256`.
    """
    files = [os.path.join(export_dir, "saved_model.pb")]
    index = os.path.join(export_dir, "variables", "variables.index")
    if os.path.isfile(index):
        files.append(index)
    return {"saved_model": os.path.abspath(export_dir), "sha256": _digest(files)}
