#!/usr/bin/env bash
# Issue 17: the "where OAT holds" grid, cell after cell, then its page.
#   bash scripts/where_oat_holds.sh
# Run it from a clone of main that nobody edits (autograph re-reads source at trace
# time), not while the test suite runs. A killed sweep resumes its runs when started
# again; finished runs are skipped. Cell c1_e5 is study A
# (experiments/study_oat_fashion_mnist.flags), collected from its own results.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
for cell in c2_e5 c1_e15 c1_e30 c2_e15 c3_e5; do
  # A landed cell is not run again: its runs' directories may be gone (a new machine), and the
  # sweep would then train them from scratch and overwrite the committed results. A cell with a
  # ledger (in_progress.json) is unfinished even if it has results: its seed repeats, say.
  dir="docs/results/where_oat_holds/cells/${cell}"
  if [[ -f "${dir}/results.json" && ! -f "${dir}/in_progress.json" ]]; then
    echo "=== cell ${cell}: landed (its results.json exists; delete it to run the cell again)"
    continue
  fi
  echo "=== cell ${cell} $(date -u)"
  "${PYTHON}" -m oat_tf.sweep --flagfile="experiments/where_oat_holds/${cell}.flags"
done
cells=docs/results/where_oat_holds/cells/*/results.json
if [[ -f docs/results/oat_fashion_mnist/results.json ]]; then
  cells="docs/results/oat_fashion_mnist/results.json,${cells}"
fi
reading=()
if [[ -f docs/results/where_oat_holds/reading.md ]]; then
  reading=(--reading=docs/results/where_oat_holds/reading.md)
fi
"${PYTHON}" -m oat_tf.reporting.where_oat_holds --cells="${cells}" \
  --output=docs/results/where_oat_holds/results.json "${reading[@]}"
