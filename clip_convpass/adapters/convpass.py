"""Convpass (Jie & Deng): convolutional bypasses beside MHSA and MLP (the module lives in clip_convpass.convpass)."""
from ..convpass import ConvpassSpec, inject_convpass
from .base import ADAPTER_REGISTRY, AdapterKind, Injection


@ADAPTER_REGISTRY.register
class ConvpassAdapter(AdapterKind):
    NAME = "convpass"
    PAPER = "Jie & Deng, Convolutional Bypasses Are Better Vision Transformer Adapters"
    OPTIONS = {"hidden": 8, "scale": 1.0, "kernel_size": 3, "dropout": 0.1, "conv_init": "identity",
               "positions": "both", "mode": "parallel", "share": False}
    PRESETS = {"convpass": {}, "convpass_attn": {"positions": "attn"},
               "convpass_share": {"hidden": 32, "share": True}}

    @classmethod
    def spec(cls, options, fast_attention=True) -> ConvpassSpec:
        return ConvpassSpec(**options, fast_attention=fast_attention)

    @classmethod
    def check(cls, options):
        cls.spec(options)

    @classmethod
    def inject(cls, visual, options, fast_attention=True):
        bypasses = inject_convpass(visual, cls.spec(options, fast_attention))
        shared = getattr(visual, "convpass_shared", None)
        return Injection(modules=[*bypasses, *([shared] if shared is not None else [])])
