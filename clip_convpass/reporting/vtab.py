"""The VTAB-1K view (the Convpass paper's Table 1): each row's test accuracy on the 19 tasks (trained on
train800val200), the Natural / Specialized / Structured means, the paper's Average (the mean of the three group
means), the trainable parameters of the backbone (head excluded), and the published numbers with our deltas.

    python -m clip_convpass.report OUTPUT_ROOT --vtab [--format markdown|csv|json] [--plot vtab.png]

A group mean needs every task of the group, and the Average every group: a partial table shows "missing" there
rather than a mean over other tasks than the paper's.
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence

from clip_convpass.engine.evaluation import METRIC_LABELS
from clip_convpass.registry import DATASET_REGISTRY, REPORT_VIEW_REGISTRY, benchmark_datasets, rows_by_name
from clip_convpass.reporting.base import ReportView, selected
from clip_convpass.reporting.format import base_name, domain_label, order_rows, render_rows, row_label

BENCHMARK = "vtab1k"
AVERAGE = "Average"


def groups() -> Dict[str, List[str]]:
    """{group: its tasks} in table order, from the registered datasets' GROUP."""
    out: Dict[str, List[str]] = {}
    for name in benchmark_datasets(BENCHMARK):
        out.setdefault(DATASET_REGISTRY.get(name).GROUP, []).append(name)
    return out


def summarise(values: Dict[str, float]) -> Dict[str, Optional[float]]:
    """Group means over complete groups and the Average over complete groups only (else None)."""
    out: Dict[str, Optional[float]] = {}
    for group, tasks in groups().items():
        got = [values[t] for t in tasks if values.get(t) is not None]
        out[group] = sum(got) / len(got) if len(got) == len(tasks) else None
    means = [out[g] for g in groups()]
    out[AVERAGE] = sum(means) / len(means) if means and all(m is not None for m in means) else None
    return out


def is_vtab_result(rec: dict) -> bool:
    from clip_convpass.reporting.records import same_protocol

    return (rec["dataset"] in benchmark_datasets(BENCHMARK) and rec.get("train_dataset") == rec["dataset"]
            and rec.get("stage", "final") == "final" and same_protocol(rec))


def vtab_table(records: List[dict], metric: str = "top1", notes: Optional[List[str]] = None) -> List[dict]:
    """One entry per row: per-task cells (mean, std, seeds), summary means over the tasks' means, the image
    encoder's trainable parameters, and the paper's numbers and budget where the row has them. Each task is
    aggregated on its own (a task is its own experiment: its own training set and, after a search, settings)."""
    from clip_convpass.reporting.records import aggregate

    tasks = benchmark_datasets(BENCHMARK)
    cells: Dict[str, Dict[str, tuple]] = {}
    params: Dict[str, int] = {}
    backbones: Dict[str, set] = {}
    for r in records:
        if is_vtab_result(r):
            backbones.setdefault(r.get("name") or r["trainer"], set()).add(str(r.get("backbone", "?")))
    for task in tasks:
        chosen = [r for r in records if r["dataset"] == task and is_vtab_result(r)]
        task_notes: List[str] = []
        for method, row in aggregate(chosen, metric, notes=task_notes, params=params, select=is_vtab_result).items():
            cells.setdefault(method, {}).update(row)
        if notes is not None:
            notes += [f"{domain_label(task)}: {n}" for n in task_notes]
    registered = rows_by_name()
    out = []
    for method in order_rows(cells):
        means = {t: c[0] for t, c in cells[method].items()}
        row = registered.get(base_name(method))
        out.append({"method": method, "cells": {t: cells[method].get(t) for t in tasks}, "summary": summarise(means),
                    "params": params.get(method), "paper": published(row),
                    "paper_params": row.paper_params if row else None,
                    "backbone": ", ".join(sorted(backbones.get(method, ())))})
    if notes is not None and out:
        done = {t for e in out for t, c in e["cells"].items() if c}
        if len(done) < len(tasks):
            notes.append(f"{len(done)} of the 19 tasks have results; group means and the Average need all of a "
                         f"group's tasks")
        notes.append("Trained on train800val200, scored on test, the final epoch's model (PETL-ViT reports the best "
                     "of its every-10-epoch test evaluations; ours are in each run's history as test_top1)")
    return out


def published(row) -> Optional[Dict[str, float]]:
    """A row's published numbers: per task (paper_tables.vtab) with the group means they give, and the published
    Average / group means (paper_tables.vtab_summary, or vtab's own Average: the paper's rounding)."""
    tables = (row.paper_tables or {}) if row else {}
    per_task = {k: float(v) for k, v in (tables.get("vtab") or {}).items()}
    paper = {**per_task, **{k: v for k, v in summarise(per_task).items() if v is not None}} if per_task else {}
    if AVERAGE in per_task:
        paper[AVERAGE] = per_task[AVERAGE]
    paper.update({k: float(v) for k, v in (tables.get("vtab_summary") or {}).items()})
    return paper or None


def _columns(table: List[dict]) -> List[str]:
    tasks = benchmark_datasets(BENCHMARK)
    shown = [t for t in tasks if any(e["cells"].get(t) for e in table)]
    return shown + list(groups()) + [AVERAGE]


def _num(value) -> str:
    return "missing" if value is None else f"{value:.1f}"


def render_vtab(table: List[dict], fmt: str = "terminal", metric: str = "top1", notes: Sequence[str] = ()) -> str:
    if fmt == "json":
        return json.dumps({"metric": metric, "notes": list(notes), "groups": groups(),
                           "rows": [{**e, "label": row_label(e["method"])} for e in table]}, indent=2, allow_nan=False)
    columns = _columns(table)
    headers = ["Method", "Params (M)"] + [domain_label(c) if c in DATASET_REGISTRY else c for c in columns]
    body = []
    for e in table:
        values = {**{t: (c[0] if c else None) for t, c in e["cells"].items()}, **e["summary"]}
        params = f"{e['params'] / 1e6:.2f}" if e["params"] is not None else "?"
        body.append([row_label(e["method"]), params] + [_num(values.get(c)) for c in columns])
        if e["paper"]:
            p = e["paper"]
            budget = f"{e['paper_params']:g}" if e["paper_params"] is not None else "-"
            body.append(["  paper", budget] + [_num(p[c]) if c in p else "-" for c in columns])
            body.append(["  delta", ""] + [f"{values[c] - p[c]:+.1f}" if c in p and values.get(c) is not None else "-"
                                           for c in columns])
    title = (f"VTAB-1K, {METRIC_LABELS[metric]} (%) on test, mean over seeds; groups: the mean of their tasks; "
             f"{AVERAGE}: the mean of the three group means")
    return render_rows(headers, body, fmt, notes, title)


def plot_vtab(table: List[dict], path, metric: str = "top1") -> None:
    from clip_convpass.reporting.style import plot_grouped_bars

    columns = list(groups()) + [AVERAGE]
    series = {e["method"]: [e["summary"].get(c) for c in columns] for e in table}
    plot_grouped_bars(path, columns, series, f"{METRIC_LABELS[metric]} (%)", "VTAB-1K")


@REPORT_VIEW_REGISTRY.register
class VTABView(ReportView):
    NAME = "vtab"
    HELP = "VTAB-1K (the Convpass paper's Table 1): 19 tasks, group means, Average, parameters, paper deltas"
    EMPTY = "No VTAB-1K results (runs of a vtab_<task> dataset scored on its test list)"

    @classmethod
    def build(cls, records, metric, notes, methods=None):
        return [e for e in vtab_table(records, metric, notes) if selected(e["method"], methods)]

    render = staticmethod(render_vtab)
    plot = staticmethod(plot_vtab)


def render_vtab_summary(table: List[dict], fmt: str = "terminal", metric: str = "top1", notes: Sequence[str] = ()) -> str:
    """The backbone and ablation tables' layout: backbone, parameters, Average and the three group means."""
    if fmt == "json":
        return render_vtab(table, fmt, metric, notes)
    columns = [AVERAGE, *groups()]
    headers = ["Method", "Backbone", "Params (M)", *columns]
    body = []
    for e in table:
        params = f"{e['params'] / 1e6:.2f}" if e["params"] is not None else "?"
        body.append([row_label(e["method"]), e["backbone"], params] + [_num(e["summary"].get(c)) for c in columns])
        if e["paper"] and any(c in e["paper"] for c in columns):
            p = e["paper"]
            budget = f"{e['paper_params']:g}" if e["paper_params"] is not None else "-"
            body.append(["  paper", "", budget] + [_num(p[c]) if c in p else "-" for c in columns])
            body.append(["  delta", "", ""] + [f"{e['summary'][c] - p[c]:+.1f}" if c in p and e["summary"].get(c)
                                               is not None else "-" for c in columns])
    title = (f"VTAB-1K summary, {METRIC_LABELS[metric]} (%) on test: {AVERAGE} = mean of the group means (the "
             f"backbone and ablation tables; `--table vtab_backbones` / `--table vtab_ablations` selects their rows)")
    return render_rows(headers, body, fmt, notes, title)


@REPORT_VIEW_REGISTRY.register
class VTABSummaryView(ReportView):
    NAME = "vtab_summary"
    HELP = ("VTAB-1K group means per row with its backbone (the backbone study and the ablations: Tables 3-5 of the "
            "report, 4-6 of the paper)")
    EMPTY = VTABView.EMPTY
    build = VTABView.build
    render = staticmethod(render_vtab_summary)
    plot = staticmethod(plot_vtab)
