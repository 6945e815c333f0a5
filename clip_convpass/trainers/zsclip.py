"""Zero-shot CLIP: the text classifier of prompted class names, nothing trained."""
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip_convpass.clip_loader import load_clip_from_cfg
from clip_convpass.config import check
from clip_convpass.heads import CLIPClassifier, build_head
from clip_convpass.prompts import TEMPLATE_SETS, template_info
from clip_convpass.registry import TRAINER_REGISTRY, Row
from clip_convpass.trainer import TrainerBase


@TRAINER_REGISTRY.register
class ZeroShotCLIP(TrainerBase):
    NAME = "ZeroShotCLIP"
    FROZEN_IMAGE_ENCODER = True
    CONFIG_NODE = "ZSCLIP"
    ROWS = (Row("ZeroShotCLIP", "trainers/ZeroShotCLIP/vit_b16.yaml", "ZS CLIP", order=10,
                paper={"ImageNet": 66.73, "ImageNetV2": 60.83, "ImageNetSketch": 46.15, "ImageNetA": 47.77, "ImageNetR": 73.96},
                tables=("table2", "petl")),)

    @classmethod
    def config_node(cls):
        c = CN()
        c.TEMPLATES = "single"  # single | ensemble7 | ensemble80 (open_clip.zero_shot_metadata)
        return c

    @classmethod
    def check_config(cls, cfg):
        t = cfg.TRAINER.ZSCLIP.TEMPLATES
        check(t in TEMPLATE_SETS, f"TRAINER.ZSCLIP.TEMPLATES must be one of {sorted(TEMPLATE_SETS)}, got {t!r}")

    def build_model(self):
        bundle = load_clip_from_cfg(self.cfg, self.device)
        head = build_head(bundle, self.classnames, self.cfg.TRAINER.ZSCLIP.TEMPLATES, "text", self.device,
                          truncate=self.cfg.MODEL.TEXT_TRUNCATE)
        self.model = CLIPClassifier(bundle.model.visual, head).eval()
        self.prompt_info = template_info(self.cfg.TRAINER.ZSCLIP.TEMPLATES)
        self.model.requires_grad_(False)
        del bundle  # the text tower is not needed after the head is built

    def logits_from_features(self, feats):
        return self.model.head(F.normalize(feats, dim=-1))
