"""Base-to-new classes exactly as CoOp's repository makes them (Dassl DatasetBase.subsample_classes, CoOp's
datasets: the shots are drawn over all classes first, then subsampled)."""
import math
from collections import namedtuple

import pytest
from conftest import TINY

from clip_convpass.config import dataset_config_file, setup_cfg
from clip_convpass.data import build_dataset
from clip_convpass.data.synthetic import build_synthetic_tree

RefDatum = namedtuple("RefDatum", "impath label classname")


def coop_subsample_classes(*args, subsample="all"):
    """A transcription of CoOp's subsample_classes (datasets/oxford_pets.py): labels sorted, base = the first
    ceil(n / 2), new = the rest, labels re-indexed within the half, items of other classes dropped."""
    assert subsample in ["all", "base", "new"]
    if subsample == "all":
        return args
    dataset = args[0]
    labels = sorted({item.label for item in dataset})
    m = math.ceil(len(labels) / 2)
    selected = labels[:m] if subsample == "base" else labels[m:]
    relabeler = {y: y_new for y_new, y in enumerate(selected)}
    return [[RefDatum(item.impath, relabeler[item.label], item.classname) for item in d if item.label in selected]
            for d in args]


@pytest.fixture(scope="module")
def pets_root(tmp_path_factory):
    return build_synthetic_tree(tmp_path_factory.mktemp("b2n"), num_classes=5, train_per_class=4, val_per_class=2,
                                split_val_per_class=2, source="OxfordPets")["root"]


def pets(root, tmp_path, subsample, sampler="coop"):
    cfg = setup_cfg(dataset_config_file("OxfordPets"), None,
                    ["DATASET.ROOT", root, "DATASET.SPLIT_DIR", str(tmp_path / f"splits_{sampler}"),
                     "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE", subsample, "DATASET.FEWSHOT_SAMPLER", sampler,
                     "SEED", "1"], override_files=[TINY])
    return build_dataset(cfg)


def as_ref(items):
    return [RefDatum(d.impath, d.label, d.classname) for d in items]


@pytest.mark.parametrize("subsample", ["base", "new"])
@pytest.mark.parametrize("sampler", ["coop", "per_class"])
def test_base_and_new_match_coops_subsample_classes(pets_root, tmp_path, subsample, sampler):
    every = pets(pets_root, tmp_path, "all", sampler)
    half = pets(pets_root, tmp_path, subsample, sampler)
    # the shots are drawn over all classes, then subsampled (CoOp's order): the half's shots are the full draw's
    train, val, test = coop_subsample_classes(as_ref(every.train_x), as_ref(every.val), as_ref(every.test),
                                              subsample=subsample)
    assert as_ref(half.train_x) == train and as_ref(half.val) == val and as_ref(half.test) == test
    assert half.num_classes == (3 if subsample == "base" else 2)  # ceil(5 / 2) base classes
    assert half.classnames == (every.classnames[:3] if subsample == "base" else every.classnames[3:])
