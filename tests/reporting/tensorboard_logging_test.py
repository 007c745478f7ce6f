"""Tests for oat_tf.reporting.tensorboard_logging: the event files hold the result's values."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from matplotlib import image as image_lib
from tensorboard.plugins.hparams import metadata as hp_metadata

from oat_tf import atomic_files
from oat_tf.reporting import plots
from oat_tf.reporting import tensorboard_logging


def _result():
    return {
        "num_examples": 100,
        "lambdas": [0.0, 0.05, 0.15, 1.0],
        "clean_accuracy": {"0.0": 0.93, "0.05": 0.92, "0.15": 0.9, "1.0": 0.81},
        "robust_accuracy": {
            "PGD-7": {"0.0": 0.1, "0.05": 0.3, "0.15": 0.4, "1.0": 0.5},
            "Square-100": {"0.0": 0.2, "0.05": 0.35, "0.15": 0.5, "1.0": 0.55},
        },
        "worst_case_accuracy": {"0.0": 0.05, "0.05": 0.29, "0.15": 0.39, "1.0": 0.49},
        "attacks": [],
    }


def _events(directory):
    paths = sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*")))
    return [event for path in paths for event in tf.compat.v1.train.summary_iterator(path)]


def _values(directory):
    """[(tag, step, value proto)] of every summary value in `directory`."""
    return [(v.tag, e.step, v) for e in _events(directory) for v in e.summary.value]


def _scalars(directory):
    found = {}
    for tag, step, value in _values(directory):
        if value.metadata.plugin_data.plugin_name == "scalars":
            assert (tag, step) not in found, f"duplicate {tag} at step {step}"
            found[(tag, step)] = float(tf.make_ndarray(value.tensor))
    return found


@pytest.fixture
def logged(tmp_path):
    fig = plots.accuracy_vs_lambda_figure(_result())
    png = str(tmp_path / "plot.png")
    atomic_files.write_figure(png, fig)
    log_dir = str(tmp_path / "tb")
    tensorboard_logging.log_evaluation(_result(), log_dir, plot_paths={"accuracy_vs_lambda": png}, step=7)
    return log_dir, png


def test_trade_off_step_convention():
    assert [tensorboard_logging.trade_off_step(lam) for lam in (0.0, 0.05, 0.15, 0.7, 1.0)] == [0, 50, 150, 700, 1000]


def test_scalars_per_lambda_and_trade_off_curves_round_trip(logged):
    log_dir, _ = logged
    scalars = _scalars(log_dir)
    expected = {}
    result = _result()
    for lam, key in zip(result["lambdas"], result["clean_accuracy"]):
        step = int(round(1000 * lam))
        expected[(f"sa/lambda_{key}", 7)] = result["clean_accuracy"][key]
        expected[(f"worst_case/lambda_{key}", 7)] = result["worst_case_accuracy"][key]
        expected[("trade_off/sa", step)] = result["clean_accuracy"][key]
        expected[("trade_off/worst_case", step)] = result["worst_case_accuracy"][key]
        for label, values in result["robust_accuracy"].items():
            expected[(f"ra_{label}/lambda_{key}", 7)] = values[key]
            expected[(f"trade_off/ra_{label}", step)] = values[key]
    assert scalars.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_allclose(scalars[key], value, rtol=1e-6, err_msg=str(key))


def test_plots_are_image_summaries(logged):
    log_dir, png = logged
    images = [(tag, step, v) for tag, step, v in _values(log_dir) if v.metadata.plugin_data.plugin_name == "images"]
    assert [(tag, step) for tag, step, _ in images] == [("plots/accuracy_vs_lambda", 7)]
    width, height, encoded = tf.make_ndarray(images[0][2].tensor)
    decoded = tf.io.decode_png(encoded, channels=4).numpy()
    expected = image_lib.imread(png)
    assert (int(width), int(height)) == (expected.shape[1], expected.shape[0])
    np.testing.assert_allclose(decoded / 255.0, expected, atol=1 / 255.0)


def test_hparams_sessions_hold_lambda_width_and_metrics(logged):
    log_dir, _ = logged
    hparams_dir = os.path.join(log_dir, "hparams")
    (experiment,) = [v for tag, _, v in _values(hparams_dir) if tag == hp_metadata.EXPERIMENT_TAG]
    info = hp_metadata.parse_experiment_plugin_data(experiment.metadata.plugin_data.content)
    assert [h.name for h in info.hparam_infos] == ["lambda", "width"]
    assert [m.name.tag for m in info.metric_infos] == ["sa", "ra/PGD-7", "ra/Square-100", "worst_case"]
    result = _result()
    sessions = sorted(os.listdir(hparams_dir))
    sessions.remove(os.path.basename(glob.glob(os.path.join(hparams_dir, "events.out.tfevents.*"))[0]))
    assert sessions == sorted(f"lambda_{key}" for key in result["clean_accuracy"])
    for lam, key in zip(result["lambdas"], result["clean_accuracy"]):
        session_dir = os.path.join(hparams_dir, f"lambda_{key}")
        (start,) = [v for tag, _, v in _values(session_dir) if tag == hp_metadata.SESSION_START_INFO_TAG]
        start_info = hp_metadata.parse_session_start_info_plugin_data(start.metadata.plugin_data.content)
        assert start_info.hparams["lambda"].number_value == lam
        assert start_info.hparams["width"].number_value == 1.0
        metrics = {tag: value for (tag, step), value in _scalars(session_dir).items() if step == 0}
        expected = {"sa": result["clean_accuracy"][key], "worst_case": result["worst_case_accuracy"][key]}
        expected.update({f"ra/{label}": v[key] for label, v in result["robust_accuracy"].items()})
        assert metrics.keys() == expected.keys()
        for tag, value in expected.items():
            np.testing.assert_allclose(metrics[tag], value, rtol=1e-6)


def test_rerun_replaces_the_previous_events(logged, tmp_path):
    log_dir, png = logged
    result = _result()
    result["clean_accuracy"]["1.0"] = 0.5
    tensorboard_logging.log_evaluation(result, log_dir, plot_paths={"accuracy_vs_lambda": png}, width=0.5)
    scalars = _scalars(log_dir)  # raises on a duplicate tag and step
    assert scalars[("trade_off/sa", 1000)] == 0.5
    assert ("sa/lambda_1.0", 7) not in scalars and scalars[("sa/lambda_1.0", 0)] == 0.5
    session_dir = os.path.join(log_dir, "hparams", "lambda_1.0")
    assert len(glob.glob(os.path.join(session_dir, "events.out.tfevents.*"))) == 1
    (start,) = [v for tag, _, v in _values(session_dir) if tag == hp_metadata.SESSION_START_INFO_TAG]
    assert hp_metadata.parse_session_start_info_plugin_data(start.metadata.plugin_data.content).hparams[
        "width"].number_value == 0.5
