"""Few-shot FGVC as NOAH publishes it (ZhangYuanhan-AI/NOAH data/few-shot/), the Convpass paper's Figure 5:
NOAH's annotation lists over CoOp's image folders.

    <DATA>/few-shot/<NOAH folder>/annotations/train_meta.list.num_shot_{1,2,4,8,16}.seed_{0,1,2}
    <DATA>/few-shot/<NOAH folder>/annotations/{val_meta.list, test_meta.list}
    lines "<image path> <label>" relative to CoOp's image folder (DATASETS.md), e.g. fgvc_aircraft/images/

DATASET.NUM_SHOTS and SEED pick the training list (seeds 0, 1, 2 as NOAH's); val_meta.list (CoOp's val split) is
what choices are made on (TEST.SPLIT val), test_meta.list what is reported. The lists are used as published:
NOAH's Oxford-Pets 1-shot lists name each image twice, and so it is trained on twice per epoch. NOAH's folder
for Stanford Cars is spelled "standford-cars"; its lists start at cars_train/ or cars_test/.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

from clip_convpass.config import check
from clip_convpass.data.lists import ListFileDataset
from clip_convpass.data.synthetic import SyntheticFiles, SyntheticTree
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY

BENCHMARK = "fgvc_fewshot"
SHOTS = (1, 2, 4, 8, 16)
SEEDS = (0, 1, 2)
# (registry name, NOAH's annotation folder, CoOp's image folder, classes, column label), in Figure 5's order
DATASETS = (
    ("fgvc_fs_aircraft", "fgvc-aircraft", "fgvc_aircraft/images", 100, "FGVC-Aircraft"),
    ("fgvc_fs_pets", "oxford-pets", "oxford_pets/images", 37, "Oxford-Pets"),
    ("fgvc_fs_food101", "food101", "food-101/images", 101, "Food-101"),
    ("fgvc_fs_cars", "standford-cars", "stanford_cars", 196, "Stanford Cars"),
    ("fgvc_fs_flowers102", "oxford-flowers102", "oxford_flowers/jpg", 102, "Flowers102"),
)


class NOAHFewShot(ListFileDataset):
    BENCHMARK = BENCHMARK
    SHOT_SOURCE = "lists"
    NAMED_CLASSES = False
    LISTS = ""  # NOAH's annotation folder under few-shot/
    IMAGES = ""  # CoOp's image folder

    @classmethod
    def check_config(cls, cfg) -> None:
        check(cfg.DATASET.NUM_SHOTS in SHOTS, f"{cls.NAME}: NOAH's lists have DATASET.NUM_SHOTS {list(SHOTS)}, got "
                                              f"{cfg.DATASET.NUM_SHOTS}")
        check(cfg.SEED in SEEDS, f"{cls.NAME}: NOAH's lists have SEED {list(SEEDS)}, got {cfg.SEED}")

    def list_names(self) -> Dict[str, str]:
        c = self.cfg
        return {"train": f"train_meta.list.num_shot_{c.DATASET.NUM_SHOTS}.seed_{c.SEED}", "val": "val_meta.list",
                "test": "test_meta.list"}

    @property
    def list_dir(self) -> Path:
        return self.root / "few-shot" / self.LISTS / "annotations"


class NOAHFewShotTree(SyntheticTree):
    """Every class of the dataset (labels are the protocol) in CoOp's image folder, and NOAH's lists for the shot
    counts the images allow (1, 2 and 4 shots; seeds 0-2), val and test."""

    LISTS = ""
    IMAGES = ""
    CLASSES = 0
    PER_CLASS = {"train": 4, "val": 1, "test": 1}

    @classmethod
    def classes(cls, num_classes: int) -> List[str]:
        return [str(i) for i in range(cls.CLASSES)]

    @classmethod
    def files(cls, class_id: str, sizes: Dict[str, int], index: int) -> List[SyntheticFiles]:
        return [SyntheticFiles(f"fgvc_{split}", f"{cls.IMAGES}/noah_{split}", n, "jpg", f"{index:03d}_{{j}}",
                               is_test=split == "test") for split, n in cls.PER_CLASS.items()]

    @classmethod
    def finish(cls, root: Path, class_ids: Sequence[str], sizes: Dict[str, int]) -> None:
        lists = root / "few-shot" / cls.LISTS / "annotations"
        lists.mkdir(parents=True, exist_ok=True)

        def entries(split):
            names = sorted(p.name for p in (root / cls.IMAGES / f"noah_{split}").iterdir())
            return [(f"noah_{split}/{n}", int(n.split("_")[0])) for n in names]

        for split in ("val", "test"):
            (lists / f"{split}_meta.list").write_text("".join(f"{p} {c}\n" for p, c in entries(split)))
        train = entries("train")
        for k in (1, 2, 4):
            for seed in SEEDS:  # a different k images per class for each seed, as NOAH's lists are
                chosen = [e for e in train if (int(e[0].rsplit("_", 1)[1][:-4]) + seed) % cls.PER_CLASS["train"] < k]
                (lists / f"train_meta.list.num_shot_{k}.seed_{seed}").write_text("".join(f"{p} {c}\n" for p, c in chosen))


def _register(order: int, name: str, lists: str, images: str, classes: int, label: str) -> type:
    cls = DATASET_REGISTRY.register(type(name, (NOAHFewShot,), {
        "NAME": name, "ORDER": 300 + order, "LABEL": label, "LISTS": lists, "IMAGES": images, "LAYOUTS": (images,),
        "EXPECTED_CLASSES": classes, "__module__": __name__,
        "LAYOUT_HELP": f"few-shot/{lists}/annotations/ (NOAH's lists) naming images under {images}/ (CoOp's folder)",
        "__doc__": f"NOAH's few-shot {label} ({classes} classes)"}))
    SYNTHETIC_TREE_REGISTRY.register(type(f"{name}_tree", (NOAHFewShotTree,), {
        "NAME": name, "LISTS": lists, "IMAGES": images, "CLASSES": classes, "__module__": __name__}))
    return cls


FEWSHOT_DATASETS = [_register(i, *entry) for i, entry in enumerate(DATASETS)]
