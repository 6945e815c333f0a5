"""Name -> class registries for trainers and datasets (timm / Dassl style)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Callable, Dict, Optional


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, type] = {}

    def register(self, name: Optional[str] = None) -> Callable[[type], type]:
        def deco(obj: type) -> type:
            key = name or obj.__name__
            if key in self._items and self._items[key] is not obj:
                raise KeyError(f"{self.kind} {key!r} is already registered by {self._items[key]!r}")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> type:
        load_builtin_plugins()
        if name not in self._items:
            raise KeyError(f"Unknown {self.kind} {name!r}; registered: {sorted(self._items)}")
        return self._items[name]

    def names(self) -> list[str]:
        load_builtin_plugins()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        load_builtin_plugins()
        return name in self._items


TRAINER_REGISTRY = Registry("trainer")
DATASET_REGISTRY = Registry("dataset")

REPO_ROOT = Path(__file__).resolve().parents[1]
_loaded = False


def load_builtin_plugins() -> None:
    """Import the repository's ``datasets/`` and ``trainers/`` folders, which register themselves.

    They are not installed as top-level packages (``datasets`` would shadow Hugging Face's), so they
    are imported from the checkout this library lives in.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    for pkg in ("datasets", "trainers"):
        if not (REPO_ROOT / pkg / "__init__.py").is_file():
            raise ImportError(
                f"Cannot find {REPO_ROOT / pkg}; clip_convpass must be used from a checkout of the "
                f"repository (pip install -e .), which holds the datasets/ and trainers/ folders."
            )
    if sys.path[:1] != [str(REPO_ROOT)]:
        sys.path.insert(0, str(REPO_ROOT))
    for pkg in ("datasets", "trainers"):
        loaded = sys.modules.get(pkg)
        if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve().parent != REPO_ROOT / pkg:
            raise ImportError(
                f"A different package named {pkg!r} ({loaded.__file__}) was imported before clip_convpass "
                f"could load {REPO_ROOT / pkg}. Import clip_convpass first, or avoid importing it."
            )
        importlib.import_module(pkg)
