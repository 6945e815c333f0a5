#!/usr/bin/env bash
# Train one method on one dataset (and evaluate on its test split).
#   DATA=/path/to/data OUTPUT=output scripts/train.sh TRAINER CONFIG [DATASET] [SHOTS] [SEED] [--force] [KEY VALUE ...]
# e.g. DATA=~/data scripts/train.sh ConvpassCLIP vit_b16 imagenet 16 1
# Output: $OUTPUT/<dataset name>/<TRAINER>/<CONFIG>_<SHOTS>shots/seed<SEED>/ (rerunning resumes; a finished run is skipped)
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"; [ -x "$PY" ] || PY=python3
# OVERRIDES="configs/demo.yaml my.yaml": YAMLs merged after the method config, in order (e.g. the demo's tiny model)
OVERRIDE_ARGS=(); for f in ${OVERRIDES:-}; do OVERRIDE_ARGS+=(--override-config "$f"); done
: "${DATA:?set DATA to the dataset root}"
OUTPUT="${OUTPUT:-output}"
TRAINER="${1:?trainer name, e.g. ConvpassCLIP}"; CONFIG="${2:?config name under configs/trainers/$1/}"
DATASET="${3:-imagenet}"; SHOTS="${4:-16}"; SEED="${5:-1}"
shift $(( $# < 5 ? $# : 5 ))
FORCE=0; if [ "${1:-}" = "--force" ]; then FORCE=1; shift; fi
CFG="$HERE/configs/trainers/$TRAINER/$CONFIG.yaml"; DCFG="$HERE/configs/datasets/$DATASET.yaml"
[ -f "$CFG" ] || { echo "No method config $CFG" >&2; exit 2; }
[ -f "$DCFG" ] || { echo "No dataset config $DCFG" >&2; exit 2; }
DIR="$("$PY" -m clip_convpass.cli.paths cell --output "$OUTPUT" --config "$CFG" --dataset-config "$DCFG" --shots "$SHOTS" --seed "$SEED")"
RESULTS="$("$PY" -m clip_convpass.cli.paths results --run-dir "$DIR" --dataset-config "$DCFG")"
if [ -f "$RESULTS" ] && [ "$FORCE" = 0 ]; then
  echo "Results exist in $DIR, skipping (use --force to rerun)"; exit 0
fi
if [ "$FORCE" = 1 ]; then rm -rf "$DIR"; fi
exec "$PY" "$HERE/train.py" --root "$DATA" --seed "$SEED" --trainer "$TRAINER" \
  --dataset-config-file "$DCFG" --config-file "$CFG" ${OVERRIDE_ARGS[@]+"${OVERRIDE_ARGS[@]}"} --output-dir "$DIR" DATASET.NUM_SHOTS "$SHOTS" "$@"
