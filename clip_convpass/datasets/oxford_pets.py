from clip_convpass.datasets.coop_split import SplitFileDataset, SplitFileTree
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY


@DATASET_REGISTRY.register
class OxfordPets(SplitFileDataset):
    NAME = "OxfordPets"
    ORDER = 21
    LABEL = "Pets"
    LAYOUTS = ("oxford_pets",)
    SPLIT_FILE = "split_zhou_OxfordPets.json"
    IMAGE_DIR = "images"
    LAYOUT_HELP = "oxford_pets/images/<Breed>_<n>.jpg, oxford_pets/split_zhou_OxfordPets.json (oxford_pets/annotations/ unused)"
    TEMPLATES = ("a photo of a {}, a type of pet.",)
    EXPECTED_CLASSES = 37
    EXPECTED_SPLITS = {"train": 2944, "val": 736, "test": 3669}
    EXPECTED_TEST_IMAGES = 3669


@SYNTHETIC_TREE_REGISTRY.register
class OxfordPetsTree(SplitFileTree):
    NAME = "OxfordPets"
    CLASSES = (("Abyssinian", "abyssinian"), ("american_bulldog", "american_bulldog"),
               ("american_pit_bull_terrier", "american_pit_bull_terrier"), ("basset_hound", "basset_hound"),
               ("beagle", "beagle"), ("Bengal", "bengal"), ("Birman", "birman"), ("Bombay", "bombay"))
    PATTERN = "{folder}_{{j}}"  # one flat folder; the file name starts with the breed
