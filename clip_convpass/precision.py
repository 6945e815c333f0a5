"""Numeric precision of a run (PREC): the autocast context and the gradient scaler."""
from __future__ import annotations

import contextlib

import torch

VALID_PREC = ("fp32", "amp", "bf16")


def autocast(prec: str, device: torch.device):
    """fp32: no autocast. amp: fp16 autocast on CUDA, bf16 on CPU. bf16: bf16 autocast."""
    if prec == "fp32":
        return contextlib.nullcontext()
    if device.type == "cuda":
        dtype = torch.float16 if prec == "amp" else torch.bfloat16
    else:
        dtype = torch.bfloat16  # CPU autocast: bf16 for both amp and bf16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(prec: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler where fp16 gradients need one (amp on CUDA); disabled elsewhere."""
    return torch.amp.GradScaler("cuda", enabled=prec == "amp" and device.type == "cuda")
