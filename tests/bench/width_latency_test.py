"""The per-width latency benchmark runs and reports consistent rows (no timing is asserted)."""

import json
import os
import subprocess
import sys

import pytest

from oat_tf.bench import width_latency
from tests import testing


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    export_dir = str(tmp_path_factory.mktemp("latency") / "export")
    macs = width_latency.export_fresh_network(
        "small_cnn", export_dir, widths=(0.5, 1.0), filters=(4, 8), hidden_units=8,
        image_shape=(16, 16, 1),
    )
    return export_dir, macs


def test_measure_latency_gives_one_row_per_width_and_batch_size(tiny_export):
    export_dir, macs = tiny_export
    assert sorted(macs) == [0.5, 1.0] and 0 < macs[0.5] < macs[1.0]
    rows = width_latency.measure_latency(export_dir, batch_sizes=(1, 3), runs=2, warmup=1)
    assert [(r["batch_size"], r["signature"]) for r in rows] == [
        (1, "width_0_5"), (1, "serving_default"), (3, "width_0_5"), (3, "serving_default")]
    for row in rows:
        assert 0 < row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
        assert row["images_per_second"] == pytest.approx(1000.0 * row["batch_size"] / row["median_ms"])
    assert [r["speedup"] for r in rows if r["width"] == 1.0] == [1.0, 1.0]
    table = width_latency.format_table(rows, macs)
    assert "| 3 | 0.5 | `width_0_5` |" in table and "MACs/image (M)" in table
    with pytest.raises(ValueError, match="runs"):
        width_latency.measure_latency(export_dir, runs=0)


def test_cli_times_a_saved_model(tiny_export, tmp_path):
    export_dir, _ = tiny_export
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=testing.REPO_ROOT)
    output = tmp_path / "latency.json"
    run = subprocess.run(
        [sys.executable, "-m", "oat_tf.bench.width_latency", f"--saved_model={export_dir}",
         "--batch_sizes=2", "--runs=1", "--warmup=0", f"--output_json={output}"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "`width_0_5`" in run.stdout and "`serving_default`" in run.stdout
    rows = json.loads(output.read_text())["rows"]
    assert [r["width"] for r in rows] == [0.5, 1.0]
