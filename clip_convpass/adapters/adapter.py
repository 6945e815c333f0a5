"""Adapter (Houlsby et al. 2019; Pfeiffer et al., EACL 2021): a bottleneck sequential after the MLP,
x + m + s * up(drop(act(down(m)))) with m = MLP(LN(x)).

Default = NOAH's implementation, which produced the Convpass paper's Adapter numbers
(model/module/adapter_super.py): QuickGELU, dropout 0.1, xavier on both projections with biases from
N(0, 1e-6), no scale (s = 1). Its up projection is not zero, so a fresh model is not zero-shot CLIP: step 0
already differs (as with VPT's prompts). The `adapter_zero` preset keeps the exact zero-shot start: ReLU, up
and biases zero (the form this project used before; `INIT zero_up`, `ACT relu`).
"""
from clip_convpass.adapters.base import AdapterKind
from clip_convpass.adapters.bottleneck import check_bottleneck, inject_bottlenecks
from clip_convpass.registry import ADAPTER_REGISTRY


@ADAPTER_REGISTRY.register
class Adapter(AdapterKind):
    NAME = "adapter"
    PAPER = "Houlsby et al. (ICML 2019), Pfeiffer et al. (EACL 2021); NOAH's implementation"
    OPTIONS = {"hidden": 8, "scale": 1.0, "dropout": 0.1, "init": "noah", "act": "quickgelu"}
    PRESETS = {"adapter": {}, "adapter_zero": {"init": "zero_up", "act": "relu"}}
    PARAMS_AT_VIT_B16 = {"adapter": 156768, "adapter_zero": 156768}
    HIERARCHICAL = True  # on Swin, beside each block's MLP at the stage's width
    IDENTITY_OVERRIDES = {"init": "zero_up"}

    @classmethod
    def identity_at_init(cls, options) -> bool:
        return options["init"] != "noah"

    @classmethod
    def check(cls, options):
        check_bottleneck(options)

    @classmethod
    def inject(cls, visual, options, fast_attention=True):
        return inject_bottlenecks(visual, options, fast_attention, "sequential", "adapter")
