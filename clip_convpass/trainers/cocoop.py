"""CoCoOp (Zhou et al., 2022): CoOp plus a meta-net that shifts the context per image."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_convpass.config import check
from clip_convpass.models.clip_loader import load_clip_from_cfg
from clip_convpass.models.prompt_learner import PromptLearner
from clip_convpass.models.text_encoder import TextEncoder
from clip_convpass.registry import TRAINER_REGISTRY
from clip_convpass.trainers.coop import CoOp


class MetaNet(nn.Sequential):
    def __init__(self, vis_dim: int, ctx_dim: int):
        super().__init__()
        self.add_module("linear1", nn.Linear(vis_dim, vis_dim // 16))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("linear2", nn.Linear(vis_dim // 16, ctx_dim))


class CoCoOpModel(nn.Module):
    def __init__(self, clip_model: nn.Module, learner: PromptLearner, text: TextEncoder, prompts_per_chunk: int):
        super().__init__()
        self.visual = clip_model.visual
        self.text_encoder = text
        self.prompt_learner = learner
        self.meta_net = MetaNet(clip_model.visual.output_dim, text.width)
        self.prompts_per_chunk = max(1, prompts_per_chunk)
        self.register_buffer("logit_scale", clip_model.logit_scale.detach().exp().clone(), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.visual(images))

    def logits_from_features(self, feats: torch.Tensor, classes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits of every class, or only of `classes` (per image, each class needs its own prompt pass)."""
        img = F.normalize(feats, dim=-1)  # [B, D]
        shifts = self.meta_net(img)  # [B, W]
        pl = self.prompt_learner
        classes = torch.arange(pl.n_cls, device=img.device) if classes is None else classes
        rows = []
        # one image's prompts at a time, classes in chunks: memory is bounded by prompts_per_chunk
        for i in range(img.shape[0]):
            ctx = pl.ctx + shifts[i]  # broadcast over context tokens (and classes if CSC)
            parts = []
            for start in range(0, len(classes), self.prompts_per_chunk):
                idx = classes[start:start + self.prompts_per_chunk]
                text = self.text_encoder.forward_prompts(*pl.parts(ctx, idx), pl.eot(idx))
                parts.append(F.normalize(text, dim=-1) @ img[i])
            rows.append(torch.cat(parts))
        return self.logit_scale * torch.stack(rows)


@TRAINER_REGISTRY.register
class CoCoOp(CoOp):
    NAME = "CoCoOp"
    CONFIG_NODE = "COCOOP"

    @classmethod
    def config_node(cls):
        c = CN()
        c.N_CTX = 4
        c.CTX_INIT = "a photo of a"
        c.INIT_STD = 0.02
        # Evaluation runs the text encoder on (images x classes) prompts; at most this many per call.
        c.PROMPTS_PER_CHUNK = 1000
        return c

    @classmethod
    def check_config(cls, cfg):
        c = cfg.TRAINER.COCOOP
        check(bool(c.CTX_INIT) or c.N_CTX >= 1, "TRAINER.COCOOP.N_CTX must be >= 1 when CTX_INIT is empty")
        check(c.PROMPTS_PER_CHUNK >= 1, f"TRAINER.COCOOP.PROMPTS_PER_CHUNK must be >= 1, got {c.PROMPTS_PER_CHUNK}")

    def build_model(self):
        c = self.cfg.TRAINER.COCOOP
        bundle = load_clip_from_cfg(self.cfg, self.device)
        text = TextEncoder(bundle.model, self.cfg.MODEL.TEXT_TRUNCATE, self.cfg.MODEL.TEXT_SHARED_PREFIX)
        learner = PromptLearner(text, bundle.tokenizer, self.classnames, c.N_CTX, c.CTX_INIT, False, "end", c.INIT_STD)
        self.model = CoCoOpModel(bundle.model, learner, text, c.PROMPTS_PER_CHUNK)
        self.prompt_info = {"ctx_init": c.CTX_INIT, "n_ctx": learner.n_ctx}
        self.model.requires_grad_(False)
        learner.ctx.requires_grad_(True)
        self.model.meta_net.requires_grad_(True)

    def logits_from_features(self, feats):
        return self.model.logits_from_features(feats)  # prompts depend on the image: nothing to reuse

    def logits_over(self, feats, columns):
        # ImageNet-A/-R score 200 of 1000 columns: encode only those classes' prompts
        return self.model.logits_from_features(feats, columns)
