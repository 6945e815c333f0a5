from clip_convpass.datasets.imagenet import WnidSubsetTestSet
from clip_convpass.registry import DATASET_REGISTRY


@DATASET_REGISTRY.register
class ImageNetA(WnidSubsetTestSet):
    NAME = "ImageNetA"
    ORDER = 3
    LABEL = "-A"
    WNID_FILE = "imagenet_a_wnids.txt"
    SYNTHETIC_LABEL = "a"
    LAYOUTS = ("imagenet-adversarial/imagenet-a", "imagenet-a")
    LAYOUT_HELP = "imagenet-adversarial/imagenet-a/<wnid>/*.jpg, 200 classes (the archive's imagenet-a/ is accepted too)"
    EXPECTED_CLASSES = 200
    EXPECTED_TEST_IMAGES = 7500
