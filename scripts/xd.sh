#!/usr/bin/env bash
# Cross-dataset transfer (CoCoOp's protocol) of one method and seed: the 16-shot ImageNet run (trained by
# scripts/train.sh, or by the Table 2 grid into the same OUTPUT; trained here if missing) evaluated on each target's
# test split with the target's own classes and templates. Finished evaluations are skipped.
#   DATA=/path/to/data OUTPUT=output scripts/xd.sh TRAINER CONFIG [SEED] [--force] [--targets "caltech101 ..."] [KEY VALUE ...]
# e.g. DATA=~/data scripts/xd.sh CoCoOp vit_b16_c4_ep10_batch1 1
# Default targets: every dataset with a training split but ImageNet. Table: python -m clip_convpass report "$OUTPUT" --cross-dataset
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"; [ -x "$PY" ] || PY=python3
: "${DATA:?set DATA to the dataset root}"
TRAINER="${1:?trainer name, e.g. CoCoOp}"; CONFIG="${2:?config name under configs/trainers/$1/}"; SEED="${3:-1}"
shift $(( $# < 3 ? $# : 3 ))
FORCE=(); if [ "${1:-}" = "--force" ]; then FORCE=(--force); shift; fi
TARGETS=""; if [ "${1:-}" = "--targets" ]; then TARGETS="$2"; shift 2; fi
[ -n "$TARGETS" ] || TARGETS="$("$PY" -m clip_convpass.cli.paths datasets --trainable | grep -vx imagenet)"
"$HERE/scripts/train.sh" "$TRAINER" "$CONFIG" imagenet 16 "$SEED" "$@"
"$HERE/scripts/eval.sh" "$TRAINER" "$CONFIG" 16 "$SEED" ${FORCE[@]+"${FORCE[@]}"} --targets "$TARGETS" "$@"
