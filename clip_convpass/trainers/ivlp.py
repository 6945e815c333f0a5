"""IVLP, independent vision-language prompting (Khattak et al., MaPLe's baseline, CVPR 2023): deep learnable
prompts in both towers, no coupling; both encoders frozen (muzairkhattak/multimodal-prompt-learning
trainers/independentVL.py and clip/model.py ResidualAttentionBlock_IVLP).

Text: the input context is the first N_CTX_TEXT tokens of CTX_INIT ("a photo of a": with N_CTX_TEXT 2, "a photo"
trains and "of a" stays a fixed word before the class name, as in the reference); blocks 1 .. PROMPT_DEPTH_TEXT-1
replace the context positions with their own prompts (TextEncoder's deep prompts, N(0, 0.02)). Vision: N_CTX_VISION
tokens through ln_pre at the input and their own at blocks 1 .. PROMPT_DEPTH_VISION-1 (adapters/vpt.py's
insert_prompts, N(0, 0.02)); later blocks carry the last prompts on, as the reference does. Logits: CLIP's frozen
scale times cosine similarity; cross-entropy.

Precision: the reference runs all of CLIP in fp16 and steps fp16 prompts without master weights; here PREC decides
(fp16 autocast with fp32 parameters and GradScaler on CUDA by default).
"""
import logging
from typing import List

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_convpass.adapters.vpt import VPTPrompts, insert_prompts
from clip_convpass.config import check
from clip_convpass.engine.trainer import TrainerBase
from clip_convpass.models.blocks import vision_transformer_parts
from clip_convpass.models.clip_loader import load_clip_from_cfg
from clip_convpass.models.prompt_learner import PromptLearner
from clip_convpass.models.text_encoder import TextEncoder
from clip_convpass.registry import TRAINER_REGISTRY

logger = logging.getLogger(__name__)

class DeepPromptedCLIP(nn.Module):
    """Frozen CLIP with a prompt learner, deep text prompts and prompts in the image tower."""

    def __init__(self, clip_model: nn.Module, learner: PromptLearner, text: TextEncoder, deep_text: nn.Parameter):
        super().__init__()
        self.visual = clip_model.visual
        self.text_encoder = text
        self.prompt_learner = learner
        self.deep_text = deep_text  # [PROMPT_DEPTH_TEXT - 1, N_CTX_TEXT, width]
        self.register_buffer("logit_scale", clip_model.logit_scale.detach().exp().clone(), persistent=False)

    def deep_text_prompts(self) -> List[torch.Tensor]:
        return list(self.deep_text.unbind(0))

    def text_features(self) -> torch.Tensor:
        pl = self.prompt_learner
        return F.normalize(self.text_encoder.forward_prompts(*pl.parts(pl.ctx), pl.eot(), self.deep_text_prompts()),
                           dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(images), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * self.encode_image(images) @ self.text_features().t()


@TRAINER_REGISTRY.register
class IVLP(TrainerBase):
    NAME = "IVLP"
    CONFIG_NODE = "IVLP"
    INVALID_EXAMPLES = {"N_CTX_TEXT": "0", "N_CTX_VISION": "-1", "PROMPT_DEPTH_TEXT": "0",
                        "PROMPT_DEPTH_VISION": "-1", "INIT_STD": "0.0"}
    FREE_KEYS = ("CTX_INIT",)

    @classmethod
    def config_node(cls):
        c = CN()
        c.N_CTX_TEXT = 2  # learned tokens of CTX_INIT (at most its token count)
        c.N_CTX_VISION = 2
        c.CTX_INIT = "a photo of a"
        c.PROMPT_DEPTH_TEXT = 9  # blocks with their own text prompts (1: the input context only)
        c.PROMPT_DEPTH_VISION = 9  # blocks with their own vision prompts (0: no vision prompts)
        c.INIT_STD = 0.02  # deep prompts and vision prompts: N(0, INIT_STD); text context without CTX_INIT too
        return c

    @classmethod
    def check_config(cls, cfg):
        c = cfg.TRAINER[cls.CONFIG_NODE]
        node = f"TRAINER.{cls.CONFIG_NODE}"
        check(c.N_CTX_TEXT >= 1, f"{node}.N_CTX_TEXT must be >= 1, got {c.N_CTX_TEXT}")
        check(c.N_CTX_VISION >= 0, f"{node}.N_CTX_VISION must be >= 0, got {c.N_CTX_VISION}")
        check(c.PROMPT_DEPTH_TEXT >= 1, f"{node}.PROMPT_DEPTH_TEXT must be >= 1 (1: input context only), got "
                                        f"{c.PROMPT_DEPTH_TEXT}")
        check(c.PROMPT_DEPTH_VISION >= 0, f"{node}.PROMPT_DEPTH_VISION must be >= 0 (0: no vision prompts), got "
                                          f"{c.PROMPT_DEPTH_VISION}")
        check(c.INIT_STD > 0, f"{node}.INIT_STD must be > 0, got {c.INIT_STD}")

    def build_model(self):
        c = self.cfg.TRAINER[self.CONFIG_NODE]
        bundle = load_clip_from_cfg(self.cfg, self.device)
        self.clip_bundle = bundle
        text = TextEncoder(bundle.model, self.cfg.MODEL.TEXT_TRUNCATE, self.cfg.MODEL.TEXT_SHARED_PREFIX)
        (depth_key, depth), n_ctx = self.text_depth(), self.text_length()
        depth = self.check_depth(depth_key, depth, len(text.transformer.resblocks))
        learner = PromptLearner(text, bundle.tokenizer, self.classnames, n_ctx, c.CTX_INIT,
                                init_std=c.INIT_STD, learn_init_tokens=n_ctx if c.CTX_INIT else 0)
        deep_text = nn.Parameter(torch.empty(depth - 1, learner.n_ctx, text.width,
                                             device=self.device).normal_(std=c.INIT_STD))
        self.model = self.make_model(bundle.model, learner, text, deep_text)
        self.model.requires_grad_(False)
        trainable = [learner.ctx, deep_text, *self.insert_vision_prompts(bundle.model.visual)]
        for p in trainable:
            p.requires_grad_(True)
        self.prompt_info = {"ctx_init": c.CTX_INIT, "n_ctx": learner.n_ctx}

    def text_depth(self):
        """(its key, the number of text blocks with their own prompts)."""
        return "PROMPT_DEPTH_TEXT", self.cfg.TRAINER[self.CONFIG_NODE].PROMPT_DEPTH_TEXT

    def text_length(self) -> int:
        return self.cfg.TRAINER[self.CONFIG_NODE].N_CTX_TEXT

    def make_model(self, clip_model, learner, text, deep_text) -> nn.Module:
        return DeepPromptedCLIP(clip_model, learner, text, deep_text)

    def check_depth(self, key: str, depth: int, blocks: int) -> int:
        """The depth on a tower of `blocks` blocks: the published depths (9, 12) on a smaller tower (the tests'
        tiny models) prompt every block, and say so."""
        if depth > blocks:
            logger.warning(f"TRAINER.{self.CONFIG_NODE}.{key} {depth} on a tower of {blocks} blocks: every block "
                           f"gets prompts")
        return min(depth, blocks)

    def insert_vision_prompts(self, visual) -> List[nn.Parameter]:
        c = self.cfg.TRAINER[self.CONFIG_NODE]
        blocks = vision_transformer_parts(visual, self.NAME)
        depth = self.check_depth("PROMPT_DEPTH_VISION", c.PROMPT_DEPTH_VISION, len(blocks.resblocks))
        if depth == 0 or c.N_CTX_VISION == 0:
            return []
        kh, kw = visual.conv1.kernel_size
        prompts = VPTPrompts(depth, c.N_CTX_VISION, blocks.width, kh * kw, init="normal",
                             init_std=c.INIT_STD).to(self.device)
        self.vision_prompts = insert_prompts(visual, prompts, pre_norm=True,
                                             fast_attention=self.cfg.MODEL.FUSED_ATTENTION)
        return list(prompts.parameters())

    # Every prompt is class-agnostic: the target classes' names are encoded with the learned prompts.
    def model_inference(self, images):
        m = self.model
        feats = m.encode_image(images)
        text = self.class_text_features(lambda: m.text_features().float(), [m.prompt_learner.ctx, m.deep_text])
        return m.logit_scale * feats @ text.t().to(feats.dtype)
