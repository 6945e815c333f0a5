"""Adapter (Pfeiffer et al., AdapterFusion; Houlsby et al.'s bottleneck): sequential after the MLP,
x + m + s * up(ReLU(down(m))) with m = MLP(LN(x))."""
from clip_convpass.adapters.base import AdapterKind
from clip_convpass.adapters.bottleneck import check_bottleneck, inject_bottlenecks
from clip_convpass.registry import ADAPTER_REGISTRY


@ADAPTER_REGISTRY.register
class PfeifferAdapter(AdapterKind):
    NAME = "adapter"
    PAPER = "Pfeiffer et al., AdapterFusion (EACL 2021); Houlsby et al. (ICML 2019)"
    OPTIONS = {"hidden": 8, "scale": 1.0, "dropout": 0.1}
    PRESETS = {"adapter": {}}
    PARAMS_AT_VIT_B16 = {"adapter": 156768}

    @classmethod
    def check(cls, options):
        check_bottleneck(options)

    @classmethod
    def inject(cls, visual, options, fast_attention=True):
        return inject_bottlenecks(visual, options, fast_attention, "sequential", "adapter")
