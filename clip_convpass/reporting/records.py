"""Results records: reading results.json files and averaging runs of one experiment over seeds."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from clip_convpass.reporting.format import Cell, base_name, row_label
from clip_convpass.utils.errors import UserError


class ResultsFileError(UserError, ValueError):
    """A results.json that is not what this project writes."""


def check_record(rec, path) -> dict:
    """A results.json as this project writes it (the fields reports use, typed, finite, in range), or a
    one-line error naming the file."""
    def bad(what: str):
        raise ResultsFileError(f"{path}: {what}; not a results.json this project wrote (fix or remove the file)")

    if not isinstance(rec, dict):
        bad(f"expected a JSON object, got {type(rec).__name__}")
    for key in ("dataset", "trainer"):
        if not isinstance(rec.get(key), str) or not rec.get(key):
            bad(f"{key!r} must be a non-empty string, got {rec.get(key)!r}")
    if not isinstance(rec.get("metrics"), dict) or not rec["metrics"]:
        bad(f"'metrics' must be an object of numbers, got {rec.get('metrics')!r}")
    na = rec.get("not_applicable")
    if na is not None and not (isinstance(na, str) and na):
        bad(f"'not_applicable' must be the reason, a non-empty string, got {na!r}")
    for name, value in rec["metrics"].items():
        if isinstance(value, dict) and name == "per_class_acc":
            continue
        if value is None and na:  # n/a: the method has no result here, and says why
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0 <= value <= 100:
            bad(f"metric {name!r} must be a finite percentage in [0, 100], got {value!r}")
    for key in ("seed", "shots"):
        if key in rec and (isinstance(rec[key], bool) or not isinstance(rec[key], int)) \
                and not (key == "shots" and rec[key] is None and rec.get("train_list")):  # one published list
            bad(f"{key!r} must be an integer, got {rec[key]!r}")
    if "seed" not in rec:
        bad("'seed' is missing")
    params = rec.get("trainable_params")
    if params is not None and not (isinstance(params, dict) and isinstance(params.get("image_encoder"), int)):
        bad(f"'trainable_params' must be an object with an integer 'image_encoder', got {params!r}")
    selected = rec.get("selected")
    if selected is not None and not (isinstance(selected, dict) and all(isinstance(k, str) for k in selected)):
        bad(f"'selected' must be an object of KEY: value, got {selected!r}")
    for key in ("transfer", "class_bound_rebuilt"):
        if key in rec and not isinstance(rec[key], bool):
            bad(f"{key!r} must be true or false, got {rec[key]!r}")
    if "train_classes" in rec and not (isinstance(rec["train_classes"], dict) and "dataset" in rec["train_classes"]):
        bad(f"'train_classes' must be an object with a 'dataset', got {rec['train_classes']!r}")
    if rec.get("subsample", "all") not in ("all", "base", "new"):
        bad(f"'subsample' must be all, base or new, got {rec.get('subsample')!r}")
    for key in ("name", "split", "stage", "train_dataset", "experiment"):
        if key in rec and rec[key] is not None and not isinstance(rec[key], str):
            bad(f"{key!r} must be a string, got {rec[key]!r}")
    return rec


def collect(roots: Iterable[str | Path]) -> List[dict]:
    """Every results.json under the roots, each checked (check_record); other JSON files are not read."""
    records = []
    for root in roots:
        if not Path(root).exists():
            raise ResultsFileError(f"{root}: no such folder")
        for path in sorted(Path(root).rglob("results.json")):
            try:
                rec = json.loads(path.read_text(), parse_constant=lambda c: math.nan)
            except (ValueError, UnicodeDecodeError) as e:
                raise ResultsFileError(f"{path}: not valid JSON ({e})") from e
            rec = check_record(rec, path)
            rec["_path"] = str(path)
            if "train_classes" not in rec:  # written before results recorded their classes
                infer_classes(rec, path)
            records.append(rec)
    return records


def infer_classes(rec: dict, path: Path) -> None:
    """An older results.json: its run's config.yaml (eval/<dataset>/results.json is two folders below it) says
    which classes the run was trained over, so a base-class run never passes for a plain one."""
    from clip_convpass.config import flat_items

    config = path.parents[2] / "config.yaml"
    if not config.is_file():
        return
    subsample = flat_items(config.read_text()).get("DATASET.SUBSAMPLE", "all")
    if subsample != "all":
        rec["train_classes"] = {"dataset": rec.get("train_dataset", rec["dataset"]), "subsample": subsample}
        rec.setdefault("subsample", subsample)


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))  # sample std (ddof=1)


# What makes two results the same experiment (besides the seed): a row never averages over these.
EXPERIMENT_FIELDS = ("train_dataset", "train_subsample", "shots", "backbone", "pretrained", "experiment")


def train_subsample(rec: dict) -> str:
    """The classes a result's weights were trained over: all, or the base / new half (base-to-new)."""
    return (rec.get("train_classes") or {}).get("subsample", "all")


def experiment_of(rec: dict) -> Tuple:
    return tuple(train_subsample(rec) if f == "train_subsample" else rec.get(f) for f in EXPERIMENT_FIELDS)


def same_protocol(rec: dict) -> bool:
    """A result of the plain protocol: trained over all of its dataset's classes and scored over the same classes
    (Table 2, few-shot curves). Base-to-new and cross-dataset results are the generalization views' alone."""
    return train_subsample(rec) == "all" and rec.get("subsample", "all") == "all" and not rec.get("transfer", False)


def default_column(rec: dict) -> str:
    """A result's column: its dataset, and the stage for evaluations before training ("ImageNet@step0")."""
    return rec["dataset"] if rec.get("stage", "final") == "final" else f"{rec['dataset']}@{rec['stage']}"


def aggregate(records: List[dict], metric: str = "top1", split: str = "test",
              notes: Optional[List[str]] = None, params: Optional[Dict[str, int]] = None,
              select: Callable[[dict], bool] = same_protocol,
              column: Callable[[dict], str] = default_column) -> Dict[str, Dict[str, Cell]]:
    """{row: {column: (mean, std, n_seeds)}}; of two records for one seed, the newer counts. A column where the
    method is not applicable (a results.json with not_applicable) is (None, None, n_seeds): shown as n/a, never as
    a number. `select` chooses the records (default: the plain protocol), `column` names their column.

    Only runs of one experiment are averaged: same row name, training dataset, shots, backbone, weights
    and seed-independent configuration. A name holding several gets one row per experiment, labelled
    by what differs ("CoOp [shots=8]"), and a line in `notes` says so. `params` receives each row's
    trainable parameter count in the image encoder.
    """
    by_seed: Dict[Tuple[str, Tuple, str], Dict[int, float]] = defaultdict(dict)
    for r in sorted(records, key=lambda r: r.get("timestamp", "")):
        if r.get("split", "test") != split or not select(r):
            continue
        if metric not in r["metrics"]:
            raise ResultsFileError(f"{r.get('_path', 'a results.json')} has no {metric!r} metric (it has "
                                   f"{sorted(r['metrics'])})")
        by_seed[(r.get("name") or r["trainer"], experiment_of(r), column(r))][r["seed"]] = r["metrics"][metric]
    experiments: Dict[str, List[Tuple]] = defaultdict(list)
    for name, exp, _ in by_seed:
        if exp not in experiments[name]:
            experiments[name].append(exp)
    labels = {}
    for name, exps in experiments.items():
        shown = _distinguishing_fields(exps)
        for exp in exps:
            labels[(name, exp)] = name if len(exps) == 1 else f"{name} [{_describe(exp, shown)}]"
        if len(exps) > 1 and notes is not None:
            notes.append(f"{name}: {len(exps)} different experiments under one name are shown as separate rows, "
                         f"never averaged: {', '.join(labels[(name, e)] for e in exps)}")
    if notes is not None:
        notes += selection_notes(records, labels)
    if params is not None:
        for r in records:
            if not select(r):
                continue
            key = (r.get("name") or r["trainer"], experiment_of(r))
            if key in labels and "trainable_params" in r:
                params[labels[key]] = r["trainable_params"]["image_encoder"]
    rows: Dict[str, Dict[str, Cell]] = defaultdict(dict)
    for (name, exp, dataset), seeds in by_seed.items():
        values = list(seeds.values())
        m, s = (None, None) if None in values else mean_std(values)
        rows[labels[(name, exp)]][dataset] = (m, s, len(seeds))
    return rows


def selection_notes(records: List[dict], labels: Dict[Tuple, str]) -> List[str]:
    """A footnote per row whose settings were chosen on the validation shots by a sweep: what it searched (the
    row's declared sweep) and what was chosen."""
    from clip_convpass.registry import rows_by_name

    chosen: Dict[str, set] = defaultdict(set)
    for r in records:
        key = (r.get("name") or r["trainer"], experiment_of(r))
        if r.get("selected") and key in labels:
            chosen[labels[key]].add(", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["selected"].items()))
    registered = rows_by_name()
    notes = []
    for row, values in sorted(chosen.items()):
        declared = registered.get(base_name(row))
        searched = "; ".join(f"{k.split('.')[-1]} in {{{v.replace(',', ', ')}}}" for k, v in
                             (e.split("=", 1) for e in declared.sweep)) if declared and declared.sweep else ""
        notes.append(f"{row_label(row)}: {' / '.join(sorted(values))} chosen on the validation shots"
                     + (f" (searched: {searched})" if searched else ""))
    return notes


def _distinguishing_fields(exps: List[Tuple]) -> List[int]:
    """The readable fields that vary between experiments, plus the configuration hash when those alone
    would give two of them the same label."""
    varying = [i for i, f in enumerate(EXPERIMENT_FIELDS) if len({e[i] for e in exps}) > 1]
    readable = [i for i in varying if EXPERIMENT_FIELDS[i] != "experiment"]
    if len({tuple(e[i] for i in readable) for e in exps}) == len(exps):
        return readable
    return varying


def _describe(exp: Tuple, fields: List[int]) -> str:
    return ", ".join(f"config {exp[i]}" if EXPERIMENT_FIELDS[i] == "experiment" else f"{EXPERIMENT_FIELDS[i]}={exp[i]}"
                     for i in fields)
