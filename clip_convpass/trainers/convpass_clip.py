"""Convpass_CLIP: convolutional bypasses in CLIP's image encoder + a head initialised from text."""
from yacs.config import CfgNode as CN

from clip_convpass.clip_loader import load_clip_from_cfg
from clip_convpass.config import ConfigError, check
from clip_convpass.convpass import ConvpassSpec, inject_convpass, is_bypass_parameter
from clip_convpass.heads import HEAD_INITS, CLIPClassifier, build_head
from clip_convpass.prompts import TEMPLATE_SETS, template_info
from clip_convpass.registry import TRAINER_REGISTRY, Row
from clip_convpass.trainer import TrainerBase


@TRAINER_REGISTRY.register
class ConvpassCLIP(TrainerBase):
    NAME = "ConvpassCLIP"
    CONFIG_NODE = "CONVPASS"
    ROWS = (Row("ConvpassCLIP", "trainers/ConvpassCLIP/vit_b16.yaml", "Convpass_CLIP", order=70,
                paper={"ImageNet": 74.23, "ImageNetV2": 66.61, "ImageNetSketch": 49.1, "ImageNetA": 49.27, "ImageNetR": 78.17},
                demo_opts=("OPTIM.LR", "3e-3", "OPTIM.MAX_EPOCH", "10", "DATALOADER.TRAIN_X.BATCH_SIZE", "16"),
                # the paper searches s on validation data; the authors tune the conv init per task
                sweep=("TRAINER.CONVPASS.SCALE=0.01,0.1,1,10,100", "TRAINER.CONVPASS.CONV_INIT=identity,xavier")),)

    @classmethod
    def config_node(cls):
        """README "Convpass_CLIP choices" documents every key."""
        c = CN()
        c.HIDDEN = 8
        # s in x + Attn(LN(x)) + s * Convpass(LN(x)); pick it on VAL_SHOTS with `python -m clip_convpass.sweep`.
        c.SCALE = 1.0
        c.KERNEL_SIZE = 3  # 3, or 1 for the "language-oriented" 1x1 ablation
        c.DROPOUT = 0.1
        c.CONV_INIT = "identity"  # identity (centre tap) | xavier
        c.POSITIONS = "both"  # both | attn | mlp | none (no bypasses: head-only probe)
        c.MODE = "parallel"  # parallel | sequential
        c.SHARE = False  # Convpass_share
        # Same attention math on contiguous batch-first tensors (faster training; False = open_clip's MHA call).
        c.FAST_ATTENTION = True
        c.TEMPLATES = "single"  # head init text: single | ensemble7 | ensemble80
        c.HEAD_INIT = "text"  # text | random | zero
        c.HEAD_TRAINABLE = True
        return c

    @classmethod
    def check_config(cls, cfg):
        c = cfg.TRAINER.CONVPASS
        try:
            ConvpassSpec.from_cfg(c)
        except ValueError as e:
            raise ConfigError(f"TRAINER.CONVPASS.{e}") from e
        check(c.HEAD_INIT in HEAD_INITS, f"TRAINER.CONVPASS.HEAD_INIT must be one of {HEAD_INITS}, got {c.HEAD_INIT!r}")
        check(c.TEMPLATES in TEMPLATE_SETS,
              f"TRAINER.CONVPASS.TEMPLATES must be one of {sorted(TEMPLATE_SETS)}, got {c.TEMPLATES!r}")
        check(0 <= c.DROPOUT < 1, f"TRAINER.CONVPASS.DROPOUT must be in [0, 1), got {c.DROPOUT}")

    def build_model(self):
        c = self.cfg.TRAINER.CONVPASS
        bundle = load_clip_from_cfg(self.cfg, self.device)
        head = build_head(bundle, self.classnames, c.TEMPLATES, c.HEAD_INIT, self.device, seed=self.cfg.SEED,
                          truncate=self.cfg.MODEL.TEXT_TRUNCATE)
        visual = bundle.model.visual
        self.prompt_info = template_info(c.TEMPLATES) if c.HEAD_INIT == "text" else {"head_init": c.HEAD_INIT}
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
