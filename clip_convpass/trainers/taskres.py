"""TaskRes (Yu et al., "Task Residual for Tuning Vision-Language Models", CVPR 2023): a learnable residual on
the frozen text classifier, t' = t + alpha * x with x starting at zero; logits = logit_scale * f^ t'^T over
L2-normalised image features f^ and normalised t'. Only x trains; both encoders stay frozen.

The base t is the reference's (geekyutao/TaskRes trainers/taskres.py): each class's text embedding under the
dataset's template, averaged raw (not normalised) over templates; on ImageNet the 7 "select" templates plus the
dataset's. BASE clip uses CLIP's ensembling instead (normalise, average): then a fresh model is exactly our
zero-shot classifier.
"""
from typing import List

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_convpass.config import check
from clip_convpass.engine.trainer import TrainerBase
from clip_convpass.models.clip_loader import load_clip_from_cfg
from clip_convpass.models.prompts import (
    TEMPLATE_CHOICES,
    ensemble_text_features,
    get_templates,
    resolve_templates,
    template_info,
)
from clip_convpass.models.text_encoder import TextEncoder
from clip_convpass.registry import TRAINER_REGISTRY

OWN_TEMPLATES = "dataset_taskres"  # the reference's choice: the dataset's template, and on ImageNet 7 more
BASES = ("raw", "clip")


class TaskResModel(nn.Module):
    def __init__(self, visual: nn.Module, base: torch.Tensor, alpha: float, logit_scale: float):
        super().__init__()
        self.visual = visual
        self.register_buffer("base", base)  # [C, D], frozen
        self.residual = nn.Parameter(torch.zeros_like(base))  # x: zero at init, so step 0 is the base classifier
        self.register_buffer("bias", torch.zeros(base.shape[0]))  # the zero bias of our zero-shot head
        self.alpha, self.logit_scale = alpha, logit_scale

    def classifier(self) -> torch.Tensor:
        """logit_scale * normalize(t + alpha * x), the rows the normalised image feature is scored against."""
        return self.logit_scale * F.normalize(self.base + self.alpha * self.residual, dim=-1)

    def logits_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(feats, dim=-1), self.classifier(), self.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.visual(images))


@TRAINER_REGISTRY.register
class TaskRes(TrainerBase):
    NAME = "TaskRes"
    FROZEN_IMAGE_ENCODER = True
    CONFIG_NODE = "TASKRES"
    INVALID_EXAMPLES = {"ALPHA": "0.0", "BASE": "mean", "TEMPLATES": "ensemble9"}

    @classmethod
    def config_node(cls):
        c = CN()
        c.ALPHA = 0.5  # the reference's RESIDUAL_SCALE in its scripts (1.0 on Oxford Flowers: per_dataset/)
        c.TEMPLATES = OWN_TEMPLATES  # or any TEMPLATES value of the other methods
        c.BASE = "raw"  # raw: templates' raw embeddings averaged (reference) | clip: CLIP's normalised ensembling
        return c

    @classmethod
    def check_config(cls, cfg):
        c = cfg.TRAINER.TASKRES
        check(c.ALPHA > 0, f"TRAINER.TASKRES.ALPHA must be > 0, got {c.ALPHA}")
        check(c.BASE in BASES, f"TRAINER.TASKRES.BASE must be one of {BASES}, got {c.BASE!r}")
        check(c.TEMPLATES in (OWN_TEMPLATES, *TEMPLATE_CHOICES),
              f"TRAINER.TASKRES.TEMPLATES must be one of {(OWN_TEMPLATES, *TEMPLATE_CHOICES)}, got {c.TEMPLATES!r}")

    def templates(self, spec: str) -> List[str]:
        if spec != OWN_TEMPLATES:
            return super().templates(spec)
        own = resolve_templates("dataset", type(self.dataset))
        imagenet = "ImageNet" in (self.dataset.NAME, self.dataset.SOURCE)
        return get_templates("ensemble7") + own if imagenet else own

    def build_model(self):
        c = self.cfg.TRAINER.TASKRES
        bundle = load_clip_from_cfg(self.cfg, self.device)
        templates = self.templates(c.TEMPLATES)
        text = TextEncoder(bundle.model, self.cfg.MODEL.TEXT_TRUNCATE).to(self.device)
        base = ensemble_text_features(text, bundle.tokenizer, self.classnames, templates, self.device,
                                      normalize_each=c.BASE == "clip")
        self.model = TaskResModel(bundle.model.visual, base, c.ALPHA, bundle.model.logit_scale.exp().item())
        self.prompt_info = {**template_info(c.TEMPLATES, templates), "base": c.BASE}
        del bundle, text  # the text tower is not needed once the base exists
        self.model.requires_grad_(False)
        self.model.residual.requires_grad_(True)

    def logits_from_features(self, feats):
        return self.model.logits_from_features(feats)

    # Transfer: the residual has one row per training class. On other classes it is rebuilt as at
    # initialisation, zero: the model is its base classifier there (README "Transfer rule, per method").
    def class_bound_state(self):
        return ("residual",)
