"""Every path of a run directory, and where grids, sweeps and scripts put runs: one module.

    OUTPUT/<train dataset>/<trainer>/<config>_<shots>shots/seed<S>/   (grid cells and scripts/train.sh)
      config.yaml  config_eval_<dataset>.yaml  log.txt  train_history.json  .lock
      checkpoints/model-epoch<N>.pt
      eval/<dataset>[_<split>]/results.json  (.lock)     eval_step0/...: before training

The shell scripts ask this module for paths (`python -m clip_convpass.rundir ...`) instead of
rebuilding them.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional

from .utils import atomic_write_json

CHECKPOINT_PREFIX = "model-epoch"


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    def eval_config(self, dataset: str) -> Path:
        return self.root / f"config_eval_{dataset}.yaml"

    @property
    def log_name(self) -> str:
        return "log.txt"

    @property
    def history(self) -> Path:
        return self.root / "train_history.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"{CHECKPOINT_PREFIX}{epoch}.pt"

    def eval_dir(self, dataset: str, split: str = "test", stage: str = "final") -> Path:
        tag = dataset if split == "test" else f"{dataset}_{split}"
        return self.root / ("eval" if stage == "final" else f"eval_{stage}") / tag

    def results(self, dataset: str, split: str = "test", stage: str = "final") -> Path:
        return self.eval_dir(dataset, split, stage) / "results.json"

    def eval_lock(self, dataset: str) -> Path:
        return self.eval_dir(dataset) / ".lock"

    def has_results(self, datasets: List[str], stages=("final",), split: str = "test") -> bool:
        return all(self.results(d, split, s).is_file() for d in datasets for s in stages)

    def write_results(self, rec: dict) -> Path:
        path = self.results(rec["dataset"], rec["split"], rec.get("stage", "final"))
        atomic_write_json(path, rec)
        return path

    def append_history(self, epoch: int, stats: Dict[str, float]) -> None:
        """Record epoch `epoch` (1-based); entries from a run that was resumed earlier are replaced."""
        history = json.loads(self.history.read_text()) if self.history.is_file() else []
        history = [h for h in history if h["epoch"] < epoch]
        history.append({"epoch": epoch, **stats})
        atomic_write_json(self.history, history)


def cell_dir(output: str | Path, train_dataset: str, trainer: str, config_stem: str, shots: int, seed: int) -> RunDir:
    return RunDir(Path(output) / train_dataset / trainer / f"{config_stem}_{shots}shots" / f"seed{seed}")


def sweep_point_dir(output: str | Path, point: Dict[str, str]) -> RunDir:
    return RunDir(Path(output) / "_".join(f"{k.split('.')[-1]}={v}" for k, v in point.items()))


def main(argv: Optional[List[str]] = None) -> int:
    """For the shell scripts: print a run directory, or the results file of a dataset in one."""
    from .compose import setup_cfg
    from .config import resolve_config_path

    p = argparse.ArgumentParser(description=main.__doc__)
    sub = p.add_subparsers(dest="what", required=True)
    cell = sub.add_parser("cell", help="the run directory of (trainer, config, dataset, shots, seed)")
    cell.add_argument("--output", required=True)
    cell.add_argument("--config", required=True, help="method YAML")
    cell.add_argument("--dataset-config", required=True, help="dataset YAML of the training dataset")
    cell.add_argument("--shots", type=int, required=True)
    cell.add_argument("--seed", type=int, required=True)
    res = sub.add_parser("results", help="a dataset's results.json in a run directory")
    res.add_argument("--run-dir", required=True)
    res.add_argument("--dataset-config", required=True)
    args = p.parse_args(argv)
    cfg = setup_cfg(args.dataset_config, getattr(args, "config", None))
    if args.what == "cell":
        stem = resolve_config_path(args.config).stem
        print(cell_dir(args.output, cfg.DATASET.NAME, cfg.TRAINER.NAME, stem, args.shots, args.seed).root)
    else:
        print(RunDir(args.run_dir).results(cfg.DATASET.NAME))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
