#!/usr/bin/env bash
# Head-initialisation study (Convpass_CLIP and a head-only probe; text-1/7/80, random, zero, lp;
# head trainable vs frozen; degenerate cells left out; LR or head multiplier chosen per cell on VAL_SHOTS).
#   --head-params folded scaled cosine: one set of cells per head parameterisation; --no-sweep: config values
#   DATA=/path/to/data OUTPUT=output/headinit scripts/headinit.sh [--seeds 1 2 3] [KEY VALUE ...]
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"; [ -x "$PY" ] || PY=python3
: "${DATA:?set DATA to the dataset root}"
exec "$PY" -m clip_convpass headinit --data "$DATA" --output "${OUTPUT:-output/headinit}" "$@"
