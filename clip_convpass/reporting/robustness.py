"""Effective-robustness view: ImageNet accuracy (x) against the average over the shifted test sets (y)
for every method, and for every WiSE-FT alpha of the fine-tuned ones (clip_convpass.wiseft), with the
zero-shot point marked; the table behind the plot. Built from results.json files only.

    python -m clip_convpass.report OUTPUT_ROOT --robustness [--format markdown] [--plot robustness.png]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from clip_convpass.engine.evaluation import METRIC_LABELS
from clip_convpass.registry import REPORT_VIEW_REGISTRY
from clip_convpass.reporting.base import ReportView, selected

ZERO_SHOT_ROW = "ZeroShotCLIP"
Point = Dict[str, object]  # method, alpha (None = the trained model), x, y, cells, seeds


def robustness_points(records: List[dict], metric: str = "top1", notes: Optional[List[str]] = None,
                      source: str = "ImageNet") -> List[Point]:
    """One point per (method, alpha): x = accuracy on `source`, y = mean over its shifted test sets."""
    from clip_convpass.registry import evaluation_domains
    from clip_convpass.reporting.records import aggregate

    domains = evaluation_domains(source)
    targets = domains[1:]
    rows = aggregate([r for r in records if r.get("train_dataset", source) == source], metric, notes=notes)
    points: List[Point] = []
    for method, cells in rows.items():
        stages = sorted({d.partition("@")[2] for d in cells if d.partition("@")[2].startswith("wise")},
                        key=lambda s: float(s[4:]))
        for stage in [""] + stages:
            key = (lambda d: f"{d}@{stage}") if stage else (lambda d: d)
            per = {d: cells.get(key(d)) for d in domains}
            if per[source] is None or any(per[t] is None for t in targets):
                continue
            y = sum(per[t][0] for t in targets) / len(targets)
            points.append({"method": method, "alpha": float(stage[4:]) if stage else None, "x": per[source][0],
                           "y": y, "cells": {d: per[d][0] for d in domains},
                           "seeds": min(c[2] for c in per.values())})
    return points


def render_points(points: List[Point], fmt: str = "terminal", metric: str = "top1", notes: Sequence[str] = ()) -> str:
    from clip_convpass.registry import evaluation_domains
    from clip_convpass.reporting.format import domain_label, order_rows, render_rows, row_label

    if fmt == "json":
        return json.dumps({"metric": metric, "points": points, "notes": list(notes)}, indent=2, allow_nan=False)
    domains = list(points[0]["cells"]) if points else evaluation_domains("ImageNet")
    headers = ["Method", "WiSE-FT alpha"] + [domain_label(d) for d in domains] + ["Shifted avg", "Seeds"]
    order = {m: i for i, m in enumerate(order_rows({p["method"] for p in points}))}
    body = []
    for p in sorted(points, key=lambda p: (order[p["method"]], -1 if p["alpha"] is None else p["alpha"])):
        if p["alpha"] is not None:
            alpha = f"{p['alpha']:g}"
        else:  # the method's own result: zero-shot CLIP's point, or the final model of any other method
            alpha = "zero-shot" if p["method"].split(" [", 1)[0] == ZERO_SHOT_ROW else "final"
        body.append([row_label(p["method"]), alpha] + [f"{p['cells'][d]:.2f}" for d in domains]
                    + [f"{p['y']:.2f}", str(p["seeds"])])
    title = f"Effective robustness: {METRIC_LABELS[metric]} (%), mean over seeds; alpha = WiSE-FT interpolation"
    return render_rows(headers, body, fmt, notes, title)


def plot_points(points: List[Point], path: str | Path, metric: str = "top1") -> None:
    """Each method's WiSE-FT curve (alpha 0 -> 1) and trained point; the zero-shot point is a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clip_convpass.reporting.format import order_rows, row_label

    fig, ax = plt.subplots(figsize=(6.5, 5))
    by_method: Dict[str, List[Point]] = {}
    for p in points:
        by_method.setdefault(p["method"], []).append(p)
    for method in order_rows(by_method):
        pts = by_method[method]
        if method.split(" [", 1)[0] == ZERO_SHOT_ROW:
            for p in pts:
                ax.scatter([p["x"]], [p["y"]], marker="*", s=180, color="black", zorder=5, label=row_label(method))
            continue
        curve = sorted((p for p in pts if p["alpha"] is not None), key=lambda p: p["alpha"])
        trained = [p for p in pts if p["alpha"] is None]
        line = None
        if curve:
            (line,) = ax.plot([p["x"] for p in curve], [p["y"] for p in curve], marker=".", ms=4,
                              label=f"{row_label(method)} (WiSE-FT)")
        color = line.get_color() if line is not None else None
        for p in trained:
            ax.scatter([p["x"]], [p["y"]], marker="o", s=40, color=color, zorder=4,
                       label=None if line is not None else row_label(method))
    ax.set_xlabel(f"ImageNet {METRIC_LABELS[metric]} (%)")
    ax.set_ylabel(f"shifted test sets, average {METRIC_LABELS[metric]} (%)")
    ax.set_title("Effective robustness (star: zero-shot CLIP; dots: final models)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def has_zero_shot(points: List[Point]) -> Tuple[bool, str]:
    ok = any(p["method"].split(" [", 1)[0] == ZERO_SHOT_ROW for p in points)
    return ok, "" if ok else "no zero-shot CLIP results (ZeroShotCLIP) under these roots: the zero-shot point is missing"


@REPORT_VIEW_REGISTRY.register
class RobustnessView(ReportView):
    NAME = "robustness"
    HELP = "ImageNet vs shifted-average accuracy per method and WiSE-FT alpha (table + plot)"
    EMPTY = "No method has results on ImageNet and all its shifted test sets under these roots"

    @classmethod
    def build(cls, records, metric, notes, methods=None):
        points = [p for p in robustness_points(records, metric, notes) if selected(p["method"], methods)]
        if points and not has_zero_shot(points)[0]:
            notes.append(has_zero_shot(points)[1])
        return points

    render = staticmethod(render_points)
    plot = staticmethod(plot_points)
