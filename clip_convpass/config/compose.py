"""A run's configuration: engine defaults + every registered method's own node, then files and opts.

    defaults (engine keys + TRAINER.<NODE> of each method) -> dataset YAML -> method YAML
    -> override YAMLs (in order) -> KEY VALUE opts -> validation (engine, then each method's node)

The registry imports the plugins (by their declared locations) the first time it is asked, so
the validators that exist are every registered method's, with no import of a plugin here.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Dict, Iterable, Sequence

from yacs.config import CfgNode as CN

from clip_convpass.config.defaults import (
    CONFIG_DIR,
    ConfigError,
    apply_epochs_by_shots,
    check,
    engine_defaults,
    expand_user_paths,
    merge_config_file,
    merge_opts,
    merge_per_dataset_configs,
    validate_engine_cfg,
)
from clip_convpass.registry import DATASET_REGISTRY, TRAINER_REGISTRY


def method_config_nodes() -> Dict[str, type]:
    """{node name: the trainer class that owns TRAINER.<node>} (a subclass may share its parent's node)."""
    owners: Dict[str, type] = {}
    for cls in TRAINER_REGISTRY.classes():
        if "config_node" in cls.__dict__:
            node = cls.CONFIG_NODE
            if not node:
                raise ConfigError(f"{cls.__name__} defines config_node() but no CONFIG_NODE name")
            if node in owners:
                raise ConfigError(f"TRAINER.{node} is defined by both {owners[node].__name__} and {cls.__name__}")
            owners[node] = cls
    return owners


def get_cfg_default() -> CN:
    cfg = engine_defaults()
    for node, owner in method_config_nodes().items():
        if node in cfg.TRAINER:
            raise ConfigError(f"{owner.__name__}: TRAINER.{node} clashes with an engine key")
        cfg.TRAINER[node] = owner.config_node()
    return cfg


def validate_cfg(cfg: CN) -> None:
    """Resolve derived keys (per-shot epochs) and reject invalid values, before any work."""
    if not cfg.is_frozen():
        apply_epochs_by_shots(cfg)
    validate_engine_cfg(cfg)
    check(cfg.TRAINER.NAME in TRAINER_REGISTRY,
          f"Unknown TRAINER.NAME {cfg.TRAINER.NAME!r}; registered: {TRAINER_REGISTRY.names()}")
    check(cfg.DATASET.NAME in DATASET_REGISTRY,
          f"Unknown DATASET.NAME {cfg.DATASET.NAME!r}; registered: {DATASET_REGISTRY.names()}")
    dataset = DATASET_REGISTRY.get(cfg.DATASET.NAME)
    check(dataset.SHOT_SOURCE == "sampled" or cfg.DATASET.SUBSAMPLE == "all",
          f"DATASET.SUBSAMPLE {cfg.DATASET.SUBSAMPLE}: base-to-new halves are defined on sampled shots only, and "
          f"{dataset.NAME}'s training images are a published list")
    dataset.check_config(cfg)
    # every method checks its own node, whichever trainer runs: a bad value fails wherever it is set
    for cls in TRAINER_REGISTRY.classes():
        if "check_config" in cls.__dict__:
            cls.check_config(cfg)


def setup_cfg(
    dataset_config_file: str | os.PathLike | None = None,
    config_file: str | os.PathLike | None = None,
    opts: Iterable[str] = (),
    freeze: bool = True,
    override_files: Sequence[str | os.PathLike] = (),
) -> CN:
    """Build and validate a config: defaults -> dataset file -> method file -> the method's per-dataset files
    (PER_DATASET_DIRS) -> override files -> opts."""
    cfg = get_cfg_default()
    for path in (dataset_config_file, config_file):
        if path:
            merge_config_file(cfg, path)
    merge_per_dataset_configs(cfg)  # the method's settings for this dataset, before overrides and opts
    method_dirs = list(cfg.PER_DATASET_DIRS)
    for path in override_files:
        merge_config_file(cfg, path)
    opts = list(opts)
    if list(cfg.PER_DATASET_DIRS) != method_dirs or "PER_DATASET_DIRS" in opts[0::2]:
        raise ConfigError("PER_DATASET_DIRS belongs to a method's YAML (its per-dataset settings are merged right after "
                          "it); set the values themselves in an override file or as KEY VALUE pairs instead")
    opts = list(opts)
    merge_opts(cfg, opts)
    keys = opts[0::2]
    if "OPTIM.MAX_EPOCH" in keys and cfg.OPTIM.MAX_EPOCH_BY_SHOTS and "OPTIM.MAX_EPOCH_BY_SHOTS" not in keys:
        raise ConfigError(f"OPTIM.MAX_EPOCH is set by this config's per-shot schedule OPTIM.MAX_EPOCH_BY_SHOTS="
                          f"{cfg.OPTIM.MAX_EPOCH_BY_SHOTS!r}; to fix the epochs, also pass OPTIM.MAX_EPOCH_BY_SHOTS \"\"")
    expand_user_paths(cfg)
    validate_cfg(cfg)
    if freeze:
        cfg.freeze()
    return cfg


def dataset_config_files() -> Dict[str, Path]:
    """{dataset registry name: its packaged YAML} read from configs/datasets/ (files starting with "_" are
    shared bases). The YAMLs are the one place that pairs a config name with a dataset."""
    return dict(_dataset_config_files())


@functools.lru_cache(maxsize=1)
def _dataset_config_files() -> Dict[str, Path]:  # the packaged YAMLs do not change while a process runs
    out: Dict[str, Path] = {}
    for path in sorted((CONFIG_DIR / "datasets").glob("*.yaml")):
        if path.name.startswith("_"):
            continue
        cfg = get_cfg_default()
        merge_config_file(cfg, path)
        out.setdefault(cfg.DATASET.NAME, path)
    return out


def dataset_config_file(name: str) -> Path:
    files = dataset_config_files()
    if name not in files:
        raise ConfigError(f"No dataset YAML in {CONFIG_DIR / 'datasets'} names DATASET.NAME {name!r}; "
                          f"configured: {sorted(files)}")
    return files[name]
