"""Adapter injection for open_clip Vision Transformers, in the spirit of peft's tuners.

`inject(visual, preset, options)` wraps each ResidualAttentionBlock once in an `AdaptedBlock` (module
replacement, no monkey-patching) and lets an adapter fill its slots:

- beside attention / the MLP (parallel): x + a + s * f(LN(x))
- after attention / the MLP (sequential): x + a + s * f(a)
- on the q/k/v projections (`qkv` slot: LoRA), applied in the fused attention path and merged into the
  frozen weights for evaluation
- extra prefix tokens (VPT): `PromptedTransformer` replaces `visual.transformer`

What trains is decided by structure: the parameters of `AdapterModule`s (and, for BitFit, the bias
terms the adapter names), never by matching parameter names. With gradients on, every block computes
attention on contiguous batch-first tensors (see attention.py) unless an adapter needs MHA itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..attention import is_plain_self_attention, output_projection, project_qkv, self_attention, split_heads
from ..config import ConfigError
from ..registry import Registry

ADAPTER_REGISTRY = Registry("adapter")
_loaded = False


class AdapterModule(nn.Module):
    """Marker base: every parameter of an AdapterModule trains (and is all a checkpoint holds)."""


@dataclass
class Injection:
    """What an adapter put into a model: its modules (switched between train/eval) and what trains."""

    modules: List[nn.Module] = field(default_factory=list)
    parameters: List[nn.Parameter] = field(default_factory=list)

    def __post_init__(self):
        seen = {id(p) for p in self.parameters}
        for m in self.modules:  # shared modules (Convpass_share) count once
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    self.parameters.append(p)

    def count(self) -> int:
        return sum(p.numel() for p in self.parameters)


class AdaptedBlock(nn.Module):
    """An open_clip (Custom)ResidualAttentionBlock with adapter slots (see the module docstring)."""

    def __init__(self, block: nn.Module, batch_first: bool = True, fast_attention: bool = True):
        super().__init__()
        self.block = block
        attn = getattr(block, "attn", None)
        self.batch_first = batch_first
        self.fast_attention = (fast_attention and batch_first and is_plain_self_attention(attn)
                               and attn.dropout == 0.0 and hasattr(block, "attention"))
        self.attn_adapters: List[Tuple[str, str, float]] = []  # (attribute, parallel|sequential, scale)
        self.mlp_adapters: List[Tuple[str, str, float]] = []
        self.qkv_adapter: Optional[nn.Module] = None

    @property
    def has_adapters(self) -> bool:
        return bool(self.attn_adapters or self.mlp_adapters or self.qkv_adapter is not None)

    def add(self, where: str, mode: str, name: str, module: nn.Module, scale: float = 1.0) -> None:
        """Put `module` beside (parallel) or after (sequential) the attn or mlp branch, as attribute `name`."""
        if mode not in ("parallel", "sequential") or where not in ("attn", "mlp"):
            raise ValueError(f"unknown adapter slot {where}/{mode}")
        setattr(self, name, module)
        (self.attn_adapters if where == "attn" else self.mlp_adapters).append((name, mode, scale))

    def set_qkv(self, module: nn.Module) -> None:
        if not self.fast_attention:
            raise ConfigError("a q/k/v adapter needs a plain batch-first MultiheadAttention block")
        self.qkv_adapter = module

    def _attn_branch(self, y: torch.Tensor, attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
        b = self.block
        qkv = self.qkv_adapter
        if qkv is not None and not qkv.merged:  # LoRA while training: deltas on the projections
            return b.ls_1(qkv.attention(b.attn, y, attn_mask))
        # Every tower takes the same fused path, with or without gradients and under autocast (where
        # MultiheadAttention leaves its fast kernel): a fresh adapter model then computes exactly what
        # the frozen model does.
        if self.fast_attention:
            return b.ls_1(self_attention(b.attn, y, attn_mask))
        if hasattr(b, "attention"):  # ResidualAttentionBlock
            return b.ls_1(b.attention(q_x=y, attn_mask=attn_mask))
        return b.ls_1(b.ln_attn(b.attn(y, attn_mask=attn_mask)))  # CustomResidualAttentionBlock

    def _add_adapters(self, x: torch.Tensor, adapters, branch_in, branch_out) -> torch.Tensor:
        for name, mode, scale in adapters:
            src = branch_in if mode == "parallel" else branch_out
            module = getattr(self, name)
            if self.batch_first:
                x = x + scale * module(src)
            else:
                x = x + scale * module(src.transpose(0, 1)).transpose(0, 1)
        return x

    def forward(self, q_x: torch.Tensor, k_x: Optional[torch.Tensor] = None, v_x: Optional[torch.Tensor] = None,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if k_x is not None or v_x is not None:
            raise NotImplementedError("adapters are defined for self-attention blocks only")
        b = self.block
        y = b.ln_1(q_x)
        a = self._attn_branch(y, attn_mask)
        x = self._add_adapters(q_x + a, self.attn_adapters, y, a)
        y = b.ln_2(x)
        m = b.ls_2(b.mlp(y))
        return self._add_adapters(x + m, self.mlp_adapters, y, m)


def vision_transformer_parts(visual: nn.Module, what: str):
    transformer = getattr(visual, "transformer", None)
    if transformer is None or not hasattr(transformer, "resblocks") or not hasattr(visual, "grid_size"):
        raise TypeError(f"{what} needs an open_clip VisionTransformer, got {type(visual).__name__}")
    return transformer


def fuse_attention(transformer: nn.Module) -> None:
    """Wrap every block of a tower in an AdaptedBlock without adapters (the fused attention path);
    blocks wrapped before are kept as they are."""
    for i, block in enumerate(transformer.resblocks):
        if not isinstance(block, AdaptedBlock):
            transformer.resblocks[i] = AdaptedBlock(block, transformer.batch_first)


def unwrapped(block: nn.Module) -> nn.Module:
    """The open_clip block inside an adapter-free wrapper (adapters refuse to be stacked)."""
    if isinstance(block, AdaptedBlock):
        if block.has_adapters:
            raise ConfigError("this model already has adapters injected; build a fresh model for another adapter")
        return block.block
    return block


def adapted_blocks(visual: nn.Module, fast_attention: bool = True) -> List[AdaptedBlock]:
    """The image tower's blocks, each wrapped once, for an adapter to fill (a model is adapted once)."""
    transformer = vision_transformer_parts(visual, "An adapter")
    for i, block in enumerate(transformer.resblocks):
        transformer.resblocks[i] = AdaptedBlock(unwrapped(block), transformer.batch_first, fast_attention)
    return list(transformer.resblocks)


class AdapterKind:
    """One kind of adapter (one file each). OPTIONS: its options with defaults; PRESETS: named option
    sets, the configurations tables and parameter counts list (e.g. vpt_shallow, vpt_deep)."""

    NAME = ""
    OPTIONS: Dict[str, object] = {}
    PRESETS: Dict[str, Dict[str, object]] = {}
    PAPER = ""  # where it comes from (README table)

    @classmethod
    def check(cls, options: Dict[str, object]) -> None:
        """Raise ValueError naming the bad option."""

    @classmethod
    def inject(cls, visual: nn.Module, options: Dict[str, object], fast_attention: bool = True) -> Injection:
        raise NotImplementedError


def load_adapters() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        import importlib

        from . import ADAPTER_MODULES

        for name in ADAPTER_MODULES:
            importlib.import_module(f"clip_convpass.adapters.{name}")


def presets() -> Dict[str, Tuple[type, Dict[str, object]]]:
    """{preset name: (adapter kind, its full options)} over every registered adapter kind."""
    load_adapters()
    out = {}
    for kind in ADAPTER_REGISTRY.classes():
        for name, opts in kind.PRESETS.items():
            if name in out:
                raise KeyError(f"adapter preset {name!r} is defined twice")
            out[name] = (kind, {**kind.OPTIONS, **opts})
    return out


def resolve(preset: str, overrides: Optional[Dict[str, object]] = None) -> Tuple[type, Dict[str, object]]:
    table = presets()
    if preset not in table:
        raise ConfigError(f"unknown adapter {preset!r}; registered: {sorted(table)}")
    kind, options = table[preset]
    options = {**options, **{k: v for k, v in (overrides or {}).items() if k in kind.OPTIONS}}
    kind.check(options)
    return kind, options


def inject(visual: nn.Module, preset: str, overrides: Optional[Dict[str, object]] = None,
           fast_attention: bool = True) -> Injection:
    """Inject a registered adapter preset (with option overrides) into an open_clip image tower."""
    kind, options = resolve(preset, overrides)
    if getattr(visual, "adapter_preset", None):  # prompts, say, live outside the blocks: mark the model
        raise ConfigError(f"this model already has adapters injected ({visual.adapter_preset}); build a fresh model "
                          f"for another adapter")
    injection = kind.inject(visual, options, fast_attention)
    visual.adapter_preset = preset
    return injection


__all__ = ["ADAPTER_REGISTRY", "AdaptedBlock", "AdapterKind", "AdapterModule", "Injection", "adapted_blocks",
           "inject", "presets", "resolve", "output_projection", "project_qkv", "split_heads"]
