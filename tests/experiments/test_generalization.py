"""Base-to-new and cross-dataset transfer: the grids, the skip of finished work, the two report views, and the
Average row's arithmetic."""
import json

import pytest
from conftest import TINY

from clip_convpass.data.synthetic import build_synthetic_tree
from clip_convpass.registry import find_row
from clip_convpass.reporting.base2new import base2new_table, harmonic_mean
from clip_convpass.reporting.cross_dataset import cross_dataset_table
from clip_convpass.reporting.format import NA
from clip_convpass.reporting.records import aggregate, collect


def record(dataset, subsample, seed, top1, name="CoOp", train_subsample="base", na=""):
    return {"dataset": dataset, "train_dataset": dataset, "trainer": "CoOp", "name": name, "seed": seed, "shots": 16,
            "split": "test", "stage": "final", "experiment": "e", "subsample": subsample,
            "train_classes": {"dataset": dataset, "subsample": train_subsample}, "transfer": subsample == "new",
            "metrics": {"top1": None if na else top1}, **({"not_applicable": na} if na else {})}


def test_average_row_is_the_hm_of_averaged_base_and_new_not_the_mean_of_hms():
    records = [record("OxfordPets", "base", s, b) for s, b in ((1, 90.0), (2, 94.0))] + \
              [record("OxfordPets", "new", s, n) for s, n in ((1, 96.0), (2, 98.0))] + \
              [record("EuroSAT", "base", s, b) for s, b in ((1, 80.0), (2, 90.0))] + \
              [record("EuroSAT", "new", s, n) for s, n in ((1, 40.0), (2, 50.0))]
    table = {(e["dataset"], e["method"]): e for e in base2new_table(records)}
    pets, eurosat, avg = table[("OxfordPets", "CoOp")], table[("EuroSAT", "CoOp")], table[("Average", "CoOp")]
    assert pets["base"][:1] == (92.0,) and pets["new"][0] == 97.0 and pets["base"][2] == 2
    assert pets["hm"] == pytest.approx(2 * 92 * 97 / (92 + 97))
    assert avg["base"][0] == pytest.approx((92 + 85) / 2) and avg["new"][0] == pytest.approx((97 + 45) / 2)
    assert avg["hm"] == pytest.approx(harmonic_mean(88.5, 71.0))
    assert avg["hm"] != pytest.approx((pets["hm"] + eurosat["hm"]) / 2)
    # n/a on one dataset's new classes: that HM and the average's new and HM are n/a, never a number
    records += [record("DescribableTextures", "base", 1, 70.0, "LP"),
                record("DescribableTextures", "new", 1, None, "LP", na="class-bound")]
    lp = {e["dataset"]: e for e in base2new_table(records) if e["method"] == "LP"}
    dtd = lp["DescribableTextures"]
    assert dtd["hm"] == NA and dtd["new"][0] is None
    # runs trained on all classes (Table 2, few-shot) never enter the base-to-new table, and it never enters theirs
    assert not base2new_table([record("OxfordPets", "all", 1, 50.0, train_subsample="all")])
    assert not aggregate(records)


def test_a_published_average_alone_shows_on_the_average_row_over_all_datasets_only():
    """MaPLe's repository publishes only the 11-dataset average: the Average row carries it, when ours spans them."""
    from clip_convpass.registry import trainable_datasets

    datasets = trainable_datasets()
    records = [record(d, h, 1, 70.0, name="MaPLe") for d in datasets for h in ("base", "new")]
    avg = {e["dataset"]: e for e in base2new_table(records)}["Average"]
    published = find_row("MaPLe").paper_tables["base2new"]["Average"]
    assert avg["paper"] == {"base": published[0], "new": published[1], "hm": harmonic_mean(*published)}
    assert round(avg["paper"]["hm"], 2) == 78.55  # the README's HM: the pair was transcribed as published
    fewer = [r for r in records if r["dataset"] != datasets[0]]
    assert {e["dataset"]: e for e in base2new_table(fewer)}["Average"]["paper"] is None


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    build_synthetic_tree(root, num_classes=4, train_per_class=4, val_per_class=2, shift_per_class=1)
    build_synthetic_tree(root, num_classes=5, train_per_class=4, val_per_class=2, split_val_per_class=2,
                         source="OxfordPets")
    return str(root)


@pytest.mark.slow
def test_base2new_and_cross_dataset_grids_end_to_end(two_sources, tiny_weights, tmp_path, capsys):
    from clip_convpass.cli.report import main as report
    from clip_convpass.experiments.grid import main as grid
    from clip_convpass.experiments.grid import run_base2new_grid, run_cross_dataset_grid

    rows = [find_row(n) for n in ("ZeroShotCLIP", "LinearProbeCLIP", "ConvpassCLIP")]
    out = tmp_path / "out"
    opts = ["MODEL.PRETRAINED", tiny_weights, "OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "1",
            "DATASET.NUM_SHOTS", "2", "DATASET.VAL_SHOTS", "1",
            "DATASET.SPLIT_DIR", str(tmp_path / "splits")]
    kw = dict(override_configs=[TINY], sweeps=False)
    run_base2new_grid(rows, ["OxfordPets"], [1], two_sources, out, opts, **kw)
    run_cross_dataset_grid(rows, ["OxfordPets"], [1], two_sources, out, opts, **kw)
    results = sorted(out.rglob("results.json"))
    stamps = {p: p.stat().st_mtime_ns for p in results}
    # finished cells and evaluations are skipped when the grids run again
    run_base2new_grid(rows, ["OxfordPets"], [1], two_sources, out, opts, **kw)
    run_cross_dataset_grid(rows, ["OxfordPets"], [1], two_sources, out, opts, **kw)
    assert sorted(out.rglob("results.json")) == results and all(p.stat().st_mtime_ns == t for p, t in stamps.items())

    # a stored new-class result that predates transfer records (or is of other weights) is evaluated again
    new_file = next(out.rglob("ConvpassCLIP/*_base/seed1/eval/OxfordPets-new/results.json"))
    old = {k: v for k, v in json.loads(new_file.read_text()).items() if k != "train_classes"}
    new_file.write_text(json.dumps(old))
    run_base2new_grid(rows, ["OxfordPets"], [1], two_sources, out, opts, **kw)
    assert "train_classes" in json.loads(new_file.read_text())
    records = collect([out])
    b2n = {(e["dataset"], e["method"]): e for e in base2new_table(records)}
    for method in ("ZeroShotCLIP", "ConvpassCLIP"):
        e = b2n[("OxfordPets", method)]
        assert e["base"][2] == e["new"][2] == 1 and e["hm"] == pytest.approx(harmonic_mean(e["base"][0], e["new"][0]))
    assert b2n[("OxfordPets", "LinearProbeCLIP")]["hm"] == NA and b2n[("Average", "LinearProbeCLIP")]["hm"] == NA
    new = json.loads(next(out.rglob("ConvpassCLIP/*_base/seed1/eval/OxfordPets-new/results.json")).read_text())
    assert new["transfer"] and new["class_bound_rebuilt"] and new["n_classes"] == 2  # 5 classes: 3 base, 2 new

    xd = {e["method"]: e for e in cross_dataset_table(records)}
    assert xd["LinearProbeCLIP"]["cells"]["OxfordPets"][0] is None and xd["LinearProbeCLIP"]["average"] == NA
    assert xd["ConvpassCLIP"]["cells"]["ImageNet"][2] == 1 and xd["ConvpassCLIP"]["average"] is not None
    pets = json.loads(next(out.rglob("ImageNet/ConvpassCLIP/*/seed1/eval/OxfordPets/results.json")).read_text())
    assert pets["transfer"] and pets["train_dataset"] == "ImageNet" and pets["n_classes"] == 5
    # the Table 2 view sees the ImageNet cells only: no base-trained rows, no transfer columns
    table2 = aggregate(records)
    assert set(table2) == {r.name for r in rows} and all("OxfordPets" not in cells for cells in table2.values())

    common = ["--data", two_sources, "--output", str(out), "--methods", *(r.name for r in rows), "--seeds", "1",
              "--override-config", str(TINY), *opts]
    capsys.readouterr()
    assert grid([*common, "--base2new", "OxfordPets", "--status"]) == 0
    assert "[grid] 3 done of 3 cells" in capsys.readouterr().out
    assert grid([*common, "--cross-dataset", "OxfordPets", "--status"]) == 0
    assert "[grid] 3 done of 3 cells" in capsys.readouterr().out
    assert report([str(out), "--base2new", "--format", "json", "--plot", str(tmp_path / "b2n.png")]) == 0
    rows_json = json.loads(capsys.readouterr().out)["rows"]
    assert {r["dataset"] for r in rows_json} == {"OxfordPets", "Average"}
    assert report([str(out), "--cross-dataset", "--plot", str(tmp_path / "xd.png")]) == 0
    assert "n/a" in capsys.readouterr().out and (tmp_path / "xd.png").stat().st_size > 1000


@pytest.mark.slow
def test_generalization_demo(tmp_path, capsys):
    """`make demo-generalization`: both protocols for every row of their tables, n/a where a method has no
    transfer rule, tables and plots written."""
    from clip_convpass.experiments import demo
    from clip_convpass.registry import method_rows

    out = tmp_path / "gen"
    assert demo.main(["--generalization", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Base-to-new generalization" in printed and "Cross-dataset transfer" in printed
    b2n = json.loads((out / "base2new.json").read_text())["rows"]
    assert {r["method"] for r in b2n} == {r.name for r in method_rows(lambda r: "base2new" in r.tables)}
    assert {r["dataset"] for r in b2n} == {*demo.FEWSHOT_DEMO_DATASETS, "Average"}
    assert all(r["hm"] == NA for r in b2n if r["method"] in ("LinearProbeCLIP", "TipAdapterF"))
    assert all(isinstance(r["hm"], float) for r in b2n if r["method"] in ("ZeroShotCLIP", "CoCoOp", "ConvpassCLIP"))
    xd = json.loads((out / "cross_dataset.json").read_text())["rows"]
    assert {r["method"] for r in xd} == {r.name for r in method_rows(lambda r: "cross_dataset" in r.tables)}
    assert (out / "base2new.png").stat().st_size > 1000 and (out / "cross_dataset.png").stat().st_size > 1000


@pytest.mark.slow
def test_base2new_and_xd_scripts(two_sources, tiny_weights, tmp_path):
    import os
    import subprocess
    import sys

    from conftest import REPO

    def sh(script, *args, **env):
        return subprocess.run(["bash", str(REPO / "scripts" / script), *args], capture_output=True, text=True,
                              env={**os.environ, "PYTHON": sys.executable, "DATA": two_sources, **env}, timeout=600)

    tiny = ["MODEL.BACKBONE", "tiny-ViT-Q", "MODEL.PRETRAINED", tiny_weights, "INPUT.SIZE", "(32,32)", "PREC", "fp32",
            "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "1", "DATASET.SPLIT_DIR", str(tmp_path / "splits")]
    out = tmp_path / "b2n"
    r = sh("base2new.sh", "ConvpassCLIP", "vit_b16", "oxford_pets", "1", *tiny, OUTPUT=str(out), SHOTS="2")
    assert r.returncode == 0, r.stderr[-2000:]
    cell = out / "OxfordPets" / "ConvpassCLIP" / "vit_b16_2shots_base" / "seed1"
    base, new = (json.loads((cell / "eval" / f"OxfordPets-{h}" / "results.json").read_text()) for h in ("base", "new"))
    assert base["n_classes"] == 3 and new["n_classes"] == 2 and new["transfer"] and not base["transfer"]
    r = sh("base2new.sh", "ConvpassCLIP", "vit_b16", "oxford_pets", "1", *tiny, OUTPUT=str(out), SHOTS="2")
    assert r.stdout.count("skipping") == 2
    out = tmp_path / "xd"
    r = sh("xd.sh", "ConvpassCLIP", "vit_b16", "1", "--targets", "oxford_pets", *tiny, "DATASET.NUM_SHOTS", "2",
           "DATASET.VAL_SHOTS", "1", OUTPUT=str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    pets = json.loads(next(out.rglob("ImageNet/ConvpassCLIP/*/seed1/eval/OxfordPets/results.json")).read_text())
    assert pets["transfer"] and pets["class_bound_rebuilt"] and pets["train_dataset"] == "ImageNet"
