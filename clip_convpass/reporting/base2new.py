"""The base-to-new view (CoCoOp, Zhou et al. CVPR 2022, Sec. 4.1 and Table 1): runs trained on the base half of
each dataset's classes, scored on the base test images over the base classes and on the new test images over the
new classes; per dataset, base and new are averaged over seeds and HM = 2BN / (B + N). The Average row is the HM
of the base and new accuracies averaged over the datasets, not the mean of the per-dataset HMs.

    python -m clip_convpass.report OUTPUT_ROOT --base2new [--format markdown|csv|json] [--plot hm.png]
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence

from clip_convpass.engine.evaluation import METRIC_LABELS
from clip_convpass.registry import REPORT_VIEW_REGISTRY, dataset_order, rows_by_name, trainable_datasets
from clip_convpass.reporting.base import ReportView, selected
from clip_convpass.reporting.format import NA, Cell, base_name, domain_label, fmt_cell, order_rows, render_rows, row_label

AVERAGE = "Average"
HALVES = ("base", "new")


def harmonic_mean(base: Optional[float], new: Optional[float]) -> Optional[float]:
    if base is None or new is None:
        return None
    return 0.0 if base + new == 0 else 2 * base * new / (base + new)


def is_base2new(rec: dict) -> bool:
    """A result of the protocol: weights trained on its dataset's base classes, scored on one half of them."""
    from clip_convpass.reporting.records import train_subsample

    return (train_subsample(rec) == "base" and rec.get("subsample") in HALVES
            and rec["dataset"] == rec.get("train_dataset") and rec.get("stage", "final") == "final")


def base2new_table(records: List[dict], metric: str = "top1", notes: Optional[List[str]] = None) -> List[dict]:
    """One entry per (dataset, method), datasets in table order, then the Average entries: base and new cells
    (mean, std, seeds; (None, None, n) = n/a), HM, and the paper's numbers where the row has them."""
    from clip_convpass.reporting.records import aggregate

    # per dataset: runs of one row on different datasets are different experiments by nature (the dataset is the
    # column), so experiments are told apart within a dataset only
    datasets = dataset_order(sorted({r["dataset"] for r in records if is_base2new(r)}))
    rows: Dict[str, Dict[str, Cell]] = {}
    for dataset in datasets:
        part = aggregate(records, metric, notes=notes, select=lambda r: is_base2new(r) and r["dataset"] == dataset,
                         column=lambda r: f"{r['dataset']}/{r['subsample']}")
        for method, cells in part.items():
            rows.setdefault(method, {}).update(cells)
    if notes is not None and datasets and len(datasets) < len(trainable_datasets()):
        notes.append(f"{len(datasets)} of the protocol's {len(trainable_datasets())} datasets have results; the Average "
                     f"rows (the paper's too) are over these only")
    registered = rows_by_name()
    out = []
    for dataset in datasets:
        for method in order_rows(rows):
            cells = {h: rows[method].get(f"{dataset}/{h}") for h in HALVES}
            if any(cells.values()):
                out.append(entry(dataset, method, cells, paper_numbers(registered, method, dataset)))
    for method in order_rows(rows):
        per = [e for e in out if e["method"] == method]
        if len(per) != len(datasets) or not all(all(e[h] for h in HALVES) for e in per):
            continue  # an average over fewer datasets than the others' is not comparable
        means = {h: None if any(e[h][0] is None for e in per) else sum(e[h][0] for e in per) / len(per)
                 for h in HALVES}
        cells = {h: (means[h], None, min(e[h][2] for e in per)) for h in HALVES}
        papers = [e["paper"] for e in per]
        paper = None
        if per and all(papers):
            paper = {h: sum(p[h] for p in papers) / len(papers) for h in HALVES}
            paper["hm"] = harmonic_mean(paper["base"], paper["new"])
        elif len(datasets) == len(trainable_datasets()):  # a row may publish only the protocol's average
            paper = paper_numbers(registered, method, AVERAGE)
        out.append(entry(AVERAGE, method, cells, paper))
    return out


def paper_numbers(registered, method: str, dataset: str) -> Optional[dict]:
    """The row's published [base, new] on `dataset`, or on "Average" (all 11 datasets) when that is all a
    repository publishes."""
    row = registered.get(base_name(method))
    published = ((row.paper_tables or {}).get("base2new") or {}).get(dataset) if row else None
    if not published:
        return None
    base, new = (float(x) for x in published)
    return {"base": base, "new": new, "hm": harmonic_mean(base, new)}


def entry(dataset: str, method: str, cells: Dict[str, Cell], paper: Optional[dict]) -> dict:
    means = {h: cells[h][0] if cells[h] else None for h in HALVES}
    na = any(cells[h] and cells[h][0] is None for h in HALVES)
    hm = NA if na else harmonic_mean(means["base"], means["new"])
    return {"dataset": dataset, "method": method, "base": cells["base"], "new": cells["new"], "hm": hm,
            "paper": paper}


def render_base2new(table: List[dict], fmt: str = "terminal", metric: str = "top1", notes: Sequence[str] = ()) -> str:
    if fmt == "json":
        return json.dumps({"metric": metric, "notes": list(notes),
                           "rows": [{**e, "label": row_label(e["method"])} for e in table]}, indent=2, allow_nan=False)
    has_paper = any(e["paper"] for e in table)
    headers = ["Dataset", "Method", "Base", "New", "HM"] + (["Paper B / N / HM", "Δ HM"] if has_paper else [])
    body = []
    for e in table:
        hm = e["hm"] if isinstance(e["hm"], str) else ("missing" if e["hm"] is None else f"{e['hm']:.2f}")
        line = [e["dataset"] if e["dataset"] == AVERAGE else domain_label(e["dataset"]), row_label(e["method"]),
                fmt_cell(e["base"]), fmt_cell(e["new"]), hm]
        if has_paper:
            p = e["paper"]
            line.append(f"{p['base']:.2f} / {p['new']:.2f} / {p['hm']:.2f}" if p else "-")
            line.append(f"{e['hm'] - p['hm']:+.2f}" if p and isinstance(e["hm"], float) else "-")
        body.append(line)
    title = (f"Base-to-new generalization, {METRIC_LABELS[metric]} (%): mean ± std over seeds; HM = 2BN/(B+N); "
             f"Average = HM of the averaged base and new")
    return render_rows(headers, body, fmt, notes, title)


def plot_base2new(table: List[dict], path, metric: str = "top1") -> None:
    from clip_convpass.reporting.style import plot_grouped_bars

    groups = list(dict.fromkeys(e["dataset"] for e in table))
    methods = order_rows({e["method"] for e in table})
    hm = {(e["dataset"], e["method"]): e["hm"] for e in table}
    series = {m: [hm.get((d, m)) for d in groups] for m in methods}
    plot_grouped_bars(path, [d if d == AVERAGE else domain_label(d) for d in groups], series,
                      f"HM of base and new {METRIC_LABELS[metric]} (%)", "Base-to-new: harmonic mean per dataset")


@REPORT_VIEW_REGISTRY.register
class Base2NewView(ReportView):
    NAME = "base2new"
    HELP = "base-to-new generalization: base, new and HM per dataset and the Average row (CoCoOp's protocol)"
    EMPTY = "No base-to-new results (runs trained with DATASET.SUBSAMPLE base and evaluated on base and new)"

    @classmethod
    def build(cls, records, metric, notes, methods=None):
        return [e for e in base2new_table(records, metric, notes) if selected(e["method"], methods)]

    render = staticmethod(render_base2new)
    plot = staticmethod(plot_base2new)
