"""The Convpass_CLIP recipe for any adapter: frozen CLIP image encoder + an adapter + a linear head
initialised from the text embeddings of prompted class names (logit_scale x normalised text classifier,
bias zero); the text tower is released once the head exists; only the adapter and the head train.

Not registered itself: ConvpassCLIP (TRAINER.CONVPASS) and PETLCLIP (TRAINER.PETL, adapter chosen by
name) are the two ways to configure it.
"""
import logging
import math
from typing import Dict, List, Tuple

import torch
from torch import nn

from clip_convpass.adapters.base import Injection, inject
from clip_convpass.config import check
from clip_convpass.data import build_transform
from clip_convpass.engine.trainer import TrainerBase
from clip_convpass.models.clip_loader import load_clip_from_cfg
from clip_convpass.models.heads import HEAD_INITS, HEAD_PARAMS, HEAD_TEMPERATURES, CLIPClassifier, build_head
from clip_convpass.models.prompts import check_templates, template_info
from clip_convpass.models.timm_backbone import create_timm_model, is_timm, timm_visual

logger = logging.getLogger(__name__)
NO_ADAPTER = "none"  # TRAINER.<node>.ADAPTER none: nothing injected (a linear probe trained by SGD, or full fine-tuning)


def add_head_keys(c) -> None:
    """The head and attention keys every adapter trainer's node has."""
    # Same attention math on contiguous batch-first tensors (faster training; False = open_clip's MHA call).
    c.FAST_ATTENTION = True
    c.TEMPLATES = "dataset"  # head init text: dataset (CoOp's for the dataset) | single | ensemble7 | ensemble80
    c.HEAD_INIT = "text"  # text | random | zero | lp (LP-FT: a linear probe on the shots, then fine-tuning)
    c.HEAD_TRAINABLE = True
    # folded (logit_scale in the weights: rows of norm 100) | scaled (unit rows x temperature) | cosine
    # (normalised rows x temperature); all give zero-shot CLIP's logits at init (README "Head parameterisations")
    c.HEAD_PARAM = "folded"
    c.HEAD_TEMPERATURE = "fixed"  # fixed (CLIP's logit_scale) | learnable (scaled / cosine only)
    c.HEAD_LR_MULT = 1.0  # the head's learning rate is OPTIM.LR x this
    # the adapter's learning rate is OPTIM.LR x this: what the PETL rows without a scale (VPT, BitFit) search,
    # so that the head keeps the same learning rate in every row
    c.ADAPTER_LR_MULT = 1.0
    # True: every parameter of the image encoder trains as well (full fine-tuning: the "Full" rows of the Convpass
    # paper's Tables 1 and 3, with ADAPTER none); its learning rate is the adapter's.
    c.BACKBONE_TRAINABLE = False


class SupervisedClassifier(nn.Module):
    """A timm model with its own head (trunk.head): logits from its pooled, unnormalised features."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    @property
    def head(self) -> nn.Module:
        return self.visual.classifier_head

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        trunk = self.visual.trunk
        return trunk.forward_head(trunk.forward_features(images), pre_logits=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def stochastic_modules(self) -> List[nn.Module]:
        from timm.layers import DropPath

        return [m for m in self.visual.modules() if isinstance(m, DropPath)]


def check_head_keys(c, node: str) -> None:
    key = f"TRAINER.{node}"
    check(c.HEAD_INIT in HEAD_INITS, f"{key}.HEAD_INIT must be one of {HEAD_INITS}, got {c.HEAD_INIT!r}")
    check_templates(c.TEMPLATES, f"{key}.TEMPLATES")
    check(c.HEAD_PARAM in HEAD_PARAMS, f"{key}.HEAD_PARAM must be one of {HEAD_PARAMS}, got {c.HEAD_PARAM!r}")
    check(c.HEAD_TEMPERATURE in HEAD_TEMPERATURES,
          f"{key}.HEAD_TEMPERATURE must be one of {HEAD_TEMPERATURES}, got {c.HEAD_TEMPERATURE!r}")
    check(not (c.HEAD_PARAM == "folded" and c.HEAD_TEMPERATURE == "learnable"),
          f"{key}.HEAD_TEMPERATURE learnable needs HEAD_PARAM scaled or cosine (folded keeps it in the weights)")
    check(math.isfinite(c.HEAD_LR_MULT) and c.HEAD_LR_MULT > 0, f"{key}.HEAD_LR_MULT must be > 0, got {c.HEAD_LR_MULT}")
    check(math.isfinite(c.ADAPTER_LR_MULT) and c.ADAPTER_LR_MULT > 0,
          f"{key}.ADAPTER_LR_MULT must be > 0, got {c.ADAPTER_LR_MULT}")
    # degenerate cells: refused before any work
    check(not (c.HEAD_INIT == "zero" and not c.HEAD_TRAINABLE),
          f"{key}: a frozen zero head gives zero logits and zero gradients to everything before it: nothing "
          f"would train (make the head trainable or use another HEAD_INIT)")
    check(not (c.HEAD_INIT in ("zero", "lp") and c.HEAD_PARAM == "cosine"),
          f"{key}.HEAD_PARAM cosine cannot hold a {c.HEAD_INIT} head (zero rows have no direction; a probe's "
          f"row norms would be lost); use folded or scaled")


class AdapterCLIPTrainer(TrainerBase):
    TRAINING_ONLY_KEYS = ("HEAD_LR_MULT", "ADAPTER_LR_MULT")

    @classmethod
    def reads_class_names(cls, cfg) -> bool:
        return cfg.TRAINER[cls.CONFIG_NODE].HEAD_INIT == "text"

    def adapter(self) -> Tuple[str, Dict[str, object]]:
        """(registered adapter preset, option overrides) from this trainer's config node."""
        raise NotImplementedError

    def build_model(self):
        if is_timm(self.cfg.MODEL.BACKBONE):
            return self.build_supervised_model()
        c = self.cfg.TRAINER[self.CONFIG_NODE]
        bundle = load_clip_from_cfg(self.cfg, self.device)
        templates = self.templates(c.TEMPLATES)
        head = build_head(bundle, self.classnames, templates, c.HEAD_INIT, self.device, seed=self.cfg.SEED,
                          truncate=self.cfg.MODEL.TEXT_TRUNCATE, param=c.HEAD_PARAM,
                          learnable_temperature=c.HEAD_TEMPERATURE == "learnable")
        visual = bundle.model.visual
        self.prompt_info = {"head_init": c.HEAD_INIT, "head_param": c.HEAD_PARAM}
        if c.HEAD_INIT in ("text", "lp"):
            self.prompt_info.update(template_info(c.TEMPLATES, templates))
        del bundle  # the text tower is released once the head exists
        self.model = self.adapted(visual, lambda v: CLIPClassifier(v, head))

    def adapted(self, visual: nn.Module, classifier) -> nn.Module:
        """The image tower with the configured adapter injected (none: nothing), wrapped by `classifier`; what
        trains is the adapter's structure (not a name pattern), the head, and with BACKBONE_TRAINABLE the tower."""
        c = self.cfg.TRAINER[self.CONFIG_NODE]
        preset, overrides = self.adapter()
        self.injection = Injection() if preset == NO_ADAPTER else inject(visual, preset, overrides, c.FAST_ATTENTION)
        model = classifier(visual)
        model.requires_grad_(False)
        if c.BACKBONE_TRAINABLE:
            taken = {id(p) for p in [*model.head.parameters(), *self.injection.parameters]}
            self.injection.parameters.extend(p for p in visual.parameters() if id(p) not in taken)
        for p in self.injection.parameters:
            p.requires_grad_(True)
        model.head.requires_grad_(c.HEAD_TRAINABLE)
        return model

    def build_supervised_model(self):
        """A timm ViT (MODEL.BACKBONE timm:<name>) with the adapter and a new linear head on its features, as
        PETL-ViT and NOAH train them: the head is timm's for the class count (PyTorch's default init; features are
        not normalised, no temperature)."""
        c = self.cfg.TRAINER[self.CONFIG_NODE]
        check(c.HEAD_INIT == "random" and c.HEAD_PARAM == "folded" and c.HEAD_TEMPERATURE == "fixed",
              f"MODEL.BACKBONE {self.cfg.MODEL.BACKBONE} has no text tower: set TRAINER.{self.CONFIG_NODE}.HEAD_INIT "
              f"random (a new linear head) with HEAD_PARAM folded and HEAD_TEMPERATURE fixed")
        trunk = create_timm_model(self.cfg.MODEL.BACKBONE, self.cfg.MODEL.PRETRAINED, len(self.classnames),
                                self.cfg.MODEL.DROP_PATH_RATE, img_size=tuple(self.cfg.INPUT.SIZE),
                                pre_logits=self.cfg.MODEL.PRE_LOGITS == "keep")
        self.model = self.adapted(timm_visual(trunk), SupervisedClassifier)
        self.prompt_info = {"head_init": "random", "backbone": self.cfg.MODEL.BACKBONE}

    def optimizer_param_groups(self) -> List[dict]:
        c = self.cfg.TRAINER[self.CONFIG_NODE]
        head = {id(p) for p in self.model.head.parameters()}
        params = [p for _, p in self.trainable_named_parameters()]
        groups = [{"params": [p for p in params if id(p) not in head], "lr_mult": c.ADAPTER_LR_MULT},
                  {"params": [p for p in params if id(p) in head], "lr_mult": c.HEAD_LR_MULT}]
        return [g for g in groups if g["params"]]

    def init_from_data(self) -> None:
        """LP-FT (Kumar et al.): the head starts from a linear probe fitted on the training shots' features
        (the adapters are the identity at init, so these are CLIP's), C chosen on the validation shots with
        TRAINER.LINEAR_PROBE's search."""
        if self.cfg.TRAINER[self.CONFIG_NODE].HEAD_INIT != "lp":
            return
        from clip_convpass.models.probe import fit_probe

        transform = build_transform(self.cfg, False)
        self.set_model_mode(False)
        train = self.extract_features(self.model.encode, self.dataset.train_x, transform, "LP-FT train features")
        val = self.extract_features(self.model.encode, self.dataset.val, transform, "LP-FT val features") \
            if self.dataset.val else None
        weight, bias, chosen_c = fit_probe(train, val, len(self.classnames), self.cfg.TRAINER.LINEAR_PROBE)
        head = self.model.head
        with torch.no_grad():
            scale = head.log_scale.exp() if hasattr(head, "log_scale") else 1.0
            head.weight.copy_(weight / scale)
            head.bias.copy_(bias)
        self.annotations["lp_c"] = chosen_c
        logger.info(f"LP-FT: head initialised from a linear probe (C={chosen_c:.3g})")

    # Transfer: the adapters are class-agnostic; the head's rows (and bias) are one per class. On other classes
    # the head is rebuilt as build_model builds it: rows from the target classes' prompted names (same templates
    # and parameterisation), a learned temperature kept. None of the reference repositories defines this for vision
    # adapters (README "Transfer to other classes").
    def class_bound_state(self):
        return ("head.weight", "head.bias")

    def transfer_undefined(self) -> str:
        init = self.cfg.TRAINER[self.CONFIG_NODE].HEAD_INIT
        if is_timm(self.cfg.MODEL.BACKBONE):
            return "a supervised backbone's head has no class names to rebuild its rows from"
        if init == "lp":
            return "its head starts from a linear probe fitted on the training classes' shots; other classes have none"
        if init != "text":
            return f"its head starts {init}, without the class names: rebuilt rows would carry no class information"
        return ""

    def set_model_mode(self, train: bool):
        # The frozen backbone stays in eval mode; only the adapter modules switch (dropout, LoRA merging), and a
        # timm backbone's stochastic depth (MODEL.DROP_PATH_RATE), which acts while training only.
        self.model.eval()
        if self.cfg.TRAINER[self.CONFIG_NODE].BACKBONE_TRAINABLE:  # full fine-tuning: the tower's own dropouts too
            self.model.visual.train(train)
        for m in [*self.injection.modules, *getattr(self.model, "stochastic_modules", lambda: [])()]:
            m.train(train)

    def model_inference(self, images):
        return self.model(images)
