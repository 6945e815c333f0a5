from clip_convpass.data.synthetic import SyntheticFiles, SyntheticTree
from clip_convpass.datasets.imagenet import ImageNetFamily
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY


@DATASET_REGISTRY.register
class ImageNetSketch(ImageNetFamily):
    NAME = "ImageNetSketch"
    ORDER = 2
    LABEL = "-Sketch"
    SOURCE = "ImageNet"
    # CoOp's layout first, then what the official archive extracts to (sketch/<wnid>/).
    LAYOUTS = ("imagenet-sketch/images", "sketch", "imagenet-sketch/sketch")
    LAYOUT_HELP = "imagenet-sketch/images/<wnid>/*.JPEG (the official archive's sketch/<wnid>/ is accepted too)"
    EXPECTED_CLASSES = 1000
    EXPECTED_TEST_IMAGES = 50889

    def _read_test(self):
        return self._datums_from_class_folders(self.wnid_folders(self.dataset_dir))


@SYNTHETIC_TREE_REGISTRY.register
class ImageNetSketchTree(SyntheticTree):
    NAME = "ImageNetSketch"

    @classmethod
    def files(cls, class_id, sizes, index):
        return [SyntheticFiles("sketch", f"imagenet-sketch/images/{class_id}", sizes["shift"], "JPEG", "sketch_{j:03d}",
                               gray=True, is_test=True)]
