"""The records every data module shares: a labelled image, the layout error, image listing, stable seeds."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List

from clip_convpass.utils.errors import UserError

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
        raise DatasetLayoutError(f"{path} lists some class ids twice")
    return ids


def list_images(folder: Path) -> List[str]:
    """Image file names in a folder, sorted (listing order differs between file systems)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))


def stable_int(*parts) -> int:
    """A seed from any values, the same on every machine and Python run (unlike hash())."""
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16], 16)
