import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

from clip_convpass.data.synthetic import build_synthetic_tree

REPO = Path(__file__).resolve().parents[1]

TINY = REPO / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """A synthetic tree shared by read-only tests (never modify it; copy it instead)."""
    return build_synthetic_tree(tmp_path_factory.mktemp("synth"))


def make_cfg(synth, output_dir, dataset="ImageNet", config_file=None, opts=(), freeze=True):
    """A config for the tiny model on the synthetic tree."""
    from clip_convpass.config import dataset_config_file, get_cfg_default, merge_config_file, merge_opts, validate_cfg

    cfg = get_cfg_default()
    merge_config_file(cfg, dataset_config_file(dataset))
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

    from clip_convpass.models.clip_loader import load_clip

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(load_clip("tiny-ViT-Q", "none").model.state_dict(), path)
    return str(path)


TOY_MODULE = textwrap.dedent('''
    """A toy method in one file: a linear head on the frozen image encoder, trained by SGD."""
    import torch.nn.functional as F
    from torch import nn
    from yacs.config import CfgNode as CN

    from clip_convpass.models.clip_loader import load_clip_from_cfg
    from clip_convpass.config import check
    from clip_convpass.registry import TRAINER_REGISTRY
    from clip_convpass.trainer import TrainerBase


    class ToyModel(nn.Module):
        def __init__(self, visual, n_classes, scale):
            super().__init__()
            self.visual, self.scale = visual, scale
            self.head = nn.Linear(visual.output_dim, n_classes)

        def forward(self, images):
            return self.scale * self.head(F.normalize(self.visual(images), dim=-1))


    @TRAINER_REGISTRY.register
    class ToyMethod(TrainerBase):
        NAME = "ToyMethod"
        CONFIG_NODE = "TOY"
        METAFILE = __file__.replace("_plugin.py", "_metafile.yaml")  # its rows (outside the package's configs/)

        @classmethod
        def config_node(cls):
            c = CN()
            c.SCALE = 10.0  # logit scale of the toy head
            return c

        @classmethod
        def check_config(cls, cfg):
            check(cfg.TRAINER.TOY.SCALE > 0, f"TRAINER.TOY.SCALE must be > 0, got {cfg.TRAINER.TOY.SCALE}")

        def build_model(self):
            visual = load_clip_from_cfg(self.cfg, self.device).model.visual.requires_grad_(False)
            self.model = ToyModel(visual, len(self.classnames), self.cfg.TRAINER.TOY.SCALE)

        def set_model_mode(self, train):
            self.model.eval()

        def model_inference(self, images):
            return self.model(images)
''')


TOY_METAFILE = textwrap.dedent('''
    rows:
      - name: Toy
        label: Toy method
        order: 65
        opts: [OPTIM.LR, "0.05"]
        paper: {ImageNet: 50.0}
        demo_opts: [OPTIM.MAX_EPOCH, "2"]
''')


@pytest.fixture
def toy_method(tmp_path):
    """Registers ToyMethod from a temporary module (and its metafile), and removes it afterwards."""
    path = tmp_path / "toy_method_plugin.py"
    path.write_text(TOY_MODULE)
    (tmp_path / "toy_method_metafile.yaml").write_text(TOY_METAFILE)
    spec = importlib.util.spec_from_file_location("toy_method_plugin", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_method_plugin"] = module
    spec.loader.exec_module(module)
    yield module
    from clip_convpass.registry import TRAINER_REGISTRY

    TRAINER_REGISTRY.unregister("ToyMethod")
    sys.modules.pop("toy_method_plugin", None)
