from pathlib import Path

import pytest

from clip_convpass.data.synthetic import build_synthetic_tree

REPO = Path(__file__).resolve().parents[1]

TINY = REPO / "configs" / "tiny.yaml"
DATASET_CFG = {
    "ImageNet": "imagenet",
    "ImageNetV2": "imagenet_v2",
    "ImageNetSketch": "imagenet_sketch",
    "ImageNetA": "imagenet_a",
    "ImageNetR": "imagenet_r",
}


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """A synthetic tree shared by read-only tests (never modify it; copy it instead)."""
    return build_synthetic_tree(tmp_path_factory.mktemp("synth"))


def make_cfg(synth, output_dir, dataset="ImageNet", config_file=None, opts=(), freeze=True):
    """A config for the tiny model on the synthetic tree."""
    from clip_convpass.compose import get_cfg_default, validate_cfg
    from clip_convpass.config import merge_config_file, merge_opts

    cfg = get_cfg_default()
    merge_config_file(cfg, REPO / "configs" / "datasets" / f"{DATASET_CFG[dataset]}.yaml")
    if config_file:
        merge_config_file(cfg, REPO / config_file)
    merge_config_file(cfg, TINY)
    merge_opts(cfg, ["DATASET.ROOT", synth["root"], "DATASET.CLASS_LIST", synth["class_list"],
                     "OUTPUT_DIR", str(output_dir), "DATASET.SPLIT_DIR", str(Path(output_dir) / "splits"),
                     "DEVICE", "cpu", *opts])
    validate_cfg(cfg)
    if freeze:
        cfg.freeze()
    return cfg


@pytest.fixture
def cfg_factory(synth, tmp_path):
    def factory(dataset="ImageNet", config_file=None, opts=(), output_dir=None, freeze=True):
        return make_cfg(synth, output_dir or tmp_path / "out", dataset, config_file, opts, freeze)

    return factory


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A fixed random tiny CLIP as a local checkpoint: trainers built from it share the backbone exactly."""
    import torch

    from clip_convpass.clip_loader import load_clip

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(load_clip("tiny-ViT-Q", "none").model.state_dict(), path)
    return str(path)
