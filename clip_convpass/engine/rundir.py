"""Every path of a run directory, and where grids, sweeps and scripts put runs: one module.

    OUTPUT/<train dataset>/<trainer>/<config>_<shots>shots[_base]/seed<S>/   (grid cells and scripts/train.sh;
                                                             _base: trained on the base classes only)
      config.yaml  config_eval_<dataset>[-<subsample>].yaml  log.txt  train_history.{json,csv}  .lock
      checkpoints/model-epoch<N>.pt
      eval/<dataset>[-base|-new][_<split>]/results.json  (.lock)     eval_step0/...: before training

The shell scripts ask clip_convpass.cli.paths for them instead of rebuilding them.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Optional

from clip_convpass.utils.io import atomic_write_json, atomic_write_text

CHECKPOINT_PREFIX = "model-epoch"


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    def eval_config(self, dataset: str, subsample: str = "all") -> Path:
        return self.root / f"config_eval_{eval_tag(dataset, subsample)}.yaml"

    @property
    def log_name(self) -> str:
        return "log.txt"

    @property
    def history(self) -> Path:
        return self.root / "train_history.json"

    @property
    def error(self) -> Path:
        """The error that stopped the last training attempt, one line (removed when a run finishes)."""
        return self.root / "error.txt"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"{CHECKPOINT_PREFIX}{epoch}.pt"

    def eval_dir(self, dataset: str, split: str = "test", stage: str = "final", subsample: str = "all") -> Path:
        tag = eval_tag(dataset, subsample) + ("" if split == "test" else f"_{split}")
        return self.root / ("eval" if stage == "final" else f"eval_{stage}") / tag

    def results(self, dataset: str, split: str = "test", stage: str = "final", subsample: str = "all") -> Path:
        return self.eval_dir(dataset, split, stage, subsample) / "results.json"

    def eval_lock(self, dataset: str, subsample: str = "all") -> Path:
        return self.eval_dir(dataset, subsample=subsample) / ".lock"

    def has_results(self, datasets: List[str], stages=("final",), split: str = "test", subsample: str = "all") -> bool:
        return all(self.results(d, split, s, subsample).is_file() for d in datasets for s in stages)

    def write_results(self, rec: dict) -> Path:
        path = self.results(rec["dataset"], rec["split"], rec.get("stage", "final"), rec.get("subsample", "all"))
        atomic_write_json(path, rec)
        return path

    def append_history(self, epoch: int, stats: Dict[str, float]) -> None:
        """Record epoch `epoch` (1-based); entries from a run that was resumed earlier are replaced."""
        history = json.loads(self.history.read_text()) if self.history.is_file() else []
        history = [h for h in history if h["epoch"] < epoch]
        history.append({"epoch": epoch, **stats})
        atomic_write_json(self.history, history)
        self._write_history_csv(history)

    @property
    def history_csv(self) -> Path:
        return self.root / "train_history.csv"

    def _write_history_csv(self, history: List[dict]) -> None:
        """The same scalars as train_history.json, one row per epoch (spreadsheets, pandas, plotting tools)."""
        import csv
        import io

        columns = list(dict.fromkeys(k for h in history for k in h))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.history_csv, buf.getvalue())


def eval_tag(dataset: str, subsample: str = "all") -> str:
    """An evaluation's folder name: the dataset, and the half of its classes when it is one (base-to-new)."""
    return dataset if subsample == "all" else f"{dataset}-{subsample}"


def cell_dir(output: str | Path, train_dataset: str, trainer: str, config_stem: str, shots: Optional[int], seed: int,
             subsample: str = "all") -> RunDir:
    """shots None: a dataset with one published training list (VTAB-1K)."""
    half = "" if subsample == "all" else f"_{subsample}"
    name = config_stem if shots is None else f"{config_stem}_{shots}shots"
    return RunDir(Path(output) / train_dataset / trainer / f"{name}{half}" / f"seed{seed}")


def safe_name(text: str) -> str:
    """A file-name part made from any text: path separators and anything but letters, digits and . , = + -
    become _, and no part is "." or ".." (a sweep value cannot place its run outside the output)."""
    name = re.sub(r"[^A-Za-z0-9.,=+-]", "_", text)
    return "_" if name.strip(".") == "" else name.replace("..", "__")


def sweep_point_dir(output: str | Path, point: Dict[str, str]) -> RunDir:
    return RunDir(Path(output) / "_".join(safe_name(f"{k.split('.')[-1]}={v}") for k, v in point.items()))
