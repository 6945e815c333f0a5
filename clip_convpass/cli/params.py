"""Trainable parameters of every registered adapter preset in CLIP's image encoder (head excluded).

    python -m clip_convpass.params [--json] [--backbone ViT-B-16-quickgelu]

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

    if backbone not in open_clip.list_models():
        raise UserError(f"unknown backbone {backbone!r}; any open_clip model name (open_clip.list_models())")
    visual = open_clip.create_model(backbone, pretrained=None).visual
    return {name: inject(copy.deepcopy(visual), name).count() for name in presets()}


@entry_point
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print {adapter: count} as JSON")
    p.add_argument("--backbone", default="ViT-B-16-quickgelu", help="an open_clip ViT")
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
