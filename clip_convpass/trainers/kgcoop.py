"""KgCoOp (Yao et al., "Visual-Language Prompt Tuning with Knowledge-guided Context Optimization", CVPR 2023):
CoOp's unified context, trained with CE + W * (1 - mean_i cos(t_i, t_i^clip)), which keeps every class's learned
text embedding t_i near its hand-crafted one t_i^clip (the dataset's prompt through frozen CLIP, normalised);
the mean runs over all classes of the run, as in the reference (htyao89/KgCoOp trainers/kgcoop.py). The paper
writes the term as a squared L2 distance of unit vectors, 2 (1 - cos): the code's W = 8 is the paper's lambda = 8
on the code's form, which is what runs here. W = 0 is exactly CoOp's training step.
"""
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip_convpass.config import check
from clip_convpass.models.prompt_learner import CLASS_POSITIONS
from clip_convpass.models.prompts import build_text_classifier, check_templates, template_info
from clip_convpass.registry import TRAINER_REGISTRY
from clip_convpass.trainers.coop import CoOp, PromptedCLIP


class KgCoOpModel(PromptedCLIP):
    def __init__(self, clip_model, learner, text, text_clip):
        super().__init__(clip_model, learner, text)
        self.register_buffer("text_clip", text_clip, persistent=False)  # [C, D] unit rows, frozen

    def forward(self, images):
        """(logits, knowledge-guided term) of the training step, as the reference's model returns them."""
        text = self.text_features()
        logits = self.logit_scale * self.encode_image(images) @ text.t()
        score = 1.0 - F.cosine_similarity(text, self.text_clip.to(text.dtype), dim=1, eps=1e-7).mean()
        return logits, score


@TRAINER_REGISTRY.register
class KgCoOp(CoOp):
    NAME = "KgCoOp"
    CONFIG_NODE = "KGCOOP"
    TRAINING_ONLY_KEYS = ("W", "TEMPLATES")  # they shape the loss, not the evaluated model
    INVALID_EXAMPLES = {"W": "-1.0", "INIT_STD": "0.0", "TEMPLATES": "ensemble9", "CLASS_TOKEN_POSITION": "left"}
    INVALID_PAIRS = {("N_CTX", "CTX_INIT"): ("0", "''")}
    FREE_KEYS = ("CSC",)

    @classmethod
    def config_node(cls):
        c = CN()
        c.N_CTX = 4
        c.CTX_INIT = "a photo of a"  # the reference hard-codes this initialisation
        c.CSC = False
        c.CLASS_TOKEN_POSITION = "end"
        c.INIT_STD = 0.02
        c.W = 8.0  # weight of the knowledge-guided term (the reference's TRAINER.COOP.W in every script)
        c.TEMPLATES = "dataset"  # the hand-crafted prompt: CoOp's template for the dataset
        return c

    @classmethod
    def check_config(cls, cfg):
        c = cfg.TRAINER.KGCOOP
        check(c.CLASS_TOKEN_POSITION in CLASS_POSITIONS, f"TRAINER.KGCOOP.CLASS_TOKEN_POSITION must be one of "
                                                         f"{CLASS_POSITIONS}, got {c.CLASS_TOKEN_POSITION!r}")
        check(bool(c.CTX_INIT) or c.N_CTX >= 1, "TRAINER.KGCOOP.N_CTX must be >= 1 when CTX_INIT is empty")
        check(c.W >= 0, f"TRAINER.KGCOOP.W must be >= 0, got {c.W}")
        check(c.INIT_STD > 0, f"TRAINER.KGCOOP.INIT_STD must be > 0, got {c.INIT_STD}")
        check_templates(c.TEMPLATES, "TRAINER.KGCOOP.TEMPLATES")

    def build_model(self):
        c = self.cfg.TRAINER.KGCOOP
        templates = self.templates(c.TEMPLATES)
        bundle = self.build_prompted(KgCoOpModel, text_clip=None)
        self.model.text_clip = build_text_classifier(self.model.text_encoder, bundle.tokenizer, self.classnames,
                                                     templates, self.device)
        self.prompt_info.update(template_info(c.TEMPLATES, templates))

    def forward_backward(self, batch):
        images, labels = batch["img"].to(self.device), batch["label"].to(self.device)
        with self.autocast():
            logits, score = self.ddp(images) if self.ddp is not None else self.model(images)
            ce = F.cross_entropy(logits.float(), labels)
            loss = ce + self.cfg.TRAINER.KGCOOP.W * score.float()
        self.optimize(loss)
        acc = (logits.argmax(1) == labels).float().mean().item() * 100
        return {"loss": loss.item(), "ce": ce.item(), "kg": score.item(), "acc": acc}
