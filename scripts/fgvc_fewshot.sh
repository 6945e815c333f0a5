#!/usr/bin/env bash
# Few-shot FGVC, the Convpass paper's Figure 5: every row of the "fgvc_fewshot" table (the registry's rows) on
# NOAH's lists over CoOp's images, 1 2 4 8 16 shots x seeds 0 1 2. Each row's knob is chosen per dataset and shot
# count on val_meta.list (seed 0), then each seed trains on its list and is scored on test_meta.list; the grid
# resumes and skips finished cells. Then the curves (table and plot).
#   DATA=/path/to/data OUTPUT=output/fgvc scripts/fgvc_fewshot.sh ["0 1 2"] [KEY VALUE ...]
#   DATA holds few-shot/<NOAH folder>/annotations/ (NOAH's data/few-shot/) and CoOp's image folders;
#   MODEL.PRETRAINED /path/ViT-B_16.npz gives the authors' exact backbone; DATASETS="fgvc_fs_pets" and
#   SHOTS="1 2" narrow the grid; GRID_ARGS="--executor slurm ..." sends the cells to a cluster.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"; [ -x "$PY" ] || PY=python3
: "${DATA:?set DATA to the folder holding few-shot/ and the CoOp image folders}"
OUTPUT="${OUTPUT:-output/fgvc}"
SEEDS="${1:-0 1 2}"; shift $(( $# < 1 ? $# : 1 ))
DATASETS="${DATASETS:-$("$PY" -m clip_convpass.cli.paths datasets --benchmark fgvc_fewshot)}"
read -r -a EXTRA <<< "${GRID_ARGS:-}"
# shellcheck disable=SC2086
"$PY" -m clip_convpass grid --data "$DATA" --output "$OUTPUT" --fewshot $DATASETS --shots ${SHOTS:-1 2 4 8 16} \
  --seeds $SEEDS "${EXTRA[@]}" "$@"
"$PY" -m clip_convpass report "$OUTPUT" --fewshot --format markdown --output "$OUTPUT/fewshot.md" --plot "$OUTPUT/fewshot.png"
echo "Curves: $OUTPUT/fewshot.md, plot: $OUTPUT/fewshot.png"
