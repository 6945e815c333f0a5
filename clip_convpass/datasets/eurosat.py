from clip_convpass.datasets.coop_split import SplitFileDataset, SplitFileTree
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY


@DATASET_REGISTRY.register
class EuroSAT(SplitFileDataset):
    NAME = "EuroSAT"
    ORDER = 28
    LAYOUTS = ("eurosat",)
    SPLIT_FILE = "split_zhou_EuroSAT.json"
    IMAGE_DIR = "2750"
    LAYOUT_HELP = "eurosat/2750/<Class>/<Class>_<n>.jpg, eurosat/split_zhou_EuroSAT.json"
    TEMPLATES = ("a centered satellite photo of {}.",)
    EXPECTED_CLASSES = 10
    EXPECTED_SPLITS = {"train": 13500, "val": 5400, "test": 8100}
    EXPECTED_TEST_IMAGES = 8100
    # CoOp's split names the classes by its NEW_CNAMES ("AnnualCrop" -> "Annual Crop Land")


@SYNTHETIC_TREE_REGISTRY.register
class EuroSATTree(SplitFileTree):
    NAME = "EuroSAT"
    CLASSES = (("AnnualCrop", "Annual Crop Land"), ("Forest", "Forest"),
               ("HerbaceousVegetation", "Herbaceous Vegetation Land"), ("Highway", "Highway or Road"),
               ("Industrial", "Industrial Buildings"), ("Pasture", "Pasture Land"),
               ("PermanentCrop", "Permanent Crop Land"), ("Residential", "Residential Buildings"))
    PATTERN = "{folder}/{folder}_{{j}}"
