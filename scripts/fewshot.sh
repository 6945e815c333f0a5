#!/usr/bin/env bash
# Few-shot sweep of one method on one dataset: shots 1 2 4 8 16 x seeds, each run via scripts/train.sh
# (a finished run is skipped, a half-finished one resumes). The per-shot epochs come from the method's
# YAML (OPTIM.MAX_EPOCH_BY_SHOTS, e.g. CoOp's vit_b16_fewshot).
#   DATA=/path/to/data OUTPUT=output/fewshot scripts/fewshot.sh METHOD CONFIG DATASET ["1 2 3"] [KEY VALUE ...]
#   SHOTS="1 2 4 8 16" (default) chooses the shot counts.
# e.g. DATA=~/data scripts/fewshot.sh CoOp vit_b16_fewshot oxford_pets
# Curves: .venv/bin/python -m clip_convpass report "$OUTPUT" --fewshot --plot curves.png
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
: "${DATA:?set DATA to the dataset root}"
export OUTPUT="${OUTPUT:-output/fewshot}"
METHOD="${1:?method (trainer) name, e.g. CoOp}"; CONFIG="${2:?config name under configs/trainers/$1/}"
DATASET="${3:?dataset config name, e.g. oxford_pets}"; SEEDS="${4:-1 2 3}"
shift $(( $# < 4 ? $# : 4 ))
for SHOT in ${SHOTS:-1 2 4 8 16}; do
  for SEED in $SEEDS; do
    echo "== $METHOD $CONFIG $DATASET: $SHOT shots, seed $SEED"
    "$HERE/scripts/train.sh" "$METHOD" "$CONFIG" "$DATASET" "$SHOT" "$SEED" "$@"
  done
done
