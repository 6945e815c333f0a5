"""CLIP-LoRA (Zanella & Ben Ayed, "Low-Rank Few-Shot Adaptation of Vision-Language Models", CVPRW 2024): LoRA on
q, k and v of every block of both towers (MaxZanella/CLIP-LoRA lora.py, loralib/): rank 2, alpha 1 with the
reference's scaling alpha / sqrt(rank), dropout 0.25 on the LoRA branch's input, A Kaiming-uniform and B zero (so
a fresh model is zero-shot CLIP exactly); logits: CLIP's frozen scale times the cosine with the class texts of one
template ("a photo of a {}."), recomputed with the text LoRA at every step. For evaluation the deltas are merged
into the frozen weights (adapters/lora.py), as the reference merges them.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_convpass.adapters.lora import QKV, inject_lora
from clip_convpass.config import check
from clip_convpass.engine.trainer import TrainerBase
from clip_convpass.models.blocks import fuse_attention
from clip_convpass.models.clip_loader import load_clip_from_cfg
from clip_convpass.models.prompts import check_templates, template_info
from clip_convpass.models.text_encoder import TextEncoder
from clip_convpass.registry import TRAINER_REGISTRY
from clip_convpass.utils.text import prompt_classname

ENCODERS = ("both", "vision", "text")


class LoRACLIP(nn.Module):
    def __init__(self, clip_model: nn.Module, text: TextEncoder, tokens: torch.Tensor):
        super().__init__()
        self.visual = clip_model.visual
        self.text_encoder = text
        self.register_buffer("tokens", tokens, persistent=False)  # [C, L] or [C, T, L] the class prompts
        self.register_buffer("logit_scale", clip_model.logit_scale.detach().exp().clone(), persistent=False)

    def text_features(self) -> torch.Tensor:
        """Unit class embeddings as the zero-shot classifier makes them (models/prompts.py): each template's
        normalised, averaged over the templates, normalised (one template: as is)."""
        c, t, length = self.tokens.shape
        emb = F.normalize(self.text_encoder(self.tokens.reshape(c * t, length)).float(), dim=-1).reshape(c, t, -1)
        return F.normalize(emb.sum(dim=1) / t, dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(images), dim=-1)

    def logits(self, feats: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        # zero-shot CLIP's folded head (models/heads.py): the same float operations, so a fresh model's logits
        # are zero-shot CLIP's bit for bit
        return F.linear(feats, (self.logit_scale * text).to(feats.dtype))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(self.encode_image(images), self.text_features())


@TRAINER_REGISTRY.register
class CLIPLoRA(TrainerBase):
    NAME = "CLIPLoRA"
    CONFIG_NODE = "CLIP_LORA"
    TRAINING_ONLY_KEYS = ("DROPOUT",)
    INVALID_EXAMPLES = {"RANK": "0", "ALPHA": "0.0", "DROPOUT": "1.0", "TARGETS": "qx", "ENCODER": "audio",
                        "TEMPLATES": "ensemble9"}

    @classmethod
    def config_node(cls):
        c = CN()
        c.RANK = 2
        c.ALPHA = 1.0  # scaling alpha / sqrt(RANK), the reference's (not LoRA's alpha / RANK)
        c.DROPOUT = 0.25  # on the LoRA branch's input while training
        c.TARGETS = "qkv"  # which of q, k, v get LoRA
        c.ENCODER = "both"  # both | vision | text
        c.TEMPLATES = "single"  # "a photo of a {}."
        return c

    @classmethod
    def check_config(cls, cfg):
        c = cfg.TRAINER.CLIP_LORA
        check(c.RANK >= 1, f"TRAINER.CLIP_LORA.RANK must be >= 1, got {c.RANK}")
        check(c.ALPHA > 0, f"TRAINER.CLIP_LORA.ALPHA must be > 0, got {c.ALPHA}")
        check(0 <= c.DROPOUT < 1, f"TRAINER.CLIP_LORA.DROPOUT must be in [0, 1), got {c.DROPOUT}")
        check(bool(c.TARGETS) and not set(c.TARGETS) - set(QKV) and len(set(c.TARGETS)) == len(c.TARGETS),
              f"TRAINER.CLIP_LORA.TARGETS must be distinct letters of 'qkv', got {c.TARGETS!r}")
        check(c.ENCODER in ENCODERS, f"TRAINER.CLIP_LORA.ENCODER must be one of {ENCODERS}, got {c.ENCODER!r}")
        check_templates(c.TEMPLATES, "TRAINER.CLIP_LORA.TEMPLATES")

    def build_model(self):
        c = self.cfg.TRAINER.CLIP_LORA
        bundle = load_clip_from_cfg(self.cfg, self.device)
        text = TextEncoder(bundle.model, self.cfg.MODEL.TEXT_TRUNCATE, self.cfg.MODEL.TEXT_SHARED_PREFIX)
        templates = self.templates(c.TEMPLATES)
        names = [prompt_classname(n) for n in self.classnames]
        tokens = torch.stack([bundle.tokenizer([t.format(n) for t in templates]) for n in names]).to(self.device)
        length = text.seq_len_for(text.eot_indices(tokens.flatten(0, 1)))  # cut at the longest EOT (exact)
        self.model = LoRACLIP(bundle.model, text, tokens[..., :length])
        self.model.requires_grad_(False)
        towers = {"vision": [bundle.model.visual.transformer], "text": [text.transformer]}
        towers["both"] = towers["vision"] + towers["text"]
        scale = c.ALPHA / math.sqrt(c.RANK)
        for transformer in towers[c.ENCODER]:
            fuse_attention(transformer)  # every block an AdaptedBlock: LoRA fills its q/k/v slot
            injection = inject_lora(list(transformer.resblocks), c.RANK, scale, c.TARGETS, c.DROPOUT)
            for p in injection.parameters:
                p.requires_grad_(True)
        self.prompt_info = template_info(c.TEMPLATES, templates)

    # Nothing is class-bound: LoRA changes the towers, the classes are only their names' texts.
    def model_inference(self, images):
        # evaluation: once per state of the LoRA weights (merged into the frozen ones), not per batch
        text = self.class_text_features(self.model.text_features, [p for _, p in self.trainable_named_parameters()])
        return self.model.logits(self.model.encode_image(images), text)
