"""torchrun with 2 CPU processes (gloo): sharded evaluation and DDP training agree with one process.

Judged by the files the runs write (checkpoints, results.json), not by the launcher's exit code.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from clip_convpass.engine.checkpoint import latest_checkpoint, load_checkpoint

pytestmark = pytest.mark.slow
CONVPASS = REPO / "configs/trainers/ConvpassCLIP/vit_b16.yaml"


def base_args(synth, tmp_path, out, dataset="imagenet"):
    return ["--root", synth["root"], "--output-dir", str(out), "--seed", "1",
            "--dataset-config-file", str(REPO / f"configs/datasets/{dataset}.yaml"), "--config-file", str(CONVPASS),
            "MODEL.BACKBONE", "tiny-ViT-Q", "MODEL.PRETRAINED", "none", "INPUT.SIZE", "(32,32)", "PREC", "fp32",
            "DATALOADER.NUM_WORKERS", "0", "DATASET.CLASS_LIST", synth["class_list"],
            "DATASET.SPLIT_DIR", str(tmp_path / "splits"), "DATASET.NUM_SHOTS", "2", "DATASET.VAL_SHOTS", "0",
            # deterministic inputs and no dropout: the two runs see the same samples, split differently
            "INPUT.TRANSFORMS", "['resize', 'center_crop', 'normalize']", "TRAINER.CONVPASS.DROPOUT", "0.0",
            "OPTIM.NAME", "sgd", "OPTIM.LR", "0.5", "OPTIM.MAX_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "12",
            "DATALOADER.TEST.BATCH_SIZE", "5"]


def launch(args, nproc):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, str(REPO / "train.py"), *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(REPO / "train.py"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def metrics(out, dataset):
    path = out / "eval" / dataset / "results.json"
    assert path.is_file(), f"no {path}"
    return json.loads(path.read_text())


def test_ddp_training_and_sharded_evaluation_match_one_process(synth, tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    r1 = launch(base_args(synth, tmp_path, single), 1)
    r2 = launch(base_args(synth, tmp_path, multi), 2)
    a, b = load_checkpoint(latest_checkpoint(single)), load_checkpoint(latest_checkpoint(multi))
    assert a["epoch"] == b["epoch"] == 1, (r1.stderr[-3000:], r2.stderr[-3000:])
    moved = 0
    for k, v in a["state_dict"].items():
        assert torch.allclose(v, b["state_dict"][k], atol=1e-6, rtol=1e-5), k  # averaged DDP gradients
        moved += int(not torch.equal(v, torch.zeros_like(v))) if ".up." in k else 0
    assert moved > 0  # the step really changed the zero-initialised up projections
    assert "processes: 2" in (multi / "log.txt").read_text()
    ra, rb = metrics(single, "ImageNet"), metrics(multi, "ImageNet")
    assert ra["n_images"] == rb["n_images"] == synth["counts"]["val"]  # no padded duplicates
    assert ra["metrics"] == pytest.approx(rb["metrics"], abs=1e-9)
    # evaluation-only of the single-process checkpoint, sharded over 2 processes, on a 200-class set
    for ds_cfg, ds in (("imagenet_a", "ImageNetA"), ("imagenet_sketch", "ImageNetSketch")):
        e1 = launch(["--eval-only", "--model-dir", str(single), *base_args(synth, tmp_path, tmp_path / "e1", ds_cfg)], 1)
        e2 = launch(["--eval-only", "--model-dir", str(single), *base_args(synth, tmp_path, tmp_path / "e2", ds_cfg)], 2)
        m1, m2 = metrics(tmp_path / "e1", ds), metrics(tmp_path / "e2", ds)
        assert m1["n_images"] == m2["n_images"], (e1.stderr[-2000:], e2.stderr[-2000:])
        assert m1["metrics"] == m2["metrics"]
        assert "processes: 2" in (tmp_path / "e2" / "log.txt").read_text()
