"""nn.MultiheadAttention's math on contiguous batch-first tensors, in pieces that callers recombine.

Used where open_clip's own call is slow or cannot express the computation: Convpass training
(MultiheadAttention's slow path projects a transposed view) and the text encoder's shared prefix
(queries of each prompt attend to keys/values computed once).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PackedAttention(nn.Module):
    """A timm Attention seen as a packed-projection self-attention (attention.py's fused path and LoRA read
    in_proj_weight / in_proj_bias / out_proj / num_heads, as on nn.MultiheadAttention)."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        if not all(isinstance(getattr(attn, n, nn.Identity()), nn.Identity) for n in ("q_norm", "k_norm", "norm")):
            raise ValueError("adapters need timm attention without q/k norms (a plain ViT block)")
        if getattr(attn, "gate", None) is not None or attn.qkv.bias is None:
            raise ValueError("adapters need timm attention with a biased packed qkv projection and no gate")
        if attn.attn_drop.p or attn.proj_drop.p:  # the fused path applies neither: refuse rather than drop them
            raise ValueError("adapters need timm attention without attention / projection dropout (attn_drop_rate "
                             "and proj_drop_rate 0, timm's default for ViTs)")
        self.inner = attn
        self.embed_dim = attn.qkv.in_features
        self.num_heads = attn.num_heads
        self.dropout = attn.attn_drop.p
        self.batch_first = True

    @property
    def in_proj_weight(self) -> nn.Parameter:
        return self.inner.qkv.weight

    @property
    def in_proj_bias(self) -> nn.Parameter:
        return self.inner.qkv.bias

    @property
    def out_proj(self) -> nn.Linear:
        return self.inner.proj


def is_plain_self_attention(attn: nn.Module) -> bool:
    """A packed-projection MultiheadAttention with biases and none of its extras (bias_k, zero attention), or a
    timm attention seen as one (models/timm_backbone.py PackedAttention)."""
    if isinstance(attn, PackedAttention):
        return True
    return (isinstance(attn, nn.MultiheadAttention) and attn._qkv_same_embed_dim and attn.in_proj_bias is not None
            and attn.bias_k is None and not attn.add_zero_attn)


def project_qkv(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """x [B, N, D] -> packed q, k, v projections [B, N, 3D] (one GEMM on the contiguous input)."""
    return F.linear(x, attn.in_proj_weight, attn.in_proj_bias)


def split_heads(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, N, 3D] -> q, k, v stacked as [3, B, heads, N, D / heads]."""
    b, n, d3 = qkv.shape
    return qkv.view(b, n, 3, num_heads, d3 // (3 * num_heads)).permute(2, 0, 3, 1, 4)


def qkv_heads(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """x [B, N, D] -> q, k, v stacked as [3, B, heads, N, D / heads]."""
    return split_heads(project_qkv(attn, x), attn.num_heads)


def output_projection(attn: nn.MultiheadAttention, heads: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, D / heads] -> [B, N, D] through the output projection."""
    b, h, n, hd = heads.shape
    return F.linear(heads.transpose(1, 2).reshape(b, n, h * hd), attn.out_proj.weight, attn.out_proj.bias)


def attention_from_qkv(attn: nn.MultiheadAttention, qkv: torch.Tensor, attn_mask=None) -> torch.Tensor:
    """Packed projections [B, N, 3D] -> attention output [B, N, D] (scaled dot product + out_proj)."""
    q, k, v = split_heads(qkv, attn.num_heads)
    mask = attn_mask.to(qkv.dtype) if attn_mask is not None else None
    return output_projection(attn, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def self_attention(attn: nn.MultiheadAttention, x: torch.Tensor, attn_mask=None) -> torch.Tensor:
    return attention_from_qkv(attn, project_qkv(attn, x), attn_mask)
