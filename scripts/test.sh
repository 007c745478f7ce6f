#!/usr/bin/env bash
# Fresh machine → test report: install into .venv and run the CPU test suite
# on two pytest-xdist workers (on 2026-12-06: 11.7 minutes of tests on 2 AVX-512 cores; 18 on 2 AVX2 cores on 2026-12-05, before the one-trace change; plus the install). Tests marked `large` run only with --run_large.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -r requirements-dev.txt
python -m pytest tests -q -n 2 --durations=15 "$@"
