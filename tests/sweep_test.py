"""The sweep runner: planning, skip / resume / restart decisions, results, and one real sweep."""

import glob
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from oat_tf import sweep
from tests import testing

TINY_COMMON = (
    "--dataset=embedded --num_train_examples=32 --num_eval_examples=16 --architecture=small_cnn "
    "--filters=4,8 --hidden_units=8 --encoding_dim=8 --epsilon=0.3 --step_size=0.1 --attack_steps=1 "
    "--epochs=1 --batch_size=16 --eval_attacks=train"
)


def _plan(tmp_path, runs=("a: --variant=oat",), evaluations=(), common=("--epochs=1",)):
    return sweep.plan_jobs("study", str(tmp_path / "runs"), list(common), list(runs), [], list(evaluations))


def test_plan_orders_runs_then_evaluations_and_sets_names(tmp_path):
    jobs = _plan(
        tmp_path,
        runs=("b: --variant=plain --lambda_sampling=fixed --lambda_values=1", "a: --variant=oat"),
        evaluations=("a/strong: --attacks=pgd20",),
    )
    assert [(j.kind, j.title) for j in jobs] == [("train", "b"), ("train", "a"), ("evaluate", "a/strong")]
    study_dir = os.path.join(str(tmp_path / "runs"), "study")
    assert jobs[0].flags == (
        "--epochs=1", "--variant=plain", "--lambda_sampling=fixed", "--lambda_values=1",
        "--name=b", f"--runs_dir={study_dir}", "--export_dir=",
    )
    assert jobs[2].output_dir == os.path.join(study_dir, "a", "evaluation_strong")
    assert f"--run_dir={os.path.join(study_dir, 'a')}" in jobs[2].flags
    assert "--tensorboard_dir=" in jobs[2].flags
    # The fingerprint follows the flags.
    other = _plan(tmp_path, runs=("b: --variant=oat", "a: --variant=oat"))
    assert other[1].fingerprint == jobs[1].fingerprint and other[0].fingerprint != jobs[0].fingerprint


def test_plan_keeps_an_explicit_export_dir(tmp_path):
    (job,) = _plan(tmp_path, runs=("a: --export_dir=saved_models",))
    assert job.flags.count("--export_dir=saved_models") == 1 and "--export_dir=" not in job.flags


@pytest.mark.parametrize(
    "runs, evaluations, message",
    [
        ((), (), "--run"),
        (("a --variant=oat",), (), "NAME: FLAGS"),
        (("a: variant=oat",), (), "--name=value"),
        (("a: --name=b",), (), "sets them"),
        (("a: --resume",), (), "sets them"),
        (("a: --x=1", "a: --y=2"), (), "unique"),
        (("a: --x=1",), ("b/x: --lambdas=0",), "must name a run"),
        (("a: --x=1",), ("a: --lambdas=0",), "NAME/LABEL"),
        (("a: --x=1",), ("a/e: --run_dir=x",), "sets them"),
        (("../a: --x=1",), (), "run name"),
    ],
)
def test_plan_rejects_bad_entries(tmp_path, runs, evaluations, message):
    with pytest.raises(ValueError, match=message):
        _plan(tmp_path, runs=runs, evaluations=evaluations)


def test_plan_rejects_a_bad_study_name(tmp_path):
    with pytest.raises(ValueError, match="study"):
        sweep.plan_jobs("../x", str(tmp_path), [], ["a: --x=1"])


def _fake_subprocess(monkeypatch, calls, write_result=True, returncode=0):
    """Replaces subprocess.run: records the command, writes the job's result file."""

    def fake_run(command, check=False):
        calls.append(command)
        flagfile = command[-1] if not command[-1] == "--resume" else command[-2]
        flags = open(flagfile.split("=", 1)[1]).read().split()
        if write_result:
            values = dict(f[2:].split("=", 1) for f in flags if "=" in f)
            if "oat_tf.train" in command:
                run_dir = os.path.join(values["runs_dir"], values["name"])
                os.makedirs(run_dir, exist_ok=True)
                with open(os.path.join(run_dir, "config.json"), "w") as f:
                    json.dump({"name": values["name"]}, f)
                with open(os.path.join(run_dir, "test_eval.json"), "w") as f:
                    json.dump({"num_examples": 4, "clean_accuracy": {"1.0": 0.5}, "extra": 1}, f)
            else:
                os.makedirs(values["output_dir"], exist_ok=True)
                with open(os.path.join(values["output_dir"], "evaluation.json"), "w") as f:
                    json.dump({"num_examples": 4, "clean_accuracy": {"0.0": 0.25}}, f)
        return subprocess.CompletedProcess(command, returncode)

    def fake_run_with_heartbeat(command, on_heartbeat, interval):
        on_heartbeat(1.0)  # One heartbeat, as from a job running longer than `interval`.
        return fake_run(command).returncode, 2.0

    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    monkeypatch.setattr(sweep, "run_with_heartbeat", fake_run_with_heartbeat)
    monkeypatch.setattr(sweep, "machine_description", lambda: {"cpu_count": 2})


def test_run_job_starts_skips_and_records(tmp_path, monkeypatch):
    calls = []
    _fake_subprocess(monkeypatch, calls)
    (job,) = _plan(tmp_path)
    flag_dir = str(tmp_path / "flags")
    assert sweep.job_state(job) == "start"
    assert sweep.run_job(job, flag_dir) == "start"
    assert calls[0][1:3] == ["-m", "oat_tf.train"] and "--resume" not in calls[0]
    # The flagfile holds the job's flags, one per line: the exact command can be rerun by hand.
    assert open(os.path.join(flag_dir, "a.flags")).read().splitlines() == list(job.flags)
    record = sweep.read_record(job)
    assert record["finished"] and record["fingerprint"] == job.fingerprint and record["wall_seconds"] >= 0
    assert sweep.run_job(job, flag_dir) == "skip" and len(calls) == 1


def _job_killed_after(tmp_path, seconds):
    """The plan's job as a run killed mid-way: its record says not finished, `seconds` spent."""
    (job,) = _plan(tmp_path)
    os.makedirs(job.run_dir)
    sweep._write_json(job.record_path, {"fingerprint": job.fingerprint, "finished": False, "wall_seconds": seconds})
    return job


def test_killed_run_resumes_with_its_wall_time(tmp_path, monkeypatch):
    calls = []
    _fake_subprocess(monkeypatch, calls)
    job = _job_killed_after(tmp_path, 100.0)
    # Killed before training started (no config.json): started afresh, not with --resume,
    # which `oat_tf.train` refuses for a run that does not exist.
    assert sweep.job_state(job) == "resume"
    _fake_subprocess(monkeypatch, calls, write_result=False, returncode=-9)
    with pytest.raises(RuntimeError, match="killed"):
        sweep.run_job(job, str(tmp_path / "flags"))
    assert "--resume" not in calls[0]
    # Killed after training started: resumed.
    _fake_subprocess(monkeypatch, calls)
    with open(os.path.join(job.run_dir, "config.json"), "w") as f:
        json.dump({"name": "a"}, f)
    sweep.run_job(job, str(tmp_path / "flags"))
    assert calls[1][-1] == "--resume"
    assert sweep.read_record(job)["wall_seconds"] >= 100.0


def test_the_record_keeps_the_wall_time_of_a_running_job(tmp_path, monkeypatch):
    calls = []
    _fake_subprocess(monkeypatch, calls)
    job = _job_killed_after(tmp_path, 100.0)
    seen = []
    heartbeat = sweep.run_with_heartbeat

    def spy(command, on_heartbeat, interval):
        def record_then_read(seconds):
            on_heartbeat(seconds)
            seen.append(sweep.read_record(job))
        return heartbeat(command, record_then_read, interval)

    monkeypatch.setattr(sweep, "run_with_heartbeat", spy)
    sweep.run_job(job, str(tmp_path / "flags"))
    # While the job ran, its record already counted the earlier 100 s and the heartbeat's 1 s:
    # a sweep killed then (a session's end) keeps that time.
    assert seen and not seen[0]["finished"] and seen[0]["wall_seconds"] == 101.0
    assert sweep.read_record(job)["finished"] and sweep.read_record(job)["wall_seconds"] == 102.0


def test_run_with_heartbeat_reports_while_the_command_runs():
    beats = []
    code, seconds = sweep.run_with_heartbeat(
        [sys.executable, "-c", "import time, sys; time.sleep(1.0); sys.exit(3)"], beats.append, 0.2
    )
    assert code == 3 and seconds >= 1.0
    assert len(beats) >= 2 and beats == sorted(beats) and all(0.0 < b <= seconds for b in beats)


def test_run_with_heartbeat_kills_the_command_when_a_heartbeat_fails(tmp_path):
    marker = tmp_path / "finished"

    def failing(seconds):
        raise OSError("disk full")

    script = f"import time; time.sleep(2.0); open({str(marker)!r}, 'w').close()"
    with pytest.raises(OSError, match="disk full"):
        sweep.run_with_heartbeat([sys.executable, "-c", script], failing, 0.2)
    # The command was killed with the error, as `subprocess.run` does: it never finishes.
    time.sleep(3.0)
    assert not marker.exists()


def test_changed_flags_are_an_error_unless_restart(tmp_path, monkeypatch):
    calls = []
    _fake_subprocess(monkeypatch, calls)
    (job,) = _plan(tmp_path)
    sweep.run_job(job, str(tmp_path / "flags"))
    (changed,) = _plan(tmp_path, common=("--epochs=2",))
    with pytest.raises(ValueError, match="other flags"):
        sweep.job_state(changed)
    open(os.path.join(job.run_dir, "stale.txt"), "w").close()
    assert sweep.run_job(changed, str(tmp_path / "flags"), restart_changed=True) == "restart"
    assert not os.path.exists(os.path.join(job.run_dir, "stale.txt"))
    assert sweep.job_state(changed) == "skip"


def test_checkpoints_without_a_record_are_refused(tmp_path):
    (job,) = _plan(tmp_path)
    os.makedirs(os.path.join(job.run_dir, "checkpoints"))
    with pytest.raises(ValueError, match="did not start"):
        sweep.job_state(job)
    assert sweep.job_state(job, restart_changed=True) == "restart"


def test_failed_command_raises_and_is_resumed_next_time(tmp_path, monkeypatch):
    calls = []
    _fake_subprocess(monkeypatch, calls, write_result=False, returncode=3)
    (job,) = _plan(tmp_path)
    with pytest.raises(RuntimeError, match="exit status 3"):
        sweep.run_job(job, str(tmp_path / "flags"))
    assert sweep.job_state(job) == "resume"


@pytest.mark.parametrize(
    "returncode, words",
    [
        (-9, "killed (signal 9). Resumable"),
        (137, "killed (signal 9). Resumable"),
        (2, "refused its input before any work"),
        (1, "failed with exit status 1"),
        (0, "wrote no result file"),
    ],
)
def test_failure_reasons_tell_resumable_from_not(returncode, words):
    reason = sweep.failure_reason(returncode, has_result=False)
    assert words in reason
    assert ("Not resumable" in reason) == (returncode == 2)


def test_corrupt_record_is_a_clear_error(tmp_path):
    (job,) = _plan(tmp_path)
    os.makedirs(job.run_dir)
    with open(job.record_path, "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        sweep.job_state(job)


def test_collect_results_lists_finished_jobs_and_missing_ones(tmp_path, monkeypatch):
    calls = []
    _fake_subprocess(monkeypatch, calls)
    jobs = _plan(tmp_path, runs=("a: --x=1", "b: --x=2"), evaluations=("a/e: --lambdas=0",))
    sweep.run_job(jobs[0], str(tmp_path / "flags"))
    sweep.run_job(jobs[2], str(tmp_path / "flags"))
    results = sweep.collect_results(jobs, study="study", description="d", command="c", report="oat")
    assert [r["name"] for r in results["runs"]] == ["a"] and results["missing"] == ["b"]
    run = results["runs"][0]
    assert run["config"] == {"name": "a"} and run["flags"] == list(jobs[0].flags)
    # Only the measured keys are kept.
    assert run["test_eval"] == {"num_examples": 4, "clean_accuracy": {"1.0": 0.5}}
    assert run["evaluations"][0]["label"] == "e"
    assert run["evaluations"][0]["results"]["clean_accuracy"] == {"0.0": 0.25}
    assert results["machine"] == {"cpu_count": 2}


def _machine(monkeypatch, tmp_path, name, cpu_count):
    """Moves to another machine: its own working directory and machine description."""
    directory = tmp_path / name
    directory.mkdir()
    monkeypatch.chdir(directory)
    monkeypatch.setattr(sweep, "machine_description", lambda: {"cpu_count": cpu_count})
    return directory


def test_ledger_carries_finished_jobs_to_another_machine(tmp_path, monkeypatch):
    calls = []
    _fake_subprocess(monkeypatch, calls)
    plan = lambda: sweep.plan_jobs("study", "runs", [], ["a: --x=1", "b: --x=2"], [], ["a/e: --lambdas=0"])
    first = _machine(monkeypatch, tmp_path, "first", 2)
    jobs = plan()
    sweep.run_job(jobs[0], "flags")
    sweep.run_job(jobs[2], "flags")
    sweep.write_ledger("ledger.json", "study", jobs, {})
    ledger = json.loads((first / "ledger.json").read_text())
    assert (ledger["finished"], ledger["of"], ledger["missing"]) == (2, 3, ["b"])
    # A second machine with the ledger but no run directories.
    second = _machine(monkeypatch, tmp_path, "second", 4)
    (second / "ledger.json").write_text((first / "ledger.json").read_text())
    jobs = plan()
    carried = sweep.carried_jobs(jobs, sweep.read_ledger("ledger.json"))
    assert sorted(carried) == ["a", "a/e"]
    assert [sweep.job_state(job) for job in jobs] == ["start"] * 3
    sweep.run_job(jobs[1], "flags")
    assert len(calls) == 3 and "--name=b" in open(calls[-1][-1].split("=", 1)[1]).read()
    results = sweep.collect_results(jobs, study="s", description="d", command="c", report="oat", carried=carried)
    here = sweep.collect_results(
        plan(), study="s", description="d", command="c", report="oat",
        carried=None,
    )
    assert [r["name"] for r in here["runs"]] == ["b"] and here["missing"] == ["a", "a/e"]
    assert [r["name"] for r in results["runs"]] == ["a", "b"] and results["missing"] == []
    # The carried run is what the first machine measured, evaluation included.
    assert results["runs"][0]["config"] == {"name": "a"}
    assert results["runs"][0]["evaluations"][0]["results"]["clean_accuracy"] == {"0.0": 0.25}
    assert results["machine"] == {"cpu_count": 2}
    assert results["machines"] == [
        {"machine": {"cpu_count": 2}, "jobs": 2}, {"machine": {"cpu_count": 4}, "jobs": 1}
    ]
    walls = [r["wall_seconds"] for r in results["runs"]] + [results["runs"][0]["evaluations"][0]["wall_seconds"]]
    assert results["total_wall_seconds"] == pytest.approx(sum(walls), abs=0.2)


def test_ledger_carries_only_jobs_with_their_flags_and_runs_with_all_evaluations(tmp_path, monkeypatch):
    calls = []
    _fake_subprocess(monkeypatch, calls)
    _machine(monkeypatch, tmp_path, "first", 2)
    jobs = sweep.plan_jobs("study", "runs", [], ["a: --x=1", "b: --x=2"], [], ["a/e: --lambdas=0"])
    sweep.run_job(jobs[0], "flags")
    sweep.run_job(jobs[1], "flags")
    sweep.write_ledger("ledger.json", "study", jobs, {})
    ledger = sweep.read_ledger("ledger.json")
    # Run a is finished but its evaluation is not: its checkpoints are still needed.
    assert sorted(sweep.carried_jobs(jobs, ledger)) == ["b"]
    # With two evaluations and only one recorded, neither the run nor that evaluation is
    # carried: the run trains again here and both evaluations measure it.
    two = sweep.plan_jobs("study", "runs", [], ["a: --x=1"], [], ["a/e: --lambdas=0", "a/f: --lambdas=1"])
    sweep.run_job(two[0], "flags")
    sweep.run_job(two[1], "flags")
    partial = {title: sweep.finished_job(job) for title, job in zip(("a", "a/e"), two)}
    assert sweep.carried_jobs(two, partial) == {}
    # A changed flag makes another job, which is not carried.
    changed = sweep.plan_jobs("study", "runs", [], ["a: --x=1", "b: --x=3"], [], ["a/e: --lambdas=0"])
    assert sweep.carried_jobs(changed, ledger) == {}
    # The ledger alone is a complete record of what it carries.
    assert sweep.finished_jobs(jobs, sweep.carried_jobs(jobs, ledger))["b"] == sweep.finished_job(jobs[1])


@pytest.mark.parametrize(
    "text", ["{not json", json.dumps({"nojobs": {}}), json.dumps({"jobs": {"a": {"entry": {}}}}), json.dumps([1])]
)
def test_corrupt_ledger_is_a_clear_error(tmp_path, text):
    path = tmp_path / "in_progress.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"ledger .*in_progress.json is unreadable"):
        sweep.read_ledger(str(path))
    assert sweep.read_ledger(str(tmp_path / "absent.json")) == {}


def test_repeats_follow_every_other_job_with_their_seed_and_evaluations(tmp_path):
    jobs = sweep.plan_jobs(
        "study", str(tmp_path / "runs"), ["--epochs=1 --seed=0"],
        ["pgdat_0: --lambda_values=0", "pgdat_1: --lambda_values=1", "oat: --variant=oat"],
        [], ["oat/strong: --attacks=pgd20"], repeat_seeds=[1, 2], repeat_runs=["pgdat_*", "oat"],
    )
    study_dir = os.path.join(str(tmp_path / "runs"), "study")
    assert [j.title for j in jobs] == [
        "pgdat_0", "pgdat_1", "oat", "oat/strong",
        "pgdat_0_seed1", "pgdat_1_seed1", "oat_seed1", "oat_seed1/strong",
        "pgdat_0_seed2", "pgdat_1_seed2", "oat_seed2", "oat_seed2/strong",
    ]
    repeat = jobs[6]
    assert (repeat.repeat_of, repeat.seed) == ("oat", 1) and (jobs[2].repeat_of, jobs[2].seed) == ("", None)
    # The base run's flags with its own name and the seed last (the last --seed wins).
    assert repeat.flags == (
        "--epochs=1", "--seed=0", "--variant=oat", "--name=oat_seed1", f"--runs_dir={study_dir}",
        "--export_dir=", "--seed=1",
    )
    assert repeat.run_dir == os.path.join(study_dir, "oat_seed1")
    evaluation = jobs[7]
    assert evaluation.repeat_of == "oat" and evaluation.seed == 1
    assert f"--run_dir={repeat.run_dir}" in evaluation.flags
    assert f"--output_dir={os.path.join(repeat.run_dir, 'evaluation_strong')}" in evaluation.flags
    assert not any(os.path.join(study_dir, "oat") + os.sep in f for f in evaluation.flags)


@pytest.mark.parametrize(
    "seeds, patterns, runs, message",
    [
        ([1], [], ("a: --x=1",), "given together"),
        ([], ["a"], ("a: --x=1",), "given together"),
        ([1], ["z*"], ("a: --x=1",), "matches none"),
        ([0], ["a"], ("a: --x=1",), "already trains with"),
        ([3], ["a"], ("a: --seed=3",), "already trains with"),
        ([1], ["a"], ("a: --x=1", "a_seed1: --x=2"), "collide"),
    ],
)
def test_bad_repeats_are_refused(tmp_path, seeds, patterns, runs, message):
    with pytest.raises(ValueError, match=message):
        sweep.plan_jobs("study", str(tmp_path), [], list(runs), repeat_seeds=seeds, repeat_runs=patterns)


@pytest.mark.parametrize(
    "values, message", [(["1", "x"], "non-negative integers"), (["-1"], "non-negative"), (["1", "1"], "twice")]
)
def test_repeat_seeds_must_be_distinct_non_negative_ints(values, message):
    with pytest.raises(ValueError, match=message):
        sweep.parse_repeat_seeds(values)
    assert sweep.parse_repeat_seeds([" 2", "1"]) == [2, 1]


def test_collected_repeats_carry_what_they_repeat(tmp_path, monkeypatch):
    calls = []
    _fake_subprocess(monkeypatch, calls)
    jobs = sweep.plan_jobs(
        "study", str(tmp_path / "runs"), [], ["a: --x=1"], [], ["a/e: --lambdas=0"],
        repeat_seeds=[1], repeat_runs=["a"],
    )
    for job in jobs:
        sweep.run_job(job, str(tmp_path / "flags"))
    results = sweep.collect_results(jobs, study="study", description="d", command="c", report="oat")
    base, repeat = results["runs"]
    assert "repeat_of" not in base and "seed" not in base
    assert (repeat["name"], repeat["repeat_of"], repeat["seed"]) == ("a_seed1", "a", 1)
    assert repeat["config"] == {"name": "a_seed1"} and repeat["evaluations"][0]["label"] == "e"


def _sweep(tmp_path, *extra):
    """Runs the tiny sweep in `tmp_path` (relative paths: another directory is another machine)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=testing.REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "oat_tf.sweep", "--study=tiny", "--runs_dir=runs",
         "--results_dir=docs/tiny", f"--common={TINY_COMMON}",
         "--run=oat: --variant=oat --eval_lambdas=0,1",
         "--evaluate=oat/fgsm: --attacks=fgsm --lambdas=1 --masking_checks=false --plots=false",
         *extra],
        capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=900,
    )


def test_sweep_end_to_end_skips_finished_jobs_and_carries_them_to_another_machine(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    # Run oat and its evaluation, not run plain (--only): the study stays unfinished.
    unfinished = ("--run=plain: --variant=plain", "--only=oat")
    result = _sweep(first, *unfinished)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[1/2] train oat" in result.stderr and "[2/2] evaluate oat/fgsm" in result.stderr
    results = json.loads((first / "docs" / "tiny" / "results.json").read_text())
    assert [r["name"] for r in results["runs"]] == ["oat"] and results["missing"] == ["plain"]
    oat_run = results["runs"][0]
    on_disk = json.loads((first / "runs" / "tiny" / "oat" / "test_eval.json").read_text())
    assert oat_run["test_eval"]["clean_accuracy"] == on_disk["clean_accuracy"]
    assert oat_run["config"]["model"]["filters"] == [4, 8]
    assert oat_run["evaluations"][0]["results"]["robust_accuracy"].keys() == {"FGSM"}
    report = (first / "docs" / "tiny.md").read_text()
    assert "| oat | small_cnn | 4/8 | oat |" in report and "## `oat`" in report
    assert "**Not finished:** plain" in report
    # The ledger records the finished jobs, for another machine.
    ledger = json.loads((first / "docs" / "tiny" / "in_progress.json").read_text())
    assert (ledger["finished"], ledger["of"], ledger["missing"]) == (2, 3, ["plain"])
    # Another machine with the results directory (a clone of the repository), no run
    # directories: the ledger's jobs are carried, not run, and the results are the same.
    shutil.copytree(first / "docs", second / "docs")
    (second / "docs" / "tiny" / "results.json").unlink()
    carried = _sweep(second, *unfinished)
    assert carried.returncode == 0, carried.stderr[-3000:]
    assert carried.stderr.count("carried: ") == 2 and "Epoch" not in carried.stdout
    assert not (second / "runs" / "tiny" / "oat").exists()
    assert json.loads((second / "docs" / "tiny" / "results.json").read_text()) == results
    assert (second / "docs" / "tiny.md").read_text() == report
    # Back on the first machine the finished jobs are skipped and only plain trains;
    # once the study is complete no ledger is left beside its results.
    complete = _sweep(first, "--run=plain: --variant=plain")
    assert complete.returncode == 0, complete.stderr[-3000:]
    assert complete.stderr.count("skip: ") == 2 and complete.stderr.count("start: ") == 1
    assert not (first / "docs" / "tiny" / "in_progress.json").exists()
    names = [r["name"] for r in json.loads((first / "docs" / "tiny" / "results.json").read_text())["runs"]]
    assert names == ["oat", "plain"]


def test_bad_inner_flags_fail_the_sweep_before_any_run(tmp_path):
    for extra in ((), ("--dry_run",)):
        result = _sweep(tmp_path, "--run=bad: --variant=oat --num_train_examples=-5", *extra)
        assert result.returncode != 0
        assert "bad:" in result.stderr and "num_train_examples" in result.stderr
        assert "nothing was run" in result.stderr
        assert not (tmp_path / "runs").exists()


def _study_flags(path):
    """The repeated sweep flags of a study flagfile, as lists (absl's multi-string flags)."""
    values = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("--") and "=" in line:
                name, value = line[2:].split("=", 1)
                values.setdefault(name, []).append(value)
    return values


# Ledgers of unfinished studies, committed so that a fresh clone goes on where the last sweep stopped.
LEDGERS = sorted(glob.glob(os.path.join(testing.REPO_ROOT, "docs", "results", "*", sweep.LEDGER_FILE)))


@pytest.mark.parametrize("path", LEDGERS, ids=[os.path.basename(os.path.dirname(p)) for p in LEDGERS])
def test_committed_ledgers_carry_every_job_they_record(path):
    study = os.path.basename(os.path.dirname(path))
    flags = _study_flags(os.path.join(testing.REPO_ROOT, "experiments", f"study_{study}.flags"))
    listed = lambda name: [item for value in flags.get(name, []) for item in value.split(",")]
    jobs = sweep.plan_jobs(
        flags["study"][0], "runs", flags.get("common", []), flags["run"], flags.get("common_evaluate", []),
        flags.get("evaluate", []), repeat_seeds=sweep.parse_repeat_seeds(listed("repeat_seeds")),
        repeat_runs=listed("repeat_runs"),
    )
    ledger = sweep.read_ledger(path)
    # Every recorded job still has the flagfile's flags: a sweep from a clone skips them all.
    assert set(sweep.carried_jobs(jobs, ledger)) == set(ledger)
    with open(path, encoding="utf-8") as f:
        recorded = json.load(f)
    assert recorded["finished"] == len(ledger) and recorded["of"] == len(jobs)
