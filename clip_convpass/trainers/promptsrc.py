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

from clip_convpass.config import ConfigError, check
from clip_convpass.models.prompts import check_templates, ensemble_text_features, template_info
from clip_convpass.registry import TRAINER_REGISTRY
from clip_convpass.trainers.ivlp import IVLP, DeepPromptedCLIP

GPA_PREFIX = "gpa."
GPA_APPLIED = "gpa_applied"


def gaussian(epoch: int, mean: float, std: float) -> float:
    """The reference's get_gauss(mu, sigma)(epoch)."""
    return math.exp(-0.5 * ((epoch - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def gpa_weights(max_epoch: int, mean: float, std: float) -> torch.Tensor:
    """Normalised Gaussian weights of epochs 1..max_epoch (the reference's gauss over range(1, N + 1) / its sum)."""
    w = torch.tensor([gaussian(e, mean, std) for e in range(1, max_epoch + 1)], dtype=torch.float64)
    return w / w.sum()


class SelfRegulatedCLIP(DeepPromptedCLIP):
    """IVLP's model whose forward is PromptSRC's training pass: (logits, zero-shot logits, text features, frozen
    text features, image features, frozen image features), the frozen ones without gradients."""

    def forward(self, images: torch.Tensor):
        text = self.text_features()
        feats = self.encode_image(images)
        logits = (self.logit_scale * feats @ text.t()).float()
        with torch.no_grad():
            prompted = self.visual.transformer
            switch = hasattr(prompted, "enabled")
            if switch:
                prompted.enabled = False  # the frozen tower exactly
            try:
                feats_zs = self.encode_image(images)
            finally:
                if switch:
                    prompted.enabled = True
            logits_zs = (self.logit_scale * feats_zs @ self.text_zs.t().to(feats_zs.dtype)).float()
        return logits, logits_zs, text.float(), self.text_zs.float(), feats.float(), feats_zs.float()


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
        self.gpa_applied = torch.zeros((), device=self.device)  # 1 once the aggregate replaced the prompts

    def make_model(self, clip_model, learner, text, deep_text):
        return SelfRegulatedCLIP(clip_model, learner, text, deep_text)

    def forward_backward(self, batch):
        c = self.cfg.TRAINER.PROMPTSRC
        images, labels = batch["img"].to(self.device), batch["label"].to(self.device)
        with self.autocast():  # through DDP under torchrun: gradients are averaged over the processes
            logits, logits_zs, text, text_zs, feats, feats_zs = (self.ddp or self.model)(images)
            ce = F.cross_entropy(logits, labels)
            kl = F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(logits_zs, dim=1), reduction="sum",
                          log_target=True) / logits.numel()
            l1_text = F.l1_loss(text, text_zs)
            l1_image = F.l1_loss(feats, feats_zs)
            loss = ce + kl + c.TEXT_LOSS_WEIGHT * l1_text + c.IMAGE_LOSS_WEIGHT * l1_image
        self.optimize(loss)
        acc = (logits.argmax(1) == labels).float().mean().item() * 100
        return {"loss": loss.item(), "ce": ce.item(), "kl": kl.item(), "l1_text": l1_text.item(),
                "l1_image": l1_image.item(), "acc": acc}

    # ---- Gaussian prompt aggregation ---------------------------------------------------------------------
    # The running sum holds raw Gaussian weights (they do not depend on MAX_EPOCH); the normalisation over
    # MAX_EPOCH epochs happens once, after the last, so a resumed run may change MAX_EPOCH before it ends.
    def after_epoch(self):
        c = self.cfg.TRAINER.PROMPTSRC
        weight = gaussian(self.epoch + 1, c.GPA_MEAN, c.GPA_STD)
        for name, p in self.trainable_named_parameters():
            self.gpa_sum[name] += weight * p.detach().double()
        if self.epoch + 1 == self.max_epoch:  # the aggregate is the final model
            total = sum(gaussian(e, c.GPA_MEAN, c.GPA_STD) for e in range(1, self.max_epoch + 1))
            with torch.no_grad():
                for name, p in self.trainable_named_parameters():
                    p.copy_((self.gpa_sum[name] / total).to(p.dtype))
            self.gpa_applied.fill_(1.0)

    def before_train(self):
        super().before_train()
        if self.start_epoch < self.max_epoch and bool(self.gpa_applied):
            raise ConfigError(f"{self.output_dir}: this PromptSRC run ended with its prompts replaced by their "
                              f"Gaussian aggregate; training it further would start from the aggregate, not from its "
                              f"last epoch. Train it afresh (--force) with the new OPTIM.MAX_EPOCH")

    def extra_state(self):
        return {**{GPA_PREFIX + k: v for k, v in self.gpa_sum.items()}, GPA_APPLIED: self.gpa_applied}

    def load_extra_state(self, state):
        self.gpa_sum = {k[len(GPA_PREFIX):]: v.to(self.device) for k, v in state.items()
                        if k.startswith(GPA_PREFIX) and k != GPA_APPLIED}
        self.gpa_applied = state[GPA_APPLIED].to(self.device)
