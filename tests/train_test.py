"""The command line end to end on tiny data, and its flag checks."""

import json
import os
import subprocess
import sys

import pytest

from oat_tf import cpu_kernels
from tests import testing

TINY_FLAGS = [
    "--dataset=embedded",
    "--num_train_examples=32",
    "--num_eval_examples=16",
    "--architecture=small_cnn",
    "--variant=oat",
    "--encoding_dim=8",
    "--epsilon=0.3",
    "--step_size=0.1",
    "--attack_steps=2",
    "--epochs=1",
    "--batch_size=16",
    "--eval_lambdas=0,1",
    "--eval_attacks=train",
]


def _run(tmp_path, *flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=testing.REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "oat_tf.train", f"--runs_dir={tmp_path}/runs",
         f"--export_dir={tmp_path}/export", *flags],
        capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=600,
    )


def test_cli_trains_evaluates_and_exports(tmp_path):
    result = _run(tmp_path, "--name=cli", *TINY_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| λ |" in result.stdout and "| 1.0 |" in result.stdout
    run_dir = tmp_path / "runs" / "cli"
    flags_text = (run_dir / "flags.txt").read_text()
    assert "--epsilon=0.3" in flags_text and "--attack_steps=2" in flags_text
    results = json.loads((run_dir / "test_eval.json").read_text())
    assert results["num_examples"] == 16 and set(results["clean_accuracy"]) == {"0.0", "1.0"}
    assert (tmp_path / "export" / "cli" / "saved_model.pb").is_file()
    # The export's model card carries the table measured on the test split.
    card = json.loads((tmp_path / "export" / "cli" / "assets.extra" / "model_card.json").read_text())
    measured = card["test_evaluation"]
    assert measured["split"] == "test" and measured["num_examples"] == 16
    for key in ("lambdas", "clean_accuracy", "robust_accuracy", "worst_case_accuracy", "attacks", "seed"):
        assert measured[key] == results[key], key
    assert "| 1.0 |" in measured["table"]
    # The worst case headlines the table; the paired masking checks travel with it.
    assert measured["table"].splitlines()[0].startswith("| λ | seen | SA (%) | RA worst case (%) |")
    assert [c["name"] for c in measured["masking_checks"]] == [
        "stronger_pgd_not_weaker", "black_box_not_stronger", "weaker_attacks_not_overstating"]
    assert measured["masking_checks"] == results["masking_checks"]
    assert (card["name"], card["dataset"], card["architecture"], card["variant"]) == (
        "cli", "embedded", "small_cnn", "oat")
    assert card["seen_lambdas"] == [0.0, 0.1, 0.2, 0.3, 0.4, 1.0]
    assert card["train_attack"]["epsilon"] == 0.3 and card["data"]["num_train_examples"] == 32
    assert (card["objective"], card["clean_fraction"], card["test_bn"]) == ("oat", 0.5, "adversarial")
    assert card["bn_statistics"] == "moving" and card["export_bn_statistics"] == "moving"
    # What a serving request must send, and the batch the card recommends at most.
    assert card["serving"]["inputs"]["image"] == {"dtype": "float32", "shape": [-1, 28, 28, 1], "range": [0.0, 1.0]}
    assert card["serving"]["inputs"]["lambda_value"]["dtype"] == "float32"
    assert card["serving"]["recommended_max_batch"] == 1024
    # The float32 run names this CPU's bfloat16 units in its log if, and only if, it has some.
    hint = cpu_kernels.bfloat16_hint("float32", cpu_kernels.read_cpuinfo()["flags"])
    assert (hint is not None) == ("--mixed_precision=mixed_bfloat16" in result.stderr)


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--epsilon=2", "epsilon"),
        ("--lambda_values=0,1.5", "lambda_values"),
        ("--eval_lambdas=-0.1", "eval_lambdas"),
        ("--lambda_sampling=fixed", "fixed"),
        ("--eval_attacks=cw", "eval_attacks"),
        ("--variant=dual", "variant"),
        ("--batch_size=0", "batch_size"),
    ],
)
def test_bad_flags_fail_before_any_work(tmp_path, flag, message):
    result = _run(tmp_path, "--name=bad", *TINY_FLAGS, flag)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "runs").exists()


def _checkpoint_values(run_dir):
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run_dir / "checkpoints")))
    return {
        name: np.asarray(reader.get_tensor(name))
        for name in reader.get_variable_to_shape_map()
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
    }


def test_deterministic_runs_give_bit_identical_weights(tmp_path):
    # --deterministic is the default; said explicitly so the test reads.
    flags = [f for f in TINY_FLAGS if not f.startswith(("--epochs", "--num_train_examples"))]
    # No export (--export_dir= empty): the weights are compared in the checkpoints.
    flags += ["--epochs=2", "--num_train_examples=48", "--deterministic", "--export_dir="]
    first = _run(tmp_path, "--name=first", *flags)
    assert first.returncode == 0, first.stderr[-3000:]
    second = _run(tmp_path, "--name=second", *flags)
    assert second.returncode == 0, second.stderr[-3000:]
    values_first = _checkpoint_values(tmp_path / "runs" / "first")
    values_second = _checkpoint_values(tmp_path / "runs" / "second")
    assert set(values_first) == set(values_second)
    trainable = [n for n in values_first if "/.ATTRIBUTES/VARIABLE_VALUE" in n]
    assert len(trainable) > 10  # the network's kernels, BN statistics, optimizer slots
    for name, value in values_first.items():
        assert value.tobytes() == values_second[name].tobytes(), name
    # Not vacuous: both runs took their 2 × 3 steps, and the flag is recorded
    # with the run.
    assert int(values_first["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) == 6
    assert "--deterministic" in (tmp_path / "runs" / "first" / "flags.txt").read_text()


def test_an_empty_or_escaping_name_never_touches_other_exports(tmp_path):
    other = tmp_path / "export" / "other_model"
    other.mkdir(parents=True)
    (other / "saved_model.pb").write_bytes(b"another model")
    for name in ("", "../x", "."):
        result = _run(tmp_path, f"--name={name}", *TINY_FLAGS)
        assert result.returncode != 0
        assert "--name must be one non-empty path component" in result.stderr
    assert (other / "saved_model.pb").read_bytes() == b"another model"
    assert sorted(os.listdir(tmp_path)) == ["export"]


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--resume", "`--resume` needs an existing run"),
        ("--max_checkpoints=0", "max_checkpoints must be >= 1"),
        ("--num_train_examples=-5", "num_train_examples must be an integer >= 1"),
        ("--widths=0.5,1", "--widths (given: '0.5,1') acts only with"),
    ],
)
def test_silently_accepted_values_are_refused_and_nothing_is_written(tmp_path, flag, message):
    result = _run(tmp_path, "--name=bad", *TINY_FLAGS, flag)
    assert result.returncode != 0 and message in result.stderr
    assert "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []


def test_refused_runs_exit_with_the_usage_status_and_check_only_writes_nothing(tmp_path):
    from oat_tf import run_directory  # pylint: disable=import-outside-toplevel

    refused = _run(tmp_path, "--name=bad", *TINY_FLAGS, "--resume")
    assert refused.returncode == run_directory.USAGE_EXIT_STATUS
    checked = _run(tmp_path, "--name=ok", *TINY_FLAGS, "--check_only")
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert json.loads(checked.stdout)["name"] == "ok"
    assert os.listdir(tmp_path) == []
