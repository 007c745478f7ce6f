"""Two real `python -m oat_tf.train` workers on loopback under MultiWorkerMirroredStrategy.

One test, three two-worker runs sharing their cost: a run to completion (the
chief alone writes results and the export), its equality with the same run on
one process with two logical devices, and a run whose second worker is killed
(`SIGKILL`) mid-run, then restarted with its chief under `--resume`, ending
with the uninterrupted run's weights.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from oat_tf.evaluation import loading
from oat_tf.training import loopback_cluster
from tests import testing

# 64 examples in batches of 16 (8 per worker): 4 steps per epoch, 3 epochs.
WORKER_FLAGS = (
    "--dataset=embedded", "--num_train_examples=64", "--num_eval_examples=16", "--validation_size=0",
    "--architecture=small_cnn", "--variant=oat", "--filters=4,8", "--hidden_units=8", "--encoding_dim=8",
    "--epsilon=0.3", "--step_size=0.1", "--attack_steps=2", "--epochs=3", "--batch_size=16",
    "--learning_rate=0.05", "--seed=1", "--eval_attacks=train", "--eval_lambdas=0,1",
    "--checkpoint_every_steps=3", "--strategy=multi_worker",
)
TOTAL_STEPS = 12
TIMEOUT_SECONDS = 240


class _Workers:
    """Two worker processes of one run; every process is ended by PID on exit."""

    def __init__(self, root, name, *extra):
        ports = loopback_cluster.free_ports(2)
        self.logs, self.processes, self.scratch = [], [], []
        for index in range(2):
            scratch = root / f"tmp_worker{index}"
            scratch.mkdir(exist_ok=True)
            env = dict(
                os.environ,
                TF_CONFIG=loopback_cluster.tf_config(ports, index),
                TMPDIR=str(scratch),
                PYTHONPATH=testing.REPO_ROOT,
                TF_CPP_MIN_LOG_LEVEL="2",
            )
            log = root / f"{name}_worker{index}.log"
            with open(log, "ab") as out:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-m", "oat_tf.train", *WORKER_FLAGS, f"--name={name}",
                     f"--runs_dir={root / 'runs'}", f"--export_dir={root / 'export'}", *extra],
                    env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(root),
                ))
            self.logs.append(log)
            self.scratch.append(scratch)

    def wait(self, timeout=TIMEOUT_SECONDS):
        deadline = time.monotonic() + timeout
        try:
            return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in self.processes]
        finally:
            self.end()

    def end(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def tail(self, index, lines=30):
        return "\n".join(self.logs[index].read_text(errors="replace").splitlines()[-lines:])


def _latest_step(run_dir):
    try:
        text = (run_dir / "checkpoints" / "checkpoint").read_text()
    except OSError:
        return 0
    return int(text.split('model_checkpoint_path: "ckpt-')[1].split('"')[0])


def _weights(network):
    return [v.numpy() for v in network.weights]


@pytest.fixture
def workers():
    started = []
    yield lambda *args: started.append(_Workers(*args)) or started[-1]
    for group in started:
        group.end()


# `python -m oat_tf.train` with two logical CPUs under MirroredStrategy: one
# process, two replicas (the CLI's own mirrored strategy would see one CPU).
ONE_PROCESS = """
import sys
import oat_tf
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from absl import flags, logging
from oat_tf import flags as oat_flags
from oat_tf.training import determinism, experiment
oat_flags.define_flags()
flags.FLAGS(sys.argv)
logging.set_verbosity(logging.INFO)
determinism.configure(flags.FLAGS.deterministic)
devices = [d.name for d in tf.config.list_logical_devices("CPU")]
experiment.run_experiment(
    oat_flags.flags_to_config(flags.FLAGS), strategy=tf.distribute.MirroredStrategy(devices)
)
"""


def test_two_workers_train_export_equal_one_process_and_survive_a_killed_worker(tmp_path, workers):
    # 1. Uninterrupted: both workers finish; the chief alone writes results and the export.
    full = workers(tmp_path, "full")
    assert full.wait() == [0, 0], full.tail(0) + "\n----\n" + full.tail(1)
    run_dir = tmp_path / "runs" / "full"
    for name in ("config.json", "flags.txt", "test_eval.json", "test_eval.md"):
        assert (run_dir / name).is_file(), name
    assert (tmp_path / "export" / "full" / "saved_model.pb").is_file()
    assert _latest_step(run_dir) == TOTAL_STEPS
    assert sorted(os.listdir(tmp_path / "runs")) == ["full"] and sorted(os.listdir(tmp_path / "export")) == ["full"]
    # The second worker's checkpoints went to scratch space, deleted at its end. (Its
    # TMPDIR may keep the __pycache__ of autograph's generated modules where the
    # interpreter writes bytecode, as under Bazel, whose test environment does not
    # pass PYTHONDONTWRITEBYTECODE on.)
    assert [name for name in os.listdir(full.scratch[1]) if name != "__pycache__"] == []
    assert "trained as a worker" in full.logs[1].read_text()

    # 2. The same flags on one process with two logical devices: the same weights.
    one = subprocess.run(
        [sys.executable, "-c", ONE_PROCESS, *WORKER_FLAGS, "--strategy=mirrored", "--name=one_process",
         f"--runs_dir={tmp_path / 'one_process_runs'}", "--export_dir="],
        env=dict(os.environ, PYTHONPATH=testing.REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True, text=True, timeout=TIMEOUT_SECONDS, cwd=str(tmp_path),
    )
    assert one.returncode == 0, one.stderr[-3000:]
    one_dir = tmp_path / "one_process_runs" / "one_process"
    assert "strategy mirrored (2 replicas)" in one.stderr
    reference, _ = loading.load_network_from_run(str(one_dir))
    trained, _ = loading.load_network_from_run(str(run_dir))
    for a, b in zip(_weights(reference), _weights(trained)):
        np.testing.assert_allclose(b, a, atol=1e-6)
    assert json.loads((run_dir / "test_eval.json").read_text()) == json.loads((one_dir / "test_eval.json").read_text())

    # 3. Kill the second worker (SIGKILL) once the chief has checkpointed step 3, with
    # the worker frozen first so that the run cannot finish in between.
    killed = workers(tmp_path, "killed")
    killed_dir = tmp_path / "runs" / "killed"
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while _latest_step(killed_dir) < 3:
        assert time.monotonic() < deadline and all(p.poll() is None for p in killed.processes), killed.tail(0)
        time.sleep(0.02)
    killed.processes[1].send_signal(signal.SIGSTOP)
    killed.processes[1].kill()
    # The chief's collectives fail once its peer is gone; it exits with an error.
    codes = killed.wait(timeout=120)
    assert codes[0] != 0 and codes[1] == -signal.SIGKILL
    stopped_at = _latest_step(killed_dir)
    assert 3 <= stopped_at < TOTAL_STEPS and not (killed_dir / "test_eval.json").exists()
    # 4. Both restarted with --resume: the chief's checkpoint, read by both, and the same end.
    resumed = workers(tmp_path, "killed", "--resume")
    assert resumed.wait() == [0, 0], resumed.tail(0) + "\n----\n" + resumed.tail(1)
    for index in (0, 1):
        assert f"(step {stopped_at})" in resumed.logs[index].read_text()
    assert _latest_step(killed_dir) == TOTAL_STEPS
    again, _ = loading.load_network_from_run(str(killed_dir))
    for a, b in zip(_weights(trained), _weights(again)):
        np.testing.assert_allclose(b, a, atol=1e-6)
    assert json.loads((killed_dir / "test_eval.json").read_text())["clean_accuracy"] == json.loads(
        (run_dir / "test_eval.json").read_text()
    )["clean_accuracy"]
    assert sorted(os.listdir(tmp_path / "runs")) == ["full", "killed"]
