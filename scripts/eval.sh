#!/usr/bin/env bash
# Evaluate a run trained by scripts/train.sh on target datasets (--eval-only --model-dir).
#   DATA=/path/to/data OUTPUT=output scripts/eval.sh TRAINER CONFIG [SHOTS] [SEED] [--force] [--source imagenet] [--targets "imagenet_v2 ..."] [KEY VALUE ...]
# Results: <run dir>/eval/<dataset name>/results.json; existing ones are skipped unless --force.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"; [ -x "$PY" ] || PY=python3
# OVERRIDES="configs/demo.yaml my.yaml": YAMLs merged after the method config, in order (e.g. the demo's tiny model)
OVERRIDE_ARGS=(); for f in ${OVERRIDES:-}; do OVERRIDE_ARGS+=(--override-config "$f"); done
: "${DATA:?set DATA to the dataset root}"
OUTPUT="${OUTPUT:-output}"
TRAINER="${1:?trainer name}"; CONFIG="${2:?config name}"; SHOTS="${3:-16}"; SEED="${4:-1}"
shift $(( $# < 4 ? $# : 4 ))
FORCE=0; TARGETS=""; SOURCE="imagenet"
while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1; shift ;;
    --targets) TARGETS="$2"; shift 2 ;;
    --source) SOURCE="$2"; shift 2 ;;
    *) break ;;
  esac
done
# default targets: every dataset that declares it evaluates SOURCE's models (the registry's list)
[ -n "$TARGETS" ] || TARGETS="$("$PY" -m clip_convpass.cli.paths datasets --source "$SOURCE")"
CFG="$HERE/configs/trainers/$TRAINER/$CONFIG.yaml"
DIR="$("$PY" -m clip_convpass.cli.paths cell --output "$OUTPUT" --config "$CFG" \
  --dataset-config "$HERE/configs/datasets/$SOURCE.yaml" --shots "$SHOTS" --seed "$SEED")"
[ -d "$DIR" ] || { echo "No trained run in $DIR (run scripts/train.sh first)" >&2; exit 2; }
for T in $TARGETS; do
  DCFG="$HERE/configs/datasets/$T.yaml"
  RESULTS="$("$PY" -m clip_convpass.cli.paths results --run-dir "$DIR" --dataset-config "$DCFG")"
  if [ -f "$RESULTS" ] && [ "$FORCE" = 0 ]; then
    echo "Results exist: $RESULTS, skipping"; continue
  fi
  "$PY" "$HERE/train.py" --root "$DATA" --seed "$SEED" --trainer "$TRAINER" --dataset-config-file "$DCFG" \
    --config-file "$CFG" ${OVERRIDE_ARGS[@]+"${OVERRIDE_ARGS[@]}"} --output-dir "$DIR" --eval-only --model-dir "$DIR" \
    DATASET.NUM_SHOTS "$SHOTS" "$@"
done
