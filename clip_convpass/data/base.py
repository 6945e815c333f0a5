"""Dataset base class: class universe, on-disk layouts, few-shot sampling with a disjoint val split."""
from __future__ import annotations

import hashlib
import logging
import os
import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..prompts import read_classnames_file
from ..utils import atomic_write_json, read_json

logger = logging.getLogger("clip_convpass")

RESOURCES = Path(__file__).resolve().parent / "resources"
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder is missing or does not have the expected layout."""


@dataclass(frozen=True)
class Datum:
    impath: str  # absolute path
    label: int  # index into the dataset's own class list
    classname: str


def read_wnid_list(path: Path) -> List[str]:
    wnids = [ln.strip() for ln in open(path) if ln.strip()]
    if len(set(wnids)) != len(wnids):
        raise ValueError(f"{path} lists some wnids twice")
    return wnids


def imagenet_wnids() -> List[str]:
    """The 1000 ImageNet wnids, sorted: position = ImageNet class index."""
    return read_wnid_list(RESOURCES / "imagenet_wnids.txt")


def list_images(folder: Path) -> List[str]:
    """Image file names in a folder, sorted (listing order differs between file systems)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))


def stable_int(*parts) -> int:
    """A seed from any values, the same on every machine and Python run (unlike hash())."""
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16], 16)


class ClassUniverse:
    """The classes a model is built over (ImageNet's 1000 by default), in class-index order."""

    def __init__(self, wnids: Sequence[str], wnid_to_name: Dict[str, str]):
        missing = [w for w in wnids if w not in wnid_to_name]
        if missing:
            raise ValueError(f"No class name for wnids {missing[:5]}{'...' if len(missing) > 5 else ''}")
        self.wnids = list(wnids)
        self.classnames = [wnid_to_name[w] for w in self.wnids]
        self.index = {w: i for i, w in enumerate(self.wnids)}

    def __len__(self) -> int:
        return len(self.wnids)


def build_universe(cfg) -> ClassUniverse:
    full = imagenet_wnids()
    if cfg.DATASET.CLASS_LIST:
        path = Path(cfg.DATASET.CLASS_LIST)
        if not path.is_file():
            raise DatasetLayoutError(f"DATASET.CLASS_LIST={path} does not exist (a text file with one wnid per line)")
        wnids = read_wnid_list(path)
        unknown = [w for w in wnids if w not in set(full)]
        if unknown:
            raise ValueError(f"{path}: {unknown[:5]} are not ImageNet wnids")
        wnids = sorted(wnids)
    else:
        wnids = full
    names_file = Path(cfg.DATASET.ROOT) / "imagenet" / "classnames.txt"
    if not names_file.is_file():
        names_file = RESOURCES / "imagenet_classnames.txt"
    names = read_classnames_file(names_file)
    universe = ClassUniverse(wnids, names)
    if cfg.DATASET.SUBSAMPLE != "all":
        # CoCoOp's base-to-new protocol: first half of the classes = base, the rest = new.
        half = (len(wnids) + 1) // 2
        keep = wnids[:half] if cfg.DATASET.SUBSAMPLE == "base" else wnids[half:]
        universe = ClassUniverse(keep, names)
    return universe


class DatasetBase:
    """A dataset under DATASET.ROOT.

    Subclasses set LAYOUTS (candidate folders relative to ROOT, first found wins), the expected
    class/image counts, and implement `_read_test()`. Every dataset maps its own labels into the
    model's class universe (`label_columns`), so methods producing logits over the universe are
    scored on 200-class sets by keeping those columns.
    """

    NAME = ""
    LAYOUTS: Tuple[str, ...] = ()
    LAYOUT_HELP = ""
    EXPECTED_CLASSES: Optional[int] = None
    EXPECTED_TEST_IMAGES: Optional[int] = None
    HAS_TRAIN = False

    def __init__(self, cfg):
        self.cfg = cfg
        if not cfg.DATASET.ROOT:
            raise DatasetLayoutError("DATASET.ROOT is empty: set it (or --root) to the folder holding the datasets")
        self.root = Path(cfg.DATASET.ROOT).expanduser().resolve()
        if not self.root.is_dir():
            raise DatasetLayoutError(f"DATASET.ROOT={self.root} does not exist")
        self.universe = build_universe(cfg)
        self.dataset_dir = self._find_layout()
        self.class_wnids = self._class_wnids()
        self.classnames = [self.universe.classnames[self.universe.index[w]] for w in self.class_wnids]
        # column of the model's (universe) logits for each of this dataset's labels
        self.label_columns = [self.universe.index[w] for w in self.class_wnids]

    # -- layout -------------------------------------------------------------------------------
    def _find_layout(self) -> Path:
        for rel in self.LAYOUTS:
            if (self.root / rel).is_dir():
                return self.root / rel
        raise DatasetLayoutError(
            f"{self.NAME}: none of the expected folders exist under {self.root}: "
            f"{', '.join(str(self.root / r) for r in self.LAYOUTS)}. Expected layout: {self.LAYOUT_HELP}"
        )

    def _class_wnids(self) -> List[str]:
        """This dataset's classes (a subset of the universe), sorted."""
        return list(self.universe.wnids)

    @property
    def num_classes(self) -> int:
        return len(self.class_wnids)

    def check_class_folders(self, folder: Path, expected: Sequence[str], allowed: Sequence[str]) -> Dict[str, Path]:
        """Folders named by wnid: unknown names, missing or empty classes are errors naming them."""
        if not folder.is_dir():
            raise DatasetLayoutError(f"{self.NAME}: expected folder {folder} ({self.LAYOUT_HELP})")
        present = {e.name: Path(e.path) for e in os.scandir(folder) if e.is_dir()}
        allowed_set = set(allowed)
        unknown = sorted(n for n in present if n not in allowed_set)
        if unknown:
            raise DatasetLayoutError(
                f"{self.NAME}: {folder} has {len(unknown)} folder(s) that are not class wnids of this dataset: "
                f"{unknown[:10]}. Expected one folder per wnid ({self.LAYOUT_HELP})."
            )
        missing = [w for w in expected if w not in present]
        if missing:
            raise DatasetLayoutError(
                f"{self.NAME}: {folder} lacks {len(missing)} of the {len(expected)} expected class folders, "
                f"e.g. {missing[:10]}"
            )
        empty = [w for w in expected if not list_images(present[w])]
        if empty:
            raise DatasetLayoutError(f"{self.NAME}: class folder(s) without images in {folder}: {empty[:10]}")
        return {w: present[w] for w in expected}

    def _datums_from_class_folders(self, folders: Dict[str, Path]) -> List[Datum]:
        items = []
        for label, wnid in enumerate(self.class_wnids):
            for name in list_images(folders[wnid]):
                items.append(Datum(str(folders[wnid] / name), label, self.classnames[label]))
        return items

    # -- splits -------------------------------------------------------------------------------
    @cached_property
    def test(self) -> List[Datum]:
        items = self._read_test()
        logger.info(f"{self.NAME}: {len(items)} test images in {self.num_classes} classes ({self.dataset_dir})")
        return items

    def _read_test(self) -> List[Datum]:
        raise NotImplementedError

    def _read_train_per_class(self) -> Dict[int, List[str]]:
        raise NotImplementedError(f"{self.NAME} has no training split")

    @cached_property
    def _fewshot(self) -> Tuple[List[Datum], List[Datum]]:
        if not self.HAS_TRAIN:
            raise ValueError(f"{self.NAME} is a test-only dataset; train on ImageNet and evaluate here")
        return self._load_or_sample_fewshot()

    @property
    def train_x(self) -> List[Datum]:
        return self._fewshot[0]

    @property
    def val(self) -> List[Datum]:
        return self._fewshot[1]

    def split_file(self) -> Path:
        d = Path(self.cfg.DATASET.SPLIT_DIR) if self.cfg.DATASET.SPLIT_DIR else self.dataset_dir / "split_fewshot"
        c = self.cfg.DATASET
        universe_tag = hashlib.sha256(",".join(self.class_wnids).encode()).hexdigest()[:8]
        return d / f"shot_{c.NUM_SHOTS}-val_{c.VAL_SHOTS}-seed_{self.cfg.SEED}-classes_{universe_tag}.json"

    def _load_or_sample_fewshot(self) -> Tuple[List[Datum], List[Datum]]:
        path = self.split_file()
        if path.is_file():
            data = read_json(path)
            if data.get("class_wnids") != self.class_wnids:
                raise ValueError(f"Split file {path} was made for other classes; delete it to resample")
            logger.info(f"Loaded few-shot split {path}")
        else:
            data = self.sample_fewshot()
            try:
                atomic_write_json(path, data)
            except PermissionError as e:
                raise PermissionError(
                    f"Cannot write the few-shot split to {path}; set DATASET.SPLIT_DIR to a writable folder"
                ) from e
            logger.info(f"Sampled few-shot split and saved it to {path}")

        def to_datums(rows):
            return [Datum(str(self.root / rel), lab, self.classnames[lab]) for rel, lab in rows]

        return to_datums(data["train"]), to_datums(data["val"])

    def sample_fewshot(self) -> dict:
        """Per class: sorted files, RNG seeded by (seed, wnid), K train shots + a disjoint set of val shots."""
        k, v, seed = self.cfg.DATASET.NUM_SHOTS, self.cfg.DATASET.VAL_SHOTS, self.cfg.SEED
        per_class = self._read_train_per_class()
        train, val = [], []
        for label, wnid in enumerate(self.class_wnids):
            files = sorted(per_class[label])
            need = k + v
            if k <= 0:  # all images for training, none held out
                chosen, k_c = files, len(files)
            else:
                if len(files) < need:
                    msg = (f"{self.NAME}: class {wnid} ({self.classnames[label]}) has {len(files)} training images, "
                           f"fewer than NUM_SHOTS + VAL_SHOTS = {k} + {v}")
                    if not self.cfg.DATASET.ALLOW_FEWER_SHOTS:
                        raise ValueError(msg + " (set DATASET.ALLOW_FEWER_SHOTS True to use what there is)")
                    logger.warning(msg + "; using all of them (train shots first, val gets the rest)")
                rng = random.Random(stable_int(seed, wnid))
                chosen = rng.sample(files, min(need, len(files)))
                k_c = min(k, len(chosen))
            for f in chosen[:k_c]:
                train.append([os.path.relpath(f, self.root), label])
            for f in chosen[k_c:]:
                val.append([os.path.relpath(f, self.root), label])
        return {"dataset": self.NAME, "seed": seed, "num_shots": k, "val_shots": v,
                "class_wnids": self.class_wnids, "train": train, "val": val}


class WnidSubsetTestSet(DatasetBase):
    """A test set over a subset of ImageNet's classes (WNID_FILE), one folder per wnid.

    Files beside the class folders (ImageNet-R's README.txt) are ignored.
    """

    WNID_FILE = ""

    def _class_wnids(self) -> List[str]:
        own = set(read_wnid_list(RESOURCES / self.WNID_FILE))
        wnids = [w for w in self.universe.wnids if w in own]
        if not wnids:
            raise ValueError(f"{self.NAME}: none of its classes are in the configured class list (DATASET.CLASS_LIST)")
        return wnids

    def _read_test(self) -> List[Datum]:
        allowed = read_wnid_list(RESOURCES / self.WNID_FILE)
        return self._datums_from_class_folders(self.check_class_folders(self.dataset_dir, self.class_wnids, allowed))
