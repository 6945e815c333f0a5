#!/usr/bin/env bash
# The paper's Table 2 grid: ZS, LP, CoOp, CoCoOp, Tip-Adapter-F, Convpass_CLIP; seeds 1 2 3; 16-shot ImageNet;
# evaluated on ImageNet, -V2, -Sketch, -A, -R. Resumes a half-finished grid; prints the table with paper numbers.
#   DATA=/path/to/data OUTPUT=output scripts/table2.sh [--seeds 1 2 3] [--force] [KEY VALUE ...]
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"; [ -x "$PY" ] || PY=python3
: "${DATA:?set DATA to the dataset root}"
OUTPUT="${OUTPUT:-output}"
"$PY" -m clip_convpass grid --data "$DATA" --output "$OUTPUT" "$@"
"$PY" -m clip_convpass report "$OUTPUT" --paper --format markdown --output "$OUTPUT/table2.md" --plot "$OUTPUT/table2.png"
echo "Table: $OUTPUT/table2.md, plot: $OUTPUT/table2.png"
