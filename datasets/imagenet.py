from pathlib import Path
from typing import Dict, List

from clip_convpass.data.base import DatasetBase, Datum, DatasetLayoutError, imagenet_wnids, list_images
from clip_convpass.registry import DATASET_REGISTRY


@DATASET_REGISTRY.register("ImageNet")
class ImageNet(DatasetBase):
    NAME = "ImageNet"
    LAYOUTS = ("imagenet",)
    LAYOUT_HELP = "imagenet/images/train/<wnid>/*.JPEG, imagenet/images/val/<wnid>/*.JPEG, imagenet/classnames.txt"
    EXPECTED_CLASSES = 1000
    EXPECTED_TEST_IMAGES = 50000
    HAS_TRAIN = True

    def _split_folders(self, split: str) -> Dict[str, Path]:
        folder = self.dataset_dir / "images" / split
        if not folder.is_dir():
            raise DatasetLayoutError(
                f"ImageNet: expected {folder}. Layout: {self.LAYOUT_HELP} (validation images sorted into "
                f"per-wnid folders)."
            )
        return self.check_class_folders(folder, self.class_wnids, imagenet_wnids())

    def _read_test(self) -> List[Datum]:
        return self._datums_from_class_folders(self._split_folders("val"))

    def _read_train_per_class(self) -> Dict[int, List[str]]:
        folders = self._split_folders("train")
        return {lab: [str(folders[w] / n) for n in list_images(folders[w])] for lab, w in enumerate(self.class_wnids)}
