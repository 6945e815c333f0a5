"""CLIP-Adapter (Gao et al., IJCV 2023): a bottleneck MLP A on the frozen image feature f, mixed residually,
f' = ratio * A(f) + (1 - ratio) * f with A(f) = ReLU(W2 ReLU(W1 f)) (no biases, hidden D / REDUCTION), then the
zero-shot classifier of the dataset's prompt on the normalised f'. Only A trains (gaopengcuhk/CLIP-Adapter
clip_adapter.py). The classifier is our zero-shot head (logit_scale folded into its rows: the reference's
logit_scale * f^ t^T), so RATIO 0 is exactly zero-shot CLIP.
"""
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_convpass.config import check
from clip_convpass.engine.trainer import TrainerBase
from clip_convpass.models.clip_loader import load_clip_from_cfg
from clip_convpass.models.heads import build_head
from clip_convpass.models.prompts import check_templates, template_info
from clip_convpass.registry import TRAINER_REGISTRY


class FeatureAdapter(nn.Sequential):
    """The reference's Adapter: Linear(D, D/r, no bias) - ReLU - Linear(D/r, D, no bias) - ReLU."""

    def __init__(self, dim: int, reduction: int):
        super().__init__(nn.Linear(dim, dim // reduction, bias=False), nn.ReLU(inplace=True),
                         nn.Linear(dim // reduction, dim, bias=False), nn.ReLU(inplace=True))


class CLIPAdapterModel(nn.Module):
    def __init__(self, visual: nn.Module, head: nn.Module, reduction: int, ratio: float):
        super().__init__()
        self.visual, self.head, self.ratio = visual, head, ratio
        self.adapter = FeatureAdapter(visual.output_dim, reduction)

    def logits_from_features(self, feats):
        mixed = self.ratio * self.adapter(feats) + (1 - self.ratio) * feats  # on the raw feature, as the reference
        return self.head(F.normalize(mixed, dim=-1))

    def forward(self, images):
        return self.logits_from_features(self.visual(images))


@TRAINER_REGISTRY.register
class CLIPAdapter(TrainerBase):
    NAME = "CLIPAdapter"
    FROZEN_IMAGE_ENCODER = True
    CONFIG_NODE = "CLIP_ADAPTER"
    INVALID_EXAMPLES = {"RATIO": "1.5", "REDUCTION": "0", "TEMPLATES": "ensemble9"}

    @classmethod
    def config_node(cls):
        c = CN()
        c.RATIO = 0.2  # the reference's residual ratio (a constant in its code)
        c.REDUCTION = 4  # bottleneck D / REDUCTION (the reference: 1024 -> 256 on RN50)
        c.TEMPLATES = "dataset"  # CoOp's template for the dataset, the reference's CUSTOM_TEMPLATES
        return c

    @classmethod
    def check_config(cls, cfg):
        c = cfg.TRAINER.CLIP_ADAPTER
        check(0 <= c.RATIO <= 1, f"TRAINER.CLIP_ADAPTER.RATIO must be in [0, 1], got {c.RATIO}")
        check(c.REDUCTION >= 1, f"TRAINER.CLIP_ADAPTER.REDUCTION must be >= 1, got {c.REDUCTION}")
        check_templates(c.TEMPLATES, "TRAINER.CLIP_ADAPTER.TEMPLATES")

    def build_model(self):
        c = self.cfg.TRAINER.CLIP_ADAPTER
        bundle = load_clip_from_cfg(self.cfg, self.device)
        check(bundle.model.visual.output_dim // c.REDUCTION >= 1,
              f"TRAINER.CLIP_ADAPTER.REDUCTION {c.REDUCTION} leaves no hidden unit of {bundle.model.visual.output_dim}")
        templates = self.templates(c.TEMPLATES)
        head = build_head(bundle, self.classnames, templates, "text", self.device,
                          truncate=self.cfg.MODEL.TEXT_TRUNCATE)
        self.model = CLIPAdapterModel(bundle.model.visual, head, c.REDUCTION, c.RATIO)
        self.prompt_info = template_info(c.TEMPLATES, templates)
        del bundle  # the text tower is not needed once the classifier exists
        self.model.requires_grad_(False)
        self.model.adapter.requires_grad_(True)

    def logits_from_features(self, feats):
        return self.model.logits_from_features(feats)

    # Transfer: the adapter acts on image features whatever the classes; the (frozen) classifier is built for any
    # classes by build_model. Nothing trained is class-bound.
