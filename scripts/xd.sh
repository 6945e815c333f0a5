#!/usr/bin/env bash
# Cross-dataset transfer (CoCoOp's protocol) of one method and seed: the 16-shot ImageNet run (trained by
# scripts/train.sh, or by the Table 2 grid into the same OUTPUT; trained here if missing) evaluated on each target's
# test split with the target's own classes and templates. Finished evaluations are skipped.
#   DATA=/path/to/data OUTPUT=output scripts/xd.sh TRAINER CONFIG [SEED] [--force] [--targets "caltech101 ..."] [KEY VALUE ...]
# e.g. DATA=~/data scripts/xd.sh CoCoOp vit_b16_c4_ep10_batch1 1
# --force re-evaluates the targets; it never retrains the ImageNet run (scripts/train.sh --force does).
# Default targets: every dataset with a training split but ImageNet. Table: python -m clip_convpass report "$OUTPUT" --cross-dataset
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"; [ -x "$PY" ] || PY=python3
: "${DATA:?set DATA to the dataset root}"
TRAINER="${1:?trainer name, e.g. CoCoOp}"; CONFIG="${2:?config name under configs/trainers/$1/}"; SEED="${3:-1}"
shift $(( $# < 3 ? $# : 3 ))
FORCE=(); TARGETS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=(--force); shift ;;
    --targets) TARGETS="${2:?--targets needs a list}"; shift 2 ;;
    *) break ;;
  esac
done
[ -n "$TARGETS" ] || TARGETS="$("$PY" -m clip_convpass.cli.paths datasets --trainable | grep -vx imagenet)"
"$HERE/scripts/train.sh" "$TRAINER" "$CONFIG" imagenet 16 "$SEED" "$@"
"$HERE/scripts/eval.sh" "$TRAINER" "$CONFIG" 16 "$SEED" ${FORCE[@]+"${FORCE[@]}"} --targets "$TARGETS" "$@"
