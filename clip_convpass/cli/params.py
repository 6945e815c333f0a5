"""Trainable parameters of every registered adapter preset in an image encoder (head excluded): CLIP's, or a
supervised timm ViT's (the Convpass paper's VTAB-1K backbone).

    python -m clip_convpass.params [--json] [--backbone ViT-B-16-quickgelu | timm:vit_base_patch16_224]

Built with random weights (no download); the counts are the PETL budgets of the README's table.
"""
from __future__ import annotations

import argparse
import copy
import json
from typing import Dict, List, Optional

from clip_convpass.utils.errors import UserError, entry_point


def adapter_param_counts(backbone: str = "ViT-B-16-quickgelu") -> Dict[str, int]:
    import open_clip

    from clip_convpass.adapters.base import inject, presets
    from clip_convpass.models import clip_loader  # noqa: F401  (registers the project's model configs)
    from clip_convpass.models.timm_backbone import TimmVisual, create_timm_vit, is_timm

    if is_timm(backbone):
        visual = TimmVisual(create_timm_vit(backbone, "none", num_classes=0))
    elif backbone not in open_clip.list_models():
        raise UserError(f"unknown backbone {backbone!r}; an open_clip model name (open_clip.list_models()) or "
                        f"timm:<a timm ViT>")
    else:
        visual = open_clip.create_model(backbone, pretrained=None).visual
    return {name: inject(copy.deepcopy(visual), name).count() for name in presets()}


@entry_point
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print {adapter: count} as JSON")
    p.add_argument("--backbone", default="ViT-B-16-quickgelu", help="an open_clip ViT, or timm:<name> (a timm ViT)")
    args = p.parse_args(argv)
    counts = adapter_param_counts(args.backbone)
    if args.json:
        print(json.dumps(counts, indent=2))
    else:
        for name, n in counts.items():
            print(f"{name:16s} {n:>10,}")
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
