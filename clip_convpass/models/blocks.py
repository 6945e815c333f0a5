"""Transformer blocks with a fused attention path and adapter slots (open_clip's blocks, wrapped).

`AdaptedBlock` wraps an open_clip (Custom)ResidualAttentionBlock by module replacement: with no adapter
it computes the block with one projection GEMM + scaled_dot_product_attention on batch-first tensors (see
attention.py), the path every tower takes; clip_convpass.adapters fills its slots:

- beside attention / the MLP (parallel): x + a + s * f(LN(x)); (residual): x + a + s * f(x)
- after attention / the MLP (sequential): x + a + s * f(a)
- on the q/k/v projections (`qkv` slot: LoRA), applied in the fused attention path
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from clip_convpass.config import ConfigError
from clip_convpass.models.attention import is_plain_self_attention, self_attention

# where an adapter reads its input: LN(x) (parallel), x itself (residual), the branch output (sequential)
SLOT_MODES = ("parallel", "residual", "sequential")


class AdaptedBlock(nn.Module):
    """An open_clip (Custom)ResidualAttentionBlock with adapter slots (see the module docstring)."""

    def __init__(self, block: nn.Module, batch_first: bool = True, fast_attention: bool = True):
        super().__init__()
        self.block = block
        attn = getattr(block, "attn", None)
        self.batch_first = batch_first
        self.fast_attention = (fast_attention and batch_first and is_plain_self_attention(attn)
                               and attn.dropout == 0.0 and hasattr(block, "attention"))
        self.attn_adapters: List[Tuple[str, str, float]] = []  # (attribute, parallel|sequential, scale)
        self.mlp_adapters: List[Tuple[str, str, float]] = []
        self.qkv_adapter: Optional[nn.Module] = None

    @property
    def has_adapters(self) -> bool:
        return bool(self.attn_adapters or self.mlp_adapters or self.qkv_adapter is not None)

    def add(self, where: str, mode: str, name: str, module: nn.Module, scale: float = 1.0) -> None:
        """Put `module` beside the attn or mlp branch (parallel: on the branch's normalised input; residual: on
        the stream entering the branch) or after it (sequential), as attribute `name`."""
        if mode not in SLOT_MODES or where not in ("attn", "mlp"):
            raise ValueError(f"unknown adapter slot {where}/{mode}")
        setattr(self, name, module)
        (self.attn_adapters if where == "attn" else self.mlp_adapters).append((name, mode, scale))

    def set_qkv(self, module: nn.Module) -> None:
        if not self.fast_attention:
            raise ConfigError("a q/k/v adapter needs a plain batch-first MultiheadAttention block")
        self.qkv_adapter = module

    def _attn_branch(self, y: torch.Tensor, attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
        b = self.block
        qkv = self.qkv_adapter
        if qkv is not None and not qkv.merged:  # LoRA while training: deltas on the projections
            return b.ls_1(qkv.attention(b.attn, y, attn_mask))
        # Every tower takes the same fused path, with or without gradients and under autocast (where
        # MultiheadAttention leaves its fast kernel): a fresh adapter model then computes exactly what
        # the frozen model does.
        if self.fast_attention:
            return b.ls_1(self_attention(b.attn, y, attn_mask))
        if hasattr(b, "attention"):  # ResidualAttentionBlock
            return b.ls_1(b.attention(q_x=y, attn_mask=attn_mask))
        return b.ls_1(b.ln_attn(b.attn(y, attn_mask=attn_mask)))  # CustomResidualAttentionBlock

    def _add_adapters(self, x: torch.Tensor, adapters, stream, branch_in, branch_out, drop=None) -> torch.Tensor:
        """drop: the branch's drop-path (timm blocks), applied to its adapters too, as PETL-ViT does."""
        for name, mode, scale in adapters:
            src = {"parallel": branch_in, "residual": stream, "sequential": branch_out}[mode]
            module = getattr(self, name)
            if self.batch_first:
                out = module(src)
            else:
                out = module(src.transpose(0, 1)).transpose(0, 1)
            x = x + scale * (drop(out) if drop is not None else out)
        return x

    def forward(self, q_x: torch.Tensor, k_x: Optional[torch.Tensor] = None, v_x: Optional[torch.Tensor] = None,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if k_x is not None or v_x is not None:
            raise NotImplementedError("adapters are defined for self-attention blocks only")
        b = self.block
        y = b.ln_1(q_x)
        a = self._attn_branch(y, attn_mask)
        x = self._add_adapters(q_x + a, self.attn_adapters, q_x, y, a, getattr(b, "drop_path_1", None))
        y = b.ln_2(x)
        m = b.ls_2(b.mlp(y))
        return self._add_adapters(x + m, self.mlp_adapters, x, y, m, getattr(b, "drop_path_2", None))


def vision_transformer_parts(visual: nn.Module, what: str):
    transformer = getattr(visual, "transformer", None)
    if transformer is None or not hasattr(transformer, "resblocks") or not hasattr(visual, "grid_size"):
        raise TypeError(f"{what} needs an open_clip VisionTransformer, got {type(visual).__name__}")
    return transformer


def fuse_attention(transformer: nn.Module) -> None:
    """Wrap every block of a tower in an AdaptedBlock without adapters (the fused attention path);
    blocks wrapped before are kept as they are."""
    for i, block in enumerate(transformer.resblocks):
        if not isinstance(block, AdaptedBlock):
            transformer.resblocks[i] = AdaptedBlock(block, transformer.batch_first)


def unwrapped(block: nn.Module) -> nn.Module:
    """The open_clip block inside an adapter-free wrapper (adapters refuse to be stacked)."""
    if isinstance(block, AdaptedBlock):
        if block.has_adapters:
            raise ConfigError("this model already has adapters injected; build a fresh model for another adapter")
        return block.block
    return block
