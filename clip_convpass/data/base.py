"""Dataset base class: class universe, on-disk layouts, splits (few-shot sampling: data/fewshot.py).

Nothing here knows a particular dataset: ImageNet and its variants live in clip_convpass/datasets/.
"""
from __future__ import annotations

import hashlib
import logging
import os
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from clip_convpass.data import fewshot
from clip_convpass.data.types import (  # noqa: F401  (their home before data/types.py)
    IMAGE_EXTENSIONS,
    DatasetLayoutError,
    Datum,
    list_images,
    read_id_list,
    stable_int,
)
from clip_convpass.utils.text import prompt_identity

logger = logging.getLogger(__name__)

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

    def indistinguishable(self) -> List[List[str]]:
        """Groups of class ids whose names give the same prompt text (e.g. "Abyssinian" and "abyssinian")."""
        groups: Dict[str, List[str]] = {}
        for cid, name in zip(self.ids, self.classnames):
            groups.setdefault(prompt_identity(name), []).append(cid)
        return [g for g in groups.values() if len(g) > 1]

    @property
    def names_hash(self) -> str:
        return hashlib.sha256("\n".join(f"{i} {n}" for i, n in zip(self.ids, self.classnames)).encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.ids)

    def subsample(self, mode: str) -> "ClassUniverse":
        """CoCoOp's base-to-new protocol (CoOp's subsample_classes): in label order, base = the first ceil(n/2)
        classes, new = the rest; labels are re-indexed within the half (a class's label is its position here)."""
        if mode == "all":
            return self
        half = (len(self.ids) + 1) // 2
        return ClassUniverse(self.ids[:half] if mode == "base" else self.ids[half:], self.names, self.source, True)


class DatasetBase:
    """A dataset under DATASET.ROOT.

    A dataset owns its class universe (`class_universe`: the classes, names and order a model is
    built over), the subset of it that it is scored on (`_class_ids`), its layout detection (LAYOUTS:
    candidate folders relative to ROOT, first found wins) (its synthetic tree, for tests and the demo, is
    a data/synthetic.SyntheticTree registered beside it).
    Labels are indices into its own class list; `label_columns` maps them into the universe, so a
    method producing logits over the universe is scored on a 200-class set by keeping those columns.
    """

    NAME = ""
    ORDER = 100  # position in tables (the training dataset comes first anyway)
    # The benchmark family whose protocols this dataset belongs to: "coop" (CoOp's few-shot datasets and ImageNet's
    # variants: few-shot curves, base-to-new, cross-dataset, domain generalization), or a family of its own
    # ("vtab1k", "fgvc_fewshot") that those protocols' lists, grids and averages never include.
    BENCHMARK = "coop"
    # Where the training images come from: "sampled" (NUM_SHOTS per class drawn by SEED, data/fewshot.py),
    # "lists" (published lists per shot count and seed) or "fixed" (one published training list; NUM_SHOTS does
    # not apply and results record no shots).
    SHOT_SOURCE = "sampled"
    # False: the classes are known by label only (VTAB-1K's lists); methods that read class names are refused.
    NAMED_CLASSES = True
    GROUP = ""  # a benchmark's group of datasets (VTAB-1K's Natural / Specialized / Structured)
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

    @classmethod
    def check_config(cls, cfg) -> None:
        """Raise ConfigError for settings this dataset cannot serve (e.g. a shot count its lists do not have)."""

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

    def class_identity(self) -> dict:
        """Which classes a model built on this dataset is built over: what checkpoints and results.json record,
        and what a loaded checkpoint's classes are compared with."""
        u = self.universe
        return {"dataset": self.NAME, "subsample": self.cfg.DATASET.SUBSAMPLE, "n": len(u), "sha256": u.names_hash}

    @classmethod
    def column_label(cls) -> str:
        return cls.LABEL or cls.NAME

    def _class_ids(self) -> List[str]:
        """This dataset's classes (a subset of the universe), in universe order."""
        return list(self.universe.ids)

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

    def split_source_stamp(self) -> Optional[List[str]]:
        """A cheap fingerprint of the training images' listing (e.g. class folders' modification times) for
        datasets too large to list at every start; None: list them (data/fewshot.py)."""
        return None

    def split_source_files(self) -> List[Path]:
        """Files that list this dataset's splits (a split file), whose contents fingerprint a cached few-shot
        split; none: the listed images themselves are the fingerprint (data/fewshot.py)."""
        return []

    def _read_train_per_class(self) -> Dict[int, List[str]]:
        raise NotImplementedError(f"{self.NAME} has no training split")

    def _read_val_per_class(self) -> Dict[int, List[str]]:
        raise NotImplementedError(f"{self.NAME} has no val split")

    @cached_property
    def _fewshot(self) -> Tuple[List[Datum], List[Datum]]:
        if not self.HAS_TRAIN:
            raise ValueError(f"{self.NAME} is a test-only dataset; train on {self.SOURCE or 'another dataset'} "
                             f"and evaluate here")
        if self.SHOT_SOURCE != "sampled":
            return self.read_training_lists()
        return fewshot.load_or_sample(self)

    def read_training_lists(self) -> Tuple[List[Datum], List[Datum]]:
        """(training images, validation images) from the dataset's published lists (SHOT_SOURCE lists / fixed)."""
        raise NotImplementedError(f"{self.NAME} declares SHOT_SOURCE {self.SHOT_SOURCE} but reads no lists")

    @property
    def train_list(self) -> str:
        """The published list the model trains on ("": sampled shots)."""
        return ""

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
        """Where this dataset's few-shot split for the config's shots, seed and classes is cached."""
        return fewshot.split_file(self)

    def sample_fewshot(self) -> dict:
        if self.cfg.DATASET.FEWSHOT_SAMPLER != "per_class":
            raise DatasetLayoutError(f"{self.NAME}: DATASET.FEWSHOT_SAMPLER {self.cfg.DATASET.FEWSHOT_SAMPLER} is "
                                     f"defined for CoOp's split-file datasets only; use per_class")
        return self.sample_per_class()

    def sample_per_class(self) -> dict:
        return fewshot.sample_per_class(self)


