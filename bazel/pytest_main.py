"""Main of every Bazel py_test: runs pytest on the test files given as arguments.

Bazel runs it as `pytest_main.py tests/x/y_test.py [--test_arg ...]` from the
runfiles root, where tests/conftest.py and pytest.ini sit as in the checkout, so
the file runs as under `pytest tests/x/y_test.py`: tests marked `large` are
skipped unless `--test_arg=--run_large` is given. The results also go to the
JUnit XML file Bazel asks for, so `bazel test` lists each test case.

A file skipped whole (`pytest.importorskip` of an optional extra such as
PyTorch) passes, as it does in `pytest tests`: pytest alone exits with "no
tests collected" (5) there, which Bazel would report as a failure. A file
that collects nothing without skipping still fails.
"""

import os
import sys
from typing import List, Mapping

import pytest


def pytest_args(argv: List[str], environ: Mapping[str, str]) -> List[str]:
    """pytest's arguments for Bazel's test arguments and environment.

    Args:
        argv: List[str], the test files and any `--test_arg` values.
        environ: Mapping[str, str], the test's environment; Bazel's
            `XML_OUTPUT_FILE` names the JUnit XML report it reads.

    Returns:
        The arguments for `pytest.main`: `argv`, no cache directory (the runfiles
        tree is read-only), and the JUnit XML report when Bazel asks for one.
    """
    args = list(argv) + ["-p", "no:cacheprovider"]
    if environ.get("XML_OUTPUT_FILE"):
        args.append(f"--junitxml={environ['XML_OUTPUT_FILE']}")
    return args


class SkipCounter:
    """A pytest plugin counting skips, those at collection (a module's importorskip) included."""

    def __init__(self):
        self.skipped = 0

    def pytest_collectreport(self, report):
        if report.skipped:
            self.skipped += 1

    def pytest_runtest_logreport(self, report):
        if report.skipped:
            self.skipped += 1


def exit_code(code: int, skipped: int) -> int:
    """The test's exit status: pytest's, except that a file skipped whole passes.

    Args:
        code: int, pytest's exit code.
        skipped: int, the skips `SkipCounter` saw.

    Returns:
        0 for "no tests collected" with skips, else `code`.
    """
    if code == pytest.ExitCode.NO_TESTS_COLLECTED and skipped:
        return 0
    return int(code)


def main(argv: List[str], environ: Mapping[str, str]) -> int:
    """Runs pytest as Bazel asks (`pytest_args`) and returns the test's exit status."""
    counter = SkipCounter()
    code = pytest.main(pytest_args(argv, environ), plugins=[counter])
    return exit_code(code, counter.skipped)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
