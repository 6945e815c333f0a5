"""Optimizers and LR schedules with constant or linear warmup (Dassl semantics), stepped per epoch
(Dassl, CoOp) or per iteration (OPTIM.SCHEDULER_UNIT iteration: Tip-Adapter-F's reference, whose cosine
runs over all iterations). Epochs may be fractional: iteration i of an epoch of n is epoch + i / n."""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch


def build_optimizer(params: Iterable, optim_cfg) -> torch.optim.Optimizer:
    """params: parameters, or groups {"params": [...], "lr_mult": m} whose learning rate is OPTIM.LR x m
    (the schedule scales every group alike)."""
    params = list(params)
    groups = params if params and isinstance(params[0], dict) else [{"params": params, "lr_mult": 1.0}]
    groups = [{"params": [p for p in g["params"] if p.requires_grad], "lr": optim_cfg.LR * g.get("lr_mult", 1.0)}
              for g in groups]
    params = [g for g in groups if g["params"]]
    if not params:
        raise ValueError("No trainable parameters to optimise")
    name = optim_cfg.NAME.lower()
    lr, wd = optim_cfg.LR, optim_cfg.WEIGHT_DECAY
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd)
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=optim_cfg.EPS, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=optim_cfg.EPS, weight_decay=wd)
    raise ValueError(f"Unknown OPTIM.NAME {optim_cfg.NAME!r}; choices: sgd, adam, adamw")


def lr_at_epoch(epoch: float, optim_cfg, total_epochs: Optional[float] = None) -> float:
    """LR used during `epoch` (0-based). Warmup epochs come first; the main schedule then starts at its epoch 0.
    total_epochs: the cosine's length when not MAX_EPOCH (an iteration budget: a fractional number of epochs)."""
    c = optim_cfg
    epoch = max(0, epoch - c.SCHEDULE_LAG)
    if epoch < c.WARMUP_EPOCH:
        if c.WARMUP_TYPE == "constant":
            return c.WARMUP_CONS_LR
        return c.WARMUP_MIN_LR + (c.LR - c.WARMUP_MIN_LR) * epoch / c.WARMUP_EPOCH
    t = epoch - c.WARMUP_EPOCH if c.WARMUP_PREFIX else epoch
    if c.LR_SCHEDULER == "cosine":
        length = c.MAX_EPOCH if total_epochs is None else total_epochs
        return c.MIN_LR + 0.5 * (c.LR - c.MIN_LR) * (1 + math.cos(math.pi * t / max(1, length)))
    if c.LR_SCHEDULER == "step":
        return c.LR * c.GAMMA ** sum(t >= s for s in c.STEPSIZE)
    return c.LR


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim_cfg,
                       steps_per_epoch: Callable[[], int] = lambda: 1,
                       total_epochs: Callable[[], Optional[float]] = lambda: None) -> torch.optim.lr_scheduler.LambdaLR:
    """Call .step() once per epoch, or once per iteration with SCHEDULER_UNIT iteration (steps_per_epoch
    is then asked at every step: the training loader's length is known only once it exists). total_epochs: the
    cosine's length when not MAX_EPOCH (OPTIM.ITERS_PER_SHOT)."""
    base = optim_cfg.LR
    if optim_cfg.SCHEDULER_UNIT == "iteration":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_at_epoch(s / max(1, steps_per_epoch()), optim_cfg, total_epochs()) / base)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_at_epoch(e, optim_cfg) / base)
