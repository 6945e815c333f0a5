import json
import os
from pathlib import Path

import pytest

from clip_convpass.data import DatasetLayoutError, build_dataset


def test_fewshot_is_deterministic_disjoint_and_relative(cfg_factory, tmp_path):
    cfg = cfg_factory(opts=["DATASET.NUM_SHOTS", "4", "DATASET.VAL_SHOTS", "2", "SEED", "0"])
    ds = build_dataset(cfg)
    train, val = ds.train_x, ds.val
    assert len(train) == 6 * 4 and len(val) == 6 * 2
    assert not {d.impath for d in train} & {d.impath for d in val}
    for label in range(6):
        assert sum(d.label == label for d in train) == 4
    data = json.loads(ds.split_file().read_text())
    assert all(not os.path.isabs(p) for p, _ in data["train"] + data["val"])
    # a fresh sample (no cache) with the same seed draws the same files
    ds.split_file().unlink()
    again = build_dataset(cfg)
    assert [d.impath for d in again.train_x] == [d.impath for d in train]


def test_fewshot_ignores_directory_listing_order(cfg_factory, monkeypatch):
    cfg = cfg_factory(opts=["DATASET.NUM_SHOTS", "3"])
    first = [d.impath for d in build_dataset(cfg).train_x]
    build_dataset(cfg).split_file().unlink()
    real_scandir = os.scandir

    def reversed_scandir(path):
        return iter(sorted(real_scandir(path), key=lambda e: e.name, reverse=True))

    monkeypatch.setattr(os, "scandir", reversed_scandir)
    assert [d.impath for d in build_dataset(cfg).train_x] == first


def test_seeds_differ(cfg_factory):
    a = build_dataset(cfg_factory(opts=["SEED", "1", "DATASET.NUM_SHOTS", "2"])).train_x
    b = build_dataset(cfg_factory(opts=["SEED", "2", "DATASET.NUM_SHOTS", "2"])).train_x
    assert [d.impath for d in a] != [d.impath for d in b]


def test_too_many_shots_names_the_class(cfg_factory, synth):
    cfg = cfg_factory(opts=["DATASET.NUM_SHOTS", "30", "DATASET.VAL_SHOTS", "0"])
    with pytest.raises(DatasetLayoutError, match=synth["class_ids"][0]):
        build_dataset(cfg).train_x
    cfg = cfg_factory(opts=["DATASET.NUM_SHOTS", "30", "DATASET.VAL_SHOTS", "0", "DATASET.ALLOW_FEWER_SHOTS", "True"])
    assert len(build_dataset(cfg).train_x) == 6 * synth["counts"]["train"] // 6


def test_split_is_portable_across_roots(cfg_factory, synth, tmp_path):
    import shutil

    cfg = cfg_factory(opts=["DATASET.NUM_SHOTS", "2"])
    ds = build_dataset(cfg)
    rel = [os.path.relpath(d.impath, ds.root) for d in ds.train_x]
    moved = tmp_path / "moved"
    shutil.copytree(synth["root"], moved)
    ds2 = build_dataset(cfg_factory(opts=["DATASET.NUM_SHOTS", "2", "DATASET.ROOT", str(moved)]))
    assert [os.path.relpath(d.impath, ds2.root) for d in ds2.train_x] == rel
    assert all(Path(d.impath).is_file() for d in ds2.train_x)
