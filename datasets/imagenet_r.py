from clip_convpass.data.base import WnidSubsetTestSet
from clip_convpass.registry import DATASET_REGISTRY


@DATASET_REGISTRY.register("ImageNetR")
class ImageNetR(WnidSubsetTestSet):
    NAME = "ImageNetR"
    WNID_FILE = "imagenet_r_wnids.txt"
    LAYOUTS = ("imagenet-rendition/imagenet-r", "imagenet-r")
    LAYOUT_HELP = "imagenet-rendition/imagenet-r/<wnid>/*.jpg, 200 classes (the archive's imagenet-r/ is accepted too)"
    EXPECTED_CLASSES = 200
    EXPECTED_TEST_IMAGES = 30000
