"""The package's shape: plugins found by location, the "How to add" recipes of docs/ARCHITECTURE.md each
done from a temporary module (a method is in test_registry.py), old module names, loggers."""
import ast
import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO, TINY

from clip_convpass.config import ConfigError, setup_cfg
from clip_convpass.legacy import LEGACY_MODULES
from clip_convpass.registry import (
    ADAPTER_REGISTRY,
    DATASET_REGISTRY,
    REPORT_VIEW_REGISTRY,
    SYNTHETIC_TREE_REGISTRY,
    TRAINER_REGISTRY,
)


def load_module(tmp_path, name, source):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_a_fresh_process_finds_every_plugin_and_old_module_names_still_run(tmp_path):
    """Registries import their locations on first use (no import list to keep); `python -m clip_convpass.<old>`
    runs the moved module (here its --help) and `import clip_convpass.<old>` gives the moved module."""
    script = textwrap.dedent(f"""
        import json, runpy, sys
        from clip_convpass.registry import ADAPTER_REGISTRY, DATASET_REGISTRY, REPORT_VIEW_REGISTRY, TRAINER_REGISTRY
        names = [r.names() for r in (ADAPTER_REGISTRY, DATASET_REGISTRY, REPORT_VIEW_REGISTRY, TRAINER_REGISTRY)]
        ran = []
        for old in {sorted(n for n, (_, main) in LEGACY_MODULES.items() if n in ("report", "rundir", "grid", "params"))!r}:
            sys.argv = [old, "--help"]
            try:
                runpy.run_module("clip_convpass." + old, run_name="__main__", alter_sys=True)
            except SystemExit as e:
                ran.append((old, e.code))
        import clip_convpass.report, clip_convpass.reporting, clip_convpass.compose, clip_convpass.config.compose
        same = [clip_convpass.report.collect is clip_convpass.reporting.collect,
                sys.modules["clip_convpass.compose"] is clip_convpass.config.compose,
                clip_convpass.config.compose.__spec__.name == "clip_convpass.config.compose"]
        print(json.dumps([names, ran, same]))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    names, ran, same = json.loads(out.stdout.splitlines()[-1])
    assert names == [r.names() for r in (ADAPTER_REGISTRY, DATASET_REGISTRY, REPORT_VIEW_REGISTRY, TRAINER_REGISTRY)]
    assert ran == [[old, 0] for old in ("grid", "params", "report", "rundir")]
    assert same == [True, True, True]


def test_every_legacy_name_points_at_a_module():
    for old, (target, main) in LEGACY_MODULES.items():
        for name in filter(None, (target, main)):
            assert importlib.util.find_spec(f"clip_convpass.{name}") is not None, (old, name)


@pytest.mark.parametrize("name", DATASET_REGISTRY.names())
def test_synthetic_trees_live_outside_the_dataset_classes(name):
    """Production dataset classes hold no synthetic-data code; each dataset registers its tree beside it."""
    cls = DATASET_REGISTRY.get(name)
    assert not [a for klass in cls.__mro__ for a in vars(klass) if a.lower().startswith("synthetic")]
    assert SYNTHETIC_TREE_REGISTRY.get(name).dataset() is cls


def test_an_unknown_dataset_name_fails_the_configuration_check():
    with pytest.raises(ConfigError, match="Unknown DATASET.NAME 'ImageNet22k'; registered:"):
        setup_cfg(None, None, ["DATASET.NAME", "ImageNet22k"])


def test_modules_log_under_their_own_name():
    """Every module logs to getLogger(__name__), below the package logger that setup_logger equips."""
    offenders = []
    for path in (REPO / "clip_convpass").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "getLogger" and node.args:
                arg = node.args[0]
                if not (isinstance(arg, ast.Name) and arg.id in ("__name__", "LOGGER_NAME")):
                    offenders.append(path.name)
    assert not offenders


TOY_ADAPTER = """
    '''A toy adapter in one file: a learnable gain on the MLP output (zero-initialised), with an option
    of its own that PETLCLIP had no key for.'''
    import torch
    from torch import nn

    from clip_convpass.adapters.base import AdapterKind, AdapterModule, Injection, adapted_blocks
    from clip_convpass.registry import ADAPTER_REGISTRY


    class Gain(AdapterModule):
        def __init__(self, dim):
            super().__init__()
            self.gain = nn.Parameter(torch.zeros(dim))

        def forward(self, m):
            return m * self.gain


    @ADAPTER_REGISTRY.register
    class ToyGain(AdapterKind):
        NAME = "toy_gain"
        OPTIONS = {"gain_scale": 1.0}
        PRESETS = {"toy_gain": {}}

        @classmethod
        def check(cls, options):
            if options["gain_scale"] <= 0:
                raise ValueError(f"GAIN_SCALE must be > 0, got {options['gain_scale']}")

        @classmethod
        def inject(cls, visual, options, fast_attention=True):
            modules = []
            for block in adapted_blocks(visual, fast_attention):
                module = Gain(visual.transformer.width)
                block.add("mlp", "sequential", "toy_gain", module, options["gain_scale"])
                modules.append(module)
            return Injection(modules=modules)
"""


@pytest.fixture
def toy_adapter(tmp_path):
    module = load_module(tmp_path, "toy_adapter_plugin", TOY_ADAPTER)
    yield module
    ADAPTER_REGISTRY.unregister("toy_gain")
    sys.modules.pop("toy_adapter_plugin", None)


def test_an_adapter_in_one_module_is_trained_by_petl_with_its_own_option(toy_adapter, synth, tiny_weights, tmp_path):
    from clip_convpass.cli.params import adapter_param_counts
    from clip_convpass.engine.runner import run

    assert adapter_param_counts("tiny-ViT-Q")["toy_gain"] == 2 * 48  # two blocks of width 48
    opts = ["TRAINER.PETL.ADAPTER", "toy_gain", "TRAINER.PETL.GAIN_SCALE", "2", "DATASET.ROOT", synth["root"],
            "DATASET.CLASS_LIST", synth["class_list"], "MODEL.PRETRAINED", tiny_weights, "DATASET.NUM_SHOTS", "2",
            "DATASET.SPLIT_DIR", str(tmp_path / "splits"), "OPTIM.MAX_EPOCH", "1", "OPTIM.LR", "0.1",
            "DATALOADER.NUM_WORKERS", "0", "DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path / "run")]
    cfg = setup_cfg("datasets/imagenet.yaml", "trainers/PETLCLIP/adaptformer.yaml", opts, override_files=[TINY])
    trainer = TRAINER_REGISTRY.get("PETLCLIP")(cfg)
    zero_shot = TRAINER_REGISTRY.get("ZeroShotCLIP")(cfg)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(trainer.predict(images), zero_shot.predict(images))  # zero gain: the frozen model
    assert {n.split(".")[-1] for n, _ in trainer.trainable_named_parameters()} >= {"gain"}
    with pytest.raises(ConfigError, match="GAIN_SCALE must be > 0"):
        setup_cfg("datasets/imagenet.yaml", "trainers/PETLCLIP/adaptformer.yaml",
                  [*opts, "TRAINER.PETL.GAIN_SCALE", "-1"], override_files=[TINY])
    (rec,) = run(cfg)
    assert rec["trainer"] == "PETLCLIP" and rec["epochs_trained"] == 1


TOY_DATASET = """
    '''A toy dataset in one file: <ROOT>/toyfolders/{train,test}/<class>/*.png.'''
    from clip_convpass.data.base import ClassUniverse, DatasetBase
    from clip_convpass.registry import DATASET_REGISTRY


    @DATASET_REGISTRY.register
    class ToyFolders(DatasetBase):
        NAME = "ToyFolders"
        LAYOUTS = ("toyfolders",)
        LAYOUT_HELP = "toyfolders/{train,test}/<class>/*.png"
        HAS_TRAIN = True

        def class_universe(self):
            names = sorted(p.name for p in (self.dataset_dir / "train").iterdir())
            return ClassUniverse(names, {n: n for n in names}, "folder names")

        def _read_test(self):
            folders = self.check_class_folders(self.dataset_dir / "test", self.class_ids, self.class_ids)
            return self._datums_from_class_folders(folders)

        def _read_train_per_class(self):
            folders = self.check_class_folders(self.dataset_dir / "train", self.class_ids, self.class_ids)
            return {i: [str(p) for p in sorted(folders[c].iterdir())] for i, c in enumerate(self.class_ids)}
"""


def test_a_dataset_in_one_module_and_its_yaml_trains_and_evaluates(tmp_path, tiny_weights):
    from PIL import Image

    from clip_convpass.engine.runner import run

    load_module(tmp_path, "toy_dataset_plugin", TOY_DATASET)
    try:
        root = tmp_path / "data"
        for split, n in (("train", 4), ("test", 2)):
            for c, colour in (("cat", (200, 0, 0)), ("dog", (0, 0, 200))):
                folder = root / "toyfolders" / split / c
                folder.mkdir(parents=True)
                for i in range(n):
                    Image.new("RGB", (32, 32), tuple(max(0, v - 9 * i) for v in colour)).save(folder / f"{i}.png")
        yaml = tmp_path / "toy_folders.yaml"
        yaml.write_text("DATASET:\n  NAME: ToyFolders\n  NUM_SHOTS: 2\n  VAL_SHOTS: 1\n")
        cfg = setup_cfg(yaml, "trainers/CoOp/vit_b16_ep50.yaml",
                        ["DATASET.ROOT", str(root), "MODEL.PRETRAINED", tiny_weights, "OPTIM.MAX_EPOCH", "1",
                         "DATALOADER.NUM_WORKERS", "0", "DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path / "run")],
                        override_files=[TINY])
        (rec,) = run(cfg)
        assert rec["dataset"] == "ToyFolders" and rec["n_images"] == 4 and rec["n_classes"] == 2
    finally:
        DATASET_REGISTRY.unregister("ToyFolders")
        sys.modules.pop("toy_dataset_plugin", None)


def test_a_backbone_is_a_model_config_json(tmp_path):
    from clip_convpass.models.clip_loader import load_clip_from_cfg

    config = json.loads((REPO / "clip_convpass" / "model_configs" / "tiny-ViT-Q.json").read_text())
    config["vision_cfg"]["layers"] = 3
    path = tmp_path / "tiny-ViT-Q3.json"
    path.write_text(json.dumps(config))
    cfg = setup_cfg(None, None, ["MODEL.BACKBONE", "tiny-ViT-Q3", "MODEL.CONFIG_FILE", str(path), "MODEL.PRETRAINED",
                                 "none", "INPUT.SIZE", "(32,32)", "DEVICE", "cpu"])
    model = load_clip_from_cfg(cfg, torch.device("cpu")).model
    assert len(model.visual.transformer.resblocks) == 3


TOY_VIEW = """
    '''A toy report view in one file: the number of results per row.'''
    from collections import Counter

    from clip_convpass.registry import REPORT_VIEW_REGISTRY
    from clip_convpass.reporting.base import ReportView
    from clip_convpass.reporting.format import render_rows


    @REPORT_VIEW_REGISTRY.register
    class CountView(ReportView):
        NAME = "toy_count"
        HELP = "results per row"

        @classmethod
        def build(cls, records, metric, notes, methods=None):
            return Counter(r.get("name") or r["trainer"] for r in records)

        @classmethod
        def render(cls, data, fmt, metric, notes):
            return render_rows(["Row", "Results"], [[k, str(v)] for k, v in sorted(data.items())], fmt, notes)
"""


def test_a_report_view_in_one_module_is_a_report_flag(tmp_path, capsys):
    from clip_convpass.cli.report import main

    load_module(tmp_path, "toy_view_plugin", TOY_VIEW)
    try:
        for seed in (1, 2):
            rec = {"dataset": "ImageNet", "metrics": {"top1": 50.0}, "name": "Toy", "trainer": "ToyMethod", "seed": seed}
            (tmp_path / "runs" / f"s{seed}").mkdir(parents=True)
            (tmp_path / "runs" / f"s{seed}" / "results.json").write_text(json.dumps(rec))
        assert main([str(tmp_path / "runs"), "--toy-count", "--format", "csv"]) == 0
        assert capsys.readouterr().out.splitlines()[:2] == ["Row,Results", "Toy,2"]
    finally:
        REPORT_VIEW_REGISTRY.unregister("toy_count")
        sys.modules.pop("toy_view_plugin", None)


def test_the_readme_python_api_is_the_package_top_level():
    import clip_convpass
    from clip_convpass.config import setup_cfg
    from clip_convpass.engine.runner import build_trainer, run

    assert (clip_convpass.setup_cfg, clip_convpass.run, clip_convpass.build_trainer) == (setup_cfg, run, build_trainer)
    from clip_convpass.engine import run as engine_run

    assert engine_run is run  # the old `from clip_convpass.engine import run` still gives the function
