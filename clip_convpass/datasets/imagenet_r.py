from clip_convpass.datasets.imagenet import WnidSubsetTestSet
from clip_convpass.registry import DATASET_REGISTRY


@DATASET_REGISTRY.register
class ImageNetR(WnidSubsetTestSet):
    NAME = "ImageNetR"
    ORDER = 4
    LABEL = "-R"
    WNID_FILE = "imagenet_r_wnids.txt"
    SYNTHETIC_LABEL = "r"
    LAYOUTS = ("imagenet-rendition/imagenet-r", "imagenet-r")
    LAYOUT_HELP = "imagenet-rendition/imagenet-r/<wnid>/*.jpg, 200 classes (the archive's imagenet-r/ is accepted too)"
    EXPECTED_CLASSES = 200
    EXPECTED_TEST_IMAGES = 30000

    @classmethod
    def synthetic_finish(cls, root, class_ids, sizes):
        (root / cls.LAYOUTS[0] / "README.txt").write_text("ImageNet-R (synthetic stand-in)\n")
