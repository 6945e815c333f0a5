import pytest
import torch

from clip_convpass.data import build_dataset, build_transform
from clip_convpass.engine import feature_cache
from clip_convpass.registry import TRAINER_REGISTRY

CFG = {
    "ZeroShotCLIP": "configs/trainers/ZeroShotCLIP/vit_b16.yaml",
    "LinearProbeCLIP": "configs/trainers/LinearProbeCLIP/vit_b16.yaml",
    "CoOp": "configs/trainers/CoOp/vit_b16_ep50.yaml",
    "CoCoOp": "configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1.yaml",
    "TipAdapterF": "configs/trainers/TipAdapterF/vit_b16.yaml",
    "ConvpassCLIP": "configs/trainers/ConvpassCLIP/vit_b16.yaml",
}
FAST = ["DATASET.NUM_SHOTS", "2", "DATASET.VAL_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", "TRAINER.TIP.AUGMENT_EPOCH", "1",
        "TRAINER.TIP.BETA_STEPS", "4", "TRAINER.TIP.ALPHA_STEPS", "4", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
        "DATALOADER.TEST.BATCH_SIZE", "7"]


@pytest.mark.parametrize("name", ["ZeroShotCLIP", "LinearProbeCLIP", "CoOp", "CoCoOp", "TipAdapterF"])
def test_cached_and_uncached_evaluation_are_identical(cfg_factory, tiny_weights, tmp_path, name):
    common = ["MODEL.PRETRAINED", tiny_weights, *FAST]
    cached_cfg = cfg_factory(config_file=CFG[name], output_dir=tmp_path / "c",
                             opts=[*common, "TEST.FEATURE_CACHE_DIR", str(tmp_path / "cache")])
    trainer = TRAINER_REGISTRY.get(cached_cfg.TRAINER.NAME)(cached_cfg)
    trainer.train()
    before = dict(feature_cache.STATS)
    first = trainer.test()
    second = trainer.test()
    assert feature_cache.STATS["passes"] == before["passes"] + 1  # encoded once, then read from disk
    assert feature_cache.STATS["cache_hits"] == before["cache_hits"] + 1
    trainer.cfg.defrost()
    trainer.cfg.TEST.FEATURE_CACHE_DIR = ""
    uncached = trainer.test()
    assert first["metrics"] == second["metrics"] == uncached["metrics"]
    a = trainer.test(build_dataset(trainer.cfg, "ImageNetA"))
    trainer.cfg.TEST.FEATURE_CACHE_DIR = str(tmp_path / "cache")
    assert trainer.test(build_dataset(trainer.cfg, "ImageNetA"))["metrics"] == a["metrics"]


def test_cache_key_covers_what_features_depend_on(cfg_factory, tiny_weights, tmp_path):
    cfg = cfg_factory(opts=["MODEL.PRETRAINED", tiny_weights])
    ds = build_dataset(cfg)
    tf = build_transform(cfg, False)
    key, _ = feature_cache.cache_key(cfg, ds.NAME, "test", ds.test, ds.root, tf)
    assert feature_cache.cache_key(cfg, ds.NAME, "test", ds.test, ds.root, tf)[0] == key  # stable
    others = [
        feature_cache.cache_key(cfg, ds.NAME, "test", ds.test[:-1], ds.root, tf)[0],
        feature_cache.cache_key(cfg, ds.NAME, "val", ds.test, ds.root, tf)[0],
        feature_cache.cache_key(cfg, "ImageNetV2", "test", ds.test, ds.root, tf)[0],
        feature_cache.cache_key(cfg, ds.NAME, "test", ds.test, ds.root, build_transform(cfg, True))[0],
    ]
    for opts in (["MODEL.PRETRAINED", "none"], ["PREC", "bf16"], ["MODEL.BACKBONE", "tiny-ViT-Q-rect"],
                 ["DATALOADER.TEST.BATCH_SIZE", "3"]):
        other = cfg_factory(opts=["MODEL.PRETRAINED", tiny_weights, *opts])
        others.append(feature_cache.cache_key(other, ds.NAME, "test", ds.test, ds.root, tf)[0])
    assert len(set(others)) == len(others) and key not in others
    # random init depends on the seed, a weights file does not
    r1 = cfg_factory(opts=["MODEL.PRETRAINED", "none", "SEED", "1"])
    r2 = cfg_factory(opts=["MODEL.PRETRAINED", "none", "SEED", "2"])
    w2 = cfg_factory(opts=["MODEL.PRETRAINED", tiny_weights, "SEED", "2"])
    assert feature_cache.weights_identity(r1) != feature_cache.weights_identity(r2)
    assert feature_cache.weights_identity(w2) == feature_cache.weights_identity(cfg)


def test_grid_encodes_each_test_set_once_for_frozen_methods(synth, tiny_weights, tmp_path):
    from clip_convpass.experiments.grid import run_grid
    from clip_convpass.registry import find_row

    methods = [find_row("ZeroShotCLIP"), find_row("CoOp")]
    opts = ["DATASET.CLASS_LIST", synth["class_list"], "MODEL.PRETRAINED", tiny_weights, "MODEL.BACKBONE", "tiny-ViT-Q",
            "INPUT.SIZE", "(32,32)", "PREC", "fp32", "DATALOADER.NUM_WORKERS", "0", "DATASET.SPLIT_DIR",
            str(tmp_path / "s"), *FAST]
    domains = ["ImageNet", "ImageNetA", "ImageNetR"]
    counts = {}
    for cache in (False, True):
        before = feature_cache.STATS["passes"]
        run_grid(methods, [1, 2], synth["root"], tmp_path / f"grid{cache}", opts, domains=domains, feature_cache=cache)
        counts[cache] = feature_cache.STATS["passes"] - before
    assert counts[False] == 2 * 2 * 3  # methods x seeds x test sets
    assert counts[True] == 3  # once per test set


@pytest.mark.parametrize("prec", ["bf16", "amp"])
@pytest.mark.parametrize("name", sorted(CFG))
def test_mixed_precision_on_cpu(cfg_factory, tiny_weights, tmp_path, name, prec):
    cfg = cfg_factory(config_file=CFG[name], output_dir=tmp_path / prec,
                      opts=["MODEL.PRETRAINED", tiny_weights, "PREC", prec, *FAST, "OPTIM.LR", "0.01"])
    trainer = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)
    with trainer.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    trainer.train()
    rec = trainer.test()
    assert rec["prec"] == prec and 0 <= rec["metrics"]["top1"] <= 100
    images = torch.randn(2, 3, 32, 32)
    low = trainer.predict(images)
    assert torch.isfinite(low).all()
    trainer.cfg.defrost()
    trainer.cfg.PREC = "fp32"
    full = trainer.predict(images)
    assert (low - full).abs().max() <= 0.05 * full.abs().max() + 0.5  # bf16 rounding, not a different model


def test_concurrent_request_for_a_cache_entry_waits_and_reads_it(tmp_path):
    import threading
    import time

    from clip_convpass.utils.locks import blocking_lock

    key, meta = "k" * 24, {"dataset": "D", "split": "test", "n_items": 1}
    feats, labels = [torch.ones(2, 3)], [torch.tensor([0, 1])]
    computed = []
    got = {}

    def other_run():  # holds the entry's lock while it "computes", then writes the entry
        with blocking_lock(tmp_path / f"{key}.lock"):
            started.set()
            time.sleep(0.3)
            torch.save({"features": feats, "labels": labels, "skipped": []}, tmp_path / f"{key}.pt")

    started = threading.Event()
    t = threading.Thread(target=other_run)
    t.start()
    started.wait()
    got["result"] = feature_cache.get_or_compute(
        tmp_path, key, meta, lambda: computed.append(1) or ([torch.zeros(2, 3)], labels, []))
    t.join()
    assert computed == []  # it waited for the other run and read its entry instead of encoding again
    assert torch.equal(got["result"][0][0], feats[0])


def test_subsample_base_and_new_split_the_universe(cfg_factory, synth):
    base = build_dataset(cfg_factory(opts=["DATASET.SUBSAMPLE", "base"]))
    new = build_dataset(cfg_factory(opts=["DATASET.SUBSAMPLE", "new"]))
    assert base.class_ids == synth["class_ids"][:3] and new.class_ids == synth["class_ids"][3:]
    assert {d.label for d in new.test} == {0, 1, 2}
