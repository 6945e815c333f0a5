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

from torch import nn

from clip_convpass.config import ConfigError
from clip_convpass.models.attention import output_projection, project_qkv, split_heads
from clip_convpass.models.blocks import AdaptedBlock, unwrapped, vision_transformer_parts
from clip_convpass.registry import ADAPTER_REGISTRY


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


def adapted_blocks(visual: nn.Module, fast_attention: bool = True) -> List[AdaptedBlock]:
    """The image tower's blocks, each wrapped once, for an adapter to fill (a model is adapted once); a hierarchical
    backbone's (Swin) blocks of every stage."""
    if getattr(visual, "hierarchical", False):
        return visual.adapted_blocks(fast_attention)
    transformer = vision_transformer_parts(visual, "An adapter")
    for i, block in enumerate(transformer.resblocks):
        transformer.resblocks[i] = AdaptedBlock(unwrapped(block), transformer.batch_first, fast_attention)
    return list(transformer.resblocks)


def block_width(block: AdaptedBlock) -> int:
    """The width of a wrapped block's tokens (a Swin stage's own, a ViT's everywhere)."""
    return block.block.ln_1.normalized_shape[0]


class AdapterKind:
    """One kind of adapter (one file each). OPTIONS: its options with defaults; PRESETS: named option
    sets, the configurations tables and parameter counts list (e.g. vpt_shallow, vpt_deep)."""

    NAME = ""
    OPTIONS: Dict[str, object] = {}
    PRESETS: Dict[str, Dict[str, object]] = {}
    PAPER = ""  # where it comes from (README table)
    # An option's config key under a trainer's node (TRAINER.PETL.<KEY>): the option's name in capitals
    # unless named here (kinds sharing an option name share its key).
    CONFIG_KEYS: Dict[str, str] = {}
    # Trainable parameters of each preset in ViT-B/16's image encoder (the README's table; tested exactly).
    PARAMS_AT_VIT_B16: Dict[str, int] = {}
    # Option values under which a fresh model is exactly the frozen one, for kinds whose presets are not (VPT's
    # prompts, NOAH's Adapter): the zero-shot invariant is tested with them.
    IDENTITY_OVERRIDES: Dict[str, object] = {}
    # Injects into a hierarchical timm backbone's stages too (Swin: adapters beside a block's branches, whose tokens
    # are the stage's map; Convpass there is PETL-ViT's Convpass_swin).
    HIERARCHICAL = False

    @classmethod
    def identity_at_init(cls, options: Dict[str, object]) -> bool:
        """Whether a fresh model with these options computes exactly what the frozen model does."""
        return True

    @classmethod
    def config_key(cls, option: str) -> str:
        return cls.CONFIG_KEYS.get(option, option.upper())

    @classmethod
    def check(cls, options: Dict[str, object]) -> None:
        """Raise ValueError naming the bad option."""

    @classmethod
    def inject(cls, visual: nn.Module, options: Dict[str, object], fast_attention: bool = True) -> Injection:
        raise NotImplementedError


def presets() -> Dict[str, Tuple[type, Dict[str, object]]]:
    """{preset name: (adapter kind, its full options)} over every registered adapter kind."""
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
    if getattr(visual, "hierarchical", False) and not kind.HIERARCHICAL:
        able = sorted(p for p, (k, _) in presets().items() if k.HIERARCHICAL)
        raise ConfigError(f"adapter {preset!r} injects into a plain ViT's token sequence; a hierarchical backbone "
                          f"({type(visual.trunk).__name__}) takes {able} or none")
    if getattr(visual, "adapter_preset", None):  # prompts, say, live outside the blocks: mark the model
        raise ConfigError(f"this model already has adapters injected ({visual.adapter_preset}); build a fresh model "
                          f"for another adapter")
    injection = kind.inject(visual, options, fast_attention)
    visual.adapter_preset = preset
    return injection


__all__ = ["ADAPTER_REGISTRY", "AdaptedBlock", "AdapterKind", "AdapterModule", "Injection", "adapted_blocks", "block_width",
           "inject", "presets", "resolve", "output_projection", "project_qkv", "split_heads"]
