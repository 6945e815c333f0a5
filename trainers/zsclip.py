"""Zero-shot CLIP: the text classifier of prompted class names, nothing trained."""
import torch.nn.functional as F

from clip_convpass.clip_loader import load_clip_from_cfg
from clip_convpass.heads import CLIPClassifier, build_head
from clip_convpass.registry import TRAINER_REGISTRY
from clip_convpass.trainer import TrainerBase


@TRAINER_REGISTRY.register("ZeroShotCLIP")
class ZeroShotCLIP(TrainerBase):
    NAME = "ZeroShotCLIP"
    FROZEN_IMAGE_ENCODER = True

    def build_model(self):
        bundle = load_clip_from_cfg(self.cfg, self.device)
        head = build_head(bundle, self.classnames, self.cfg.TRAINER.ZSCLIP.TEMPLATES, "text", self.device,
                          truncate=self.cfg.MODEL.TEXT_TRUNCATE)
        self.model = CLIPClassifier(bundle.model.visual, head).eval()
        self.model.requires_grad_(False)
        del bundle  # the text tower is not needed after the head is built

    def logits_from_features(self, feats):
        return self.model.head(F.normalize(feats, dim=-1))
