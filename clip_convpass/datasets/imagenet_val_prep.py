"""Sort ILSVRC-2012's flat validation folder into val/<wnid>/ from the official ground truth.

    python -m clip_convpass.datasets.imagenet_val_prep --val-dir ILSVRC2012_img_val \\
        (--solution LOC_val_solution.csv | --devkit ILSVRC2012_devkit_t12) \\
        --out DATA/imagenet/images/val [--mode symlink|move|copy]

Ground truth: Kaggle's LOC_val_solution.csv (ImageId, then the wnid as the first word of
PredictionString), or the devkit's data/ILSVRC2012_validation_ground_truth.txt (one ILSVRC2012_ID per
image, in file-name order) with data/meta.mat mapping those ids to wnids (read with scipy). Running it
again is safe: images already in place are left as they are. It then verifies that every image of the
ground truth is in its class folder, and for the full set, 50 images in each of the 1000 classes.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

from clip_convpass.datasets.imagenet import imagenet_wnids
from clip_convpass.utils.errors import UserError, entry_point

FULL_SET = (1000, 50)  # classes, images per class


def read_solution_csv(path: Path) -> Dict[str, str]:
    """{image file stem: wnid} from LOC_val_solution.csv."""
    out = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise UserError(f"{path}: expected the columns ImageId,PredictionString (Kaggle's LOC_val_solution.csv)")
        for row in reader:
            words = row["PredictionString"].split()
            if not words:
                raise UserError(f"{path}: no label for {row['ImageId']}")
            out[row["ImageId"]] = words[0]
    return out


def read_devkit(devkit: Path) -> Dict[str, str]:
    """{image file stem: wnid} from the devkit's ground-truth file and meta.mat."""
    gt = devkit / "data" / "ILSVRC2012_validation_ground_truth.txt"
    meta = devkit / "data" / "meta.mat"
    for p in (gt, meta):
        if not p.is_file():
            raise UserError(f"{p} is missing: --devkit expects ILSVRC2012_devkit_t12/ with data/ground truth and meta.mat")
    try:
        from scipy.io import loadmat
    except ImportError as e:
        raise UserError("reading the devkit's meta.mat needs scipy (pip install scipy), or use --solution "
                        "LOC_val_solution.csv") from e
    synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
    id_to_wnid = {int(i): str(w) for i, w in zip(synsets["ILSVRC2012_ID"], synsets["WNID"])}
    labels = [int(x) for x in gt.read_text().split()]
    return {f"ILSVRC2012_val_{n:08d}": id_to_wnid[label] for n, label in enumerate(labels, 1)}


def sort_val(val_dir: Path, ground_truth: Dict[str, str], out: Path, mode: str = "symlink") -> Counter:
    known = set(imagenet_wnids())
    unknown = sorted({w for w in ground_truth.values() if w not in known})
    if unknown:
        raise UserError(f"the ground truth names wnids that are not ImageNet classes: {unknown[:5]}")
    files = {p.stem: p.name for p in val_dir.iterdir()} if val_dir.is_dir() else {}
    placed = Counter()
    for stem, wnid in sorted(ground_truth.items()):
        name = files.get(stem, f"{stem}.JPEG")
        src, dst = val_dir / name, out / wnid / name
        if dst.exists():  # sorted by an earlier run (a symlink counts if its target exists)
            placed[wnid] += 1
            continue
        if not src.is_file():
            raise UserError(f"{src} is listed in the ground truth but is neither in --val-dir nor in {dst.parent}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if mode == "symlink":
            os.symlink(src.resolve(), dst)
        elif mode == "move":
            shutil.move(str(src), dst)
        else:
            shutil.copy2(src, dst)
        placed[wnid] += 1
    return placed


def verify(out: Path, ground_truth: Dict[str, str]) -> List[str]:
    """Problems found: images of the ground truth not in their class folder, wrong class sizes."""
    problems = [f"{out / w / s}.*" for s, w in sorted(ground_truth.items())
                if not any((out / w).glob(f"{s}.*"))][:10]
    counts = Counter(ground_truth.values())
    if len(ground_truth) == FULL_SET[0] * FULL_SET[1]:
        if len(counts) != FULL_SET[0] or set(counts.values()) != {FULL_SET[1]}:
            problems.append(f"expected {FULL_SET[1]} images in each of {FULL_SET[0]} classes, the ground truth has "
                            f"{len(counts)} classes of {sorted(set(counts.values()))} images")
        present = {w: len(list((out / w).iterdir())) for w in counts if (out / w).is_dir()}
        wrong = [w for w in counts if present.get(w) != FULL_SET[1]]
        if wrong:
            problems.append(f"{len(wrong)} class folders do not hold {FULL_SET[1]} images, e.g. {wrong[:5]}")
    return problems


@entry_point
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--val-dir", required=True, type=Path, help="the extracted ILSVRC2012_img_val.tar (flat)")
    truth = p.add_mutually_exclusive_group(required=True)
    truth.add_argument("--solution", type=Path, help="LOC_val_solution.csv")
    truth.add_argument("--devkit", type=Path, help="ILSVRC2012_devkit_t12 folder")
    p.add_argument("--out", required=True, type=Path, help="DATA/imagenet/images/val")
    p.add_argument("--mode", choices=["symlink", "move", "copy"], default="symlink")
    args = p.parse_args(argv)
    if args.solution is not None and not args.solution.is_file():
        raise UserError(f"--solution {args.solution} does not exist")
    ground_truth = read_solution_csv(args.solution) if args.solution else read_devkit(args.devkit)
    placed = sort_val(args.val_dir, ground_truth, args.out, args.mode)
    problems = verify(args.out, ground_truth)
    if problems:
        raise UserError("validation folder check failed: " + "; ".join(problems))
    print(f"{sum(placed.values())} images in {len(placed)} class folders under {args.out} ({args.mode}); verified")
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
