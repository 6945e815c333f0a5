"""VPT (Jia et al., Visual Prompt Tuning): learnable prompt tokens inserted after [cls] at the input of the
first block (shallow) or of every block (deep, each block's own prompts). IVLP / MaPLe / PromptSRC put their
vision prompts in through the same `insert_prompts` (some blocks deep, through ln_pre, their own init); the
references append them after the patch tokens instead of after [cls], which computes the same: attention is
permutation-equivariant and prompts carry no positional embedding. They are removed before the
tower's pooling, so [cls] pooling never sees them and the token grid of later code is unchanged; Convpass
would treat them as prefix tokens (1x1 images), so the two compose. A fresh VPT model differs from
zero-shot CLIP (prompts take part in attention) except with length 0. On Swin the prompts follow VPT's
Swin variant (models/prompted_swin.py): in every window, averaged over windows, through patch merging, pooled.
"""
import math
from typing import Optional

import torch
from torch import nn

from clip_convpass.adapters.base import AdapterKind, AdapterModule, Injection, adapted_blocks
from clip_convpass.config import ConfigError
from clip_convpass.models.blocks import vision_transformer_parts
from clip_convpass.models.prompted_swin import WINDOW_PAIRINGS
from clip_convpass.registry import ADAPTER_REGISTRY


class VPTPrompts(AdapterModule):
    """init "xavier": VPT's uniform init over the patch size and init_width (the prompts' own width unless given:
    VPT's Swin uses the first stage's for every stage); "normal": N(0, init_std) (IVLP / PromptSRC)."""

    def __init__(self, layers: int, length: int, dim: int, patch_area: int, dropout: float = 0.0,
                 init: str = "xavier", init_std: float = 0.02, init_width: Optional[int] = None):
        super().__init__()
        self.prompts = nn.Parameter(torch.empty(layers, length, dim))
        if init == "xavier":
            val = math.sqrt(6.0 / float(3 * patch_area + (init_width or dim)))  # VPT's xavier-uniform-like init
            nn.init.uniform_(self.prompts, -val, val)
        elif init == "normal":
            nn.init.normal_(self.prompts, std=init_std)
        else:
            raise ValueError(f"unknown prompt init {init!r}: xavier | normal")
        self.dropout = nn.Dropout(dropout)  # VPT's prompt dropout (on while training only)

    @property
    def num_layers(self) -> int:
        return self.prompts.shape[0]

    @property
    def length(self) -> int:
        return self.prompts.shape[1]

    def layer(self, i: int, dtype: torch.dtype, batch: int = 1) -> torch.Tensor:
        """[batch, length, D]: dropout after the expansion, a mask per sample, as KMnP/vpt drops its ViT prompts."""
        prompts = self.prompts[i].to(dtype).expand(batch, -1, -1)
        return self.dropout(prompts) if self.dropout.p else prompts


class PromptedTransformer(nn.Module):
    """Replaces visual.transformer: inserts (and later removes) the prompt tokens around its blocks.

    prompts: any module with num_layers, length and layer(i, dtype, batch) -> [batch, length, D] (VPTPrompts, or MaPLe's
    prompts coupled from the text tower's). Block i < num_layers gets prompts.layer(i) in place of the previous
    block's prompt outputs (deep); later blocks carry the last ones on. ln_pre: a norm the first block's prompts
    pass through (IVLP appends its prompts before the tower's ln_pre; VPT inserts them after it).
    """

    def __init__(self, transformer: nn.Module, prompts: nn.Module, ln_pre: Optional[nn.Module] = None):
        super().__init__()
        self.inner = transformer
        self.vpt = prompts
        self.ln_pre = ln_pre
        self.enabled = True  # off: the frozen tower exactly (PromptSRC's zero-shot teacher)

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
        if not self.enabled:
            return self.inner(x, attn_mask=attn_mask)
        length = self.vpt.length
        b = x.shape[0]
        first = self.vpt.layer(0, x.dtype, b)
        if self.ln_pre is not None:
            first = self.ln_pre(first)
        x = torch.cat([x[:, :1], first, x[:, 1:]], dim=1)
        if not self.batch_first:
            x = x.transpose(0, 1)
        for i, block in enumerate(self.inner.resblocks):
            if 0 < i < self.vpt.num_layers and length:
                prompt = self.vpt.layer(i, x.dtype, b)
                if self.batch_first:
                    x = torch.cat([x[:, :1], prompt, x[:, 1 + length:]], dim=1)
                else:
                    x = torch.cat([x[:1], prompt.transpose(0, 1), x[1 + length:]], dim=0)
            x = block(x, attn_mask=attn_mask)
        if not self.batch_first:
            x = x.transpose(0, 1)
        return torch.cat([x[:, :1], x[:, 1 + length:]], dim=1)


def insert_prompts(visual: nn.Module, prompts: nn.Module, pre_norm: bool = False,
                   fast_attention: bool = True) -> PromptedTransformer:
    """Put prompt tokens into an open_clip image tower (module replacement of visual.transformer); pre_norm: the
    first block's prompts go through the tower's ln_pre, as tokens appended before it would."""
    adapted_blocks(visual, fast_attention)
    prompted = PromptedTransformer(visual.transformer, prompts, visual.ln_pre if pre_norm else None)
    visual.transformer = prompted
    return prompted


@ADAPTER_REGISTRY.register
class VPT(AdapterKind):
    NAME = "vpt"
    PAPER = "Jia et al., Visual Prompt Tuning (ECCV 2022)"
    # dropout: VPT's prompt dropout (0.0 in KMnP/vpt's code defaults, 0.1 in its VPT-Deep runs). window_pairing
    # (Swin only): "image" gives every window its own image's prompts; "reference" is KMnP/vpt's batch order
    # (models/prompted_swin.py), the same model with deep prompts whose last stage is one window (Swin-B at 224).
    OPTIONS = {"length": 10, "deep": False, "dropout": 0.0, "window_pairing": "image"}
    CONFIG_KEYS = {"length": "VPT_LENGTH", "dropout": "VPT_DROPOUT", "window_pairing": "VPT_WINDOW_PAIRING"}
    # The Convpass paper's budgets at ViT-B/16 (its Table 1: 0.063M and 0.53M; "prompt length follows the best
    # recipe in its original paper"): 82 x 768 = 62,976 and 58 x 12 x 768 = 534,528. VPT_LENGTH 10 gives the
    # 10-token prompts this project used before.
    PRESETS = {"vpt_shallow": {"deep": False, "length": 82}, "vpt_deep": {"deep": True, "length": 58}}
    PARAMS_AT_VIT_B16 = {"vpt_shallow": 82 * 768, "vpt_deep": 12 * 58 * 768}
    IDENTITY_OVERRIDES = {"length": 0}
    HIERARCHICAL = True  # Swin: VPT's prompted Swin (models/prompted_swin.py)

    @classmethod
    def identity_at_init(cls, options):
        return options["length"] == 0

    @classmethod
    def check(cls, options):
        if options["length"] < 0:
            raise ValueError(f"VPT_LENGTH must be >= 0, got {options['length']}")
        if not 0 <= options["dropout"] < 1:
            raise ValueError(f"VPT_DROPOUT must be in [0, 1), got {options['dropout']}")
        if options["window_pairing"] not in WINDOW_PAIRINGS:
            raise ValueError(f"VPT_WINDOW_PAIRING must be one of {', '.join(WINDOW_PAIRINGS)}, got "
                             f"{options['window_pairing']!r}")

    @classmethod
    def inject(cls, visual, options, fast_attention=True):
        if getattr(visual, "hierarchical", False):
            return cls.inject_swin(visual, options)
        if options["window_pairing"] != cls.OPTIONS["window_pairing"]:
            raise ConfigError("TRAINER.PETL.VPT_WINDOW_PAIRING pairs prompts with a Swin's windows; a ViT has none: "
                              "leave it unset")
        transformer = vision_transformer_parts(visual, "VPT")
        kh, kw = visual.conv1.kernel_size
        layers = len(transformer.resblocks) if options["deep"] else 1
        prompts = VPTPrompts(layers, options["length"], transformer.width, kh * kw, options["dropout"])
        insert_prompts(visual, prompts, fast_attention=fast_attention)
        return Injection(modules=[prompts])

    @classmethod
    def inject_swin(cls, visual, options):
        """KMnP/vpt's Swin prompts: deep, one set per block at its stage's width (the first block's is the shallow
        set); shallow, one set at the first stage's width. All take VPT's init at the first stage's width."""
        stages = visual.swin_stages()
        widths = [stage.blocks[0].norm1.normalized_shape[0] for stage in stages]
        kh, kw = visual.trunk.patch_embed.proj.kernel_size
        shapes = [(len(stage.blocks), width) for stage, width in zip(stages, widths)] if options["deep"] else \
            [(1, widths[0])]
        prompts = [VPTPrompts(layers, options["length"], width, kh * kw, options["dropout"], init_width=widths[0])
                   for layers, width in shapes]
        visual.insert_prompts(prompts, options["window_pairing"])
        return Injection(modules=prompts)
