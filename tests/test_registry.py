"""Tests parametrised over the registries (timm's habit), and a toy method added in one file."""
import json
import os

import pytest
import torch
from conftest import REPO, TINY

from clip_convpass.config import ConfigError, get_cfg_default, setup_cfg
from clip_convpass.data import build_dataset
from clip_convpass.data.synthetic import build_synthetic_tree
from clip_convpass.engine.runner import run
from clip_convpass.registry import DATASET_REGISTRY, TRAINER_REGISTRY, evaluation_domains, method_rows
from clip_convpass.reporting.records import aggregate, collect
from clip_convpass.reporting.table2 import build_table, render

IMAGES = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def row_cfg(row, synth, tiny_weights, out, extra=()):
    opts = ["TRAINER.NAME", row.trainer, "NAME", row.name, *row.opts, "DATASET.ROOT", synth["root"],
            "DATASET.CLASS_LIST", synth["class_list"], "MODEL.PRETRAINED", tiny_weights, "OUTPUT_DIR", str(out),
            "DATASET.SPLIT_DIR", str(out.parent / "splits"), "DEVICE", "cpu", "DATASET.NUM_SHOTS", "2",
            "DATASET.VAL_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
            "TRAINER.TIP.AUGMENT_EPOCH", "1", "OPTIM.MAX_EPOCH_BY_SHOTS", "", *extra]
    return setup_cfg("datasets/imagenet.yaml", row.config or None, opts, override_files=[TINY])


@pytest.mark.slow
@pytest.mark.parametrize("row", method_rows(lambda r: r.benchmark == "coop"), ids=lambda r: r.name)
def test_every_registered_row_trains_checkpoints_reloads_evaluates_and_reports(row, synth, tiny_weights, tmp_path):
    cfg = row_cfg(row, synth, tiny_weights, tmp_path / "run", ["DATALOADER.NUM_WORKERS", "2"])
    records = run(cfg, eval_datasets=["ImageNetA"])
    assert [r["dataset"] for r in records] == ["ImageNet", "ImageNetA"]
    trainer_cls = TRAINER_REGISTRY.get(row.trainer)
    trained = trainer_cls(cfg)  # a new process would do this: weights come from the run directory
    trained.load_from_model_dir(tmp_path / "run")
    fresh = trainer_cls(row_cfg(row, synth, tiny_weights, tmp_path / "fresh"))
    stateful = bool(trained.trainable_named_parameters() or trained.extra_state())
    if stateful:
        assert list((tmp_path / "run" / "checkpoints").glob("model-epoch*.pt"))
        # the reloaded model is the trained one, not the freshly built one
        assert not torch.equal(trained.predict(IMAGES), fresh.predict(IMAGES))
        again = trainer_cls(row_cfg(row, synth, tiny_weights, tmp_path / "again"))
        again.load_from_model_dir(tmp_path / "run")
        assert torch.equal(again.predict(IMAGES), trained.predict(IMAGES))
    else:
        assert torch.equal(trained.predict(IMAGES), fresh.predict(IMAGES))
    # reloaded weights reproduce the metrics written by the run
    rec = trained.test()
    assert rec["metrics"] == records[0]["metrics"]
    # the report reads the run back under the row's name and label
    table = build_table(aggregate(collect([tmp_path / "run"])))
    assert [r["method"] for r in table] == [row.name]
    assert table[0]["cells"]["ImageNet"] == (records[0]["metrics"]["top1"], 0.0, 1)
    assert row.display in render(table)


def test_every_method_config_node_is_in_the_defaults_and_the_engine_holds_none():
    from clip_convpass.config import engine_defaults

    assert list(engine_defaults().TRAINER.keys()) == ["NAME"]
    cfg = get_cfg_default()
    for cls in TRAINER_REGISTRY.classes():
        if cls.CONFIG_NODE:
            assert cls.CONFIG_NODE in cfg.TRAINER, cls.NAME
    assert {r.trainer for r in method_rows()} <= set(TRAINER_REGISTRY.names())


def synthetic_root_for(source, synth, tmp_path_factory):
    if source == "ImageNet":
        return synth
    return build_synthetic_tree(tmp_path_factory.mktemp(source), source=source)


@pytest.mark.parametrize("name", DATASET_REGISTRY.names())
def test_every_registered_dataset_reads_its_synthetic_tree(name, synth, tmp_path_factory, tmp_path):
    cls = DATASET_REGISTRY.get(name)
    source = cls.SOURCE or name
    assert name in evaluation_domains(source)
    tree = synthetic_root_for(source, synth, tmp_path_factory)
    cfg = setup_cfg(None, None, ["DATASET.NAME", name, "DATASET.ROOT", tree["root"], "DATASET.CLASS_LIST",
                                 tree["class_list"], "DATASET.SPLIT_DIR", str(tmp_path), "DATASET.NUM_SHOTS", "2"])
    ds = build_dataset(cfg)
    assert len(ds.test) == tree["test_counts"][name] > 0
    assert sorted({d.label for d in ds.test}) == list(range(ds.num_classes))
    assert len(ds.label_columns) == ds.num_classes and max(ds.label_columns) < len(ds.universe)
    for d in ds.test:  # labels name the classes of the universe columns they are scored on
        assert d.classname == ds.universe.classnames[ds.label_columns[d.label]]
    if cls.HAS_TRAIN and cls.SHOT_SOURCE == "sampled":
        assert len(ds.train_x) == 2 * ds.num_classes and len(ds.val) == 4 * ds.num_classes
    elif cls.HAS_TRAIN:  # published lists: what they name, labels in range
        assert ds.train_x and all(os.path.isfile(d.impath) and 0 <= d.label < ds.num_classes for d in ds.train_x)


def test_a_toy_method_in_one_module_reaches_config_grid_and_report(toy_method, synth, tiny_weights, tmp_path):
    from clip_convpass.experiments.grid import run_grid, table2_rows

    assert setup_cfg(None, None, ["TRAINER.NAME", "ToyMethod", "TRAINER.TOY.SCALE", "3"]).TRAINER.TOY.SCALE == 3.0
    with pytest.raises(ConfigError, match="TRAINER.TOY.SCALE"):
        setup_cfg(None, None, ["TRAINER.TOY.SCALE", "-1"])
    toy = next(r for r in table2_rows() if r.name == "Toy")
    assert toy.trainer == "ToyMethod"
    opts = ["MODEL.BACKBONE", "tiny-ViT-Q", "MODEL.PRETRAINED", tiny_weights, "INPUT.SIZE", "(32,32)", "PREC", "fp32",
            "DATALOADER.NUM_WORKERS", "0", "DATASET.CLASS_LIST", synth["class_list"], "DATASET.NUM_SHOTS", "2",
            "DATASET.SPLIT_DIR", str(tmp_path / "splits"), "OPTIM.MAX_EPOCH", "1", "DEVICE", "cpu"]
    (cell,) = run_grid([toy], [1], synth["root"], tmp_path / "grid", opts, domains=["ImageNet", "ImageNetR"])
    assert cell.parts[-4:] == ("ImageNet", "ToyMethod", "Toy_2shots", "seed1")
    rec = json.loads((cell / "eval" / "ImageNetR" / "results.json").read_text())
    assert rec["name"] == "Toy" and rec["trainer"] == "ToyMethod" and rec["epochs_trained"] == 1
    table = build_table(aggregate(collect([tmp_path / "grid"])), paper=True)
    assert [r["method"] for r in table] == ["Toy"] and table[0]["paper"]["ImageNet"] == 50.0
    assert "Toy method" in render(table, paper=True)


def test_no_list_of_methods_or_datasets_outside_the_registry():
    """The library's modules name no method or dataset except in the plugin that defines it."""
    library = REPO / "clip_convpass"
    plugin_dirs = {library / "trainers", library / "datasets", library / "configs"}
    offenders = []
    for path in library.rglob("*.py"):
        if any(d in path.parents for d in plugin_dirs):
            continue
        text = path.read_text()
        for name in ["LinearProbeCLIP", "CoCoOp", "TipAdapterF", "ImageNetSketch", "ImageNetV2", "ImageNetA"]:
            if f'"{name}"' in text:
                offenders.append((path.name, name))
    assert not offenders
