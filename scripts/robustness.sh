#!/usr/bin/env bash
# Effective robustness of a finished Table 2 grid: WiSE-FT (alpha 0, 0.1, ..., 1) of every fine-tuned run
# under OUTPUT (resumable: evaluated alphas are skipped), then the table and the plot (ImageNet vs the
# shifted sets' average, zero-shot CLIP as a star, one curve per method).
#   DATA=/path/to/data OUTPUT=output scripts/robustness.sh [--alphas 0 0.5 1] [--opts KEY VALUE ...]
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"; [ -x "$PY" ] || PY=python3
: "${DATA:?set DATA to the dataset root}"
OUTPUT="${OUTPUT:-output}"
"$PY" -m clip_convpass wiseft --under "$OUTPUT" --data "$DATA" "$@"
"$PY" -m clip_convpass report "$OUTPUT" --robustness --format markdown --output "$OUTPUT/robustness.md" \
  --plot "$OUTPUT/robustness.png"
echo "Table: $OUTPUT/robustness.md, plot: $OUTPUT/robustness.png"
