"""VTAB-1K (Zhai et al. 2019), the 19 tasks in the layout every PETL repository uses (NOAH's get_vtab1k.py writes
it; PETL-ViT's Convpass, VPT's and FacT's loaders read it):

    <DATA>/vtab-1k/<task>/{train800.txt, val200.txt, train800val200.txt, test.txt}
    lines "<image path relative to the task folder> <label>", e.g. "images/train800val200/000000.jpg 3"

Protocol: hyper-parameters are chosen by training on train800 and scoring val200 (TEST.SPLIT val, as a sweep
runs); the reported model trains on all 1,000 images of train800val200 and is scored on test (TEST.SPLIT test).
The lists carry labels only, so methods that read class names are refused on these tasks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

from clip_convpass.data.lists import ListFileDataset
from clip_convpass.data.synthetic import SyntheticFiles, SyntheticTree
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY

BENCHMARK = "vtab1k"
GROUPS = ("Natural", "Specialized", "Structured")
# (task folder as in PETL-ViT's run.sh, group, classes as in its configs' class_num, column label of the paper's
# Table 1), in Table 1's order
TASKS = (
    ("cifar", "Natural", 100, "Cifar100"),
    ("caltech101", "Natural", 102, "Caltech101"),
    ("dtd", "Natural", 47, "DTD"),
    ("oxford_flowers102", "Natural", 102, "Flower102"),
    ("oxford_iiit_pet", "Natural", 37, "Pets"),
    ("svhn", "Natural", 10, "SVHN"),
    ("sun397", "Natural", 397, "Sun397"),
    ("patch_camelyon", "Specialized", 2, "Camelyon"),
    ("eurosat", "Specialized", 10, "EuroSAT"),
    ("resisc45", "Specialized", 45, "Resisc45"),
    ("diabetic_retinopathy", "Specialized", 5, "Retinopathy"),
    ("clevr_count", "Structured", 8, "Clevr-Count"),
    ("clevr_dist", "Structured", 6, "Clevr-Dist"),
    ("dmlab", "Structured", 6, "DMLab"),
    ("kitti", "Structured", 4, "KITTI-Dist"),
    ("dsprites_loc", "Structured", 16, "dSpr-Loc"),
    ("dsprites_ori", "Structured", 16, "dSpr-Ori"),
    ("smallnorb_azi", "Structured", 18, "sNORB-Azim"),
    ("smallnorb_ele", "Structured", 9, "sNORB-Ele"),
)
# train800 -> val200 while choosing hyper-parameters (TEST.SPLIT val); train800val200 -> test for the reported model
TRAIN_LISTS = {"val": "train800.txt", "test": "train800val200.txt"}  # by TEST.SPLIT


class VTAB1kTask(ListFileDataset):
    BENCHMARK = BENCHMARK
    NAMED_CLASSES = False
    TASK = ""
    LAYOUT_HELP = ("vtab-1k/<task>/{train800,val200,train800val200,test}.txt with '<image path> <label>' lines and "
                   "the images they name (NOAH's data/vtab-source/get_vtab1k.py writes this layout)")

    def list_names(self) -> Dict[str, str]:
        return {"train": TRAIN_LISTS[self.cfg.TEST.SPLIT], "val": "val200.txt", "test": "test.txt"}


class VTAB1kTree(SyntheticTree):
    """A task's real layout: every class of the task (labels are the protocol), images under images/<list>/ as
    get_vtab1k.py names them, and the four lists; train800val200 has its own copies, as there."""

    TASK = ""
    CLASSES = 0
    PER_CLASS = {"train800": 2, "val200": 1, "train800val200": 3, "test": 1}

    @classmethod
    def classes(cls, num_classes: int) -> List[str]:
        return [str(i) for i in range(cls.CLASSES)]  # the task's own count, whatever the caller asks

    @classmethod
    def files(cls, class_id: str, sizes: Dict[str, int], index: int) -> List[SyntheticFiles]:
        return [SyntheticFiles(split, f"vtab-1k/{cls.TASK}/images/{split}", n, "jpg", f"{index:03d}_{{j}}",
                               is_test=split == "test") for split, n in cls.PER_CLASS.items()]

    @classmethod
    def finish(cls, root: Path, class_ids: Sequence[str], sizes: Dict[str, int]) -> None:
        task = root / "vtab-1k" / cls.TASK
        for split in cls.PER_CLASS:
            names = sorted(p.name for p in (task / "images" / split).iterdir())
            (task / f"{split}.txt").write_text("".join(f"images/{split}/{n} {int(n.split('_')[0])}\n" for n in names))


def _register(order: int, task: str, group: str, classes: int, label: str) -> type:
    """One registered dataset (vtab_<task>) and its synthetic tree per task: the family is data, not 19 files."""
    cls = DATASET_REGISTRY.register(type(f"VTAB1k_{task}", (VTAB1kTask,), {
        "NAME": f"vtab_{task}", "TASK": task, "GROUP": group, "ORDER": 200 + order, "LABEL": label,
        "LAYOUTS": (f"vtab-1k/{task}",), "EXPECTED_CLASSES": classes, "__module__": __name__,
        "__doc__": f"VTAB-1K {label} ({group}, {classes} classes)"}))
    SYNTHETIC_TREE_REGISTRY.register(type(f"VTAB1k_{task}Tree", (VTAB1kTree,), {
        "NAME": cls.NAME, "TASK": task, "CLASSES": classes, "__module__": __name__}))
    return cls


TASK_DATASETS = {task: _register(i, task, group, n, label) for i, (task, group, n, label) in enumerate(TASKS)}
