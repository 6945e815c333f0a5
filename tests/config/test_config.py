import pytest

from clip_convpass.config import ConfigError, config_hash, setup_cfg


def write(path, text):
    path.write_text(text)
    return path


def test_merge_order_dataset_then_method_then_opts(tmp_path):
    ds = write(tmp_path / "ds.yaml", "DATASET:\n  NAME: ImageNetA\n  NUM_SHOTS: 4\nOPTIM:\n  LR: 0.5\n")
    method = write(tmp_path / "m.yaml", "OPTIM:\n  LR: 0.01\n  MAX_EPOCH: 3\n")
    cfg = setup_cfg(ds, method, ["OPTIM.MAX_EPOCH", "7"])
    assert cfg.DATASET.NAME == "ImageNetA" and cfg.DATASET.NUM_SHOTS == 4  # from the dataset file
    assert cfg.OPTIM.LR == 0.01  # method file beats dataset file
    assert cfg.OPTIM.MAX_EPOCH == 7  # opts beat both


def test_base_inheritance(tmp_path):
    write(tmp_path / "base.yaml", "OPTIM:\n  LR: 0.3\n  MAX_EPOCH: 9\n")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\nOPTIM:\n  MAX_EPOCH: 2\n")
    cfg = setup_cfg(None, child)
    assert (cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH) == (0.3, 2)


def test_unknown_key_in_file_is_named(tmp_path):
    bad = write(tmp_path / "bad.yaml", "OPTIM:\n  LRR: 0.1\n")
    with pytest.raises(ConfigError, match="OPTIM.LRR") as e:
        setup_cfg(None, bad)
    assert "bad.yaml" in str(e.value)


def test_unknown_key_in_opts_is_named():
    with pytest.raises(ConfigError, match="TRAINER.NOPE"):
        setup_cfg(None, None, ["TRAINER.NOPE", "1"])


@pytest.mark.parametrize("opts,match", [
    (["OPTIM.LR", "-0.1"], "OPTIM.LR"),
    (["TRAINER.NAME", "NoSuchTrainer"], "NoSuchTrainer"),
    (["TRAINER.ZSCLIP.TEMPLATES", "ensemble9"], "ensemble9"),
    (["PREC", "fp8"], "PREC"),
    (["OPTIM.NAME", "lion"], "OPTIM.NAME"),
    (["INPUT.TRANSFORMS", "['rotate']"], "rotate"),
])
def test_invalid_values_fail_before_work(opts, match):
    with pytest.raises(ConfigError, match=match):
        setup_cfg(None, None, opts)


def test_seed_zero_is_kept():
    assert setup_cfg(None, None, ["SEED", "0"]).SEED == 0


def test_config_hash_ignores_paths_but_not_settings():
    a = setup_cfg(None, None, ["OUTPUT_DIR", "/a", "DATASET.ROOT", "/x"])
    b = setup_cfg(None, None, ["OUTPUT_DIR", "/b", "DATASET.ROOT", "/y"])
    c = setup_cfg(None, None, ["OPTIM.LR", "0.1"])
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_integer_for_float_key_is_accepted(tmp_path):
    f = write(tmp_path / "c.yaml", "TRAINER:\n  CONVPASS:\n    SCALE: 10\n")
    assert setup_cfg(None, f).TRAINER.CONVPASS.SCALE == 10.0
    assert setup_cfg(None, None, ["TRAINER.CONVPASS.SCALE", "100"]).TRAINER.CONVPASS.SCALE == 100.0
    with pytest.raises(ConfigError, match="TRAINER.CONVPASS.SCALE"):
        setup_cfg(None, None, ["TRAINER.CONVPASS.SCALE", "big"])


def test_cli_flags_may_follow_overrides():
    from clip_convpass.cli.train import build_parser

    args = build_parser().parse_intermixed_args(["OPTIM.LR", "-0.1", "INPUT.SIZE", "(32,32)", "--eval-only", "--seed", "0"])
    assert args.opts == ["OPTIM.LR", "-0.1", "INPUT.SIZE", "(32,32)"] and args.eval_only and args.seed == 0


def test_the_fast_dump_is_yacs_own_text_for_every_shipped_configuration():
    """config_hash and the stored config.yaml of every finished run depend on this text, byte for byte."""
    from yacs.config import CfgNode

    from clip_convpass.config import dataset_config_file
    from clip_convpass.utils.paths import CONFIG_DIR

    files = sorted(f for f in (CONFIG_DIR / "trainers").rglob("*.yaml") if f.name != "metafile.yaml")
    assert len(files) > 20
    for i, f in enumerate(files):
        dataset = ("ImageNet", "OxfordPets", "EuroSAT", "StanfordCars")[i % 4]
        cfg = setup_cfg(dataset_config_file(dataset), str(f), ["OUTPUT_DIR", "/tmp/ünïcode path", "NAME", "x" * 200])
        assert cfg.dump() == CfgNode.dump(cfg), f


def test_a_configuration_changed_in_any_way_dumps_and_hashes_anew():
    """The dump's text is reused only for an equal tree: yacs lets merges and child nodes change a frozen one."""
    from clip_convpass.config import get_cfg_default

    cfg = get_cfg_default()
    cfg.freeze()
    text, digest = cfg.dump(), config_hash(cfg)
    assert cfg.dump() is text  # reused
    cfg.merge_from_list(["SEED", 7])  # yacs does not stop this on a frozen node
    assert "SEED: 7" in cfg.dump() and config_hash(cfg) != digest
    assert config_hash(cfg, exclude=("SEED",)) == config_hash(get_cfg_default(), exclude=("SEED",))
    text, digest = cfg.dump(), config_hash(cfg)
    cfg.OPTIM.defrost()  # a child node, behind the root's back
    cfg.OPTIM.LR = 0.5
    assert "LR: 0.5" in cfg.dump() and config_hash(cfg) != digest
    before = cfg.dump().count("- normalize")
    cfg.INPUT.TRANSFORMS.append("normalize")  # in place, inside a list
    assert cfg.dump().count("- normalize") == before + 1 and config_hash(cfg) == config_hash(cfg.clone())
    assert cfg.dump() == CN_dump(cfg)


def CN_dump(cfg):
    from yacs.config import CfgNode

    return CfgNode.dump(cfg)


def test_a_key_added_since_a_run_was_made_differs_only_when_set_away_from_its_default():
    """Finished cells stay finished after an upgrade adds keys: a new key's default keeps what runs did before."""
    from clip_convpass.engine.checkpoint import config_differences

    cfg = setup_cfg(None, None, ["TRAIN.LABEL_SMOOTHING", "0.1"])
    old = "\n".join(line for line in cfg.dump().splitlines() if "MIXUP" not in line and "LABEL_SMOOTHING" not in line)
    assert config_differences(old, cfg) == [("TRAIN.LABEL_SMOOTHING", None, 0.1)]
    assert config_differences(old, setup_cfg(None, None)) == []
