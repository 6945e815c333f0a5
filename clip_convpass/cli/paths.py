"""Paths and lists for the shell scripts: a run directory, a results file, a table's rows, dataset configs.

    python -m clip_convpass.cli.paths cell --output OUT --config trainers/CoOp/x.yaml \
        --dataset-config datasets/imagenet.yaml --shots 16 --seed 1
    python -m clip_convpass.cli.paths rows --table table2 | datasets [--trainable] [--source imagenet] [--benchmark vtab1k]

The scripts ask here instead of rebuilding paths or restating lists.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

from clip_convpass.engine.rundir import RunDir, cell_dir
from clip_convpass.utils.errors import entry_point


def table_methods(table: str) -> List[str]:
    """"TRAINER CONFIG" (the YAML's stem under configs/trainers/TRAINER/) of each row of a table."""
    from clip_convpass.config import CONFIG_DIR, ConfigError
    from clip_convpass.registry import method_rows, table_names

    if table not in table_names():
        raise ConfigError(f"Unknown table {table!r}; tables: {table_names()}")
    out = []
    for row in method_rows(lambda r: table in r.tables):
        path = Path(row.config)
        if path.is_absolute() or path.parts[:1] != ("trainers",) or len(path.parts) != 3:
            raise ConfigError(f"Row {row.name!r}: its config {row.config} is not under {CONFIG_DIR / 'trainers'}")
        out.append(f"{path.parts[1]} {path.stem}")
    return out


def listed_datasets(trainable: bool = False, source: str = "", benchmark: str = "coop") -> List[str]:
    """Dataset config names (configs/datasets/<name>.yaml) of a benchmark family in table order, optionally
    filtered."""
    from clip_convpass.config import ConfigError, dataset_config_files
    from clip_convpass.registry import DATASET_REGISTRY, dataset_order, evaluation_domains

    files = dataset_config_files()
    names = [n for n in dataset_order(list(files)) if DATASET_REGISTRY.get(n).BENCHMARK == benchmark]
    if trainable:
        names = [n for n in names if DATASET_REGISTRY.get(n).HAS_TRAIN]
    if source:
        by_stem = {path.stem: name for name, path in files.items()}
        if source not in by_stem:
            raise ConfigError(f"Unknown dataset config {source!r}; configs: {sorted(by_stem)}")
        names = [n for n in evaluation_domains(by_stem[source])[1:] if n in files]
    return [files[n].stem for n in names]


@entry_point
def main(argv: Optional[List[str]] = None) -> int:
    """For the shell scripts: print a run directory, or the results file of a dataset in one."""
    from clip_convpass.config import resolve_config_path, setup_cfg

    p = argparse.ArgumentParser(description=main.__doc__)
    sub = p.add_subparsers(dest="what", required=True)
    cell = sub.add_parser("cell", help="the run directory of (trainer, config, dataset, shots, seed)")
    cell.add_argument("--output", required=True)
    cell.add_argument("--config", required=True, help="method YAML")
    cell.add_argument("--dataset-config", required=True, help="dataset YAML of the training dataset")
    cell.add_argument("--shots", type=int, required=True)
    cell.add_argument("--seed", type=int, required=True)
    cell.add_argument("--subsample", choices=["all", "base"], default="all", help="the classes trained over")
    res = sub.add_parser("results", help="a dataset's results.json in a run directory")
    res.add_argument("--run-dir", required=True)
    res.add_argument("--dataset-config", required=True)
    res.add_argument("--subsample", choices=["all", "base", "new"], default="all", help="the classes evaluated")
    rows = sub.add_parser("rows", help="'TRAINER CONFIG' of every registered row of a table, one per line")
    rows.add_argument("--table", required=True)
    datasets = sub.add_parser("datasets", help="dataset config names, one per line")
    datasets.add_argument("--trainable", action="store_true", help="only datasets with a training split")
    datasets.add_argument("--source", default="", help="only the evaluation sets of this training dataset (config name)")
    datasets.add_argument("--benchmark", default="coop",
                          help="the benchmark family: coop (CoOp's datasets and ImageNet's variants), vtab1k, ...")
    args = p.parse_args(argv)
    if args.what == "rows":
        for line in table_methods(args.table):
            print(line)
        return 0
    if args.what == "datasets":
        for name in listed_datasets(args.trainable, args.source, args.benchmark):
            print(name)
        return 0
    cfg = setup_cfg(args.dataset_config, getattr(args, "config", None))
    if args.what == "cell":
        stem = resolve_config_path(args.config).stem
        print(cell_dir(args.output, cfg.DATASET.NAME, cfg.TRAINER.NAME, stem, args.shots, args.seed, args.subsample).root)
    else:
        print(RunDir(args.run_dir).results(cfg.DATASET.NAME, subsample=args.subsample))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
