"""Few-shot FGVC on NOAH's lists (the Convpass paper's Figure 5): the five datasets over CoOp's image folders, the
lists chosen by shots and seed, NOAH's training pipeline (RandAugment, random erasing, mixup / cutmix, label
smoothing) seeded per sample and per epoch, the curves averaged within a benchmark family, and the grid."""
import random

import numpy as np
import pytest
import torch

from clip_convpass.config import ConfigError, setup_cfg
from clip_convpass.data import build_dataset, build_loader, build_transform
from clip_convpass.data.base import DatasetLayoutError
from clip_convpass.data.synthetic import build_synthetic_tree
from clip_convpass.registry import DATASET_REGISTRY, TRAINER_REGISTRY, benchmark_datasets, trainable_datasets

# NOAH lib/datasets.py nb_classes of the "-FS" sets, and its committed data/few-shot/ folders (transcribed)
NOAH = {"fgvc_fs_aircraft": ("fgvc-aircraft", 100), "fgvc_fs_pets": ("oxford-pets", 37),
        "fgvc_fs_food101": ("food101", 101), "fgvc_fs_cars": ("standford-cars", 196),
        "fgvc_fs_flowers102": ("oxford-flowers102", 102)}
TINY = ["MODEL.BACKBONE", "timm:vit_tiny_demo", "MODEL.PRETRAINED", "none", "INPUT.SIZE", "(32,32)", "DEVICE", "cpu"]


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    root = tmp_path_factory.mktemp("fgvc")
    build_synthetic_tree(root, source="fgvc_fs_pets")
    return root


def pets_cfg(root, opts=(), config=None):
    return setup_cfg("datasets/fgvc_fs_pets.yaml", config, ["DATASET.ROOT", str(root), *TINY, *opts])


def test_the_five_datasets_are_noahs_lists_over_coops_images():
    assert benchmark_datasets("fgvc_fewshot") == list(NOAH)
    for name, (folder, classes) in NOAH.items():
        cls = DATASET_REGISTRY.get(name)
        assert (cls.LISTS, cls.EXPECTED_CLASSES, cls.SHOT_SOURCE) == (folder, classes, "lists")
    assert not set(NOAH) & set(trainable_datasets())


def test_shots_and_seed_choose_the_list_and_val_meta_is_the_choosing_split(pets):
    lists = pets / "few-shot" / "oxford-pets" / "annotations"
    ds = build_dataset(pets_cfg(pets, ["DATASET.NUM_SHOTS", "2", "SEED", "1"]))
    listed = [line.split()[0] for line in (lists / "train_meta.list.num_shot_2.seed_1").read_text().splitlines()]
    assert [d.impath for d in ds.train_x] == [str(pets / "oxford_pets" / "images" / p) for p in listed]
    assert len(ds.test) == len((lists / "test_meta.list").read_text().splitlines()) == 37
    other_seed = build_dataset(pets_cfg(pets, ["DATASET.NUM_SHOTS", "2", "SEED", "2"]))
    assert {d.impath for d in other_seed.train_x} != {d.impath for d in ds.train_x}
    search = build_dataset(pets_cfg(pets, ["DATASET.NUM_SHOTS", "1", "SEED", "0", "TEST.SPLIT", "val"]))
    assert [d.impath for d in search.test] == [d.impath for d in search.val] and len(search.val) == 37
    with pytest.raises(ConfigError, match="SEED \\[0, 1, 2\\], got 3"):
        pets_cfg(pets, ["SEED", "3"])
    with pytest.raises(ConfigError, match="NUM_SHOTS \\[1, 2, 4, 8, 16\\], got 3"):
        pets_cfg(pets, ["DATASET.NUM_SHOTS", "3"])
    with pytest.raises(DatasetLayoutError, match="missing list file .*num_shot_16.seed_0"):
        build_dataset(pets_cfg(pets, ["DATASET.NUM_SHOTS", "16", "SEED", "0"])).train_x


def test_noahs_training_pipeline_is_seeded_per_sample_whatever_the_workers(pets):
    cfg = setup_cfg("datasets/fgvc_fs_pets.yaml", "trainers/PETLCLIP/fgvc_convpass.yaml")  # the recipe as shipped
    assert [type(t).__name__ for t in build_transform(cfg, True).transforms] == [
        "RandomResizedCrop", "RandomHorizontalFlip", "RandAugment", "ToTensor", "Normalize", "RandomErasing"]
    jitter = setup_cfg(None, "trainers/PETLCLIP/fgvc_convpass.yaml", ["INPUT.TRANSFORMS", '["random_resized_crop", '
                       '"random_flip", "color_jitter", "rand_augment", "normalize", "random_erasing"]'])
    assert type(build_transform(jitter, True).transforms[2]).__name__ == "ColorJitter"  # the paper's wording
    test_ops = build_transform(cfg, False).transforms
    assert test_ops[0].size == (256, 256) and test_ops[1].size == (224, 224)
    cfg32 = pets_cfg(pets, ["DATASET.NUM_SHOTS", "2", "SEED", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "8",
                            "INPUT.RESIZE_SIZE", "36"], "trainers/PETLCLIP/fgvc_convpass.yaml")
    items = build_dataset(cfg32).train_x
    batches = {}
    for workers in (0, 2):
        cfg32.defrost()
        cfg32.DATALOADER.NUM_WORKERS = workers
        cfg32.freeze()
        state = (random.getstate(), np.random.get_state()[1].copy())
        batches[workers] = [b["img"] for b in build_loader(cfg32, items, True, torch.device("cpu"), stream=("train", 0))]
        assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])
    assert all(torch.equal(a, b) for a, b in zip(batches[0], batches[2])) and len(batches[0]) == 9


def test_mixup_and_label_smoothing_are_timms_and_methods_with_their_own_loss_refuse_them(pets, tmp_path):
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    opts = ["DATASET.NUM_SHOTS", "2", "SEED", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "8", "OUTPUT_DIR", str(tmp_path)]
    trainer = TRAINER_REGISTRY.get("PETLCLIP")(pets_cfg(pets, opts, "trainers/PETLCLIP/fgvc_convpass.yaml"))
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8)
    np.random.seed(7)
    mixed, targets = trainer.mix(images.clone(), labels)
    np.random.seed(7)
    reference = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=37)
    ref_images, ref_targets = reference(images.clone(), labels)
    assert torch.equal(mixed, ref_images) and torch.equal(targets, ref_targets)
    logits = torch.randn(8, 37)
    assert torch.allclose(trainer.classification_loss(logits, targets), SoftTargetCrossEntropy()(logits, targets))
    smooth = TRAINER_REGISTRY.get("PETLCLIP")(pets_cfg(pets, [*opts, "TRAIN.MIXUP", "0", "TRAIN.CUTMIX", "0"],
                                                       "trainers/PETLCLIP/fgvc_convpass.yaml"))
    assert torch.equal(smooth.mix(images, labels)[1], labels)
    assert torch.allclose(smooth.classification_loss(logits, labels),
                          torch.nn.CrossEntropyLoss(label_smoothing=0.1)(logits, labels))
    with pytest.raises(ConfigError, match="even DATALOADER.TRAIN_X.BATCH_SIZE and DATALOADER.TRAIN_X.DROP_LAST"):
        pets_cfg(pets, ["DATALOADER.TRAIN_X.BATCH_SIZE", "7"], "trainers/PETLCLIP/fgvc_convpass.yaml")
    with pytest.raises(ConfigError, match="computes its own loss"):
        TRAINER_REGISTRY.get("KgCoOp")(setup_cfg("datasets/oxford_pets.yaml", "trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml",
                                                 ["TRAIN.LABEL_SMOOTHING", "0.1", "DATASET.ROOT", str(pets)]))
    with pytest.raises(ConfigError, match="RAND_AUGMENT"):
        pets_cfg(pets, ["INPUT.RAND_AUGMENT", "rand-q9"], "trainers/PETLCLIP/fgvc_convpass.yaml")


def test_a_few_shot_average_never_mixes_benchmark_families():
    from clip_convpass.reporting.fewshot import fewshot_curves

    def rec(dataset, shots, top1):
        return {"dataset": dataset, "train_dataset": dataset, "name": "X", "trainer": "PETLCLIP", "seed": 0,
                "shots": shots, "split": "test", "metrics": {"top1": top1}, "experiment": "e"}

    curves = fewshot_curves([rec("fgvc_fs_pets", 1, 10.0), rec("fgvc_fs_cars", 1, 20.0), rec("OxfordPets", 1, 70.0),
                             rec("EuroSAT", 1, 50.0)])["X"]
    assert curves["Average (fgvc_fewshot)"][1][0] == 15.0 and curves["Average (coop)"][1][0] == 60.0
    only_fgvc = fewshot_curves([rec("fgvc_fs_pets", 1, 10.0), rec("fgvc_fs_cars", 1, 20.0)])["X"]
    assert only_fgvc["Average"][1][0] == 15.0


def test_grid_runs_the_fgvc_rows_with_their_val_meta_sweeps_and_refuses_mixed_families(pets, tmp_path):
    import json

    from clip_convpass.experiments.grid import main

    opts = [*TINY[:6], "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "8", "TEST.MONITOR_EVERY", "0"]
    out = tmp_path / "out"
    assert main(["--data", str(pets), "--output", str(out), "--fewshot", "fgvc_fs_pets", "--shots", "1",
                 "--methods", "FGVC convpass", "--seeds", "0", *opts]) == 0
    cell = out / "fgvc_fs_pets" / "PETLCLIP" / "fgvc_convpass_1shots" / "seed0" / "eval" / "fgvc_fs_pets"
    record = json.loads((cell / "results.json").read_text())
    assert record["train_list"] == "train_meta.list.num_shot_1.seed_0" and record["shots"] == 1
    assert "SCALE" in str(record["selected"])
    with pytest.raises(SystemExit):
        main(["--data", str(pets), "--output", str(out), "--fewshot", "fgvc_fs_pets", "OxfordPets", "--seeds", "0"])


def test_randaugment_at_its_top_magnitude_posterizes_to_black_instead_of_failing():
    """timm's increasing posterize reaches 0 bits at magnitude 10; Pillow >= 11 refuses 0 bits, older Pillow (NOAH's)
    made every pixel 0. Our policy keeps the latter, so no sample can end a run."""
    from PIL import Image

    from clip_convpass.data.transforms import rand_augment

    cfg = setup_cfg(None, None, ["INPUT.RAND_AUGMENT", "rand-m10-n1-inc1"])
    policy = rand_augment(cfg, build_transform(cfg, False).transforms[0].interpolation)
    (op,) = [o for o in policy.ops if o.name == "PosterizeIncreasing"]
    image = Image.fromarray(np.random.default_rng(0).integers(1, 255, (8, 8, 3), dtype=np.uint8))
    op.prob = 1.0
    assert np.asarray(op(image)).max() == 0
    policy.ops = [op]
    assert np.asarray(policy(image)).max() == 0
