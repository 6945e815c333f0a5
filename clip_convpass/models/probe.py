"""The linear probe's fit: L2-regularised multinomial logistic regression with C chosen on validation data.

Objective (scikit-learn's LogisticRegression with C, bias not penalised):
    C * sum_i CE(W x_i + b, y_i) + 0.5 * ||W||^2
solved with L-BFGS in torch. `lpclip_search` is CoOp's lpclip/linear_probe.py search; `refine_search` a
coarse grid then a finer log-spaced one. Used by the linear-probe method and by LP-FT head initialisation.
"""
import logging
import math

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


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
