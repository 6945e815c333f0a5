from .base import ClassUniverse, DatasetBase, DatasetLayoutError, Datum, SyntheticFiles, list_images
from .images import ImageListDataset, ImageLoadError, collate_skipping, load_rgb
from .loader import build_loader
from .transforms import build_transform

__all__ = ["ClassUniverse", "DatasetBase", "DatasetLayoutError", "Datum", "SyntheticFiles", "list_images",
           "ImageListDataset", "ImageLoadError", "collate_skipping", "load_rgb", "build_loader", "build_transform",
           "build_dataset"]


def build_dataset(cfg, name: str | None = None) -> DatasetBase:
    from ..registry import DATASET_REGISTRY

    return DATASET_REGISTRY.get(name or cfg.DATASET.NAME)(cfg)
