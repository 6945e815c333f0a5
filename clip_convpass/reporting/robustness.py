"""Effective-robustness view (Taori et al. 2020; Radford et al. 2021; Wortsman et al. 2022): ImageNet
accuracy (x) against the average over the shifted test sets (y) for every method, and for every WiSE-FT
alpha of the fine-tuned ones (clip_convpass.wiseft), on probit (logit-scaled) axes, with the linear fit of
the baseline models in those axes, the y = x line, and each model's effective robustness: its shifted
accuracy minus the fit's at its ImageNet accuracy (percentage points). The baseline models are the final
models of every fine-tuned method shown (no zoo of standard ImageNet models is at hand here); zero-shot CLIP
and WiSE-FT points are measured against them. Built from results.json files only.

    python -m clip_convpass.report OUTPUT_ROOT --robustness [--format markdown] [--plot robustness.png]
"""
from __future__ import annotations

import json
from pathlib import Path
from statistics import NormalDist
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
    add_effective_robustness(points)
    return points


def probit(percent: float) -> float:
    """The probit (inverse normal CDF) of an accuracy in %, clipped away from 0 and 100."""
    return NormalDist().inv_cdf(min(max(percent / 100.0, 1e-4), 1 - 1e-4))


def inverse_probit(z: float) -> float:
    return 100.0 * NormalDist().cdf(z)


def is_baseline(p: Point) -> bool:
    return p["alpha"] is None and str(p["method"]).split(" [", 1)[0] != ZERO_SHOT_ROW


def baseline_fit(points: List[Point]) -> Optional[Tuple[float, float]]:
    """(slope, intercept) of the least-squares line through the baseline models in probit axes; None with
    fewer than two distinct ImageNet accuracies."""
    base = [(probit(p["x"]), probit(p["y"])) for p in points if is_baseline(p)]
    if len({x for x, _ in base}) < 2:
        return None
    mx = sum(x for x, _ in base) / len(base)
    my = sum(y for _, y in base) / len(base)
    slope = sum((x - mx) * (y - my) for x, y in base) / sum((x - mx) ** 2 for x, _ in base)
    return slope, my - slope * mx


def add_effective_robustness(points: List[Point]) -> Optional[Tuple[float, float]]:
    """Each point's effective robustness (pp above the baseline fit; None without a fit); returns the fit."""
    fit = baseline_fit(points)
    for p in points:
        p["effective_robustness"] = None if fit is None else p["y"] - inverse_probit(fit[0] * probit(p["x"]) + fit[1])
    return fit


def render_points(points: List[Point], fmt: str = "terminal", metric: str = "top1", notes: Sequence[str] = ()) -> str:
    from clip_convpass.registry import evaluation_domains
    from clip_convpass.reporting.format import domain_label, order_rows, render_rows, row_label

    if fmt == "json":
        return json.dumps({"metric": metric, "points": points, "notes": list(notes)}, indent=2, allow_nan=False)
    domains = list(points[0]["cells"]) if points else evaluation_domains("ImageNet")
    headers = ["Method", "WiSE-FT alpha"] + [domain_label(d) for d in domains] + ["Shifted avg", "Eff. robustness (pp)",
                                                                                  "Seeds"]
    order = {m: i for i, m in enumerate(order_rows({p["method"] for p in points}))}
    body = []
    for p in sorted(points, key=lambda p: (order[p["method"]], -1 if p["alpha"] is None else p["alpha"])):
        if p["alpha"] is not None:
            alpha = f"{p['alpha']:g}"
        else:  # the method's own result: zero-shot CLIP's point, or the final model of any other method
            alpha = "zero-shot" if p["method"].split(" [", 1)[0] == ZERO_SHOT_ROW else "final"
        er = p.get("effective_robustness")
        body.append([row_label(p["method"]), alpha] + [f"{p['cells'][d]:.2f}" for d in domains]
                    + [f"{p['y']:.2f}", f"{er:+.2f}" if er is not None else "n/a", str(p["seeds"])])
    title = f"Effective robustness: {METRIC_LABELS[metric]} (%), mean over seeds; alpha = WiSE-FT interpolation"
    return render_rows(headers, body, fmt, notes, title)


def plot_points(points: List[Point], path: str | Path, metric: str = "top1") -> None:
    """Probit axes; each method's WiSE-FT curve (alpha 0 -> 1) and final model in its style, zero-shot CLIP a
    black star, the baseline fit (solid grey) and y = x (dotted); the legend right of the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from clip_convpass.reporting.format import order_rows, row_label
    from clip_convpass.reporting.style import figure_styles, legend_outside, save

    to_probit = np.vectorize(probit, otypes=[float])
    from_probit = np.vectorize(inverse_probit, otypes=[float])
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.set_xscale("function", functions=(to_probit, from_probit))
    ax.set_yscale("function", functions=(to_probit, from_probit))
    by_method: Dict[str, List[Point]] = {}
    for p in points:
        by_method.setdefault(p["method"], []).append(p)
    methods = order_rows(by_method)
    styles = figure_styles(methods)
    for method in methods:
        pts = by_method[method]
        if method.split(" [", 1)[0] == ZERO_SHOT_ROW:
            for p in pts:
                ax.scatter([p["x"]], [p["y"]], marker="*", s=180, color="black", zorder=5, label=row_label(method))
            continue
        style = styles[method]
        curve = sorted((p for p in pts if p["alpha"] is not None), key=lambda p: p["alpha"])
        if curve:
            ax.plot([p["x"] for p in curve], [p["y"] for p in curve], color=style.color, linestyle=style.linestyle,
                    marker=".", ms=4, lw=1.2, label=f"{row_label(method)} (WiSE-FT)")
        for p in pts:
            if p["alpha"] is None:
                ax.scatter([p["x"]], [p["y"]], marker=style.marker, s=45, color=style.color, zorder=4,
                           label=None if curve else row_label(method))
    xs = [p["x"] for p in points] or [50.0]
    ys = [p["y"] for p in points] or [50.0]

    def limits(values):  # every point visible (0 % and 100 % sit at the clipped ends), a margin in probit units
        z = [probit(v) for v in values]
        return inverse_probit(min(z) - 0.3), inverse_probit(max(z) + 0.3)

    xlim, ylim = limits(xs), limits(ys)
    grid = from_probit(np.linspace(to_probit(min(xlim[0], ylim[0])), to_probit(max(xlim[1], ylim[1])), 200))
    ax.plot(grid, grid, linestyle=":", color="#888888", lw=1, label="y = x")
    fit = baseline_fit(points)
    if fit is not None:
        ax.plot(grid, from_probit(fit[0] * to_probit(grid) + fit[1]), color="#555555", lw=1,
                label="baseline fit (final models, probit)")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ticks = (0.1, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 99.9)
    for lim, set_ticks, set_labels in ((xlim, ax.set_xticks, ax.set_xticklabels),
                                       (ylim, ax.set_yticks, ax.set_yticklabels)):
        shown, gap = [], (probit(lim[1]) - probit(lim[0])) / 10  # at most ~10 labels that do not collide
        for t in (t for t in ticks if lim[0] <= t <= lim[1]):
            if not shown or probit(t) - probit(shown[-1]) >= gap:
                shown.append(t)
        set_ticks(shown)
        set_labels([f"{t:g}" for t in shown])
    ax.set_xlabel(f"ImageNet {METRIC_LABELS[metric]} (%, probit scale)")
    ax.set_ylabel(f"shifted test sets, average {METRIC_LABELS[metric]} (%, probit scale)")
    ax.set_title("Effective robustness", fontsize=10)
    legend_outside(ax)
    save(fig, path)


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
        if points and all(p["effective_robustness"] is None for p in points):
            notes.append("fewer than two final fine-tuned models: no baseline fit, effective robustness n/a")
        if points and not has_zero_shot(points)[0]:
            notes.append(has_zero_shot(points)[1])
        return points

    render = staticmethod(render_points)
    plot = staticmethod(plot_points)
