from clip_convpass.datasets.coop_split import SplitFileDataset, SplitFileTree
from clip_convpass.registry import DATASET_REGISTRY, SYNTHETIC_TREE_REGISTRY


@DATASET_REGISTRY.register
class UCF101(SplitFileDataset):
    NAME = "UCF101"
    ORDER = 30
    LAYOUTS = ("ucf101",)
    SPLIT_FILE = "split_zhou_UCF101.json"
    IMAGE_DIR = "UCF-101-midframes"
    LAYOUT_HELP = "ucf101/UCF-101-midframes/<Action_Name>/v_<Action>_g<nn>_c<nn>.jpg, ucf101/split_zhou_UCF101.json"
    TEMPLATES = ("a photo of a person doing {}.",)
    EXPECTED_CLASSES = 101
    EXPECTED_SPLITS = {"train": 7639, "val": 1898, "test": 3783}
    EXPECTED_TEST_IMAGES = 3783


@SYNTHETIC_TREE_REGISTRY.register
class UCF101Tree(SplitFileTree):
    NAME = "UCF101"
    CLASSES = tuple((c, c) for c in ("Apply_Eye_Makeup", "Apply_Lipstick", "Archery", "Baby_Crawling",
                                     "Balance_Beam", "Band_Marching", "Baseball_Pitch", "Basketball"))
    PATTERN = "{folder}/v_{folder}_g{{j:04d}}_c01"
