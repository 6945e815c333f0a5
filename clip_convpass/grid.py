"""Run a grid of (method config, seed) cells: train on ImageNet, evaluate on the five test sets.

Each cell lives in OUTPUT/<train dataset>/<trainer>/<config>_<shots>shots/seed<S>/ with
eval/<dataset>/results.json per test set. A cell whose results all exist is skipped; a cell that
was interrupted resumes from its last checkpoint. Everything runs in this process.

    python -m clip_convpass.grid --data DATA --output OUT [--methods ...] [--seeds 1 2 3] [--force]
"""
from __future__ import annotations

import argparse
import gc
import shutil
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from .registry import REPO_ROOT
from .report import DOMAINS
from .utils import format_seconds, setup_logger

logger = logging.getLogger("clip_convpass")
CONFIGS = REPO_ROOT / "configs"


@dataclass
class Method:
    name: str  # row label in tables (cfg.NAME)
    config: str  # method YAML, relative to configs/ or absolute
    opts: List[str] = field(default_factory=list)
    tag: str = ""  # run-folder name; default: the config file's stem

    @property
    def config_path(self) -> Path:
        p = Path(self.config)
        return p if p.is_absolute() else CONFIGS / p


# The Table 2 grid (ViT-B/16, 16 shots), in the paper's row order.
TABLE2_METHODS = [
    Method("ZeroShotCLIP", "trainers/ZeroShotCLIP/vit_b16.yaml"),
    Method("LinearProbeCLIP", "trainers/LinearProbeCLIP/vit_b16.yaml"),
    Method("CoOp", "trainers/CoOp/vit_b16_ep50.yaml"),
    Method("CoCoOp", "trainers/CoCoOp/vit_b16_c4_ep10_batch1.yaml"),
    Method("TipAdapterF", "trainers/TipAdapterF/vit_b16.yaml"),
    Method("ConvpassCLIP", "trainers/ConvpassCLIP/vit_b16.yaml"),
]


def cell_dir(output: Path, cfg, method: Method) -> Path:
    stem = method.tag or method.config_path.stem
    return output / cfg.DATASET.NAME / cfg.TRAINER.NAME / f"{stem}_{cfg.DATASET.NUM_SHOTS}shots" / f"seed{cfg.SEED}"


def build_cell_cfg(method: Method, seed: int, data: str, output: Path, extra_opts: Sequence[str] = (),
                   override_config: str | Path | None = None):
    """base defaults -> dataset -> method -> override file (e.g. configs/demo.yaml) -> opts."""
    from .config import get_cfg_default, merge_config_file, merge_opts, validate_cfg

    cfg = get_cfg_default()
    merge_config_file(cfg, CONFIGS / "datasets" / "imagenet.yaml")
    merge_config_file(cfg, method.config_path)
    if override_config:
        merge_config_file(cfg, override_config)
    merge_opts(cfg, ["DATASET.ROOT", data, "SEED", str(seed), "NAME", method.name, *method.opts, *extra_opts])
    validate_cfg(cfg)
    cfg.OUTPUT_DIR = str(cell_dir(output, cfg, method))
    cfg.freeze()
    return cfg


def cell_done(out_dir: Path, domains: Sequence[str], eval_step0: bool = False) -> bool:
    stages = ["eval", "eval_step0"] if eval_step0 else ["eval"]
    return all((out_dir / s / d / "results.json").is_file() for d in domains for s in stages)


def run_grid(methods: Sequence[Method], seeds: Sequence[int], data: str, output: str | Path,
             extra_opts: Sequence[str] = (), domains: Sequence[str] = DOMAINS, force: bool = False,
             override_config: str | Path | None = None, method_opts: Optional[dict] = None,
             eval_step0: bool = False, feature_cache: bool = True) -> List[Path]:
    """Run every (method, seed) cell. With feature_cache, frozen-encoder methods share test-set features
    through <output>/feature_cache: each test set is encoded once for all of them and all seeds."""
    from .engine import run

    output = Path(output)
    cells = [(m, s) for m in methods for s in seeds]
    done_dirs = []
    t0 = time.time()
    for i, (method, seed) in enumerate(cells, 1):
        opts = [*extra_opts, *(method_opts or {}).get(method.name, [])]
        if feature_cache:
            opts = ["TEST.FEATURE_CACHE_DIR", str(output / "feature_cache"), *opts]
        cfg = build_cell_cfg(method, seed, data, output, opts, override_config)
        out_dir = Path(cfg.OUTPUT_DIR)
        prefix = f"[grid {i}/{len(cells)}] {method.name} seed {seed}"
        if cell_done(out_dir, domains, eval_step0) and not force:
            print(f"{prefix}: results exist in {out_dir}, skipping (use --force to rerun)")
        else:
            if force and out_dir.exists():
                shutil.rmtree(out_dir)  # a forced rerun trains from scratch, as scripts/train.sh --force
            print(f"{prefix}: running in {out_dir}")
            run(cfg, eval_datasets=[d for d in domains if d != cfg.DATASET.NAME], eval_step0=eval_step0)
            gc.collect()
        done_dirs.append(out_dir)
        elapsed = time.time() - t0
        print(f"{prefix}: done; grid elapsed {format_seconds(elapsed)}, "
              f"eta {format_seconds(elapsed / i * (len(cells) - i))}")
    return done_dirs


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="DATASET.ROOT")
    p.add_argument("--output", required=True, help="output root")
    p.add_argument("--methods", nargs="*", default=None, help=f"row names from {[m.name for m in TABLE2_METHODS]}")
    p.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3])
    p.add_argument("--force", action="store_true", help="rerun cells whose results exist")
    p.add_argument("--override-config", default="", help="YAML merged after each method's config")
    p.add_argument("--no-feature-cache", action="store_true", help="re-encode test sets for every method and seed")
    p.add_argument("opts", nargs="*", help="KEY VALUE overrides for every cell")
    args = p.parse_intermixed_args(argv)
    methods = [m for m in TABLE2_METHODS if args.methods is None or m.name in args.methods]
    unknown = set(args.methods or []) - {m.name for m in TABLE2_METHODS}
    if unknown:
        p.error(f"unknown methods {sorted(unknown)}; choices: {[m.name for m in TABLE2_METHODS]}")
    setup_logger(None)
    run_grid(methods, args.seeds, args.data, args.output, args.opts, force=args.force,
             override_config=args.override_config or None, feature_cache=not args.no_feature_cache)
    from .report import aggregate, build_table, collect, render

    print(render(build_table(aggregate(collect([args.output])), paper=True), paper=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
