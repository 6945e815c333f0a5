"""Check a data root before a run: per dataset found/missing, classes and images vs expected, unreadable files.

    python -m clip_convpass.data.check --root DATA [--class-list wnids.txt] [--verify-images] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from tabulate import tabulate

from clip_convpass.config import setup_cfg
from clip_convpass.data.images import ImageLoadError, load_rgb
from clip_convpass.data.types import DatasetLayoutError
from clip_convpass.registry import DATASET_REGISTRY
from clip_convpass.utils.errors import UserError, entry_point
from clip_convpass.utils.logging import Progress, setup_logger


def check_dataset(name: str, root: str, class_list: str = "", verify_images: bool = False) -> dict:
    cls = DATASET_REGISTRY.get(name)
    if not cls.USES_CLASS_LIST:
        class_list = ""  # datasets with split files take their classes from them
    cfg = setup_cfg(None, None, ["DATASET.ROOT", root, "DATASET.NAME", name, "DATASET.CLASS_LIST", class_list])
    row = {"dataset": name, "status": "ok", "classes": None, "expected_classes": None, "images": None,
           "expected_images": None, "unreadable": [], "problem": ""}
    try:
        ds = cls(cfg)
        row["classes"] = ds.num_classes
        subset = ds.universe.subset  # a class list (or a synthetic tree's) restricts the universe
        row["expected_classes"] = cls.EXPECTED_CLASSES if not subset else ds.num_classes
        items = ds.test
        row["images"] = len(items)
        row["expected_images"] = cls.EXPECTED_TEST_IMAGES if not subset else None
        row["path"] = str(ds.dataset_dir)
    except UserError as e:
        row["status"] = "missing" if isinstance(e, DatasetLayoutError) and "none of the expected" in str(e) else "error"
        row["problem"] = str(e)
        return row
    problems = []
    if row["expected_images"] is not None and row["images"] != row["expected_images"]:
        problems.append(f"{row['images']} test images, expected {row['expected_images']}")
    if row["expected_classes"] is not None and row["classes"] != row["expected_classes"]:
        problems.append(f"{row['classes']} classes, expected {row['expected_classes']}")
    if cls.EXPECTED_SPLITS and hasattr(ds, "split_sizes"):  # CoOp's published train/val/test sizes
        row["splits"] = ds.split_sizes()
        row["expected_splits"] = dict(cls.EXPECTED_SPLITS)
        problems += [f"{split} {row['splits'][split]}, expected {n}" for split, n in cls.EXPECTED_SPLITS.items()
                     if row["splits"][split] != n]
    if problems:
        row["status"] = "incomplete"
        row["problem"] = "; ".join(problems)
    # not errors, but things a user should know: listed twice, or names no prompt tells apart (CLIP's own
    # ImageNet names have two such pairs, which the reference keeps)
    notes = [f"{split}: {n} image(s) listed more than once" for split, n in getattr(ds, "duplicates", {}).items()]
    notes += [f"classes {group} have names no prompt tells apart" for group in ds.universe.indistinguishable()]
    if notes:
        row["notes"] = notes
        row["problem"] = "; ".join(filter(None, [row["problem"], *notes]))
    if verify_images:
        paths = [d.impath for d in items]
        if cls.HAS_TRAIN:  # the training split too: few-shot sampling may pick any of its files
            try:
                paths += [p for files in ds._read_train_per_class().values() for p in files]
            except UserError as e:
                row["status"], row["problem"] = "error", str(e)
                return row
        progress = Progress(len(paths), f"verify {name}", every=max(1, len(paths) // 20))
        for path in paths:
            try:
                load_rgb(path)
            except ImageLoadError as e:
                row["unreadable"].append(str(e))
            progress.step()
        if row["unreadable"]:
            row["status"] = "unreadable files"
    return row


def _short(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


@entry_point
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="DATASET.ROOT")
    p.add_argument("--class-list", default="", help="DATASET.CLASS_LIST for ImageNet's universe (default: the 1000 "
                                                    "classes; a synthetic tree's synthetic_classes.txt is found by itself)")
    p.add_argument("--datasets", nargs="+", default=None, help="registry names (default: all)")
    p.add_argument("--verify-images", action="store_true", help="decode every test image")
    p.add_argument("--json", default="", help="also write the report here")
    args = p.parse_args(argv)
    setup_logger(None)
    rows = [check_dataset(n, args.root, args.class_list, args.verify_images) for n in (args.datasets or DATASET_REGISTRY.names())]
    table = [[r["dataset"], r["status"], f"{r['classes']}/{r['expected_classes']}" if r["classes"] is not None else "-",
              f"{r['images']}/{r['expected_images'] or '?'}" if r["images"] is not None else "-",
              len(r["unreadable"]), _short(r["problem"])] for r in rows]
    print(tabulate(table, headers=["dataset", "status", "classes", "test images", "unreadable", "problem"]))
    for r in rows:  # the whole text of every problem the table had to shorten
        if r["problem"] != _short(r["problem"]) and r["status"] != "missing":
            print(f"  {r['dataset']}: {r['problem']}")
    for r in rows:
        for msg in r["unreadable"]:
            print(f"  {r['dataset']}: {msg}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
