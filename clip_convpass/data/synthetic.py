"""Small synthetic dataset trees in the exact on-disk layouts of the real datasets.

Each dataset's tree is a `SyntheticTree` registered under the dataset's name (in the dataset's file,
outside the dataset class that production runs use). The training dataset's tree picks the classes; it
and the tree of every dataset that evaluates its models (`SOURCE`) say which folders of which images to
write (`files`) and what goes beside them (`finish`: split files, class lists). Real JPEG files,
a class-list file for the class universe. Each class has a colour and a local stripe pattern, so
that adaptation methods have something to learn. Numbers obtained on it are synthetic.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
from PIL import Image

from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY, evaluation_domains
from clip_convpass.utils.errors import UserError, entry_point


@dataclass(frozen=True)
class SyntheticFiles:
    """One folder of generated images in a dataset's exact on-disk layout (see data/synthetic.py)."""

    label: str  # key in the generator's counts (e.g. "train", "val", "v2")
    folder: str  # relative to the root
    count: int
    ext: str
    name: str  # file-name format with {j}
    gray: bool = False
    is_test: bool = False
    start: int = 0  # files are numbered start, start + 1, ... (unique names in folders shared by classes)


class SyntheticTree:
    """How to write one dataset's real on-disk layout with generated images. NAME is the dataset's registry
    name; family bases (SplitFileTree, ImageNetTree, ...) implement the hooks for their members."""

    NAME = ""

    @classmethod
    def dataset(cls) -> type:
        return DATASET_REGISTRY.get(cls.NAME)

    @classmethod
    def classes(cls, num_classes: int) -> List[str]:
        """Class ids a synthetic tree of this (training) dataset uses."""
        raise NotImplementedError(f"{cls.NAME}'s synthetic tree cannot be a training dataset's")

    @classmethod
    def files(cls, class_id: str, sizes: Dict[str, int], index: int) -> List[SyntheticFiles]:
        """The folders of images to generate for one class (`index` in the tree)."""
        raise NotImplementedError

    @classmethod
    def finish(cls, root: Path, class_ids: Sequence[str], sizes: Dict[str, int]) -> None:
        """Files beside the images (split files, class-name lists, READMEs), once the images exist."""


def make_image(class_idx: int, num_classes: int, rng: np.random.Generator, size=(40, 48), gray=False) -> Image.Image:
    h, w = size
    hue = class_idx / max(1, num_classes)
    base = np.array([np.sin(2 * np.pi * hue), np.sin(2 * np.pi * (hue + 1 / 3)), np.sin(2 * np.pi * (hue + 2 / 3))])
    img = 128 + 60 * base[None, None, :] + rng.normal(0, 30, (h, w, 3))
    # a class-specific stripe pattern in a random 12x12 window
    y, x = rng.integers(0, h - 12), rng.integers(0, w - 12)
    period = 2 + class_idx % 4
    yy, xx = np.mgrid[0:12, 0:12]
    stripes = ((xx if class_idx % 2 else yy) // (period // 2 or 1)) % 2
    img[y:y + 12, x:x + 12] = np.where(stripes[..., None] > 0, 250, 5)
    img = np.clip(img, 0, 255).astype(np.uint8)
    pil = Image.fromarray(img)
    return pil.convert("L").convert("RGB") if gray else pil


def build_synthetic_tree(root: str | Path, num_classes: int = 6, train_per_class: int = 24, val_per_class: int = 6,
                         shift_per_class: int = 4, seed: int = 0, source: str = "ImageNet",
                         split_val_per_class: int = 6) -> dict:
    """Write `source` and its evaluation datasets under root (several sources may share one root).
    `val_per_class` is the test images per class; `split_val_per_class` the images per class of a val split
    (CoOp's datasets). Returns the root, the class-list file, the class ids, image counts per folder kind
    and test-image counts per dataset."""
    root = Path(root)
    domains = [DATASET_REGISTRY.get(n) for n in evaluation_domains(source)]
    missing = [d.NAME for d in domains if d.NAME not in SYNTHETIC_TREE_REGISTRY]
    if missing:
        raise UserError(f"no synthetic tree is registered for {missing} (a SyntheticTree named after the dataset)")
    trees = {d.NAME: SYNTHETIC_TREE_REGISTRY.get(d.NAME) for d in domains}
    class_ids = trees[source].classes(num_classes)
    sizes = {"train": train_per_class, "test": val_per_class, "shift": shift_per_class, "val": split_val_per_class}
    rng = np.random.default_rng(seed)
    counts: Dict[str, int] = {}
    test_counts = {d.NAME: 0 for d in domains}
    for ci, cid in enumerate(class_ids):
        for ds in domains:
            for spec in trees[ds.NAME].files(cid, sizes, ci):
                folder = root / spec.folder
                folder.mkdir(parents=True, exist_ok=True)
                for j in range(spec.count):
                    img = make_image(ci, num_classes, rng, gray=spec.gray)
                    img.save(folder / f"{spec.name.format(j=spec.start + j)}.{spec.ext}", format="JPEG", quality=90)
                counts[spec.label] = counts.get(spec.label, 0) + spec.count
                if spec.is_test:
                    test_counts[ds.NAME] += spec.count
    for tree in trees.values():
        tree.finish(root, class_ids, sizes)
    class_list = ""  # DATASET.CLASS_LIST: only ImageNet's universe needs one (split files name their classes)
    if domains[0].USES_CLASS_LIST:
        class_list = str(root / "synthetic_classes.txt")
        Path(class_list).write_text("\n".join(class_ids) + "\n")
    return {"root": str(root), "class_list": str(class_list), "class_ids": class_ids, "counts": counts,
            "test_counts": test_counts}


@entry_point
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write a synthetic dataset tree")
    p.add_argument("root")
    p.add_argument("--num-classes", type=int, default=6)
    p.add_argument("--source", default="ImageNet", help="training dataset (its evaluation sets are written too)")
    args = p.parse_args(argv)
    info = build_synthetic_tree(args.root, args.num_classes, source=args.source)
    hint = f"; set DATASET.CLASS_LIST {info['class_list']}" if info["class_list"] else ""
    print(f"Synthetic tree at {info['root']}{hint}; images: {info['counts']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
