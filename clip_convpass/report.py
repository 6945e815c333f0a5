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

from .evaluation import METRIC_LABELS, METRICS
from .registry import DATASET_REGISTRY, evaluation_domains, method_rows, rows_by_name, table_names

TABLE2_SOURCE = "ImageNet"
STAGE_LABELS = {"step0": "step 0"}


def table2_domains() -> List[str]:
    """ImageNet, then every dataset that evaluates ImageNet models, in their declared order."""
    return evaluation_domains(TABLE2_SOURCE)


def domain_label(domain: str) -> str:
    """The dataset's column label ("-V2"); "ImageNet step 0" for an evaluation at a stage ("ImageNet@step0")."""
    name, _, stage = domain.partition("@")
    label = DATASET_REGISTRY.get(name).column_label() if name in DATASET_REGISTRY else name
    return f"{label} {STAGE_LABELS.get(stage, stage)}" if stage else label


def row_label(name: str) -> str:
    row = rows_by_name().get(base_name(name))
    return row.display + name[len(base_name(name)):] if row else name


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
    """A footnote per row whose settings were chosen on the validation shots by a sweep."""
    chosen: Dict[str, set] = defaultdict(set)
    for r in records:
        key = (r.get("name") or r["trainer"], experiment_of(r))
        if r.get("selected") and key in labels:
            chosen[labels[key]].add(", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["selected"].items()))
    return [f"{row_label(row)}: {' / '.join(sorted(values))} chosen on the validation shots (clip_convpass.sweep)"
            for row, values in sorted(chosen.items())]


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


def base_name(row: str) -> str:
    """The registered row name of a table row ("CoOp [shots=8]" -> "CoOp")."""
    return row.split(" [", 1)[0]


def order_rows(names: Iterable[str], order: Optional[Sequence[str]] = None) -> List[str]:
    names = list(names)
    rank = {n: i for i, n in enumerate(order or [r.name for r in method_rows()])}
    return sorted(names, key=lambda n: (rank.get(base_name(n), len(rank)), base_name(n), n))


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
        if domains == table2:
            row["target_avg"] = target_average(cells, table2[1:])
        ref = registered[base_name(name)].paper if base_name(name) in registered else None
        if paper and ref:
            row["paper"] = {d: ref.get(d) for d in domains}  # None where the paper has no number
            row["delta"] = {d: (cells[d][0] - ref[d]) if cells[d] and d in ref else None for d in domains}
        out.append(row)
    return out


def fmt_cell(cell: Cell) -> str:
    if cell is None:
        return "missing"
    m, s, n = cell
    return f"{m:.2f} ± {s:.2f} (n={n})"


def to_grid(table: List[dict], paper: bool) -> Tuple[List[str], List[List[str]]]:
    domains = list(table[0]["cells"]) if table else table2_domains()
    targets = table2_domains()[1:]
    has_params = any("params" in r for r in table)
    headers = ["Method"] + (["Trainable params"] if has_params else []) + [domain_label(d) for d in domains]
    has_avg = any("target_avg" in r for r in table)
    if has_avg:
        headers.append("Target avg")
    body = []
    for r in table:
        count = [f"{r['params']:,}" if r.get("params") is not None else "?"] if has_params else []
        line = [row_label(r["method"])] + count + [fmt_cell(r["cells"][d]) for d in domains]
        if has_avg:
            avg = r.get("target_avg")
            line.append(f"{avg[0]:.2f}" if avg else "missing")
        body.append(line)
        if paper and "paper" in r:
            pad = [""] if has_params else []
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
        return json.dumps({"rows": table, "notes": list(notes)} if notes else table, indent=2)
    headers, body = to_grid(table, paper)
    return render_rows(headers, body, fmt, notes)


def render_rows(headers: Sequence[str], body: List[List[str]], fmt: str, notes: Sequence[str] = (),
                title: str = "") -> str:
    """A table of strings as CSV (notes as comment lines) or text (terminal / markdown; notes as footnotes)."""
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf).writerows([list(headers)] + body)
        return buf.getvalue() + "".join(f"# {n}\n" for n in notes)
    text = tabulate(body, headers=headers, tablefmt="github" if fmt == "markdown" else "simple", disable_numparse=True)
    text = (f"{title}\n\n" if title else "") + text
    return text + "".join(f"\n\nNote: {n}" if i == 0 else f"\nNote: {n}" for i, n in enumerate(notes))


def plot(table: List[dict], path: str | Path, metric: str = "top1", title: str = "", paper: bool = False) -> None:
    """Grouped bars per domain (and the target average), error bars = std over seeds clipped at 0, the seed
    count in each label; zero-height bars keep an outline; with `paper` the paper's numbers are black ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(table[0]["cells"]) if table else table2_domains()
    groups = domains + (["Target avg"] if any("target_avg" in r for r in table) else [])
    fig, ax = plt.subplots(figsize=(1.8 * len(groups) + 2, 4))
    width = 0.8 / max(1, len(table))
    for i, r in enumerate(table):
        cells = [r["cells"].get(d) if d != "Target avg" else r.get("target_avg") for d in groups]
        xs = [j + i * width for j, c in enumerate(cells) if c]
        ys = [c[0] for c in cells if c]
        es = [c[1] for c in cells if c]
        seeds = sorted({c[2] for c in cells if c})
        label = f"{row_label(r['method'])} (n={'/'.join(map(str, seeds))})" if seeds else row_label(r["method"])
        bars = ax.bar(xs, ys, width, yerr=[[min(e, y) for e, y in zip(es, ys)], es], label=label, capsize=2,
                      linewidth=0.8)
        for bar in bars:  # a 0 % bar is a result, not a missing one: keep it visible
            bar.set_edgecolor(bar.get_facecolor())
            if bar.get_height() == 0:
                ax.plot([bar.get_x(), bar.get_x() + bar.get_width()], [0, 0], color=bar.get_facecolor(), lw=3)
        if paper and r.get("paper"):
            ref = dict(r["paper"])
            targets = [ref.get(d) for d in table2_domains()[1:]]
            if "Target avg" in groups and None not in targets:
                ref["Target avg"] = sum(targets) / len(targets)
            px = [j + i * width for j, d in enumerate(groups) if ref.get(d) is not None]
            py = [ref[d] for d in groups if ref.get(d) is not None]
            ax.scatter(px, py, marker="_", s=200, color="black", zorder=5,
                       label="paper" if i == next(k for k, t in enumerate(table) if t.get("paper")) else None)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels([domain_label(d) if d != "Target avg" else d for d in groups])
    ax.set_ylabel(f"{METRIC_LABELS[metric]} (%)")
    ax.set_ylim(bottom=0)
    ax.set_title(title or f"{METRIC_LABELS[metric]} per domain")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


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


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", help="folders searched recursively for results.json")
    p.add_argument("--format", choices=["terminal", "markdown", "csv", "json"], default="terminal")
    p.add_argument("--metric", default="top1", choices=list(METRICS))
    p.add_argument("--paper", action="store_true", help="show the paper's numbers and deltas")
    p.add_argument("--methods", nargs="*", default=None, help="only these row names")
    p.add_argument("--table", choices=["all", *table_names()], default="all",
                   help="only the rows of this table; petl adds the trainable-parameter column")
    p.add_argument("--plot", default="", help="write a PNG bar chart (curves with --fewshot) here")
    p.add_argument("--fewshot", action="store_true",
                   help="accuracy vs shots per training dataset and their average (table + curves)")
    p.add_argument("--robustness", action="store_true",
                   help="ImageNet vs shifted-average accuracy per method and WiSE-FT alpha (table + plot)")
    p.add_argument("--output", default="", help="write the table here instead of stdout")
    args = p.parse_args(argv)
    records = collect(args.roots)
    if not records:
        print(f"No results.json under {args.roots}", file=sys.stderr)
        return 1
    notes: List[str] = []
    if args.fewshot:
        return fewshot_main(records, args, notes)
    if args.robustness:
        return robustness_main(records, args, notes)
    params: Dict[str, int] = {}
    rows = aggregate(records, args.metric, notes=notes, params=params)
    if args.methods:
        rows = {k: v for k, v in rows.items() if base_name(k) in args.methods}
    if args.table != "all":
        members = {r.name for r in method_rows(lambda r: args.table in r.tables)}
        rows = {k: v for k, v in rows.items() if base_name(k) in members}
    table = build_table(rows, paper=args.paper, params=params if args.table == "petl" else None)
    if args.paper:
        for warning in paper_setting_warnings(records):
            print(f"warning: {warning}", file=sys.stderr)
            notes.append(warning)
    write_or_print(render(table, args.format, args.paper, notes), args.output)
    if args.plot:
        plot(table, args.plot, args.metric, paper=args.paper)
    return 0


def robustness_main(records: List[dict], args, notes: List[str]) -> int:
    from .robustness import has_zero_shot, plot_points, render_points, robustness_points

    points = robustness_points(records, args.metric, notes)
    if args.methods:
        points = [p for p in points if base_name(p["method"]) in args.methods]
    if points and not has_zero_shot(points)[0]:
        notes.append(has_zero_shot(points)[1])
    return emit_view(points, "No method has results on ImageNet and all its shifted test sets under these roots",
                     render_points, plot_points, args, notes)


def fewshot_main(records: List[dict], args, notes: List[str]) -> int:
    from .fewshot_report import fewshot_curves, plot_curves, render_curves

    curves = fewshot_curves(records, args.metric, notes)
    if args.methods:
        curves = {k: v for k, v in curves.items() if base_name(k) in args.methods or k in args.methods}
    return emit_view(curves, "No training-dataset test results with a shot count to draw curves from",
                     render_curves, plot_curves, args, notes)


def emit_view(data, empty_message: str, render_fn, plot_fn, args, notes: List[str]) -> int:
    """Print (or write) a report view and its plot; 1 with a message when there is nothing to show."""
    if not data:
        print(empty_message, file=sys.stderr)
        return 1
    write_or_print(render_fn(data, args.format, args.metric, notes), args.output)
    if args.plot:
        plot_fn(data, args.plot, args.metric)
    return 0


def write_or_print(text: str, output: str) -> None:
    if output:
        Path(output).write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    raise SystemExit(main())
