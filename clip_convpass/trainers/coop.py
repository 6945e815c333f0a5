"""CoOp (Zhou et al., 2022): learnable context vectors in the text prompt; both encoders frozen."""
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_convpass.config import check
from clip_convpass.engine.trainer import TrainerBase
from clip_convpass.models.clip_loader import load_clip_from_cfg
from clip_convpass.models.prompt_learner import CLASS_POSITIONS, PromptLearner
from clip_convpass.models.text_encoder import TextEncoder
from clip_convpass.registry import TRAINER_REGISTRY


class PromptedCLIP(nn.Module):
    """Frozen CLIP towers + a prompt learner; logits = logit_scale * norm(img) @ norm(text(prompts)).T"""

    def __init__(self, clip_model: nn.Module, prompt_learner: PromptLearner, text_encoder: TextEncoder):
        super().__init__()
        self.visual = clip_model.visual
        self.text_encoder = text_encoder
        self.prompt_learner = prompt_learner
        self.register_buffer("logit_scale", clip_model.logit_scale.detach().exp().clone(), persistent=False)

    def encode_image(self, images):
        return F.normalize(self.visual(images), dim=-1)

    def text_features(self):
        pl = self.prompt_learner
        return F.normalize(self.text_encoder.forward_prompts(*pl.parts(pl.ctx), pl.eot()), dim=-1)

    def forward(self, images):
        return self.logit_scale * self.encode_image(images) @ self.text_features().t()  # the training path


@TRAINER_REGISTRY.register
class CoOp(TrainerBase):
    NAME = "CoOp"
    FROZEN_IMAGE_ENCODER = True
    CONFIG_NODE = "COOP"

    @classmethod
    def config_node(cls):
        c = CN()
        c.N_CTX = 16
        c.CTX_INIT = ""  # e.g. "a photo of a" (then N_CTX = its token count)
        c.CSC = False  # class-specific contexts
        c.CLASS_TOKEN_POSITION = "end"  # end | middle | front
        c.INIT_STD = 0.02
        return c

    @classmethod
    def check_config(cls, cfg):
        c = cfg.TRAINER.COOP
        check(c.CLASS_TOKEN_POSITION in CLASS_POSITIONS,
              f"TRAINER.COOP.CLASS_TOKEN_POSITION must be one of {CLASS_POSITIONS}, got {c.CLASS_TOKEN_POSITION!r}")
        check(bool(c.CTX_INIT) or c.N_CTX >= 1, "TRAINER.COOP.N_CTX must be >= 1 when CTX_INIT is empty")
        check(c.INIT_STD > 0, f"TRAINER.COOP.INIT_STD must be > 0, got {c.INIT_STD}")

    def build_model(self):
        self.build_prompted(PromptedCLIP)

    def build_prompted(self, model_cls, **extra):
        """model_cls(clip model, prompt learner, text encoder, **extra) over this node's prompt keys, only the
        context trainable; returns the loaded CLIP bundle (a subclass may read more from it)."""
        c = self.cfg.TRAINER[self.CONFIG_NODE]
        bundle = load_clip_from_cfg(self.cfg, self.device)
        text = TextEncoder(bundle.model, self.cfg.MODEL.TEXT_TRUNCATE, self.cfg.MODEL.TEXT_SHARED_PREFIX)
        learner = PromptLearner(text, bundle.tokenizer, self.classnames, c.N_CTX, c.CTX_INIT, c.CSC,
                                c.CLASS_TOKEN_POSITION, c.INIT_STD)
        self.model = model_cls(bundle.model, learner, text, **extra)
        self.prompt_info = {"ctx_init": c.CTX_INIT, "n_ctx": learner.n_ctx}
        self.model.requires_grad_(False)
        learner.ctx.requires_grad_(True)
        return bundle

    # Transfer: unified contexts are class-agnostic (the target classes' names are encoded with them, CoCoOp's
    # base-to-new protocol); class-specific contexts are one per training class.
    def class_bound_state(self):
        return ("prompt_learner.ctx",) if self.cfg.TRAINER[self.CONFIG_NODE].get("CSC", False) else ()

    def transfer_undefined(self) -> str:
        if self.cfg.TRAINER[self.CONFIG_NODE].get("CSC", False):
            return "its contexts are class-specific (CSC True): one per training class, none for other classes"
        return ""

    def logits_from_features(self, feats):
        # at evaluation the prompts do not change: the class texts are encoded once, not per batch
        ctx = self.model.prompt_learner.ctx
        text = self.class_text_features(lambda: self.model.text_features().float(), [ctx])
        return self.model.logit_scale * F.normalize(feats, dim=-1) @ text.t()
