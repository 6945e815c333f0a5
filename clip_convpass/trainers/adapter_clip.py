"""The Convpass_CLIP recipe for any adapter: frozen CLIP image encoder + an adapter + a linear head
initialised from the text embeddings of prompted class names (logit_scale x normalised text classifier,
bias zero); the text tower is released once the head exists; only the adapter and the head train.

Not registered itself: ConvpassCLIP (TRAINER.CONVPASS) and PETLCLIP (TRAINER.PETL, adapter chosen by
name) are the two ways to configure it.
"""
from typing import Dict, Tuple

from clip_convpass.adapters.base import inject
from clip_convpass.clip_loader import load_clip_from_cfg
from clip_convpass.config import check
from clip_convpass.heads import HEAD_INITS, CLIPClassifier, build_head
from clip_convpass.prompts import check_templates, template_info
from clip_convpass.trainer import TrainerBase


def add_head_keys(c) -> None:
    """The head and attention keys every adapter trainer's node has."""
    # Same attention math on contiguous batch-first tensors (faster training; False = open_clip's MHA call).
    c.FAST_ATTENTION = True
    c.TEMPLATES = "dataset"  # head init text: dataset (CoOp's for the dataset) | single | ensemble7 | ensemble80
    c.HEAD_INIT = "text"  # text | random | zero
    c.HEAD_TRAINABLE = True


def check_head_keys(c, node: str) -> None:
    check(c.HEAD_INIT in HEAD_INITS, f"TRAINER.{node}.HEAD_INIT must be one of {HEAD_INITS}, got {c.HEAD_INIT!r}")
    check_templates(c.TEMPLATES, f"TRAINER.{node}.TEMPLATES")


class AdapterCLIPTrainer(TrainerBase):
    def adapter(self) -> Tuple[str, Dict[str, object]]:
        """(registered adapter preset, option overrides) from this trainer's config node."""
        raise NotImplementedError

    def build_model(self):
        c = self.cfg.TRAINER[self.CONFIG_NODE]
        bundle = load_clip_from_cfg(self.cfg, self.device)
        templates = self.templates(c.TEMPLATES)
        head = build_head(bundle, self.classnames, templates, c.HEAD_INIT, self.device, seed=self.cfg.SEED,
                          truncate=self.cfg.MODEL.TEXT_TRUNCATE)
        visual = bundle.model.visual
        self.prompt_info = template_info(c.TEMPLATES, templates) if c.HEAD_INIT == "text" else {"head_init": c.HEAD_INIT}
        del bundle  # the text tower is released once the head exists
        preset, overrides = self.adapter()
        self.injection = inject(visual, preset, overrides, c.FAST_ATTENTION)
        self.model = CLIPClassifier(visual, head)
        self.model.requires_grad_(False)
        for p in self.injection.parameters:  # what trains is the adapter's structure, not a name pattern
            p.requires_grad_(True)
        self.model.head.requires_grad_(c.HEAD_TRAINABLE)

    def set_model_mode(self, train: bool):
        # The frozen backbone stays in eval mode; only the adapter modules switch (dropout, LoRA merging).
        self.model.eval()
        for m in self.injection.modules:
            m.train(train)

    def model_inference(self, images):
        return self.model(images)
