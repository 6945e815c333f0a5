"""The one place CLIP models are created: open_clip pretrained tags, local files, or random init."""
from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import open_clip
import torch
from torch import nn

from .config import ConfigError
from .errors import UserError, refuse_unsafe_load_override

logger = logging.getLogger("clip_convpass")

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)

RANDOM_INIT = ("", "none", "random")


class MissingWeightsError(UserError, FileNotFoundError):
    """Pretrained weights are not on disk and could not be downloaded."""


@dataclass
class ClipBundle:
    model: nn.Module
    tokenizer: Callable


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def _load_torchscript(path: Path) -> nn.Module:
    """OpenAI's released .pt files are TorchScript archives: read the weights with torch.jit.load (no
    pickle fallback, unlike open_clip.load_openai_model) and rebuild a plain open_clip model from them."""
    from open_clip.model import build_model_from_openai_state_dict

    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise MissingWeightsError(f"{path} looks like a TorchScript archive but torch.jit.load cannot read it "
                                  f"({type(e).__name__}: {e}); download the file again") from e
    # attention masks are rebuilt by the model: only a re-traced open_clip model stores them
    state_dict = {k: v for k, v in scripted.state_dict().items() if not k.endswith("attn_mask")}
    try:
        # the builder infers the architecture and casts to fp16 (OpenAI's storage type); the weights are
        # then loaded again as stored, so an fp32 archive stays exact
        model = build_model_from_openai_state_dict(dict(state_dict), cast_dtype=None).float()
        for key in ("input_resolution", "context_length", "vocab_size"):  # metadata, not weights
            state_dict.pop(key, None)
        model.load_state_dict({k: v.float() for k, v in state_dict.items()})
        return model
    except Exception as e:
        raise MissingWeightsError(f"{path} is a TorchScript archive but not an OpenAI CLIP model "
                                  f"({type(e).__name__}: {e})") from e


def _download_hint(backbone: str, tag: str) -> str:
    try:
        pcfg = open_clip.get_pretrained_cfg(backbone, tag)
    except Exception as e:  # an unknown tag: report it in the hint, it is what the user must fix
        return f"(open_clip has no pretrained config for {backbone!r}/{tag!r}: {e})"
    where = []
    if pcfg.get("url"):
        where.append(f"URL {pcfg['url']}")
    if pcfg.get("hf_hub"):
        where.append(f"Hugging Face repo {pcfg['hf_hub'].rstrip('/')}")
    return " or ".join(where) if where else "(no download location known to open_clip)"


def _check_matches_config(model: nn.Module, backbone: str, path: Path) -> None:
    """A TorchScript archive carries its own architecture: make sure it is the configured one."""
    vcfg = open_clip.get_model_config(backbone)["vision_cfg"]
    got_width = model.visual.conv1.out_channels if hasattr(model.visual, "conv1") else None
    got_layers = len(model.visual.transformer.resblocks) if hasattr(model.visual, "transformer") else None
    if (got_width, got_layers) != (vcfg.get("width"), vcfg.get("layers")):
        raise ConfigError(
            f"{path} holds a model with vision width {got_width} and {got_layers} layers, but "
            f"MODEL.BACKBONE={backbone!r} expects width {vcfg.get('width')} and {vcfg.get('layers')} layers."
        )


def load_clip(backbone: str, pretrained: str = "openai", cache_dir: str = "", device: str | torch.device = "cpu") -> ClipBundle:
    """Create an fp32 open_clip model.

    `pretrained` is an open_clip tag (e.g. "openai"), a local checkpoint file (open_clip state dict,
    safetensors, or OpenAI's TorchScript .pt), or "none" for random weights (tests, demos).
    """
    if backbone not in open_clip.list_models():
        raise ConfigError(
            f"Unknown MODEL.BACKBONE {backbone!r}. Use an open_clip model name (open_clip.list_models()), "
            f"e.g. 'ViT-B-16-quickgelu' for OpenAI's ViT-B/16, or a config in {MODEL_CONFIG_DIR}."
        )
    tokenizer = open_clip.get_tokenizer(backbone)
    tag = str(pretrained)
    looks_like_path = os.sep in tag or tag.endswith((".pt", ".pth", ".bin", ".safetensors"))
    if tag.lower() in RANDOM_INIT:
        model = open_clip.create_model(backbone, pretrained=None)
        logger.info(f"Built {backbone} with RANDOM weights (MODEL.PRETRAINED={tag!r}).")
    elif looks_like_path:
        path = Path(tag).expanduser()
        if not path.is_file():
            raise MissingWeightsError(
                f"MODEL.PRETRAINED points to {path}, which does not exist. Put the checkpoint for "
                f"{backbone} there, or set MODEL.PRETRAINED to an open_clip tag "
                f"(available: {open_clip.list_pretrained_tags_by_model(backbone)})."
            )
        refuse_unsafe_load_override()
        if _is_torchscript_archive(path):
            model = _load_torchscript(path)
            _check_matches_config(model, backbone, path)
        else:
            try:
                model = open_clip.create_model(backbone, pretrained=str(path), weights_only=True)
            except Exception as e:  # torch's own text advises weights_only=False: we never unpickle
                raise MissingWeightsError(
                    f"Cannot load {path} as {backbone} weights ({type(e).__name__}): expected an open_clip / OpenAI "
                    f"state dict (.pt/.pth/.bin, loaded weights-only), a .safetensors file, or OpenAI's TorchScript "
                    f"archive"
                ) from e
        logger.info(f"Loaded {backbone} weights from {path}")
    else:
        if not open_clip.is_pretrained_cfg(backbone, tag):
            raise ConfigError(
                f"MODEL.PRETRAINED={tag!r} is not a pretrained tag of {backbone}; available: "
                f"{open_clip.list_pretrained_tags_by_model(backbone)}. Or give a path to a checkpoint file."
            )
        try:
            model = open_clip.create_model(
                backbone, pretrained=tag, cache_dir=cache_dir or None, require_pretrained=True, weights_only=True
            )
        except Exception as e:
            raise MissingWeightsError(
                f"Could not load pretrained weights {backbone!r}/{tag!r} ({type(e).__name__}: {e}). "
                f"Without internet access, download them from {_download_hint(backbone, tag)} on another "
                f"machine and either set MODEL.PRETRAINED=/path/to/that/file, or place the download in "
                f"MODEL.CACHE_DIR={cache_dir or '<open_clip default cache>'} where open_clip looks for it."
            ) from e
    model = model.float().to(device).eval()
    return ClipBundle(model=model, tokenizer=tokenizer)


def load_clip_from_cfg(cfg, device: str | torch.device = "cpu") -> ClipBundle:
    """The configured model; with MODEL.FUSED_ATTENTION both towers compute attention on contiguous
    batch-first tensors (adapters.base.AdaptedBlock), the same path with and without gradients or autocast."""
    bundle = load_clip(cfg.MODEL.BACKBONE, cfg.MODEL.PRETRAINED, cfg.MODEL.CACHE_DIR, device)
    if cfg.MODEL.FUSED_ATTENTION:
        from .adapters.base import fuse_attention

        for tower in (getattr(bundle.model, "visual", None), getattr(bundle.model, "text", bundle.model)):
            transformer = getattr(tower, "transformer", None)
            if transformer is not None and hasattr(transformer, "resblocks"):
                fuse_attention(transformer)
    expected = image_size_of(bundle.model)
    if tuple(cfg.INPUT.SIZE) != expected:
        raise ConfigError(
            f"INPUT.SIZE={tuple(cfg.INPUT.SIZE)} does not match {cfg.MODEL.BACKBONE}'s input size {expected}; "
            f"set INPUT.SIZE {list(expected)}"
        )
    return bundle


def image_size_of(model: nn.Module) -> tuple[int, int]:
    size = model.visual.image_size
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)
