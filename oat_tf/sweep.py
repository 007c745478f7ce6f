"""Command line: a study — training and evaluation runs one after another — and its report.

    python -m oat_tf.sweep --flagfile=experiments/study_oat_fashion_mnist.flags

A sweep flagfile names the study, the flags every training run shares
(`--common`), one `--run=NAME: FLAGS` per training run
(`python -m oat_tf.train`), optionally `--evaluate=NAME/LABEL: FLAGS` for a
further evaluation of a trained run (`python -m oat_tf.evaluate`, e.g. with
batch statistics), and where the combined results and the report go:

    --study=oat_fashion_mnist
    --common=--dataset=npz:../shared/data/fashion_mnist.npz --epsilon=0.1 --epochs=5
    --run=pgdat_0.1: --variant=plain --lambda_sampling=fixed --lambda_values=0.1
    --run=oat_dual: --variant=oat
    --evaluate=oat_dual/apgd: --lambdas=0,1 --attacks=apgd_ce
    --results_dir=docs/results/oat_fashion_mnist
    --report=oat

Each training run is `python -m oat_tf.train --flagfile=<runs_dir>/<study>/flags/<NAME>.flags`:
the common flags, then the run's, then `--name=NAME --runs_dir=<runs_dir>/<study>`
(and `--export_dir=` unless the flags set one), written before the run starts
so that the exact command can be rerun by hand. Runs go one after another, in
process isolation, printing their own progress (epochs, evaluation) under a
`[k/N] NAME` header:

- a run whose results exist (`test_eval.json`, or `test_eval_multi_exit.json`
  for a multi-exit network) and whose flags are unchanged is skipped;
- a run that was killed is resumed from its last checkpoint (`--resume`);
- a run whose flags changed since it started is an error, unless
  `--restart_changed` (its directory is then cleared and it starts again).

Evaluations work the same way (`evaluation.json` in
`<run dir>/evaluation_<LABEL>`; `oat_tf.evaluate` resumes per λ by itself).
The wall time of every run and evaluation (summed over resumptions) and the
machine are recorded in `<run dir>/sweep_run.json`.

A study can also go on on another machine, one that has the results
directory but not the run directories (a new clone, a preempted machine
replaced). After every finished job the sweep writes the ledger
`<results_dir>/in_progress.json`: each finished job's flags fingerprint, wall
time, machine and what results.json keeps of it. A sweep that finds the ledger
skips the jobs it records with unchanged flags ("carried"), unless they were
started in their own directory, and folds them into results.json, which then
lists every machine the jobs ran on. A training run is carried only with all
its evaluations, and an evaluation only with its run (an evaluation still to
run needs the run's checkpoints). The
ledger is removed once the study is complete. Keep it under version control
while a study is unfinished.

A headline number needs its spread over training seeds. `--repeat_seeds=1,2`
with `--repeat_runs=pgdat_*,oat_dual` repeats the named runs (shell-style
patterns) with each further seed, after every other job: run NAME becomes
NAME_seed1 and NAME_seed2 with `--seed=1` / `--seed=2` appended to its flags,
and its further evaluations are repeated with it. Each repeat's record in
results.json carries `repeat_of` (NAME) and `seed`; the report keeps the
single-seed tables and adds the headline figures over the seeds.

At the end the sweep writes the combined results `<results_dir>/results.json`
(every run's config, flags, test evaluation, further evaluations, wall time,
plus the study's command and machine) and, unless `--report=none`, the report
`<results_dir>.md` with its plots in `<results_dir>/` (see
`oat_tf.reporting.study_report`, which regenerates the report from the JSON
alone).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging

from oat_tf import cli
from oat_tf import cpu_kernels
from oat_tf import run_directory
from oat_tf.evaluation import results as results_lib

FLAGS = flags.FLAGS

RESULTS_FILE = "results.json"
# The finished jobs of an unfinished study, beside its results (see `write_ledger`).
LEDGER_FILE = "in_progress.json"
RUN_RECORD = "sweep_run.json"
# Seconds between updates of a running job's wall time in its record.
HEARTBEAT_SECONDS = 60.0
REPORT_KINDS = ("oat", "mixture_bn", "width", "runs", "none")
RESULT_FILES = ("test_eval.json", "test_eval_multi_exit.json")
# Keys of a run's result files copied into results.json: the measurement,
# the paired counts and the BN statistics it was measured with.
_RESULT_KEYS = results_lib.MEASURED_KEYS + ("robust_only", "bn_statistics")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
# Flags the sweep sets itself.
_RESERVED_TRAIN_FLAGS = ("name", "runs_dir", "resume", "flagfile")
_RESERVED_EVAL_FLAGS = ("run_dir", "output_dir", "flagfile")
# `python -m oat_tf.train`'s --seed when a run's flags do not set it.
DEFAULT_TRAIN_SEED = 0


def define_flags() -> None:
    """Defines the sweep flags."""
    flags.DEFINE_string("study", None, "Study name: the directory <runs_dir>/<study> of its runs.")
    flags.DEFINE_string("description", "", "One paragraph on the study, copied into the report.")
    flags.DEFINE_string("runs_dir", "runs", "Parent of the study's run directories.")
    flags.DEFINE_multi_string(
        "common", [], "Training flags shared by every run (several per value, space-separated)."
    )
    flags.DEFINE_multi_string(
        "run", [], "One training run: 'NAME: FLAGS' (the flags of `python -m oat_tf.train`)."
    )
    flags.DEFINE_multi_string(
        "common_evaluate", [], "Flags shared by every --evaluate (space-separated)."
    )
    flags.DEFINE_multi_string(
        "evaluate", [],
        "A further evaluation of a trained run: 'NAME/LABEL: FLAGS' (the flags of "
        "`python -m oat_tf.evaluate`), written to <run dir>/evaluation_LABEL.",
    )
    flags.DEFINE_string(
        "results_dir", None,
        "Where results.json and the report's plots go; the report is <results_dir>.md. "
        "Default: <runs_dir>/<study>/results.",
    )
    flags.DEFINE_enum(
        "report", "oat", list(REPORT_KINDS),
        "Report layout: oat (the frontier and OAT's claims), mixture_bn, width (OATS), runs (runs "
        "side by side against the first, for ablations) or none (results.json only).",
    )
    flags.DEFINE_list("only", [], "Run (and evaluate) only these runs; the results still list all finished ones.")
    flags.DEFINE_list(
        "repeat_seeds", [],
        "Further training seeds: each run named by --repeat_runs is repeated as NAME_seedS with "
        "--seed=S (after every other job), for the spread of the headline figures.",
    )
    flags.DEFINE_list(
        "repeat_runs", [],
        "Runs repeated with every --repeat_seeds seed: names or shell-style patterns (pgdat_*).",
    )
    flags.DEFINE_bool(
        "dry_run", False,
        "Check every run's flags (python -m oat_tf.train --check_only), print the commands and "
        "what would be skipped or resumed; run nothing.",
    )
    flags.DEFINE_bool(
        "restart_changed", False,
        "Restart from scratch a run whose flags changed since it started (default: error).",
    )


@dataclasses.dataclass(frozen=True)
class Job:
    """One step of a sweep: a training run or a further evaluation of one.

    Attributes:
        kind: str, "train" or "evaluate".
        name: str, the run's name.
        label: str, the evaluation's label ("" for a training run).
        flags: tuple of str, the command-line flags, in order.
        run_dir: str, the run's directory.
        output_dir: str, where the job's results go (the run directory for a
            training run, `<run_dir>/evaluation_<label>` for an evaluation).
        repeat_of: str, for a repeat with another seed (`--repeat_seeds`) the
            name of the run it repeats, else "".
        seed: int or None, a repeat's training seed (None otherwise).
    """

    kind: str
    name: str
    label: str
    flags: tuple
    run_dir: str
    output_dir: str
    repeat_of: str = ""
    seed: Optional[int] = None

    @property
    def title(self) -> str:
        return self.name if self.kind == "train" else f"{self.name}/{self.label}"

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the job's flags: a changed flag means a different job."""
        return hashlib.sha256("\n".join(self.flags).encode("utf-8")).hexdigest()

    @property
    def record_path(self) -> str:
        name = RUN_RECORD if self.kind == "train" else f"sweep_evaluation_{self.label}.json"
        return os.path.join(self.run_dir, name)

    def result_path(self) -> Optional[str]:
        """The job's result file if it exists, else None."""
        names = RESULT_FILES if self.kind == "train" else ("evaluation.json",)
        for name in names:
            path = os.path.join(self.output_dir, name)
            if os.path.isfile(path):
                return path
        return None

    @property
    def flagfile_text(self) -> str:
        """The job's flags, one per line: a flagfile its command reads."""
        return "".join(f"{flag}\n" for flag in self.flags)

    def command(self, flagfile: str) -> List[str]:
        module = "oat_tf.train" if self.kind == "train" else "oat_tf.evaluate"
        return [sys.executable, "-m", module, f"--flagfile={flagfile}"]


def split_flags(text: str, argument: str) -> List[str]:
    """Splits 'FLAGS' text into flags, each of the form --name[=value].

    Args:
        text: str, space-separated flags (shell quoting allowed).
        argument: str, the sweep flag the text came from, for errors.

    Returns:
        list of str.

    Raises:
        ValueError: if a word is not a flag.
    """
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise ValueError(f"`--{argument}` has unbalanced quotes ({error}). Received: {text!r}") from None
    for word in words:
        if not word.startswith("--") or len(word) < 3:
            raise ValueError(
                f"`--{argument}` must hold flags of the form --name=value. Received: {word!r} in {text!r}"
            )
    return words


def _flag_name(flag: str) -> str:
    name = flag[2:].split("=", 1)[0]
    return name[2:] if name.startswith("no") and "=" not in flag else name


def _check_reserved(words: Sequence[str], reserved: Sequence[str], argument: str) -> None:
    for word in words:
        if _flag_name(word) in reserved:
            raise ValueError(
                f"`--{argument}` must not set {', '.join('--' + r for r in reserved)}: the sweep "
                f"sets them. Received: {word!r}"
            )


def _parse_entry(entry: str, argument: str, with_label: bool):
    """Parses 'NAME: FLAGS' or 'NAME/LABEL: FLAGS' into (name, label, words)."""
    head, separator, rest = entry.partition(":")
    head = head.strip()
    expected = "NAME/LABEL: FLAGS" if with_label else "NAME: FLAGS"
    if not separator:
        raise ValueError(f"`--{argument}` must be '{expected}'. Received: {entry!r}")
    name, label = head, ""
    if with_label:
        name, slash, label = head.partition("/")
        if not slash or not _NAME.fullmatch(label):
            raise ValueError(
                f"`--{argument}` must be '{expected}' with a label of letters, digits, '_', "
                f"'.' or '-'. Received: {entry!r}"
            )
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"`--{argument}` must start with a run name of letters, digits, '_', '.' or '-'. "
            f"Received: {entry!r}"
        )
    return name, label, split_flags(rest, argument)


def parse_repeat_seeds(values: Sequence[str]) -> List[int]:
    """Parses `--repeat_seeds` into distinct non-negative ints.

    Args:
        values: sequence of str (or int).

    Returns:
        list of int, in the given order.

    Raises:
        ValueError: naming `--repeat_seeds`, on a value that is not a
            non-negative integer or on a repeated seed.
    """
    seeds: List[int] = []
    for value in values:
        text = str(value).strip()
        if not text.isdigit():
            raise ValueError(
                f"`--repeat_seeds` must hold non-negative integers. Received: {text!r} in {list(values)}"
            )
        if int(text) in seeds:
            raise ValueError(f"`--repeat_seeds` must not repeat a seed. Received: {int(text)} twice")
        seeds.append(int(text))
    return seeds


def _repeated_names(patterns: Sequence[str], names: Sequence[str]) -> List[str]:
    """The run names matched by `--repeat_runs` patterns, in the runs' order."""
    matched = set()
    for pattern in patterns:
        hits = [name for name in names if fnmatch.fnmatchcase(name, pattern.strip())]
        if not hits:
            raise ValueError(
                f"`--repeat_runs` entries must match runs of the sweep ({list(names)}). "
                f"Received: {pattern!r}, which matches none"
            )
        matched.update(hits)
    return [name for name in names if name in matched]


def plan_jobs(
    study: str,
    runs_dir: str,
    common: Sequence[str],
    runs: Sequence[str],
    common_evaluate: Sequence[str] = (),
    evaluations: Sequence[str] = (),
    repeat_seeds: Sequence[int] = (),
    repeat_runs: Sequence[str] = (),
) -> List[Job]:
    """Turns the sweep's flags into the ordered list of jobs.

    Args:
        study: str, the study name.
        runs_dir: str, parent of the study directory.
        common: list of str, shared training flags (space-separated per item).
        runs: list of 'NAME: FLAGS'.
        common_evaluate: list of str, shared evaluation flags.
        evaluations: list of 'NAME/LABEL: FLAGS'; NAME must be one of `runs`.
        repeat_seeds: further training seeds (`parse_repeat_seeds`).
        repeat_runs: names or shell-style patterns of the runs repeated with
            each of `repeat_seeds`; required with it.

    Returns:
        list of Job: the training runs in order, each evaluation after the
        training runs, then per seed of `repeat_seeds` the repeated runs
        (NAME_seedS, `--seed=S` appended) and their evaluations.

    Raises:
        ValueError: on a malformed entry, a duplicate name, a reserved flag,
            an evaluation of an unknown run, or `repeat_seeds` and
            `repeat_runs` not given together or matching no run.
    """
    if not study or not _NAME.fullmatch(study):
        raise ValueError(
            f"`--study` must be a name of letters, digits, '_', '.' or '-'. Received: study={study!r}"
        )
    if not runs:
        raise ValueError("`--run` must be given at least once ('NAME: FLAGS'). Received: no runs")
    study_dir = os.path.join(runs_dir, study)
    shared = [w for item in common for w in split_flags(item, "common")]
    _check_reserved(shared, _RESERVED_TRAIN_FLAGS, "common")
    jobs: List[Job] = []
    seen = set()
    for entry in runs:
        name, _, words = _parse_entry(entry, "run", with_label=False)
        if name in seen:
            raise ValueError(f"`--run` names must be unique. Received: {name!r} twice")
        seen.add(name)
        _check_reserved(words, _RESERVED_TRAIN_FLAGS, "run")
        all_flags = [*shared, *words, f"--name={name}", f"--runs_dir={study_dir}"]
        if not any(_flag_name(w) == "export_dir" for w in all_flags):
            all_flags.append("--export_dir=")
        run_dir = os.path.join(study_dir, name)
        jobs.append(Job("train", name, "", tuple(all_flags), run_dir, run_dir))
    shared_eval = [w for item in common_evaluate for w in split_flags(item, "common_evaluate")]
    _check_reserved(shared_eval, _RESERVED_EVAL_FLAGS, "common_evaluate")
    labels = set()
    for entry in evaluations:
        name, label, words = _parse_entry(entry, "evaluate", with_label=True)
        if name not in seen:
            raise ValueError(
                f"`--evaluate` must name a run of the sweep ({sorted(seen)}). Received: {entry!r}"
            )
        if (name, label) in labels:
            raise ValueError(f"`--evaluate` labels must be unique per run. Received: {name}/{label} twice")
        labels.add((name, label))
        _check_reserved(words, _RESERVED_EVAL_FLAGS, "evaluate")
        run_dir = os.path.join(study_dir, name)
        output_dir = os.path.join(run_dir, f"evaluation_{label}")
        all_flags = [*shared_eval, *words, f"--run_dir={run_dir}", f"--output_dir={output_dir}"]
        if not any(_flag_name(w) == "tensorboard_dir" for w in all_flags):
            all_flags.append("--tensorboard_dir=")
        jobs.append(Job("evaluate", name, label, tuple(all_flags), run_dir, output_dir))
    if bool(repeat_seeds) != bool(repeat_runs):
        raise ValueError(
            "`--repeat_seeds` and `--repeat_runs` must be given together. Received: "
            f"repeat_seeds={list(repeat_seeds)}, repeat_runs={list(repeat_runs)}"
        )
    base_jobs = list(jobs)
    repeated = _repeated_names(repeat_runs, [job.name for job in base_jobs if job.kind == "train"])
    own_seeds = {}  # The seed each repeated run trains with: its last --seed, else train's default.
    for job in base_jobs:
        if job.kind == "train" and job.name in repeated:
            values = [w.split("=", 1)[1].strip() for w in job.flags if _flag_name(w) == "seed" and "=" in w]
            own_seeds[job.name] = values[-1] if values else str(DEFAULT_TRAIN_SEED)
    for seed in repeat_seeds:
        for name in repeated:
            new_name = f"{name}_seed{seed}"
            if str(seed) == own_seeds[name]:
                raise ValueError(
                    f"`--repeat_seeds` must differ from the seed run {name!r} already trains with. "
                    f"Received: seed {seed}, the same as its --seed"
                )
            if new_name in seen:
                raise ValueError(
                    f"`--run` names must not collide with the repeats of `--repeat_seeds`. "
                    f"Received: a run named {new_name!r} and seed {seed} for {name!r}"
                )
        for job in base_jobs:
            if job.name not in repeated:
                continue
            new_name = f"{job.name}_seed{seed}"
            run_dir = os.path.join(study_dir, new_name)
            if job.kind == "train":
                words = [
                    f"--name={new_name}" if _flag_name(w) == "name" else w for w in job.flags
                ] + [f"--seed={seed}"]
                output_dir = run_dir
            else:
                output_dir = os.path.join(run_dir, f"evaluation_{job.label}")
                words = [
                    f"--run_dir={run_dir}" if _flag_name(w) == "run_dir"
                    else f"--output_dir={output_dir}" if _flag_name(w) == "output_dir" else w
                    for w in job.flags
                ]
            jobs.append(
                Job(job.kind, new_name, job.label, tuple(words), run_dir, output_dir, job.name, seed)
            )
    return jobs


def machine_description() -> Dict[str, Any]:
    """The machine and software a job ran on (recorded with its wall time)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import keras  # pylint: disable=import-outside-toplevel

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        **cpu_kernels.describe(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }


def read_record(job: Job) -> Optional[Dict[str, Any]]:
    """The job's record (`sweep_run.json` or `sweep_evaluation_<label>.json`), or None."""
    if not os.path.isfile(job.record_path):
        return None
    try:
        with open(job.record_path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"The sweep record {job.record_path} is unreadable ({error}); expected the JSON the "
            "sweep writes. Delete it to rerun the job from scratch."
        ) from None


def _write_json(path: str, payload: Any) -> None:
    from oat_tf import atomic_files  # pylint: disable=import-outside-toplevel

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_files.write_text(path, json.dumps(payload, indent=1, sort_keys=True) + "\n")


def job_state(job: Job, restart_changed: bool = False) -> str:
    """What to do with a job: "skip", "resume", "start" or "restart".

    Args:
        job: Job.
        restart_changed: bool, restart a job whose flags changed instead of
            raising.

    Returns:
        str: "skip" (finished with the same flags), "resume" (started with the
        same flags, not finished), "start" (never started) or "restart"
        (started with other flags, and `restart_changed`).

    Raises:
        ValueError: if the job started with other flags and not `restart_changed`.
    """
    record = read_record(job)
    if record is None:
        if job.kind == "train" and os.path.isdir(os.path.join(job.run_dir, "checkpoints")):
            return "restart" if restart_changed else _raise_foreign(job)
        return "start"
    if record.get("fingerprint") != job.fingerprint:
        if restart_changed:
            return "restart"
        raise ValueError(
            f"Run {job.title} in {job.output_dir} was started with other flags. Expected the "
            f"same flags to skip or resume it, or --restart_changed to start it again. "
            f"Received now: {list(job.flags)}; recorded: {record.get('flags')}"
        )
    if record.get("finished") and job.result_path() is not None:
        return "skip"
    return "resume"


def _raise_foreign(job: Job) -> str:
    raise ValueError(
        f"{job.run_dir} holds checkpoints that this sweep did not start (no {RUN_RECORD}). "
        "Expected a fresh directory; pass --restart_changed to clear it, or choose another "
        "--runs_dir or --study."
    )


def run_job(job: Job, flagfile_dir: str, restart_changed: bool = False, dry_run: bool = False) -> str:
    """Runs one job to completion (or skips / resumes it) and records it.

    Args:
        job: Job.
        flagfile_dir: str, where the job's flagfile is written.
        restart_changed: bool, see `job_state`.
        dry_run: bool, only log what would happen.

    Returns:
        str, the state acted on (see `job_state`).

    Raises:
        RuntimeError: if the command fails.
    """
    state = job_state(job, restart_changed)
    file_name = f"{job.name}.flags" if job.kind == "train" else f"{job.name}__{job.label}.flags"
    flagfile = os.path.join(flagfile_dir, file_name)
    command = job.command(flagfile)
    if (
        state == "resume"
        and job.kind == "train"
        and os.path.isfile(os.path.join(job.run_dir, "config.json"))
    ):
        # Resume only a run that started training (wrote its config.json);
        # one killed before that starts afresh.
        command.append("--resume")
    logging.info("%s: %s", state, " ".join(shlex.quote(c) for c in command))
    if dry_run or state == "skip":
        return state
    if state == "restart":
        target = job.run_dir if job.kind == "train" else job.output_dir
        shutil.rmtree(target, ignore_errors=True)
    record = read_record(job) if state == "resume" else None
    wall = float(record.get("wall_seconds", 0.0)) if record else 0.0
    os.makedirs(flagfile_dir, exist_ok=True)
    from oat_tf import atomic_files  # pylint: disable=import-outside-toplevel

    atomic_files.write_text(flagfile, job.flagfile_text)
    os.makedirs(job.run_dir, exist_ok=True)
    base = {
        "kind": job.kind,
        "name": job.name,
        "label": job.label,
        "flags": list(job.flags),
        "fingerprint": job.fingerprint,
        "machine": machine_description(),
    }
    _write_json(job.record_path, {**base, "finished": False, "wall_seconds": wall})
    # The record keeps the wall time so far, so that an attempt killed with the
    # sweep (a session's end) still counts, up to one heartbeat.
    returncode, elapsed = run_with_heartbeat(
        command,
        lambda so_far: _write_json(
            job.record_path, {**base, "finished": False, "wall_seconds": wall + so_far}
        ),
        HEARTBEAT_SECONDS,
    )
    wall += elapsed
    finished = returncode == 0 and job.result_path() is not None
    _write_json(job.record_path, {**base, "finished": finished, "wall_seconds": wall})
    if not finished:
        raise RuntimeError(
            f"{job.kind} {job.title} {failure_reason(returncode, job.result_path() is not None)} "
            f"Its command: {' '.join(shlex.quote(c) for c in command)}"
        )
    return state


def run_with_heartbeat(
    command: Sequence[str], on_heartbeat: Callable[[float], None], interval: float
) -> Tuple[int, float]:
    """Runs `command` to its end, calling `on_heartbeat(seconds so far)` every `interval`.

    Args:
        command: the command line.
        on_heartbeat: callable taking the wall seconds since the start.
        interval: float > 0, seconds between heartbeats.

    Returns:
        (exit status, as `subprocess` reports it; wall seconds).
    """
    start = time.monotonic()
    with subprocess.Popen(command) as process:
        try:
            while True:
                try:
                    return process.wait(timeout=interval), time.monotonic() - start
                except subprocess.TimeoutExpired:
                    on_heartbeat(time.monotonic() - start)
        except BaseException:
            # As `subprocess.run`: the command does not outlive an error here.
            process.kill()
            raise


def failure_reason(returncode: int, has_result: bool) -> str:
    """Why a job failed, and whether rerunning the sweep can help.

    Args:
        returncode: int, the command's exit status (negative: killed by that
            signal, as `subprocess` reports it).
        has_result: bool, whether the job's result file exists.

    Returns:
        str, one sentence for the error message.
    """
    if returncode == 0:
        return (
            "exited normally but wrote no result file: a bug or a changed output path. "
            "Rerunning will not help; check the run directory."
        )
    if returncode < 0 or returncode in (128 + 9, 128 + 15):
        signal_number = -returncode if returncode < 0 else returncode - 128
        return (
            f"was killed (signal {signal_number}). Resumable: rerun the sweep to continue "
            "from its last checkpoint."
        )
    if returncode == run_directory.USAGE_EXIT_STATUS:
        return (
            "refused its input before any work (the error above names the flag, data or "
            "file). Not resumable as it is: fix the cause, then rerun the sweep."
        )
    return (
        f"failed with exit status {returncode} (see the error above; result file "
        f"{'present' if has_result else 'missing'}). Rerunning the sweep resumes it from its "
        "last checkpoint, which helps only if the cause was transient (memory, disk, a "
        "killed worker)."
    )


def check_train_flags(jobs: Sequence[Job], resuming: Sequence[str] = ()) -> List[str]:
    """Validates the flags of every training job with `oat_tf.train --check_only`.

    Each job's flags are parsed and checked by the training command line
    itself (flags, names, output paths; nothing is loaded or written), so a
    bad inner flag fails the sweep before any run starts.

    Args:
        jobs: the sweep's jobs (evaluation jobs are skipped: they need the
            trained runs).
        resuming: names of the runs the sweep will resume: checked with
            `--resume` in their own run directory; the others are checked in
            a scratch `--runs_dir` (the sweep creates or clears their
            directories itself).

    Returns:
        list of str, one message per job whose flags were refused (empty: all
        valid).
    """
    import tempfile  # pylint: disable=import-outside-toplevel

    problems = []
    with tempfile.TemporaryDirectory(prefix="oat_tf_sweep_check_") as directory:
        for job in jobs:
            if job.kind != "train":
                continue
            flagfile = os.path.join(directory, f"{job.name}.flags")
            with open(flagfile, "w", encoding="utf-8") as f:
                f.write(job.flagfile_text)
            command = job.command(flagfile) + ["--check_only"]
            if job.name in resuming and os.path.isfile(os.path.join(job.run_dir, "config.json")):
                command.append("--resume")
            else:
                command.append(f"--runs_dir={os.path.join(directory, 'runs')}")
            completed = subprocess.run(command, check=False, capture_output=True, text=True)
            if completed.returncode != 0:
                lines = [
                    line for line in completed.stderr.splitlines()
                    if line.strip() and "Pass --helpshort" not in line
                ]
                problems.append(f"{job.title}: {' '.join(lines[-3:]) or 'exit status ' + str(completed.returncode)}")
    return problems


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _result_subset(result: Dict[str, Any]) -> Dict[str, Any]:
    return {k: result[k] for k in _RESULT_KEYS if k in result}


def finished_job(job: Job) -> Optional[Dict[str, Any]]:
    """What results.json keeps of a job that finished here with its flags.

    Args:
        job: Job.

    Returns:
        None if the job has not finished in its directory with its current
        flags; else a dict with `fingerprint`, `machine` and `wall_seconds`
        (from the job's record) and `entry`: for a training run its
        results.json entry (`name`, `flags`, `config`, `test_eval`,
        `wall_seconds`, for a slimmable run `test_eval_widths`, for a repeat
        `repeat_of` and `seed`), for an evaluation its entry in the run's
        `evaluations` (`label`, `flags`, `results`, `wall_seconds`).
    """
    record = read_record(job)
    path = job.result_path()
    if record is None or not record.get("finished") or path is None:
        return None
    if record.get("fingerprint") != job.fingerprint:
        return None
    wall = round(float(record.get("wall_seconds", 0.0)), 1)
    if job.kind == "train":
        entry: Dict[str, Any] = {
            "name": job.name,
            "flags": list(job.flags),
            "config": _read_json(os.path.join(job.run_dir, "config.json")),
            "test_eval": _result_subset(_read_json(path)),
            "wall_seconds": wall,
        }
        if job.repeat_of:
            entry.update(repeat_of=job.repeat_of, seed=job.seed)
        widths_path = os.path.join(job.run_dir, "test_eval_widths.json")
        if os.path.isfile(widths_path):
            grid = _read_json(widths_path)
            entry["test_eval_widths"] = {
                "widths": grid["widths"],
                "per_width": {k: _result_subset(v) for k, v in grid["per_width"].items()},
            }
    else:
        entry = {
            "label": job.label,
            "flags": list(job.flags),
            "results": _result_subset(_read_json(path)),
            "wall_seconds": wall,
        }
    return {
        "fingerprint": job.fingerprint,
        "machine": record.get("machine"),
        "wall_seconds": wall,
        "entry": entry,
    }


def read_ledger(path: str) -> Dict[str, Dict[str, Any]]:
    """The finished jobs a sweep recorded in its ledger (`in_progress.json`).

    Args:
        path: str, the ledger file.

    Returns:
        dict, job title → the job's `finished_job` dict; empty if there is no
        ledger.

    Raises:
        ValueError: naming the file, if it is not a ledger the sweep wrote.
    """
    if not os.path.isfile(path):
        return {}
    try:
        ledger = _read_json(path)
        jobs = ledger["jobs"]
        if not isinstance(jobs, dict) or not all(
            isinstance(item, dict) and {"fingerprint", "entry"} <= item.keys() for item in jobs.values()
        ):
            raise ValueError("a job without its fingerprint or entry")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"The sweep ledger {path} is unreadable ({error}); expected the JSON the sweep writes "
            "there ({'jobs': {title: {'fingerprint', 'entry', ...}}}). Restore it from version "
            "control, or delete it to rerun the jobs it records."
        ) from None
    return jobs


def carried_jobs(jobs: Sequence[Job], ledger: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """The jobs a ledger records as finished with their current flags.

    A training run is carried only with all its evaluations, and an
    evaluation only with its run: an evaluation still to run needs the run's
    checkpoints, which the ledger does not hold, and one of a run trained
    again here must measure that run.

    Args:
        jobs: the sweep's jobs.
        ledger: `read_ledger`'s dict.

    Returns:
        dict, job title → the ledger's `finished_job` dict, for the jobs that
        need not run again.
    """
    carried = {
        job.title: ledger[job.title]
        for job in jobs
        if job.title in ledger and ledger[job.title].get("fingerprint") == job.fingerprint
    }
    for job in jobs:
        if job.kind == "evaluate" and job.title not in carried:
            carried.pop(job.name, None)
    return {
        title: item for title, item in carried.items()
        if all(job.name in carried for job in jobs if job.title == title and job.kind == "evaluate")
    }


def finished_jobs(
    jobs: Sequence[Job], carried: Optional[Dict[str, Dict[str, Any]]] = None
) -> Dict[str, Dict[str, Any]]:
    """Every finished job, here or (`carried`) on another machine.

    Args:
        jobs: the sweep's jobs.
        carried: `carried_jobs`'s dict; a job finished here takes precedence.

    Returns:
        dict, job title → `finished_job` dict, in the jobs' order.
    """
    carried = carried or {}
    finished = {}
    for job in jobs:
        item = finished_job(job) or carried.get(job.title)
        if item is not None:
            finished[job.title] = item
    return finished


def collect_results(
    jobs: Sequence[Job],
    *,
    study: str,
    description: str,
    command: str,
    report: str,
    results_path: str = "",
    carried: Optional[Dict[str, Dict[str, Any]]] = None,
) -> Dict[str, Any]:
    """Gathers the finished jobs' results into one JSON-able dict.

    Args:
        jobs: the sweep's jobs (unfinished ones are listed under `missing`).
        study: str, the study name.
        description: str, the study's description.
        command: str, the command that runs the sweep.
        report: str, the report layout.
        results_path: str, where the results are written (as given, shown in
            the report).
        carried: `carried_jobs`'s dict: jobs finished on another machine.

    Returns:
        dict with `study`, `description`, `command`, `report`, `machine` (of
        the first finished job), `machines` (only when the jobs ran on more
        than one: each distinct machine with `jobs`, how many ran on it),
        `total_wall_seconds`, `runs` (list of dicts with `name`, `flags`,
        `config`, `test_eval`, `wall_seconds`, for a slimmable run
        `test_eval_widths` (`widths`, `per_width`), `evaluations`: list of
        dicts with `label`, `flags`, `results`, `wall_seconds`; a repeat with
        another seed also `repeat_of` and `seed`) and `missing` (titles of
        unfinished jobs).
    """
    finished = finished_jobs(jobs, carried)
    runs: Dict[str, Dict[str, Any]] = {}
    missing: List[str] = []
    machines: List[Dict[str, Any]] = []
    total = 0.0
    for job in jobs:
        item = finished.get(job.title)
        if item is None or (job.kind == "evaluate" and job.name not in runs):
            missing.append(job.title)
            continue
        machine = item.get("machine")
        for seen in machines:
            if seen["machine"] == machine:
                seen["jobs"] += 1
                break
        else:
            machines.append({"machine": machine, "jobs": 1})
        total += float(item["wall_seconds"])
        if job.kind == "train":
            runs[job.name] = {**item["entry"], "evaluations": []}
        else:
            runs[job.name]["evaluations"].append(dict(item["entry"]))
    results = {
        "study": study,
        "description": description,
        "command": command,
        "report": report,
        "results_path": results_path,
        "machine": machines[0]["machine"] if machines else None,
        "total_wall_seconds": round(total, 1),
        "runs": list(runs.values()),
        "missing": missing,
    }
    if len(machines) > 1:
        results["machines"] = machines
    return results


def write_ledger(path: str, study: str, jobs: Sequence[Job], carried: Dict[str, Dict[str, Any]]) -> None:
    """Writes the ledger of the finished jobs (atomically).

    The ledger lets a sweep go on elsewhere: a machine that has the ledger but
    not the run directories skips the jobs it records (with the same flags)
    and folds their results into results.json. Keep it under version control
    beside the results while a study is unfinished.

    Args:
        path: str, the ledger file (`<results_dir>/in_progress.json`).
        study: str, the study name.
        jobs: the sweep's jobs.
        carried: `carried_jobs`'s dict.
    """
    finished = finished_jobs(jobs, carried)
    _write_json(
        path,
        {
            "study": study,
            "finished": len(finished),
            "of": len(jobs),
            "missing": [job.title for job in jobs if job.title not in finished],
            "jobs": finished,
        },
    )


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    try:
        jobs = plan_jobs(
            FLAGS.study, FLAGS.runs_dir, FLAGS.common, FLAGS.run, FLAGS.common_evaluate, FLAGS.evaluate,
            repeat_seeds=parse_repeat_seeds(FLAGS.repeat_seeds), repeat_runs=FLAGS.repeat_runs,
        )
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    unknown = sorted(set(FLAGS.only) - {job.name for job in jobs})
    if unknown:
        raise app.UsageError(f"`--only` must name runs of the sweep. Received unknown: {unknown}")
    selected = [job for job in jobs if not FLAGS.only or job.name in FLAGS.only]
    results_dir = FLAGS.results_dir or os.path.join(FLAGS.runs_dir, FLAGS.study, "results")
    ledger_path = os.path.join(results_dir, LEDGER_FILE)
    try:
        carried = carried_jobs(jobs, read_ledger(ledger_path))
        states = {job.title: job_state(job, restart_changed=True) for job in selected}
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    # A job finished elsewhere (the ledger) and never started here is not run again.
    carried = {title: item for title, item in carried.items() if states.get(title, "start") == "start"}
    to_check = [
        job for job in selected
        if job.kind == "train" and states[job.title] != "skip" and job.title not in carried
    ]
    problems = check_train_flags(
        to_check, resuming=[job.name for job in to_check if states[job.title] == "resume"]
    )
    if problems:
        raise app.UsageError(
            f"{len(problems)} run(s) of the sweep have flags that `python -m oat_tf.train` "
            "refuses; nothing was run:\n  " + "\n  ".join(problems)
        )
    flagfile_dir = os.path.join(FLAGS.runs_dir, FLAGS.study, "flags")
    for index, job in enumerate(selected, start=1):
        logging.info("[%d/%d] %s %s", index, len(selected), job.kind, job.title)
        if job.title in carried:
            logging.info("carried: finished on another machine, recorded in %s", ledger_path)
            continue
        try:
            state = run_job(job, flagfile_dir, FLAGS.restart_changed, FLAGS.dry_run)
        except ValueError as error:
            raise app.UsageError(str(error)) from None
        if state != "skip" and not FLAGS.dry_run:
            write_ledger(ledger_path, FLAGS.study, jobs, carried)
    if FLAGS.dry_run:
        return
    flagfile = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--flagfile=")), None)
    command = f"python -m oat_tf.sweep --flagfile={flagfile}" if flagfile else "python -m oat_tf.sweep"
    results_path = os.path.join(results_dir, RESULTS_FILE)
    results = collect_results(
        jobs,
        study=FLAGS.study,
        description=FLAGS.description,
        command=command,
        report=FLAGS.report,
        results_path=results_path,
        carried=carried,
    )
    _write_json(results_path, results)
    if results["missing"]:
        write_ledger(ledger_path, FLAGS.study, jobs, carried)
    elif os.path.isfile(ledger_path):
        os.remove(ledger_path)
    logging.info(
        "Results of %d runs in %s%s.", len(results["runs"]), results_path,
        f"; not finished: {results['missing']}" if results["missing"] else "",
    )
    if FLAGS.report != "none":
        from oat_tf.reporting import study_report  # pylint: disable=import-outside-toplevel

        report_path = study_report.write_study_report(results_path)
        sys.stdout.write(f"\nReport: {report_path}\nResults: {results_path}\n")


def run() -> None:
    """The `oat-sweep` console script; `python -m oat_tf.sweep` runs it too.

    Defines the command's flags and runs `main` through `cli.run_main` (absl's
    `app.run`), which parses `sys.argv` and exits the process.
    """
    define_flags()
    flags.mark_flag_as_required("study")
    cli.run_main(main, __name__)


if __name__ == "__main__":
    run()
