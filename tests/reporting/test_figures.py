"""Figures: one style per method everywhere, no style twice in a figure, legends outside the data (checked
from matplotlib's own bounding boxes), the effective-robustness fit in probit axes, vector output."""
import colorsys
import math

import matplotlib
import pytest

matplotlib.use("Agg")

from clip_convpass.registry import method_rows  # noqa: E402
from clip_convpass.reporting import style  # noqa: E402
from clip_convpass.reporting.fewshot import plot_curves  # noqa: E402
from clip_convpass.reporting.robustness import (  # noqa: E402
    add_effective_robustness,
    baseline_fit,
    plot_points,
    probit,
    render_points,
)
from clip_convpass.reporting.table2 import plot  # noqa: E402

DOMAINS = ["ImageNet", "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"]


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions draw, kept open instead of written."""
    captured = []
    monkeypatch.setattr(style, "save", lambda fig, path: captured.append(fig))
    return captured


def hue(color):
    r, g, b = (int(color[i:i + 2], 16) / 255 for i in (1, 3, 5))
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    return h, s


def test_every_registered_row_has_its_own_style_and_families_share_a_hue():
    styles = style.registered_styles()
    rows = method_rows()
    assert set(styles) == {r.name for r in rows}
    assert len({(s.color, s.marker) for s in styles.values()}) == len(styles)
    assert style.registered_styles() == styles  # the same in every figure
    by_family = {}
    for r in rows:
        by_family.setdefault(r.family, []).append(hue(styles[r.name].color))
    for family, hues in by_family.items():
        coloured = [h for h, s in hues if s > 0.2]
        if len(coloured) > 1:  # greys have no hue; hue is an angle (red sits at both ends)
            assert max(min(abs(a - b), 1 - abs(a - b)) for a in coloured for b in coloured) < 0.08, family


def test_a_figure_never_repeats_a_style():
    names = [r.name for r in method_rows()] + ["CoOp [shots=8]", "CoOp [shots=16]", "Unregistered A", "Unregistered B"]
    styles = style.figure_styles(names)
    assert len({(s.color, s.marker, s.linestyle) for s in styles.values()}) == len(names)
    assert styles["CoOp [shots=8]"].color == styles["CoOp"].color  # a variant keeps its row's colour


def legend_clear_of_data(fig):
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    assert legends, "the figure has a legend"
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            if not ax.axison:
                continue
            assert not box.overlaps(ax.get_window_extent(renderer)), "legend over an axes"
            for artist in [*ax.patches, *ax.lines, *ax.collections]:
                extent = artist.get_window_extent(renderer)
                if extent.width > 0 and extent.height > 0:
                    assert not box.overlaps(extent), f"legend over {artist}"


def table_rows(n):
    names = [r.name for r in method_rows()][:n]
    return [{"method": m, "cells": {d: (40.0 + i + k, 1.0, 3) for k, d in enumerate(DOMAINS)},
             "target_avg": (45.0 + i, 0.0, 3), "paper": {d: 50.0 for d in DOMAINS}} for i, m in enumerate(names)]


def test_table2_plot_keeps_its_legend_outside_the_bars(figures, tmp_path):
    plot(table_rows(16), tmp_path / "t.png", paper=True)
    (fig,) = figures
    legend_clear_of_data(fig)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "paper" in labels and len(labels) == 17


def test_fewshot_curves_share_one_legend_below_the_panels(figures, tmp_path):
    names = [r.name for r in method_rows()][:8]
    curves = {m: {d: {k: (30.0 + i + k, 1.0, 3) for k in (1, 2, 4)} for d in ("OxfordPets", "EuroSAT", "Average")}
              for i, m in enumerate(names)}
    plot_curves(curves, tmp_path / "c.png")
    (fig,) = figures
    legend_clear_of_data(fig)
    lines = [line for ax in fig.axes for line in ax.lines if line.get_label() and not line.get_label().startswith("_")]
    colors = {}
    for line in fig.axes[0].lines:
        colors.setdefault((line.get_color(), line.get_marker(), line.get_linestyle()), 0)
    assert len(colors) >= len(names) or not lines


def points():
    pts = []
    for i, m in enumerate(["CoOp", "CoCoOp", "ConvpassCLIP", "TipAdapterF"]):
        pts.append({"method": m, "alpha": None, "x": 60.0 + 4 * i, "y": 45.0 + 2 * i + (i % 2), "cells": {}, "seeds": 3})
        for a in (0.0, 0.5, 1.0):
            pts.append({"method": m, "alpha": a, "x": 55.0 + 4 * i * a, "y": 50.0 + i * a, "cells": {}, "seeds": 3})
    pts.append({"method": "ZeroShotCLIP", "alpha": None, "x": 55.0, "y": 52.0, "cells": {}, "seeds": 1})
    return pts


def test_effective_robustness_is_the_distance_above_the_probit_fit_of_the_final_models():
    import numpy as np

    pts = points()
    fit = add_effective_robustness(pts)
    finals = [p for p in pts if p["alpha"] is None and p["method"] != "ZeroShotCLIP"]
    slope, intercept = np.polyfit([probit(p["x"]) for p in finals], [probit(p["y"]) for p in finals], 1)
    assert fit == pytest.approx((slope, intercept))
    zs = next(p for p in pts if p["method"] == "ZeroShotCLIP")
    from statistics import NormalDist

    expected = zs["y"] - 100 * NormalDist().cdf(slope * probit(zs["x"]) + intercept)
    assert zs["effective_robustness"] == pytest.approx(expected) and expected > 0
    assert abs(sum(p["effective_robustness"] for p in finals)) < 1.0  # the fit runs through the baseline
    assert baseline_fit(pts[:1]) is None
    for p in pts:
        p["cells"] = {d: 50.0 for d in DOMAINS}
    table = render_points(pts, "csv")
    assert "Eff. robustness (pp)" in table.splitlines()[0] and f"{expected:+.2f}" in table


def test_robustness_plot_has_probit_axes_the_fit_and_y_equals_x(figures, tmp_path):
    pts = points()
    add_effective_robustness(pts)
    plot_points(pts, tmp_path / "r.png")
    (fig,) = figures
    ax = fig.axes[0]
    assert ax.get_xscale() == "function" and ax.get_yscale() == "function"
    labels = [line.get_label() for line in ax.lines]
    assert "y = x" in labels and any(label.startswith("baseline fit") for label in labels)
    legend_clear_of_data(fig)
    # probit axes: 50% sits halfway between 16% and 84% (one normal standard deviation either side)
    to_display = ax.transData.transform
    x16, x50, x84 = (to_display((v, 50))[0] for v in (15.865525, 50.0, 84.134475))
    assert math.isclose(x50 - x16, x84 - x50, rel_tol=1e-3)


@pytest.mark.parametrize("suffix, magic", [(".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_plots_write_vector_files(tmp_path, suffix, magic):
    path = tmp_path / f"t{suffix}"
    plot(table_rows(3), path)
    assert path.read_bytes().startswith(magic)


def test_an_unknown_plot_format_is_refused_before_work(tmp_path, capsys):
    from clip_convpass.cli.report import main

    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), "--plot", "x.jpg"])
    assert e.value.code == 2 and ".pdf / .svg" in capsys.readouterr().err
