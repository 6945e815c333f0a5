"""PromptSRC (Khattak et al., "Self-regulating Prompts", ICCV 2023): IVLP's prompts trained with self-regulation
(muzairkhattak/PromptSRC trainers/promptsrc.py):

    loss = CE + KL(p_zs || p) + TEXT_LOSS_WEIGHT * L1(t, t_zs) + IMAGE_LOSS_WEIGHT * L1(f, f_zs)

t, f: the prompted model's unit text features (every class) and image features; t_zs: frozen CLIP's text
features averaged raw over the 60 templates of TEMPLATES, then normalised (textual diversity); f_zs: the frozen
image tower on the same augmented batch (here the prompted tower with its prompts switched off, exactly the
frozen one); p_zs = softmax(scale f_zs t_zs^T). The KL is the reference's: summed and divided by B x C (not
batchmean), temperature 1; L1 means over all elements.

Gaussian prompt aggregation (GPA): after each epoch e (1-based) the prompts are added to a running sum with weight
N(e; GPA_MEAN, GPA_STD), the weights normalised over MAX_EPOCH; after the last epoch the sum replaces the prompts
(and is what the last checkpoint holds). The reference sums the whole state_dict, frozen weights included (in
fp16 they pick up rounding); the sum here covers the trained prompts only, which is what the paper describes.
The running sum is checkpointed, so a resumed run aggregates exactly as an uninterrupted one.
"""
import math
from typing import Dict

import torch
import torch.nn.functional as F

from clip_convpass.config import check
from clip_convpass.models.prompts import check_templates, ensemble_text_features, template_info
from clip_convpass.registry import TRAINER_REGISTRY
from clip_convpass.trainers.ivlp import IVLP

GPA_PREFIX = "gpa."


def gpa_weights(max_epoch: int, mean: float, std: float) -> torch.Tensor:
    """Normalised Gaussian weights of epochs 1..max_epoch (the reference's get_gauss over range(1, N + 1))."""
    w = torch.tensor([math.exp(-0.5 * ((e - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
                      for e in range(1, max_epoch + 1)], dtype=torch.float64)
    return w / w.sum()


@TRAINER_REGISTRY.register
class PromptSRC(IVLP):
    NAME = "PromptSRC"
    CONFIG_NODE = "PROMPTSRC"
    TRAINING_ONLY_KEYS = ("TEXT_LOSS_WEIGHT", "IMAGE_LOSS_WEIGHT", "TEMPLATES", "GPA_MEAN", "GPA_STD")
    INVALID_EXAMPLES = {**IVLP.INVALID_EXAMPLES, "TEXT_LOSS_WEIGHT": "-1.0", "IMAGE_LOSS_WEIGHT": "-1.0",
                        "GPA_STD": "0.0", "TEMPLATES": "ensemble9"}
    FREE_KEYS = ("CTX_INIT", "GPA_MEAN")

    @classmethod
    def config_node(cls):
        c = IVLP.config_node()
        c.N_CTX_TEXT = 4
        c.N_CTX_VISION = 4
        c.TEXT_LOSS_WEIGHT = 25.0
        c.IMAGE_LOSS_WEIGHT = 10.0
        c.GPA_MEAN = 15.0
        c.GPA_STD = 1.0
        c.TEMPLATES = "promptsrc60"
        return c

    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        c = cfg.TRAINER.PROMPTSRC
        check(c.TEXT_LOSS_WEIGHT >= 0, f"TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT must be >= 0, got {c.TEXT_LOSS_WEIGHT}")
        check(c.IMAGE_LOSS_WEIGHT >= 0, f"TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT must be >= 0, got {c.IMAGE_LOSS_WEIGHT}")
        check(c.GPA_STD > 0, f"TRAINER.PROMPTSRC.GPA_STD must be > 0, got {c.GPA_STD}")
        check_templates(c.TEMPLATES, "TRAINER.PROMPTSRC.TEMPLATES")

    def build_model(self):
        super().build_model()
        c = self.cfg.TRAINER.PROMPTSRC
        templates = self.templates(c.TEMPLATES)
        # frozen CLIP's text features: the plain text tower (no prompts) over the templates, averaged raw
        with torch.no_grad():
            plain = ensemble_text_features(self.model.text_encoder, self.clip_bundle.tokenizer, self.classnames,
                                           templates, self.device, normalize_each=False)
        self.model.register_buffer("text_zs", F.normalize(plain, dim=-1), persistent=False)
        self.prompt_info.update(template_info(c.TEMPLATES, templates))
        # the running weighted sum of each prompt tensor over the epochs done (checkpointed with them)
        self.gpa_sum: Dict[str, torch.Tensor] = {n: torch.zeros_like(p, dtype=torch.float64)
                                                 for n, p in self.trainable_named_parameters()}

    def frozen_image_features(self, images: torch.Tensor) -> torch.Tensor:
        prompted = getattr(self, "vision_prompts", None)
        if prompted is None:
            return self.model.encode_image(images)
        prompted.enabled = False
        try:
            return self.model.encode_image(images)
        finally:
            prompted.enabled = True

    def forward_backward(self, batch):
        c = self.cfg.TRAINER.PROMPTSRC
        images, labels = batch["img"].to(self.device), batch["label"].to(self.device)
        with self.autocast():
            m = self.model
            text = m.text_features()
            feats = m.encode_image(images)
            logits = (m.logit_scale * feats @ text.t()).float()
            with torch.no_grad():
                feats_zs = self.frozen_image_features(images)
                logits_zs = (m.logit_scale * feats_zs @ m.text_zs.t().to(feats_zs.dtype)).float()
            ce = F.cross_entropy(logits, labels)
            kl = F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(logits_zs, dim=1), reduction="sum",
                          log_target=True) / logits.numel()
            l1_text = F.l1_loss(text.float(), m.text_zs.float())
            l1_image = F.l1_loss(feats.float(), feats_zs.float())
            loss = ce + kl + c.TEXT_LOSS_WEIGHT * l1_text + c.IMAGE_LOSS_WEIGHT * l1_image
        self.optimize(loss)
        acc = (logits.argmax(1) == labels).float().mean().item() * 100
        return {"loss": loss.item(), "ce": ce.item(), "kl": kl.item(), "l1_text": l1_text.item(),
                "l1_image": l1_image.item(), "acc": acc}

    # ---- Gaussian prompt aggregation ---------------------------------------------------------------------
    def after_epoch(self):
        c = self.cfg.TRAINER.PROMPTSRC
        weight = float(gpa_weights(self.max_epoch, c.GPA_MEAN, c.GPA_STD)[self.epoch])
        for name, p in self.trainable_named_parameters():
            self.gpa_sum[name] += weight * p.detach().double()
        if self.epoch + 1 == self.max_epoch:  # the aggregate is the final model
            with torch.no_grad():
                for name, p in self.trainable_named_parameters():
                    p.copy_(self.gpa_sum[name].to(p.dtype))

    def extra_state(self):
        return {GPA_PREFIX + k: v for k, v in self.gpa_sum.items()}

    def load_extra_state(self, state):
        self.gpa_sum = {k[len(GPA_PREFIX):]: v.to(self.device) for k, v in state.items() if k.startswith(GPA_PREFIX)}

