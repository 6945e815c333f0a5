"""Hyper-parameter selection on the disjoint VAL_SHOTS split (never on test data).

Trains one run per grid point on the K-shot train split, scores it on the VAL_SHOTS split of the
training dataset, and writes every point plus the choice to <output>/sweep.json. Finished points
are skipped when the command is run again.

    python -m clip_convpass.sweep --root DATA --output OUT \\
        --dataset-config-file configs/datasets/imagenet.yaml \\
        --config-file configs/trainers/ConvpassCLIP/vit_b16.yaml \\
        --grid TRAINER.CONVPASS.SCALE=0.01,0.1,1,10,100 [KEY VALUE ...]
"""
from __future__ import annotations

import argparse
import itertools
import logging
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from clip_convpass.config import ConfigError, setup_cfg
from clip_convpass.engine.checkpoint import StaleResultsError, check_stored_config
from clip_convpass.engine.evaluation import METRICS
from clip_convpass.engine.rundir import sweep_point_dir
from clip_convpass.registry import method_rows
from clip_convpass.utils.errors import entry_point
from clip_convpass.utils.io import atomic_write_json, read_json
from clip_convpass.utils.locks import blocking_lock
from clip_convpass.utils.logging import setup_logger

logger = logging.getLogger(__name__)


def parse_grid(entries: Sequence[str]) -> Dict[str, List[str]]:
    grid: Dict[str, List[str]] = {}
    for e in entries:
        if "=" not in e:
            raise ConfigError(f"Grid entries look like KEY=v1,v2,...; got {e!r}")
        key, values = e.split("=", 1)
        grid[key] = [v for v in values.split(",") if v]
        if not grid[key]:
            raise ConfigError(f"Grid entry {e!r} lists no values")
    return grid


def presets() -> Dict[str, List[str]]:
    """The sweeps registered rows declare (Row.sweep), by row name."""
    return {r.name: list(r.sweep) for r in method_rows() if r.sweep}


def run_sweep(grid: Dict[str, List[str]], output: str | Path, dataset_config: Optional[str], config_file: Optional[str],
              opts: Sequence[str] = (), metric: str = "top1", override_files: Sequence[str | Path] = (),
              force: bool = False) -> dict:
    """Every point trained (finished points of the same configuration reused; points of another configuration
    refused, or retrained with force) and the choice; one process at a time per output (a second waits)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    with blocking_lock(output / ".sweep.lock"):
        return _run_sweep(grid, output, dataset_config, config_file, opts, metric, override_files, force)


def _run_sweep(grid, output: Path, dataset_config, config_file, opts, metric, override_files, force) -> dict:
    from clip_convpass.engine.runner import run

    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    rows = []
    for i, point in enumerate(points, 1):
        run_dir = sweep_point_dir(output, point)
        point_opts = [x for kv in point.items() for x in kv]
        cfg = setup_cfg(dataset_config, config_file, [*opts, *point_opts, "OUTPUT_DIR", str(run_dir.root),
                                                      "TEST.SPLIT", "val", "TEST.AFTER_TRAIN", "True"],
                        override_files=override_files)
        if cfg.DATASET.VAL_SHOTS == 0:
            raise ConfigError("A sweep selects on the VAL_SHOTS split; set DATASET.VAL_SHOTS > 0")
        result_file = run_dir.results(cfg.DATASET.NAME, "val", subsample=cfg.DATASET.SUBSAMPLE)
        if result_file.is_file():
            try:
                check_stored_config(run_dir, cfg, "rerun with --force to retrain the stale points")
            except StaleResultsError:
                if not force:
                    raise
                shutil.rmtree(run_dir.root)
        if result_file.is_file():
            print(f"[sweep {i}/{len(points)}] {point}: done before, reusing {result_file}")
            rec = read_json(result_file)
        else:
            print(f"[sweep {i}/{len(points)}] {point}: training in {run_dir.root}")
            rec = run(cfg)[0]
        rows.append({"point": point, "val_" + metric: rec["metrics"][metric], "val_metrics": rec["metrics"],
                     "run_dir": str(run_dir.root)})
        summary = {"metric": "val_" + metric, "split": "val (VAL_SHOTS, disjoint from the train shots)",
                   "grid": grid, "points": rows}
        atomic_write_json(output / "sweep.json", summary)  # after every point: no finished work is lost
    best = max(rows, key=lambda r: r["val_" + metric])  # first best on ties (grid order)
    summary["best"] = best
    atomic_write_json(output / "sweep.json", summary)
    print(f"Best on val: {best['point']} ({metric} {best['val_' + metric]:.2f}); written to {output / 'sweep.json'}")
    return summary


@entry_point
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--dataset-config-file", default="")
    p.add_argument("--config-file", action="append", default=[],
                   help="method YAML; repeat to merge more files after it, in order (e.g. demo.yaml)")
    p.add_argument("--override-config", action="append", default=[], help="YAML merged after the config files")
    p.add_argument("--grid", nargs="*", default=[], help="KEY=v1,v2,... (several give their product)")
    p.add_argument("--preset", choices=sorted(presets()), default=None, help="the sweep a registered row declares")
    p.add_argument("--metric", default="top1", choices=list(METRICS))
    p.add_argument("--force", action="store_true", help="retrain points whose stored configuration differs")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every point")
    args = p.parse_args(argv)
    entries = list(args.grid) + (presets()[args.preset] if args.preset else [])
    if not entries:
        p.error("give --grid KEY=v1,v2,... or --preset")
    setup_logger(None)
    files = list(args.config_file)
    run_sweep(parse_grid(entries), args.output, args.dataset_config_file or None, files[0] if files else None,
              ["DATASET.ROOT", args.root, *args.opts], args.metric,
              override_files=files[1:] + list(args.override_config), force=args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
