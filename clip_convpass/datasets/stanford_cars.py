from clip_convpass.datasets.coop_split import SplitFileDataset, SplitFileTree
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY


@DATASET_REGISTRY.register
class StanfordCars(SplitFileDataset):
    NAME = "StanfordCars"
    ORDER = 22
    LABEL = "Cars"
    LAYOUTS = ("stanford_cars",)
    SPLIT_FILE = "split_zhou_StanfordCars.json"
    IMAGE_DIR = ""  # split paths start with cars_train/ or cars_test/
    LAYOUT_HELP = ("stanford_cars/cars_train/<nnnnn>.jpg, stanford_cars/cars_test/<nnnnn>.jpg, "
                   "stanford_cars/split_zhou_StanfordCars.json (devkit/, *.mat unused)")
    EXPECTED_CLASSES = 196
    EXPECTED_SPLITS = {"train": 6509, "val": 1635, "test": 8041}
    EXPECTED_TEST_IMAGES = 8041


@SYNTHETIC_TREE_REGISTRY.register
class StanfordCarsTree(SplitFileTree):
    NAME = "StanfordCars"
    CLASSES = tuple(("", c) for c in (
        "2012 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 Acura TL Sedan", "2008 Acura TL Type-S",
        "2012 Acura TSX Sedan", "2001 Acura Integra Type R", "2012 Acura ZDX Hatchback",
        "2012 Aston Martin V8 Vantage Convertible"))

    @classmethod
    def relpath(cls, folder, split):
        # train and val images come from cars_train/, test images from cars_test/
        return ("cars_test" if split == "test" else "cars_train") + "/{j:05d}"
