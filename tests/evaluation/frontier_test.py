"""Tests for oat_tf.evaluation.frontier on fake run directories."""

import json
from unittest import mock

import pytest

from oat_tf.evaluation import frontier


def _attack(label, name="pgd", epsilon=0.03, num_steps=7, step_size=0.008, **extra):
    return {"label": label, "name": name, "epsilon": epsilon, "step_size": step_size,
            "num_steps": num_steps, "random_start": True, "num_restarts": 1, "decay": 1.0,
            "targeted": False, "num_queries": 100, **extra}


def _result(lambdas=(0.3,), sa=0.8, attacks=None):
    attacks = attacks or {"PGD-7": (_attack("PGD-7"), 0.45)}
    keys = [repr(float(lam)) for lam in lambdas]
    return {
        "num_examples": 100,
        "lambdas": list(lambdas),
        "clean_accuracy": {k: sa for k in keys},
        "robust_accuracy": {label: {k: ra for k in keys} for label, (_, ra) in attacks.items()},
        "worst_case_accuracy": {k: 0.1 for k in keys},
        "attacks": [settings for settings, _ in attacks.values()],
    }


def _config(values=(0.3,), variant="plain", name="pgdat", dataset="cifar10"):
    return {"name": name, "lambda_sampling": {"values": list(values)}, "model": {"variant": variant},
            "data": {"dataset": dataset}}


def _write(directory, name, payload):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(json.dumps(payload))


def test_training_run_directory_gives_its_fixed_lambda_point(tmp_path):
    _write(tmp_path / "run", "config.json", _config())
    _write(tmp_path / "run", "test_eval.json", _result())
    run = frontier.load_frontier_run(str(tmp_path / "run"))
    assert run.lambda_value == 0.3 and run.name == "pgdat"
    point = frontier.frontier_point(run, "PGD-7", {k: v for k, v in _attack("PGD-7").items() if k != "label"},
                                    dataset="cifar10", num_examples=100)
    assert (point.clean_accuracy, point.robust_accuracy, point.attack, point.lambda_key) == (0.8, 0.45, "PGD-7", "0.3")
    assert point.notes == ()
    assert point.to_dict()["notes"] == []


def test_evaluation_directory_finds_config_in_source_or_parent(tmp_path):
    # Parent: <run>/evaluation_test/evaluation.json.
    _write(tmp_path / "run", "config.json", _config(values=(1.0,)))
    _write(tmp_path / "run" / "evaluation_test", "evaluation.json", _result(lambdas=(1.0,), sa=0.7))
    run = frontier.load_frontier_run(str(tmp_path / "run" / "evaluation_test"))
    assert run.lambda_value == 1.0 and run.result["clean_accuracy"]["1.0"] == 0.7
    # Source: an evaluation written elsewhere names the run it evaluated.
    _write(tmp_path / "elsewhere" / "eval", "evaluation.json",
           {**_result(lambdas=(1.0,)), "source": str(tmp_path / "run")})
    assert frontier.load_frontier_run(str(tmp_path / "elsewhere" / "eval")).lambda_value == 1.0


def test_evaluation_json_wins_over_test_eval_json(tmp_path):
    _write(tmp_path, "config.json", _config())
    _write(tmp_path, "test_eval.json", _result(sa=0.5))
    _write(tmp_path, "evaluation.json", _result(sa=0.6))
    run = frontier.load_frontier_run(str(tmp_path))
    assert run.result_path.endswith("evaluation.json") and run.result["clean_accuracy"]["0.3"] == 0.6


def test_bad_directories_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="directory"):
        frontier.load_frontier_run(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="test_eval.json"):
        frontier.load_frontier_run(str(tmp_path))
    _write(tmp_path / "a" / "b", "test_eval.json", _result())
    with pytest.raises(FileNotFoundError, match="config.json"):
        frontier.load_frontier_run(str(tmp_path / "a" / "b"))
    _write(tmp_path / "oat", "config.json", _config(values=(0.0, 0.1, 1.0), variant="oat"))
    _write(tmp_path / "oat", "test_eval.json", _result())
    with pytest.raises(ValueError, match="one fixed λ"):
        frontier.load_frontier_run(str(tmp_path / "oat"))
    _write(tmp_path / "bad", "config.json", _config())
    _write(tmp_path / "bad", "test_eval.json", {"lambdas": [0.3]})
    with pytest.raises(ValueError, match="result"):
        frontier.load_frontier_run(str(tmp_path / "bad"))


def test_missing_attack_uses_the_closest_and_warns(tmp_path):
    attacks = {
        "FGSM": (_attack("FGSM", name="fgsm", num_steps=1), 0.6),
        "PGD-10": (_attack("PGD-10", num_steps=10), 0.44),
        "PGD-7": (_attack("PGD-7", epsilon=0.1), 0.2),  # same label, other ε
        "Square-100": (_attack("Square-100", name="square"), 0.5),
    }
    _write(tmp_path, "config.json", _config())
    _write(tmp_path, "test_eval.json", _result(attacks=attacks))
    run = frontier.load_frontier_run(str(tmp_path))
    wanted = {k: v for k, v in _attack("PGD-20", num_steps=20).items() if k != "label"}
    with mock.patch.object(frontier.logging, "warning") as warning:
        point = frontier.frontier_point(run, "PGD-20", wanted)
    # Same family and ε first (the PGD-7 with ε = 0.1 loses on ε), then steps.
    assert point.attack == "PGD-10" and point.robust_accuracy == 0.44
    assert len(point.notes) == 1 and "closest attack PGD-10" in point.notes[0]
    assert warning.call_count == 1
    # A label match with other settings is not the same attack either.
    wanted_7 = {k: v for k, v in _attack("PGD-7").items() if k != "label"}
    assert frontier.frontier_point(run, "PGD-7", wanted_7).attack == "PGD-10"
    # Without settings, labels decide.
    assert frontier.closest_attack(run.result, "FGSM", None) == ("FGSM", True)


def test_lambda_dataset_and_size_mismatches_are_noted(tmp_path):
    _write(tmp_path / "oat1", "config.json", _config(values=(0.5,), variant="oat_single_bn", dataset="svhn"))
    _write(tmp_path / "oat1", "test_eval.json", _result(lambdas=(0.0, 0.4, 1.0)))
    point = frontier.frontier_point(
        frontier.load_frontier_run(str(tmp_path / "oat1")), "PGD-7", None, dataset="cifar10", num_examples=50
    )
    assert point.lambda_key == "0.4" and point.lambda_value == 0.5
    assert len(point.notes) == 3
    assert "training λ 0.5" in point.notes[0] and "svhn" in point.notes[1] and "100 examples" in point.notes[2]
    # A plain model ignores λ: no note for reading it at another λ.
    _write(tmp_path / "plain", "config.json", _config(values=(0.5,)))
    _write(tmp_path / "plain", "test_eval.json", _result(lambdas=(0.0, 1.0)))
    point = frontier.frontier_point(frontier.load_frontier_run(str(tmp_path / "plain")), "PGD-7", None)
    assert point.notes == () and point.lambda_key == "0.0"
