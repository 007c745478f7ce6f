#!/usr/bin/env bash
# Reruns the quickstart (seed ${SEED:-0}) and checks its table against the
# spread over three seeds that the README states
# (docs/results/quickstart_seeds/results.json): every SA and RA must lie in
# the stated min–max widened by two binomial standard errors. Exit status 1
# names what does not. Installs into .venv like scripts/quickstart.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -r requirements.txt
rm -rf runs/reproduce_quickstart
python -m oat_tf.train --flagfile=experiments/quickstart.flags --name=reproduce_quickstart \
    --seed="${SEED:-0}" --export_dir= "$@"
python -m oat_tf.reporting.seed_spread \
    --results=docs/results/quickstart_seeds/results.json --check_run=runs/reproduce_quickstart
