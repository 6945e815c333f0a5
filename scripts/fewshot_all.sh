#!/usr/bin/env bash
# Few-shot curves of every method of the "fewshot" table (the registry's rows) on every dataset with a
# training split (CoOp's eleven), shots 1 2 4 8 16 x seeds; then the curve table and plot.
#   DATA=/path/to/data OUTPUT=output/fewshot scripts/fewshot_all.sh ["1 2 3"] [KEY VALUE ...]
#   METHODS="CoOp:vit_b16_fewshot ConvpassCLIP:vit_b16" and DATASETS="oxford_pets eurosat" narrow the sweep.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"; [ -x "$PY" ] || PY=python3
: "${DATA:?set DATA to the dataset root}"
export OUTPUT="${OUTPUT:-output/fewshot}"
SEEDS="${1:-1 2 3}"; shift $(( $# < 1 ? $# : 1 ))
if [ -z "${METHODS:-}" ]; then
  METHODS="$("$PY" -m clip_convpass.cli.paths rows --table fewshot | tr ' ' ':')"
fi
DATASETS="${DATASETS:-$("$PY" -m clip_convpass.cli.paths datasets --trainable)}"
for DATASET in $DATASETS; do
  for ENTRY in $METHODS; do
    "$HERE/scripts/fewshot.sh" "${ENTRY%%:*}" "${ENTRY#*:}" "$DATASET" "$SEEDS" "$@"
  done
done
"$PY" -m clip_convpass report "$OUTPUT" --fewshot --format markdown --output "$OUTPUT/fewshot.md" --plot "$OUTPUT/fewshot.png"
echo "Curves: $OUTPUT/fewshot.md, plot: $OUTPUT/fewshot.png"
