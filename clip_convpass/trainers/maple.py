"""MaPLe, multi-modal prompt learning (Khattak et al., CVPR 2023): deep text prompts, and vision prompts made
from them by coupling functions (muzairkhattak/multimodal-prompt-learning trainers/maple.py, clip/model.py
ResidualAttentionBlock_MaPLe / VisionTransformer_MaPLe).

Text: the first N_CTX tokens of CTX_INIT at the input (with N_CTX 2, "a photo" trains and "of a" stays), and
blocks 1 .. PROMPT_DEPTH-1 replace the context positions with their own prompts (N(0, 0.02)). Vision: block 0's
prompts are proj(context) and block j's are proj_j(text prompt of block j), Linear(text width -> vision width)
with PyTorch's default init; the deeper projections start as copies of one layer (the reference deep-copies a
single Linear); the first block's vision prompts go through ln_pre. Only the prompt learner trains.
"""
import copy
from typing import List

import torch
from torch import nn
from yacs.config import CfgNode as CN

from clip_convpass.adapters.vpt import insert_prompts
from clip_convpass.config import check
from clip_convpass.models.blocks import vision_transformer_parts
from clip_convpass.registry import TRAINER_REGISTRY
from clip_convpass.trainers.ivlp import IVLP


class CoupledVisionPrompts(nn.Module):
    """Vision prompts of every prompted block from the text tower's: layer(0) = proj(context), layer(j) =
    projections[j - 1](deep text prompt j - 1). The text prompts stay the prompt learner's parameters."""

    def __init__(self, model, text_width: int, vision_width: int, depth: int):
        super().__init__()
        self.proj = nn.Linear(text_width, vision_width)
        single = nn.Linear(text_width, vision_width)
        self.projections = nn.ModuleList([copy.deepcopy(single) for _ in range(depth - 1)])
        self.__dict__["model"] = model  # read, not owned: its parameters are registered where they live

    @property
    def num_layers(self) -> int:
        return len(self.projections) + 1

    @property
    def length(self) -> int:
        return self.model.prompt_learner.n_ctx

    def layer(self, i: int, dtype: torch.dtype, batch: int = 1) -> torch.Tensor:
        if i == 0:
            return self.proj(self.model.prompt_learner.ctx).to(dtype).expand(batch, -1, -1)
        return self.projections[i - 1](self.model.deep_text[i - 1]).to(dtype).expand(batch, -1, -1)


@TRAINER_REGISTRY.register
class MaPLe(IVLP):
    NAME = "MaPLe"
    CONFIG_NODE = "MAPLE"
    INVALID_EXAMPLES = {"N_CTX": "0", "PROMPT_DEPTH": "0", "INIT_STD": "0.0"}
    FREE_KEYS = ("CTX_INIT",)

    @classmethod
    def config_node(cls):
        c = CN()
        c.N_CTX = 2  # learned tokens of CTX_INIT, in both towers
        c.CTX_INIT = "a photo of a"
        c.PROMPT_DEPTH = 9  # blocks with their own prompts in both towers (1: shallow MaPLe)
        c.INIT_STD = 0.02
        return c

    @classmethod
    def check_config(cls, cfg):
        c = cfg.TRAINER.MAPLE
        check(c.N_CTX >= 1, f"TRAINER.MAPLE.N_CTX must be >= 1, got {c.N_CTX}")
        check(c.PROMPT_DEPTH >= 1, f"TRAINER.MAPLE.PROMPT_DEPTH must be >= 1 (1: shallow MaPLe), got {c.PROMPT_DEPTH}")
        check(c.INIT_STD > 0, f"TRAINER.MAPLE.INIT_STD must be > 0, got {c.INIT_STD}")

    def text_depth(self):
        return "PROMPT_DEPTH", self.cfg.TRAINER.MAPLE.PROMPT_DEPTH

    def text_length(self) -> int:
        return self.cfg.TRAINER.MAPLE.N_CTX

    def insert_vision_prompts(self, visual) -> List[nn.Parameter]:
        c = self.cfg.TRAINER.MAPLE
        blocks = vision_transformer_parts(visual, self.NAME)
        # coupled to the text tower's prompts: never deeper than those (towers of different depths)
        depth = min(self.check_depth("PROMPT_DEPTH", c.PROMPT_DEPTH, len(blocks.resblocks)),
                    self.model.deep_text.shape[0] + 1)
        coupled = CoupledVisionPrompts(self.model, self.model.text_encoder.width, blocks.width, depth).to(self.device)
        self.vision_prompts = insert_prompts(visual, coupled, pre_norm=True,
                                             fast_attention=self.cfg.MODEL.FUSED_ATTENTION)
        return list(coupled.parameters())
