"""Tip-Adapter and Tip-Adapter-F (Zhang et al., 2022): a key-value cache of few-shot features.

logits = logit_scale * f W_text^T + alpha * exp(-beta * (1 - f K^T)) V, with f the L2-normalised
image feature, K the cache keys (one per training shot), V their one-hot labels. V is kept as the
keys' labels and applied as a scatter-add (the same sum as the one-hot matmul, without a [K, C]
matrix). Tip-Adapter-F trains K. alpha and beta are searched, on the reference's grid, on the
VAL_SHOTS split, never on test data.
"""
import logging

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_convpass.config import check, check_crop_scale
from clip_convpass.data import build_transform
from clip_convpass.engine.trainer import TrainerBase
from clip_convpass.models.clip_loader import load_clip_from_cfg
from clip_convpass.models.heads import zero_shot_weights
from clip_convpass.models.prompts import check_templates, template_info
from clip_convpass.registry import TRAINER_REGISTRY

logger = logging.getLogger(__name__)


def cache_logits(affinity, key_labels, n_classes: int, beta):
    """exp(-beta (1 - affinity)) @ one_hot(key_labels), as a scatter-add over the keys' labels."""
    weights = torch.exp(-beta * (1 - affinity))
    return weights.new_zeros(weights.shape[0], n_classes).index_add(1, key_labels, weights)


def tip_logits(feats, text_weights, keys, key_labels, alpha, beta):
    """text_weights already include the logit scale."""
    clip_logits = feats @ text_weights.t()
    return clip_logits + alpha * cache_logits(feats @ keys.t(), key_labels, text_weights.shape[0], beta)


def search_grid(low: float, high: float, steps: int) -> list:
    """The reference's grid: low + i * (high - low) / steps for i in 0..steps-1."""
    return [low + i * (high - low) / steps for i in range(steps)]


def search_alpha_beta_grid(clip_logits, affinity, key_labels, labels, alphas, betas, start):
    """Best (accuracy, alpha, beta): betas outer, alphas inner, the first best kept (as the reference).
    The cache term is computed once per beta, not once per (alpha, beta)."""
    best = start
    for beta in betas:
        cache = cache_logits(affinity, key_labels, clip_logits.shape[1], beta)
        for alpha in alphas:
            acc = ((clip_logits + alpha * cache).argmax(1) == labels).float().mean().item()
            if acc > best[0]:
                best = (acc, alpha, beta)
    return best


class TipAdapterModel(nn.Module):
    def __init__(self, visual: nn.Module, text_weights: torch.Tensor, n_keys: int, trainable_keys: bool):
        super().__init__()
        self.visual = visual
        dim = text_weights.shape[1]
        self.register_buffer("text_weights", text_weights)
        self.keys = nn.Parameter(torch.zeros(n_keys, dim), requires_grad=trainable_keys)
        self.register_buffer("key_labels", torch.zeros(n_keys, dtype=torch.long))
        self.register_buffer("alpha", torch.tensor(1.0))
        self.register_buffer("beta", torch.tensor(1.0))

    def encode(self, images):
        return F.normalize(self.visual(images), dim=-1)

    def logits_from_features(self, feats, alpha=None, beta=None):
        return tip_logits(feats, self.text_weights, self.keys, self.key_labels,
                          self.alpha if alpha is None else alpha, self.beta if beta is None else beta)

    def forward(self, images):
        return self.logits_from_features(self.encode(images))


@TRAINER_REGISTRY.register
class TipAdapter(TrainerBase):
    NAME = "TipAdapter"
    TRAIN_KEYS = False
    FROZEN_IMAGE_ENCODER = True
    CONFIG_NODE = "TIP"  # shared with Tip-Adapter-F
    # the cache, alpha and beta are checkpointed: how they were built and searched does not change the model
    TRAINING_ONLY_KEYS = ("AUGMENT_EPOCH", "CROP_SCALE", "INIT_ALPHA", "INIT_BETA", "SEARCH", "SEARCH_SPLIT",
                          "ALPHA_RANGE", "BETA_RANGE", "ALPHA_STEPS", "BETA_STEPS")

    @classmethod
    def config_node(cls):
        c = CN()
        c.TEMPLATES = "dataset_tip"  # Tip-Adapter's templates for the dataset (ImageNet: its 7)
        c.AUGMENT_EPOCH = 10
        c.CROP_SCALE = (0.5, 1.0)
        c.INIT_ALPHA = 1.17  # the reference's ImageNet config
        c.INIT_BETA = 1.0
        # alpha, beta are searched on the VAL_SHOTS split (never on test data) over the reference's grid
        # low + i * (high - low) / steps, i = 0..steps-1.
        c.SEARCH = True
        # val_shots: the few-shot validation shots (min(K, 4) per class on CoOp's datasets; default: a K-shot
        # method sees no more labels than the protocol gives); val_full: the dataset's whole val split, as the
        # reference's main.py does on CoOp's datasets (ImageNet has none: the reference searches its test set).
        c.SEARCH_SPLIT = "val_shots"
        c.ALPHA_RANGE = (0.1, 3.0)
        c.BETA_RANGE = (0.1, 7.0)
        c.ALPHA_STEPS = 20
        c.BETA_STEPS = 200
        return c

    @classmethod
    def check_config(cls, cfg):
        c = cfg.TRAINER.TIP
        check(c.AUGMENT_EPOCH >= 1, "TRAINER.TIP.AUGMENT_EPOCH must be >= 1")
        check_templates(c.TEMPLATES, "TRAINER.TIP.TEMPLATES")
        check(c.ALPHA_STEPS >= 1 and c.BETA_STEPS >= 1, "TRAINER.TIP.ALPHA_STEPS and BETA_STEPS must be >= 1")
        check(c.INIT_ALPHA >= 0 and c.INIT_BETA >= 0, "TRAINER.TIP.INIT_ALPHA and INIT_BETA must be >= 0")
        check_crop_scale(c.CROP_SCALE, "TRAINER.TIP.CROP_SCALE")
        check(c.SEARCH_SPLIT in ("val_shots", "val_full"),
              f"TRAINER.TIP.SEARCH_SPLIT must be val_shots|val_full, got {c.SEARCH_SPLIT!r}")
        for key in ("ALPHA_RANGE", "BETA_RANGE"):
            lo, hi = c[key]
            check(0 <= lo < hi, f"TRAINER.TIP.{key} must be (low, high) with 0 <= low < high, got {c[key]}")

    def build_model(self):
        c = self.cfg.TRAINER.TIP
        bundle = load_clip_from_cfg(self.cfg, self.device)
        templates = self.templates(c.TEMPLATES)
        text_weights = zero_shot_weights(bundle, self.classnames, templates, self.device, self.cfg.MODEL.TEXT_TRUNCATE)
        self.prompt_info = template_info(c.TEMPLATES, templates)
        n_keys = self.cfg.DATASET.NUM_SHOTS * len(self.classnames)
        self.model = TipAdapterModel(bundle.model.visual, text_weights, n_keys, self.TRAIN_KEYS)
        del bundle
        self.model.visual.requires_grad_(False)
        with torch.no_grad():
            self.model.alpha.fill_(c.INIT_ALPHA)
            self.model.beta.fill_(c.INIT_BETA)

    def class_bound_state(self):
        return ("keys", "extra.keys", "extra.key_labels")  # alpha and beta are class-agnostic

    def transfer_undefined(self) -> str:
        return "its cache holds the training classes' labelled shots; classes without shots have no cache entries"

    def extra_state(self):
        m = self.model
        state = {"key_labels": m.key_labels, "alpha": m.alpha, "beta": m.beta}
        if not self.TRAIN_KEYS:
            state["keys"] = m.keys
        return state

    def load_extra_state(self, state):
        with torch.no_grad():
            for name, tensor in state.items():
                getattr(self.model, name).copy_(tensor)

    def logits_from_features(self, feats):
        return self.model.logits_from_features(F.normalize(feats, dim=-1))

    # ---- cache ------------------------------------------------------------------------------
    def augment_transform(self):
        """Tip-Adapter's augmentation, for the cache passes and Tip-Adapter-F's training."""
        return build_transform(self.cfg, True, ["random_resized_crop", "random_flip", "normalize"],
                               self.cfg.TRAINER.TIP.CROP_SCALE)

    @torch.no_grad()
    def build_cache(self):
        c = self.cfg.TRAINER.TIP
        items = self.dataset.train_x
        k, n_cls = self.cfg.DATASET.NUM_SHOTS, len(self.classnames)
        if len(items) != self.model.keys.shape[0]:
            raise ValueError(f"{self.NAME} needs exactly NUM_SHOTS={k} images for each of the {n_cls} classes "
                             f"({k * n_cls}); the split has {len(items)}")
        transform = self.augment_transform()
        total = None
        for epoch in range(c.AUGMENT_EPOCH):
            # the same sample order in every pass (features are averaged per sample), other crops
            feats, labels = self.extract_features(self.model.visual, items, transform,
                                                  f"cache pass [{epoch + 1}/{c.AUGMENT_EPOCH}]", ("tip-cache", epoch))
            total = feats if total is None else total + feats
        self.model.keys.copy_(F.normalize(total / c.AUGMENT_EPOCH, dim=-1))
        self.model.key_labels.copy_(labels)
        logger.info(f"{self.NAME}: cache of {len(items)} keys built from {c.AUGMENT_EPOCH} augmented passes")

    @torch.no_grad()
    def search_alpha_beta(self):
        c = self.cfg.TRAINER.TIP
        if not c.SEARCH:
            return
        items = self.dataset.val_split_full if c.SEARCH_SPLIT == "val_full" else self.dataset.val
        if not items:
            raise ValueError("Tip-Adapter searches alpha/beta on the VAL_SHOTS split; set DATASET.VAL_SHOTS > 0 "
                             "or TRAINER.TIP.SEARCH False")
        feats, labels = self.extract_features(self.model.encode, items, desc=f"{c.SEARCH_SPLIT} features")
        m = self.model
        acc, alpha, beta = search_alpha_beta_grid(
            feats @ m.text_weights.t(), feats @ m.keys.t(), m.key_labels, labels,
            search_grid(*c.ALPHA_RANGE, c.ALPHA_STEPS), search_grid(*c.BETA_RANGE, c.BETA_STEPS),
            (-1.0, m.alpha.item(), m.beta.item()))
        self.model.alpha.fill_(alpha)
        self.model.beta.fill_(beta)
        logger.info(f"{self.NAME}: alpha {alpha:.3f} beta {beta:.3f} (val accuracy {100 * acc:.2f})")

    def fit(self) -> bool:
        self.build_cache()
        self.search_alpha_beta()
        return True


@TRAINER_REGISTRY.register
class TipAdapterF(TipAdapter):
    NAME = "TipAdapterF"
    TRAIN_KEYS = True

    def before_train(self):
        if self.start_epoch == 0:
            self.build_cache()

    def after_train(self):
        self.search_alpha_beta()
        self.save(self.epochs_done)  # the searched alpha/beta travel with the trained keys

    def wise_ft_start(self):
        """Fine-tuning starts from the cache (keys = the training-free cache) with INIT_ALPHA / INIT_BETA."""
        self.build_cache()

    def wise_ft_tensors(self):
        return {**super().wise_ft_tensors(), "alpha": self.model.alpha, "beta": self.model.beta}

    def build_loader(self, items, is_train, transform=None, stream=None, persistent=False):
        if is_train and transform is None:
            transform = self.augment_transform()
        return super().build_loader(items, is_train, transform, stream, persistent)
