"""Tests for oat_tf.reporting.multi_exit_report: the paper's table, plot and read-back."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf.evaluation import multi_exit_eval
from oat_tf.models import exit_rule
from oat_tf.models import rdi_networks
from oat_tf.reporting import multi_exit_report


def _model():
    keras.utils.set_random_seed(0)
    return rdi_networks.rdi_small_cnn(
        filters=(4, 8), hidden_units=16, exit_conv_filters=4, exit_hidden_units=16
    )


def _data(num):
    rng = np.random.RandomState(0)
    images = rng.uniform(size=(num, 28, 28, 1)).astype("float32")
    labels = rng.randint(0, 10, num).astype("int32")
    return images, labels


def _dataset(images, labels):
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(10)


def _thresholds_for_mixed_exits(model, images):
    # Medians of each side exit's entropy: some samples leave at every output.
    outputs = model({"image": images, "lambda": np.ones([len(images)], np.float32)}, training=False)
    entropies = [exit_rule.entropy_numpy(np.asarray(outputs[name])) for name in ("exit_1", "exit_2")]
    return np.median(np.stack(entropies, axis=1), axis=0).astype(np.float32)


def test_report_writes_the_paper_table_and_plot(tmp_path):
    model = _model()
    images, labels = _data(num=12)
    thresholds = _thresholds_for_mixed_exits(model, images)
    pgd = config_lib.AttackConfig(name="pgd", epsilon=0.1, step_size=0.05, num_steps=1)
    result = multi_exit_eval.evaluate_multi_exit(
        model, _dataset(images, labels), thresholds=thresholds, lambdas=[1.0], attacks=[pgd],
    )
    paths = multi_exit_report.write_multi_exit_report(result, str(tmp_path), title="toy")
    with open(paths["json"]) as f:
        saved = json.load(f)
    assert saved["per_lambda"] == result["per_lambda"]
    assert os.path.getsize(paths["plots"]["1.0"]) > 1000
    with open(paths["markdown"]) as f:
        markdown = f.read()
    rows = [line.split("|")[1].strip() for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[:2] == ["", "TA"]
    assert rows[2:8] == [f"ATA ({f})" for f in ("Branch 1", "Branch 2", "Main Branch", "Average", "Max-Average", "Random")]
    assert "ATA (Worst-Case)" in rows and "MFLOPs" in rows and "Saving" in rows
    entry = result["per_lambda"]["1.0"]
    cells = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in markdown.splitlines() if line.startswith("| ")}
    assert cells["TA"] == f"{100 * entry['clean']['accuracy']:.2f}%"
    saving = 1 - entry["clean"]["average_macs"] / result["backbone_macs"]
    assert cells["Saving"] == f"{100 * saving:.1f}%"
    # Two runs side by side, one column each.
    table = multi_exit_report.format_comparison_table({"RDI": result, "again": result})
    assert table.splitlines()[0] == "| | RDI | again |"
    with pytest.raises(ValueError, match="key"):
        multi_exit_report.format_comparison_table({"RDI": result}, key="0.3")


def test_load_run_result_reads_the_report_back(tmp_path):
    model = _model()
    images, labels = _data(num=6)
    result = multi_exit_eval.evaluate_multi_exit(
        model, _dataset(images, labels), thresholds=[0.5, 0.5], lambdas=[1.0], attacks=[],
        efficiency_attack=False,
    )
    multi_exit_report.write_multi_exit_report(result, str(tmp_path))
    loaded = multi_exit_report.load_run_result(str(tmp_path))
    assert loaded["per_lambda"] == result["per_lambda"]
    assert multi_exit_report.format_comparison_table({"a": loaded}) == multi_exit_report.format_comparison_table({"a": result})
    with pytest.raises(FileNotFoundError, match="run_dir"):
        multi_exit_report.load_run_result(str(tmp_path / "missing"))
