"""Every path of a run directory, and where grids, sweeps and scripts put runs: one module.

    OUTPUT/<train dataset>/<trainer>/<config>_<shots>shots/seed<S>/   (grid cells and scripts/train.sh)
      config.yaml  config_eval_<dataset>.yaml  log.txt  train_history.{json,csv}  .lock
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

from .utils import atomic_write_json, atomic_write_text

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


def cell_dir(output: str | Path, train_dataset: str, trainer: str, config_stem: str, shots: int, seed: int) -> RunDir:
    return RunDir(Path(output) / train_dataset / trainer / f"{config_stem}_{shots}shots" / f"seed{seed}")


def sweep_point_dir(output: str | Path, point: Dict[str, str]) -> RunDir:
    return RunDir(Path(output) / "_".join(f"{k.split('.')[-1]}={v}" for k, v in point.items()))


def table_methods(table: str) -> List[str]:
    """"TRAINER CONFIG" (the YAML's stem under configs/trainers/TRAINER/) of each row of a table."""
    from .config import CONFIG_DIR, ConfigError
    from .registry import method_rows, table_names

    if table not in table_names():
        raise ConfigError(f"Unknown table {table!r}; tables: {table_names()}")
    out = []
    for row in method_rows(lambda r: table in r.tables):
        path = Path(row.config)
        if path.is_absolute() or path.parts[:1] != ("trainers",) or len(path.parts) != 3:
            raise ConfigError(f"Row {row.name!r}: its config {row.config} is not under {CONFIG_DIR / 'trainers'}")
        out.append(f"{path.parts[1]} {path.stem}")
    return out


def listed_datasets(trainable: bool = False, source: str = "") -> List[str]:
    """Dataset config names (configs/datasets/<name>.yaml) in table order, optionally filtered."""
    from .compose import dataset_config_files
    from .config import ConfigError
    from .registry import DATASET_REGISTRY, dataset_order, evaluation_domains

    files = dataset_config_files()
    names = dataset_order(list(files))
    if trainable:
        names = [n for n in names if DATASET_REGISTRY.get(n).HAS_TRAIN]
    if source:
        by_stem = {path.stem: name for name, path in files.items()}
        if source not in by_stem:
            raise ConfigError(f"Unknown dataset config {source!r}; configs: {sorted(by_stem)}")
        names = [n for n in evaluation_domains(by_stem[source])[1:] if n in files]
    return [files[n].stem for n in names]


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
    rows = sub.add_parser("rows", help="'TRAINER CONFIG' of every registered row of a table, one per line")
    rows.add_argument("--table", required=True)
    datasets = sub.add_parser("datasets", help="dataset config names, one per line")
    datasets.add_argument("--trainable", action="store_true", help="only datasets with a training split")
    datasets.add_argument("--source", default="", help="only the evaluation sets of this training dataset (config name)")
    args = p.parse_args(argv)
    if args.what == "rows":
        for line in table_methods(args.table):
            print(line)
        return 0
    if args.what == "datasets":
        for name in listed_datasets(args.trainable, args.source):
            print(name)
        return 0
    cfg = setup_cfg(args.dataset_config, getattr(args, "config", None))
    if args.what == "cell":
        stem = resolve_config_path(args.config).stem
        print(cell_dir(args.output, cfg.DATASET.NAME, cfg.TRAINER.NAME, stem, args.shots, args.seed).root)
    else:
        print(RunDir(args.run_dir).results(cfg.DATASET.NAME))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
