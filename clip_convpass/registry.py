"""One `Registry` class for every kind of plugin: trainers (methods), datasets, adapters, report views.

A plugin registers itself with a decorator; its name is the class's ``NAME`` (one place). Each registry
declares the packages its plugins live in (``locations``, mmengine's term): the first time it is asked
anything it imports every module of those packages, and every module named by an installed package's
``clip_convpass.plugins`` entry point. Nothing keeps a hand-written list of plugin modules, and every
list the library shows (``--help``, grids, reports, tests) is read from here.

A method's rows (its labelled configurations: table membership, paper numbers, sweeps, demo settings)
are experiment data, not code: they live in a metafile beside its configs,
``configs/trainers/<NAME>/metafile.yaml`` (mmpretrain's habit), read by `method_rows`.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import yaml

from clip_convpass.utils.errors import UserError
from clip_convpass.utils.io import load_yaml
from clip_convpass.utils.paths import CONFIG_DIR

ENTRY_POINT_GROUP = "clip_convpass.plugins"


class UnknownNameError(UserError, KeyError):
    """A name that no plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class MetafileError(UserError, ValueError):
    """A method's metafile is missing a field, has an unknown one, or is not YAML."""


_imported_locations: set = set()
_entry_points_loaded = False


def import_location(package: str) -> None:
    """Import a package and every module in it (once per process): its plugins register themselves."""
    if package in _imported_locations:
        return
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__, prefix=f"{package}."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)
    _imported_locations.add(package)  # only once every module imported: a failure is retried, not half-loaded


def load_entry_point_plugins() -> None:
    """Modules that installed packages declare under the ``clip_convpass.plugins`` entry-point group."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        importlib.import_module(ep.module)  # "pkg.mod" or "pkg.mod:attr": importing the module registers


class Registry:
    def __init__(self, kind: str, locations: Sequence[str] = ()):
        self.kind = kind
        self.locations = tuple(locations)
        self._items: Dict[str, type] = {}

    def _load(self) -> None:
        for package in self.locations:
            import_location(package)
        load_entry_point_plugins()

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
        self._load()
        if name not in self._items:
            raise UnknownNameError(f"Unknown {self.kind} {name!r}; registered: {sorted(self._items)}")
        return self._items[name]

    def names(self) -> List[str]:
        self._load()
        return sorted(self._items)

    def classes(self) -> List[type]:
        return [self._items[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items


TRAINER_REGISTRY = Registry("trainer", locations=("clip_convpass.trainers",))
DATASET_REGISTRY = Registry("dataset", locations=("clip_convpass.datasets",))
ADAPTER_REGISTRY = Registry("adapter", locations=("clip_convpass.adapters",))
REPORT_VIEW_REGISTRY = Registry("report view", locations=("clip_convpass.reporting",))
# each dataset's tree of generated images in its real layout (tests, the demo), registered beside the dataset
SYNTHETIC_TREE_REGISTRY = Registry("synthetic tree", locations=("clip_convpass.datasets",))


@dataclass(frozen=True)
class Row:
    """A labelled configuration of a method: one row of the tables, one cell per seed in a grid.

    Declared in the method's metafile; the grid, the demo, the report and the benchmark read them here.
    """

    name: str  # cfg.NAME: the key results are grouped by
    config: str = ""  # method YAML, relative to the package's configs/ or absolute; "" = defaults only
    label: str = ""  # shown in tables (default: name)
    opts: Tuple[str, ...] = ()  # KEY VALUE pairs applied after the YAML
    paper: Optional[Dict[str, float]] = None  # the paper's Table 2 numbers, by dataset name
    # published numbers of the other tables, by view: {"base2new": {dataset: [base, new]}, "cross_dataset":
    # {dataset: accuracy}} (each metafile cites the table they come from)
    paper_tables: Optional[Dict[str, Dict[str, object]]] = None
    tables: Tuple[str, ...] = ("table2",)  # grids/tables it belongs to ("table2", "petl"); the demo runs every row
    demo_opts: Tuple[str, ...] = ()  # demo-scale settings (tiny model, synthetic data)
    order: float = 100.0  # position in tables and grids
    tag: str = ""  # run-folder name (default: the config file's stem)
    sweep: Tuple[str, ...] = ()  # "KEY=v1,v2,..." chosen on the validation shots before the grid runs the row
    paper_params: Optional[float] = None  # the paper's trainable-parameter budget (millions), where it gives one
    family: str = ""  # figures give a family one hue (reporting/style.py): zero-shot, probe, prompt, cache, convpass...
    # the benchmark family its configuration is made for (the datasets' BENCHMARK): "coop" = CLIP's protocols;
    # "vtab1k" / "fgvc_fewshot" = the supervised-backbone benchmarks (timm models, labels-only datasets)
    benchmark: str = "coop"
    trainer: str = ""  # the method whose metafile declares it

    @property
    def display(self) -> str:
        return self.label or self.name


ROW_FIELDS = {f.name for f in fields(Row)} - {"trainer"}


def metafile_path(trainer: type) -> Path:
    """A method's metafile: its ``METAFILE`` if it sets one (a plugin outside the package), else
    configs/trainers/<NAME>/metafile.yaml."""
    return Path(getattr(trainer, "METAFILE", "") or CONFIG_DIR / "trainers" / trainer.NAME / "metafile.yaml")


def read_metafile(path: Path, trainer: str) -> List[Row]:
    """The rows a metafile declares (``rows:`` a list of Row fields); one-line errors for anything else."""
    return list(_read_metafile(str(path), trainer, path.stat().st_mtime_ns))


@lru_cache(maxsize=None)  # the grid and report ask for rows often; an edited file has a new mtime
def _read_metafile(path_str: str, trainer: str, mtime_ns: int) -> Tuple[Row, ...]:
    path = Path(path_str)
    try:
        data = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise MetafileError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from e
    entries = data.get("rows", []) if isinstance(data, dict) else None
    if not isinstance(entries, list) or set(data) - {"rows"}:
        raise MetafileError(f"{path} must hold one key, rows: a list of rows with the fields {sorted(ROW_FIELDS)}")
    rows = []
    for entry in entries:
        if not isinstance(entry, dict) or "name" not in entry or set(entry) - ROW_FIELDS:
            raise MetafileError(f"{path}: a row must be a mapping with a name and only the fields {sorted(ROW_FIELDS)}, "
                                f"got {entry!r}")
        as_tuples = {k: tuple(str(x) for x in v) if isinstance(v, list) else v for k, v in entry.items()}
        rows.append(Row(**as_tuples, trainer=trainer))
    return tuple(rows)


def method_rows(select: Optional[Callable[[Row], bool]] = None) -> List[Row]:
    """Every registered method's rows, in table order (then by name), optionally filtered."""
    rows: List[Row] = []
    for cls in TRAINER_REGISTRY.classes():
        path = metafile_path(cls)
        if path.is_file():
            rows += read_metafile(path, cls.NAME)
    rows.sort(key=lambda r: (r.order, r.name))
    names = [r.name for r in rows]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise MetafileError(f"Row names must be unique across methods; repeated: {dupes}")
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


def trainable_datasets(benchmark: str = "coop") -> List[str]:
    """Every registered dataset of a benchmark family with a training split of its own (CoOp's family: few-shot
    curves, base-to-new; the cross-dataset targets are these but the source), in registry order."""
    return [c.NAME for c in DATASET_REGISTRY.classes() if c.HAS_TRAIN and c.BENCHMARK == benchmark]


def benchmark_datasets(benchmark: str) -> List[str]:
    """Every registered dataset of a benchmark family, in table order."""
    return dataset_order([c.NAME for c in DATASET_REGISTRY.classes() if c.BENCHMARK == benchmark])


def evaluation_domains(source: str) -> List[str]:
    """The training dataset followed by every dataset that declares it evaluates models trained on it."""
    targets = [c.NAME for c in DATASET_REGISTRY.classes() if getattr(c, "SOURCE", "") == source]
    return [source] + dataset_order(targets)
