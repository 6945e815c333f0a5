import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

from clip_convpass.experiments.sweep import run_sweep

CONVPASS_CFG = REPO / "configs" / "trainers" / "ConvpassCLIP" / "vit_b16.yaml"


def tiny_opts(synth, tmp_path):
    return ["MODEL.BACKBONE", "tiny-ViT-Q", "MODEL.PRETRAINED", "none", "INPUT.SIZE", "(32,32)", "PREC", "fp32",
            "DATALOADER.NUM_WORKERS", "0", "DATASET.CLASS_LIST", synth["class_list"], "OPTIM.MAX_EPOCH", "1",
            "DATASET.SPLIT_DIR", str(tmp_path / "splits"), "DEVICE", "cpu"]


def test_sweep_selects_on_val_and_resumes(synth, tmp_path):
    opts = ["DATASET.ROOT", synth["root"], *tiny_opts(synth, tmp_path), "DATASET.NUM_SHOTS", "2",
            "DATASET.VAL_SHOTS", "2", "OPTIM.LR", "0.01"]
    grid = {"TRAINER.CONVPASS.SCALE": ["0.01", "10"]}
    out = tmp_path / "sweep"
    summary = run_sweep(grid, out, str(REPO / "configs/datasets/imagenet.yaml"), str(CONVPASS_CFG), opts)
    on_disk = json.loads((out / "sweep.json").read_text())
    assert len(on_disk["points"]) == 2
    assert on_disk["best"]["val_top1"] == max(p["val_top1"] for p in on_disk["points"])
    for p in on_disk["points"]:
        run_dir = p["run_dir"]
        assert os.path.isfile(os.path.join(run_dir, "eval", "ImageNet_val", "results.json"))
        assert not os.path.exists(os.path.join(run_dir, "eval", "ImageNet"))  # the test split is never touched
        rec = json.loads(open(os.path.join(run_dir, "eval", "ImageNet_val", "results.json")).read())
        assert rec["split"] == "val" and rec["n_images"] == 6 * 2
    first = out / "SCALE=0.01" / "eval" / "ImageNet_val" / "results.json"
    mtime = first.stat().st_mtime_ns
    again = run_sweep(grid, out, str(REPO / "configs/datasets/imagenet.yaml"), str(CONVPASS_CFG), opts)
    assert first.stat().st_mtime_ns == mtime and again["best"] == summary["best"]


def sh(script, args, env_extra, cwd):
    env = {**os.environ, **env_extra, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(REPO / "scripts" / script), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_train_and_eval_scripts_skip_and_force(synth, tmp_path):
    env = {"DATA": synth["root"], "OUTPUT": str(tmp_path / "out")}
    opts = tiny_opts(synth, tmp_path)
    r = sh("train.sh", ["ConvpassCLIP", "vit_b16", "imagenet", "2", "0", *opts], env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    run_dir = tmp_path / "out" / "ImageNet" / "ConvpassCLIP" / "vit_b16_2shots" / "seed0"
    res = run_dir / "eval" / "ImageNet" / "results.json"
    assert json.loads(res.read_text())["seed"] == 0  # seed 0 is honoured, not treated as "unset"
    mtime = res.stat().st_mtime_ns
    r = sh("train.sh", ["ConvpassCLIP", "vit_b16", "imagenet", "2", "0", *opts], env, tmp_path)
    assert r.returncode == 0 and "skipping" in r.stdout and res.stat().st_mtime_ns == mtime
    r = sh("eval.sh", ["ConvpassCLIP", "vit_b16", "2", "0", "--targets", "imagenet_a imagenet_v2", *opts], env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    a = run_dir / "eval" / "ImageNetA" / "results.json"
    assert json.loads(a.read_text())["n_classes"] == 4 and (run_dir / "eval" / "ImageNetV2" / "results.json").is_file()
    a_mtime = a.stat().st_mtime_ns
    r = sh("eval.sh", ["ConvpassCLIP", "vit_b16", "2", "0", "--targets", "imagenet_a", *opts], env, tmp_path)
    assert "skipping" in r.stdout and a.stat().st_mtime_ns == a_mtime
    r = sh("eval.sh", ["ConvpassCLIP", "vit_b16", "2", "0", "--force", "--targets", "imagenet_a", *opts], env, tmp_path)
    assert r.returncode == 0 and a.stat().st_mtime_ns != a_mtime
    r = sh("train.sh", ["ConvpassCLIP", "no_such_config"], env, tmp_path)
    assert r.returncode == 2 and "No method config" in r.stderr


def test_grid_skips_finished_cells_and_resumes_a_partial_one(synth, tmp_path, capsys):
    from clip_convpass.experiments.grid import run_grid
    from clip_convpass.registry import find_row

    methods = [find_row("ZeroShotCLIP"), find_row("ConvpassCLIP")]
    opts = [*tiny_opts(synth, tmp_path), "DATASET.NUM_SHOTS", "2"]
    domains = ["ImageNet", "ImageNetA"]
    dirs = run_grid(methods, [1], synth["root"], tmp_path / "grid", opts, domains=domains)
    files = sorted(p for d in dirs for p in d.rglob("results.json"))
    assert len(files) == 4
    stamps = {p: p.stat().st_mtime_ns for p in files}
    capsys.readouterr()
    run_grid(methods, [1], synth["root"], tmp_path / "grid", opts, domains=domains)
    assert capsys.readouterr().out.count("skipping") == 2
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    victim = dirs[1] / "eval" / "ImageNetA" / "results.json"
    victim.unlink()
    run_grid(methods, [1], synth["root"], tmp_path / "grid", opts, domains=domains)
    assert victim.is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if dirs[0] in p.parents)
    assert "Resuming from" in (dirs[1] / "log.txt").read_text()  # the trained cell was not retrained


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys, toy_method):
    """The demo runs every registered row: a method added in one module (the toy) included."""
    from clip_convpass.experiments import demo
    from clip_convpass.registry import method_rows
    from clip_convpass.reporting.table2 import table2_domains

    assert demo.main(["--output", str(tmp_path / "demo"), "--seeds", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "Head initialisation" in out
    table = json.loads((tmp_path / "demo" / "table2.json").read_text())
    # every Table 2 row and every row of no table (the PETL-only, few-shot-only and base-to-new-only rows have
    # their own tables and demos), Tip-Adapter and the toy included
    assert [r["method"] for r in table] == [r.name for r in method_rows() if "table2" in r.tables or not r.tables]
    petl = json.loads((tmp_path / "demo" / "petl.json").read_text())
    assert [r["method"] for r in petl] == [r.name for r in method_rows(lambda r: "petl" in r.tables)]
    assert all(r["params"] is not None for r in petl) and "PETL on CLIP" in out
    assert "Toy" in [r["method"] for r in table] and "Toy method" in out
    for row in table:
        for d in table2_domains():
            assert row["cells"][d] is not None and row["cells"][d][2] == 2, (row["method"], d)
    assert "missing" not in (tmp_path / "demo" / "headinit.md").read_text()
    # WiSE-FT of Convpass_CLIP starts at zero-shot CLIP: the robustness table's alpha-0 row equals ZS CLIP's
    assert "Effective robustness" in out and (tmp_path / "demo" / "robustness.png").stat().st_size > 1000
    assert (tmp_path / "demo" / "table2.png").stat().st_size > 1000


def test_grid_status_tells_each_cell_from_its_run_directory(synth, tiny_weights, tmp_path, capsys):
    """done / running (lock held) / failed (with the error that stopped it) / interrupted / pending, read from the
    run directories alone; a failed run's error line is removed when it later finishes."""
    from conftest import TINY

    from clip_convpass.data.types import DatasetLayoutError
    from clip_convpass.experiments.grid import main, run_grid
    from clip_convpass.registry import find_row
    from clip_convpass.utils.locks import exclusive_lock

    common = ["--data", synth["root"], "--output", str(tmp_path / "g"), "--methods", "CoOp", "--seeds", "1", "2", "3", "4",
              "--override-config", str(TINY), "DATASET.CLASS_LIST", synth["class_list"], "MODEL.PRETRAINED", tiny_weights,
              "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "0",
              "DATASET.SPLIT_DIR", str(tmp_path / "splits")]
    opts = common[common.index(str(TINY)) + 1:]
    run_grid([find_row("CoOp")], [1], synth["root"], tmp_path / "g", opts, override_configs=[TINY])
    with pytest.raises(DatasetLayoutError):  # seed 2 asks for more shots than the tree has: it fails inside the run
        run_grid([find_row("CoOp")], [2], synth["root"], tmp_path / "g", [*opts, "DATASET.NUM_SHOTS", "500"],
                 override_configs=[TINY])
    capsys.readouterr()
    # the failed cell's directory is the NUM_SHOTS 500 one; ask for it with those opts
    assert main([*common, "--status", "DATASET.NUM_SHOTS", "500"]) == 0
    lines = capsys.readouterr().out.splitlines()
    seed2 = next(line for line in lines if " seed 2 " in line)
    assert seed2.startswith("failed") and "DatasetLayoutError" in seed2
    assert main([*common, "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    states = {int(line.split(" seed ")[1].split()[0]): line.split()[0] for line in lines if " seed " in line}
    assert states == {1: "done", 2: "pending", 3: "pending", 4: "pending"}
    seed1 = next((tmp_path / "g").rglob("seed1"))
    with exclusive_lock(seed1.parent / "seed3" / ".lock", "test"):  # another process holds it
        main([*common, "--status"])
        assert next(line for line in capsys.readouterr().out.splitlines() if " seed 3 " in line).startswith("running")
    shutil.copytree(seed1 / "checkpoints", seed1.parent / "seed4" / "checkpoints")  # killed after an epoch
    main([*common, "--status"])
    out = capsys.readouterr().out
    assert next(line for line in out.splitlines() if " seed 4 " in line).startswith("interrupted")
    assert "[grid] 1 done, 1 interrupted, 2 pending of 4 cells" in out
