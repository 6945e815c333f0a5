"""Linear-probe CLIP: L2-regularised multinomial logistic regression on frozen image features.

Objective (scikit-learn's LogisticRegression with C, bias not penalised):
    C * sum_i CE(W x_i + b, y_i) + 0.5 * ||W||^2
solved with L-BFGS in torch (GPU-capable). C is chosen on the VAL_SHOTS split (never on test data):
SEARCH lpclip (default) follows CoOp's lpclip/linear_probe.py exactly -- the 7-point grid in its order
(the first best wins), then 8 log-bisection steps between C/10 and 10C, the left point winning ties,
the last step's winner being the choice; SEARCH refine is a coarse grid then a finer log-spaced grid
between the best point's neighbours. The final probe is fit on the train shots with the chosen C.
Features use the test transform, as in CLIP's and CoOp's linear probes; lpclip uses them raw
(NORMALIZE False).
"""
import logging

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_convpass.config import check
from clip_convpass.data import build_transform
from clip_convpass.engine.trainer import TrainerBase
from clip_convpass.models.clip_loader import load_clip_from_cfg
from clip_convpass.models.probe import fit_probe
from clip_convpass.registry import TRAINER_REGISTRY

logger = logging.getLogger(__name__)


class LinearProbeModel(nn.Module):
    def __init__(self, visual: nn.Module, num_classes: int, normalize: bool):
        super().__init__()
        self.visual = visual
        self.normalize = normalize
        self.register_buffer("weight", torch.zeros(num_classes, visual.output_dim))
        self.register_buffer("bias", torch.zeros(num_classes))

    def encode(self, images):
        f = self.visual(images)
        return F.normalize(f, dim=-1) if self.normalize else f

    def classify(self, feats):
        f = F.normalize(feats, dim=-1) if self.normalize else feats
        return f @ self.weight.t() + self.bias

    def forward(self, images):
        return self.classify(self.visual(images))


@TRAINER_REGISTRY.register
class LinearProbeCLIP(TrainerBase):
    NAME = "LinearProbeCLIP"
    FROZEN_IMAGE_ENCODER = True
    CONFIG_NODE = "LINEAR_PROBE"
    TRAINING_ONLY_KEYS = ("C_GRID", "SEARCH", "BISECTION_STEPS", "REFINE_POINTS", "MAX_ITER")  # the fit's search

    @classmethod
    def config_node(cls):
        c = CN()
        # Inverse L2 strength C (scikit-learn's convention), in lpclip's order (ties go to the first).
        c.C_GRID = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)
        c.SEARCH = "lpclip"  # lpclip: grid + log-bisection (CoOp) | refine: grid + finer grid
        c.BISECTION_STEPS = 8  # lpclip
        c.REFINE_POINTS = 9  # refine: log-spaced points between the best C's neighbours
        c.MAX_ITER = 1000
        c.NORMALIZE = False  # L2-normalise features (True) or use them raw, as lpclip does (False)
        return c

    @classmethod
    def check_config(cls, cfg):
        grid = cfg.TRAINER.LINEAR_PROBE.C_GRID
        lp = cfg.TRAINER.LINEAR_PROBE
        check(bool(grid) and all(c > 0 for c in grid),
              f"TRAINER.LINEAR_PROBE.C_GRID must list positive values, got {grid}")
        check(lp.SEARCH in ("lpclip", "refine"), f"TRAINER.LINEAR_PROBE.SEARCH must be lpclip|refine, got {lp.SEARCH!r}")
        check(lp.BISECTION_STEPS >= 1, f"TRAINER.LINEAR_PROBE.BISECTION_STEPS must be >= 1, got {lp.BISECTION_STEPS}")
        check(lp.REFINE_POINTS >= 2, f"TRAINER.LINEAR_PROBE.REFINE_POINTS must be >= 2, got {lp.REFINE_POINTS}")
        check(lp.MAX_ITER >= 1, f"TRAINER.LINEAR_PROBE.MAX_ITER must be >= 1, got {lp.MAX_ITER}")

    @classmethod
    def reads_class_names(cls, cfg) -> bool:
        return False  # image features only

    def build_model(self):
        bundle = load_clip_from_cfg(self.cfg, self.device)
        self.model = LinearProbeModel(bundle.model.visual, len(self.classnames),
                                      self.cfg.TRAINER.LINEAR_PROBE.NORMALIZE).eval()
        del bundle
        self.model.requires_grad_(False)
        self.chosen_c = None

    def logits_from_features(self, feats):
        return self.model.classify(feats)

    def class_bound_state(self):
        return ("extra.weight", "extra.bias")

    def transfer_undefined(self) -> str:
        return "a linear probe has one weight row per training class, fitted on its shots; other classes have none"

    def extra_state(self):
        return {"weight": self.model.weight, "bias": self.model.bias}

    def load_extra_state(self, state):
        with torch.no_grad():
            self.model.weight.copy_(state["weight"])
            self.model.bias.copy_(state["bias"])

    def fit(self) -> bool:
        lp = self.cfg.TRAINER.LINEAR_PROBE
        test_tf = build_transform(self.cfg, False)
        train = self.extract_features(self.model.encode, self.dataset.train_x, test_tf, "train features")
        val = self.extract_features(self.model.encode, self.dataset.val, test_tf, "val features") if self.dataset.val else None
        w, b, self.chosen_c = fit_probe(train, val, len(self.classnames), lp)
        self.load_extra_state({"weight": w, "bias": b})
        return True
