"""The Table 2 view (domain generalization): ImageNet and its shifted test sets, target average, paper deltas."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from clip_convpass.engine.evaluation import METRIC_LABELS
from clip_convpass.registry import evaluation_domains, rows_by_name
from clip_convpass.reporting.format import Cell, base_name, domain_label, fmt_cell, order_rows, render_rows, row_label

TABLE2_SOURCE = "ImageNet"


def table2_domains() -> List[str]:
    """ImageNet, then every dataset that evaluates ImageNet models, in their declared order."""
    return evaluation_domains(TABLE2_SOURCE)


def target_average(cells: Dict[str, Cell], targets: Sequence[str]) -> Cell:
    if any(cells.get(d) is None for d in targets):
        return None
    means = [cells[d][0] for d in targets]
    return sum(means) / len(means), 0.0, min(cells[d][2] for d in targets)


def build_table(rows: Dict[str, Dict[str, Cell]], paper: bool = False, domains: Optional[Sequence[str]] = None,
                order: Optional[Sequence[str]] = None, params: Optional[Dict[str, int]] = None) -> List[dict]:
    """One dict per row: method, per-domain cells, target average, paper values and deltas (if asked)."""
    table2 = table2_domains()
    domains = list(domains or table2)
    registered = rows_by_name()
    out = []
    for name in order_rows(rows, order):
        cells = {d: rows[name].get(d) for d in domains}
        row = {"method": name, "cells": cells}
        if params is not None:
            row["params"] = params.get(name)
            budget = registered[base_name(name)].paper_params if base_name(name) in registered else None
            row["paper_params"] = budget
        if domains == table2:
            row["target_avg"] = target_average(cells, table2[1:])
        ref = registered[base_name(name)].paper if base_name(name) in registered else None
        if paper and ref:
            row["paper"] = {d: ref.get(d) for d in domains}  # None where the paper has no number
            row["delta"] = {d: (cells[d][0] - ref[d]) if cells[d] and d in ref else None for d in domains}
        out.append(row)
    return out


def to_grid(table: List[dict], paper: bool) -> Tuple[List[str], List[List[str]]]:
    domains = list(table[0]["cells"]) if table else table2_domains()
    targets = table2_domains()[1:]
    has_params = any("params" in r for r in table)
    headers = ["Method"] + (["Trainable params", "Paper budget"] if has_params else []) + [domain_label(d) for d in domains]
    has_avg = any("target_avg" in r for r in table)
    if has_avg:
        headers.append("Target avg")
    body = []
    for r in table:
        count = [f"{r['params']:,}" if r.get("params") is not None else "?",
                 f"{r['paper_params']:g}M" if r.get("paper_params") is not None else "-"] if has_params else []
        line = [row_label(r["method"])] + count + [fmt_cell(r["cells"][d]) for d in domains]
        if has_avg:
            avg = r.get("target_avg")
            line.append(f"{avg[0]:.2f}" if avg else "missing")
        body.append(line)
        if paper and "paper" in r:
            pad = ["", ""] if has_params else []
            p = ["  paper"] + pad + [f"{r['paper'][d]:.2f}" if r["paper"][d] is not None else "-" for d in domains]
            dl = ["  delta"] + pad + [f"{r['delta'][d]:+.2f}" if r["delta"][d] is not None else "missing"
                                      for d in domains]
            if has_avg:
                ref = [r["paper"].get(d) for d in targets]
                paper_avg = sum(ref) / len(ref) if None not in ref else None
                p.append(f"{paper_avg:.2f}" if paper_avg is not None else "-")
                avg = r.get("target_avg")
                dl.append(f"{avg[0] - paper_avg:+.2f}" if avg and paper_avg is not None else "missing")
            body += [p, dl]
    return headers, body


def render(table: List[dict], fmt: str = "terminal", paper: bool = False, notes: Sequence[str] = ()) -> str:
    """The table as text; `notes` become footnotes (a "notes" entry in JSON, comment lines in CSV)."""
    if fmt == "json":
        return json.dumps({"rows": table, "notes": list(notes)} if notes else table, indent=2, allow_nan=False)
    headers, body = to_grid(table, paper)
    return render_rows(headers, body, fmt, notes)


def plot(table: List[dict], path: str | Path, metric: str = "top1", title: str = "", paper: bool = False) -> None:
    """Grouped bars per domain (and the target average) in each method's style, error bars = std over seeds
    clipped at 0, the seed count in each label; zero-height bars keep an outline; with `paper` the paper's
    numbers are black ticks; the legend sits right of the axes. PNG, PDF or SVG by the path's suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clip_convpass.reporting.style import figure_styles, legend_outside, save

    domains = list(table[0]["cells"]) if table else table2_domains()
    groups = domains + (["Target avg"] if any("target_avg" in r for r in table) else [])
    styles = figure_styles(r["method"] for r in table)
    fig, ax = plt.subplots(figsize=(1.6 * len(groups) + 1.5, 4))
    width = 0.8 / max(1, len(table))
    paper_shown = False
    for i, r in enumerate(table):
        style = styles[r["method"]]
        cells = [r["cells"].get(d) if d != "Target avg" else r.get("target_avg") for d in groups]
        xs = [j + i * width for j, c in enumerate(cells) if c]
        ys = [c[0] for c in cells if c]
        es = [c[1] for c in cells if c]
        seeds = sorted({c[2] for c in cells if c})
        label = f"{row_label(r['method'])} (n={'/'.join(map(str, seeds))})" if seeds else row_label(r["method"])
        hatch = {"-": None, "--": "//", "-.": "..", ":": "xx"}[style.linestyle]  # a variant of a row: hatched
        bars = ax.bar(xs, ys, width, yerr=[[min(e, y) for e, y in zip(es, ys)], es], label=label, capsize=2,
                      linewidth=0.8, color="white" if hatch else style.color, edgecolor=style.color, hatch=hatch,
                      error_kw={"ecolor": "#444444", "lw": 0.8})
        for bar in bars:  # a 0 % bar is a result, not a missing one: keep it visible
            if bar.get_height() == 0:
                ax.plot([bar.get_x(), bar.get_x() + bar.get_width()], [0, 0], color=style.color, lw=3)
        if paper and r.get("paper"):
            ref = dict(r["paper"])
            targets = [ref.get(d) for d in table2_domains()[1:]]
            if "Target avg" in groups and None not in targets:
                ref["Target avg"] = sum(targets) / len(targets)
            px = [j + i * width for j, d in enumerate(groups) if ref.get(d) is not None]
            py = [ref[d] for d in groups if ref.get(d) is not None]
            ax.scatter(px, py, marker="_", s=200, color="black", zorder=5, label=None if paper_shown else "paper")
            paper_shown = True
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels([domain_label(d) if d != "Target avg" else d for d in groups])
    ax.set_ylabel(f"{METRIC_LABELS[metric]} (%)")
    ax.set_ylim(bottom=0)
    ax.set_title(title or f"{METRIC_LABELS[metric]} per domain", fontsize=10)
    legend_outside(ax)
    save(fig, path)


# The setting the paper's Table 2 numbers come from: --paper warns when results were made otherwise.
PAPER_SETTING = {"train_dataset": "ImageNet", "shots": 16, "backbone": ("ViT-B-16", "ViT-B-16-quickgelu"),
                 "pretrained": ("openai",)}


def paper_setting_warnings(records: List[dict]) -> List[str]:
    out = []
    for field, expected in PAPER_SETTING.items():
        allowed = expected if isinstance(expected, tuple) else (expected,)
        seen = sorted({str(r.get(field)) for r in records if r.get(field) not in allowed})
        if seen:
            out.append(f"the paper's numbers are for {field}={' or '.join(map(str, allowed))}; these results have "
                       f"{field}={', '.join(seen)}: the comparison is not like for like")
    return out
