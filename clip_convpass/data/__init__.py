from clip_convpass.data.base import ClassUniverse, DatasetBase, DatasetLayoutError, Datum, list_images
from clip_convpass.data.images import ImageListDataset, ImageLoadError, collate_skipping, load_rgb
from clip_convpass.data.loader import build_loader
from clip_convpass.data.transforms import build_transform

__all__ = ["ClassUniverse", "DatasetBase", "DatasetLayoutError", "Datum", "list_images",
           "ImageListDataset", "ImageLoadError", "collate_skipping", "load_rgb", "build_loader", "build_transform",
           "build_dataset"]


def build_dataset(cfg, name: str | None = None) -> DatasetBase:
    from clip_convpass.registry import DATASET_REGISTRY

    return DATASET_REGISTRY.get(name or cfg.DATASET.NAME)(cfg)
