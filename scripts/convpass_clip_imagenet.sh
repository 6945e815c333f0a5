#!/usr/bin/env bash
# Convpass_CLIP, 16-shot ImageNet -> ImageNet, -V2, -Sketch, -A, -R, for the given seeds (default 1 2 3).
#   DATA=/path/to/data OUTPUT=output scripts/convpass_clip_imagenet.sh [CONFIG] [SEEDS...]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
CONFIG="${1:-vit_b16}"; shift || true
for SEED in "${@:-1 2 3}"; do
  for S in $SEED; do
    "$HERE/train.sh" ConvpassCLIP "$CONFIG" imagenet 16 "$S"
    "$HERE/eval.sh" ConvpassCLIP "$CONFIG" 16 "$S"
  done
done
