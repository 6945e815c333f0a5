import os
import subprocess
import sys

import pytest
import torch

from clip_convpass.models.clip_loader import MissingWeightsError, _is_torchscript_archive, load_clip
from clip_convpass.registry import TRAINER_REGISTRY


def test_missing_local_file_names_it(tmp_path):
    missing = tmp_path / "ViT-B-16.pt"
    with pytest.raises(MissingWeightsError, match=str(missing)):
        load_clip("ViT-B-16-quickgelu", str(missing))


def test_unknown_backbone_and_tag():
    with pytest.raises(ValueError, match="Unknown MODEL.BACKBONE"):
        load_clip("ViT-Z-99", "none")
    with pytest.raises(ValueError, match="not a pretrained tag"):
        load_clip("ViT-B-16-quickgelu", "no-such-tag")


def test_undownloadable_tag_says_what_to_provide(tmp_path):
    # A subprocess, so HF_HUB_OFFLINE is read at import (no network here, and no waiting on one).
    code = (
        "import sys\n"
        "from clip_convpass.models.clip_loader import MissingWeightsError, load_clip\n"
        "try:\n"
        f"    load_clip('ViT-B-32-quickgelu', 'openai', cache_dir={str(tmp_path)!r})\n"
        "except MissingWeightsError as e:\n"
        "    print('MSG', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300).stdout
    assert "MSG" in out
    msg = out
    assert "openaipublic" in msg and "MODEL.PRETRAINED=" in msg and str(tmp_path) in msg


def test_local_state_dict_round_trip(tmp_path):
    torch.manual_seed(3)
    a = load_clip("tiny-ViT-Q", "none")
    path = tmp_path / "tiny.pt"
    torch.save(a.model.state_dict(), path)
    b = load_clip("tiny-ViT-Q", str(path))
    for (k, v), (k2, v2) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_torchscript_detection(tmp_path):
    scripted = tmp_path / "jit.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(scripted))
    plain = tmp_path / "sd.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), plain)
    assert _is_torchscript_archive(scripted) and not _is_torchscript_archive(plain)


def test_input_size_must_match_model(cfg_factory):
    cfg = cfg_factory(opts=["INPUT.SIZE", "(224, 224)"])
    with pytest.raises(ValueError, match="INPUT.SIZE"):
        TRAINER_REGISTRY.get("ZeroShotCLIP")(cfg)
