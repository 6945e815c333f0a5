"""AdaptFormer (Chen et al., AdaptFormer: Adapting Vision Transformers for Scalable Visual Recognition): a
bottleneck parallel to the MLP.

Default = the authors' code (models/custom_modules.py with ffn_adapter_layernorm_option "none", as their image
training sets it; their issue #9 confirms the code over the paper's figure): the bottleneck reads the
residual stream x entering the MLP, not LN2(x):  x + MLP(LN2(x)) + s * up(drop(ReLU(down(x)))), s = 0.1,
down kaiming_uniform(a=sqrt(5)) ("lora" init), up and biases zero, dropout 0.1. `input ln` gives the form of the
paper's figure (the bottleneck on LN2(x), as this project used before), `init zero_up` xavier on down.
"""
from clip_convpass.adapters.base import AdapterKind
from clip_convpass.adapters.bottleneck import check_bottleneck, inject_bottlenecks
from clip_convpass.registry import ADAPTER_REGISTRY

INPUTS = {"residual": "residual", "ln": "parallel"}  # option value -> AdaptedBlock slot mode


@ADAPTER_REGISTRY.register
class AdaptFormer(AdapterKind):
    NAME = "adaptformer"
    PAPER = "Chen et al., AdaptFormer (NeurIPS 2022)"
    OPTIONS = {"hidden": 8, "scale": 0.1, "dropout": 0.1, "input": "residual", "init": "lora", "act": "relu"}
    PRESETS = {"adaptformer": {}}
    PARAMS_AT_VIT_B16 = {"adaptformer": 156768}
    HIERARCHICAL = True  # on Swin, beside each block's MLP at the stage's width

    @classmethod
    def check(cls, options):
        check_bottleneck(options)
        if options["input"] not in INPUTS:
            raise ValueError(f"INPUT (AdaptFormer branch input) must be one of {tuple(INPUTS)}, got {options['input']!r}")

    @classmethod
    def inject(cls, visual, options, fast_attention=True):
        return inject_bottlenecks(visual, options, fast_attention, INPUTS[options["input"]], "adaptformer")
