"""The few-shot view of results.json files: accuracy against shots per training dataset and their average
(the layout of the Convpass paper's Figure 5 and CoOp's Figure 3), as a table (mean ± std over seeds) and a
PNG with one line per method.

    python -m clip_convpass.report OUTPUT_ROOT --fewshot [--format markdown] [--plot curves.png]
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from clip_convpass.engine.evaluation import METRIC_LABELS
from clip_convpass.registry import REPORT_VIEW_REGISTRY, dataset_order
from clip_convpass.reporting.base import ReportView, selected

AVERAGE = "Average"
Cell = Tuple[float, float, int]  # mean, std, number of seeds
Curves = Dict[str, Dict[str, Dict[int, Cell]]]  # {method label: {dataset: {shots: cell}}}


def fewshot_curves(records: List[dict], metric: str = "top1", notes: List[str] | None = None) -> Curves:
    """Each method's accuracy on its training dataset's test split per shot count, mean ± std over seeds.

    A curve is a row name on one backbone and weights; two configurations under one name at the same
    (dataset, shots) are never averaged: each becomes its own curve, labelled by its config hash.
    """
    from clip_convpass.reporting.format import row_label
    from clip_convpass.reporting.records import mean_std, same_protocol

    by_seed: Dict[Tuple, Dict[int, float]] = defaultdict(dict)
    for r in sorted(records, key=lambda r: r.get("timestamp", "")):
        if r.get("split", "test") != "test" or r.get("stage", "final") != "final" or not same_protocol(r):
            continue
        if r["dataset"] != r.get("train_dataset", r["dataset"]) or r.get("shots") is None:
            continue  # domain-shift evaluations belong to Table 2, one-list datasets (VTAB-1K) to their own view
        name = r.get("name") or r["trainer"]
        model = (r.get("backbone"), r.get("pretrained"))
        by_seed[(name, model, r["dataset"], r["shots"], r.get("experiment"))][r["seed"]] = r["metrics"][metric]
    models = defaultdict(set)
    configs = defaultdict(set)
    for name, model, dataset, shots, exp in by_seed:
        models[name].add(model)
        configs[(name, model, dataset, shots)].add(exp)
    curves: Curves = defaultdict(lambda: defaultdict(dict))
    for (name, model, dataset, shots, exp), seeds in by_seed.items():
        label = name  # shown through row_label (the registered row's display name)
        if len(models[name]) > 1:
            label += f" [{model[0]}, {model[1]}]"
        if len(configs[(name, model, dataset, shots)]) > 1:
            label += f" [config {exp}]"
            if notes is not None:
                note = (f"{row_label(name)}: several configurations at {dataset} {shots} shots are shown as separate "
                        f"curves, never averaged")
                if note not in notes:
                    notes.append(note)
        m, s = mean_std(list(seeds.values()))
        curves[label][dataset][shots] = (m, s, len(seeds))
    from clip_convpass.registry import DATASET_REGISTRY

    families: Dict[str, List[str]] = defaultdict(list)  # an average never mixes benchmark families
    for d in sorted({d for c in curves.values() for d in c}):
        families[DATASET_REGISTRY.get(d).BENCHMARK].append(d)
    for per_dataset in curves.values():
        shots_all = sorted({k for d in per_dataset.values() for k in d})
        for family, datasets in families.items():
            key = AVERAGE if len(families) == 1 else f"{AVERAGE} ({family})"
            for k in shots_all:
                cells = [per_dataset.get(d, {}).get(k) for d in datasets]
                if all(cells) and len(datasets) > 1:
                    means = [c[0] for c in cells]
                    per_dataset[key][k] = (sum(means) / len(means), 0.0, min(c[2] for c in cells))
    return {k: dict(v) for k, v in curves.items()}


def is_average(column: str) -> bool:
    return column.startswith(AVERAGE)


def curve_rows(curves: Curves) -> Tuple[List[str], List[int], List[Tuple[str, str, Dict[int, Cell]]]]:
    """Datasets (table order, Average last), shot counts, and (method, dataset, cells) rows."""
    from clip_convpass.reporting.format import order_rows

    datasets = dataset_order(sorted({d for c in curves.values() for d in c if not is_average(d)}))
    datasets += sorted({d for c in curves.values() for d in c if is_average(d)})
    shots = sorted({k for c in curves.values() for d in c.values() for k in d})
    rows = [(m, d, curves[m][d]) for d in datasets for m in order_rows(curves) if d in curves[m]]
    return datasets, shots, rows


def render_curves(curves: Curves, fmt: str = "terminal", metric: str = "top1", notes: Sequence[str] = ()) -> str:
    from clip_convpass.reporting.format import domain_label, fmt_cell, render_rows, row_label

    datasets, shots, rows = curve_rows(curves)
    if fmt == "json":
        return json.dumps({"metric": metric, "shots": shots, "notes": list(notes),
                           "rows": [{"method": m, "label": row_label(m), "dataset": d,
                                     "cells": {str(k): list(v) for k, v in c.items()}} for m, d, c in rows]},
                          indent=2)
    headers = ["Dataset", "Method"] + [f"{k} shot{'s' if k > 1 else ''}" for k in shots]
    body = [[d if is_average(d) else domain_label(d), row_label(m)] + [fmt_cell(c.get(k)) for k in shots]
            for m, d, c in rows]
    title = f"Few-shot {METRIC_LABELS[metric]} (%) on each dataset's test split, mean ± std over seeds"
    return render_rows(headers, body, fmt, notes, title)


def plot_curves(curves: Curves, path: str | Path, metric: str = "top1") -> None:
    """One panel per dataset (and the average), one line per method in its style, error bars = std over
    seeds; one legend below the panels. PNG, PDF or SVG by the path's suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clip_convpass.reporting.format import domain_label, order_rows, row_label
    from clip_convpass.reporting.style import figure_styles, legend_outside, save

    datasets, shots, _ = curve_rows(curves)
    methods = order_rows(curves)
    styles = figure_styles(methods)
    cols = min(4, len(datasets))
    n_rows = (len(datasets) + cols - 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.4 * cols, 2.8 * n_rows), squeeze=False)
    handles = {}
    for ax, dataset in zip(axes.flat, datasets):
        for method in methods:
            points = sorted(curves[method].get(dataset, {}).items())
            if points:
                xs = [k for k, _ in points]
                h = ax.errorbar(xs, [c[0] for _, c in points], yerr=[c[1] for _, c in points], ms=4, capsize=2,
                                lw=1.2, **styles[method].kwargs())
                handles.setdefault(method, h)
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots)
        ax.set_xticklabels([str(k) for k in shots])
        ax.set_title(dataset if is_average(dataset) else domain_label(dataset), fontsize=9)
        ax.set_xlabel("shots per class", fontsize=8)
        ax.set_ylabel(f"{METRIC_LABELS[metric]} (%)", fontsize=8)
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis("off")
    fig.tight_layout()
    legend_outside(fig, list(handles.values()), [row_label(m) for m in handles], below=True,
                   ncol=min(4, max(1, len(handles))))
    save(fig, path)


@REPORT_VIEW_REGISTRY.register
class FewShotView(ReportView):
    NAME = "fewshot"
    HELP = "accuracy vs shots per training dataset and their average (table + curves)"
    EMPTY = "No training-dataset test results with a shot count to draw curves from"

    @classmethod
    def build(cls, records, metric, notes, methods=None):
        return {k: v for k, v in fewshot_curves(records, metric, notes).items() if selected(k, methods)}

    render = staticmethod(render_curves)
    plot = staticmethod(plot_curves)
