"""Numeric precision of a run (PREC): what `auto` means on a device, the autocast context, the scaler.

auto (default): on CUDA, fp16 autocast with a GradScaler and TF32 matmuls (the reference codebases
train CLIP in fp16); on a CPU with native bf16 (AVX512-BF16 or AMX), bf16 autocast; on other CPUs, fp32
(bf16 is emulated there, and slower than fp32). amp: fp16 autocast on CUDA, bf16 on CPU. bf16, fp32: as named.
"""
from __future__ import annotations

import contextlib
import logging

import torch

from clip_convpass.config.defaults import VALID_PREC  # noqa: F401  (the PREC values this module interprets)


def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:  # not Linux: no way to tell, so no bf16
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve(prec: str, device: torch.device) -> str:
    """The precision a run actually uses (never "auto")."""
    if prec != "auto":
        return prec
    if device.type == "cuda":
        return "amp"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def setup(prec: str, device: torch.device):
    """(precision used, GradScaler) for a run, with TF32 matmuls allowed on CUDA; logs the choice."""
    used = resolve(prec, device)
    allow_tf32(device)
    logging.getLogger(__name__).info(f"Precision: {used} (PREC {prec} on {device.type})")
    return used, grad_scaler(prec, device)


def allow_tf32(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(prec: str, device: torch.device):
    """fp32: no autocast. amp: fp16 autocast on CUDA, bf16 on CPU. bf16: bf16 autocast."""
    prec = resolve(prec, device)
    if prec == "fp32":
        return contextlib.nullcontext()
    if device.type == "cuda":
        dtype = torch.float16 if prec == "amp" else torch.bfloat16
    else:
        dtype = torch.bfloat16  # CPU autocast: bf16 for both amp and bf16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(prec: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler where fp16 gradients need one (amp on CUDA); disabled elsewhere."""
    return torch.amp.GradScaler("cuda", enabled=resolve(prec, device) == "amp" and device.type == "cuda")
