#!/usr/bin/env bash
# VTAB-1K, the Convpass paper's Table 1: every row of the "vtab" table (the registry's rows) on the 19 tasks.
# Each row's one knob is chosen per task on train800 -> val200 (first seed), then each seed trains on
# train800val200 and is scored on test; the grid resumes and skips finished cells. Then the table and its plot.
#   DATA=/path/to/data OUTPUT=output/vtab scripts/vtab.sh ["42"] [KEY VALUE ...]
#   DATA holds vtab-1k/<task>/ (NOAH's get_vtab1k.py); MODEL.PRETRAINED /path/ViT-B_16.npz gives the authors'
#   exact backbone (with its representation layer); TASKS="vtab_cifar vtab_dtd" and METHODS="VTAB convpass"
#   narrow the grid (METHODS is comma-separated: row names hold spaces); GRID_ARGS="--executor slurm --partition gpu --gpus-per-job 1" sends the cells to a cluster.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"; [ -x "$PY" ] || PY=python3
: "${DATA:?set DATA to the folder holding vtab-1k/}"
OUTPUT="${OUTPUT:-output/vtab}"
SEEDS="${1:-42}"; shift $(( $# < 1 ? $# : 1 ))
read -r -a TASK_ARGS <<< "${TASKS:-}"
METHOD_ARGS=()
if [ -n "${METHODS:-}" ]; then
  IFS=',' read -r -a NAMES <<< "$METHODS"
  METHOD_ARGS=(--methods "${NAMES[@]}")
fi
read -r -a EXTRA <<< "${GRID_ARGS:-}"
# shellcheck disable=SC2086
"$PY" -m clip_convpass grid --data "$DATA" --output "$OUTPUT" --vtab "${TASK_ARGS[@]}" --seeds $SEEDS \
  "${METHOD_ARGS[@]}" "${EXTRA[@]}" "$@"
"$PY" -m clip_convpass report "$OUTPUT" --vtab --format markdown --output "$OUTPUT/vtab.md" --plot "$OUTPUT/vtab.png"
echo "Table: $OUTPUT/vtab.md, plot: $OUTPUT/vtab.png"
