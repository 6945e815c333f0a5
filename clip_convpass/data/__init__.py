from .base import ClassUniverse, DatasetBase, DatasetLayoutError, Datum, build_universe, imagenet_wnids, list_images
from .images import ImageListDataset, ImageLoadError, collate_skipping, load_rgb
from .transforms import build_transform


def build_dataset(cfg, name: str | None = None) -> DatasetBase:
    from ..registry import DATASET_REGISTRY

    return DATASET_REGISTRY.get(name or cfg.DATASET.NAME)(cfg)
