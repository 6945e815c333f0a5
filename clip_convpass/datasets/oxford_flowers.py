from clip_convpass.datasets.coop_split import SplitFileDataset, SplitFileTree
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY


@DATASET_REGISTRY.register
class OxfordFlowers(SplitFileDataset):
    NAME = "OxfordFlowers"
    ORDER = 23
    LABEL = "Flowers"
    LAYOUTS = ("oxford_flowers",)
    SPLIT_FILE = "split_zhou_OxfordFlowers.json"
    IMAGE_DIR = "jpg"
    LAYOUT_HELP = ("oxford_flowers/jpg/image_<nnnnn>.jpg, oxford_flowers/split_zhou_OxfordFlowers.json "
                   "(imagelabels.mat, cat_to_name.json unused when the split file exists)")
    TEMPLATES = ("a photo of a {}, a type of flower.",)
    EXPECTED_CLASSES = 102
    EXPECTED_SPLITS = {"train": 4093, "val": 1633, "test": 2463}
    EXPECTED_TEST_IMAGES = 2463


@SYNTHETIC_TREE_REGISTRY.register
class OxfordFlowersTree(SplitFileTree):
    NAME = "OxfordFlowers"
    CLASSES = tuple(("", c) for c in ("pink primrose", "hard-leaved pocket orchid", "canterbury bells",
                                      "sweet pea", "english marigold", "tiger lily", "moon orchid",
                                      "bird of paradise"))
    PATTERN = "image_{{j:05d}}"  # one flat folder of numbered files
