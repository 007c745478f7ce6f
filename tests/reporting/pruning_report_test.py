"""The pruning-vs-RDI report: the RDI point read from a multi-exit result, interpolation, files."""

import json
import os
import subprocess
import sys

import pytest

from oat_tf.reporting import pruning_report
from tests import testing


def _row(sparsity, macs, clean, worst, name=None, fine_tuned=True):
    return {
        "name": name or f"sparsity_{sparsity:g}", "fine_tuned": fine_tuned, "target_sparsity": sparsity, "kernel_sparsity": sparsity,
        "dense_macs": 10e6, "effective_macs": macs, "macs_saving": 1 - macs / 10e6, "lambda": "1.0",
        "clean_accuracy": clean, "worst_case_accuracy": worst, "robust_accuracy": {"PGD-40": worst},
    }


ROWS = [
    _row(0.0, 10e6, 0.50, 0.10, name="dense", fine_tuned=False),  # As trained: not part of the series.
    _row(0.0, 10e6, 0.98, 0.80, name="dense_finetuned"),
    _row(0.5, 6e6, 0.96, 0.70),
    _row(0.9, 2e6, 0.90, 0.50),
]


def _multi_exit_result(clean, per_sample, form_worst, macs):
    return {"per_lambda": {"1.0": {
        "clean": {"accuracy": clean, "average_macs": macs},
        "worst_case": {"PGD-40": {"accuracy": form_worst, "form": "Main Branch", "per_sample_accuracy": per_sample}},
    }}}


def test_rdi_point_takes_the_per_sample_worst_case_and_clean_average_macs():
    point = pruning_report.rdi_point(_multi_exit_result(0.984, 0.8845, 0.896, 6272541.1))
    assert point == {"clean_accuracy": 0.984, "worst_case_accuracy": 0.8845, "macs": 6272541.1, "attacks": ["PGD-40"]}


def test_interpolation_is_linear_in_macs_and_never_extrapolates():
    at = pruning_report.interpolate_at(ROWS, 4e6)  # halfway between 2 M and 6 M
    assert at["clean_accuracy"] == pytest.approx(0.93)
    assert at["worst_case_accuracy"] == pytest.approx(0.60)
    assert pruning_report.interpolate_at(ROWS, 6e6)["worst_case_accuracy"] == pytest.approx(0.70)
    # At the dense MACs the series is the fine-tuned control, never the backbone as trained.
    assert pruning_report.interpolate_at(ROWS, 10e6)["worst_case_accuracy"] == pytest.approx(0.80)
    assert pruning_report.interpolate_at(ROWS, 1e6) is None
    assert pruning_report.interpolate_at(ROWS, 11e6) is None


def test_tables_show_the_measured_values_and_the_difference():
    table = pruning_report.format_summary_table(ROWS)
    assert "| sparsity_0.5 | 0.50 | 50.0% | 6.00 | 40.0% | 96.00% | **70.00%** | 70.00% |" in table
    assert "| dense (as trained) | 0.00 | 0.0% | 10.00 | 0.0% | 50.00% | **10.00%** | 10.00% |" in table
    comparison = pruning_report.format_comparison(
        ROWS, {"budget": {"clean_accuracy": 0.98, "worst_case_accuracy": 0.65, "macs": 4e6}}
    )
    assert "| budget | 4.00 | 98.00% | 93.00% | 65.00% | 60.00% | +5.00 |" in comparison


def test_command_line_writes_the_table_and_the_figure(tmp_path):
    compress = tmp_path / "compress_results.json"
    compress.write_text(json.dumps({"rows": ROWS}))
    rdi = tmp_path / "rdi.json"
    rdi.write_text(json.dumps(_multi_exit_result(0.98, 0.65, 0.7, 4e6)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=testing.REPO_ROOT)
    command = [sys.executable, "-m", "oat_tf.reporting.pruning_report", f"--compress_results={compress}",
               f"--output_prefix={tmp_path / 'fig6'}"]
    result = subprocess.run(command + [f"--rdi_results=budget={rdi}"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    text = (tmp_path / "fig6.md").read_text()
    assert "| budget | 4.00 | 98.00% | 93.00% | 65.00% | 60.00% | +5.00 |" in text
    assert (tmp_path / "fig6.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run(command + [f"--rdi_results={rdi}"], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode != 0 and "--rdi_results entries must be LABEL=PATH" in bad.stderr
