"""BitFit (Ben Zaken et al., BitFit: Simple Parameter-efficient Fine-tuning): every bias term of the
image encoder trains; nothing is added (a fresh model is the pretrained one)."""
from torch import nn

from clip_convpass.adapters.base import AdapterKind, Injection, adapted_blocks
from clip_convpass.registry import ADAPTER_REGISTRY


def bias_parameters(module: nn.Module):
    """Each submodule's own `bias` and MultiheadAttention's packed `in_proj_bias` (structure, not names)."""
    out = []
    for m in module.modules():
        for attr in ("bias", "in_proj_bias"):
            p = m._parameters.get(attr)
            if p is not None:
                out.append(p)
    return out


@ADAPTER_REGISTRY.register
class BitFit(AdapterKind):
    NAME = "bitfit"
    PAPER = "Ben Zaken et al., BitFit (ACL 2022)"
    OPTIONS = {}
    PRESETS = {"bitfit": {}}
    PARAMS_AT_VIT_B16 = {"bitfit": 102912}  # every bias of the image encoder (MHA's packed in_proj bias too)

    @classmethod
    def inject(cls, visual, options, fast_attention=True):
        adapted_blocks(visual, fast_attention)  # fused attention while the biases train
        head = getattr(visual, "classifier_head", None)  # a supervised backbone's head trains as the head, not here
        skip = {id(p) for p in head.parameters()} if head is not None else set()
        return Injection(parameters=[p for p in bias_parameters(visual) if id(p) not in skip])
