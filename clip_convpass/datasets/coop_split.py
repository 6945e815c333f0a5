"""CoOp's few-shot datasets: fixed train/val/test splits in a JSON file beside the images.

CoOp's DATASETS.md layout: ``<DATA>/<dataset dir>/<split file>`` holding
``{"train" | "val" | "test": [[path relative to the image folder, label, class name], ...]}``. Class names
and their order are what CoOp's readers produce from it (Dassl's ``get_lab2cname`` over the training
items: label order). A dataset file declares its folder, split file, image folder, templates, the
published split sizes and a few real class names for synthetic trees.
"""
from __future__ import annotations

import logging
import os
import random
from collections import defaultdict
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from clip_convpass.data.base import ClassUniverse, DatasetBase, DatasetLayoutError, Datum
from clip_convpass.data.synthetic import SyntheticFiles, SyntheticTree
from clip_convpass.utils.io import atomic_write_json, read_json

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Synthetic file numbers: class index * 1000 + split offset, unique in folders that several classes share.
SPLIT_OFFSET = {"train": 0, "val": 400, "test": 700}

Entry = Tuple[str, int, str]  # (path relative to the image folder, label, class name)


class SplitFileDataset(DatasetBase):
    HAS_TRAIN = True
    VAL_SPLIT = True
    SPLIT_FILE = ""  # in the dataset folder
    IMAGE_DIR = ""  # image folder, relative to the dataset folder ("" = the dataset folder itself)

    @property
    def image_dir(self) -> Path:
        return self.dataset_dir / self.IMAGE_DIR

    def _required_file(self, name: str) -> Path:
        path = self.dataset_dir / name
        if not path.is_file():
            raise DatasetLayoutError(f"{self.NAME}: missing {path}. Expected layout: {self.LAYOUT_HELP}")
        return path

    def read_splits(self) -> Dict[str, List[Entry]]:
        path = self._required_file(self.SPLIT_FILE)
        try:
            data = read_json(path)
        except (ValueError, UnicodeDecodeError) as e:
            raise DatasetLayoutError(f"{self.NAME}: {path} is not valid JSON ({e})") from e
        if not isinstance(data, dict) or any(not isinstance(data.get(s), list) for s in SPLITS):
            raise DatasetLayoutError(f"{self.NAME}: {path} must map 'train', 'val' and 'test' to lists of "
                                     f"[path, label, class name]")
        out = {}
        for split in SPLITS:
            rows = []
            for i, row in enumerate(data[split]):
                if not (isinstance(row, list) and len(row) == 3 and isinstance(row[0], str)
                        and isinstance(row[1], int) and not isinstance(row[1], bool) and isinstance(row[2], str)):
                    raise DatasetLayoutError(f"{self.NAME}: {path} {split}[{i}] is {row!r}, expected "
                                             f"[relative path, integer label, class name]")
                rows.append((row[0], row[1], row[2]))
            out[split] = rows
        return out

    def split_source_files(self) -> List[Path]:
        return [self._required_file(self.SPLIT_FILE)]

    @cached_property
    def splits(self) -> Dict[str, List[Entry]]:
        return self.checked(self.read_splits())

    def checked(self, splits: Dict[str, List[Entry]]) -> Dict[str, List[Entry]]:
        """Every listed path stays inside the image folder; no image in two splits (test contamination);
        an image listed twice in a split is kept once, with a warning (the data check reports it too)."""
        source = self.dataset_dir / self.SPLIT_FILE
        seen: Dict[str, str] = {}
        out: Dict[str, List[Entry]] = {}
        self.duplicates: Dict[str, int] = {}
        for split in SPLITS:
            rows, here = [], set()
            for rel, label, name in splits[split]:
                norm = os.path.normpath(rel)
                if os.path.isabs(rel) or norm == ".." or norm.startswith(".." + os.sep) or not norm or norm == ".":
                    raise DatasetLayoutError(f"{self.NAME}: {source} lists {rel!r} in {split}: every path must lie "
                                             f"inside {self.image_dir} (no absolute paths, no '..')")
                if norm in here:
                    self.duplicates[split] = self.duplicates.get(split, 0) + 1
                    continue
                if norm in seen:
                    raise DatasetLayoutError(f"{self.NAME}: {source} lists {rel!r} in both {seen[norm]} and {split}: "
                                             f"an image may belong to one split only (a test image trained on "
                                             f"contaminates the test)")
                here.add(norm)
                seen[norm] = split
                rows.append((norm, label, name))
            out[split] = rows
        for split, n in self.duplicates.items():
            logger.warning(f"{self.NAME}: {source} lists {n} {split} image(s) more than once; each is used once")
        return out

    def class_universe(self) -> ClassUniverse:
        if self.cfg.DATASET.CLASS_LIST:
            raise DatasetLayoutError(f"{self.NAME}: DATASET.CLASS_LIST applies to ImageNet's class universe only; "
                                     f"{self.NAME}'s classes come from {self.SPLIT_FILE}")
        label_to_name: Dict[int, str] = {}
        for split in SPLITS:
            for _rel, label, name in self.splits[split]:
                if label_to_name.setdefault(label, name) != name:
                    raise DatasetLayoutError(f"{self.NAME}: label {label} is called both {label_to_name[label]!r} "
                                             f"and {name!r} in {self.SPLIT_FILE}")
        labels = sorted(label_to_name)
        if labels != list(range(len(labels))):
            raise DatasetLayoutError(f"{self.NAME}: labels in {self.SPLIT_FILE} must be 0..C-1 without gaps, "
                                     f"got {labels[:5]}...{labels[-3:]}")
        names = [label_to_name[lab] for lab in labels]
        if len(set(names)) != len(names):
            raise DatasetLayoutError(f"{self.NAME}: {self.SPLIT_FILE} gives several labels the same class name")
        # the class name is the class id: split files and results name classes by it
        universe = ClassUniverse(names, {n: n for n in names}, str(self.dataset_dir / self.SPLIT_FILE))
        clashes = universe.indistinguishable()
        if clashes:
            raise DatasetLayoutError(f"{self.NAME}: {self.SPLIT_FILE} names classes that no prompt can tell apart "
                                     f"(CLIP lower-cases, '_' is a space): {clashes[:3]}; give them distinct names")
        return universe

    def _split_items(self, split: str) -> Dict[int, List[str]]:
        """Absolute image paths per label of this dataset (classes outside SUBSAMPLE dropped), all checked."""
        keep = {cid: lab for lab, cid in enumerate(self.class_ids)}
        original = {lab: self.universe.names[name] for _, lab, name in self.splits[split]}  # label -> id
        per_class: Dict[int, List[str]] = defaultdict(list)
        for rel, label, _ in self.splits[split]:
            cid = original[label]
            if cid in keep:
                per_class[keep[cid]].append(str(self.image_dir / rel))
        self._check_files([p for paths in per_class.values() for p in paths], split)
        return per_class

    def _check_files(self, paths: Sequence[str], split: str) -> None:
        """Every listed image exists (one directory listing per folder, not one stat per file)."""
        listing: Dict[str, set] = {}
        missing = []
        for p in paths:
            folder, name = os.path.split(p)
            if folder not in listing:
                listing[folder] = set(os.listdir(folder)) if os.path.isdir(folder) else set()
            if name not in listing[folder]:
                missing.append(p)
        if missing:
            raise DatasetLayoutError(f"{self.NAME}: {len(missing)} of the {len(paths)} {split} images listed in "
                                     f"{self.SPLIT_FILE} are missing, e.g. {missing[0]}. Expected layout: "
                                     f"{self.LAYOUT_HELP}")

    def _read_test(self) -> List[Datum]:
        per_class = self._split_items("test")
        return [Datum(p, lab, self.classnames[lab]) for lab in sorted(per_class) for p in per_class[lab]]

    def _read_train_per_class(self) -> Dict[int, List[str]]:
        return self._split_items("train")

    def _read_val_per_class(self) -> Dict[int, List[str]]:
        return self._split_items("val")

    def sample_fewshot(self) -> dict:
        if self.cfg.DATASET.FEWSHOT_SAMPLER == "coop":
            return self.sample_like_coop()
        return super().sample_fewshot()

    def sample_like_coop(self) -> dict:
        """CoOp's shots exactly: Dassl seeds Python's RNG with SEED before the dataset is built, and
        generate_fewshot_dataset draws random.sample(items, K) per label, labels in order of first appearance
        in the split file (all items when fewer), train first, then val with min(K, 4); classes outside
        SUBSAMPLE are dropped afterwards, as CoOp's subsample_classes does."""
        k, v = self.cfg.DATASET.NUM_SHOTS, self.val_shots
        rng = random.Random(self.cfg.SEED)  # random.seed(SEED): the same stream as the global one
        keep = {cid: lab for lab, cid in enumerate(self.class_ids)}
        out = {}
        for split, shots in (("train", k), ("val", v)):
            by_label: Dict[int, List[Entry]] = defaultdict(list)
            for entry in self.splits[split]:
                by_label[entry[1]].append(entry)
            chosen = []
            for items in by_label.values():
                chosen += rng.sample(items, shots) if len(items) >= shots else items
            kept = [(str(self.image_dir / rel), keep[name]) for rel, _, name in chosen if name in keep]
            self._check_files([path for path, _ in kept], split)
            out[split] = [[os.path.relpath(path, self.root), label] for path, label in kept]
        return {"dataset": self.NAME, "seed": self.cfg.SEED, "num_shots": k, "val_shots": v, "sampler": "coop",
                "class_ids": self.class_ids, "train": out["train"], "val": out["val"]}

    def split_sizes(self) -> Dict[str, int]:
        return {s: len(self.splits[s]) for s in SPLITS}


class SplitFileTree(SyntheticTree):
    """A synthetic tree in a split-file dataset's layout: images, and the split file listing them."""

    # (folder, class name) pairs of real classes, in CoOp's label order: synthetic trees use the first N.
    CLASSES: Tuple[Tuple[str, str], ...] = ()
    # File path relative to the image folder; {folder} = the class's folder, {j} = file number.
    PATTERN = "{folder}/{folder}_{{j:04d}}"

    @classmethod
    def class_for(cls, index: int) -> Tuple[str, str]:
        if index < len(cls.CLASSES):
            return cls.CLASSES[index]
        return f"extra_class_{index}", f"extra_class_{index}"

    @classmethod
    def classes(cls, num_classes: int) -> List[str]:
        return [cls.class_for(i)[1] for i in range(num_classes)]

    @classmethod
    def relpath(cls, folder: str, split: str) -> str:
        """File-name format (with {j}) relative to the image folder."""
        return cls.PATTERN.format(folder=folder)

    @classmethod
    def files(cls, class_id, sizes, index):
        ds = cls.dataset()
        folder = cls.class_for(index)[0]
        specs = []
        for split in SPLITS:
            rel = cls.relpath(folder, split)
            sub, name = os.path.split(rel)
            where = "/".join(p for p in (ds.LAYOUTS[0], ds.IMAGE_DIR, sub) if p)
            specs.append(SyntheticFiles(f"{cls.NAME}/{split}", where, sizes[split], "jpg", name,
                                        is_test=split == "test", start=index * 1000 + SPLIT_OFFSET[split]))
        return specs

    @classmethod
    def entries(cls, class_ids: Sequence[str], sizes) -> Dict[str, List[Entry]]:
        """The split entries of a synthetic tree (the files `files` wrote)."""
        ds = cls.dataset()
        out: Dict[str, List[Entry]] = {s: [] for s in SPLITS}
        for index, cid in enumerate(class_ids):
            for spec in cls.files(cid, sizes, index):
                split = spec.label.split("/")[-1]
                prefix = "/".join(p for p in (ds.LAYOUTS[0], ds.IMAGE_DIR) if p)
                sub = spec.folder[len(prefix):].strip("/")
                for j in range(spec.count):
                    rel = "/".join(p for p in (sub, f"{spec.name.format(j=spec.start + j)}.{spec.ext}") if p)
                    out[split].append((rel, index, cid))
        return out

    @classmethod
    def finish(cls, root, class_ids, sizes):
        ds = cls.dataset()
        entries = cls.entries(class_ids, sizes)
        atomic_write_json(Path(root) / ds.LAYOUTS[0] / ds.SPLIT_FILE, {s: [list(e) for e in entries[s]] for s in SPLITS})
