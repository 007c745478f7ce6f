"""Main of every Bazel py_test: runs pytest on the test files given as arguments.

Bazel runs it as `pytest_main.py tests/x/y_test.py [--test_arg ...]` from the
runfiles root, where tests/conftest.py and pytest.ini sit as in the checkout, so
the file runs as under `pytest tests/x/y_test.py`: tests marked `large` are
skipped unless `--test_arg=--run_large` is given. The results also go to the
JUnit XML file Bazel asks for, so `bazel test` lists each test case.
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


if __name__ == "__main__":
    sys.exit(pytest.main(pytest_args(sys.argv[1:], os.environ)))
