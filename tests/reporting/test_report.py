import csv
import io
import json

import pytest

from clip_convpass.cli.report import main
from clip_convpass.registry import find_row
from clip_convpass.reporting.records import aggregate, collect
from clip_convpass.reporting.table2 import build_table, plot, render

CONVPASS_PAPER_IMAGENET = find_row("ConvpassCLIP").paper["ImageNet"]


def write(root, name, trainer, dataset, seed, top1, stage="final", ts="2026-01-01T00:00:00"):
    d = root / name / f"seed{seed}" / ("eval" if stage == "final" else "eval_step0") / dataset
    d.mkdir(parents=True, exist_ok=True)
    rec = {"dataset": dataset, "split": "test", "metrics": {"top1": top1, "top5": 99.0, "macro_f1": 1.0,
           "mean_per_class_acc": 1.0}, "trainer": trainer, "name": name, "seed": seed, "stage": stage,
           "timestamp": ts}
    (d / "results.json").write_text(json.dumps(rec))


@pytest.fixture
def results(tmp_path):
    for seed, v in zip((1, 2, 3), (60.0, 62.0, 64.0)):
        write(tmp_path, "ZeroShotCLIP", "ZeroShotCLIP", "ImageNet", seed, v)
        for ds in ("ImageNetV2", "ImageNetSketch", "ImageNetR"):  # no ImageNetA: a missing cell
            write(tmp_path, "ZeroShotCLIP", "ZeroShotCLIP", ds, seed, v - 10)
    for ds, v in zip(("ImageNet", "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"), (70, 60, 50, 40, 80)):
        write(tmp_path, "ConvpassCLIP", "ConvpassCLIP", ds, 1, float(v))
    return tmp_path


def test_mean_std_missing_and_target_average(results):
    rows = aggregate(collect([results]))
    m, s, n = rows["ZeroShotCLIP"]["ImageNet"]
    assert (m, n) == (62.0, 3) and s == pytest.approx(2.0)  # sample std (ddof=1)
    assert rows["ConvpassCLIP"]["ImageNet"] == (70.0, 0.0, 1)
    table = {r["method"]: r for r in build_table(rows, paper=True)}
    assert table["ZeroShotCLIP"]["cells"]["ImageNetA"] is None
    assert table["ZeroShotCLIP"]["target_avg"] is None  # never averaged over a missing cell
    assert table["ConvpassCLIP"]["target_avg"][0] == pytest.approx((60 + 50 + 40 + 80) / 4)
    assert table["ConvpassCLIP"]["delta"]["ImageNet"] == pytest.approx(70 - CONVPASS_PAPER_IMAGENET)
    assert table["ZeroShotCLIP"]["delta"]["ImageNetA"] is None
    text = render(build_table(rows, paper=True), paper=True)
    assert "missing" in text and "62.00 ± 2.00 (n=3)" in text
    assert f"{70 - CONVPASS_PAPER_IMAGENET:+.2f}" in text
    assert [r["method"] for r in build_table(rows)] == ["ZeroShotCLIP", "ConvpassCLIP"]  # the paper's row order


def test_formats(results, tmp_path):
    rows = aggregate(collect([results]))
    table = build_table(rows)
    parsed = list(csv.reader(io.StringIO(render(table, "csv"))))
    assert parsed[0][:6] == ["Method", "ImageNet", "-V2", "-Sketch", "-A", "-R"]
    assert parsed[1][4] == "missing"
    assert json.loads(render(table, "json"))[0]["cells"]["ImageNetA"] is None
    assert render(table, "markdown").startswith("| Method")
    plot(table, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_newest_record_for_a_seed_wins_and_stages_are_separate(tmp_path):
    write(tmp_path / "a", "X", "ConvpassCLIP", "ImageNet", 1, 10.0, ts="2026-01-01T00:00:00")
    write(tmp_path / "b", "X", "ConvpassCLIP", "ImageNet", 1, 30.0, ts="2026-02-01T00:00:00")
    write(tmp_path / "b", "X", "ConvpassCLIP", "ImageNet", 1, 5.0, stage="step0")
    rows = aggregate(collect([tmp_path]))
    assert rows["X"]["ImageNet"] == (30.0, 0.0, 1)
    assert rows["X"]["ImageNet@step0"] == (5.0, 0.0, 1)


def test_cli(results, tmp_path, capsys):
    assert main([str(results), "--paper"]) == 0
    assert "Convpass_CLIP" in capsys.readouterr().out
    assert main([str(tmp_path / "missing")]) == 2  # no such folder: a user error
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1  # a folder without results: nothing to show
