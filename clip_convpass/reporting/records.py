"""Results records: reading results.json files and averaging runs of one experiment over seeds."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from clip_convpass.reporting.format import Cell, base_name, row_label


def collect(roots: Iterable[str | Path]) -> List[dict]:
    records = []
    for root in roots:
        for path in sorted(Path(root).rglob("results.json")):
            with open(path) as f:
                rec = json.load(f)
            if "dataset" in rec and "metrics" in rec:
                rec["_path"] = str(path)
                records.append(rec)
    return records


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))  # sample std (ddof=1)


# What makes two results the same experiment (besides the seed): a row never averages over these.
EXPERIMENT_FIELDS = ("train_dataset", "shots", "backbone", "pretrained", "experiment")


def experiment_of(rec: dict) -> Tuple:
    return tuple(rec.get(f) for f in EXPERIMENT_FIELDS)


def aggregate(records: List[dict], metric: str = "top1", split: str = "test",
              notes: Optional[List[str]] = None, params: Optional[Dict[str, int]] = None) -> Dict[str, Dict[str, Cell]]:
    """{row: {domain: (mean, std, n_seeds) or None}}; of two records for one seed, the newer counts.

    Only runs of one experiment are averaged: same row name, training dataset, shots, backbone, weights
    and seed-independent configuration. A name holding several gets one row per experiment, labelled
    by what differs ("CoOp [shots=8]"), and a line in `notes` says so. `params` receives each row's
    trainable parameter count in the image encoder.
    """
    by_seed: Dict[Tuple[str, Tuple, str], Dict[int, float]] = defaultdict(dict)
    for r in sorted(records, key=lambda r: r.get("timestamp", "")):
        if r.get("split", "test") != split:
            continue
        dataset = r["dataset"] if r.get("stage", "final") == "final" else f"{r['dataset']}@{r['stage']}"
        by_seed[(r.get("name") or r["trainer"], experiment_of(r), dataset)][r["seed"]] = r["metrics"][metric]
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
            key = (r.get("name") or r["trainer"], experiment_of(r))
            if key in labels and "trainable_params" in r:
                params[labels[key]] = r["trainable_params"]["image_encoder"]
    rows: Dict[str, Dict[str, Cell]] = defaultdict(dict)
    for (name, exp, dataset), seeds in by_seed.items():
        m, s = mean_std(list(seeds.values()))
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
