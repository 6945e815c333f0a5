"""Adapter (Pfeiffer et al., AdapterFusion; Houlsby et al.'s bottleneck): sequential after the MLP,
x + m + s * up(ReLU(down(m))) with m = MLP(LN(x))."""
from .base import ADAPTER_REGISTRY, AdapterKind, Injection, adapted_blocks
from .bottleneck import Bottleneck, check_bottleneck


@ADAPTER_REGISTRY.register
class PfeifferAdapter(AdapterKind):
    NAME = "adapter"
    PAPER = "Pfeiffer et al., AdapterFusion (EACL 2021); Houlsby et al. (ICML 2019)"
    OPTIONS = {"hidden": 8, "scale": 1.0, "dropout": 0.1}
    PRESETS = {"adapter": {}}

    @classmethod
    def check(cls, options):
        check_bottleneck(options)

    @classmethod
    def inject(cls, visual, options, fast_attention=True):
        modules = []
        for block in adapted_blocks(visual, fast_attention):
            m = Bottleneck(visual.transformer.width, options["hidden"], options["dropout"])
            block.add("mlp", "sequential", "adapter", m, options["scale"])
            modules.append(m)
        return Injection(modules=modules)
