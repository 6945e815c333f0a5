"""Name -> class registries for methods (trainers) and datasets, timm / Dassl style.

A plugin registers itself with a decorator; the name comes from the class's ``NAME`` (one place).
The built-in plugins live in ``clip_convpass.trainers`` and ``clip_convpass.datasets`` and are imported
the first time a registry is asked anything, so every list of methods, rows or datasets the library
shows is read from here.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Tuple

from .errors import UserError

BUILTIN_PLUGIN_PACKAGES = ("clip_convpass.datasets", "clip_convpass.trainers")
_loaded = False


def load_builtin_plugins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for pkg in BUILTIN_PLUGIN_PACKAGES:
            importlib.import_module(pkg)


class UnknownNameError(UserError, KeyError):
    """A name that no plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, type] = {}

    def register(self, obj: type) -> type:
        """Class decorator: registers ``obj`` under ``obj.NAME``."""
        key = getattr(obj, "NAME", "")
        if not key:
            raise ValueError(f"{obj.__qualname__} must set NAME to be registered as a {self.kind}")
        if key in self._items and self._items[key] is not obj:
            raise KeyError(f"{self.kind} {key!r} is already registered by {self._items[key]!r}")
        self._items[key] = obj
        return obj

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str) -> type:
        load_builtin_plugins()
        if name not in self._items:
            raise UnknownNameError(f"Unknown {self.kind} {name!r}; registered: {sorted(self._items)}")
        return self._items[name]

    def names(self) -> List[str]:
        load_builtin_plugins()
        return sorted(self._items)

    def classes(self) -> List[type]:
        return [self._items[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        load_builtin_plugins()
        return name in self._items


TRAINER_REGISTRY = Registry("trainer")
DATASET_REGISTRY = Registry("dataset")


@dataclass(frozen=True)
class Row:
    """A labelled configuration of a method: one row of the tables, one cell per seed in a grid.

    A method declares its rows (``ROWS`` on its trainer class); the grid, the demo, the report and the
    benchmark read them from the registry.
    """

    name: str  # cfg.NAME: the key results are grouped by
    config: str = ""  # method YAML, relative to the package's configs/ or absolute; "" = defaults only
    label: str = ""  # shown in tables (default: name)
    opts: Tuple[str, ...] = ()  # KEY VALUE pairs applied after the YAML
    paper: Optional[Dict[str, float]] = None  # the paper's Table 2 numbers, by dataset name
    tables: Tuple[str, ...] = ("table2",)  # grids/tables it belongs to ("table2", "petl"); the demo runs every row
    demo_opts: Tuple[str, ...] = ()  # demo-scale settings (tiny model, synthetic data)
    order: float = 100.0  # position in tables and grids
    tag: str = ""  # run-folder name (default: the config file's stem)
    sweep: Tuple[str, ...] = ()  # "KEY=v1,v2,..." chosen on the validation shots before the grid runs the row
    trainer: str = ""  # filled in from the declaring class

    @property
    def display(self) -> str:
        return self.label or self.name


def method_rows(select: Optional[Callable[[Row], bool]] = None) -> List[Row]:
    """Every registered method's rows, in table order (then by name), optionally filtered."""
    rows: List[Row] = []
    for cls in TRAINER_REGISTRY.classes():
        for row in cls.__dict__.get("ROWS", ()):
            rows.append(row if row.trainer else replace(row, trainer=cls.NAME))
    rows.sort(key=lambda r: (r.order, r.name))
    names = [r.name for r in rows]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise KeyError(f"Row names must be unique across methods; repeated: {dupes}")
    return [r for r in rows if select is None or select(r)]


def table_names() -> List[str]:
    """Every table some registered row belongs to ("petl", "table2", ...)."""
    return sorted({t for r in method_rows() for t in r.tables})


def find_row(name: str) -> Optional[Row]:
    return next((r for r in method_rows() if r.name == name), None)


def rows_by_name() -> Dict[str, Row]:
    return {r.name: r for r in method_rows()}


def dataset_order(names: List[str]) -> List[str]:
    """Dataset names in their declared table order."""
    return sorted(names, key=lambda n: (DATASET_REGISTRY.get(n).ORDER, n))


def evaluation_domains(source: str) -> List[str]:
    """The training dataset followed by every dataset that declares it evaluates models trained on it."""
    targets = [c.NAME for c in DATASET_REGISTRY.classes() if getattr(c, "SOURCE", "") == source]
    return [source] + dataset_order(targets)

