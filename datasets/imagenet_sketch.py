from typing import List

from clip_convpass.data.base import DatasetBase, Datum, imagenet_wnids
from clip_convpass.registry import DATASET_REGISTRY


@DATASET_REGISTRY.register("ImageNetSketch")
class ImageNetSketch(DatasetBase):
    NAME = "ImageNetSketch"
    # CoOp's layout first, then what the official archive extracts to (sketch/<wnid>/).
    LAYOUTS = ("imagenet-sketch/images", "sketch", "imagenet-sketch/sketch")
    LAYOUT_HELP = "imagenet-sketch/images/<wnid>/*.JPEG (the official archive's sketch/<wnid>/ is accepted too)"
    EXPECTED_CLASSES = 1000
    EXPECTED_TEST_IMAGES = 50889

    def _read_test(self) -> List[Datum]:
        return self._datums_from_class_folders(self.check_class_folders(self.dataset_dir, self.class_wnids, imagenet_wnids()))
