"""A training run's directory: checked before any work, resumed only as the same run.

`check_before_training` runs before the data is loaded or anything is built,
and creates nothing:

- the run name is one path component (`config.check_run_name`);
- `runs_dir` and `export_dir` are, or can be created as, writable
  directories, and `<export_dir>/<name>` is new, empty or an earlier export
  (`output_paths.check_export_target`);
- a run directory that holds checkpoints is continued only with `--resume`,
  and its checkpoint state file must parse and name existing files
  (`checkpoint_state.latest_checkpoint`): a corrupt one is an error, never a
  silent restart that overwrites the checkpoints;
- `--resume` needs the run: a run directory with its `config.json`.

`check_resume_settings` then compares the resolved config with the run's
recorded `config.json`: a resumed run must be the same run. Only the settings
in `RESUME_MAY_CHANGE` may differ; any other change is refused with a list of
each changed setting, old and new.

The run directory itself is created by the caller only once every check
(including the data's) has passed, so a refused run leaves nothing behind.

Pure Python: importing it loads no TensorFlow, so `python -m oat_tf.train`
runs these checks within a second of starting.
"""

from __future__ import annotations

import json
import os
from typing import Any, List, Mapping, Tuple

from oat_tf import checkpoint_state
from oat_tf import config as config_lib
from oat_tf import output_paths

CONFIG_FILENAME = "config.json"
# Exit status of `python -m oat_tf.train` when a run is refused before any
# work; the sweep tells it apart from a crash (1) or a kill (a signal).
USAGE_EXIT_STATUS = 2


class RunRefusedError(ValueError):
    """A run refused before any work: bad names, paths, data or resume state.

    The command line turns it into a usage error (its message names the flag
    or file, what was expected and what was received); nothing was created.
    """

CHECKPOINT_SUBDIR = "checkpoints"

# Settings (dotted config.json keys, with the flag that sets each) that may
# differ when a run is resumed:
# they change where results go, how often checkpoints are written and how
# long the run trains, but not what the recorded steps computed. `train.epochs`
# extends (or shortens) a run; note that the cosine schedule then follows the
# new length from the resumed step on.
RESUME_MAY_CHANGE = {
    "runs_dir": "--runs_dir",
    "export_dir": "--export_dir",
    "train.epochs": "--epochs",
    "train.max_checkpoints": "--max_checkpoints",
    "train.checkpoint_every_steps": "--checkpoint_every_steps",
    "evaluation.every_epochs": "--eval_every_epochs",
    "evaluation.batch_size": "--eval_batch_size",
}


def run_directory(config: config_lib.ExperimentConfig) -> str:
    """`<runs_dir>/<name>` of a config."""
    return os.path.join(config.runs_dir, config.name)


def check_before_training(config: config_lib.ExperimentConfig, *, resume: bool) -> None:
    """Checks names, output paths and the run directory's state; creates nothing.

    Args:
        config: ExperimentConfig of the run.
        resume: bool, whether `--resume` was given.

    Raises:
        RunRefusedError: naming the flag or file at fault (see the module
            docstring).
    """
    try:
        _check_before_training(config, resume)
    except RunRefusedError:
        raise
    except ValueError as error:
        raise RunRefusedError(str(error)) from None


def _check_before_training(config: config_lib.ExperimentConfig, resume: bool) -> None:
    config_lib.check_run_name(config.name)
    output_paths.check_writable_directory("runs_dir", config.runs_dir)
    if config.export_dir is not None:
        output_paths.check_writable_directory("export_dir", config.export_dir)
        output_paths.check_export_target(
            os.path.join(config.export_dir, config.name), argument="export_dir/name"
        )
    run_dir = run_directory(config)
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ValueError(
            f"The run directory {run_dir!r} (--runs_dir/--name) is an existing file. Expected a "
            "directory or a new name. Received: "
            f"runs_dir={config.runs_dir!r}, name={config.name!r}"
        )
    checkpoint_dir = os.path.join(run_dir, CHECKPOINT_SUBDIR)
    latest = checkpoint_state.latest_checkpoint(checkpoint_dir)  # Raises on a corrupt state.
    if latest is not None and not resume:
        raise ValueError(
            f"Run directory {run_dir!r} already holds checkpoints (latest "
            f"{os.path.basename(latest)}). Expected `--resume` to continue that run, or another "
            f"`--name`. Received: resume={resume}"
        )
    if resume and not os.path.isfile(os.path.join(run_dir, CONFIG_FILENAME)):
        raise ValueError(
            f"`--resume` needs an existing run, but {run_dir!r} holds no {CONFIG_FILENAME} "
            "(the run never started, or --name / --runs_dir point elsewhere). Expected the "
            "directory of a started run; drop --resume to start this one. Received: "
            f"runs_dir={config.runs_dir!r}, name={config.name!r}"
        )
    if os.path.isdir(checkpoint_dir) and latest is None and not resume and os.listdir(checkpoint_dir):
        raise ValueError(
            f"{checkpoint_dir} holds files but no checkpoint. Expected an empty or new run "
            "directory; move it away or choose another --name."
        )


def _flatten(value: Any, prefix: str = "") -> List[Tuple[str, Any]]:
    if isinstance(value, Mapping):
        items = []
        for key in sorted(value):
            items.extend(_flatten(value[key], f"{prefix}{key}."))
        return items
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
        return [(prefix[:-1], [dict(v) for v in value])]
    if isinstance(value, tuple):
        value = list(value)
    return [(prefix[:-1], value)]


def changed_settings(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> List[Tuple[str, Any, Any]]:
    """The settings that differ between two config dicts, outside `RESUME_MAY_CHANGE`.

    Args:
        recorded: dict, a run's config.json.
        current: dict, the config of the resumed run (`config.to_dict`).

    Returns:
        list of (dotted key, recorded value, current value), sorted by key; a
        key present on one side only has None on the other. Settings added
        to the config after a run was recorded count as unchanged when the
        new value is the default the old run implicitly used.
    """
    old = dict(_flatten(recorded))
    new = dict(_flatten(current))
    defaults = dict(_flatten(config_lib.to_dict(config_lib.ExperimentConfig())))
    changes = []
    for key in sorted(set(old) | set(new)):
        if key in RESUME_MAY_CHANGE or any(key.startswith(k + ".") for k in RESUME_MAY_CHANGE):
            continue
        if key not in old and key in defaults and new.get(key) == defaults[key]:
            continue
        if old.get(key) != new.get(key):
            changes.append((key, old.get(key), new.get(key)))
    return changes


def check_resume_settings(run_dir: str, current: Mapping[str, Any]) -> None:
    """Refuses to resume a run with settings other than those it was recorded with.

    Args:
        run_dir: str, the run directory (holding config.json).
        current: dict, the resolved config of the resumed run.

    Raises:
        RunRefusedError: listing each changed setting, recorded and new, when any
            setting outside `RESUME_MAY_CHANGE` differs, or when config.json
            cannot be read.
    """
    path = os.path.join(run_dir, CONFIG_FILENAME)
    try:
        with open(path, encoding="utf-8") as f:
            recorded = json.load(f)
    except (OSError, ValueError) as error:
        raise RunRefusedError(
            f"Cannot resume: {path} cannot be read ({error}). Expected the config.json "
            "written when the run started."
        ) from None
    changes = changed_settings(recorded, json.loads(json.dumps(current)))
    if changes:
        listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes)
        raise RunRefusedError(
            f"Cannot resume {run_dir}: settings differ from the recorded run ({path}): {listed}. "
            "A resumed run must be the same run; only "
            f"{', '.join(RESUME_MAY_CHANGE)} may change. Expected the original flags "
            "(see flags.txt in the run directory), or a new --name for a new run."
        )
