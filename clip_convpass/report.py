"""Table 2 from results.json files (never from logs): mean ± std over seeds per method and domain.

    python -m clip_convpass.report OUTPUT_ROOT [--format terminal|markdown|csv|json] [--paper] [--plot out.png]
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from tabulate import tabulate

DOMAINS = ["ImageNet", "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"]
DOMAIN_LABELS = {"ImageNet": "ImageNet", "ImageNetV2": "-V2", "ImageNetSketch": "-Sketch", "ImageNetA": "-A",
                 "ImageNetR": "-R", "ImageNet@step0": "ImageNet step 0"}
TARGETS = DOMAINS[1:]
METHOD_ORDER = ["ZeroShotCLIP", "LinearProbeCLIP", "CoOp", "CoCoOp", "TipAdapter", "TipAdapterF", "ConvpassCLIP"]
METHOD_LABELS = {"ZeroShotCLIP": "ZS CLIP", "LinearProbeCLIP": "LP CLIP", "CoOp": "CoOp", "CoCoOp": "CoCoOp",
                 "TipAdapter": "Tip-Adapter", "TipAdapterF": "Tip-Adapter-F", "ConvpassCLIP": "Convpass_CLIP"}
# Jie & Deng, Table 2: ViT-B/16, 16-shot ImageNet, top-1 on ImageNet / -V2 / -Sketch / -A / -R.
PAPER_TABLE2: Dict[str, List[float]] = {
    "ZeroShotCLIP": [66.73, 60.83, 46.15, 47.77, 73.96],
    "LinearProbeCLIP": [65.85, 56.26, 34.77, 35.68, 58.43],
    "CoOp": [71.51, 64.20, 47.99, 49.71, 75.21],
    "CoCoOp": [71.02, 64.07, 48.75, 50.63, 76.18],
    "TipAdapterF": [73.41, 65.39, 48.58, 49.23, 77.54],
    "ConvpassCLIP": [74.23, 66.61, 49.10, 49.27, 78.17],
}

Cell = Optional[Tuple[float, float, int]]  # mean, std, number of seeds


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


def aggregate(records: List[dict], metric: str = "top1", split: str = "test") -> Dict[str, Dict[str, Cell]]:
    """{row name: {domain: (mean, std, n_seeds) or None}}; of two records for one seed, the newer counts."""
    by_seed: Dict[Tuple[str, str], Dict[int, float]] = defaultdict(dict)
    for r in sorted(records, key=lambda r: r.get("timestamp", "")):
        if r.get("split", "test") != split:
            continue
        dataset = r["dataset"] if r.get("stage", "final") == "final" else f"{r['dataset']}@{r['stage']}"
        by_seed[(r.get("name") or r["trainer"], dataset)][r["seed"]] = r["metrics"][metric]
    rows: Dict[str, Dict[str, Cell]] = defaultdict(dict)
    for (name, dataset), seeds in by_seed.items():
        m, s = mean_std(list(seeds.values()))
        rows[name][dataset] = (m, s, len(seeds))
    return rows


def order_rows(names: Iterable[str], order: Optional[Sequence[str]] = None) -> List[str]:
    names = list(names)
    known = [n for n in (order or METHOD_ORDER) if n in names]
    return known + sorted(n for n in names if n not in known)


def target_average(cells: Dict[str, Cell]) -> Cell:
    if any(cells.get(d) is None for d in TARGETS):
        return None
    means = [cells[d][0] for d in TARGETS]
    return sum(means) / len(means), 0.0, min(cells[d][2] for d in TARGETS)


def build_table(rows: Dict[str, Dict[str, Cell]], paper: bool = False, domains: Sequence[str] = DOMAINS,
                order: Optional[Sequence[str]] = None) -> List[dict]:
    """One dict per row: method, per-domain cells, target average, paper values and deltas (if asked)."""
    out = []
    for name in order_rows(rows, order):
        cells = {d: rows[name].get(d) for d in domains}
        row = {"method": name, "cells": cells}
        if list(domains) == DOMAINS:
            row["target_avg"] = target_average(cells)
        if paper and name in PAPER_TABLE2:
            ref = dict(zip(DOMAINS, PAPER_TABLE2[name]))
            row["paper"] = {d: ref[d] for d in domains}
            row["delta"] = {d: (cells[d][0] - ref[d]) if cells[d] else None for d in domains}
        out.append(row)
    return out


def fmt_cell(cell: Cell) -> str:
    if cell is None:
        return "missing"
    m, s, n = cell
    return f"{m:.2f} ± {s:.2f} (n={n})"


def to_grid(table: List[dict], paper: bool) -> Tuple[List[str], List[List[str]]]:
    domains = list(table[0]["cells"]) if table else DOMAINS
    headers = ["Method"] + [DOMAIN_LABELS.get(d, d) for d in domains]
    has_avg = any("target_avg" in r for r in table)
    if has_avg:
        headers.append("Target avg")
    body = []
    for r in table:
        line = [METHOD_LABELS.get(r["method"], r["method"])] + [fmt_cell(r["cells"][d]) for d in domains]
        if has_avg:
            avg = r.get("target_avg")
            line.append(f"{avg[0]:.2f}" if avg else "missing")
        body.append(line)
        if paper and "paper" in r:
            p = ["  paper"] + [f"{r['paper'][d]:.2f}" for d in domains]
            dl = ["  delta"] + [f"{r['delta'][d]:+.2f}" if r["delta"][d] is not None else "missing" for d in domains]
            if has_avg:
                p.append(f"{sum(r['paper'][d] for d in TARGETS) / len(TARGETS):.2f}")
                avg = r.get("target_avg")
                dl.append(f"{avg[0] - float(p[-1]):+.2f}" if avg else "missing")
            body += [p, dl]
    return headers, body


def render(table: List[dict], fmt: str = "terminal", paper: bool = False) -> str:
    if fmt == "json":
        return json.dumps(table, indent=2)
    headers, body = to_grid(table, paper)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(headers)
        w.writerows(body)
        return buf.getvalue()
    return tabulate(body, headers=headers, tablefmt="github" if fmt == "markdown" else "simple", disable_numparse=True)


def plot(table: List[dict], path: str | Path, title: str = "Top-1 accuracy per domain") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(table[0]["cells"]) if table else DOMAINS
    fig, ax = plt.subplots(figsize=(1.8 * len(domains) + 2, 4))
    width = 0.8 / max(1, len(table))
    for i, r in enumerate(table):
        xs = [j + i * width for j, d in enumerate(domains) if r["cells"][d]]
        ys = [r["cells"][d][0] for d in domains if r["cells"][d]]
        es = [r["cells"][d][1] for d in domains if r["cells"][d]]
        ax.bar(xs, ys, width, yerr=es, label=METHOD_LABELS.get(r["method"], r["method"]), capsize=2)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(domains))])
    ax.set_xticklabels([DOMAIN_LABELS.get(d, d) for d in domains])
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", help="folders searched recursively for results.json")
    p.add_argument("--format", choices=["terminal", "markdown", "csv", "json"], default="terminal")
    p.add_argument("--metric", default="top1", choices=["top1", "top5", "macro_f1", "mean_per_class_acc"])
    p.add_argument("--paper", action="store_true", help="show the paper's numbers and deltas")
    p.add_argument("--methods", nargs="*", default=None, help="only these row names")
    p.add_argument("--plot", default="", help="write a PNG bar chart here")
    p.add_argument("--output", default="", help="write the table here instead of stdout")
    args = p.parse_args(argv)
    records = collect(args.roots)
    if not records:
        print(f"No results.json under {args.roots}", file=sys.stderr)
        return 1
    rows = aggregate(records, args.metric)
    if args.methods:
        rows = {k: v for k, v in rows.items() if k in args.methods}
    table = build_table(rows, paper=args.paper)
    text = render(table, args.format, args.paper)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        print(text)
    if args.plot:
        plot(table, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
