import os
import re
from typing import List

from clip_convpass.data.base import DatasetLayoutError, Datum, list_images
from clip_convpass.data.synthetic import SyntheticFiles, SyntheticTree
from clip_convpass.datasets.imagenet import ImageNetFamily, imagenet_wnids
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY

CLASS_INDEX = re.compile(r"0|[1-9][0-9]*", re.ASCII)


@DATASET_REGISTRY.register
class ImageNetV2(ImageNetFamily):
    """Matched-frequency ImageNet-V2: folder names are ImageNet class indices (0..999), not wnids."""

    NAME = "ImageNetV2"
    ORDER = 1
    LABEL = "-V2"
    SOURCE = "ImageNet"
    LAYOUTS = ("imagenetv2/imagenetv2-matched-frequency-format-val", "imagenetv2-matched-frequency-format-val")
    LAYOUT_HELP = "imagenetv2/imagenetv2-matched-frequency-format-val/<class index 0..999>/*.jpeg"
    EXPECTED_CLASSES = 1000
    EXPECTED_TEST_IMAGES = 10000

    def _read_test(self) -> List[Datum]:
        full = imagenet_wnids()
        present = {}
        for e in os.scandir(self.dataset_dir):
            if not e.is_dir():
                continue
            # canonical integers only ("007" or a superscript digit is not a class), never string order:
            # folder "10" is class 10, not the third folder
            if not CLASS_INDEX.fullmatch(e.name) or int(e.name) >= len(full):
                raise DatasetLayoutError(
                    f"ImageNetV2: folder {e.path!r} is not a class index 0..{len(full) - 1} written plainly "
                    f"({self.LAYOUT_HELP})"
                )
            present[full[int(e.name)]] = e.path
        missing = [w for w in self.class_ids if w not in present]
        if missing:
            idx = [full.index(w) for w in missing[:10]]
            raise DatasetLayoutError(f"ImageNetV2: {self.dataset_dir} lacks class folders {idx} (of {len(missing)} missing)")
        items = []
        for label, wnid in enumerate(self.class_ids):
            names = list_images(present[wnid])
            if not names:
                raise DatasetLayoutError(f"ImageNetV2: class folder {present[wnid]} has no images")
            items += [Datum(os.path.join(present[wnid], n), label, self.classnames[label]) for n in names]
        return items


@SYNTHETIC_TREE_REGISTRY.register
class ImageNetV2Tree(SyntheticTree):
    NAME = "ImageNetV2"

    @classmethod
    def files(cls, class_id, sizes, index):
        folder = f"{cls.dataset().LAYOUTS[0]}/{imagenet_wnids().index(class_id)}"
        return [SyntheticFiles("v2", folder, sizes["shift"], "jpeg", "v2_{j:03d}", is_test=True)]
