"""LoRA (Hu et al., LoRA: Low-Rank Adaptation of Large Language Models) on W_q and W_v of every block:
q = W_q x + s * B_q A_q x (v likewise), B zero-initialised. While training the deltas are added to the
packed projection in the fused attention path; for evaluation they are merged into the frozen weights
(W_q + s B_q A_q), so inference costs exactly what the frozen model costs, on MHA's own kernel.

Why not peft: peft's LoRA for nn.MultiheadAttention adapts the packed in_proj as a whole (q, k and v);
the paper's budget puts LoRA on q and v only, and our fused training path needs the deltas per slice.
"""
import math

import torch
from torch import nn

from clip_convpass.adapters.base import AdapterKind, AdapterModule, Injection, adapted_blocks
from clip_convpass.models.attention import attention_from_qkv, project_qkv
from clip_convpass.registry import ADAPTER_REGISTRY
from clip_convpass.utils.errors import UserError


class LoRAQV(AdapterModule):
    def __init__(self, attn: nn.MultiheadAttention, rank: int, scale: float):
        super().__init__()
        d = attn.embed_dim
        self.scale = scale
        self.a_q, self.a_v = (nn.Parameter(torch.empty(rank, d)) for _ in range(2))
        self.b_q, self.b_v = (nn.Parameter(torch.zeros(d, rank)) for _ in range(2))
        for a in (self.a_q, self.a_v):
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # LoRA's init of A
        object.__setattr__(self, "target", attn)  # not a submodule: its weights are the frozen model's
        self.register_buffer("base_weight", attn.in_proj_weight.detach().clone(), persistent=False)
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        d = self.b_q.shape[0]
        zeros = self.b_q.new_zeros(d, d)
        return torch.cat([self.scale * self.b_q @ self.a_q, zeros, self.scale * self.b_v @ self.a_v])

    def attention(self, attn: nn.MultiheadAttention, y: torch.Tensor, attn_mask=None) -> torch.Tensor:
        """The unmerged path: frozen projection plus the low-rank deltas of q and v."""
        qkv = project_qkv(attn, y)
        d = attn.embed_dim
        dq = self.scale * (y @ self.a_q.t()) @ self.b_q.t()
        dv = self.scale * (y @ self.a_v.t()) @ self.b_v.t()
        qkv = torch.cat([qkv[..., :d] + dq, qkv[..., d:2 * d], qkv[..., 2 * d:] + dv], dim=-1)
        return attention_from_qkv(attn, qkv, attn_mask)

    @torch.no_grad()
    def wise_ft_interpolate_(self, theta0, theta1, alpha: float) -> None:
        """WiSE-FT interpolates the weights the model computes with, W0 + alpha (W1 - W0) = W0 + alpha s B1 A1
        (B starts at zero): A = A1 and B = alpha B1. Interpolating A and B apart would be quadratic in alpha."""
        for side in ("q", "v"):
            if theta0[f"b_{side}"].any():
                raise UserError("LoRA's WiSE-FT needs B = 0 at the start of fine-tuning (LoRA's init)")
            getattr(self, f"a_{side}").copy_(theta1[f"a_{side}"])
            getattr(self, f"b_{side}").copy_(alpha * theta1[f"b_{side}"])

    @torch.no_grad()
    def merge(self) -> None:
        self.target.in_proj_weight.copy_(self.base_weight + self.delta_weight().to(self.base_weight.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        self.target.in_proj_weight.copy_(self.base_weight)  # the stored original: exact, not W + d - d
        self.merged = False

    def train(self, mode: bool = True):
        super().train(mode)
        self.unmerge() if mode else self.merge()
        return self


@ADAPTER_REGISTRY.register
class LoRA(AdapterKind):
    NAME = "lora"
    PAPER = "Hu et al., LoRA (ICLR 2022)"
    OPTIONS = {"rank": 8, "scale": 1.0}
    CONFIG_KEYS = {"rank": "LORA_RANK"}
    PRESETS = {"lora": {}}
    PARAMS_AT_VIT_B16 = {"lora": 294912}

    @classmethod
    def check(cls, options):
        if options["rank"] < 1:
            raise ValueError(f"LORA_RANK must be >= 1, got {options['rank']}")

    @classmethod
    def inject(cls, visual, options, fast_attention=True):
        modules = []
        for block in adapted_blocks(visual, True):  # the q/v deltas need the fused path
            m = LoRAQV(block.block.attn, options["rank"], options["scale"])
            block.set_qkv(m)
            block.lora = m
            modules.append(m)
        return Injection(modules=modules)
