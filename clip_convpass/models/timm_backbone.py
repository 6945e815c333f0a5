"""Supervised image backbones from timm (MODEL.BACKBONE timm:<name>): the Convpass paper's own benchmarks (VTAB-1K,
few-shot FGVC) use ImageNet-21K ViT-B/16, loaded here the way PETL-ViT and NOAH do.

`TimmVisual` presents a timm VisionTransformer to the adapter injection layer (clip_convpass.adapters) exactly as
an open_clip image tower: `transformer.resblocks` (each timm Block behind a `TimmBlock` view with open_clip's
attribute names, its attention behind `PackedAttention`, the same packed q/k/v projection nn.MultiheadAttention
holds), `grid_size`, `patch_dropout`, `conv1`, `ln_pre`. So every adapter kind injects into both with one
implementation, and a fresh adapter model computes exactly what the frozen model (blocks wrapped, no adapters)
computes. Weights load without unpickling: timm tags, Google's .npz (PETL-ViT / NOAH's `ViT-B_16.npz`), .pth /
.pt state dicts (weights-only) and safetensors.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch import nn

from clip_convpass.config import ConfigError
from clip_convpass.models.attention import PackedAttention, self_attention
from clip_convpass.models.prompted_swin import PromptedSwinStages
from clip_convpass.utils.errors import UserError, refuse_unsafe_load_override

logger = logging.getLogger(__name__)
TIMM_PREFIX = "timm:"
# The Convpass paper's Table 1 backbone: ViT-B/16 pretrained on ImageNet-21K, Google's original checkpoint
# (ViT-B_16.npz), which timm publishes as the tag orig_in21k (converted, without the representation layer). timm's
# old name vit_base_patch16_224_in21k now points at another checkpoint (augreg_in21k, "How to train your ViT").
PAPER_VTAB_BACKBONE, PAPER_VTAB_TAG = "timm:vit_base_patch16_224", "orig_in21k"
# Tiny architectures on 32 px images for tests and the demo (no weights needed): a 2-block ViT (patch 8, width 48)
# and a 2-stage Swin (patch 4, windows of 4, widths 16 and 32).
TINY_VIT, TINY_SWIN = "vit_tiny_demo", "swin_tiny_demo"


class MissingTimmWeightsError(UserError, FileNotFoundError):
    """Pretrained timm weights are not available offline; the message says what to provide."""


def is_timm(backbone: str) -> bool:
    return backbone.startswith(TIMM_PREFIX)


class TimmBlock(nn.Module):
    """A timm Block with open_clip's attribute names. Drop-path is part of each branch's scale (ls_1, ls_2);
    drop_path_1 / drop_path_2 also act on the adapters beside the branch, as PETL-ViT's Convpass blocks do."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.ln_1, self.ln_2, self.mlp = block.norm1, block.norm2, block.mlp
        self.attn = PackedAttention(block.attn)
        self.ls_1 = nn.Sequential(block.ls1, block.drop_path1)
        self.ls_2 = nn.Sequential(block.ls2, block.drop_path2)
        self.drop_path_1, self.drop_path_2 = block.drop_path1, block.drop_path2

    def attention(self, q_x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self_attention(self.attn, q_x, attn_mask)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.ls_1(self.attention(self.ln_1(x), attn_mask))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class TimmTransformer(nn.Module):
    """timm's `blocks` with open_clip Transformer's interface (resblocks, width, batch_first)."""

    def __init__(self, blocks: nn.Sequential, width: int):
        super().__init__()
        self.resblocks = nn.Sequential(*[TimmBlock(b) for b in blocks])
        self.width = width
        self.batch_first = True

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask=attn_mask)
        return x


class TimmVisual(nn.Module):
    """A timm VisionTransformer (its head included) behind an open_clip image tower's interface."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        if not hasattr(trunk, "blocks") or not hasattr(trunk, "patch_embed"):
            raise ConfigError(f"MODEL.BACKBONE timm:...: a timm VisionTransformer is needed, got {type(trunk).__name__}")
        self.trunk = trunk
        trunk.blocks = TimmTransformer(trunk.blocks, trunk.embed_dim)

    # what the adapters read of an open_clip VisionTransformer
    @property
    def transformer(self) -> nn.Module:
        return self.trunk.blocks

    def __setattr__(self, name, value):
        if name == "transformer":  # VPT replaces the transformer: timm's forward must call the replacement
            self.trunk.blocks = value
            return
        super().__setattr__(name, value)

    @property
    def grid_size(self) -> Tuple[int, int]:
        return tuple(self.trunk.patch_embed.grid_size)

    @property
    def patch_dropout(self) -> nn.Module:
        return self.trunk.patch_drop

    @property
    def conv1(self) -> nn.Module:
        return self.trunk.patch_embed.proj

    @property
    def ln_pre(self) -> nn.Module:
        return self.trunk.norm_pre

    @property
    def classifier_head(self) -> nn.Module:
        return self.trunk.get_classifier()

    @property
    def num_prefix_tokens(self) -> int:
        return self.trunk.num_prefix_tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images)


def register_tiny_models() -> None:
    """Register TINY_VIT and TINY_SWIN with timm (once), as timm registers its own architectures."""
    import timm
    from timm.models import register_model
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer

    def entrypoint(name, model_cls, defaults):
        def create(pretrained=False, **kwargs):
            kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay",
                                                                   "cache_dir")}  # timm's loading arguments
            return model_cls(**{**defaults, **kwargs})

        create.__name__ = name
        return create

    for name, model_cls, defaults in (
            (TINY_VIT, VisionTransformer, {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 3}),
            (TINY_SWIN, SwinTransformer, {"img_size": 32, "patch_size": 4, "window_size": 4, "embed_dim": 16,
                                          "depths": (2, 2), "num_heads": (2, 4)})):
        if not timm.is_model(name):
            register_model(entrypoint(name, model_cls, defaults))


class TimmClassifier(nn.Module):
    """A timm classifier that is not a plain ViT (Swin, ConvNeXt: the Convpass paper's backbone study): its trunk and
    head, for Full / Linear (nothing injected) and for the adapters that inject into its stages (Convpass on Swin)."""

    hierarchical = True  # adapters that need a token sequence with a [cls] token refuse it (adapters.base.inject)

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk

    @property
    def classifier_head(self) -> nn.Module:
        return self.trunk.get_classifier()

    def adapted_blocks(self, fast_attention: bool = True) -> List[nn.Module]:
        """Every block of a timm SwinTransformer's stages wrapped once in an AdaptedBlock around a SwinBlockView (the
        adapters' slots, on the block's (B, H*W, C) tokens); the stage sees (B, H, W, C) as before."""
        from clip_convpass.models.blocks import AdaptedBlock, unwrapped

        out = []
        for stage in self.swin_stages():
            blocks = stage.blocks
            for i, block in enumerate(blocks):
                adapted = AdaptedBlock(SwinBlockView(unwrapped(block)), batch_first=True, fast_attention=False)
                blocks[i] = SwinStageBlock(adapted)
                out.append(adapted)
        return out

    def swin_stages(self) -> List[nn.Module]:
        """The trunk's Swin stages (each with `downsample` and `blocks`), or a one-line error naming what this
        backbone takes."""
        stages = [layer for layer in getattr(self.trunk, "layers", [])
                  if any(hasattr(b, "_attn") and hasattr(b, "input_resolution") for b in getattr(layer, "blocks", []))]
        if not stages:
            raise ConfigError(f"{type(self.trunk).__name__} has no Swin stages: adapters inject into ViTs (and some into "
                              f"Swin); on this backbone use TRAINER.PETL.ADAPTER none (Linear, or Full with "
                              f"BACKBONE_TRAINABLE)")
        return stages

    def insert_prompts(self, prompts: List[nn.Module], pairing: str = "image") -> nn.Module:
        """VPT's prompt tokens in the Swin stages (module replacement of trunk.layers; models.prompted_swin)."""
        self.swin_stages()
        self.trunk.layers = PromptedSwinStages(self.trunk.layers, prompts, pairing)
        return self.trunk.layers

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images)


class SwinBlockView(nn.Module):
    """A timm SwinTransformerBlock with open_clip's block names on (B, H*W, C) tokens: ln_1, attention (its shifted-
    window attention on the stage's H x W map), ls_1 / drop_path_1 (its drop-path; Swin has no layer scale), ln_2,
    mlp, ls_2 / drop_path_2, and grid_size (the map a Convpass bypass convolves)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.swin = block
        self.ln_1, self.ln_2, self.mlp = block.norm1, block.norm2, block.mlp
        self.ls_1 = self.drop_path_1 = block.drop_path1
        self.ls_2 = self.drop_path_2 = block.drop_path2
        self.grid_size = tuple(block.input_resolution)

    def attention(self, q_x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, c = q_x.shape
        return self.swin._attn(q_x.reshape(b, *self.grid_size, c)).reshape(b, n, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls_1(self.attention(self.ln_1(x)))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class SwinStageBlock(nn.Module):
    """What a Swin stage holds in place of a block: (B, H, W, C) in and out around the token-sequence block."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        return self.block(x.reshape(b, h * w, c)).reshape(b, h, w, c)


def timm_visual(trunk: nn.Module) -> nn.Module:
    """The view the adapters and trainers use: a plain ViT as an open_clip tower (TimmVisual), anything else as a
    TimmClassifier."""
    if hasattr(trunk, "blocks") and hasattr(trunk, "patch_embed") and hasattr(trunk, "pos_embed"):
        return TimmVisual(trunk)
    return TimmClassifier(trunk)


class RepresentationLayer(nn.Module):
    """The pre-logits layer of Google's ImageNet-21K ViTs: Linear + tanh between the [cls] features and the head.
    timm 0.4.12, on which PETL-ViT, NOAH and VPT ran, built it for vit_base_patch16_224_in21k and loaded it from
    the .npz (it stayed frozen); current timm drops it (MODEL.PRE_LOGITS keep | drop)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.fc = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            self.fc.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x))


def attach_representation(model: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Put the representation layer before timm's head (after its head dropout), where timm 0.4.12 had it."""
    if weight.shape != (model.embed_dim, model.embed_dim):
        raise MissingTimmWeightsError(f"a representation layer of shape {tuple(weight.shape)} does not fit width "
                                      f"{model.embed_dim}")
    model.head_drop = nn.Sequential(model.head_drop, RepresentationLayer(weight, bias))


def create_timm_model(backbone: str, pretrained: str = "none", num_classes: int = 0, drop_path_rate: float = 0.0,
                    img_size=None, pre_logits: bool = True, **kwargs) -> nn.Module:
    """A timm model from `timm:<name>` with `pretrained` a timm tag ("<name>.<tag>" or "timm" for the name's
    default), a local .npz / .pth / .pt / .safetensors file, or none; its head replaced for num_classes.
    pre_logits: keep a checkpoint's representation layer (RepresentationLayer) where it has one."""
    import timm

    name = backbone[len(TIMM_PREFIX):]
    if name.split(".")[0] in (TINY_VIT, TINY_SWIN):
        register_tiny_models()
    if not name or not timm.is_model(name.split(".")[0]):
        raise ConfigError(f"MODEL.BACKBONE {backbone!r}: not a timm model name (timm.list_models())")
    extra = dict(kwargs, num_classes=num_classes, drop_path_rate=drop_path_rate)
    if img_size is not None:
        extra["img_size"] = img_size
    tag = str(pretrained)
    if tag.lower() in ("", "none", "random"):
        return create_model(name, False, extra)
    path = Path(tag).expanduser()
    if path.suffix in (".npz", ".pth", ".pt", ".bin", ".safetensors") or path.is_file():
        if not path.is_file():
            raise MissingTimmWeightsError(f"MODEL.PRETRAINED {path} does not exist: put the checkpoint for {name} there "
                                          f"(e.g. Google's ViT-B_16.npz for the Convpass paper's VTAB-1K backbone)")
        model = create_model(name, False, extra)
        load_local_weights(model, path, pre_logits)
        return model
    full = name if tag == "timm" else f"{name.split('.')[0]}.{tag}"
    try:
        return create_model(full, True, extra)
    except Exception as e:  # offline, or an unknown tag: say what to provide
        raise MissingTimmWeightsError(
            f"Cannot load timm weights {full!r} ({type(e).__name__}); without internet access download them on "
            f"another machine (huggingface.co/timm/{full}) and set MODEL.PRETRAINED /path/to/model.safetensors") from e


def create_model(name: str, pretrained: bool, kwargs: dict) -> nn.Module:
    """timm.create_model; an architecture without an img_size argument (ConvNeXt: any size as it is) is made
    without it."""
    import timm

    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as e:
        if "img_size" not in str(e) or "img_size" not in kwargs:
            raise
        return timm.create_model(name, pretrained=pretrained, **{k: v for k, v in kwargs.items() if k != "img_size"})


def load_local_weights(model: nn.Module, path: Path, pre_logits: bool = True) -> None:
    """Google's .npz through timm's own converter (numpy arrays, never pickles), or a state dict (weights-only
    torch.load / safetensors) whose head is dropped when its shape is another class count's. A representation
    layer in the file (npz pre_logits/*, state dict pre_logits.fc.*) is kept before the head if pre_logits."""
    refuse_unsafe_load_override()
    if path.suffix == ".npz":
        import numpy as np

        model.load_pretrained(str(path))  # timm: reads the arrays, resamples the position embedding if needed
        with np.load(path, allow_pickle=False) as arrays:
            if "pre_logits/kernel" in arrays and not pre_logits:
                logger.info(f"{path}: its representation layer (pre_logits) is dropped (MODEL.PRE_LOGITS drop)")
            elif "pre_logits/kernel" in arrays:
                attach_representation(model, torch.from_numpy(arrays["pre_logits/kernel"]).T.float(),
                                      torch.from_numpy(arrays["pre_logits/bias"]).float())
        return
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise MissingTimmWeightsError(f"Cannot load {path} weights-only ({type(e).__name__}): a state dict of "
                                          f"tensors is expected (.pth/.pt), or .npz / .safetensors") from e
        state = state.get("model", state.get("state_dict", state)) if isinstance(state, dict) else state
    representation = (state.pop("pre_logits.fc.weight", None), state.pop("pre_logits.fc.bias", None))
    own = model.state_dict()
    convert = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if convert is not None and not any(k in own for k in list(state)[:5]):
        state = convert(state, model)  # timm's converter of the authors' files (Microsoft's Swin, FAIR's ConvNeXt)
    head = {k for k in state if k.startswith("head.") and (k not in own or own[k].shape != state[k].shape)}
    state = {k: v for k, v in state.items() if k not in head}
    missing = [k for k in own if k not in state and not k.startswith("head.")]
    wrong = [k for k in state if k not in own or own[k].shape != state[k].shape]
    if missing or wrong:
        raise MissingTimmWeightsError(f"{path} does not hold {type(model).__name__} weights of this shape: missing "
                                      f"{missing[:3]}, unexpected or of another shape {wrong[:3]}")
    model.load_state_dict(state, strict=False)
    if representation[0] is not None:
        if pre_logits:
            attach_representation(model, representation[0].float(), representation[1].float())
        else:
            logger.info(f"{path}: its representation layer (pre_logits) is dropped (MODEL.PRE_LOGITS drop)")
