"""VPT (Jia et al., Visual Prompt Tuning): learnable prompt tokens inserted after [cls] at the input of the
first block (shallow) or of every block (deep, each block's own prompts). They are removed before the
tower's pooling, so [cls] pooling never sees them and the token grid of later code is unchanged; Convpass
would treat them as prefix tokens (1x1 images), so the two compose. A fresh VPT model differs from
zero-shot CLIP (prompts take part in attention) except with length 0.
"""
import math

import torch
from torch import nn

from clip_convpass.adapters.base import AdapterKind, AdapterModule, Injection, adapted_blocks
from clip_convpass.registry import ADAPTER_REGISTRY


class VPTPrompts(AdapterModule):
    def __init__(self, layers: int, length: int, dim: int, patch_area: int):
        super().__init__()
        self.prompts = nn.Parameter(torch.empty(layers, length, dim))
        val = math.sqrt(6.0 / float(3 * patch_area + dim))  # VPT's xavier-uniform-like init
        nn.init.uniform_(self.prompts, -val, val)


class PromptedTransformer(nn.Module):
    """Replaces visual.transformer: inserts (and later removes) the prompt tokens around its blocks."""

    def __init__(self, transformer: nn.Module, prompts: VPTPrompts, deep: bool):
        super().__init__()
        self.inner = transformer
        self.vpt = prompts
        self.deep = deep

    # what other code reads of an open_clip Transformer
    @property
    def resblocks(self):
        return self.inner.resblocks

    @property
    def width(self) -> int:
        return self.inner.width

    @property
    def batch_first(self) -> bool:
        return self.inner.batch_first

    def forward(self, x: torch.Tensor, attn_mask=None) -> torch.Tensor:
        """x: [B, 1 + N, D] batch-first, as open_clip's VisionTransformer hands it over."""
        p = self.vpt.prompts
        length = p.shape[1]
        b = x.shape[0]
        x = torch.cat([x[:, :1], p[0].to(x.dtype).expand(b, -1, -1), x[:, 1:]], dim=1)
        if not self.batch_first:
            x = x.transpose(0, 1)
        for i, block in enumerate(self.inner.resblocks):
            if self.deep and i > 0 and length:
                prompt = p[i].to(x.dtype).expand(b, -1, -1)
                if self.batch_first:
                    x = torch.cat([x[:, :1], prompt, x[:, 1 + length:]], dim=1)
                else:
                    x = torch.cat([x[:1], prompt.transpose(0, 1), x[1 + length:]], dim=0)
            x = block(x, attn_mask=attn_mask)
        if not self.batch_first:
            x = x.transpose(0, 1)
        return torch.cat([x[:, :1], x[:, 1 + length:]], dim=1)


@ADAPTER_REGISTRY.register
class VPT(AdapterKind):
    NAME = "vpt"
    PAPER = "Jia et al., Visual Prompt Tuning (ECCV 2022)"
    OPTIONS = {"length": 10, "deep": False}
    CONFIG_KEYS = {"length": "VPT_LENGTH"}
    PRESETS = {"vpt_shallow": {"deep": False}, "vpt_deep": {"deep": True}}
    PARAMS_AT_VIT_B16 = {"vpt_shallow": 10 * 768, "vpt_deep": 12 * 10 * 768}

    @classmethod
    def check(cls, options):
        if options["length"] < 0:
            raise ValueError(f"VPT_LENGTH must be >= 0, got {options['length']}")

    @classmethod
    def inject(cls, visual, options, fast_attention=True):
        adapted_blocks(visual, fast_attention)
        transformer = visual.transformer
        kh, kw = visual.conv1.kernel_size
        layers = len(transformer.resblocks) if options["deep"] else 1
        prompts = VPTPrompts(layers, options["length"], transformer.width, kh * kw)
        visual.transformer = PromptedTransformer(transformer, prompts, options["deep"])
        return Injection(modules=[prompts])
