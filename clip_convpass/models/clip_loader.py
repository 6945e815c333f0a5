"""The one place CLIP models are created: open_clip pretrained tags, local files, or random init."""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import open_clip
import torch
from torch import nn

from clip_convpass.config import ConfigError, read_model_config
from clip_convpass.utils.errors import UserError, refuse_unsafe_load_override
from clip_convpass.utils.paths import MODEL_CONFIG_DIR

logger = logging.getLogger(__name__)

open_clip.add_model_config(MODEL_CONFIG_DIR)

RANDOM_INIT = ("", "none", "random")
HF_HUB_PREFIX = "hf-hub:"
HUB_WEIGHTS = ("hub", "openai")  # MODEL.PRETRAINED values that mean "the hf-hub repo's own weights"


def hub_offline() -> str:
    """Why the Hugging Face Hub / download servers cannot be reached, or "" (checked in ~3 s at most,
    instead of huggingface_hub's retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError as e:
        return f"no network connection to huggingface.co ({type(e).__name__})"
    return ""


def cached_weights(backbone: str, tag: str, cache_dir: str = "") -> Path | None:
    """The local copy of an open_clip pretrained tag's weights, if a previous download left one."""
    from open_clip import pretrained as oc

    pcfg = open_clip.get_pretrained_cfg(backbone, tag)
    hub = pcfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        # open_clip's form: "org/repo/filename", or "org/repo/" for its default file names
        model_id, filename = (hub[:-1], "") if hub.endswith("/") else os.path.split(hub)
        for name in ([filename] if filename else [oc.HF_SAFE_WEIGHTS_NAME, oc.HF_WEIGHTS_NAME]):
            found = try_to_load_from_cache(model_id, name, cache_dir=cache_dir or None)
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
    url = pcfg.get("url", "")
    if url:
        local = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if local.is_file():
            return local
    return None


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
    if backbone.startswith(HF_HUB_PREFIX):
        return _load_hf_hub(backbone, str(pretrained), cache_dir, device)
    if backbone.startswith("timm:"):
        raise ConfigError(f"MODEL.BACKBONE {backbone!r} is an image-only supervised backbone: it has no text tower "
                          f"for this method; the adapter trainers (ConvpassCLIP, PETLCLIP, HEAD_INIT random) take it")
    if backbone not in open_clip.list_models():
        raise ConfigError(
            f"Unknown MODEL.BACKBONE {backbone!r}. Use an open_clip model name (open_clip.list_models()), "
            f"e.g. 'ViT-B-16-quickgelu' for OpenAI's ViT-B/16, or a config in {MODEL_CONFIG_DIR}."
        )
    tokenizer = open_clip.get_tokenizer(backbone)
    tag = str(pretrained)
    looks_like_path = os.sep in tag or tag.endswith((".pt", ".pth", ".bin", ".safetensors"))
    if not looks_like_path and tag.lower() not in RANDOM_INIT and open_clip.is_pretrained_cfg(backbone, tag):
        cached = cached_weights(backbone, tag, cache_dir)
        if cached is not None:  # load the downloaded file directly: no Hub round trip (works offline)
            logger.info(f"{backbone}/{tag}: using the downloaded weights {cached}")
            tag, looks_like_path = str(cached), True
        else:
            offline = hub_offline()
            if offline:
                raise MissingWeightsError(
                    f"Pretrained weights {backbone!r}/{tag!r} are not downloaded and cannot be ({offline}). "
                    f"Download them from {_download_hint(backbone, tag)} on a machine with internet access and set "
                    f"MODEL.PRETRAINED=/path/to/that/file, or place the download in MODEL.CACHE_DIR="
                    f"{cache_dir or '<open_clip default cache>'}")
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


def _load_hf_hub(backbone: str, pretrained: str, cache_dir: str, device) -> ClipBundle:
    """open_clip's `hf-hub:ORG/REPO` models: architecture and weights from the Hub repo."""
    if pretrained.lower() not in (*HUB_WEIGHTS, *RANDOM_INIT):
        raise ConfigError(f"MODEL.BACKBONE {backbone}: the weights come from the Hub repo; set MODEL.PRETRAINED hub "
                          f"(or none for random weights), got {pretrained!r}")
    offline = hub_offline()
    if offline:
        repo = backbone[len(HF_HUB_PREFIX):]
        raise MissingWeightsError(
            f"MODEL.BACKBONE {backbone} needs the Hugging Face Hub, which cannot be reached ({offline}). Download "
            f"https://huggingface.co/{repo} (open_clip_config.json and the weights) on another machine, then set "
            f"MODEL.BACKBONE to a name of your choice, MODEL.CONFIG_FILE /path/open_clip_config.json and "
            f"MODEL.PRETRAINED /path/to/the/weights")
    kwargs = {"cache_dir": cache_dir or None}
    if pretrained.lower() in RANDOM_INIT:
        model = open_clip.create_model(backbone, pretrained=None, load_weights=False, **kwargs)
    else:
        model = open_clip.create_model(backbone, weights_only=True, **kwargs)
    logger.info(f"Loaded {backbone} from the Hugging Face Hub")
    return ClipBundle(model=model.float().to(device).eval(), tokenizer=open_clip.get_tokenizer(backbone))


def register_model_config(path: str, backbone: str) -> None:
    """MODEL.CONFIG_FILE (checked by config.read_model_config) registered under MODEL.BACKBONE."""
    model_cfg = read_model_config(path)
    from open_clip import factory

    factory._MODEL_CONFIGS[backbone] = model_cfg  # open_clip keeps its model configs in this table


_LOADED: dict = {}  # {key: ClipBundle on the CPU}: the last pretrained model loaded, while reuse is on
_REUSE = [False]


@contextlib.contextmanager
def reuse_loaded_models():
    """Within: cells that load the same pretrained backbone get copies of one load (a grid process). Outside, a
    run holds no extra copy of its model."""
    before = _REUSE[0]
    _REUSE[0] = True
    try:
        yield
    finally:
        _REUSE[0] = before
        if not before:
            _LOADED.clear()


def _weights_identity(cfg):
    """What the loaded weights depend on, or None for random weights (drawn anew each time, never reused)."""
    tag = str(cfg.MODEL.PRETRAINED)
    if tag.lower() in RANDOM_INIT:
        return None
    path = Path(tag).expanduser()
    st = path.stat() if path.is_file() else None
    file_id = (str(path.resolve()), st.st_size, st.st_mtime_ns) if st is not None else None
    config = Path(cfg.MODEL.CONFIG_FILE).read_text() if cfg.MODEL.CONFIG_FILE else ""
    return cfg.MODEL.BACKBONE, tag, file_id, cfg.MODEL.CACHE_DIR, config


def _loaded_once(cfg, device) -> ClipBundle:
    """load_clip, reusing the pretrained model this process loaded last (the cells of a grid share a backbone):
    a copy, so nothing a run changes reaches the next one."""
    key = _weights_identity(cfg) if _REUSE[0] else None
    if key is None:
        return load_clip(cfg.MODEL.BACKBONE, cfg.MODEL.PRETRAINED, cfg.MODEL.CACHE_DIR, device)
    if key not in _LOADED:
        _LOADED.clear()  # one model at a time: a grid over backbones must not hold them all
        _LOADED[key] = load_clip(cfg.MODEL.BACKBONE, cfg.MODEL.PRETRAINED, cfg.MODEL.CACHE_DIR, "cpu")
    else:
        logger.info(f"{cfg.MODEL.BACKBONE}: reusing the weights loaded from {cfg.MODEL.PRETRAINED} in this process")
    cached = _LOADED[key]
    return ClipBundle(model=copy.deepcopy(cached.model).to(device), tokenizer=cached.tokenizer)


def load_clip_from_cfg(cfg, device: str | torch.device = "cpu") -> ClipBundle:
    """The configured model; with MODEL.FUSED_ATTENTION both towers compute attention on contiguous
    batch-first tensors (adapters.base.AdaptedBlock), the same path with and without gradients or autocast."""
    if cfg.MODEL.CONFIG_FILE:
        register_model_config(cfg.MODEL.CONFIG_FILE, cfg.MODEL.BACKBONE)
    # Building the model draws random initial weights even when pretrained ones replace them: outside the
    # process's stream, so that a method's own initialisation after it (contexts, adapters) depends on SEED
    # alone, whether the weights were loaded or reused.
    with torch.random.fork_rng(devices=[]):
        bundle = _loaded_once(cfg, device)
    if cfg.MODEL.FUSED_ATTENTION:
        from clip_convpass.models.blocks import fuse_attention

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
