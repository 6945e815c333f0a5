"""Dataset base class: class universe, on-disk layouts, few-shot sampling with a disjoint val split.

Nothing here knows a particular dataset: ImageNet and its variants live in clip_convpass/datasets/.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from clip_convpass.utils.errors import UserError
from clip_convpass.utils.io import atomic_write_json, read_json

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


class DatasetLayoutError(UserError, FileNotFoundError):
    """A dataset folder is missing or does not have the expected layout."""


@dataclass(frozen=True)
class Datum:
    impath: str  # absolute path
    label: int  # index into the dataset's own class list
    classname: str


def read_id_list(path: Path) -> List[str]:
    """One class id per line (e.g. ImageNet wnids); blank lines ignored, duplicates refused."""
    ids = [ln.strip() for ln in open(path) if ln.strip()]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path} lists some class ids twice")
    return ids


def list_images(folder: Path) -> List[str]:
    """Image file names in a folder, sorted (listing order differs between file systems)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))


def stable_int(*parts) -> int:
    """A seed from any values, the same on every machine and Python run (unlike hash())."""
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16], 16)


class ClassUniverse:
    """The classes a model is built over, in class-index order: ids (e.g. wnids) and their names."""

    def __init__(self, ids: Sequence[str], id_to_name: Dict[str, str], source: str = "", subset: bool = False):
        missing = [w for w in ids if w not in id_to_name]
        if missing:
            raise ValueError(f"No class name for class ids {missing[:5]}{'...' if len(missing) > 5 else ''}")
        self.ids = list(ids)
        self.names = dict(id_to_name)
        self.classnames = [id_to_name[w] for w in self.ids]
        self.index = {w: i for i, w in enumerate(self.ids)}
        self.source = source  # where the names came from (recorded in every results.json)
        self.subset = subset  # restricted to a class list: published counts do not apply

    @property
    def names_hash(self) -> str:
        return hashlib.sha256("\n".join(f"{i} {n}" for i, n in zip(self.ids, self.classnames)).encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.ids)

    def subsample(self, mode: str) -> "ClassUniverse":
        """CoCoOp's base-to-new protocol: first half of the classes = base, the rest = new."""
        if mode == "all":
            return self
        half = (len(self.ids) + 1) // 2
        return ClassUniverse(self.ids[:half] if mode == "base" else self.ids[half:], self.names, self.source, True)


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


class DatasetBase:
    """A dataset under DATASET.ROOT.

    A dataset owns its class universe (`class_universe`: the classes, names and order a model is
    built over), the subset of it that it is scored on (`_class_ids`), its layout detection (LAYOUTS:
    candidate folders relative to ROOT, first found wins) and its synthetic files (`synthetic_files`).
    Labels are indices into its own class list; `label_columns` maps them into the universe, so a
    method producing logits over the universe is scored on a 200-class set by keeping those columns.
    """

    NAME = ""
    ORDER = 100  # position in tables (the training dataset comes first anyway)
    SOURCE = ""  # a test-only set names the training dataset whose models it evaluates (domain shift)
    LABEL = ""  # column label in tables (default NAME)
    LAYOUTS: Tuple[str, ...] = ()
    LAYOUT_HELP = ""
    EXPECTED_CLASSES: Optional[int] = None
    EXPECTED_TEST_IMAGES: Optional[int] = None
    # The published split sizes the data check compares against ({"train": n, "val": n, "test": n}).
    EXPECTED_SPLITS: Optional[Dict[str, int]] = None
    HAS_TRAIN = False
    USES_CLASS_LIST = False  # DATASET.CLASS_LIST restricts this dataset's class universe
    # True: validation shots come from the dataset's own val split (CoOp's datasets); False: from training
    # images held out of the shots (ImageNet, which has no val split).
    VAL_SPLIT = False
    # Prompt templates: CoOp's zero-shot template(s) for this dataset, and Tip-Adapter's where they differ
    # (a template-set name such as "ensemble7", or format strings). Methods select them with TEMPLATES
    # "dataset" / "dataset_tip".
    TEMPLATES: Union[str, Tuple[str, ...]] = ("a photo of a {}.",)
    TIP_TEMPLATES: Union[str, Tuple[str, ...], None] = None

    def __init__(self, cfg):
        self.cfg = cfg
        if not cfg.DATASET.ROOT:
            raise DatasetLayoutError("DATASET.ROOT is empty: set it (or --root) to the folder holding the datasets")
        self.root = Path(cfg.DATASET.ROOT).expanduser().resolve()
        if not self.root.is_dir():
            raise DatasetLayoutError(f"DATASET.ROOT={self.root} does not exist")
        self.dataset_dir = self._find_layout()
        self.universe = self.class_universe().subsample(cfg.DATASET.SUBSAMPLE)
        self.class_ids = self._class_ids()
        self.classnames = [self.universe.classnames[self.universe.index[w]] for w in self.class_ids]
        # column of the model's (universe) logits for each of this dataset's labels
        self.label_columns = [self.universe.index[w] for w in self.class_ids]

    def class_universe(self) -> ClassUniverse:
        raise NotImplementedError

    @classmethod
    def column_label(cls) -> str:
        return cls.LABEL or cls.NAME

    def _class_ids(self) -> List[str]:
        """This dataset's classes (a subset of the universe), in universe order."""
        return list(self.universe.ids)

    # -- synthetic data (data/synthetic.py) ----------------------------------------------------
    @classmethod
    def synthetic_classes(cls, num_classes: int) -> List[str]:
        """Class ids a synthetic tree of this (training) dataset uses."""
        raise NotImplementedError(f"{cls.NAME} has no synthetic generator")

    @classmethod
    def synthetic_files(cls, class_id: str, sizes: Dict[str, int], index: int) -> List[SyntheticFiles]:
        """The folders of images to generate for one class (`index` in the tree), in this dataset's real layout."""
        raise NotImplementedError(f"{cls.NAME} has no synthetic generator")

    @classmethod
    def synthetic_finish(cls, root: Path, class_ids: Sequence[str], sizes: Dict[str, int]) -> None:
        """Files beside the images (split files, class-name lists, READMEs), once the images exist."""

    @classmethod
    def template_spec(cls, kind: str = "dataset"):
        """This dataset's templates: "dataset" = CoOp's zero-shot ones, "dataset_tip" = Tip-Adapter's."""
        if kind == "dataset_tip" and cls.TIP_TEMPLATES is not None:
            return cls.TIP_TEMPLATES
        return cls.TEMPLATES

    # -- layout -------------------------------------------------------------------------------
    def _find_layout(self) -> Path:
        for rel in self.LAYOUTS:
            if (self.root / rel).is_dir():
                return self.root / rel
        raise DatasetLayoutError(
            f"{self.NAME}: none of the expected folders exist under {self.root}: "
            f"{', '.join(str(self.root / r) for r in self.LAYOUTS)}. Expected layout: {self.LAYOUT_HELP}"
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    def check_class_folders(self, folder: Path, expected: Sequence[str], allowed: Sequence[str]) -> Dict[str, Path]:
        """Folders named by class id: unknown names, missing or empty classes are errors naming them."""
        if not folder.is_dir():
            raise DatasetLayoutError(f"{self.NAME}: expected folder {folder} ({self.LAYOUT_HELP})")
        present = {e.name: Path(e.path) for e in os.scandir(folder) if e.is_dir()}
        allowed_set = set(allowed)
        unknown = sorted(n for n in present if n not in allowed_set)
        if unknown:
            raise DatasetLayoutError(
                f"{self.NAME}: {folder} has {len(unknown)} folder(s) that are not class ids of this dataset: "
                f"{unknown[:10]}. Expected one folder per class ({self.LAYOUT_HELP})."
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
        for label, cid in enumerate(self.class_ids):
            for name in list_images(folders[cid]):
                items.append(Datum(str(folders[cid] / name), label, self.classnames[label]))
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

    def _read_val_per_class(self) -> Dict[int, List[str]]:
        raise NotImplementedError(f"{self.NAME} has no val split")

    @cached_property
    def _fewshot(self) -> Tuple[List[Datum], List[Datum]]:
        if not self.HAS_TRAIN:
            raise ValueError(f"{self.NAME} is a test-only dataset; train on {self.SOURCE or 'another dataset'} "
                             f"and evaluate here")
        return self._load_or_sample_fewshot()

    @property
    def train_x(self) -> List[Datum]:
        return self._fewshot[0]

    @property
    def val(self) -> List[Datum]:
        return self._fewshot[1]

    @property
    def val_split_full(self) -> List[Datum]:
        """Every image of the dataset's own val split (CoOp's datasets), not only the few-shot val shots."""
        if not self.VAL_SPLIT:
            raise DatasetLayoutError(f"{self.NAME} has no val split (its validation shots are held-out training "
                                     f"images); use the val shots")
        per_class = self._read_val_per_class()
        return [Datum(p, lab, self.classnames[lab]) for lab in sorted(per_class) for p in sorted(per_class[lab])]

    @property
    def val_shots(self) -> int:
        v = self.cfg.DATASET.VAL_SHOTS
        return min(self.cfg.DATASET.NUM_SHOTS, 4) if v < 0 else v

    def split_file(self) -> Path:
        d = Path(self.cfg.DATASET.SPLIT_DIR) if self.cfg.DATASET.SPLIT_DIR else self.dataset_dir / "split_fewshot"
        c = self.cfg.DATASET
        universe_tag = hashlib.sha256(",".join(self.class_ids).encode()).hexdigest()[:8]
        sampler = "" if c.FEWSHOT_SAMPLER == "per_class" else f"-{c.FEWSHOT_SAMPLER}"
        return d / f"shot_{c.NUM_SHOTS}-val_{self.val_shots}-seed_{self.cfg.SEED}-classes_{universe_tag}{sampler}.json"

    def _load_or_sample_fewshot(self) -> Tuple[List[Datum], List[Datum]]:
        path = self.split_file()
        if path.is_file():
            try:
                data = read_json(path)
            except (ValueError, UnicodeDecodeError) as e:
                raise DatasetLayoutError(f"Split file {path} is not valid JSON ({e}); delete it to resample") from e
            if data.get("class_ids", data.get("class_wnids")) != self.class_ids:
                raise ValueError(f"Split file {path} was made for other classes; delete it to resample")
            logger.info(f"Loaded few-shot split {path}")
        else:
            data = self.sample_fewshot()
            try:
                atomic_write_json(path, data)
            except OSError as e:  # read-only mount, permissions, full disk...
                raise DatasetLayoutError(
                    f"Cannot write the few-shot split to {path} ({e.strerror or e}); set DATASET.SPLIT_DIR to a "
                    f"writable folder"
                ) from e
            logger.info(f"Sampled few-shot split and saved it to {path}")

        def to_datums(rows):
            return [Datum(str(self.root / rel), lab, self.classnames[lab]) for rel, lab in rows]

        return to_datums(data["train"]), to_datums(data["val"])

    def sample_fewshot(self) -> dict:
        if self.cfg.DATASET.FEWSHOT_SAMPLER != "per_class":
            raise DatasetLayoutError(f"{self.NAME}: DATASET.FEWSHOT_SAMPLER {self.cfg.DATASET.FEWSHOT_SAMPLER} is "
                                     f"defined for CoOp's split-file datasets only; use per_class")
        return self.sample_per_class()

    def sample_per_class(self) -> dict:
        """Per class: sorted files, RNG seeded by (seed, class id); K train shots, and val shots either from
        the dataset's val split (VAL_SPLIT, CoOp's datasets) or disjoint from the shots (ImageNet)."""
        k, v, seed = self.cfg.DATASET.NUM_SHOTS, self.val_shots, self.cfg.SEED
        per_class = self._read_train_per_class()
        val_per_class = self._read_val_per_class() if self.VAL_SPLIT else None
        train, val = [], []
        for label, cid in enumerate(self.class_ids):
            if val_per_class is None:
                chosen = self._draw(per_class[label], k + v, (seed, cid), label, "training", f"NUM_SHOTS + VAL_SHOTS = {k} + {v}")
                k_c = min(k, len(chosen))
                picked_train, picked_val = chosen[:k_c], chosen[k_c:]
            else:
                picked_train = self._draw(per_class[label], k, (seed, cid), label, "training", f"NUM_SHOTS = {k}")
                picked_val = self._draw(val_per_class.get(label, []), v, (seed, cid, "val"), label, "val",
                                        f"VAL_SHOTS = {v}")
            train += [[os.path.relpath(f, self.root), label] for f in picked_train]
            val += [[os.path.relpath(f, self.root), label] for f in picked_val]
        return {"dataset": self.NAME, "seed": seed, "num_shots": k, "val_shots": v,
                "class_ids": self.class_ids, "train": train, "val": val}

    def _draw(self, files: List[str], need: int, seed_parts: tuple, label: int, split: str, what: str) -> List[str]:
        """`need` files of one class, drawn by an RNG seeded by `seed_parts` from the sorted list."""
        files = sorted(files)
        if len(files) < need:
            cid = self.class_ids[label]
            msg = f"{self.NAME}: class {cid} ({self.classnames[label]}) has {len(files)} {split} images, fewer than {what}"
            if not self.cfg.DATASET.ALLOW_FEWER_SHOTS:
                raise DatasetLayoutError(msg + " (set DATASET.ALLOW_FEWER_SHOTS True to use what there is)")
            logger.warning(msg + "; using all of them")
        return random.Random(stable_int(*seed_parts)).sample(files, min(need, len(files)))
