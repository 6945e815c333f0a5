"""AdaptFormer (Chen et al., AdaptFormer: Adapting Vision Transformers for Scalable Visual Recognition):
a bottleneck parallel to the MLP, x + MLP(LN(x)) + s * up(ReLU(down(LN(x))))."""
from clip_convpass.adapters.base import AdapterKind
from clip_convpass.adapters.bottleneck import check_bottleneck, inject_bottlenecks
from clip_convpass.registry import ADAPTER_REGISTRY


@ADAPTER_REGISTRY.register
class AdaptFormer(AdapterKind):
    NAME = "adaptformer"
    PAPER = "Chen et al., AdaptFormer (NeurIPS 2022)"
    OPTIONS = {"hidden": 8, "scale": 0.1, "dropout": 0.1}  # s = 0.1: AdaptFormer's default
    PRESETS = {"adaptformer": {}}
    PARAMS_AT_VIT_B16 = {"adaptformer": 156768}

    @classmethod
    def check(cls, options):
        check_bottleneck(options)

    @classmethod
    def inject(cls, visual, options, fast_attention=True):
        return inject_bottlenecks(visual, options, fast_attention, "parallel", "adaptformer")
