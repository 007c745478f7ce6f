#!/usr/bin/env bash
# Fresh machine → test report: install into .venv and run the CPU test suite
# on two pytest-xdist workers (about 10 minutes on 2 cores, install included). Tests marked `large` run only with --run_large.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -r requirements-dev.txt
python -m pytest tests -q -n 2 --durations=15 "$@"
