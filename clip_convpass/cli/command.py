"""The `clip-convpass` console command: one entry point for every workflow.

    clip-convpass train --root DATA --dataset-config-file datasets/oxford_pets.yaml \
        --config-file trainers/CoOp/vit_b16_fewshot.yaml
    clip-convpass eval --model-dir RUN --root DATA --dataset-config-file datasets/imagenet_a.yaml --config-file ...
    clip-convpass grid | report | sweep | check | params | headinit | wiseft | demo | synth ...
    clip-convpass --list-pretrained [MODEL]
"""
from __future__ import annotations

import sys
from typing import Callable, Dict, List, Optional, Tuple

# subcommand -> (module, one-line help); each module's own main() parses the rest of the arguments
COMMANDS: Dict[str, Tuple[str, str]] = {
    "train": ("clip_convpass.cli.train", "train and evaluate one run (train.py)"),
    "eval": ("clip_convpass.cli.train", "evaluate a trained run: train.py --eval-only (add --model-dir RUN)"),
    "grid": ("clip_convpass.experiments.grid", "the Table 2 / PETL grid, or --fewshot curves, in one process"),
    "report": ("clip_convpass.cli.report", "tables and plots from results.json (--fewshot, --robustness)"),
    "sweep": ("clip_convpass.experiments.sweep", "choose settings on the validation shots"),
    "check": ("clip_convpass.data.check", "check a data root against the expected layouts and counts"),
    "params": ("clip_convpass.cli.params", "trainable-parameter counts of the adapters"),
    "headinit": ("clip_convpass.experiments.headinit", "the head-initialisation study"),
    "wiseft": ("clip_convpass.experiments.wiseft", "WiSE-FT interpolation of trained runs"),
    "demo": ("clip_convpass.experiments.demo", "the whole pipeline on synthetic data with a tiny model"),
    "synth": ("clip_convpass.data.synthetic", "write a synthetic dataset tree in a dataset's real layout"),
}
EXAMPLES = """examples:
  clip-convpass demo --output demo_output
  clip-convpass train --root DATA --dataset-config-file datasets/imagenet.yaml \\
      --config-file trainers/ConvpassCLIP/vit_b16.yaml --output-dir out/convpass DATASET.NUM_SHOTS 16
  clip-convpass train --root demo_output/data --dataset-config-file datasets/imagenet.yaml \\
      --config-file trainers/CoOp/vit_b16_ep50.yaml --config-file demo.yaml --output-dir out/try \\
      MODEL.PRETRAINED demo_output/data/tiny_clip.pt          (any command on the demo's data and model)
  clip-convpass report out --paper --format markdown --plot table2.png
  clip-convpass <command> --help"""


def listing() -> str:
    """What the registries hold: every list comes from them, never restated here."""
    import open_clip

    from clip_convpass.adapters.base import presets
    from clip_convpass.registry import DATASET_REGISTRY, TRAINER_REGISTRY, method_rows

    backbones = [m for m in open_clip.list_models() if "ViT" in m and "quickgelu" in m]
    lines = ["trainers:  " + ", ".join(TRAINER_REGISTRY.names()),
             "rows:      " + ", ".join(r.name for r in method_rows()),
             "datasets:  " + ", ".join(DATASET_REGISTRY.names()),
             "adapters:  " + ", ".join(sorted(presets())),
             "backbones: any open_clip model (clip-convpass --list-models), e.g. " + ", ".join(backbones[:6])
             + "; hf-hub:ORG/REPO names; MODEL.CONFIG_FILE for a custom model-config JSON"]
    return "\n".join(lines)


def usage() -> str:
    width = max(map(len, COMMANDS))
    cmds = "\n".join(f"  {name.ljust(width)}  {desc}" for name, (_, desc) in COMMANDS.items())
    return (f"usage: clip-convpass <command> [options]\n\n{__doc__.splitlines()[0]}\n\ncommands:\n{cmds}\n"
            f"  {'--list-pretrained [MODEL]'}  open_clip's (model, pretrained tag) pairs\n"
            f"  {'--list-models'}  every open_clip model name\n\n{listing()}\n\n{EXAMPLES}")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command == "--list-pretrained":
        import open_clip

        pairs = open_clip.list_pretrained()
        for model, tag in pairs:
            if not rest or model in rest:
                print(f"{model} {tag}")
        return 0
    if command == "--list-models":
        import open_clip

        print("\n".join(open_clip.list_models()))
        return 0
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; commands: {', '.join(COMMANDS)} (clip-convpass --help)",
              file=sys.stderr)
        return 2
    if command == "eval" and "--eval-only" not in rest:
        rest = ["--eval-only", *rest]
    import importlib

    module = importlib.import_module(COMMANDS[command][0])
    entry: Callable[[Optional[List[str]]], int] = module.main
    sys.argv = [f"clip-convpass {command}", *rest]  # argparse's usage lines name the subcommand
    result = entry(rest)
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
