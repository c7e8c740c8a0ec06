#!/usr/bin/env bash
# The runs behind docs/examples/reports/: a reduced BoQ layers x queries grid and an aggregator
# comparison on the built-in synthetic data, on the CPU, then the reports made from their folders.
# Usage: bash experiments/run_examples.sh   (from the repository root; ~13 min on 2 idle CPU cores)
# Only the reports, from the runs.csv the last full run left (no training):
#   REPORTS_ONLY=1 bash experiments/run_examples.sh
case "${1:-}" in  # --help: the comment above; no arguments
  "") ;;
  -h|--help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
  *) echo "$(basename "$0"): takes no arguments (got '$1'); see --help" >&2; exit 2 ;;
esac
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/examples}
REPORTS=${REPORTS:-docs/examples/reports}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} VPRLAB_PROGRESS=0 WANDB_MODE=${WANDB_MODE:-offline}

if [ -n "${REPORTS_ONLY:-}" ]; then
  $PY -m vprlab report sweep $REPORTS/boq_grid/runs.csv --out $REPORTS/boq_grid
  $PY -m vprlab report seeds $REPORTS/boq_grid/runs.csv --out $REPORTS/boq_grid
  $PY -m vprlab report methods $REPORTS/aggregators/runs.csv --out $REPORTS/aggregators
  $PY -m vprlab report paper $REPORTS/aggregators/runs.csv --where aggregator=boq --out $REPORTS/paper
  exit 0
fi

[ -f data/synthetic/synthetic.json ] || $PY -m vprlab synth --root data/synthetic

# A short CPU schedule: the quickstart data and image size (300 places, 96x128), 8 epochs.
SHORT=(trainer.max_epochs=8)

rm -rf "$OUT/boq_grid" "$OUT/aggregators"   # fixed folders, so the reports hold these runs only
start=$(date +%s)
# 1. BoQ grid: num_layers {1,2} x num_queries {8,16} on the quickstart recipe.
$PY train.py sweep=boq_grid experiment=quickstart \
  aggregator.num_layers=1,2 aggregator.num_queries=8,16 "${SHORT[@]}" \
  hydra.sweep.dir=$OUT/boq_grid
grid_done=$(date +%s)
# 2. Aggregator comparison: one recipe, three aggregators (each with its own config defaults).
#    Add seed=1,2,3 for mean +- std over seeds.
$PY train.py sweep=aggregators experiment=synthetic_compare \
  aggregator=boq,gem,avg seed=1 "${SHORT[@]}" \
  hydra.sweep.dir=$OUT/aggregators
compare_done=$(date +%s)

# 3. Reports (Markdown + PNG) from the run folders.
#    A grid is four settings: `seeds` lists them (n = 1 each), `paper` takes one setting (--where).
$PY -m vprlab report sweep $OUT/boq_grid --out $REPORTS/boq_grid
$PY -m vprlab report seeds $OUT/boq_grid --out $REPORTS/boq_grid
$PY -m vprlab report methods $OUT/aggregators --out $REPORTS/aggregators
$PY -m vprlab report paper $OUT/aggregators --where aggregator=boq --out $REPORTS/paper
echo "wall time: BoQ grid $((grid_done - start)) s, aggregator comparison $((compare_done - grid_done)) s"
