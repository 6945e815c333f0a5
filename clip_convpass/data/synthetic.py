"""A small synthetic ImageNet-family tree in the exact on-disk layouts of the real datasets.

Real wnids (some in ImageNet-A, some in -R, some in both), real JPEG files, a DATASET.CLASS_LIST
file for the class universe. Each class has a colour and a local stripe pattern, so that
adaptation methods have something to learn. Numbers obtained on it are synthetic.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

import numpy as np
from PIL import Image

from .base import RESOURCES, imagenet_wnids, read_wnid_list

LAYOUT = {
    "train": "imagenet/images/train/{wnid}",
    "val": "imagenet/images/val/{wnid}",
    "v2": "imagenetv2/imagenetv2-matched-frequency-format-val/{index}",
    "sketch": "imagenet-sketch/images/{wnid}",
    "a": "imagenet-adversarial/imagenet-a/{wnid}",
    "r": "imagenet-rendition/imagenet-r/{wnid}",
}


def pick_wnids(num_classes: int) -> List[str]:
    """Deterministic mix: classes in both A and R, A only, R only, and neither."""
    a = set(read_wnid_list(RESOURCES / "imagenet_a_wnids.txt"))
    r = set(read_wnid_list(RESOURCES / "imagenet_r_wnids.txt"))
    full = imagenet_wnids()
    groups = [[w for w in full if w in a and w in r], [w for w in full if w in a and w not in r],
              [w for w in full if w in r and w not in a], [w for w in full if w not in a and w not in r]]
    chosen: List[str] = []
    i = 0
    while len(chosen) < num_classes:
        g = groups[i % 4]
        chosen.append(g[len([c for c in chosen if c in g])])
        i += 1
    return sorted(chosen)


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
                         shift_per_class: int = 4, seed: int = 0) -> dict:
    root = Path(root)
    wnids = pick_wnids(num_classes)
    full = imagenet_wnids()
    a = set(read_wnid_list(RESOURCES / "imagenet_a_wnids.txt"))
    r = set(read_wnid_list(RESOURCES / "imagenet_r_wnids.txt"))
    rng = np.random.default_rng(seed)
    counts = {k: 0 for k in LAYOUT}
    for ci, wnid in enumerate(wnids):
        plan = {"train": train_per_class, "val": val_per_class, "v2": shift_per_class, "sketch": shift_per_class,
                "a": shift_per_class if wnid in a else 0, "r": shift_per_class if wnid in r else 0}
        for split, n in plan.items():
            if n == 0:
                continue
            folder = root / LAYOUT[split].format(wnid=wnid, index=full.index(wnid))
            folder.mkdir(parents=True, exist_ok=True)
            ext = {"train": "JPEG", "val": "JPEG", "v2": "jpeg", "sketch": "JPEG", "a": "jpg", "r": "jpg"}[split]
            for j in range(n):
                img = make_image(ci, num_classes, rng, gray=split == "sketch")
                name = f"{wnid}_{j}.{ext}" if split in ("train", "val") else f"{split}_{j:03d}.{ext}"
                img.save(folder / name, format="JPEG", quality=90)
                counts[split] += 1
    (root / "imagenet-rendition" / "imagenet-r" / "README.txt").write_text("ImageNet-R (synthetic stand-in)\n")
    names = dict(ln.strip().split(" ", 1) for ln in open(RESOURCES / "imagenet_classnames.txt") if ln.strip())
    (root / "imagenet" / "classnames.txt").write_text("".join(f"{w} {names[w]}\n" for w in full))
    class_list = root / "synthetic_wnids.txt"
    class_list.write_text("\n".join(wnids) + "\n")
    return {"root": str(root), "class_list": str(class_list), "wnids": wnids, "counts": counts}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Write a synthetic ImageNet-family tree")
    p.add_argument("root")
    p.add_argument("--num-classes", type=int, default=6)
    args = p.parse_args(argv)
    info = build_synthetic_tree(args.root, args.num_classes)
    print(f"Synthetic tree at {info['root']}; set DATASET.CLASS_LIST {info['class_list']}; images: {info['counts']}")


if __name__ == "__main__":
    main()
