"""The calibration command line: λ chosen on validation data only, and the model card."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from oat_tf import atomic_files
from oat_tf import calibrate
from oat_tf import config as config_lib
from oat_tf import data
from oat_tf import export
from oat_tf.evaluation import calibrate_model
from oat_tf.evaluation import calibration
from oat_tf.evaluation import results as results_lib
from oat_tf.evaluation import robust_eval
from oat_tf.training import experiment
from tests import testing

ATTACK = config_lib.AttackConfig(epsilon=0.3, step_size=0.1, num_steps=2)
LAMBDAS = (0.0, 0.5, 1.0)
VALIDATION_SIZE = 24
# PGD-3 at the training ε and step size: what `--attacks=pgd3` means for this run.
PGD3 = config_lib.AttackConfig(epsilon=0.3, step_size=0.1, num_steps=3)
CLI_FLAGS = ["--lambdas=0:1:0.5", "--attacks=pgd3", "--batch_size=16"]


def _write_npz(path, train, test):
    np.savez_compressed(
        path, x_train=train.images, y_train=train.labels, x_test=test.images, y_test=test.labels
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-step OAT run on 40 digits, 24 held out for validation, exported with its card."""
    root = tmp_path_factory.mktemp("calibrate")
    # An npz slice of the embedded digits, so that a test can poison its test arrays.
    splits = data.load_splits(config_lib.DataConfig(dataset="embedded"))
    npz = root / "digits.npz"
    _write_npz(npz, splits.train.take(40 + VALIDATION_SIZE), splits.test.take(16))
    config = config_lib.ExperimentConfig(
        name="tiny",
        runs_dir=str(root / "runs"),
        export_dir=str(root / "export"),
        data=config_lib.DataConfig(dataset=f"npz:{npz}", validation_size=VALIDATION_SIZE),
        model=config_lib.ModelConfig(architecture="small_cnn", encoder=config_lib.EncoderConfig(dim=8)),
        train_attack=ATTACK,
        train=config_lib.TrainConfig(epochs=1, batch_size=20),
        evaluation=config_lib.EvalConfig(lambdas=(0.0, 1.0), attacks=(ATTACK,), batch_size=16),
    )
    summary = experiment.run_experiment(config)
    return summary, root, npz


@pytest.fixture(scope="module")
def reference(tiny_run):
    """The validation curve measured directly, λ by λ as the tool does."""
    summary, _, npz = tiny_run
    validation = data.load_splits(
        config_lib.DataConfig(dataset=f"npz:{npz}", validation_size=VALIDATION_SIZE)
    ).validation
    assert validation.num_examples == VALIDATION_SIZE
    dataset = data.eval_dataset(validation, batch_size=16)
    result = results_lib.merge_results([
        robust_eval.evaluate_lambda_grid(summary["network"], dataset, [lam], [PGD3], seed=0)
        for lam in LAMBDAS
    ])
    return calibration.curve_from_evaluation(result)


def _run_cli(*flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=testing.REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "oat_tf.calibrate", *flags],
        capture_output=True, text=True, env=env, timeout=600,
    )


def _threshold(curve, metric):
    # The second highest value when there is one: a requirement some λ miss.
    values = sorted({p[metric] for p in curve})
    return values[-2] if len(values) > 1 else values[-1]


def test_cli_chooses_on_validation_and_exports_the_card(tiny_run, reference, tmp_path):
    summary, _, _ = tiny_run
    min_sa = _threshold(reference, "sa")
    export_dir = tmp_path / "calibrated"
    result = _run_cli(
        f"--run_dir={summary['run_dir']}", f"--min_sa={100 * min_sa!r}", f"--export_dir={export_dir}",
        f"--output_dir={tmp_path / 'out'}", *CLI_FLAGS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "out" / calibrate_model.CALIBRATION_FILENAME).read_text())
    assert record["split"] == "validation" and record["num_examples"] == VALIDATION_SIZE
    assert record["ra_attack"] == "worst_case" and [a["label"] for a in record["attacks"]] == ["PGD-3"]
    assert record["attacks"][0]["epsilon"] == 0.3 and record["attacks"][0]["step_size"] == 0.1
    # The curve is the validation measurement, and the choice follows from it.
    assert record["curve"] == reference
    choice = record["choice"]
    expected = calibration.choose_lambda(reference, min_sa=min_sa)
    # The percentage on the command line comes back within a float ulp.
    assert choice["constraint"]["minimum"] == pytest.approx(min_sa, rel=1e-12)
    assert {**choice, "constraint": None} == {**expected, "constraint": None}
    assert choice["feasible"] and choice["sa"] >= min_sa - calibration.TOLERANCE
    chosen = next(p for p in record["curve"] if p["lambda"] == choice["lambda"])
    assert (chosen["sa"], chosen["ra"]) == (choice["sa"], choice["ra"])
    assert choice["ra"] == max(p["ra"] for p in record["curve"] if p["sa"] >= min_sa - 1e-9)
    assert f"lambda_value={choice['lambda']!r}" in result.stdout and "◀ chosen" in result.stdout
    assert record["export_dir"] == str(export_dir)
    assert record["operating_point"] == {"lambda": choice["lambda"], "width": 1.0}

    # The export carries the training card (with the test table) and the calibration.
    card = export.load_model_card(str(export_dir))
    trained_card = export.load_model_card(summary["export_dir"])
    assert {k: v for k, v in card.items() if k != "calibration"} == trained_card
    with open(os.path.join(summary["run_dir"], "test_eval.json")) as f:
        test_eval = json.load(f)
    assert card["test_evaluation"]["clean_accuracy"] == test_eval["clean_accuracy"]
    assert card["calibration"]["choice"] == choice and card["calibration"]["curve"] == reference
    # ... and serves the trained network.
    serve = export.load_serving_fn(str(export_dir))
    images = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype("float32")
    lambdas = np.full([3], choice["lambda"], "float32")
    expected = summary["network"]({"image": images, "lambda": lambdas}, training=False).numpy()
    logits = serve(image=tf.constant(images), lambda_value=tf.constant(lambdas))["logits"].numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5)


class _TestSplitUnreadable:
    """Wraps `DatasetSplits`; reading `.test` fails the test."""

    def __init__(self, splits):
        self._splits = splits

    def __getattr__(self, name):
        if name == "test":
            raise AssertionError("calibrate read the test split")
        return getattr(self._splits, name)


def test_the_test_split_is_never_read(tiny_run, reference, tmp_path, monkeypatch):
    summary, _, npz = tiny_run
    # Poisoned test arrays (inverted images, wrong labels) in a copy of the dataset...
    with np.load(npz) as arrays:
        arrays = dict(arrays)
    poisoned = tmp_path / "poisoned.npz"
    np.savez_compressed(
        poisoned, x_train=arrays["x_train"], y_train=arrays["y_train"],
        x_test=255 - arrays["x_test"], y_test=(arrays["y_test"] + 1) % 10,
    )
    # ... that cannot be read at all.
    load_splits = data.load_splits
    monkeypatch.setattr(data, "load_splits", lambda *a, **k: _TestSplitUnreadable(load_splits(*a, **k)))
    min_ra = _threshold(reference, "ra")
    record = calibrate_model.calibrate(
        run_dir=summary["run_dir"], dataset=f"npz:{poisoned}", min_ra=min_ra, lambdas=LAMBDAS,
        attacks=["pgd3"], batch_size=16, output_dir=str(tmp_path / "out"), progress=False,
    )
    assert record["curve"] == reference
    assert record["choice"] == calibration.choose_lambda(reference, min_ra=min_ra)
    assert record["choice"]["ra"] >= min_ra - calibration.TOLERANCE
    on_disk = json.loads((tmp_path / "out" / calibrate_model.CALIBRATION_FILENAME).read_text())
    assert on_disk == record


def test_infeasible_requirement_exits_3_and_exports_nothing(tiny_run, reference, tmp_path):
    summary, _, _ = tiny_run
    assert max(p["sa"] for p in reference) < 1.0  # So that SA ≥ 100% is out of reach.
    # From the training export: dataset, validation size and ε come from its model card.
    result = _run_cli(
        f"--saved_model={summary['export_dir']}", "--min_sa=100", f"--output_dir={tmp_path / 'out'}",
        f"--export_dir={tmp_path / 'calibrated'}", *CLI_FLAGS,
    )
    assert result.returncode == calibrate.EXIT_INFEASIBLE, result.stderr[-3000:]
    assert "No λ meets SA ≥ 100.00%: the highest SA is" in result.stdout
    record = json.loads((tmp_path / "out" / calibrate_model.CALIBRATION_FILENAME).read_text())
    assert record["choice"]["feasible"] is False and record["choice"]["lambda"] is None
    assert record["operating_point"] is None
    best_sa = max(p["sa"] for p in reference)
    assert record["choice"]["closest"]["sa"] == best_sa
    assert [p["sa"] for p in record["curve"]] == [p["sa"] for p in reference]
    assert record["export_dir"] is None and not (tmp_path / "calibrated").exists()


def test_saved_model_is_updated_in_place_keeping_its_card(tiny_run, reference, tmp_path):
    summary, _, _ = tiny_run
    target = tmp_path / "model"
    shutil.copytree(summary["export_dir"], target)
    trained_card = export.load_model_card(str(target))
    record = calibrate_model.calibrate(
        saved_model=str(target), export_dir=str(target), min_ra=0.0, lambdas=LAMBDAS,
        attacks=["pgd3"], ra_attack="PGD-3", batch_size=16, output_dir=str(tmp_path / "out"),
        progress=False,
    )
    # Through the serving signature: the same clean accuracies as the network.
    assert [p["sa"] for p in record["curve"]] == [p["sa"] for p in reference]
    assert record["ra_attack"] == "PGD-3" and record["choice"]["objective"] == "sa"
    assert record["choice"]["sa"] == max(p["sa"] for p in record["curve"])
    card = export.load_model_card(str(target))
    assert {k: v for k, v in card.items() if k != "calibration"} == trained_card
    assert card["calibration"]["choice"] == record["choice"]
    assert card["calibration"]["source"]["saved_model"] == str(target)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # No temporary leftovers.
    assert export.load_serving_fn(str(target)) is not None


def test_worst_case_name_matches_the_library():
    assert calibrate.WORST_CASE == calibration.WORST_CASE


def _bare_run_dir(tmp_path, **data_fields):
    config = config_lib.ExperimentConfig(data=config_lib.DataConfig(**data_fields), train_attack=ATTACK)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    atomic_files.write_json(str(run_dir / "config.json"), config_lib.to_dict(config), sort_keys=True)
    return str(run_dir)


def test_run_without_validation_split_gives_a_clear_error(tmp_path):
    with pytest.raises(calibrate_model.CalibrationError, match=r"no validation split.*--validation_size=N"):
        calibrate_model.calibrate(run_dir=_bare_run_dir(tmp_path, dataset="embedded"), min_sa=0.9, lambdas=LAMBDAS)
    assert not (tmp_path / "run" / "calibration").exists()


def test_validation_size_cannot_override_the_run(tmp_path):
    with pytest.raises(calibrate_model.CalibrationError, match="`validation_size` must not be given"):
        calibrate_model.calibrate(
            run_dir=_bare_run_dir(tmp_path, dataset="embedded"), validation_size=100, min_sa=0.9,
            lambdas=LAMBDAS,
        )


def test_export_without_card_needs_dataset_and_validation_size(tmp_path):
    fake = tmp_path / "export"
    fake.mkdir()
    (fake / "saved_model.pb").write_bytes(b"")
    with pytest.raises(calibrate_model.CalibrationError, match=r"`dataset` and `validation_size` are required"):
        calibrate_model.calibrate(saved_model=str(fake), min_sa=0.9, lambdas=LAMBDAS, output_dir=str(tmp_path / "o"))


def test_export_dir_that_is_not_a_saved_model_is_refused(tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep")
    with pytest.raises(calibrate_model.CalibrationError, match="not a SavedModel"):
        calibrate_model.calibrate(
            run_dir=_bare_run_dir(tmp_path, dataset="embedded"), min_sa=0.9, lambdas=LAMBDAS,
            export_dir=str(tmp_path / "precious"),
        )
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--min_sa=150"], "--min_sa` must be a percentage in [0, 100]"),
        (["--min_sa=90", "--min_ra=40"], "exactly one requirement"),
        ([], "exactly one requirement"),
        (["--min_ra=40", "--lambdas=0:2:0.5"], "lambdas"),
    ],
)
def test_bad_flags_fail_before_any_work(tmp_path, flags, message):
    result = _run_cli(f"--run_dir={tmp_path}", f"--output_dir={tmp_path / 'out'}", *flags)
    assert result.returncode == 1
    assert message in result.stderr
    assert not (tmp_path / "out").exists()
