import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO
from PIL import Image

from clip_convpass.data import ImageLoadError, load_rgb
from clip_convpass.data.check import check_dataset
from clip_convpass.engine.checkpoint import CheckpointMismatchError, latest_checkpoint, load_checkpoint
from clip_convpass.engine.runner import run
from clip_convpass.engine.trainer import NonFiniteLossError
from clip_convpass.registry import TRAINER_REGISTRY
from clip_convpass.utils.io import atomic_torch_save
from clip_convpass.utils.locks import LockedError, exclusive_lock

CONVPASS = "configs/trainers/ConvpassCLIP/vit_b16.yaml"


# ---- images ---------------------------------------------------------------------------------
def test_image_modes_load_as_rgb(tmp_path):
    red = Image.new("RGB", (20, 16), (255, 0, 0))
    red.convert("CMYK").save(tmp_path / "cmyk.jpg", "JPEG")
    red.convert("L").save(tmp_path / "gray.JPEG", "JPEG")
    red.convert("P").save(tmp_path / "palette.png")
    rgba = Image.new("RGBA", (20, 16), (0, 0, 255, 0))  # fully transparent blue
    rgba.save(tmp_path / "rgba.png")
    red.save(tmp_path / "png_inside.JPEG", "PNG")  # PNG data behind a .JPEG name
    with Image.open(tmp_path / "cmyk.jpg") as im:
        assert im.mode == "CMYK"  # a real CMYK JPEG
    for name in ("cmyk.jpg", "gray.JPEG", "palette.png", "rgba.png", "png_inside.JPEG"):
        img = load_rgb(str(tmp_path / name))
        assert img.mode == "RGB" and img.size == (20, 16), name
    r, g, b = load_rgb(str(tmp_path / "cmyk.jpg")).getpixel((10, 8))
    assert r > 200 and g < 60 and b < 60
    assert load_rgb(str(tmp_path / "rgba.png")).getpixel((0, 0)) == (255, 255, 255)  # composited on white
    assert load_rgb(str(tmp_path / "png_inside.JPEG")).getpixel((0, 0)) == (255, 0, 0)


def write_bad_images(folder: Path):
    good = folder / next(p for p in os.listdir(folder))
    data = good.read_bytes()
    (folder / "truncated.JPEG").write_bytes(data[: len(data) // 2])
    (folder / "empty.JPEG").write_bytes(b"")
    (folder / "text.JPEG").write_text("not an image")
    return ["truncated.JPEG", "empty.JPEG", "text.JPEG"]


def test_bad_images_raise_naming_the_file(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (40, 40), (10, 200, 30)).save(folder / "good.JPEG", quality=95)
    for name in write_bad_images(folder):
        with pytest.raises(ImageLoadError, match=name):
            load_rgb(str(folder / name))


@pytest.fixture
def bad_tree(synth, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth["root"], root)
    names = write_bad_images(root / "imagenet" / "images" / "val" / synth["class_ids"][0])
    return root, names


def test_evaluation_fails_or_skips_and_counts(bad_tree, cfg_factory, synth):
    root, names = bad_tree
    opts = ["DATASET.ROOT", str(root)]
    with pytest.raises(ImageLoadError, match="truncated.JPEG|empty.JPEG|text.JPEG"):
        run(cfg_factory(opts=opts), eval_only=True)
    rec = run(cfg_factory(opts=[*opts, "DATASET.SKIP_BAD_IMAGES", "True"]), eval_only=True)[0]
    assert rec["n_skipped"] == 3 and rec["n_images"] == synth["counts"]["val"]
    assert sorted(Path(p).name for p in rec["skipped_files"]) == sorted(names)
    log = (Path(cfg_factory(opts=opts).OUTPUT_DIR) / "log.txt").read_text()
    assert "Skipped unreadable image" in log and "truncated.JPEG" in log


def test_data_check_lists_unreadable_files(bad_tree, synth):
    root, names = bad_tree
    row = check_dataset("ImageNet", str(root), synth["class_list"], verify_images=True)
    assert row["status"] == "unreadable files" and len(row["unreadable"]) == 3
    assert all(any(n in msg for msg in row["unreadable"]) for n in names)


# ---- numerics, atomic files, locks, mismatches ------------------------------------------------
def test_non_finite_loss_stops_and_keeps_last_checkpoint(cfg_factory, tmp_path):
    cfg = cfg_factory(config_file=CONVPASS, output_dir=tmp_path / "run",
                      opts=["OPTIM.MAX_EPOCH", "3", "DATASET.NUM_SHOTS", "2", "OPTIM.LR", "0.01",
                            "TRAIN.CHECKPOINT_MIN_SECONDS", "0"])
    trainer = TRAINER_REGISTRY.get("ConvpassCLIP")(cfg)
    real = trainer.model_inference

    def poisoned(images):
        out = real(images)
        return out * float("nan") if trainer.epoch == 1 else out

    trainer.model_inference = poisoned
    with pytest.raises(NonFiniteLossError, match="model-epoch1.pt"):
        trainer.train()
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt.name == "model-epoch1.pt" and load_checkpoint(ckpt)["epoch"] == 1


def test_atomic_write_never_leaves_a_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pt"
    atomic_torch_save(target, {"w": torch.ones(3)})

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save(target, {"w": torch.zeros(3)})
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_a_second_run_on_the_same_output_dir_is_refused(cfg_factory, tmp_path):
    cfg = cfg_factory(config_file=CONVPASS, output_dir=tmp_path / "run", opts=["OPTIM.MAX_EPOCH", "1"])
    with exclusive_lock(tmp_path / "run" / ".lock", "test"):
        with pytest.raises(LockedError, match="in use by another process"):
            run(cfg)
    run(cfg)  # free again once the holder is gone


def test_checkpoint_from_another_method_or_class_count(cfg_factory, tmp_path, synth):
    run(cfg_factory(config_file=CONVPASS, output_dir=tmp_path / "run",
                    opts=["OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "2"]))
    coop = TRAINER_REGISTRY.get("CoOp")(cfg_factory(config_file="configs/trainers/CoOp/vit_b16_ep50.yaml",
                                                    output_dir=tmp_path / "coop"))
    with pytest.raises(CheckpointMismatchError, match="trainer='ConvpassCLIP'"):
        coop.load_from_model_dir(tmp_path / "run")
    five = tmp_path / "five.txt"
    five.write_text("\n".join(synth["class_ids"][:5]) + "\n")
    cp5 = TRAINER_REGISTRY.get("ConvpassCLIP")(cfg_factory(config_file=CONVPASS, output_dir=tmp_path / "five",
                                                           opts=["DATASET.CLASS_LIST", str(five)]))
    with pytest.raises(CheckpointMismatchError, match="num_classes=6.*num_classes=5"):
        cp5.load_from_model_dir(tmp_path / "run")


def test_split_files_are_json(cfg_factory):
    from clip_convpass.data import build_dataset

    ds = build_dataset(cfg_factory(opts=["DATASET.NUM_SHOTS", "2"]))
    ds.train_x
    assert json.loads(ds.split_file().read_text())["num_shots"] == 2


def test_checkpoint_cadence_thins_young_checkpoints_and_never_changes_results(cfg_factory, tmp_path, monkeypatch):
    from clip_convpass.engine import trainer as trainer_module

    def weights(out, min_seconds, keep=1):
        cfg = cfg_factory(config_file=CONVPASS, output_dir=out,
                          opts=["OPTIM.MAX_EPOCH", "4", "DATASET.NUM_SHOTS", "2", "OPTIM.LR", "0.01",
                                "TRAIN.KEEP_CHECKPOINTS", str(keep), "TRAIN.CHECKPOINT_MIN_SECONDS", str(min_seconds)])
        run(cfg)
        saved = [int(line.rsplit("model-epoch", 1)[1].split(".")[0])
                 for line in (out / "log.txt").read_text().splitlines() if "Saved checkpoint" in line]
        return saved, load_checkpoint(latest_checkpoint(out))["state_dict"]

    every, w_every = weights(tmp_path / "every", 0)
    thinned, w_thinned = weights(tmp_path / "thinned", 1e6)
    assert every == [1, 2, 3, 4] and thinned == [4]
    assert all(torch.equal(w_every[k], w_thinned[k]) for k in w_every)
    assert weights(tmp_path / "kept", 1e6, keep=2)[0] == [1, 2, 3, 4]  # checkpoints asked to be kept are made
    clock = iter(range(0, 10**6, 40))  # each reading 40 s later: a checkpoint is old enough every other epoch
    monkeypatch.setattr(trainer_module.time, "monotonic", lambda: next(clock))
    assert weights(tmp_path / "slow", 60)[0] == [2, 4]


# ---- kill and resume --------------------------------------------------------------------------
def train_cmd(synth, out, tmp_path, config=CONVPASS, extra=()):
    return [sys.executable, str(REPO / "train.py"), "--root", synth["root"], "--output-dir", str(out), "--seed", "3",
            "--dataset-config-file", str(REPO / "configs/datasets/imagenet.yaml"), "--config-file", str(REPO / config),
            *extra,
            "MODEL.BACKBONE", "tiny-ViT-Q", "MODEL.PRETRAINED", "none", "INPUT.SIZE", "(32,32)", "PREC", "fp32",
            "DATALOADER.NUM_WORKERS", "0", "DATASET.CLASS_LIST", synth["class_list"],
            "DATASET.SPLIT_DIR", str(tmp_path / "splits"), "DATASET.NUM_SHOTS", "16", "DATALOADER.TRAIN_X.BATCH_SIZE", "2",
            "OPTIM.MAX_EPOCH", "12", "OPTIM.LR", "1e-3", "TRAIN.PRINT_FREQ", "1000", "TRAIN.CHECKPOINT_MIN_SECONDS", "0"]


PETL = "configs/trainers/PETLCLIP/adaptformer.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("config,extra", [(CONVPASS, ()),  # LoRA (merge/unmerge state) and VPT-deep (prompts):
                                          (PETL, ("TRAINER.PETL.ADAPTER", "lora")),  # the adapters whose state
                                          (PETL, ("TRAINER.PETL.ADAPTER", "vpt_deep"))],  # lives outside AdaptedBlock
                         ids=["convpass", "lora", "vpt_deep"])
def test_sigkill_mid_training_then_resume_matches_uninterrupted(synth, tmp_path, config, extra):
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    subprocess.run(train_cmd(synth, ref_dir, tmp_path, config, extra), check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(train_cmd(synth, cut_dir, tmp_path, config, extra), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (cut_dir / "checkpoints" / "model-epoch2.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.01)
    time.sleep(0.2)  # somewhere inside a later epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(latest_checkpoint(cut_dir))["epoch"]
    assert killed_at < 12, "the run finished before the kill"
    assert not (cut_dir / "eval").exists()
    subprocess.run(train_cmd(synth, cut_dir, tmp_path, config, extra), check=True, capture_output=True, timeout=600)
    assert "Resuming from" in (cut_dir / "log.txt").read_text()
    a = load_checkpoint(latest_checkpoint(ref_dir))
    b = load_checkpoint(latest_checkpoint(cut_dir))
    assert a["epoch"] == b["epoch"] == 12
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    ra = json.loads((ref_dir / "eval" / "ImageNet" / "results.json").read_text())
    rb = json.loads((cut_dir / "eval" / "ImageNet" / "results.json").read_text())
    assert ra["metrics"] == rb["metrics"]
    assert json.loads((ref_dir / "train_history.json").read_text()) == json.loads((cut_dir / "train_history.json").read_text())


def test_monitoring_the_test_accuracy_during_training_changes_nothing_else(cfg_factory, tmp_path):
    """TEST.MONITOR_EVERY (PETL-ViT reports the best of its every-10-epochs test evaluations): the scores go into the
    history only; the weights and the final results.json equal an unmonitored run's."""
    def trained(out, every):
        cfg = cfg_factory(config_file=CONVPASS, output_dir=out,
                          opts=["OPTIM.MAX_EPOCH", "4", "DATASET.NUM_SHOTS", "2", "OPTIM.LR", "0.01",
                                "TEST.MONITOR_EVERY", str(every), "DATALOADER.NUM_WORKERS", "1"])
        record = run(cfg)[0]
        history = json.loads((out / "train_history.json").read_text())
        return record, load_checkpoint(latest_checkpoint(out))["state_dict"], history

    plain, w_plain, h_plain = trained(tmp_path / "plain", 0)
    watched, w_watched, h_watched = trained(tmp_path / "watched", 2)
    assert all(torch.equal(w_plain[k], w_watched[k]) for k in w_plain) and plain["metrics"] == watched["metrics"]
    assert [("test_top1" in h) for h in h_watched] == [False, True, False, True]
    assert not any("test_top1" in h for h in h_plain)
    assert h_watched[-1]["test_top1"] == watched["metrics"]["top1"]  # the last one is the final model's score
    assert "test_top1" in (tmp_path / "watched" / "train_history.csv").read_text()
