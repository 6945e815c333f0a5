#!/usr/bin/env bash
# The one command to run when a GPU is at hand (no network; under 8 minutes on one GPU; after `make env`):
# the CUDA-marked tests (tests/engine/test_cuda.py), then benchmarks/gpu_check.py's measurements and projections.
#   bash benchmarks/gpu_check.sh [gpu_check.py flags]
# Writes $OUT/gpu_check.json when OUT is set, else benchmarks/results/gpu-cuda-<date>.json: commit it.
set -uo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"; [ -x "$PY" ] || PY=python3
cd "$HERE"
LOG="$(mktemp)"
"$PY" -m pytest -q -m cuda tests/engine/test_cuda.py -p no:cacheprovider 2>&1 | tee "$LOG"
TESTS=${PIPESTATUS[0]}
"$PY" benchmarks/gpu_check.py --pytest-summary "$(tail -n 1 "$LOG")" "$@"
MEASURED=$?
rm -f "$LOG"
[ "$TESTS" = 0 ] && [ "$MEASURED" = 0 ]
