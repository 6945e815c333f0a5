from clip_convpass.datasets.imagenet import WnidSubsetTestSet, WnidSubsetTree
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY


@DATASET_REGISTRY.register
class ImageNetR(WnidSubsetTestSet):
    NAME = "ImageNetR"
    ORDER = 4
    LABEL = "-R"
    WNID_FILE = "imagenet_r_wnids.txt"
    LAYOUTS = ("imagenet-rendition/imagenet-r", "imagenet-r")
    LAYOUT_HELP = "imagenet-rendition/imagenet-r/<wnid>/*.jpg, 200 classes (the archive's imagenet-r/ is accepted too)"
    EXPECTED_CLASSES = 200
    EXPECTED_TEST_IMAGES = 30000


@SYNTHETIC_TREE_REGISTRY.register
class ImageNetRTree(WnidSubsetTree):
    NAME = "ImageNetR"
    LABEL = "r"

    @classmethod
    def finish(cls, root, class_ids, sizes):
        (root / cls.dataset().LAYOUTS[0] / "README.txt").write_text("ImageNet-R (synthetic stand-in)\n")
