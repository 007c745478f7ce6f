"""Tests for oat_tf.cli: a tool behaves the same as a console script and under `python -m`."""

import os
import subprocess
import sys

from tests import testing

# What pip writes into bin/ for `oat-flops-table = "oat_tf.bench.flops_table:run"`.
_CONSOLE_SCRIPT = """\
import re
import sys
from oat_tf.bench.flops_table import run
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(run())
"""


def _run(command, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=testing.REPO_ROOT)
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, check=False, timeout=300)


def _console_script(tmp_path):
    path = tmp_path / "oat-flops-table"
    path.write_text(_CONSOLE_SCRIPT)
    return str(path)


def test_console_script_help_matches_python_m(tmp_path):
    script = _run([sys.executable, _console_script(tmp_path), "--help"], cwd=tmp_path)
    module = _run([sys.executable, "-m", "oat_tf.bench.flops_table", "--help"], cwd=tmp_path)
    assert script.returncode == module.returncode, script.stderr + module.stderr  # absl's --help exits 1
    module_path = os.path.join(testing.REPO_ROOT, "oat_tf", "bench", "flops_table.py")
    # absl names the program (sys.argv[0]) in the usage line and the flags' heading.
    assert script.stdout.replace(str(tmp_path / "oat-flops-table"), "PROGRAM") == module.stdout.replace(
        module_path, "PROGRAM"
    )
    assert "Markdown table" in script.stdout and "--architectures" in script.stdout


def test_console_script_runs_the_tool(tmp_path):
    command = [sys.executable, _console_script(tmp_path), "--architectures=small_cnn:16", "--variants=plain"]
    completed = _run(command, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert lines[0].startswith("| model | variant | input |")
    assert lines[2].startswith("| small_cnn | plain | 16×16×1 |")

