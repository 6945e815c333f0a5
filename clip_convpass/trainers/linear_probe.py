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
import math

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_convpass.clip_loader import load_clip_from_cfg
from clip_convpass.config import check
from clip_convpass.data import build_transform
from clip_convpass.registry import TRAINER_REGISTRY, Row
from clip_convpass.trainer import TrainerBase

logger = logging.getLogger("clip_convpass")


def logreg_objective(weight, bias, x, y, c):
    return c * F.cross_entropy(x @ weight.t() + bias, y, reduction="sum") + 0.5 * weight.pow(2).sum()


def fit_logreg(x: torch.Tensor, y: torch.Tensor, num_classes: int, c: float, max_iter: int = 1000,
               init: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise logreg_objective with L-BFGS; returns (weight [K, D], bias [K])."""
    x = x.double()
    w = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, device=x.device)
    b = torch.zeros(num_classes, dtype=torch.float64, device=x.device)
    if init is not None:
        w.copy_(init[0])
        b.copy_(init[1])
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")
    n = x.shape[0]

    def closure():
        opt.zero_grad()
        loss = logreg_objective(w, b, x, y, c) / n  # scaled for conditioning; same minimiser
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().float(), b.detach().float()


def fit_probe(train, val, n_cls: int, lp) -> tuple:
    """(weight, bias, C): logistic regression on (features, labels) with C chosen on `val` by lp.SEARCH."""
    x, y = train
    if val is not None:
        xv, yv = val
        scores = {}

        def score(c):
            if c not in scores:
                w, b = fit_logreg(x, y, n_cls, c, lp.MAX_ITER)
                scores[c] = ((xv @ w.t() + b).argmax(1) == yv).float().mean().item()
                logger.info(f"linear probe C={c:.3g}: val accuracy {100 * scores[c]:.2f}")
            return scores[c]

        search = lpclip_search if lp.SEARCH == "lpclip" else refine_search
        chosen_c = search(score, lp)
    else:
        chosen_c = 1.0
        logger.warning("No VAL_SHOTS split: linear probe uses C=1.0 without selection")
    w, b = fit_logreg(x, y, n_cls, chosen_c, lp.MAX_ITER)
    train_acc = ((x @ w.t() + b).argmax(1) == y).float().mean().item()
    logger.info(f"linear probe: C={chosen_c:.3g}, train accuracy {100 * train_acc:.2f}")
    return w, b, chosen_c


def lpclip_search(score, lp) -> float:
    """CoOp's lpclip/linear_probe.py: grid (first best in list order), then log-bisection steps."""
    grid = list(lp.C_GRID)
    accs = [score(c) for c in grid]
    peak = grid[accs.index(max(accs))]
    c_left, c_right = 1e-1 * peak, 1e1 * peak
    c_final = peak
    for _ in range(lp.BISECTION_STEPS):
        if score(c_left) < score(c_right):
            c_final = c_right
            c_left, c_right = 0.5 * (math.log10(c_right) + math.log10(c_left)), math.log10(c_right)
        else:
            c_final = c_left
            c_left, c_right = math.log10(c_left), 0.5 * (math.log10(c_right) + math.log10(c_left))
        c_left, c_right = 10 ** c_left, 10 ** c_right
    return c_final


def refine_search(score, lp) -> float:
    """Coarse grid, then REFINE_POINTS log-spaced points between the best point's neighbours; best overall
    (the smaller C on ties)."""
    grid = sorted(lp.C_GRID)
    best_i = max(range(len(grid)), key=lambda i: (score(grid[i]), -i))
    lo = math.log10(grid[max(best_i - 1, 0)])
    hi = math.log10(grid[min(best_i + 1, len(grid) - 1)])
    tried = list(grid)
    for i in range(lp.REFINE_POINTS):
        tried.append(10 ** (lo + (hi - lo) * i / max(1, lp.REFINE_POINTS - 1)))
    return max(sorted(tried), key=score)


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
    ROWS = (Row("LinearProbeCLIP", "trainers/LinearProbeCLIP/vit_b16.yaml", "LP CLIP", order=20,
                paper={"ImageNet": 65.85, "ImageNetV2": 56.26, "ImageNetSketch": 34.77, "ImageNetA": 35.68, "ImageNetR": 58.43},
                tables=("table2", "fewshot")),
            Row("LinearProbeCLIP-normalized", "trainers/LinearProbeCLIP/vit_b16_normalized.yaml",
                "LP CLIP (L2-normalised)", order=21, tables=()))

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

    def build_model(self):
        bundle = load_clip_from_cfg(self.cfg, self.device)
        self.model = LinearProbeModel(bundle.model.visual, len(self.classnames),
                                      self.cfg.TRAINER.LINEAR_PROBE.NORMALIZE).eval()
        del bundle
        self.model.requires_grad_(False)
        self.chosen_c = None

    def logits_from_features(self, feats):
        return self.model.classify(feats)

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
