from clip_convpass.datasets.coop_split import SplitFileDataset, SplitFileTree
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY


@DATASET_REGISTRY.register
class Caltech101(SplitFileDataset):
    NAME = "Caltech101"
    ORDER = 20
    LAYOUTS = ("caltech-101",)
    SPLIT_FILE = "split_zhou_Caltech101.json"
    IMAGE_DIR = "101_ObjectCategories"
    LAYOUT_HELP = "caltech-101/101_ObjectCategories/<category>/image_<nnnn>.jpg, caltech-101/split_zhou_Caltech101.json"
    EXPECTED_CLASSES = 100  # BACKGROUND_Google and Faces_easy are not classes in CoOp's split
    EXPECTED_SPLITS = {"train": 4128, "val": 1649, "test": 2465}
    EXPECTED_TEST_IMAGES = 2465
    # sorted folder names (upper case first) with CoOp's NEW_CNAMES ("airplanes" -> "airplane")


@SYNTHETIC_TREE_REGISTRY.register
class Caltech101Tree(SplitFileTree):
    NAME = "Caltech101"
    CLASSES = (("Faces", "face"), ("Leopards", "leopard"), ("Motorbikes", "motorbike"),
               ("accordion", "accordion"), ("airplanes", "airplane"), ("anchor", "anchor"), ("ant", "ant"),
               ("barrel", "barrel"))
    PATTERN = "{folder}/image_{{j:04d}}"
