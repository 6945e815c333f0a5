#!/usr/bin/env bash
# Base-to-new generalization (CoCoOp's protocol) of one method on one dataset and seed: train on the base classes
# (16 shots) and evaluate on them, then evaluate the trained run on the new classes (a transfer evaluation: the
# method's class-bound state is rebuilt for them, or its result is n/a). Finished steps are skipped.
#   DATA=/path/to/data OUTPUT=output/base2new scripts/base2new.sh TRAINER CONFIG DATASET [SEED] [--force] [KEY VALUE ...]
# e.g. DATA=~/data scripts/base2new.sh CoCoOp vit_b16_c4_ep10_batch1 oxford_pets 1
# Every dataset and seed: for D in $(python -m clip_convpass.cli.paths datasets --trainable); do for S in 1 2 3; do
#   scripts/base2new.sh CoCoOp vit_b16_c4_ep10_batch1 $D $S; done; done   (or: python -m clip_convpass grid --base2new)
# Table: python -m clip_convpass report "$OUTPUT" --base2new
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"; [ -x "$PY" ] || PY=python3
OVERRIDE_ARGS=(); for f in ${OVERRIDES:-}; do OVERRIDE_ARGS+=(--override-config "$f"); done
: "${DATA:?set DATA to the dataset root}"
OUTPUT="${OUTPUT:-output/base2new}"
TRAINER="${1:?trainer name, e.g. CoCoOp}"; CONFIG="${2:?config name under configs/trainers/$1/}"
DATASET="${3:?dataset config name, e.g. oxford_pets}"; SEED="${4:-1}"; SHOTS="${SHOTS:-16}"
shift $(( $# < 4 ? $# : 4 ))
FORCE=0; if [ "${1:-}" = "--force" ]; then FORCE=1; shift; fi
CFG="$HERE/configs/trainers/$TRAINER/$CONFIG.yaml"; DCFG="$HERE/configs/datasets/$DATASET.yaml"
[ -f "$CFG" ] || { echo "No method config $CFG" >&2; exit 2; }
[ -f "$DCFG" ] || { echo "No dataset config $DCFG" >&2; exit 2; }
DIR="$("$PY" -m clip_convpass.cli.paths cell --output "$OUTPUT" --config "$CFG" --dataset-config "$DCFG" \
  --shots "$SHOTS" --seed "$SEED" --subsample base)"
COMMON=(--root "$DATA" --seed "$SEED" --trainer "$TRAINER" --dataset-config-file "$DCFG" --config-file "$CFG"
        ${OVERRIDE_ARGS[@]+"${OVERRIDE_ARGS[@]}"} --output-dir "$DIR")
if [ "$FORCE" = 1 ]; then rm -rf "$DIR"; fi
BASE="$("$PY" -m clip_convpass.cli.paths results --run-dir "$DIR" --dataset-config "$DCFG" --subsample base)"
if [ -f "$BASE" ]; then
  echo "Base-class results exist: $BASE, skipping training (use --force to rerun)"
else
  "$PY" "$HERE/train.py" "${COMMON[@]}" DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE base "$@"
fi
NEW="$("$PY" -m clip_convpass.cli.paths results --run-dir "$DIR" --dataset-config "$DCFG" --subsample new)"
if [ -f "$NEW" ]; then
  echo "New-class results exist: $NEW, skipping"
else
  "$PY" "$HERE/train.py" "${COMMON[@]}" --eval-only --model-dir "$DIR" DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE new "$@"
fi
