"""LoRA (Hu et al., LoRA: Low-Rank Adaptation of Large Language Models) on W_q and W_v of every block (any of
q, k, v and either tower through inject_lora: CLIP-LoRA):
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

QKV = "qkv"


class LoRAQV(AdapterModule):
    """Low-rank deltas on some of q, k, v of one attention (targets, default q and v):
    W_t + s B_t A_t, with dropout on the deltas' input while training (CLIP-LoRA: 0.25)."""

    def __init__(self, attn: nn.MultiheadAttention, rank: int, scale: float, targets: str = "qv",
                 dropout: float = 0.0):
        super().__init__()
        if not targets or set(targets) - set(QKV) or len(set(targets)) != len(targets):
            raise ValueError(f"LoRA targets must be distinct letters of {QKV!r}, got {targets!r}")
        d = attn.embed_dim
        self.scale = scale
        self.targets = "".join(t for t in QKV if t in targets)  # q, k, v order: the packed projection's
        for t in self.targets:
            a = nn.Parameter(torch.empty(rank, d))
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # LoRA's init of A
            setattr(self, f"a_{t}", a)
            setattr(self, f"b_{t}", nn.Parameter(torch.zeros(d, rank)))
        self.dropout = nn.Dropout(dropout)  # on the branch input only, off at evaluation (merged anyway)
        object.__setattr__(self, "target", attn)  # not a submodule: its weights are the frozen model's
        self.register_buffer("base_weight", attn.in_proj_weight.detach().clone(), persistent=False)
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        d = self.base_weight.shape[1]
        return torch.cat([self.scale * getattr(self, f"b_{t}") @ getattr(self, f"a_{t}") if t in self.targets
                          else self.base_weight.new_zeros(d, d) for t in QKV])

    def attention(self, attn: nn.MultiheadAttention, y: torch.Tensor, attn_mask=None) -> torch.Tensor:
        """The unmerged path: frozen projection plus the low-rank deltas of the targets."""
        qkv = project_qkv(attn, y)
        d = attn.embed_dim
        x = self.dropout(y)
        parts = []
        for i, t in enumerate(QKV):
            part = qkv[..., i * d:(i + 1) * d]
            if t in self.targets:
                part = part + self.scale * (x @ getattr(self, f"a_{t}").t()) @ getattr(self, f"b_{t}").t()
            parts.append(part)
        return attention_from_qkv(attn, torch.cat(parts, dim=-1), attn_mask)

    @torch.no_grad()
    def wise_ft_interpolate_(self, theta0, theta1, alpha: float) -> None:
        """WiSE-FT interpolates the weights the model computes with, W0 + alpha (W1 - W0) = W0 + alpha s B1 A1
        (B starts at zero): A = A1 and B = alpha B1. Interpolating A and B apart would be quadratic in alpha."""
        for side in self.targets:
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


def inject_lora(blocks, rank: int, scale: float, targets: str = "qv", dropout: float = 0.0) -> Injection:
    """LoRA into each AdaptedBlock of `blocks` (either tower), as attribute `lora` and the block's q/k/v slot."""
    modules = []
    for block in blocks:
        m = LoRAQV(block.block.attn, rank, scale, targets, dropout)
        block.set_qkv(m)
        block.lora = m
        modules.append(m)
    return Injection(modules=modules)


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
        return inject_lora(adapted_blocks(visual, True), options["rank"], options["scale"])  # deltas: fused path
