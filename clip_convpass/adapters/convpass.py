"""Convolutional bypasses (Convpass) for open_clip Vision Transformers.

A bypass is a ResNet-style bottleneck on the token sequence: 1x1 down projection (a Linear on
tokens), QuickGELU, 3x3 conv on the patch tokens restored to their 2-D grid (row-major, as the
patch embedding flattens them), QuickGELU, dropout, 1x1 up projection. Each prefix token ([cls])
is its own 1x1 image through the same conv, so only the centre tap and bias reach it.

Injection replaces every ResidualAttentionBlock of ``visual.transformer.resblocks`` by a
ConvpassBlock (an adapters.base.AdaptedBlock) that holds the original block and computes (parallel mode)

    x = x + ls_1(attn(ln_1(x))) + s * bypass_attn(ln_1(x))
    x = x + ls_2(mlp(ln_2(x)))  + s * bypass_mlp(ln_2(x))

Sequential mode feeds the branch output instead: x = x + a + s * bypass(a), a = ls_1(attn(ln_1(x))).
The up projection starts at zero, so a fresh model computes exactly what the pretrained one does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU
from torch import nn

from clip_convpass.adapters.base import AdapterKind, AdapterModule, Injection, adapted_blocks, block_width
from clip_convpass.config import ConfigError
from clip_convpass.models.blocks import AdaptedBlock, unwrapped, vision_transformer_parts
from clip_convpass.registry import ADAPTER_REGISTRY

POSITIONS = ("both", "attn", "mlp", "none")  # none: no bypasses (head-only training)
MODES = ("parallel", "sequential")
CONV_INITS = ("identity", "xavier")


@dataclass(frozen=True)
class ConvpassSpec:
    hidden: int = 8
    scale: float = 1.0
    kernel_size: int = 3
    dropout: float = 0.1
    conv_init: str = "identity"
    positions: str = "both"
    mode: str = "parallel"
    share: bool = False  # Convpass_share: one down/up pair for all bypasses, depthwise conv per bypass, no biases
    fast_attention: bool = True  # batch-first fused attention in training (see ConvpassBlock._attn_branch)
    # the kernel of the bypasses beside attention / the MLP (0: kernel_size): the paper's 1x1-vs-3x3 ablation (Table 5)
    attn_kernel_size: int = 0
    mlp_kernel_size: int = 0

    def __post_init__(self):
        if self.hidden < 1:
            raise ValueError(f"HIDDEN (Convpass bottleneck width) must be >= 1, got {self.hidden}")
        for key, value, choices in (("KERNEL_SIZE", self.kernel_size, (1, 3)),
                                    ("ATTN_KERNEL_SIZE", self.attn_kernel_size, (0, 1, 3)),
                                    ("MLP_KERNEL_SIZE", self.mlp_kernel_size, (0, 1, 3))):
            if value not in choices:
                raise ValueError(f"{key} (Convpass conv kernel) must be one of {choices}, got {value}")
        for value, choices, key in ((self.positions, POSITIONS, "POSITIONS"), (self.mode, MODES, "MODE"),
                                    (self.conv_init, CONV_INITS, "CONV_INIT")):
            if value not in choices:
                raise ValueError(f"{key} (Convpass) must be one of {choices}, got {value!r}")

    @classmethod
    def from_cfg(cls, node) -> "ConvpassSpec":
        return cls(hidden=node.HIDDEN, scale=node.SCALE, kernel_size=node.KERNEL_SIZE, dropout=node.DROPOUT,
                   conv_init=node.CONV_INIT, positions=node.POSITIONS, mode=node.MODE, share=node.SHARE,
                   fast_attention=node.FAST_ATTENTION, attn_kernel_size=node.ATTN_KERNEL_SIZE,
                   mlp_kernel_size=node.MLP_KERNEL_SIZE)

    def kernel(self, where: str) -> int:
        """The conv kernel of the bypasses beside "attn" or "mlp"."""
        return (self.attn_kernel_size if where == "attn" else self.mlp_kernel_size) or self.kernel_size


class SharedProjections(AdapterModule):
    """The down/up pair shared by all bypasses of Convpass_share (no biases)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.down = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(hidden, dim, bias=False)
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.up.weight)


class Convpass(AdapterModule):
    def __init__(self, dim: int, grid_size: Tuple[int, int], spec: ConvpassSpec,
                 shared: Optional[SharedProjections] = None, kernel_size: int = 0):
        super().__init__()
        h = spec.hidden
        self.grid_size = tuple(grid_size)
        self.hidden = h
        self.shared = shared is not None
        if shared is None:
            self.down = nn.Linear(dim, h)
            self.up = nn.Linear(h, dim)
            nn.init.xavier_uniform_(self.down.weight)
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
        else:
            # Registered in every bypass; parameters() de-duplicates, so each weight counts (and trains) once.
            self.down, self.up = shared.down, shared.up
        k = kernel_size or spec.kernel_size
        self.conv = nn.Conv2d(h, h, k, padding=k // 2, groups=h if self.shared else 1, bias=not self.shared)
        with torch.no_grad():
            if spec.conv_init == "identity":
                self.conv.weight.zero_()
                c = k // 2
                if self.shared:
                    self.conv.weight[:, 0, c, c] = 1.0
                else:
                    self.conv.weight[:, :, c, c] = torch.eye(h)
            else:
                nn.init.xavier_uniform_(self.conv.weight)
            if self.conv.bias is not None:
                self.conv.bias.zero_()
        self.act = QuickGELU()
        self.dropout = nn.Dropout(spec.dropout)

    def _centre_tap(self, t: torch.Tensor) -> torch.Tensor:
        """The conv applied to a 1x1 image: only the centre tap (and bias) reach it."""
        c = self.conv.kernel_size[0] // 2
        w = self.conv.weight[:, :, c, c]
        out = t * w[:, 0] if self.shared else F.linear(t, w)
        return out + self.conv.bias if self.conv.bias is not None else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, N, D] batch-first tokens, N = prefix tokens + grid_h * grid_w patch tokens."""
        b, n, _ = x.shape
        gh, gw = self.grid_size
        n_prefix = n - gh * gw
        if n_prefix < 0:
            raise ValueError(f"Convpass expects at least {gh * gw} tokens for a {gh}x{gw} grid, got {n}")
        z = self.act(self.down(x))
        patches = z[:, n_prefix:].transpose(1, 2).reshape(b, self.hidden, gh, gw)
        patches = self.conv(patches).flatten(2).transpose(1, 2)
        if n_prefix:
            z = torch.cat([self._centre_tap(z[:, :n_prefix]), patches], dim=1)
        else:
            z = patches
        return self.up(self.dropout(self.act(z)))


class ConvpassBlock(AdaptedBlock):
    """An open_clip block with Convpass bypasses beside (parallel) or after (sequential) its two branches."""

    def __init__(self, block: nn.Module, bypass_attn: Optional[Convpass], bypass_mlp: Optional[Convpass],
                 scale: float, mode: str, batch_first: bool = True, fast_attention: bool = True):
        super().__init__(block, batch_first, fast_attention)
        for where, bypass in (("attn", bypass_attn), ("mlp", bypass_mlp)):
            if bypass is not None:
                self.add(where, mode, f"bypass_{where}", bypass, scale)


def inject_convpass(visual: nn.Module, spec: ConvpassSpec) -> List[Convpass]:
    """Replace each block of an open_clip VisionTransformer with a ConvpassBlock; returns the bypasses."""
    transformer = vision_transformer_parts(visual, "Convpass")
    if not isinstance(visual.patch_dropout, nn.Identity):
        raise ValueError("Convpass needs every patch token on its grid; build the model without patch dropout")
    blocks = [unwrapped(b) for b in transformer.resblocks]  # refuses a model that has adapters already
    dim = transformer.width
    grid = tuple(visual.grid_size)
    shared = SharedProjections(dim, spec.hidden) if spec.share else None
    if shared is not None:
        visual.convpass_shared = shared
    bypasses: List[Convpass] = []

    def make(where: str) -> Convpass:
        bp = Convpass(dim, grid, spec, shared, spec.kernel(where))
        bypasses.append(bp)
        return bp

    if spec.positions == "none":
        return bypasses
    for i, block in enumerate(blocks):
        ba = make("attn") if spec.positions in ("both", "attn") else None
        bm = make("mlp") if spec.positions in ("both", "mlp") else None
        transformer.resblocks[i] = ConvpassBlock(block, ba, bm, spec.scale, spec.mode, transformer.batch_first,
                                                 spec.fast_attention)
    return bypasses


def inject_convpass_swin(visual: nn.Module, spec: ConvpassSpec) -> List[Convpass]:
    """Bypasses in every Swin block's slots (adapters.base.adapted_blocks): of the block's width, convolving its
    stage's H x W map (no [cls] token). In parallel mode this is PETL-ViT's forward_swin_block: the bypass reads the
    normalised map whole, before the cyclic shift and window partition, and shares the branch's drop-path."""
    if spec.share:
        raise ValueError("SHARE: Swin's stages have different widths; one shared down/up pair cannot serve them")
    bypasses: List[Convpass] = []
    if spec.positions == "none":
        return bypasses
    for block in adapted_blocks(visual, fast_attention=False):
        for where in ("attn", "mlp"):
            if spec.positions in ("both", where):
                bp = Convpass(block_width(block), block.block.grid_size, spec, kernel_size=spec.kernel(where))
                block.add(where, spec.mode, f"bypass_{where}", bp, spec.scale)
                bypasses.append(bp)
    return bypasses


def is_bypass_parameter(name: str) -> bool:
    return ".bypass_" in name or name.startswith("bypass_") or "convpass_shared." in name


@ADAPTER_REGISTRY.register
class ConvpassAdapter(AdapterKind):
    NAME = "convpass"
    PAPER = "Jie & Deng, Convolutional Bypasses Are Better Vision Transformer Adapters"
    OPTIONS = {"hidden": 8, "scale": 1.0, "kernel_size": 3, "dropout": 0.1, "conv_init": "identity",
               "positions": "both", "mode": "parallel", "share": False, "attn_kernel_size": 0, "mlp_kernel_size": 0}
    PRESETS = {"convpass": {}, "convpass_attn": {"positions": "attn"},
               "convpass_share": {"hidden": 32, "share": True}}
    PARAMS_AT_VIT_B16 = {"convpass": 327552, "convpass_attn": 163776, "convpass_share": 56064}
    HIERARCHICAL = True  # Swin: inject_convpass_swin

    @classmethod
    def spec(cls, options, fast_attention=True) -> ConvpassSpec:
        return ConvpassSpec(**options, fast_attention=fast_attention)

    @classmethod
    def check(cls, options):
        cls.spec(options)

    @classmethod
    def inject(cls, visual, options, fast_attention=True):
        if getattr(visual, "hierarchical", False):
            try:
                return Injection(modules=inject_convpass_swin(visual, cls.spec(options, fast_attention)))
            except ValueError as e:
                raise ConfigError(f"TRAINER.PETL.{e}") from e
        bypasses = inject_convpass(visual, cls.spec(options, fast_attention))
        shared = getattr(visual, "convpass_shared", None)
        return Injection(modules=[*bypasses, *([shared] if shared is not None else [])])
