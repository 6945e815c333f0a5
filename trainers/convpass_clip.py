"""Convpass_CLIP: convolutional bypasses in CLIP's image encoder + a head initialised from text."""
from clip_convpass.clip_loader import load_clip_from_cfg
from clip_convpass.config import ConfigError, register_validator
from clip_convpass.convpass import ConvpassSpec, inject_convpass, is_bypass_parameter
from clip_convpass.heads import HEAD_INITS, CLIPClassifier, build_head
from clip_convpass.prompts import TEMPLATE_SETS
from clip_convpass.registry import TRAINER_REGISTRY
from clip_convpass.trainer import TrainerBase


@register_validator
def _check_convpass_cfg(cfg):
    c = cfg.TRAINER.CONVPASS
    try:
        ConvpassSpec.from_cfg(c)
    except ValueError as e:
        raise ConfigError(f"TRAINER.CONVPASS: {e}") from e
    if c.HEAD_INIT not in HEAD_INITS:
        raise ConfigError(f"TRAINER.CONVPASS.HEAD_INIT must be one of {HEAD_INITS}, got {c.HEAD_INIT!r}")
    if c.TEMPLATES not in TEMPLATE_SETS:
        raise ConfigError(f"TRAINER.CONVPASS.TEMPLATES must be one of {sorted(TEMPLATE_SETS)}, got {c.TEMPLATES!r}")
    if not 0 <= c.DROPOUT < 1:
        raise ConfigError(f"TRAINER.CONVPASS.DROPOUT must be in [0, 1), got {c.DROPOUT}")


@TRAINER_REGISTRY.register("ConvpassCLIP")
class ConvpassCLIP(TrainerBase):
    NAME = "ConvpassCLIP"

    def build_model(self):
        c = self.cfg.TRAINER.CONVPASS
        bundle = load_clip_from_cfg(self.cfg, self.device)
        head = build_head(bundle, self.classnames, c.TEMPLATES, c.HEAD_INIT, self.device, seed=self.cfg.SEED,
                          truncate=self.cfg.MODEL.TEXT_TRUNCATE)
        visual = bundle.model.visual
        del bundle  # the text tower is released once the head exists
        visual.requires_grad_(False)
        self.bypasses = inject_convpass(visual, ConvpassSpec.from_cfg(c))
        self.model = CLIPClassifier(visual, head)
        for name, p in self.model.named_parameters():
            p.requires_grad_(is_bypass_parameter(name) or (name.startswith("head.") and c.HEAD_TRAINABLE))

    def set_model_mode(self, train: bool):
        # The frozen backbone stays in eval mode; only the bypasses (dropout) switch.
        self.model.eval()
        for bp in self.bypasses:
            bp.train(train)

    def model_inference(self, images):
        return self.model(images)
