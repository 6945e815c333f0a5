"""One style per method for every figure: colour, marker and line style.

A registered row keeps its style in every plot: its family (the metafile's `family`: zero-shot, probe,
prompt, cache, convpass, adapter, vpt, ...) gives the hue, its place among the family's rows the shade,
and its place among all rows the marker, so no two registered rows share a style. Within one figure,
names that would still look alike (two experiments of one row, rows not registered) get another line
style and marker until every series is distinct. Legends go outside the axes (`legend_outside`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Iterable, List

from clip_convpass.registry import method_rows
from clip_convpass.reporting.format import base_name

# family -> matplotlib colormap (a hue); the shades within a family go from darker to lighter
FAMILY_COLORMAPS = {"zero-shot": "Greys", "probe": "Greys", "prompt": "Blues", "cache": "Oranges",
                    "convpass": "Reds", "adapter": "Greens", "vpt": "Purples", "other": "YlOrBr"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*", "8", "H", "d")
LINESTYLES = ("-", "--", "-.", ":")
FALLBACK_COLORS = ("#17becf", "#bcbd22", "#8c564b", "#e377c2", "#7f7f7f", "#1f77b4")


@dataclass(frozen=True)
class Style:
    color: str
    marker: str
    linestyle: str = "-"

    def kwargs(self) -> dict:
        return {"color": self.color, "marker": self.marker, "linestyle": self.linestyle}


def _hex(rgba) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgba[:3])


def registered_styles() -> Dict[str, Style]:
    """{row name: its style}, from the registered rows alone (the same in every figure)."""
    import matplotlib

    rows = method_rows()
    by_family: Dict[str, List[str]] = {}
    for r in rows:
        by_family.setdefault(r.family or "other", []).append(r.name)
    styles = {}
    for i, r in enumerate(rows):
        family = r.family or "other"
        members = by_family[family]
        k = members.index(r.name)
        if family == "zero-shot":
            color = "#333333"  # near black: the paper's numbers are drawn in black
        else:
            cmap = matplotlib.colormaps[FAMILY_COLORMAPS.get(family, "YlOrBr")]
            # shades from dark to light: distinct, none too pale to see; the probe's greys stay clear of black
            dark, light = (0.65, 0.4) if family == "probe" else (0.9, 0.45)
            shade = dark - (dark - light) * k / max(1, len(members) - 1)
            color = _hex(cmap(shade))
        styles[r.name] = Style(color, MARKERS[i % len(MARKERS)])
    return styles


def figure_styles(names: Iterable[str]) -> Dict[str, Style]:
    """A distinct style for every series of one figure: registered rows keep theirs; variants of a row and
    unregistered names take another line style / marker until no two series look the same."""
    registered = registered_styles()
    out: Dict[str, Style] = {}
    used = set()
    fallback = 0
    for name in names:
        style = registered.get(name) or registered.get(base_name(name))
        if style is None:
            style = Style(FALLBACK_COLORS[fallback % len(FALLBACK_COLORS)], MARKERS[fallback % len(MARKERS)])
            fallback += 1
        k = 0
        candidate = style
        while (candidate.color, candidate.marker, candidate.linestyle) in used:
            k += 1
            candidate = replace(style, linestyle=LINESTYLES[k % len(LINESTYLES)],
                                marker=MARKERS[(MARKERS.index(style.marker) + k // len(LINESTYLES)) % len(MARKERS)])
        used.add((candidate.color, candidate.marker, candidate.linestyle))
        out[name] = candidate
    return out


def legend_outside(ax_or_fig, handles=None, labels=None, below: bool = False, **kwargs):
    """A legend that covers no data: right of the axes, or below the figure's panels."""
    args = (handles, labels) if handles is not None else ()
    if below:
        return ax_or_fig.legend(*args, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=7,
                                frameon=False, **kwargs)
    return ax_or_fig.legend(*args, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=7,
                            frameon=False, **kwargs)


PLOT_FORMATS = (".png", ".pdf", ".svg")


def save(fig, path) -> None:
    """PNG (raster) or PDF / SVG (vector, for papers), by the path's suffix; the legend outside is kept."""
    from pathlib import Path

    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def plot_grouped_bars(path, groups: List[str], series: Dict[str, List], ylabel: str, title: str) -> None:
    """Bars per group, one per series in its style; a value None is missing (no bar), "n/a" is marked as not
    applicable (a grey "n/a" at the base, never a bar of 0). PNG, PDF or SVG by the path's suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from clip_convpass.reporting.format import NA, row_label

    styles = figure_styles(series)
    fig, ax = plt.subplots(figsize=(1.3 * len(groups) + 1.5, 3.8))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [j + i * width for j, v in enumerate(values) if isinstance(v, (int, float))]
        ys = [v for v in values if isinstance(v, (int, float))]
        ax.bar(xs, ys, width, color=styles[name].color, edgecolor="#333333", linewidth=0.5)
        for x, y in zip(xs, ys):  # a 0 % bar is a result, not a missing one: keep it visible
            if y == 0:
                ax.plot([x - width / 2, x + width / 2], [0, 0], color=styles[name].color, lw=3)
        for j, v in enumerate(values):
            if v == NA:
                ax.text(j + i * width, 1, NA, rotation=90, ha="center", va="bottom", fontsize=6, color="#666666")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    # every series in its own colour, also one that is n/a everywhere (it draws no bar to take a colour from)
    legend_outside(ax, [Patch(facecolor=styles[n].color, edgecolor="#333333", linewidth=0.5) for n in series],
                   [row_label(n) for n in series])
    save(fig, path)
