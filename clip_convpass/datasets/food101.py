from clip_convpass.datasets.coop_split import SplitFileDataset, SplitFileTree
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY


@DATASET_REGISTRY.register
class Food101(SplitFileDataset):
    NAME = "Food101"
    ORDER = 24
    LAYOUTS = ("food-101",)
    SPLIT_FILE = "split_zhou_Food101.json"
    IMAGE_DIR = "images"
    LAYOUT_HELP = "food-101/images/<dish>/<id>.jpg, food-101/split_zhou_Food101.json (meta/ unused)"
    TEMPLATES = ("a photo of {}, a type of food.",)
    EXPECTED_CLASSES = 101
    EXPECTED_SPLITS = {"train": 50500, "val": 20200, "test": 30300}
    EXPECTED_TEST_IMAGES = 30300


@SYNTHETIC_TREE_REGISTRY.register
class Food101Tree(SplitFileTree):
    NAME = "Food101"
    CLASSES = tuple((c, c) for c in ("apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio",
                                     "beef_tartare", "beet_salad", "beignets", "bibimbap"))
    PATTERN = "{folder}/{{j}}"
