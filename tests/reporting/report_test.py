"""Tests for oat_tf.reporting.report."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from matplotlib import figure as figure_lib
from matplotlib import image as image_lib

from oat_tf.evaluation import frontier
from oat_tf.evaluation import tables
from oat_tf.reporting import plots
from oat_tf.reporting import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _result():
    return {
        "num_examples": 200,
        "seed": 0,
        "lambdas": [0.0, 0.15, 1.0],
        "clean_accuracy": {"0.0": 0.93126, "0.15": 0.9, "1.0": 0.815},
        "robust_accuracy": {
            "PGD-7": {"0.0": 0.1, "0.15": 0.40006, "1.0": 0.5},
            "FGSM": {"0.0": 0.2, "0.15": 0.5, "1.0": 0.55},
        },
        "worst_case_accuracy": {"0.0": 0.05, "0.15": 0.395, "1.0": 0.49},
        "attacks": [
            {
                "label": "PGD-7",
                "name": "pgd",
                "epsilon": 8 / 255,
                "step_size": 2 / 255,
                "num_steps": 7,
                "random_start": True,
                "num_restarts": 1,
                "decay": 1.0,
                "targeted": False,
            },
            {
                "label": "FGSM",
                "name": "fgsm",
                "epsilon": 8 / 255,
                "step_size": 2 / 255,
                "num_steps": 1,
                "random_start": True,
                "num_restarts": 1,
                "decay": 1.0,
                "targeted": False,
            },
        ],
    }


def test_write_report_writes_json_markdown_and_png(tmp_path):
    out_dir = str(tmp_path / "eval_dir")
    paths = report.write_report(
        _result(), out_dir, prefix="final", seen_lambdas=[0.0, 1.0], title="SVHN OAT"
    )
    plot = os.path.join(out_dir, "final_ra_vs_sa.png")
    assert paths == {
        "json": os.path.join(out_dir, "final.json"),
        "markdown": os.path.join(out_dir, "final.md"),
        "plot": plot,
        "plots": {"ra_vs_sa": plot},
    }
    assert sorted(os.listdir(out_dir)) == ["final.json", "final.md", "final_ra_vs_sa.png"]
    with open(paths["json"]) as f:
        assert json.load(f) == {**_result(), "plots": {"ra_vs_sa": "final_ra_vs_sa.png"}}
    with open(paths["markdown"], encoding="utf-8") as f:
        markdown = f.read()
    assert markdown.startswith("# SVHN OAT\n")
    assert tables.format_table(_result(), seen_lambdas=[0.0, 1.0]) in markdown
    assert "![ra_vs_sa](final_ra_vs_sa.png)" in markdown
    with open(paths["plot"], "rb") as f:
        assert f.read(8) == PNG_MAGIC
    pixels = image_lib.imread(paths["plot"])
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100


def test_write_report_writes_extra_figures_and_the_frontier(tmp_path):
    point = frontier.FrontierPoint(
        name="pgdat_1", directory="runs/pgdat_1", lambda_value=1.0, lambda_key="1.0",
        clean_accuracy=0.8, robust_accuracy=0.52, attack="PGD-7", notes=("a note",),
    )
    extra = {"accuracy_vs_lambda": plots.accuracy_vs_lambda_figure(_result())}
    paths = report.write_report(
        _result(), str(tmp_path), prefix="evaluation", attack="FGSM", frontier=[point], figures=extra
    )
    assert set(paths["plots"]) == {"ra_vs_sa", "accuracy_vs_lambda"}
    for path in paths["plots"].values():
        with open(path, "rb") as f:
            assert f.read(8) == PNG_MAGIC
    with open(paths["json"]) as f:
        assert json.load(f)["plots"] == {
            "ra_vs_sa": "evaluation_ra_vs_sa.png",
            "accuracy_vs_lambda": "evaluation_accuracy_vs_lambda.png",
        }
    with open(paths["markdown"], encoding="utf-8") as f:
        markdown = f.read()
    assert "| pgdat_1 | 1 | 80.00 | 52.00 | PGD-7 | a note |" in markdown
    assert "![accuracy_vs_lambda](evaluation_accuracy_vs_lambda.png)" in markdown


@pytest.mark.parametrize("name", ["ra_vs_sa", "", "a/b", "x.png"])
def test_invalid_figure_name_raises(tmp_path, name):
    with pytest.raises(ValueError, match="figures"):
        report.write_report(_result(), str(tmp_path), figures={name: plots.accuracy_vs_lambda_figure(_result())})


def test_write_report_without_attacks_still_plots(tmp_path):
    result = _result()
    result["robust_accuracy"] = {}
    result["attacks"] = []
    paths = report.write_report(result, str(tmp_path))
    with open(paths["plot"], "rb") as f:
        assert f.read(8) == PNG_MAGIC


def _temp_files(directory):
    return glob.glob(os.path.join(directory, ".*"))


def test_failed_json_write_keeps_the_old_file(tmp_path):
    out_dir = str(tmp_path)
    paths = report.write_report(_result(), out_dir)
    with open(paths["json"], "rb") as f:
        old_json = f.read()
    broken = _result()
    # Serialised after the accuracies, so part of the file is written first.
    broken["attacks"][1]["epsilon"] = object()
    with pytest.raises(TypeError):
        report.write_report(broken, out_dir)
    with open(paths["json"], "rb") as f:
        assert f.read() == old_json
    assert _temp_files(out_dir) == []


def test_failed_plot_write_keeps_the_old_file(tmp_path, monkeypatch):
    out_dir = str(tmp_path)
    paths = report.write_report(_result(), out_dir)
    with open(paths["plot"], "rb") as f:
        old_png = f.read()

    def failing_savefig(self, fname, **kwargs):
        fname.write(PNG_MAGIC + b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(figure_lib.Figure, "savefig", failing_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        report.write_report(_result(), out_dir)
    with open(paths["plot"], "rb") as f:
        assert f.read() == old_png
    assert _temp_files(out_dir) == []
    assert sorted(os.listdir(out_dir)) == ["eval.json", "eval.md", "eval_ra_vs_sa.png"]
    with open(paths["json"]) as f:
        assert json.load(f)["plots"] == {"ra_vs_sa": "eval_ra_vs_sa.png"}


@pytest.mark.parametrize("prefix", ["", "a/b"])
def test_invalid_prefix_raises(tmp_path, prefix):
    with pytest.raises(ValueError, match="prefix"):
        report.write_report(_result(), str(tmp_path), prefix=prefix)


def test_invalid_result_raises(tmp_path):
    with pytest.raises(ValueError, match="result"):
        report.write_report({"lambdas": [0.0]}, str(tmp_path))
    with pytest.raises(ValueError, match="seen_lambdas"):
        report.write_report(_result(), str(tmp_path), seen_lambdas=[2.0])
    assert os.listdir(tmp_path) == []


def test_write_scalars_writes_one_scalar_per_lambda_and_metric(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))
    report.write_scalars(_result(), writer, step=3)
    writer.close()
    values = {}
    for path in glob.glob(os.path.join(str(tmp_path), "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                assert event.step == 3
                values[value.tag] = float(tf.make_ndarray(value.tensor))
    expected = {}
    for key in ("0.0", "0.15", "1.0"):
        expected[f"sa/lambda_{key}"] = _result()["clean_accuracy"][key]
        expected[f"ra_PGD-7/lambda_{key}"] = _result()["robust_accuracy"]["PGD-7"][key]
        expected[f"ra_FGSM/lambda_{key}"] = _result()["robust_accuracy"]["FGSM"][key]
        expected[f"worst_case/lambda_{key}"] = _result()["worst_case_accuracy"][key]
    assert values.keys() == expected.keys()
    for tag, value in expected.items():
        np.testing.assert_allclose(values[tag], value, rtol=1e-6)
