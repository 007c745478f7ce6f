"""bazel/pytest_main.py, the main of every Bazel py_test: its exit status."""

import os
import subprocess
import sys

from tests import testing

MAIN = os.path.join(testing.REPO_ROOT, "bazel", "pytest_main.py")


def _run(tmp_path, source):
    (tmp_path / "x_test.py").write_text(source)
    return subprocess.run(
        [sys.executable, MAIN, "x_test.py"],
        cwd=str(tmp_path),
        env=dict(os.environ, PYTHONPATH=testing.REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_file_skipped_whole_passes(tmp_path):
    run = _run(tmp_path, 'import pytest\n\npytest.importorskip("a_module_that_is_not_installed")\n')
    assert run.returncode == 0, run.stdout[-2000:]
    assert "1 skipped" in run.stdout


def test_a_failure_and_a_file_without_tests_still_fail(tmp_path):
    assert _run(tmp_path, "def test_fails():\n    assert False\n").returncode == 1
    # Nothing collected and nothing skipped: pytest's "no tests collected" (5).
    assert _run(tmp_path, "x = 1\n").returncode == 5
    assert _run(tmp_path, "def test_passes():\n    assert True\n").returncode == 0
