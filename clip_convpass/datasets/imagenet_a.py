from clip_convpass.datasets.imagenet import WnidSubsetTestSet, WnidSubsetTree
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY


@DATASET_REGISTRY.register
class ImageNetA(WnidSubsetTestSet):
    NAME = "ImageNetA"
    ORDER = 3
    LABEL = "-A"
    WNID_FILE = "imagenet_a_wnids.txt"
    LAYOUTS = ("imagenet-adversarial/imagenet-a", "imagenet-a")
    LAYOUT_HELP = "imagenet-adversarial/imagenet-a/<wnid>/*.jpg, 200 classes (the archive's imagenet-a/ is accepted too)"
    EXPECTED_CLASSES = 200
    EXPECTED_TEST_IMAGES = 7500


@SYNTHETIC_TREE_REGISTRY.register
class ImageNetATree(WnidSubsetTree):
    NAME = "ImageNetA"
    LABEL = "a"
