"""CLIP image classifier: (possibly adapted) image tower -> L2-normalised feature -> linear head."""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .clip_loader import ClipBundle
from .prompts import build_text_classifier
from .text_encoder import TextEncoder

HEAD_INITS = ("text", "random", "zero")


class CLIPClassifier(nn.Module):
    def __init__(self, visual: nn.Module, head: nn.Linear):
        super().__init__()
        self.visual = visual
        self.head = head

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(images), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(images))


def zero_shot_weights(bundle: ClipBundle, classnames: Sequence[str], templates: Union[str, Sequence[str]],
                      device: Union[str, torch.device] = "cpu", truncate: bool = True) -> torch.Tensor:
    """logit_scale.exp() * normalised text classifier, [C, D]."""
    text = TextEncoder(bundle.model, truncate).to(device)
    weights = build_text_classifier(text, bundle.tokenizer, classnames, templates, device)
    return bundle.model.logit_scale.exp().item() * weights


def build_head(bundle: ClipBundle, classnames: Sequence[str], templates, init: str = "text",
               device: Union[str, torch.device] = "cpu", seed: int = 0, truncate: bool = True) -> nn.Linear:
    """Linear head over L2-normalised image features; bias zero.

    init: "text" = zero-shot classifier (logit_scale * normalised text embeddings);
    "random" = random unit rows times logit_scale (same scale, no text information); "zero" = all zeros.
    """
    if init not in HEAD_INITS:
        raise ValueError(f"Unknown head init {init!r}; choices: {HEAD_INITS}")
    scale = bundle.model.logit_scale.exp().item()
    dim = bundle.model.visual.output_dim
    head = nn.Linear(dim, len(classnames), bias=True)
    with torch.no_grad():
        head.bias.zero_()
        if init == "text":
            head.weight.copy_(zero_shot_weights(bundle, classnames, templates, device, truncate).cpu())
        elif init == "random":
            g = torch.Generator().manual_seed(seed)
            head.weight.copy_(scale * F.normalize(torch.randn(len(classnames), dim, generator=g), dim=-1))
        else:
            head.weight.zero_()
    return head
