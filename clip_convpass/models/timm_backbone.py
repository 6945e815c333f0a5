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

from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import nn

from clip_convpass.config import ConfigError
from clip_convpass.models.attention import PackedAttention, self_attention
from clip_convpass.utils.errors import UserError, refuse_unsafe_load_override

TIMM_PREFIX = "timm:"
# The Convpass paper's Table 1 backbone: ViT-B/16 pretrained on ImageNet-21K, Google's original checkpoint
# (ViT-B_16.npz), which timm publishes as this tag (the same weights, converted; its 21,843-class head is replaced).
PAPER_VTAB_BACKBONE = "timm:vit_base_patch16_224.augreg_in21k"


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


def create_timm_vit(backbone: str, pretrained: str = "none", num_classes: int = 0, drop_path_rate: float = 0.0,
                    img_size=None, **kwargs) -> nn.Module:
    """A timm model from `timm:<name>` with `pretrained` a timm tag ("<name>.<tag>" or "timm" for the name's
    default), a local .npz / .pth / .pt / .safetensors file, or none; its head replaced for num_classes."""
    import timm

    name = backbone[len(TIMM_PREFIX):]
    if not name or not timm.is_model(name.split(".")[0]):
        raise ConfigError(f"MODEL.BACKBONE {backbone!r}: not a timm model name (timm.list_models())")
    extra = dict(kwargs, num_classes=num_classes, drop_path_rate=drop_path_rate)
    if img_size is not None:
        extra["img_size"] = img_size
    tag = str(pretrained)
    if tag.lower() in ("", "none", "random"):
        return timm.create_model(name, pretrained=False, **extra)
    path = Path(tag).expanduser()
    if path.suffix in (".npz", ".pth", ".pt", ".bin", ".safetensors") or path.is_file():
        if not path.is_file():
            raise MissingTimmWeightsError(f"MODEL.PRETRAINED {path} does not exist: put the checkpoint for {name} there "
                                          f"(e.g. Google's ViT-B_16.npz for the Convpass paper's VTAB-1K backbone)")
        model = timm.create_model(name, pretrained=False, **extra)
        load_local_weights(model, path)
        return model
    full = name if tag == "timm" else f"{name.split('.')[0]}.{tag}"
    try:
        return timm.create_model(full, pretrained=True, **extra)
    except Exception as e:  # offline, or an unknown tag: say what to provide
        raise MissingTimmWeightsError(
            f"Cannot load timm weights {full!r} ({type(e).__name__}); without internet access download them on "
            f"another machine (huggingface.co/timm/{full}) and set MODEL.PRETRAINED /path/to/model.safetensors") from e


def load_local_weights(model: nn.Module, path: Path) -> None:
    """Google's .npz through timm's own converter (numpy arrays, never pickles), or a state dict (weights-only
    torch.load / safetensors) whose head is dropped when its shape is another class count's."""
    refuse_unsafe_load_override()
    if path.suffix == ".npz":
        model.load_pretrained(str(path))  # timm: reads the arrays, resamples the position embedding if needed
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
    own = model.state_dict()
    head = {k for k in state if k.startswith("head.") and (k not in own or own[k].shape != state[k].shape)}
    state = {k: v for k, v in state.items() if k not in head}
    missing = [k for k in own if k not in state and not k.startswith("head.")]
    wrong = [k for k in state if k not in own or own[k].shape != state[k].shape]
    if missing or wrong:
        raise MissingTimmWeightsError(f"{path} does not hold {type(model).__name__} weights of this shape: missing "
                                      f"{missing[:3]}, unexpected or of another shape {wrong[:3]}")
    model.load_state_dict(state, strict=False)
