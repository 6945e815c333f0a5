"""VTAB-1K: the 19 tasks in the PETL repositories' layout, the train800 -> val200 / train800val200 -> test protocol,
the shared recipe against timm's scheduler as PETL-ViT steps it, Linear / Full, the report and the grid."""
import json
import math
import shutil

import pytest
import torch
from conftest import REPO

from clip_convpass.config import ConfigError, setup_cfg
from clip_convpass.data.base import DatasetLayoutError
from clip_convpass.data.synthetic import build_synthetic_tree
from clip_convpass.engine.runner import run
from clip_convpass.registry import DATASET_REGISTRY, TRAINER_REGISTRY, benchmark_datasets, method_rows, trainable_datasets

# PETL-ViT convpass/vtab/run.sh's task loop and configs/convpass/<task>.yaml class_num (transcribed)
RUN_SH = ("cifar caltech101 dtd oxford_flowers102 oxford_iiit_pet svhn sun397 patch_camelyon eurosat resisc45 "
          "diabetic_retinopathy clevr_count clevr_dist dmlab kitti dsprites_loc dsprites_ori smallnorb_azi smallnorb_ele")
CLASS_NUM = (100, 102, 47, 102, 37, 10, 397, 2, 10, 45, 5, 8, 6, 6, 4, 16, 16, 18, 9)
TINY = ["MODEL.BACKBONE", "timm:vit_tiny_demo", "MODEL.PRETRAINED", "none", "INPUT.SIZE", "(32,32)", "DEVICE", "cpu",
        "OPTIM.MAX_EPOCH", "2", "OPTIM.WARMUP_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4"]


def test_the_19_tasks_are_petl_vits_in_table_order_and_outside_coops_protocols():
    names = benchmark_datasets("vtab1k")
    assert names == [f"vtab_{t}" for t in RUN_SH.split()]
    assert [DATASET_REGISTRY.get(n).EXPECTED_CLASSES for n in names] == list(CLASS_NUM)
    groups = [DATASET_REGISTRY.get(n).GROUP for n in names]
    assert groups == ["Natural"] * 7 + ["Specialized"] * 4 + ["Structured"] * 8
    assert not set(names) & set(trainable_datasets())  # base-to-new, cross-dataset and few-shot lists stay CoOp's


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    root = tmp_path_factory.mktemp("vtab")
    build_synthetic_tree(root, source="vtab_kitti")
    return root


def vtab_cfg(root, out, config="trainers/PETLCLIP/vtab_convpass.yaml", opts=()):
    return setup_cfg("datasets/vtab_kitti.yaml", config,
                     ["DATASET.ROOT", str(root), "OUTPUT_DIR", str(out), *TINY, *opts])


def test_search_trains_on_train800_and_scores_val200_and_the_final_model_trains_on_all_1000(kitti, tmp_path):
    task = kitti / "vtab-1k" / "kitti"
    final = DATASET_REGISTRY.get("vtab_kitti")(vtab_cfg(kitti, tmp_path))
    search = DATASET_REGISTRY.get("vtab_kitti")(vtab_cfg(kitti, tmp_path, opts=["TEST.SPLIT", "val"]))

    def listed(name):
        return sorted(str(task / line.split()[0]) for line in (task / name).read_text().splitlines())

    assert sorted(d.impath for d in final.train_x) == listed("train800val200.txt")
    assert sorted(d.impath for d in final.test) == listed("test.txt")
    assert sorted(d.impath for d in search.train_x) == listed("train800.txt")
    assert sorted(d.impath for d in search.test) == sorted(d.impath for d in search.val) == listed("val200.txt")
    assert final.num_classes == 4 and final.classnames[3] == "class 3"
    record = run(vtab_cfg(kitti, tmp_path / "run", opts=["DATALOADER.NUM_WORKERS", "2"]))[0]
    assert record["shots"] is None and record["val_shots"] is None and record["train_list"] == "train800val200.txt"
    assert record["n_images"] == 4 and record["split"] == "test"


@pytest.mark.parametrize("line, error", [("images/test/x.jpg", "expected '<relative image path> <integer label>'"),
                                         ("images/test/000_0.jpg 4", "has label 4, expected 0..3"),
                                         ("../../escape.jpg 0", "outside")])
def test_a_bad_list_line_is_one_error_naming_the_file_and_line(kitti, tmp_path, line, error):
    root = tmp_path / "data"
    shutil.copytree(kitti, root)
    (root / "vtab-1k" / "kitti" / "test.txt").write_text(f"images/test/000_0.jpg 0\n{line}\n")
    with pytest.raises(DatasetLayoutError, match=f"test.txt:2.*{error}"):
        DATASET_REGISTRY.get("vtab_kitti")(vtab_cfg(root, tmp_path)).test


def test_a_test_image_in_the_training_list_is_refused(kitti, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(kitti, root)
    lists = root / "vtab-1k" / "kitti"
    with open(lists / "train800val200.txt", "a") as f:
        f.write((lists / "test.txt").read_text().splitlines()[0] + "\n")
    with pytest.raises(DatasetLayoutError, match="both train800val200.txt and test.txt"):
        DATASET_REGISTRY.get("vtab_kitti")(vtab_cfg(root, tmp_path)).train_x


def test_methods_that_read_class_names_are_refused_before_any_work(kitti, tmp_path):
    for config, opts in (("trainers/CoOp/vit_b16_ep50.yaml", []),
                         ("trainers/PETLCLIP/vtab_convpass.yaml", ["TRAINER.PETL.HEAD_INIT", "text"])):
        cfg = setup_cfg("datasets/vtab_kitti.yaml", config, ["DATASET.ROOT", str(kitti), "DEVICE", "cpu", *opts])
        with pytest.raises(ConfigError, match="knows its classes by label only"):
            TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)
    with pytest.raises(ConfigError, match="base-to-new halves"):
        setup_cfg("datasets/vtab_kitti.yaml", None, ["DATASET.SUBSAMPLE", "base"])


def test_the_recipe_steps_the_lr_as_timms_scheduler_in_petl_vits_loop():
    """PETL-ViT train.py: CosineLRScheduler(t_initial=100, warmup_t=10, lr_min=1e-5, warmup_lr_init=1e-6), and
    scheduler.step(ep) after epoch ep."""
    from timm.scheduler import CosineLRScheduler

    from clip_convpass.engine.optim import build_lr_scheduler

    cfg = setup_cfg("datasets/vtab_kitti.yaml", "trainers/PETLCLIP/vtab_convpass.yaml")
    param = torch.nn.Parameter(torch.zeros(1))
    reference = torch.optim.AdamW([param], lr=1e-3)
    scheduler = CosineLRScheduler(reference, t_initial=100, warmup_t=10, lr_min=1e-5, warmup_lr_init=1e-6)
    ours = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.OPTIM.LR)
    sched = build_lr_scheduler(ours, cfg.OPTIM)
    for ep in range(cfg.OPTIM.MAX_EPOCH):
        assert math.isclose(ours.param_groups[0]["lr"], reference.param_groups[0]["lr"], rel_tol=1e-9), ep
        scheduler.step(ep)
        ours.step()  # no gradients: nothing moves; the scheduler's order check is satisfied
        sched.step()
    assert cfg.OPTIM.MAX_EPOCH == 100 and cfg.DATALOADER.TRAIN_X.DROP_LAST and cfg.MODEL.DROP_PATH_RATE == 0.1


def test_1000_images_at_batch_64_are_15_steps_with_the_last_batch_dropped(kitti, tmp_path):
    from clip_convpass.data import Datum, build_loader

    cfg = vtab_cfg(kitti, tmp_path, opts=["DATALOADER.TRAIN_X.BATCH_SIZE", "64", "DATALOADER.NUM_WORKERS", "0"])
    image = next((kitti / "vtab-1k" / "kitti" / "images" / "test").iterdir())
    items = [Datum(str(image), 0, "class 0")] * 1000
    assert len(build_loader(cfg, items, True, torch.device("cpu"), stream=("train", 0))) == 15
    keep = vtab_cfg(kitti, tmp_path, opts=["DATALOADER.TRAIN_X.BATCH_SIZE", "64", "DATALOADER.TRAIN_X.DROP_LAST", "False"])
    assert len(build_loader(keep, items, True, torch.device("cpu"), stream=("train", 0))) == 16


def test_linear_trains_the_head_only_and_full_trains_every_parameter(kitti, tmp_path):
    counts = {}
    for method in ("linear", "full", "convpass"):
        trainer = TRAINER_REGISTRY.get("PETLCLIP")(vtab_cfg(kitti, tmp_path, f"trainers/PETLCLIP/vtab_{method}.yaml"))
        trainable = {id(p) for _, p in trainer.trainable_named_parameters()}
        head = {id(p) for p in trainer.model.head.parameters()}
        counts[method] = sum(p.numel() for _, p in trainer.trainable_named_parameters()) - sum(
            p.numel() for p in trainer.model.head.parameters())
        assert head <= trainable
        if method == "full":
            assert trainable == {id(p) for p in trainer.model.parameters()}
    assert counts["linear"] == 0 and counts["full"] == sum(
        p.numel() for p in trainer.model.visual.parameters()) - sum(p.numel() for p in trainer.model.head.parameters()) \
        - counts["convpass"]
    with pytest.raises(ConfigError, match="nothing would train"):
        setup_cfg(None, "trainers/PETLCLIP/vtab_linear.yaml", ["TRAINER.PETL.HEAD_TRAINABLE", "False"])
    with pytest.raises(ConfigError, match="ADAPTER is none"):
        setup_cfg(None, "trainers/PETLCLIP/vtab_linear.yaml", ["TRAINER.PETL.SCALE", "10.0"])


# PETL-ViT convpass/vtab/configs/{convpass,convpass_attn}/<task>.yaml: scale and xavier_init (transcribed)
PUBLISHED = {
    "convpass": "0.1 F 1 F 0.01 T 0.1 T 1 T 100 T 0.1 F 10 F 10 F 10 F 1 F 1 F 0.1 T 10 F 10 T 100 T 0.1 T 100 T 1 T",
    "convpass_attn": "0.1 T 100 T 0.1 T 1 T 1 T 100 T 0.1 T 10 T 10 T 100 T 0.1 T 10 T 1 T 10 T 10 T 10 T 1 T 100 T 1 T",
}


@pytest.mark.parametrize("method", sorted(PUBLISHED))
def test_the_petl_vit_rows_take_the_published_per_task_scale_and_conv_init(method):
    values = PUBLISHED[method].split()
    for i, task in enumerate(RUN_SH.split()):
        cfg = setup_cfg(f"datasets/vtab_{task}.yaml", f"trainers/PETLCLIP/vtab_{method}_petl_vit.yaml")
        assert cfg.TRAINER.PETL.SCALE == float(values[2 * i]), task
        assert cfg.TRAINER.PETL.CONV_INIT == ("xavier" if values[2 * i + 1] == "T" else "identity"), task
    default = setup_cfg("datasets/vtab_dtd.yaml", f"trainers/PETLCLIP/vtab_{method}.yaml")
    assert default.TRAINER.PETL.SCALE is None  # the default row chooses s on val200


def test_every_vtab_row_has_one_knob_of_five_values_or_the_published_choices():
    rows = method_rows(lambda r: "vtab" in r.tables)
    assert {r.config.split("vtab_")[1][:-5] for r in rows} >= {
        "convpass", "convpass_attn", "convpass_share", "adaptformer", "adapter", "lora", "vpt_shallow", "vpt_deep",
        "linear", "full"}
    for row in rows:
        if row.config.endswith("_petl_vit.yaml"):
            assert not row.sweep
        else:
            (sweep,) = row.sweep
            assert len(sweep.split("=")[1].split(",")) == 5, row.name


def test_the_report_gives_group_means_and_the_average_only_over_complete_groups():
    from clip_convpass.reporting.vtab import groups, summarise

    tasks = benchmark_datasets("vtab1k")
    values = {t: float(i) for i, t in enumerate(tasks)}
    summary = summarise(values)
    assert summary["Natural"] == 3.0 and summary["Specialized"] == 8.5 and summary["Structured"] == 14.5
    assert summary["Average"] == pytest.approx((3.0 + 8.5 + 14.5) / 3)
    del values[groups()["Structured"][0]]
    partial = summarise(values)
    assert partial["Structured"] is None and partial["Average"] is None and partial["Natural"] == 3.0


def test_grid_sweeps_on_val200_then_reports_test_with_paper_deltas(kitti, tmp_path):
    from clip_convpass.experiments.grid import main

    rows = ["VTAB convpass", "VTAB linear"]
    opts = [*TINY[:6], "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "2", "OPTIM.WARMUP_EPOCH", "1",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "TEST.MONITOR_EVERY", "1"]
    argv = ["--data", str(kitti), "--output", str(tmp_path / "out"), "--vtab", "vtab_kitti", "--methods", *rows,
            "--seeds", "1", *opts]
    assert main(argv) == 0
    out = tmp_path / "out"
    sweep = json.loads((out / "sweeps" / "vtab_kitti" / "VTAB_convpass" / "sweep.json").read_text())
    assert len(sweep["points"]) == 5
    point = next((out / "sweeps" / "vtab_kitti" / "VTAB_convpass").glob("SCALE=*/eval/vtab_kitti_val/results.json"))
    assert json.loads(point.read_text())["train_list"] == "train800.txt"
    cell = out / "vtab_kitti" / "PETLCLIP" / "vtab_convpass" / "seed1"
    result = json.loads((cell / "eval" / "vtab_kitti" / "results.json").read_text())
    assert result["train_list"] == "train800val200.txt" and "SCALE" in str(result["selected"])
    history = json.loads((cell / "train_history.json").read_text())
    assert [h["epoch"] for h in history if "test_top1" in h] == [1, 2]
    from clip_convpass.cli.report import main as report

    assert report([str(out), "--vtab", "--format", "json", "--output", str(tmp_path / "vtab.json")]) == 0
    table = json.loads((tmp_path / "vtab.json").read_text())
    convpass = next(r for r in table["rows"] if r["method"] == "VTAB convpass")
    assert convpass["cells"]["vtab_kitti"][0] == result["metrics"]["top1"]
    assert convpass["paper"]["vtab_kitti"] == 80.0 and convpass["paper"]["Average"] == 76.6
    assert convpass["summary"]["Structured"] is None  # one task of eight
    assert main([*argv, "--status"]) == 0 and (REPO / "scripts" / "vtab.sh").is_file()


def test_the_ablation_rows_build_the_placements_and_kernels_they_name(kitti, tmp_path):
    from clip_convpass.adapters.convpass import Convpass

    def kernels(config):
        trainer = TRAINER_REGISTRY.get("PETLCLIP")(vtab_cfg(kitti, tmp_path, f"trainers/PETLCLIP/{config}.yaml"))
        blocks = trainer.model.visual.transformer.resblocks
        out = {}
        for where in ("attn", "mlp"):
            bypass = getattr(blocks[0], f"bypass_{where}", None)
            out[where] = bypass.conv.kernel_size[0] if isinstance(bypass, Convpass) else None
        return out, blocks[0]

    assert kernels("vtab_convpass_1x1")[0] == {"attn": 1, "mlp": 1}
    assert kernels("vtab_convpass_1x1_attn")[0] == {"attn": 1, "mlp": 3}
    assert kernels("vtab_convpass_1x1_mlp")[0] == {"attn": 3, "mlp": 1}
    assert kernels("vtab_convpass_mlp")[0] == {"attn": None, "mlp": 3}
    placed, block = kernels("vtab_seq_convpass_attn")
    assert placed == {"attn": 3, "mlp": None}
    assert [mode for _, mode, _ in block.attn_adapters] == ["sequential"]


def test_the_summary_view_shows_each_rows_backbone_and_published_group_means(tmp_path):
    from clip_convpass.cli.report import main as report

    def write(name, trainer, backbone, task, top1):
        folder = tmp_path / name.replace(" ", "_") / task
        folder.mkdir(parents=True)
        rec = {"dataset": task, "train_dataset": task, "name": name, "trainer": trainer, "seed": 42, "shots": None,
               "train_list": "train800val200.txt", "split": "test", "metrics": {"top1": top1}, "backbone": backbone,
               "experiment": "e", "trainable_params": {"total": 1, "image_encoder": 437504}}
        (folder / "results.json").write_text(json.dumps(rec))

    for i, task in enumerate(benchmark_datasets("vtab1k")):
        write("VTAB swin_convpass", "PETLCLIP", "timm:swin_base_patch4_window7_224", task, 70.0 + i % 3)
        write("VTAB seq_convpass_mlp", "PETLCLIP", "timm:vit_base_patch16_224", task, 60.0)
    out = tmp_path / "summary.json"
    assert report([str(tmp_path), "--vtab-summary", "--format", "json", "--output", str(out)]) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    swin = rows["VTAB swin_convpass"]
    assert swin["backbone"] == "timm:swin_base_patch4_window7_224" and swin["paper"]["Average"] == 78.1
    assert swin["summary"]["Average"] == pytest.approx(sum(swin["summary"][g] for g in ("Natural", "Specialized",
                                                                                          "Structured")) / 3)
    assert report([str(tmp_path), "--vtab-summary", "--table", "vtab_ablations", "--format", "json", "--output",
                   str(out)]) == 0
    assert [r["method"] for r in json.loads(out.read_text())["rows"]] == ["VTAB seq_convpass_mlp"]
    assert report([str(tmp_path), "--vtab-summary", "--table", "vtab_backbones", "--output", str(out)]) == 0
    assert "Swin-B Convpass" in out.read_text() and "78.1" in out.read_text()


TINY_BY_FAMILY = {"vit": "timm:vit_tiny_demo", "swin": "timm:swin_tiny_demo", "convnext": "timm:convnext_atto"}
SOURCE_BY_BENCHMARK = {"vtab1k": "vtab_kitti", "fgvc_fewshot": "fgvc_fs_pets"}


@pytest.fixture(scope="module")
def benchmark_trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    for source in SOURCE_BY_BENCHMARK.values():
        build_synthetic_tree(root, source=source)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("row", method_rows(lambda r: r.benchmark != "coop"), ids=lambda r: r.name)
def test_every_supervised_row_trains_reloads_and_reports_on_its_benchmark(row, benchmark_trees, tmp_path):
    """Each VTAB / FGVC row (its sweep skipped) on a synthetic tree of its benchmark, the backbone replaced by a tiny
    model of the same family: trains, reloads its checkpoint to the same metrics, and is reported."""
    from clip_convpass.reporting.records import collect

    backbone = setup_cfg(None, row.config).MODEL.BACKBONE
    tiny = TINY_BY_FAMILY[backbone.split(":")[1].split("_")[0]]
    source = SOURCE_BY_BENCHMARK[row.benchmark]
    opts = ["DATASET.ROOT", str(benchmark_trees), "OUTPUT_DIR", str(tmp_path / "run"), "NAME", row.name,
            "MODEL.BACKBONE", tiny, "MODEL.PRETRAINED", "none", "INPUT.SIZE", "(32,32)", "DEVICE", "cpu",
            "OPTIM.MAX_EPOCH", "2", "OPTIM.WARMUP_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
            "DATALOADER.NUM_WORKERS", "0", "TEST.MONITOR_EVERY", "1", "SEED", "0", "DATASET.NUM_SHOTS", "2",
            *(["INPUT.RESIZE_SIZE", "36"] if row.benchmark == "fgvc_fewshot" else []), *row.opts]
    cfg = setup_cfg(f"datasets/{source}.yaml", row.config, opts)
    record = run(cfg)[0]
    trainer = TRAINER_REGISTRY.get(row.trainer)(cfg)
    trainer.load_from_model_dir(tmp_path / "run")
    assert trainer.test()["metrics"] == record["metrics"]
    assert record["backbone"] == tiny and record["train_list"]
    (rec,) = [r for r in collect([tmp_path / "run"]) if r["dataset"] == source]
    assert rec["name"] == row.name


def test_the_scripts_run_the_backbone_table_and_table_1_on_synthetic_trees(kitti, tmp_path):
    import os
    import subprocess
    import sys

    from clip_convpass.experiments.grid import main

    opts = ["MODEL.PRETRAINED", "none", "INPUT.SIZE", "(32,32)", "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "1",
            "OPTIM.WARMUP_EPOCH", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "TEST.MONITOR_EVERY", "0"]
    out = tmp_path / "backbones"
    assert main(["--data", str(kitti), "--output", str(out), "--vtab", "vtab_kitti", "--table", "vtab_backbones",
                 "--methods", "VTAB swin_convpass", "--seeds", "42", "--no-sweep", "MODEL.BACKBONE",
                 "timm:swin_tiny_demo", *opts]) == 0
    from clip_convpass.cli.report import main as report

    assert report([str(out), "--vtab-summary", "--table", "vtab_backbones", "--output", str(tmp_path / "t.md")]) == 0
    assert "Swin-B Convpass" in (tmp_path / "t.md").read_text()
    env = {**os.environ, "DATA": str(kitti), "OUTPUT": str(tmp_path / "t1"), "TASKS": "vtab_kitti",
           "METHODS": "VTAB linear", "GRID_ARGS": "--no-sweep", "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "scripts" / "vtab.sh"), "42", "MODEL.BACKBONE", "timm:vit_tiny_demo",
                           *opts], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Linear" in (tmp_path / "t1" / "vtab.md").read_text() and (tmp_path / "t1" / "vtab.png").is_file()


@pytest.mark.slow
def test_supervised_demo_runs_both_layouts_and_writes_the_tables(tmp_path, capsys):
    """`make demo-supervised`: every vtab row on two synthetic tasks (sweeps on val200 included) and every
    fgvc_fewshot row on NOAH's lists, a tiny timm ViT; the VTAB table and the curves, with their plots."""
    from clip_convpass.experiments import demo

    out = tmp_path / "sup"
    assert demo.main(["--supervised", "--output", str(out)]) == 0
    vtab = json.loads((out / "vtab.json").read_text())["rows"]
    assert {r["method"] for r in vtab} == {r.name for r in method_rows(lambda r: "vtab" in r.tables)}
    assert all(set(r["cells"][t] is not None for t in demo.VTAB_DEMO_TASKS) == {True} for r in vtab)
    curves = json.loads((out / "fgvc_fewshot.json").read_text())["rows"]
    assert {r["method"] for r in curves} == {r.name for r in method_rows(lambda r: "fgvc_fewshot" in r.tables)}
    assert all(set(r["cells"]) == {"1", "2"} for r in curves)
    assert (out / "vtab.png").stat().st_size > 1000 and (out / "fgvc_fewshot.png").stat().st_size > 1000
    assert "SYNTHETIC" in capsys.readouterr().out
