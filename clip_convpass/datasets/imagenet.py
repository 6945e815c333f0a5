"""ImageNet (ILSVRC-2012) and the class universe its variants share.

The universe is the 1000 wnids sorted (position = class index) with CLIP's class names; a
`DATASET.ROOT/imagenet/classnames.txt` (CoOp's "wnid name" lines) replaces the names, and
`DATASET.CLASS_LIST` restricts the universe to a subset of wnids (the synthetic tree uses this).
"""
import logging
from pathlib import Path
from typing import Dict, List, Sequence

from clip_convpass.data.base import (
    ClassUniverse,
    DatasetBase,
    DatasetLayoutError,
    list_images,
    read_id_list,
)
from clip_convpass.data.synthetic import SyntheticFiles, SyntheticTree
from clip_convpass.models.prompts import read_classnames_file
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY

RESOURCES = Path(__file__).resolve().parent / "resources"
logger = logging.getLogger(__name__)


def imagenet_wnids() -> List[str]:
    """The 1000 ImageNet wnids, sorted: position = ImageNet class index."""
    return read_id_list(RESOURCES / "imagenet_wnids.txt")


SYNTHETIC_CLASS_LIST = "synthetic_classes.txt"  # at the root of a tree written by data/synthetic.py


def class_list_path(cfg) -> str:
    """DATASET.CLASS_LIST, or a synthetic tree's own class list (so any command runs on the demo's data)."""
    if cfg.DATASET.CLASS_LIST:
        return cfg.DATASET.CLASS_LIST
    synthetic = Path(cfg.DATASET.ROOT).expanduser() / SYNTHETIC_CLASS_LIST
    if synthetic.is_file():
        logger.info(f"Synthetic data tree: class universe from {synthetic}")
        return str(synthetic)
    return ""


def imagenet_universe(cfg) -> ClassUniverse:
    full = imagenet_wnids()
    class_list = class_list_path(cfg)
    if class_list:
        path = Path(class_list)
        if not path.is_file():
            raise DatasetLayoutError(f"DATASET.CLASS_LIST={path} does not exist (a text file with one wnid per line)")
        wnids = read_id_list(path)
        if not wnids:
            raise DatasetLayoutError(f"DATASET.CLASS_LIST={path} lists no classes (expected one wnid per line)")
        unknown = [w for w in wnids if w not in set(full)]
        if unknown:
            raise DatasetLayoutError(f"DATASET.CLASS_LIST={path}: {unknown[:5]} are not ImageNet wnids")
        wnids = sorted(wnids)
    else:
        wnids = full
    names_file = Path(cfg.DATASET.ROOT) / "imagenet" / "classnames.txt"
    if not names_file.is_file():
        names_file = RESOURCES / "imagenet_classnames.txt"  # CLIP's names
    universe = ClassUniverse(wnids, read_classnames_file(names_file), str(names_file), subset=bool(class_list))
    logger.info(f"ImageNet class names from {names_file} (sha256 {universe.names_hash}, {len(wnids)} classes)")
    return universe


class ImageNetFamily(DatasetBase):
    """ImageNet and the test sets scored in its class universe."""

    TEMPLATES = ("a photo of a {}.",)  # CoOp's zero-shot template
    TIP_TEMPLATES = "ensemble7"  # Tip-Adapter's 7 ImageNet templates
    USES_CLASS_LIST = True

    def class_universe(self) -> ClassUniverse:
        return imagenet_universe(self.cfg)

    def wnid_folders(self, folder: Path) -> Dict[str, Path]:
        return self.check_class_folders(folder, self.class_ids, imagenet_wnids())


@DATASET_REGISTRY.register
class ImageNet(ImageNetFamily):
    NAME = "ImageNet"
    ORDER = 0
    LAYOUTS = ("imagenet",)
    LAYOUT_HELP = "imagenet/images/train/<wnid>/*.JPEG, imagenet/images/val/<wnid>/*.JPEG, imagenet/classnames.txt"
    EXPECTED_CLASSES = 1000
    EXPECTED_TEST_IMAGES = 50000
    HAS_TRAIN = True

    def split_source_stamp(self) -> List[str]:
        """1.28M training images are too many to list at every start: a class folder's modification time
        changes whenever an image is added, removed or renamed in it."""
        folders = self._split_folders("train")
        return [f"{w}:{folders[w].stat().st_mtime_ns}" for w in self.class_ids]

    def _split_folders(self, split: str) -> Dict[str, Path]:
        folder = self.dataset_dir / "images" / split
        if not folder.is_dir():
            raise DatasetLayoutError(
                f"ImageNet: expected {folder}. Layout: {self.LAYOUT_HELP} (validation images sorted into "
                f"per-wnid folders)."
            )
        return self.wnid_folders(folder)

    def _read_test(self):
        return self._datums_from_class_folders(self._split_folders("val"))

    def _read_train_per_class(self) -> Dict[int, List[str]]:
        folders = self._split_folders("train")
        return {lab: [str(folders[w] / n) for n in list_images(folders[w])] for lab, w in enumerate(self.class_ids)}


class WnidSubsetTestSet(ImageNetFamily):
    """A test set over a subset of ImageNet's classes (WNID_FILE), one folder per wnid, scored on the
    universe's columns of its classes. Files beside the class folders (ImageNet-R's README.txt) are ignored."""

    SOURCE = "ImageNet"
    WNID_FILE = ""

    @classmethod
    def own_wnids(cls) -> List[str]:
        return read_id_list(RESOURCES / cls.WNID_FILE)

    def _class_ids(self) -> List[str]:
        own = set(self.own_wnids())
        wnids = [w for w in self.universe.ids if w in own]
        if not wnids:
            raise ValueError(f"{self.NAME}: none of its classes are in the configured class list (DATASET.CLASS_LIST)")
        return wnids

    def _read_test(self):
        folders = self.check_class_folders(self.dataset_dir, self.class_ids, self.own_wnids())
        return self._datums_from_class_folders(folders)


@SYNTHETIC_TREE_REGISTRY.register
class ImageNetTree(SyntheticTree):
    NAME = "ImageNet"

    @classmethod
    def classes(cls, num_classes: int) -> List[str]:
        """Deterministic mix of real wnids: in both ImageNet-A and -R, A only, R only, and neither."""
        a = set(read_id_list(RESOURCES / "imagenet_a_wnids.txt"))
        r = set(read_id_list(RESOURCES / "imagenet_r_wnids.txt"))
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

    @classmethod
    def files(cls, class_id, sizes, index):
        return [SyntheticFiles("train", f"imagenet/images/train/{class_id}", sizes["train"], "JPEG", class_id + "_{j}"),
                SyntheticFiles("val", f"imagenet/images/val/{class_id}", sizes["test"], "JPEG", class_id + "_{j}",
                               is_test=True)]

    @classmethod
    def finish(cls, root: Path, class_ids: Sequence[str], sizes) -> None:
        names = read_classnames_file(RESOURCES / "imagenet_classnames.txt")
        (root / "imagenet" / "classnames.txt").write_text("".join(f"{w} {names[w]}\n" for w in imagenet_wnids()))


class WnidSubsetTree(SyntheticTree):
    """Test images for the classes of the tree that are in the set's own wnid list."""

    LABEL = ""  # file-name prefix and image-count key

    @classmethod
    def files(cls, class_id, sizes, index):
        if class_id not in set(cls.dataset().own_wnids()):
            return []
        label = cls.LABEL
        return [SyntheticFiles(label, f"{cls.dataset().LAYOUTS[0]}/{class_id}", sizes["shift"], "jpg", label + "_{j:03d}",
                               is_test=True)]
