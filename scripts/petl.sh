#!/usr/bin/env bash
# PETL on CLIP: every registered adapter (and ZS CLIP, Convpass_CLIP) with the Convpass_CLIP recipe, 16-shot
# ImageNet -> ImageNet, -V2, -Sketch, -A, -R; each row's sweep runs first on the validation shots.
# Resumes a half-finished grid; writes the table with trainable-parameter counts and a plot.
#   DATA=/path/to/data OUTPUT=output/petl scripts/petl.sh [--seeds 1 2 3] [--force] [KEY VALUE ...]
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"; [ -x "$PY" ] || PY=python3
: "${DATA:?set DATA to the dataset root}"
OUTPUT="${OUTPUT:-output/petl}"
"$PY" -m clip_convpass grid --table petl --data "$DATA" --output "$OUTPUT" "$@"
"$PY" -m clip_convpass report "$OUTPUT" --table petl --format markdown --output "$OUTPUT/petl.md" --plot "$OUTPUT/petl.png"
echo "Table: $OUTPUT/petl.md, plot: $OUTPUT/petl.png"
