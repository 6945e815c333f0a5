"""Zero-shot CLIP: the text classifier of prompted class names, nothing trained."""
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip_convpass.clip_loader import load_clip_from_cfg
from clip_convpass.heads import CLIPClassifier, build_head
from clip_convpass.prompts import check_templates, template_info
from clip_convpass.registry import TRAINER_REGISTRY, Row
from clip_convpass.trainer import TrainerBase


@TRAINER_REGISTRY.register
class ZeroShotCLIP(TrainerBase):
    NAME = "ZeroShotCLIP"
    FROZEN_IMAGE_ENCODER = True
    CONFIG_NODE = "ZSCLIP"
    ROWS = (Row("ZeroShotCLIP", "trainers/ZeroShotCLIP/vit_b16.yaml", "ZS CLIP", order=10,
                paper={"ImageNet": 66.73, "ImageNetV2": 60.83, "ImageNetSketch": 46.15, "ImageNetA": 47.77, "ImageNetR": 73.96},
                tables=("table2", "petl", "fewshot")),)

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
