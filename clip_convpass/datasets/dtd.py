from clip_convpass.datasets.coop_split import SplitFileDataset, SplitFileTree
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY


@DATASET_REGISTRY.register
class DescribableTextures(SplitFileDataset):
    NAME = "DescribableTextures"  # CoOp's registry name
    ORDER = 27
    LABEL = "DTD"
    LAYOUTS = ("dtd",)
    SPLIT_FILE = "split_zhou_DescribableTextures.json"
    IMAGE_DIR = "images"
    LAYOUT_HELP = "dtd/images/<texture>/<texture>_<n>.jpg, dtd/split_zhou_DescribableTextures.json (imdb/, labels/ unused)"
    TEMPLATES = ("{} texture.",)
    EXPECTED_CLASSES = 47
    EXPECTED_SPLITS = {"train": 2820, "val": 1128, "test": 1692}
    EXPECTED_TEST_IMAGES = 1692


@SYNTHETIC_TREE_REGISTRY.register
class DescribableTexturesTree(SplitFileTree):
    NAME = "DescribableTextures"
    CLASSES = tuple((c, c) for c in ("banded", "blotchy", "braided", "bubbly", "bumpy", "chequered",
                                     "cobwebbed", "cracked"))
