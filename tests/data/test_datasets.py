import os
import shutil
from pathlib import Path

import pytest

from clip_convpass.data import DatasetLayoutError, build_dataset
from clip_convpass.data.base import read_id_list
from clip_convpass.datasets.imagenet import RESOURCES, imagenet_wnids

A_WNIDS = set(read_id_list(RESOURCES / "imagenet_a_wnids.txt"))
R_WNIDS = set(read_id_list(RESOURCES / "imagenet_r_wnids.txt"))


def test_resource_lists_are_the_real_ones():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and wnids == sorted(wnids)
    assert len(A_WNIDS) == 200 and len(R_WNIDS) == 200 and A_WNIDS <= set(wnids) and R_WNIDS <= set(wnids)


def test_imagenet_reader(cfg_factory, synth):
    ds = build_dataset(cfg_factory("ImageNet"))
    assert ds.class_ids == synth["class_ids"] and ds.num_classes == 6
    assert len(ds.test) == synth["counts"]["val"]
    for d in ds.test:
        assert Path(d.impath).parent.name == ds.class_ids[d.label]
    assert ds.label_columns == list(range(6))


def test_v2_index_folders_map_by_integer_not_string_order(cfg_factory, synth):
    ds = build_dataset(cfg_factory("ImageNetV2"))
    full = imagenet_wnids()
    assert len(ds.test) == synth["counts"]["v2"]
    for d in ds.test:
        folder_index = int(Path(d.impath).parent.name)
        assert full[folder_index] == ds.class_ids[d.label]
    # the synthetic tree has folders like 6 and 11, which string order would swap
    names = sorted(os.listdir(ds.dataset_dir))
    assert names != sorted(names, key=int)


@pytest.mark.parametrize("name,subset", [("ImageNetA", A_WNIDS), ("ImageNetR", R_WNIDS)])
def test_200_class_sets_map_into_the_universe(cfg_factory, synth, name, subset):
    ds = build_dataset(cfg_factory(name))
    expected = [w for w in synth["class_ids"] if w in subset]
    assert ds.class_ids == expected
    assert ds.label_columns == [synth["class_ids"].index(w) for w in expected]
    assert all(not d.impath.endswith("README.txt") for d in ds.test)
    assert len(ds.test) == synth["counts"]["a" if name == "ImageNetA" else "r"]


def test_200_class_columns_on_the_full_universe(synth, tmp_path):
    # Without a CLASS_LIST the universe is the 1000 ImageNet classes; A's columns are its wnids' indices.
    # (The synthetic tree's own synthetic_classes.txt would restrict it: link its folders without that file.)
    from clip_convpass.config import setup_cfg

    root = tmp_path / "root"
    root.mkdir()
    for entry in Path(synth["root"]).iterdir():
        if entry.name != "synthetic_classes.txt":
            (root / entry.name).symlink_to(entry)
    cfg = setup_cfg(None, None, ["DATASET.ROOT", str(root), "DATASET.NAME", "ImageNetA"])
    ds = build_dataset(cfg)
    full = imagenet_wnids()
    assert len(ds.universe) == 1000
    assert ds.class_ids == sorted(A_WNIDS) and ds.num_classes == 200
    assert ds.label_columns == [full.index(w) for w in sorted(A_WNIDS)]
    with pytest.raises(DatasetLayoutError, match="lacks 196 of the 200"):
        ds.test  # the synthetic tree holds only 4 of A's classes


def test_sketch_reader(cfg_factory, synth):
    ds = build_dataset(cfg_factory("ImageNetSketch"))
    assert len(ds.test) == synth["counts"]["sketch"] and ds.num_classes == 6


def copy_tree(synth, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(synth["root"], dst)
    return dst


def test_official_archive_layouts_are_accepted(synth, tmp_path, cfg_factory):
    root = copy_tree(synth, tmp_path)
    (root / "imagenet-adversarial" / "imagenet-a").rename(root / "imagenet-a")
    (root / "imagenet-sketch" / "images").rename(root / "sketch")
    cfg = cfg_factory("ImageNetA", opts=["DATASET.ROOT", str(root)])
    assert build_dataset(cfg).dataset_dir == root / "imagenet-a"
    cfg = cfg_factory("ImageNetSketch", opts=["DATASET.ROOT", str(root)])
    assert len(build_dataset(cfg).test) == synth["counts"]["sketch"]


def test_missing_dataset_names_expected_path(synth, tmp_path, cfg_factory):
    root = copy_tree(synth, tmp_path)
    shutil.rmtree(root / "imagenet-rendition")
    with pytest.raises(DatasetLayoutError, match="imagenet-rendition/imagenet-r"):
        build_dataset(cfg_factory("ImageNetR", opts=["DATASET.ROOT", str(root)]))
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        build_dataset(cfg_factory("ImageNet", opts=["DATASET.ROOT", str(tmp_path / "nowhere")]))


def test_bad_class_folders_are_reported(synth, tmp_path, cfg_factory):
    root = copy_tree(synth, tmp_path)
    val = root / "imagenet" / "images" / "val"
    (val / "not_a_wnid").mkdir()
    with pytest.raises(DatasetLayoutError, match="not_a_wnid"):
        build_dataset(cfg_factory("ImageNet", opts=["DATASET.ROOT", str(root)])).test
    (val / "not_a_wnid").rmdir()
    victim = synth["class_ids"][2]
    for f in (val / victim).iterdir():
        f.unlink()
    with pytest.raises(DatasetLayoutError, match=f"without images.*{victim}"):
        build_dataset(cfg_factory("ImageNet", opts=["DATASET.ROOT", str(root)])).test
    shutil.rmtree(val / victim)
    with pytest.raises(DatasetLayoutError, match=f"lacks 1 of the 6.*{victim}"):
        build_dataset(cfg_factory("ImageNet", opts=["DATASET.ROOT", str(root)])).test


def test_v2_non_index_folder_is_reported(synth, tmp_path, cfg_factory):
    root = copy_tree(synth, tmp_path)
    (root / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / "n01440764").mkdir()
    with pytest.raises(DatasetLayoutError, match="not a class index"):
        build_dataset(cfg_factory("ImageNetV2", opts=["DATASET.ROOT", str(root)])).test
