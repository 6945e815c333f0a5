"""Tables and plots from results.json files (never from logs): mean ± std over seeds per method and domain.

    python -m clip_convpass.report OUTPUT_ROOT [--format terminal|markdown|csv|json] [--paper] [--plot out.png]
    python -m clip_convpass.report OUTPUT_ROOT --fewshot | --robustness   (every registered report view)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

from clip_convpass.engine.evaluation import METRICS
from clip_convpass.registry import REPORT_VIEW_REGISTRY, method_rows, table_names
from clip_convpass.reporting.format import base_name, write_or_print
from clip_convpass.reporting.records import aggregate, collect
from clip_convpass.reporting.style import PLOT_FORMATS
from clip_convpass.reporting.table2 import build_table, paper_setting_warnings, plot, render
from clip_convpass.utils.errors import entry_point


@entry_point
def main(argv: Optional[List[str]] = None) -> int:
    views = {cls.NAME: cls for cls in REPORT_VIEW_REGISTRY.classes()}
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", help="folders searched recursively for results.json")
    p.add_argument("--format", choices=["terminal", "markdown", "csv", "json"], default="terminal")
    p.add_argument("--metric", default="top1", choices=list(METRICS))
    p.add_argument("--paper", action="store_true", help="show the paper's numbers and deltas")
    p.add_argument("--methods", nargs="+", default=None, help="only these row names")
    p.add_argument("--table", choices=["all", *table_names()], default="all",
                   help="only the rows of this table (with any view too); petl adds the trainable-parameter column")
    p.add_argument("--plot", default="", help="write the plot here: .png, or .pdf / .svg for vector output (the bar "
                                              "chart; a view's own plot with a view flag)")
    group = p.add_mutually_exclusive_group()
    for name, view in views.items():
        group.add_argument(f"--{name.replace('_', '-')}", dest="view", action="store_const", const=name, help=view.HELP)
    p.add_argument("--output", default="", help="write the table here instead of stdout")
    args = p.parse_args(argv)
    if args.plot and Path(args.plot).suffix.lower() not in PLOT_FORMATS:
        p.error(f"--plot {args.plot}: give a .png (raster) or .pdf / .svg (vector) path")
    records = collect(args.roots)
    if not records:
        print(f"No results.json under {args.roots}", file=sys.stderr)
        return 1
    if args.methods:
        known = {r.name for r in method_rows()} | {rec.get("name") or rec["trainer"] for rec in records}
        unknown = sorted(set(args.methods) - known)
        if unknown:
            p.error(f"--methods: no row named {unknown} is registered or has results here; known: {sorted(known)}")
    notes: List[str] = []
    if args.view:
        return emit_view(views[args.view], records, args, notes)
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


def emit_view(view, records: List[dict], args, notes: List[str]) -> int:
    """Print (or write) a registered view and its plot; 1 with a message when there is nothing to show."""
    methods = args.methods
    if args.table != "all":  # a view shows the table's rows only (e.g. --vtab-summary --table vtab_ablations)
        members = [r.name for r in method_rows(lambda r: args.table in r.tables)]
        methods = [m for m in (methods or members) if m in members]
    data = view.build(records, args.metric, notes, methods)
    if not data:
        print(view.EMPTY, file=sys.stderr)
        return 1
    write_or_print(view.render(data, args.format, args.metric, notes), args.output)
    if args.plot:
        view.plot(data, args.plot, args.metric)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
