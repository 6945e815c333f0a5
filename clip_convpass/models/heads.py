"""CLIP image classifier: (possibly adapted) image tower -> L2-normalised feature -> linear head."""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from clip_convpass.models.clip_loader import ClipBundle
from clip_convpass.models.prompts import build_text_classifier
from clip_convpass.models.text_encoder import TextEncoder

HEAD_INITS = ("text", "random", "zero", "lp")
# How the head holds CLIP's temperature (README "Head parameterisations"):
#   folded: weight = logit_scale * unit text rows (rows of norm 100), logits = W f + b (today's, CLIP's own form)
#   scaled: weight = unit text rows, logits = T * (W f) + b (same logits; a step moves W 100x more per row norm)
#   cosine: logits = T * (normalize(W) f) + b (rows stay on the unit sphere)
HEAD_PARAMS = ("folded", "scaled", "cosine")
HEAD_TEMPERATURES = ("fixed", "learnable")


class ScaledHead(nn.Module):
    """A linear head whose rows are unit-norm at init, times a temperature T = exp(log_scale), which is
    fixed (a buffer) or learned (a parameter, as CLIP learns its logit_scale)."""

    def __init__(self, weight: torch.Tensor, log_scale: float, cosine: bool, learnable_scale: bool):
        super().__init__()
        self.cosine = cosine
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(torch.zeros(weight.shape[0]))
        if learnable_scale:
            self.log_scale = nn.Parameter(torch.tensor(float(log_scale)))
        else:
            self.register_buffer("log_scale", torch.tensor(float(log_scale)))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        w = F.normalize(self.weight, dim=-1) if self.cosine else self.weight
        return self.log_scale.exp() * F.linear(feats, w) + self.bias


class CLIPClassifier(nn.Module):
    def __init__(self, visual: nn.Module, head: nn.Linear):
        super().__init__()
        self.visual = visual
        self.head = head

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(images), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(images))


def text_classifier(bundle: ClipBundle, classnames: Sequence[str], templates: Union[str, Sequence[str]],
                    device: Union[str, torch.device] = "cpu", truncate: bool = True) -> torch.Tensor:
    """Unit-norm text classifier rows, [C, D] (the templates' normalised mean per class)."""
    text = TextEncoder(bundle.model, truncate).to(device)
    return build_text_classifier(text, bundle.tokenizer, classnames, templates, device)


def zero_shot_weights(bundle: ClipBundle, classnames: Sequence[str], templates: Union[str, Sequence[str]],
                      device: Union[str, torch.device] = "cpu", truncate: bool = True) -> torch.Tensor:
    """logit_scale.exp() * normalised text classifier, [C, D]."""
    return bundle.model.logit_scale.exp().item() * text_classifier(bundle, classnames, templates, device, truncate)


def build_head(bundle: ClipBundle, classnames: Sequence[str], templates, init: str = "text",
               device: Union[str, torch.device] = "cpu", seed: int = 0, truncate: bool = True,
               param: str = "folded", learnable_temperature: bool = False) -> nn.Module:
    """Linear head over L2-normalised image features; bias zero.

    init: "text" = zero-shot classifier (logit_scale * normalised text embeddings); "lp" starts as "text"
    (the trainer replaces it by a linear probe fitted on the training shots: LP-FT);
    "random" = random unit rows times logit_scale (same scale, no text information); "zero" = all zeros.
    param: how the temperature is held (HEAD_PARAMS); every param gives the same logits at init.
    """
    if init not in HEAD_INITS:
        raise ValueError(f"Unknown head init {init!r}; choices: {HEAD_INITS}")
    if param not in HEAD_PARAMS:
        raise ValueError(f"Unknown head param {param!r}; choices: {HEAD_PARAMS}")
    scale = bundle.model.logit_scale.exp().item()
    dim = bundle.model.visual.output_dim
    if init in ("text", "lp"):
        unit = text_classifier(bundle, classnames, templates, device, truncate).cpu()
    elif init == "random":
        g = torch.Generator().manual_seed(seed)
        unit = F.normalize(torch.randn(len(classnames), dim, generator=g), dim=-1)
    else:
        unit = torch.zeros(len(classnames), dim)
    if param != "folded":
        return ScaledHead(unit, bundle.model.logit_scale.item(), cosine=param == "cosine",
                          learnable_scale=learnable_temperature)
    head = nn.Linear(dim, len(classnames), bias=True)
    with torch.no_grad():
        head.bias.zero_()
        head.weight.copy_(scale * unit)  # exactly zero_shot_weights for a text head
    return head
