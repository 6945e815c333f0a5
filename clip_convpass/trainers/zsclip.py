"""Zero-shot CLIP: the text classifier of prompted class names, nothing trained."""
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip_convpass.engine.trainer import TrainerBase
from clip_convpass.models.clip_loader import load_clip_from_cfg
from clip_convpass.models.heads import CLIPClassifier, build_head
from clip_convpass.models.prompts import check_templates, template_info
from clip_convpass.registry import TRAINER_REGISTRY


@TRAINER_REGISTRY.register
class ZeroShotCLIP(TrainerBase):
    NAME = "ZeroShotCLIP"
    FROZEN_IMAGE_ENCODER = True
    CONFIG_NODE = "ZSCLIP"

    @classmethod
    def config_node(cls):
        c = CN()
        # dataset (CoOp's template for the dataset) | dataset_tip | single | ensemble7 | ensemble80
        c.TEMPLATES = "dataset"
        return c

    @classmethod
    def check_config(cls, cfg):
        check_templates(cfg.TRAINER.ZSCLIP.TEMPLATES, "TRAINER.ZSCLIP.TEMPLATES")

    def build_model(self):
        bundle = load_clip_from_cfg(self.cfg, self.device)
        spec = self.cfg.TRAINER.ZSCLIP.TEMPLATES
        templates = self.templates(spec)
        head = build_head(bundle, self.classnames, templates, "text", self.device, truncate=self.cfg.MODEL.TEXT_TRUNCATE)
        self.model = CLIPClassifier(bundle.model.visual, head).eval()
        self.prompt_info = template_info(spec, templates)
        self.model.requires_grad_(False)
        del bundle  # the text tower is not needed after the head is built

    def logits_from_features(self, feats):
        return self.model.head(F.normalize(feats, dim=-1))
