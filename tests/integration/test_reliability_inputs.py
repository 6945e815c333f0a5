"""Each silently wrong result, traceback or unsafe load found by the outside review (issue 12), as a test."""
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

from clip_convpass.config import ConfigError, setup_cfg
from clip_convpass.data import DatasetLayoutError, build_dataset, load_rgb
from clip_convpass.data.check import check_dataset
from clip_convpass.engine.checkpoint import CheckpointMismatchError, NonFiniteStateError, latest_checkpoint, load_checkpoint
from clip_convpass.engine.runner import run
from clip_convpass.models.clip_loader import MissingWeightsError, load_clip
from clip_convpass.registry import TRAINER_REGISTRY
from clip_convpass.utils.errors import UserError
from clip_convpass.utils.io import FILE_MODE
from clip_convpass.utils.locks import exclusive_lock

CONVPASS = "configs/trainers/ConvpassCLIP/vit_b16.yaml"


# ---- security ----------------------------------------------------------------------------------
class Boom:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('BOOM_MARKER', '/nonexistent/boom')}",))


def malicious_pickle(path, marker):
    os.environ["BOOM_MARKER"] = str(marker)
    try:
        torch.save({"state_dict": Boom()}, path, _use_new_zipfile_serialization=True)
    finally:
        del os.environ["BOOM_MARKER"]


def test_zip_with_code_entry_is_never_unpickled(tmp_path):
    """A zip whose entry path holds /code/ looked like TorchScript and reached open_clip's pickle fallback."""
    marker = tmp_path / "pwned"
    payload = tmp_path / "payload.pt"
    malicious_pickle(payload, marker)
    crafted = tmp_path / "ViT-B-16.pt"
    with zipfile.ZipFile(payload) as src, zipfile.ZipFile(crafted, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        dst.writestr("archive/code/__torch__.py", "")
    with pytest.raises(MissingWeightsError, match=str(crafted)):
        load_clip("tiny-ViT-Q64", str(crafted))
    assert not marker.exists()


@pytest.mark.parametrize("loader", ["weights", "checkpoint"])
def test_unsafe_load_override_is_refused(tmp_path, monkeypatch, loader):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    malicious_pickle(path, marker)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UserError, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        load_clip("tiny-ViT-Q", str(path)) if loader == "weights" else load_checkpoint(path)
    assert not marker.exists()


def test_garbage_weights_file_names_the_file_without_unsafe_advice(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(MissingWeightsError, match="weights.pt") as e:
        load_clip("tiny-ViT-Q", str(path))
    assert "weights_only=False" not in str(e.value)
    malicious_pickle(path, tmp_path / "pwned")
    with pytest.raises(MissingWeightsError, match="weights.pt") as e:
        load_clip("tiny-ViT-Q", str(path))
    assert "weights_only=False" not in str(e.value) and not (tmp_path / "pwned").exists()


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_openai_torchscript_archive_loads_exactly(tmp_path):
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("tiny-ViT-Q64", pretrained=None).eval()
    img = torch.randn(2, 3, 32, 32)
    tok = open_clip.get_tokenizer("tiny-ViT-Q64")(["a photo of a cat", "a dog"])
    traced = torch.jit.trace_module(model, {"encode_image": img, "encode_text": tok}, strict=False, check_trace=False)
    traced.save(str(tmp_path / "ViT-tiny.pt"))
    loaded = load_clip("tiny-ViT-Q64", str(tmp_path / "ViT-tiny.pt")).model
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(img), model.encode_image(img))
        assert torch.equal(loaded.encode_text(tok), model.encode_text(tok))


# ---- a different experiment never resumes silently ---------------------------------------------
def convpass_cfg(cfg_factory, out, *opts):
    return cfg_factory(config_file=CONVPASS, output_dir=out,
                       opts=["OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "2", "OPTIM.LR", "0.01", *opts])


@pytest.mark.parametrize("change,key", [(["OPTIM.LR", "0.02"], "OPTIM.LR"),
                                        (["TRAINER.CONVPASS.MODE", "sequential"], "TRAINER.CONVPASS.MODE"),
                                        (["TRAINER.CONVPASS.CONV_INIT", "xavier"], "TRAINER.CONVPASS.CONV_INIT"),
                                        (["SEED", "5"], "SEED"), (["DATASET.NUM_SHOTS", "4"], "DATASET.NUM_SHOTS")])
def test_resuming_another_configuration_is_refused(cfg_factory, tmp_path, change, key):
    out = tmp_path / "run"
    run(convpass_cfg(cfg_factory, out))
    config_before = (out / "config.yaml").read_text()
    with pytest.raises(CheckpointMismatchError, match=key.replace(".", r"\.")):
        run(convpass_cfg(cfg_factory, out, *change))
    assert (out / "config.yaml").read_text() == config_before  # the old weights keep their own config


def test_allowed_changes_resume_and_force_starts_afresh(cfg_factory, tmp_path):
    out = tmp_path / "run"
    run(convpass_cfg(cfg_factory, out))
    run(convpass_cfg(cfg_factory, out, "OPTIM.MAX_EPOCH", "2", "DATALOADER.NUM_WORKERS", "1",
                     "TEST.PER_CLASS_RESULT", "True"))
    assert "Resuming from" in (out / "log.txt").read_text()
    assert [h["epoch"] for h in json.loads((out / "train_history.json").read_text())] == [1, 2]
    run(convpass_cfg(cfg_factory, out, "OPTIM.LR", "0.05"), force=True)
    assert [h["epoch"] for h in json.loads((out / "train_history.json").read_text())] == [1]
    assert "LR: 0.05" in load_checkpoint(latest_checkpoint(out))["config"]


def test_non_finite_parameters_are_never_saved_and_the_good_checkpoint_stays(cfg_factory, tmp_path):
    trainer = TRAINER_REGISTRY.get("ConvpassCLIP")(convpass_cfg(cfg_factory, tmp_path / "run"))
    good = trainer.save(1)
    name, param = trainer.trainable_named_parameters()[0]
    with torch.no_grad():
        param.fill_(float("inf"))  # a finite loss whose step blew the weights up
    with pytest.raises(NonFiniteStateError, match=f"{name}.*model-epoch1.pt"):
        trainer.save(2)
    assert latest_checkpoint(tmp_path / "run") == good and good.is_file()
    assert torch.isfinite(load_checkpoint(good)["state_dict"][name]).all()


def test_checkpoint_temp_file_from_a_killed_write_is_removed_on_resume(cfg_factory, tmp_path):
    out = tmp_path / "run"
    run(convpass_cfg(cfg_factory, out))
    stale = out / "checkpoints" / ".model-epoch2.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    run(convpass_cfg(cfg_factory, out, "OPTIM.MAX_EPOCH", "2"))
    assert not stale.exists() and latest_checkpoint(out).name == "model-epoch2.pt"


# ---- images and datasets -----------------------------------------------------------------------
def test_16_bit_and_float_grayscale_are_scaled_not_clipped(tmp_path):
    values = np.array([[0, 30000], [65535, 12850]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode in ("I;16", "I")  # a real 16-bit PNG
    rgb = np.asarray(load_rgb(str(tmp_path / "g16.png")))
    assert rgb.shape == (2, 2, 3) and (rgb[..., 0] == np.rint(values / 257)).all()
    Image.fromarray(np.array([[0.0, 0.5]], dtype=np.float32)).save(tmp_path / "f.tiff")
    assert list(np.asarray(load_rgb(str(tmp_path / "f.tiff")))[0, :, 0]) == [0, 128]


def copy_tree(synth, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth["root"], root)
    return root


def test_data_check_decodes_training_images(synth, tmp_path):
    root = copy_tree(synth, tmp_path)
    bad = root / "imagenet" / "images" / "train" / synth["class_ids"][1] / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    row = check_dataset("ImageNet", str(root), synth["class_list"], verify_images=True)
    assert row["status"] == "unreadable files" and any("broken.JPEG" in m for m in row["unreadable"])


@pytest.mark.parametrize("folder", ["007", "\u00b2", "-1", "1000"])
def test_imagenet_v2_accepts_only_plain_class_indices(synth, tmp_path, cfg_factory, folder):
    root = copy_tree(synth, tmp_path)
    (root / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / folder).mkdir()
    with pytest.raises(DatasetLayoutError, match=repr(folder).strip("'")):
        build_dataset(cfg_factory("ImageNetV2", opts=["DATASET.ROOT", str(root)])).test


def test_skipped_training_images_are_named_in_the_log(synth, tmp_path, cfg_factory):
    root = copy_tree(synth, tmp_path)
    victim = sorted((root / "imagenet" / "images" / "train" / synth["class_ids"][0]).iterdir())[0]
    victim.write_bytes(b"")
    cfg = cfg_factory(config_file=CONVPASS, output_dir=tmp_path / "run",
                      opts=["DATASET.ROOT", str(root), "DATASET.NUM_SHOTS", "24", "DATASET.VAL_SHOTS", "0",
                            "DATASET.SKIP_BAD_IMAGES", "True", "OPTIM.MAX_EPOCH", "1"])
    run(cfg)
    assert str(victim) in (tmp_path / "run" / "log.txt").read_text()
    assert json.loads((tmp_path / "run" / "train_history.json").read_text())[0]["skipped_images"] == 1


def test_split_file_that_is_not_json_and_unwritable_split_dir(cfg_factory, tmp_path):
    ds = build_dataset(cfg_factory(opts=["DATASET.NUM_SHOTS", "2"]))
    path = ds.split_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\x80garbage{")
    with pytest.raises(DatasetLayoutError, match=f"{path.name}.*delete it"):
        ds.train_x
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    ds = build_dataset(cfg_factory(opts=["DATASET.NUM_SHOTS", "2", "DATASET.SPLIT_DIR", str(blocker / "splits")]))
    with pytest.raises(DatasetLayoutError, match="set DATASET.SPLIT_DIR"):  # NotADirectoryError, not EACCES
        ds.train_x


# ---- validation before any work ------------------------------------------------------------------
@pytest.mark.parametrize("opts,key", [
    (["DATASET.NUM_SHOTS", "0"], "DATASET.NUM_SHOTS"),
    (["INPUT.CROP_SCALE", "(0.5, 0.2)"], "INPUT.CROP_SCALE"),
    (["INPUT.CROP_SCALE", "(0.0, 1.0)"], "INPUT.CROP_SCALE"),
    (["INPUT.PIXEL_STD", "[0.2, 0.0, 0.2]"], "INPUT.PIXEL_STD"),
    (["TRAINER.TIP.CROP_SCALE", "(0.5, 1.5)"], "TRAINER.TIP.CROP_SCALE"),
])
def test_bad_values_fail_before_work(opts, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        setup_cfg(None, None, opts)


def test_infinite_lr_from_yaml_and_empty_class_list(tmp_path, cfg_factory):
    yml = tmp_path / "inf.yaml"
    yml.write_text("OPTIM:\n  LR: .inf\n")
    with pytest.raises(ConfigError, match="OPTIM.LR must be a finite"):
        setup_cfg(None, yml)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(DatasetLayoutError, match="lists no classes"):
        build_dataset(cfg_factory(opts=["DATASET.CLASS_LIST", str(empty)]))


def test_tilde_is_expanded_in_every_path_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = setup_cfg(None, None, ["OUTPUT_DIR", "~/out", "DATASET.ROOT", "~/data", "DATASET.SPLIT_DIR", "~/s",
                                 "TEST.FEATURE_CACHE_DIR", "~/fc", "DATASET.CLASS_LIST", "~/c.txt",
                                 "MODEL.PRETRAINED", "~/w.pt", "MODEL.CACHE_DIR", "~/hub"])
    for value in (cfg.OUTPUT_DIR, cfg.DATASET.ROOT, cfg.DATASET.SPLIT_DIR, cfg.TEST.FEATURE_CACHE_DIR,
                  cfg.DATASET.CLASS_LIST, cfg.MODEL.PRETRAINED, cfg.MODEL.CACHE_DIR):
        assert value.startswith(str(tmp_path)), value


def train_py(*args, **kw):
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], capture_output=True, text=True,
                          timeout=300, **kw)


def test_train_py_prints_project_errors_in_one_line(tmp_path, synth):
    base = ["--root", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "out"),
            "--config-file", str(REPO / CONVPASS), "--dataset-config-file", str(REPO / "configs/datasets/imagenet.yaml")]
    r = train_py(*base)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: ") and "DATASET.ROOT" in r.stderr
    r = train_py(*base, "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr
    r = train_py(*base, "OPTIM.LR", "-1")
    assert r.returncode == 2 and "OPTIM.LR" in r.stderr and "Traceback" not in r.stderr


def test_eval_dataset_names_are_checked_before_training_and_do_not_swallow_opts(tmp_path, synth):
    from clip_convpass.cli.train import build_parser, eval_dataset_names

    args = build_parser().parse_intermixed_args(["--eval-datasets", "ImageNetA,ImageNetR", "OPTIM.LR", "0.1",
                                                 "--eval-datasets", "ImageNetV2"])
    assert args.opts == ["OPTIM.LR", "0.1"]
    assert eval_dataset_names(args.eval_datasets) == ["ImageNetA", "ImageNetR", "ImageNetV2"]
    r = train_py("--root", synth["root"], "--output-dir", str(tmp_path / "out"), "--config-file", str(REPO / CONVPASS),
                 "--eval-datasets", "ImageNetQ", "MODEL.BACKBONE", "tiny-ViT-Q", "MODEL.PRETRAINED", "none",
                 "INPUT.SIZE", "(32,32)", "DATASET.CLASS_LIST", synth["class_list"])
    assert r.returncode == 2 and "ImageNetQ" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "checkpoints").exists()


# ---- shared use ----------------------------------------------------------------------------------
def test_written_files_get_the_umask_mode_and_locks_are_shareable(cfg_factory, tmp_path):
    out = tmp_path / "run"
    run(convpass_cfg(cfg_factory, out))
    for path in [out / "eval" / "ImageNet" / "results.json", latest_checkpoint(out), out / "train_history.json",
                 next((out / "splits").glob("*.json"))]:
        assert stat.S_IMODE(path.stat().st_mode) == FILE_MODE, path
    mask = os.umask(0)
    os.umask(mask)
    assert FILE_MODE == 0o666 & ~mask and FILE_MODE != 0o600
    with exclusive_lock(tmp_path / "shared" / "x.lock", "test"):
        assert stat.S_IMODE((tmp_path / "shared" / "x.lock").stat().st_mode) == 0o666
