"""Datasets whose splits are published image lists, one "<relative image path> <integer label>" per line (the PETL
repositories' VTAB-1K files, NOAH's few-shot annotation lists). Nothing is sampled: the lists are the protocol.

A family file declares, per dataset, its folder, its class count and which list holds each split
(`list_names`); the lists are read, checked (labels in range, paths inside the image folder, existing files,
no test image in training) and turned into Datums here.
"""
from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Tuple

from clip_convpass.data.base import ClassUniverse, DatasetBase
from clip_convpass.data.types import DatasetLayoutError, Datum

Entry = Tuple[str, int]  # (absolute image path, label)


def read_image_list(path: Path, image_root: Path, num_classes: int, dataset: str) -> List[Entry]:
    """A list file's (image path, label) entries; one line naming the file and line for anything malformed."""
    if not path.is_file():
        raise DatasetLayoutError(f"{dataset}: missing list file {path}")
    entries = []
    root = os.path.normpath(image_root)
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            rel, _, label = line.strip().rpartition(" ")  # NOAH's rsplit(' ', 1): a path may hold spaces
            if not rel or not label.lstrip("-").isdigit():
                raise DatasetLayoutError(f"{dataset}: {path}:{n} is {line.strip()!r}, expected "
                                         f"'<relative image path> <integer label>'")
            if not 0 <= int(label) < num_classes:
                raise DatasetLayoutError(f"{dataset}: {path}:{n} has label {label}, expected 0..{num_classes - 1}")
            full = os.path.normpath(os.path.join(root, rel))
            if os.path.isabs(rel) or not full.startswith(root + os.sep):
                raise DatasetLayoutError(f"{dataset}: {path}:{n} names {rel!r}, outside {image_root}")
            entries.append((full, int(label)))
    if not entries:
        raise DatasetLayoutError(f"{dataset}: {path} lists no images")
    return entries


class ListFileDataset(DatasetBase):
    """A dataset read from published lists. Subclasses set NAME, LAYOUTS, EXPECTED_CLASSES and `list_names`."""

    HAS_TRAIN = True
    SHOT_SOURCE = "fixed"

    def list_names(self) -> Dict[str, str]:
        """{"train" | "val" | "test": list file name in the list folder} for this configuration (TEST.SPLIT val
        scores the val list instead of the test list: `evaluated_split`)."""
        raise NotImplementedError

    @property
    def list_dir(self) -> Path:
        return self.dataset_dir

    @property
    def image_root(self) -> Path:
        return self.dataset_dir

    @property
    def val_shots(self) -> int:  # the published val list is used whole
        return len(self.lists["val"])

    def class_universe(self) -> ClassUniverse:
        """Classes known by label: the lists carry no names."""
        ids = [str(i) for i in range(self.EXPECTED_CLASSES)]
        return ClassUniverse(ids, {i: f"class {i}" for i in ids}, source=f"labels of {self.NAME}'s lists (no class names)")

    @property
    def train_list(self) -> str:
        """The list the model trains on (results.json records it)."""
        return self.list_names()["train"]

    @property
    def evaluated_split(self) -> str:
        """The list a run is scored on: val while choosing (TEST.SPLIT val), test for the reported model."""
        return "val" if self.cfg.TEST.SPLIT == "val" else "test"

    @cached_property
    def lists(self) -> Dict[str, List[Entry]]:
        """The training, val and scored lists, each read once and checked: the training images exist, and no
        image that is scored is a training one."""
        names = self.list_names()
        wanted = ("train", "val", self.evaluated_split)
        out = {split: read_image_list(self.list_dir / names[split], self.image_root, self.EXPECTED_CLASSES, self.NAME)
               for split in dict.fromkeys(wanted)}
        missing = [p for split in ("train", "val") for p, _ in out[split] if not os.path.isfile(p)]
        if missing:
            raise DatasetLayoutError(f"{self.NAME}: {len(missing)} image(s) of its training lists do not exist, e.g. "
                                     f"{missing[0]}")
        scored = self.evaluated_split
        leaked = {p for p, _ in out["train"]} & {p for p, _ in out[scored]}
        if leaked:
            raise DatasetLayoutError(f"{self.NAME}: {len(leaked)} image(s) are in both {names['train']} and "
                                     f"{names[scored]}, e.g. {sorted(leaked)[0]}")
        return out

    def _datums(self, split: str) -> List[Datum]:
        return [Datum(p, label, self.classnames[label]) for p, label in self.lists[split]]

    def _read_test(self) -> List[Datum]:
        return self._datums(self.evaluated_split)

    def read_training_lists(self) -> Tuple[List[Datum], List[Datum]]:
        return self._datums("train"), self._datums("val")
