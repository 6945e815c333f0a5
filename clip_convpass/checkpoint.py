"""Checkpoints: only trainable tensors + optimizer/scheduler state, written atomically, loaded weights-only."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

import torch

from .utils import atomic_torch_save

logger = logging.getLogger("clip_convpass")
_PATTERN = re.compile(r"^model-epoch(\d+)\.pt$")


class CheckpointMismatchError(ValueError):
    """A checkpoint was made for another trainer, backbone, class count or module shape."""


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_path(output_dir: str | Path, epoch: int) -> Path:
    return checkpoint_dir(output_dir) / f"model-epoch{epoch}.pt"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    d = checkpoint_dir(output_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _PATTERN.match(p.name))]
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Optional[Path]:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def save_checkpoint(output_dir: str | Path, epoch: int, state: dict, keep: int = 1) -> Path:
    path = checkpoint_path(output_dir, epoch)
    atomic_torch_save(path, state)
    for _, old in list_checkpoints(output_dir)[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"Cannot load checkpoint {path} ({type(e).__name__}: {e})") from e


def check_compatible(saved_meta: dict, current_meta: dict, path: str | Path) -> None:
    for key in ("trainer", "backbone", "num_classes"):
        if saved_meta.get(key) != current_meta.get(key):
            raise CheckpointMismatchError(
                f"{path} was saved for {key}={saved_meta.get(key)!r}, but this run has {key}={current_meta.get(key)!r}"
            )
    saved, cur = saved_meta.get("shapes", {}), current_meta.get("shapes", {})
    if set(saved) != set(cur):
        extra, missing = sorted(set(saved) - set(cur)), sorted(set(cur) - set(saved))
        raise CheckpointMismatchError(
            f"{path} holds other trainable tensors than this model: unexpected {extra[:5]}, missing {missing[:5]} "
            f"(was it saved with another method variant?)"
        )
    bad = [(k, saved[k], cur[k]) for k in cur if list(saved[k]) != list(cur[k])]
    if bad:
        k, s, c = bad[0]
        raise CheckpointMismatchError(
            f"{path}: tensor {k} has shape {s} in the checkpoint but {c} in this model "
            f"({len(bad)} mismatching; another backbone or hidden size?)"
        )
