"""A newcomer's first hour: one console command, several config files, the demo's data for any command,
fast offline failures, honest progress, grid cells tied to their configuration, report plots, scalar logs."""
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import pytest
from conftest import REPO

from clip_convpass.config import ConfigError
from clip_convpass.models.clip_loader import MissingWeightsError, load_clip

matplotlib.use("Agg")


def tiny_opts(tmp_path):
    return ["MODEL.BACKBONE", "tiny-ViT-Q", "MODEL.PRETRAINED", "none", "INPUT.SIZE", "(32,32)", "PREC", "fp32",
            "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "1", "DATASET.SPLIT_DIR", str(tmp_path / "splits")]


def test_console_command_lists_the_registries_and_works_outside_the_checkout(tmp_path):
    script = Path(sys.executable).parent / "clip-convpass"
    assert script.is_file(), "pip install -e . creates the clip-convpass console script ([project.scripts])"
    out = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    from clip_convpass.adapters.base import presets
    from clip_convpass.registry import DATASET_REGISTRY, TRAINER_REGISTRY

    for name in [*TRAINER_REGISTRY.names(), *DATASET_REGISTRY.names(), *presets()]:
        assert name in out
    assert "examples:" in out and "hf-hub:" in out
    pretrained = subprocess.run([str(script), "--list-pretrained", "ViT-B-16-quickgelu"], cwd=tmp_path,
                                capture_output=True, text=True, check=True).stdout
    assert "ViT-B-16-quickgelu openai" in pretrained.splitlines()
    sub = subprocess.run([str(script), "params", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert sub.returncode == 0 and "clip-convpass params" in sub.stdout
    bad = subprocess.run([str(script), "trian"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command 'trian'" in bad.stderr


def test_any_command_runs_on_the_demo_data_with_several_config_files(synth, tmp_path):
    """The README recipe: the demo's tree (its class list found by itself) + demo.yaml as a second config file."""
    from clip_convpass.cli.train import main

    out = tmp_path / "try"
    code = main(["--root", synth["root"], "--dataset-config-file", "datasets/imagenet.yaml",
                 "--config-file", "trainers/ConvpassCLIP/vit_b16.yaml", "--config-file", "demo.yaml",
                 "--output-dir", str(out), "MODEL.PRETRAINED", "none", "OPTIM.MAX_EPOCH", "1",
                 "DATASET.SPLIT_DIR", str(tmp_path / "splits")])
    assert code == 0
    rec = json.loads((out / "eval" / "ImageNet" / "results.json").read_text())
    assert rec["n_classes"] == len(synth["class_ids"]) and rec["shots"] == 8  # demo.yaml merged after the method's
    assert rec["backbone"] == "tiny-ViT-Q"
    history = list(csv.DictReader((out / "train_history.csv").open()))
    assert [int(h["epoch"]) for h in history] == [1] and "loss" in history[0] and "lr" in history[0]
    assert "run eta" in (out / "log.txt").read_text()  # the run-level ETA, not only the epoch's


def test_scripts_take_override_files(synth, tmp_path):
    env = dict(os.environ, DATA=synth["root"], OUTPUT=str(tmp_path / "out"), PYTHON=sys.executable,
               OVERRIDES=str(REPO / "configs" / "demo.yaml"))
    r = subprocess.run(["bash", str(REPO / "scripts" / "train.sh"), "ZeroShotCLIP", "vit_b16", "imagenet", "8", "1",
                        "MODEL.PRETRAINED", "none"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (result,) = (tmp_path / "out").rglob("results.json")
    assert json.loads(result.read_text())["backbone"] == "tiny-ViT-Q"


def test_offline_weights_fail_at_once_with_the_download_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(MissingWeightsError, match="not downloaded and cannot be .HF_HUB_OFFLINE is set.*MODEL.PRETRAINED"):
        load_clip("ViT-B-16-quickgelu", "openai", cache_dir=str(tmp_path))
    with pytest.raises(MissingWeightsError, match="needs the Hugging Face Hub.*MODEL.CONFIG_FILE"):
        load_clip("hf-hub:timm/vit_base_patch16_clip_224.openai", "hub", cache_dir=str(tmp_path))
    assert time.time() - t0 < 10  # no retries
    with pytest.raises(ConfigError, match="weights come from the Hub repo"):
        load_clip("hf-hub:org/repo", "/some/file.pt")


def test_custom_model_config_json_from_the_command_line(cfg_factory, tmp_path):
    import torch

    from clip_convpass.models.clip_loader import MODEL_CONFIG_DIR
    from clip_convpass.registry import TRAINER_REGISTRY

    custom = tmp_path / "my-net.json"
    shutil.copy(MODEL_CONFIG_DIR / "tiny-ViT-Q.json", custom)
    images = torch.randn(2, 3, 32, 32)
    ours = TRAINER_REGISTRY.get("ZeroShotCLIP")(cfg_factory(opts=["MODEL.BACKBONE", "my-net", "MODEL.CONFIG_FILE",
                                                                  str(custom)], output_dir=tmp_path / "a"))
    ref = TRAINER_REGISTRY.get("ZeroShotCLIP")(cfg_factory(output_dir=tmp_path / "b"))
    assert torch.equal(ours.predict(images), ref.predict(images))  # same architecture, same seed
    custom.write_text("{}")
    with pytest.raises(ConfigError, match="embed_dim, vision_cfg and text_cfg"):
        TRAINER_REGISTRY.get("ZeroShotCLIP")(cfg_factory(opts=["MODEL.BACKBONE", "my-net2", "MODEL.CONFIG_FILE",
                                                               str(custom)], output_dir=tmp_path / "c"))


def test_grid_refuses_stored_results_of_another_configuration(synth, tmp_path):
    from clip_convpass.experiments.grid import run_grid
    from clip_convpass.registry import find_row

    rows = [find_row("ZeroShotCLIP")]
    opts = [*tiny_opts(tmp_path), "DATASET.CLASS_LIST", synth["class_list"], "DATASET.NUM_SHOTS", "2"]
    run_grid(rows, [1], synth["root"], tmp_path / "grid", opts, domains=["ImageNet"])
    with pytest.raises(ConfigError, match=r"another configuration \(TRAINER.ZSCLIP.TEMPLATES: 'dataset' then, "
                                          r"'ensemble7' now\).*--force"):
        run_grid(rows, [1], synth["root"], tmp_path / "grid", [*opts, "TRAINER.ZSCLIP.TEMPLATES", "ensemble7"],
                 domains=["ImageNet"])
    (d,) = run_grid(rows, [1], synth["root"], tmp_path / "grid", [*opts, "TRAINER.ZSCLIP.TEMPLATES", "ensemble7"],
                    domains=["ImageNet"], force=True)
    assert json.loads((d / "eval" / "ImageNet" / "results.json").read_text())["prompts"]["templates"] == "ensemble7"


def test_quiet_console_keeps_the_full_log_in_the_run_directory(tmp_path, capsys):
    from clip_convpass.utils.logging import logger, set_console_level, setup_logger

    try:
        set_console_level(logging.WARNING)
        setup_logger(tmp_path)
        logger.info("epoch detail")
        logger.warning("something to see")
        out = capsys.readouterr().out
        assert "epoch detail" not in out and "something to see" in out
        assert "epoch detail" in (tmp_path / "log.txt").read_text()
    finally:
        set_console_level(logging.INFO)
        setup_logger(None)


def test_tensorboard_option_fails_early_without_the_package():
    import importlib.util

    from clip_convpass.config import setup_cfg

    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            setup_cfg(None, None, ["TRAIN.TENSORBOARD", "True"])
    else:
        assert setup_cfg(None, None, ["TRAIN.TENSORBOARD", "True"]).TRAIN.TENSORBOARD


def table_cell(m, s, n=2):
    return (m, s, n)


def test_report_plot_keeps_zero_bars_clips_error_bars_and_draws_paper_numbers(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from clip_convpass.reporting.table2 import build_table, plot

    rows = {"ConvpassCLIP": {"ImageNet": table_cell(0.0, 5.0), "ImageNetV2": table_cell(2.0, 6.0),
                             "ImageNetSketch": table_cell(3.0, 1.0), "ImageNetA": table_cell(4.0, 1.0),
                             "ImageNetR": table_cell(5.0, 1.0)}}
    table = build_table(rows, paper=True)
    figs = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figs.append(self))
    plot(table, tmp_path / "p.png", metric="macro_f1", paper=True)
    (ax,) = figs[0].axes
    assert ax.get_ylabel() == "macro-F1 (%)"
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[-1] == "Target avg"
    assert any(list(line.get_ydata()) == [0, 0] for line in ax.lines)  # the 0 % bar stays visible
    lows = [seg[:, 1].min() for coll in ax.collections if hasattr(coll, "get_segments") for seg in coll.get_segments()]
    assert lows and min(lows) >= 0  # error bars never go below 0
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Convpass_CLIP (n=2)" in legend and "paper" in legend
    paper_points = [tuple(p) for coll in ax.collections if coll.get_label() == "paper" for p in coll.get_offsets()]
    assert any(abs(y - 74.23) < 1e-6 for _, y in paper_points)  # the paper's ImageNet number


def test_paper_comparison_warns_when_the_setting_differs(tmp_path, capsys):
    from clip_convpass.cli.report import main
    from clip_convpass.reporting.table2 import paper_setting_warnings

    same = {"train_dataset": "ImageNet", "shots": 16, "backbone": "ViT-B-16-quickgelu", "pretrained": "openai"}
    assert paper_setting_warnings([same]) == []
    warnings = paper_setting_warnings([{**same, "shots": 8, "backbone": "tiny-ViT-Q"}])
    assert any("shots=8" in w for w in warnings) and any("tiny-ViT-Q" in w for w in warnings)
    rec = {**same, "shots": 8, "name": "ZeroShotCLIP", "trainer": "ZeroShotCLIP", "dataset": "ImageNet",
           "seed": 1, "split": "test", "metrics": {"top1": 50.0}, "experiment": "e"}
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text(json.dumps(rec))
    assert main([str(tmp_path), "--paper"]) == 0
    captured = capsys.readouterr()
    assert "shots=8" in captured.err and "not like for like" in captured.out


def test_sweep_takes_several_config_files(synth, tmp_path):
    from clip_convpass.experiments.sweep import main

    code = main(["--root", synth["root"], "--output", str(tmp_path / "sweep"), "--dataset-config-file",
                 "datasets/imagenet.yaml", "--config-file", "trainers/ConvpassCLIP/vit_b16.yaml", "--config-file",
                 "demo.yaml", "--grid=TRAINER.CONVPASS.SCALE=1,10", "MODEL.PRETRAINED", "none",
                 "OPTIM.MAX_EPOCH", "1", "DATASET.SPLIT_DIR", str(tmp_path / "splits")])
    assert code == 0
    summary = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert len(summary["points"]) == 2 and "best" in summary
    configs = list((tmp_path / "sweep").rglob("config.yaml"))
    assert len(configs) == 2 and all("tiny-ViT-Q" in c.read_text() for c in configs)  # demo.yaml merged last
