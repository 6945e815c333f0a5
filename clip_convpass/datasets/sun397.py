from clip_convpass.datasets.coop_split import SplitFileDataset, SplitFileTree
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY


@DATASET_REGISTRY.register
class SUN397(SplitFileDataset):
    NAME = "SUN397"
    ORDER = 26
    LAYOUTS = ("sun397",)
    SPLIT_FILE = "split_zhou_SUN397.json"
    IMAGE_DIR = "SUN397"
    LAYOUT_HELP = "sun397/SUN397/<letter>/<scene>[/<sub>]/sun_<id>.jpg, sun397/split_zhou_SUN397.json"
    EXPECTED_CLASSES = 397
    EXPECTED_SPLITS = {"train": 15880, "val": 3970, "test": 19850}
    EXPECTED_TEST_IMAGES = 19850
    # CoOp's names reverse the folder parts after the letter ("a/apartment_building/outdoor" ->
    # "outdoor apartment_building")


@SYNTHETIC_TREE_REGISTRY.register
class SUN397Tree(SplitFileTree):
    NAME = "SUN397"
    CLASSES = (("a/abbey", "abbey"), ("a/airplane_cabin", "airplane_cabin"),
               ("a/airport_terminal", "airport_terminal"), ("a/alley", "alley"),
               ("a/amphitheater", "amphitheater"), ("a/amusement_arcade", "amusement_arcade"),
               ("a/apartment_building/outdoor", "outdoor apartment_building"),
               ("a/aquarium", "aquarium"))
    PATTERN = "{folder}/sun_{{j:06d}}"
