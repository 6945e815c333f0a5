"""Command line for train.py (and `python -m clip_convpass.cli`)."""
from __future__ import annotations

import argparse
from typing import List, Optional

from clip_convpass.utils.errors import entry_point


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train / evaluate CLIP adaptation methods")
    p.add_argument("--root", default="", help="dataset root (DATASET.ROOT)")
    p.add_argument("--output-dir", default="", help="output directory (OUTPUT_DIR)")
    p.add_argument("--seed", type=int, default=None, help="random seed (SEED); 0 is a valid seed")
    p.add_argument("--config-file", action="append", default=[],
                   help="method config YAML; repeat the flag to merge more files after it, in order (overrides such "
                        "as demo.yaml: tiny model + synthetic-data settings)")
    p.add_argument("--override-config", action="append", default=[],
                   help="YAML merged after the config files (repeatable); the scripts pass $OVERRIDES here")
    p.add_argument("--dataset-config-file", default="", help="dataset config YAML")
    p.add_argument("--trainer", default="", help="trainer name (TRAINER.NAME)")
    p.add_argument("--backbone", default="", help="open_clip model name (MODEL.BACKBONE)")
    p.add_argument("--eval-only", action="store_true", help="only evaluate")
    p.add_argument("--model-dir", default="", help="load trained weights from this run directory")
    p.add_argument("--load-epoch", type=int, default=None, help="epoch checkpoint to load (default: latest)")
    p.add_argument("--eval-datasets", action="append", default=[], metavar="NAME[,NAME...]",
                   help="also evaluate on these datasets (registry names, comma-separated; the flag may repeat)")
    p.add_argument("--force", action="store_true", help="start training afresh, discarding this run's checkpoints")
    p.add_argument("--debug", action="store_true", help="show the traceback of the project's own errors")
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides (flags may come before or after them)")
    return p


def cfg_from_args(args):
    from clip_convpass.config import setup_cfg

    opts: List[str] = []
    if args.root:
        opts += ["DATASET.ROOT", args.root]
    if args.output_dir:
        opts += ["OUTPUT_DIR", args.output_dir]
    if args.seed is not None:
        opts += ["SEED", str(args.seed)]
    if args.trainer:
        opts += ["TRAINER.NAME", args.trainer]
    if args.backbone:
        opts += ["MODEL.BACKBONE", args.backbone]
    files = list(args.config_file)
    return setup_cfg(args.dataset_config_file or None, files[0] if files else None, opts + list(args.opts),
                     override_files=files[1:] + list(args.override_config))


def eval_dataset_names(values: List[str]) -> List[str]:
    return [name.strip() for v in values for name in v.split(",") if name.strip()]


@entry_point
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    from clip_convpass.engine.runner import run

    cfg = cfg_from_args(args)
    run(cfg, eval_only=args.eval_only, model_dir=args.model_dir, load_epoch=args.load_epoch,
        eval_datasets=eval_dataset_names(args.eval_datasets), force=args.force)
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
