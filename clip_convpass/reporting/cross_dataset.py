"""The cross-dataset transfer view (CoCoOp, Zhou et al. CVPR 2022, Sec. 4.2 and Table 2): runs trained on the
source (ImageNet, all classes), scored on the source and on each other dataset's test split with that dataset's
own classes (a transfer evaluation), and the average over the targets.

    python -m clip_convpass.report OUTPUT_ROOT --cross-dataset [--format markdown|csv|json] [--plot xd.png]
"""
from __future__ import annotations

import json
from typing import List, Optional, Sequence

from clip_convpass.engine.evaluation import METRIC_LABELS
from clip_convpass.registry import REPORT_VIEW_REGISTRY, dataset_order, rows_by_name, trainable_datasets
from clip_convpass.reporting.base import ReportView, selected
from clip_convpass.reporting.format import NA, base_name, domain_label, fmt_cell, order_rows, render_rows, row_label
from clip_convpass.reporting.table2 import TABLE2_SOURCE as SOURCE  # the runs Table 2 trains are the source

AVERAGE = "Average"


def transfer_targets(source: str = SOURCE) -> List[str]:
    """The protocol's targets: every registered dataset with its own training split other than the source."""
    return [name for name in trainable_datasets() if name != source]


def is_cross_dataset(rec: dict, source: str = SOURCE) -> bool:
    from clip_convpass.reporting.records import same_protocol, train_subsample

    if rec.get("train_dataset") != source or train_subsample(rec) != "all" or rec.get("subsample", "all") != "all":
        return False
    if rec.get("stage", "final") != "final":
        return False
    return (rec["dataset"] == source and same_protocol(rec)) or (rec.get("transfer") and rec["dataset"] in
                                                                 transfer_targets(source))


def cross_dataset_table(records: List[dict], metric: str = "top1", notes: Optional[List[str]] = None,
                        source: str = SOURCE) -> List[dict]:
    """One entry per method: source and target cells (mean, std, seeds; (None, None, n) = n/a), the average of
    the targets present (a method lacking one of them has none), and the paper's numbers where the row has them."""
    from clip_convpass.reporting.records import aggregate

    rows = aggregate(records, metric, notes=notes, select=lambda r: is_cross_dataset(r, source))
    targets = dataset_order(sorted({d for cells in rows.values() for d in cells if d != source}))
    if notes is not None and targets and len(targets) < len(transfer_targets(source)):
        notes.append(f"{len(targets)} of the protocol's {len(transfer_targets(source))} targets have results; "
                     f"the average is over these only")
    registered = rows_by_name()
    out = []
    for method in order_rows(rows):
        cells = {d: rows[method].get(d) for d in [source, *targets]}
        got = [cells[d] for d in targets]
        if targets and all(got):
            average = NA if any(c[0] is None for c in got) else sum(c[0] for c in got) / len(got)
        else:
            average = None
        row = registered.get(base_name(method))
        published = dict(((row.paper_tables or {}).get("cross_dataset") or {}) if row else {})
        paper = {d: float(published[d]) for d in [source, *targets] if d in published} or None
        if paper and all(d in paper for d in targets) and targets:
            paper[AVERAGE] = sum(paper[d] for d in targets) / len(targets)
        out.append({"method": method, "source": source, "cells": cells, "average": average, "paper": paper})
    return out


def render_cross_dataset(table: List[dict], fmt: str = "terminal", metric: str = "top1",
                         notes: Sequence[str] = ()) -> str:
    if fmt == "json":
        return json.dumps({"metric": metric, "notes": list(notes),
                           "rows": [{**e, "label": row_label(e["method"])} for e in table]}, indent=2, allow_nan=False)
    columns = list(table[0]["cells"]) if table else [SOURCE]
    headers = ["Method"] + [f"{domain_label(d)} (source)" if i == 0 else domain_label(d)
                            for i, d in enumerate(columns)] + [f"{AVERAGE} (targets)"]
    body = []
    for e in table:
        avg = e["average"]
        body.append([row_label(e["method"])] + [fmt_cell(e["cells"][d]) for d in columns]
                    + [avg if isinstance(avg, str) else ("missing" if avg is None else f"{avg:.2f}")])
        if e["paper"]:
            p = e["paper"]
            body.append(["  paper"] + [f"{p[d]:.2f}" if d in p else "-" for d in columns]
                        + [f"{p[AVERAGE]:.2f}" if AVERAGE in p else "-"])
            delta = [f"{e['cells'][d][0] - p[d]:+.2f}" if d in p and e["cells"][d] and e["cells"][d][0] is not None
                     else "-" for d in columns]
            avg_delta = f"{avg - p[AVERAGE]:+.2f}" if AVERAGE in p and isinstance(avg, float) else "-"
            body.append(["  delta"] + delta + [avg_delta])
    title = (f"Cross-dataset transfer, {METRIC_LABELS[metric]} (%): trained on {columns[0]}, each target scored "
             f"over its own classes; mean ± std over seeds")
    return render_rows(headers, body, fmt, notes, title)


def plot_cross_dataset(table: List[dict], path, metric: str = "top1") -> None:
    from clip_convpass.reporting.style import plot_grouped_bars

    columns = list(table[0]["cells"]) if table else [SOURCE]
    series = {e["method"]: [NA if c and c[0] is None else (c[0] if c else None) for c in
                            (e["cells"][d] for d in columns)] + [e["average"]] for e in table}
    plot_grouped_bars(path, [domain_label(d) for d in columns] + [AVERAGE], series, f"{METRIC_LABELS[metric]} (%)",
                      f"Cross-dataset transfer from {domain_label(columns[0])}")


@REPORT_VIEW_REGISTRY.register
class CrossDatasetView(ReportView):
    NAME = "cross_dataset"
    HELP = "cross-dataset transfer: ImageNet-trained runs on the other datasets' classes (CoCoOp's protocol)"
    EMPTY = "No cross-dataset results (ImageNet runs evaluated with --eval-only --model-dir on other datasets)"

    @classmethod
    def build(cls, records, metric, notes, methods=None):
        return [e for e in cross_dataset_table(records, metric, notes) if selected(e["method"], methods)]

    render = staticmethod(render_cross_dataset)
    plot = staticmethod(plot_cross_dataset)
