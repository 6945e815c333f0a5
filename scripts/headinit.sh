#!/usr/bin/env bash
# Zero-shot head-initialisation experiments (Convpass_CLIP and a head-only probe; text-1/7/80, random, zero;
# head trainable vs frozen; step-0 accuracy next to trained accuracy).
#   DATA=/path/to/data OUTPUT=output/headinit scripts/headinit.sh [--seeds 1 2 3] [KEY VALUE ...]
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"; [ -x "$PY" ] || PY=python3
: "${DATA:?set DATA to the dataset root}"
exec "$PY" -m clip_convpass.headinit --data "$DATA" --output "${OUTPUT:-output/headinit}" "$@"
