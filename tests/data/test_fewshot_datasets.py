"""CoOp's few-shot datasets in CoOp's exact layouts, the few-shot protocol, per-shot epochs, the scripts
and the few-shot report. Parametrised over every registered dataset with a training split."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, TINY

from clip_convpass.config import ConfigError, dataset_config_file, dataset_config_files, setup_cfg
from clip_convpass.data.base import DatasetLayoutError
from clip_convpass.data.check import check_dataset
from clip_convpass.data.synthetic import build_synthetic_tree
from clip_convpass.datasets.coop_split import SplitFileDataset
from clip_convpass.engine.runner import run
from clip_convpass.models.prompts import get_templates
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY, TRAINER_REGISTRY, method_rows, trainable_datasets
from clip_convpass.reporting.fewshot import AVERAGE, fewshot_curves, plot_curves, render_curves

TRAINABLE = trainable_datasets()  # CoOp's family: the few-shot protocol's datasets
SPLIT_DATASETS = [c.NAME for c in DATASET_REGISTRY.classes() if issubclass(c, SplitFileDataset)]
N_CLASSES = 3


@pytest.mark.parametrize("name", DATASET_REGISTRY.names())
def test_every_dataset_has_its_yaml_and_split_file_datasets_declare_published_sizes(name):
    cls = DATASET_REGISTRY.get(name)
    files = dataset_config_files()
    assert name in files, f"no configs/datasets/*.yaml sets DATASET.NAME {name}"
    assert setup_cfg(files[name]).DATASET.NAME == name
    if issubclass(cls, SplitFileDataset):  # CoOp's datasets: the data check compares with the published split
        assert set(cls.EXPECTED_SPLITS) == {"train", "val", "test"} and cls.HAS_TRAIN and cls.VAL_SPLIT


@pytest.fixture(scope="module")
def fs_tree(tmp_path_factory):
    """One data root holding a synthetic tree of every dataset with a training split (CoOp's $DATA)."""
    root = tmp_path_factory.mktemp("coop_data")
    infos = {name: build_synthetic_tree(root, num_classes=N_CLASSES, train_per_class=6, val_per_class=2,
                                        shift_per_class=1, split_val_per_class=3, source=name)
             for name in TRAINABLE}
    return root, infos


def ds_cfg(name, root, out, opts=()):
    info_opts = ["DATASET.CLASS_LIST", str(root / "synthetic_classes.txt")] if name == "ImageNet" else []
    return setup_cfg(dataset_config_file(name), None, ["DATASET.ROOT", str(root), "DATASET.SPLIT_DIR", str(out / "splits"),
                                                       *info_opts, *opts])


@pytest.mark.parametrize("name", SPLIT_DATASETS)
def test_reader_gives_coops_classes_splits_and_val_shots_from_the_val_split(name, fs_tree, tmp_path):
    root, infos = fs_tree
    cls = DATASET_REGISTRY.get(name)
    tree = SYNTHETIC_TREE_REGISTRY.get(name)
    ds = cls(ds_cfg(name, root, tmp_path, ["DATASET.NUM_SHOTS", "4"]))
    # class names and order as CoOp's reader produces them (label order of the split), not folder names
    assert ds.classnames == [tree.class_for(i)[1] for i in range(N_CLASSES)]
    assert len(ds.test) == N_CLASSES * 2 and all(os.path.isfile(d.impath) for d in ds.test)
    entries = tree.entries(ds.class_ids, {"train": 6, "val": 3, "test": 2})
    split_paths = {s: {str(ds.image_dir / rel) for rel, _, _ in rows} for s, rows in entries.items()}
    # K train shots from the train split; min(K, 4) = 4 val shots wanted, the val split has 3: all of them
    assert ds.val_shots == 4
    assert len(ds.train_x) == N_CLASSES * 4 and {d.impath for d in ds.train_x} <= split_paths["train"]
    assert {d.impath for d in ds.val} == split_paths["val"]
    assert {d.impath for d in ds.test} == split_paths["test"]
    # deterministic per (seed, class), cached as JSON with paths relative to the root
    cached = json.loads(ds.split_file().read_text())
    assert all(not os.path.isabs(p) for p, _ in cached["train"] + cached["val"])
    again = cls(ds_cfg(name, root, tmp_path / "other", ["DATASET.NUM_SHOTS", "4"]))
    assert [d.impath for d in again.train_x] == [d.impath for d in ds.train_x]
    other_seed = cls(ds_cfg(name, root, tmp_path / "seed2", ["DATASET.NUM_SHOTS", "2", "SEED", "2"]))
    assert len(other_seed.train_x) == N_CLASSES * 2 and len(other_seed.val) == N_CLASSES * 2  # min(2, 4)


def test_class_order_follows_the_labels_not_the_file(tmp_path):
    """Dassl's get_lab2cname: class names sorted by label wherever they appear in the split file."""
    folder = tmp_path / "oxford_pets" / "images"
    folder.mkdir(parents=True)
    rows = {"train": [["b_1.jpg", 1, "beagle"], ["a_1.jpg", 0, "abyssinian"]], "val": [["b_2.jpg", 1, "beagle"]],
            "test": [["a_2.jpg", 0, "abyssinian"], ["b_3.jpg", 1, "beagle"]]}
    for split in rows.values():
        for rel, _, _ in split:
            (folder / rel).write_bytes(b"")
    (tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json").write_text(json.dumps(rows))
    ds = DATASET_REGISTRY.get("OxfordPets")(ds_cfg("OxfordPets", tmp_path, tmp_path))
    assert ds.classnames == ["abyssinian", "beagle"]
    assert [(os.path.basename(d.impath), d.label) for d in ds.test] == [("a_2.jpg", 0), ("b_3.jpg", 1)]


@pytest.mark.parametrize("name", SPLIT_DATASETS)
def test_incomplete_folders_name_the_missing_file_and_the_layout(name, fs_tree, tmp_path):
    root, _ = fs_tree
    cls = DATASET_REGISTRY.get(name)
    copy = tmp_path / "data"
    shutil.copytree(root / cls.LAYOUTS[0], copy / cls.LAYOUTS[0])
    ds = cls(ds_cfg(name, copy, tmp_path))
    victim = ds.test[1].impath
    os.remove(victim)
    with pytest.raises(DatasetLayoutError, match="missing") as e:
        cls(ds_cfg(name, copy, tmp_path)).test
    assert victim in str(e.value) and cls.LAYOUT_HELP in str(e.value)
    os.remove(copy / cls.LAYOUTS[0] / cls.SPLIT_FILE)
    with pytest.raises(DatasetLayoutError) as e:
        cls(ds_cfg(name, copy, tmp_path))
    assert cls.SPLIT_FILE in str(e.value) and cls.LAYOUT_HELP in str(e.value)


def test_malformed_split_file_is_a_one_line_error(fs_tree, tmp_path):
    root, _ = fs_tree
    copy = tmp_path / "data"
    shutil.copytree(root / "eurosat", copy / "eurosat")
    path = copy / "eurosat" / "split_zhou_EuroSAT.json"
    data = json.loads(path.read_text())
    data["train"][0] = ["AnnualCrop/x.jpg", "0", "Annual Crop Land"]  # label as a string
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetLayoutError, match=r"train\[0\].*integer label"):
        DATASET_REGISTRY.get("EuroSAT")(ds_cfg("EuroSAT", copy, tmp_path))
    with pytest.raises(DatasetLayoutError, match="CLASS_LIST applies to ImageNet"):
        DATASET_REGISTRY.get("EuroSAT")(ds_cfg("EuroSAT", root, tmp_path, ["DATASET.CLASS_LIST", str(path)]))


def test_fgvc_reads_variants_and_the_variant_lists(fs_tree, tmp_path):
    root, _ = fs_tree
    lines = (root / "fgvc_aircraft" / "images_variant_train.txt").read_text().splitlines()
    assert lines[0].split(" ", 1)[1] == "707-320"  # "<image id> <variant>", as in the archive
    ds = DATASET_REGISTRY.get("FGVCAircraft")(ds_cfg("FGVCAircraft", root, tmp_path))
    assert ds.classnames == (root / "fgvc_aircraft" / "variants.txt").read_text().split()


@pytest.mark.parametrize("name", TRAINABLE)
def test_data_check_covers_every_dataset_against_coops_split_sizes(name, fs_tree):
    root, _ = fs_tree
    cls = DATASET_REGISTRY.get(name)
    row = check_dataset(name, str(root))  # the synthetic tree's class list is found by itself
    assert row["classes"] == N_CLASSES and row["images"] == N_CLASSES * 2
    if cls.EXPECTED_SPLITS:
        assert row["status"] == "incomplete"  # a synthetic tree is not CoOp's published split
        assert row["splits"] == {"train": N_CLASSES * 6, "val": N_CLASSES * 3, "test": N_CLASSES * 2}
        assert f"train {N_CLASSES * 6}, expected {cls.EXPECTED_SPLITS['train']}" in row["problem"]


def test_templates_follow_the_dataset(fs_tree, tmp_path, tiny_weights):
    root, _ = fs_tree
    base = ["MODEL.BACKBONE", "tiny-ViT-Q", "MODEL.PRETRAINED", tiny_weights]
    seen = {}
    for name, trainer, cfg_file in [("OxfordPets", "ZeroShotCLIP", "trainers/ZeroShotCLIP/vit_b16.yaml"),
                                    ("OxfordPets", "TipAdapter", "trainers/TipAdapter/vit_b16.yaml"),
                                    ("ImageNet", "TipAdapter", "trainers/TipAdapter/vit_b16.yaml"),
                                    ("DescribableTextures", "ConvpassCLIP", "trainers/ConvpassCLIP/vit_b16.yaml")]:
        opts = ["DATASET.ROOT", str(root), "OUTPUT_DIR", str(tmp_path / name / trainer), "DATASET.NUM_SHOTS", "1",
                *base, *(["DATASET.CLASS_LIST", str(root / "synthetic_classes.txt")] if name == "ImageNet" else [])]
        cfg = setup_cfg(dataset_config_file(name), cfg_file, opts, override_files=[TINY])
        trainer_obj = TRAINER_REGISTRY.get(trainer)(cfg)
        seen[(name, trainer)] = trainer_obj.prompt_info
    assert seen[("OxfordPets", "ZeroShotCLIP")]["template_text"] == "a photo of a {}, a type of pet."
    assert seen[("OxfordPets", "TipAdapter")]["template_text"] == "a photo of a {}, a type of pet."
    assert seen[("ImageNet", "TipAdapter")]["template_text"] == f"{len(get_templates('ensemble7'))} templates"
    assert seen[("DescribableTextures", "ConvpassCLIP")]["template_text"] == "{} texture."


def one_row_per_trainer():
    rows = {}
    for row in method_rows(lambda r: r.benchmark == "coop"):
        rows.setdefault(row.trainer, row)
    return sorted(rows.values(), key=lambda r: r.trainer)


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINABLE)
@pytest.mark.parametrize("row", one_row_per_trainer(), ids=lambda r: r.trainer)
def test_every_method_runs_zero_shot_and_few_shot_on_every_dataset(row, name, fs_tree, tiny_weights, tmp_path):
    root, _ = fs_tree
    opts = ["TRAINER.NAME", row.trainer, "NAME", row.name, *row.opts, "DATASET.ROOT", str(root),
            "MODEL.PRETRAINED", tiny_weights, "OUTPUT_DIR", str(tmp_path / "run"), "DATASET.SPLIT_DIR",
            str(tmp_path / "splits"), "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH_BY_SHOTS", "", "OPTIM.MAX_EPOCH", "1",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "TRAINER.TIP.AUGMENT_EPOCH", "1",
            "TRAINER.LINEAR_PROBE.BISECTION_STEPS", "1", "TRAINER.LINEAR_PROBE.MAX_ITER", "100",
            *(["DATASET.CLASS_LIST", str(root / "synthetic_classes.txt")] if name == "ImageNet" else [])]
    cfg = setup_cfg(dataset_config_file(name), row.config or None, opts, override_files=[TINY])
    records = run(cfg, eval_step0=True)
    by_stage = {r["stage"]: r for r in records}
    assert set(by_stage) == {"step0", "final"}  # step 0 = the zero-shot (untrained) model on this dataset
    for rec in records:
        assert rec["dataset"] == rec["train_dataset"] == name
        assert rec["n_classes"] == N_CLASSES and rec["n_images"] == N_CLASSES * 2 and rec["shots"] == 2
        assert 0 <= rec["metrics"]["top1"] <= 100


def test_per_shot_epochs_follow_the_methods_rule():
    coop = "trainers/CoOp/vit_b16_fewshot.yaml"
    epochs = {k: setup_cfg("datasets/oxford_pets.yaml", coop, ["DATASET.NUM_SHOTS", str(k)]).OPTIM.MAX_EPOCH
              for k in (1, 2, 4, 8, 16)}
    assert epochs == {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}  # CoOp's COOP.md
    assert setup_cfg("datasets/imagenet.yaml", coop, ["DATASET.NUM_SHOTS", "16"]).OPTIM.MAX_EPOCH == 50
    assert setup_cfg("datasets/oxford_pets.yaml", coop, ["DATASET.NUM_SHOTS", "3"]).OPTIM.MAX_EPOCH == 100
    # a method without a rule keeps its epochs at every shot count
    conv = "trainers/ConvpassCLIP/vit_b16.yaml"
    assert len({setup_cfg("datasets/dtd.yaml", conv, ["DATASET.NUM_SHOTS", str(k)]).OPTIM.MAX_EPOCH
                for k in (1, 16)}) == 1
    with pytest.raises(ConfigError, match="MAX_EPOCH_BY_SHOTS"):
        setup_cfg("datasets/oxford_pets.yaml", coop, ["OPTIM.MAX_EPOCH", "3"])
    assert setup_cfg("datasets/oxford_pets.yaml", coop, ["OPTIM.MAX_EPOCH", "3", "OPTIM.MAX_EPOCH_BY_SHOTS", ""]
                     ).OPTIM.MAX_EPOCH == 3
    for bad in ("1-50", "0:5", "2:x"):
        with pytest.raises(ConfigError, match="shots:epochs"):
            setup_cfg("datasets/oxford_pets.yaml", None, ["OPTIM.MAX_EPOCH_BY_SHOTS", bad])
    with pytest.raises(ConfigError, match="no entry for DATASET.NUM_SHOTS=1"):
        setup_cfg("datasets/oxford_pets.yaml", None, ["OPTIM.MAX_EPOCH_BY_SHOTS", "2:10", "DATASET.NUM_SHOTS", "1"])


def record(name, dataset, shots, seed, top1, experiment="e", train_dataset=None, backbone="ViT-B-16"):
    return {"name": name, "trainer": name, "dataset": dataset, "train_dataset": train_dataset or dataset,
            "shots": shots, "seed": seed, "split": "test", "stage": "final", "experiment": f"{experiment}{shots}",
            "backbone": backbone, "pretrained": "openai", "metrics": {"top1": top1}}


def test_fewshot_curves_mean_std_average_and_separation():
    recs = [record("CoOp", "OxfordPets", 1, 1, 80.0), record("CoOp", "OxfordPets", 1, 2, 84.0),
            record("CoOp", "EuroSAT", 1, 1, 50.0), record("CoOp", "OxfordPets", 2, 1, 88.0),
            record("ZeroShotCLIP", "OxfordPets", 1, 1, 85.0),
            # a domain-shift evaluation is not a point of the curve
            record("CoOp", "ImageNetV2", 16, 1, 60.0, train_dataset="ImageNet")]
    notes = []
    curves = fewshot_curves(recs, notes=notes)
    m, s, n = curves["CoOp"]["OxfordPets"][1]
    assert (m, n) == (82.0, 2) and s == pytest.approx(2 ** 0.5 * 2)  # sample std of 80, 84
    assert curves["CoOp"][AVERAGE] == {1: (66.0, 0.0, 1)}  # 2 shots lacks EuroSAT: no average there
    assert "ImageNetV2" not in curves["CoOp"] and "ImageNet" not in curves["CoOp"]
    # two configurations under one name at one point are never averaged
    curves = fewshot_curves(recs + [record("CoOp", "OxfordPets", 1, 1, 10.0, experiment="other")], notes=notes)
    assert len([k for k in curves if k.startswith("CoOp [config")]) == 2 and notes
    text = render_curves(fewshot_curves(recs), "markdown")
    assert "| Pets" in text and "ZS CLIP" in text and "82.00 ± 2.83 (n=2)" in text


def test_fewshot_report_cli_and_plot(tmp_path):
    from clip_convpass.cli.report import main as report_main

    for i, rec in enumerate([record("CoOp", "OxfordPets", k, 1, 50.0 + k) for k in (1, 2, 4)]):
        (tmp_path / f"r{i}").mkdir()
        (tmp_path / f"r{i}" / "results.json").write_text(json.dumps(rec))
    out = tmp_path / "curves.json"
    assert report_main([str(tmp_path), "--fewshot", "--format", "json", "--output", str(out),
                        "--plot", str(tmp_path / "c.png")]) == 0
    data = json.loads(out.read_text())
    assert data["shots"] == [1, 2, 4] and data["rows"][0]["cells"]["4"][0] == 54.0
    assert (tmp_path / "c.png").stat().st_size > 1000
    plot_curves(fewshot_curves([record("A", "EuroSAT", 1, 1, 1.0)]), tmp_path / "one.png")  # a single point


@pytest.mark.slow
def test_fewshot_scripts_run_resume_and_report(fs_tree, tmp_path, tiny_weights):
    root, _ = fs_tree
    env = dict(os.environ, DATA=str(root), OUTPUT=str(tmp_path / "out"), PYTHON=sys.executable, SHOTS="1 2",
               METHODS="ZeroShotCLIP:vit_b16 CoOp:vit_b16_fewshot", DATASETS="oxford_pets eurosat")
    tiny = ["MODEL.BACKBONE", "tiny-ViT-Q", "MODEL.PRETRAINED", tiny_weights, "INPUT.SIZE", "(32,32)", "PREC", "fp32",
            "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH_BY_SHOTS", "1:1,2:2"]
    done = subprocess.run(["bash", str(REPO / "scripts" / "fewshot_all.sh"), "1", *tiny], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    results = sorted((tmp_path / "out").rglob("results.json"))
    assert len(results) == 2 * 2 * 2  # methods x datasets x shots
    epochs = {json.loads(p.read_text())["shots"]: json.loads(p.read_text())["epochs_trained"]
              for p in results if "CoOp" in str(p)}
    assert epochs == {1: 1, 2: 2}
    table = (tmp_path / "out" / "fewshot.md").read_text()
    assert "CoOp (few-shot schedule)" in table and "Average" in table
    again = subprocess.run(["bash", str(REPO / "scripts" / "fewshot.sh"), "CoOp", "vit_b16_fewshot", "eurosat", "1",
                            *tiny], env=env, check=True, capture_output=True, text=True)
    assert again.stdout.count("Results exist") == 2  # finished runs are skipped


def test_tip_adapter_searches_the_val_shots_or_the_whole_val_split(fs_tree, tiny_weights, tmp_path):
    """The reference's main.py searches alpha/beta on the whole val split of CoOp's datasets (val_full); our
    default stays within the few-shot protocol's min(K, 4) val shots per class."""
    from clip_convpass.trainers import tip_adapter

    root, _ = fs_tree
    seen = {}
    real = tip_adapter.TipAdapter.extract_features

    def spy(self, encode, items, transform=None, desc="features", stream=None):
        seen[desc] = len(items)
        return real(self, encode, items, transform, desc, stream)

    for split in ("val_shots", "val_full"):
        cfg = setup_cfg(dataset_config_file("EuroSAT"), "trainers/TipAdapter/vit_b16.yaml",
                        ["DATASET.ROOT", str(root), "MODEL.PRETRAINED", tiny_weights, "DATASET.NUM_SHOTS", "1",
                         "OUTPUT_DIR", str(tmp_path / split), "DATASET.SPLIT_DIR", str(tmp_path / "splits"),
                         "TRAINER.TIP.AUGMENT_EPOCH", "1", "TRAINER.TIP.SEARCH_SPLIT", split], override_files=[TINY])
        trainer = TRAINER_REGISTRY.get("TipAdapter")(cfg)
        trainer.extract_features = spy.__get__(trainer)
        trainer.fit()
    assert seen["val_shots features"] == N_CLASSES * 1  # min(1, 4) per class
    assert seen["val_full features"] == N_CLASSES * 3  # every val image
    with pytest.raises(DatasetLayoutError, match="no val split"):
        DATASET_REGISTRY.get("ImageNet")(ds_cfg("ImageNet", root, tmp_path)).val_split_full


@pytest.mark.slow
def test_few_shot_runs_on_a_split_file_dataset_are_the_same_with_dataloader_workers(fs_tree, tiny_weights, tmp_path):
    """Augmented training and evaluation on Oxford-Pets with 2 workers equal the run with none, bit for bit."""
    import torch

    root, _ = fs_tree
    results, heads = {}, {}
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}"
        cfg = setup_cfg(dataset_config_file("OxfordPets"), "trainers/ConvpassCLIP/vit_b16.yaml",
                        ["DATASET.ROOT", str(root), "MODEL.PRETRAINED", tiny_weights, "DATASET.NUM_SHOTS", "4",
                         "OUTPUT_DIR", str(out), "DATASET.SPLIT_DIR", str(tmp_path / "splits"), "OPTIM.MAX_EPOCH", "2",
                         "OPTIM.LR", "0.01", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.NUM_WORKERS", workers],
                        override_files=[TINY])
        results[workers] = run(cfg)[-1]["metrics"]
        trainer = TRAINER_REGISTRY.get("ConvpassCLIP")(cfg)
        trainer.load_from_model_dir(out)
        heads[workers] = trainer.model.head.weight.detach().clone()
    assert results["0"] == results["2"]
    assert torch.equal(heads["0"], heads["2"])
    assert not torch.equal(heads["0"], TRAINER_REGISTRY.get("ConvpassCLIP")(cfg).model.head.weight)  # it trained


def dassl_fewshot(split_file, seed, k):
    """A literal transcription of CoOp's path: set_random_seed, then Dassl's generate_fewshot_dataset on train
    and on val (min(k, 4)), items as (impath, label)."""
    import random
    from collections import defaultdict

    data = json.loads(split_file.read_text())
    random.seed(seed)
    out = []
    for split, shots in (("train", k), ("val", min(k, 4))):
        tracker = defaultdict(list)
        for item in data[split]:
            tracker[item[1]].append(item)
        dataset = []
        for _label, items in tracker.items():
            dataset.extend(random.sample(items, shots) if len(items) >= shots else items)
        out.append([(rel, label) for rel, label, _ in dataset])
    return out


@pytest.mark.parametrize("seed,k", [(1, 2), (3, 4)])
def test_coop_sampler_draws_coops_exact_shots(seed, k, fs_tree, tmp_path):
    root, _ = fs_tree
    cls = DATASET_REGISTRY.get("DescribableTextures")
    ds = cls(ds_cfg("DescribableTextures", root, tmp_path, ["DATASET.NUM_SHOTS", str(k), "SEED", str(seed),
                                                            "DATASET.FEWSHOT_SAMPLER", "coop"]))
    train, val = dassl_fewshot(root / "dtd" / cls.SPLIT_FILE, seed, k)
    assert [(os.path.relpath(d.impath, ds.image_dir), d.label) for d in ds.train_x] == train
    assert [(os.path.relpath(d.impath, ds.image_dir), d.label) for d in ds.val] == val
    assert ds.split_file().name.endswith("-coop.json")  # never mixed up with the per-class cache
    other = cls(ds_cfg("DescribableTextures", root, tmp_path, ["DATASET.NUM_SHOTS", str(k), "SEED", str(seed)]))
    assert [d.impath for d in other.train_x] != [d.impath for d in ds.train_x]  # the default differs
    with pytest.raises(DatasetLayoutError, match="split-file datasets only"):
        DATASET_REGISTRY.get("ImageNet")(ds_cfg("ImageNet", root, tmp_path, ["DATASET.FEWSHOT_SAMPLER", "coop"])).train_x
