"""Trainable parameters of every registered adapter preset in an image encoder (head excluded): CLIP's, or a
supervised timm model's (the Convpass paper's VTAB-1K backbones; on Swin, the presets that inject into its stages).

    python -m clip_convpass.params [--json] [--backbone ViT-B-16-quickgelu | timm:vit_base_patch16_224 |
                                    timm:swin_base_patch4_window7_224]

Built with random weights (no download); the counts are the PETL budgets of the README's table.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from typing import Dict, List, Optional

from clip_convpass.utils.errors import UserError, entry_point


def adapter_param_counts(backbone: str = "ViT-B-16-quickgelu") -> Dict[str, int]:
    import open_clip

    from clip_convpass.adapters.base import inject, presets
    from clip_convpass.models import clip_loader  # noqa: F401  (registers the project's model configs)
    from clip_convpass.models.timm_backbone import create_timm_model, is_timm, timm_visual

    if is_timm(backbone):
        visual = timm_visual(create_timm_model(backbone, "none", num_classes=0))
        if getattr(visual, "hierarchical", False):  # Swin, ConvNeXt: the presets that inject into their stages
            out = {}
            for name, (kind, _) in presets().items():
                if kind.HIERARCHICAL:
                    try:
                        out[name] = inject(copy.deepcopy(visual), name).count()
                    except UserError:  # a variant the backbone has no form of (Convpass_share on Swin)
                        continue
            return out
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
    p.add_argument("--backbone", default="ViT-B-16-quickgelu", help="an open_clip ViT, or timm:<name> (a timm ViT or Swin)")
    args = p.parse_args(argv)
    counts = adapter_param_counts(args.backbone)
    if not counts:
        print(f"No adapter preset injects into {args.backbone}: train it with TRAINER.PETL.ADAPTER none (Linear, or "
              f"Full with BACKBONE_TRAINABLE)", file=sys.stderr)
    if args.json:
        print(json.dumps(counts, indent=2))
    else:
        for name, n in counts.items():
            print(f"{name:16s} {n:>10,}")
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
