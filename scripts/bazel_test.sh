#!/usr/bin/env bash
# Runs the tests under Bazel: `bazel test //tests/...` (or the targets given), offline.
#
# Needs Debian's Bazel 4 (`apt-get install bazel-bootstrap`; installed here when
# missing and apt-get is allowed) and the project's venv, .venv (scripts/test.sh
# or the README's install; OAT_TF_PYTHON=/abs/path/python picks another Python).
# Non-hermetic: Python, TensorFlow, pytest and every other package come from that
# venv, not from Bazel, and nothing is downloaded (bazel/repositories.bzl).
# Tests marked `large` are skipped, as with pytest; pass --test_arg=--run_large to
# run them. Extra arguments go to `bazel test`, e.g.
#   bash scripts/bazel_test.sh //tests/attacks:pgd_test --jobs=1 --local_test_jobs=1
# CI does not run this; the whole suite takes long on two cores (README, "Bazel").
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v bazel > /dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -q && apt-get install -y -q bazel-bootstrap
    else
        sudo apt-get update -q && sudo apt-get install -y -q bazel-bootstrap
    fi
fi
python="${OAT_TF_PYTHON:-$PWD/.venv/bin/python}"
if ! "$python" -c "import pytest, tensorflow" 2> /dev/null; then
    echo "No venv with pytest and tensorflow at $python: run scripts/test.sh or the README's install first." >&2
    exit 1
fi
targets=()
options=()
for arg in "$@"; do
    case "$arg" in
        //* | :*) targets+=("$arg") ;;
        *) options+=("$arg") ;;
    esac
done
if [ ${#targets[@]} -eq 0 ]; then
    targets=(//tests/...)
fi
# The generated BUILD files must match the imports before Bazel reads them.
"$python" scripts/generate_build.py --check
exec bazel test "${options[@]}" -- "${targets[@]}"
