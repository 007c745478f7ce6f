"""Training step time on one process against two workers on loopback (issue 19).

    python benchmarks/multi_worker_loopback.py --rounds=2

Runs `python -m oat_tf.train` (MNIST npz, SmallCNN 16/32/100 OAT, PGD-7,
global batch 128, 3 epochs of 16 steps) in three set-ups, alternately, `rounds`
times:

- `default`: one process, Keras' `fit` (the usual single-machine run);
- `1 worker`: `--strategy=multi_worker` with a one-worker TF_CONFIG (the
  custom loop of `oat_tf.training.distributed_loop`, one replica);
- `2 workers`: two processes on 127.0.0.1, one replica each (64 images).

The step time is Keras' `ms/step` of epochs 2 and 3 (epoch 1 includes the
trace), read from the chief's log. On a 2-core machine the two workers share
the cores that one process uses alone, so the ratio shows the cost of the
collectives and the split batch, not a speed-up. Prints a Markdown table for
BENCHMARKS.md.
"""

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from oat_tf.training import loopback_cluster  # noqa: E402
FLAGS = [
    "--dataset=npz:" + os.path.join(os.path.dirname(REPO), "shared", "data", "mnist.npz"),
    "--num_train_examples=2048", "--validation_size=0", "--num_eval_examples=128",
    "--architecture=small_cnn", "--variant=oat", "--filters=16,32", "--hidden_units=100",
    "--epsilon=0.3", "--step_size=0.075", "--attack_steps=7", "--epochs=3", "--batch_size=128",
    "--eval_attacks=train", "--eval_lambdas=0,1", "--export_dir=", "--seed=0",
]
STEP_TIME = re.compile(r"^16/16 - .* - (\d+)ms/step", re.MULTILINE)


def _run(setup, root, index):
    """Runs one set-up; returns the chief's ms/step of epochs 2 and 3 and the wall time."""
    workers = {"default": 0, "1 worker": 1, "2 workers": 2}[setup]
    name = f"{setup.replace(' ', '_')}_{index}"
    common = [sys.executable, "-m", "oat_tf.train", *FLAGS, f"--name={name}", f"--runs_dir={root}"]
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.monotonic()
    if workers == 0:
        logs = [subprocess.run(common, env=env, capture_output=True, text=True, check=True).stdout]
    else:
        ports = loopback_cluster.free_ports(workers)
        processes = []
        for task in range(workers):
            task_env = dict(env, TF_CONFIG=loopback_cluster.tf_config(ports, task))
            processes.append(subprocess.Popen(
                common + ["--strategy=multi_worker"], env=task_env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True,
            ))
        logs = [p.communicate()[0] for p in processes]
        if any(p.returncode for p in processes):
            raise RuntimeError(f"{setup} failed:\n" + logs[0][-3000:])
    wall = time.monotonic() - start
    times = [int(t) for t in STEP_TIME.findall(logs[0])]
    if len(times) != 3:
        raise RuntimeError(f"{setup}: expected 3 epoch lines, found {times}:\n" + logs[0][-3000:])
    return sum(times[1:]) / 2.0, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    setups = ("default", "1 worker", "2 workers")
    results = {s: [] for s in setups}
    with tempfile.TemporaryDirectory(prefix="oat_tf_loopback_") as root:
        for index in range(args.rounds):
            for setup in setups:
                results[setup].append(_run(setup, root, index))
                print(f"round {index + 1} {setup}: {results[setup][-1][0]:.0f} ms/step, "
                      f"{results[setup][-1][1]:.1f} s wall", file=sys.stderr, flush=True)
    cpu = "?"
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = f"{names[0] if names else '?'}, {os.cpu_count()} cores"
    base = sum(r[0] for r in results["default"]) / args.rounds
    print(f"\n{platform.platform()}; {cpu}; {args.rounds} rounds, alternating.\n")
    print("| set-up | ms/step (epochs 2-3, per round) | mean | vs default | wall per run (s) |")
    print("|---|---|---:|---:|---|")
    for setup in setups:
        steps = [r[0] for r in results[setup]]
        mean = sum(steps) / len(steps)
        print(f"| {setup} | {' / '.join(f'{s:.0f}' for s in steps)} | {mean:.0f} | {mean / base:.2f}× | "
              f"{' / '.join(f'{r[1]:.0f}' for r in results[setup])} |")


if __name__ == "__main__":
    main()
