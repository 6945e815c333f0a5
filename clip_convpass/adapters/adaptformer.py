"""AdaptFormer (Chen et al., AdaptFormer: Adapting Vision Transformers for Scalable Visual Recognition):
a bottleneck parallel to the MLP, x + MLP(LN(x)) + s * up(ReLU(down(LN(x))))."""
from .base import ADAPTER_REGISTRY, AdapterKind, Injection, adapted_blocks
from .bottleneck import Bottleneck, check_bottleneck


@ADAPTER_REGISTRY.register
class AdaptFormer(AdapterKind):
    NAME = "adaptformer"
    PAPER = "Chen et al., AdaptFormer (NeurIPS 2022)"
    OPTIONS = {"hidden": 8, "scale": 0.1, "dropout": 0.1}  # s = 0.1: AdaptFormer's default
    PRESETS = {"adaptformer": {}}

    @classmethod
    def check(cls, options):
        check_bottleneck(options)

    @classmethod
    def inject(cls, visual, options, fast_attention=True):
        modules = []
        for block in adapted_blocks(visual, fast_attention):
            m = Bottleneck(visual.transformer.width, options["hidden"], options["dropout"])
            block.add("mlp", "parallel", "adaptformer", m, options["scale"])
            modules.append(m)
        return Injection(modules=modules)
