"""VPT's prompts in a timm Swin Transformer (KMnP/vpt `PromptedSwinTransformer`, location "prepend"): the prompt
tokens of Jia et al.'s Swin experiments, the Convpass paper's Swin-B VPT row.

`PromptedSwinStages` replaces the trunk's `layers` (module replacement; every Swin weight stays where it was and
frozen). The prompts are P tokens in front of each image's H*W tokens:
- in a block they are copied into every window as queries, keys and values, with zero relative-position bias and
  zero shifted-window mask (a prompt is never masked), and their outputs are averaged over the windows; the
  block's residuals and MLP then act on all P + H*W tokens;
- at a patch merging they are tiled 4x along channels and go through the merging's frozen norm and reduction;
- deep: before block i of stage s the prompt tokens are replaced by that block's own; shallow: the first block's
  prompts are carried on through every stage;
- they return as a 1 x (P + H*W) map, so timm's final norm and average pool take them in, as VPT's pooling does.

Window pairing: "image" (the default) gives each window its own image's prompts. "reference" reproduces
KMnP/vpt's index arithmetic, which orders windows image-major but prompts window-major, so window w of image b
gets the prompts of image (b * nW + w) mod B and each prompt output averages windows of several images: outputs
depend on the rest of the batch. With deep prompts the two compute the same when the last stage is one window
(Swin-B at 224: 7 x 7, window 7; the published row) and no prompt dropout acts: every block's input prompts are
then equal across images and the mixed outputs are overwritten before they are read, except the last block's,
which are pooled (tested both ways).
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from clip_convpass.config import ConfigError

WINDOW_PAIRINGS = ("image", "reference")


class PromptedSwinStages(nn.Module):
    """A timm SwinTransformer's `layers` with prompt tokens. prompts: one module per stage that has prompts (all
    stages deep, the first one shallow), each with num_layers, length and layer(i, dtype, batch) -> [batch, P, stage
    width]. As in KMnP/vpt, the first prompts are dropped out per sample, the deep ones once for the batch."""

    def __init__(self, stages: nn.Sequential, prompts: List[nn.Module], pairing: str = "image"):
        super().__init__()
        if pairing not in WINDOW_PAIRINGS:
            raise ValueError(f"window pairing {pairing!r}: one of {', '.join(WINDOW_PAIRINGS)}")
        from timm.models.swin_transformer import PatchMerging, WindowAttention

        for stage in stages:
            if not isinstance(stage.downsample, (nn.Identity, PatchMerging)) or not all(
                    isinstance(block.attn, WindowAttention) for block in stage.blocks):
                raise ConfigError(f"VPT's prompted Swin needs timm's SwinTransformer (window attention with a relative-"
                                  f"position table, PatchMerging between stages), got a stage of "
                                  f"{type(stage.blocks[0]).__name__}")
        self.stages = stages
        self.prompts = nn.ModuleList(prompts)
        self.pairing = pairing
        self.length = prompts[0].length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: the patch embedding, (B, H, W, C); returns (B, 1, P + H'*W', C') for timm's norm and head."""
        if not self.length:  # no prompts: Swin's own forward, exactly
            return self.stages(x)
        b = x.shape[0]
        prompts = None
        for s, stage in enumerate(self.stages):
            if prompts is None:  # the first stage: the prompts join after its merging, if it has one
                x = stage.downsample(x)
                prompts = self.prompts[0].layer(0, x.dtype, b)
            else:
                prompts, x = self.merge(stage.downsample, prompts, x)
            for i, block in enumerate(stage.blocks):
                if s < len(self.prompts) and i < self.prompts[s].num_layers and (s, i) != (0, 0):
                    prompts = self.prompts[s].layer(i, x.dtype).expand(b, -1, -1)  # one dropout mask for all
                prompts, x = self.block(block, prompts, x)
        return torch.cat([prompts, x.flatten(1, 2)], dim=1).unsqueeze(1)

    @staticmethod
    def merge(downsample: nn.Module, prompts: torch.Tensor, x: torch.Tensor):
        """A stage's patch merging (or none): the prompts, tiled 4x, through its norm and reduction."""
        if isinstance(downsample, nn.Identity):
            return prompts, x
        return downsample.reduction(downsample.norm(prompts.repeat(1, 1, 4))), downsample(x)

    def block(self, block: nn.Module, prompts: torch.Tensor, x: torch.Tensor):
        """One SwinTransformerBlock on the prompts (B, P, C) and the map (B, H, W, C)."""
        b, h, w, c = x.shape
        length = prompts.shape[1]
        tokens = torch.cat([prompts, x.reshape(b, h * w, c)], dim=1)
        normed = block.norm1(tokens)
        attended_prompts, attended = self.window_attention(block, normed[:, :length], normed[:, length:].reshape(x.shape))
        tokens = tokens + block.drop_path1(torch.cat([attended_prompts, attended.reshape(b, h * w, c)], dim=1))
        tokens = tokens + block.drop_path2(block.mlp(block.norm2(tokens)))
        return tokens[:, :length], tokens[:, length:].reshape(b, h, w, c)

    def window_attention(self, block: nn.Module, prompts: torch.Tensor, x: torch.Tensor):
        """timm's shifted-window attention (block._attn) with the prompts in every window."""
        from timm.models.swin_transformer import window_partition, window_reverse

        b, h, w, c = x.shape
        length = prompts.shape[1]
        shift, window = block.shift_size, block.window_size
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        pad_h, pad_w = (window[0] - h % window[0]) % window[0], (window[1] - w % window[1]) % window[1]
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = x.shape[1:3]
        windows = window_partition(x, window).view(-1, window[0] * window[1], c)  # image-major
        n_windows = windows.shape[0] // b
        if self.pairing == "image":
            window_prompts = prompts.repeat_interleave(n_windows, dim=0)
        else:  # KMnP/vpt: window-major prompts against image-major windows
            window_prompts = prompts.unsqueeze(0).expand(n_windows, -1, -1, -1).reshape(-1, length, c)
        mask = block.get_attn_mask(x) if getattr(block, "dynamic_mask", False) else block.attn_mask
        out = self.attention(block.attn, torch.cat([window_prompts, windows], dim=1), length, mask)
        if self.pairing == "image":
            prompts = out[:, :length].reshape(b, n_windows, length, c).mean(1)
        else:
            prompts = out[:, :length].reshape(n_windows, b, length, c).mean(0)
        x = window_reverse(out[:, length:].reshape(-1, *window, c), window, hp, wp)[:, :h, :w]
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return prompts, x

    @staticmethod
    def attention(attn: nn.Module, x: torch.Tensor, length: int, mask) -> torch.Tensor:
        """timm's WindowAttention on (B * nW, P + A, C), its relative-position bias and mask zero-padded for the
        prompts."""
        n = x.shape[1]
        bias = F.pad(attn._get_rel_pos_bias(), (length, 0, length, 0))  # (1, heads, P + A, P + A)
        q, k, v = attn.qkv(x).reshape(x.shape[0], n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if mask is not None:
            n_windows = mask.shape[0]
            bias = (bias.unsqueeze(0) + F.pad(mask, (length, 0, length, 0)).view(1, n_windows, 1, n, n))
            bias = bias.expand(x.shape[0] // n_windows, -1, -1, -1, -1).reshape(-1, attn.num_heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=attn.scale,
                                             dropout_p=attn.attn_drop.p if attn.training else 0.0)
        return attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(x.shape[0], n, -1)))
