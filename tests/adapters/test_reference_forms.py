"""The PETL adapters against transcriptions of their authors' code: AdaptFormer's Block (ShoufaChen/AdaptFormer
models/custom_modules.py + models/adapter.py), NOAH's Adapter (model/module/adapter_super.py, the Convpass
paper's Adapter numbers), VPT's budgets and prompt dropout."""
import copy
import math

import pytest
import torch

from clip_convpass.adapters.base import inject, presets
from clip_convpass.models.clip_loader import load_clip

X = torch.randn(2, 17, 48, generator=torch.Generator().manual_seed(2))  # [cls] + 4x4 patches, width 48


@pytest.fixture(scope="module")
def visual():
    torch.manual_seed(0)
    return load_clip("tiny-ViT-Q", "none").model.visual.eval()


def randomise_(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def attention(block, x):
    return block.ls_1(block.attn(x, x, x, need_weights=False)[0])


def adaptformer_reference(block, adapter, x, scale):
    """AdaptFormer's Block.forward, ffn_option 'parallel', adapter_layernorm_option 'none'."""
    x = x + attention(block, block.ln_1(x))
    adapt_x = adapter.up(torch.relu(adapter.down(x))) * scale  # Adapter.forward(x, add_residual=False)
    residual = x
    x = block.ls_2(block.mlp(block.ln_2(x)))
    x = x + adapt_x
    return residual + x


def noah_adapter_reference(block, adapter, x):
    """NOAH: x = x + attn(norm1(x)); x = x + adapter(mlp(norm2(x))), adapter(h) = h + ln2(drop(QuickGELU(ln1(h))))."""
    x = x + attention(block, block.ln_1(x))
    h = block.ls_2(block.mlp(block.ln_2(x)))
    z = adapter.down(h)
    return x + (h + adapter.up(z * torch.sigmoid(1.702 * z)))


@pytest.mark.parametrize("preset, reference", [("adaptformer", adaptformer_reference), ("adapter", noah_adapter_reference)])
def test_block_output_equals_the_authors_forward(visual, preset, reference):
    model = copy.deepcopy(visual)
    injection = inject(model, preset)
    for m in injection.modules:
        randomise_(m, 1)  # non-zero up projections: the branch input and placement matter
        m.eval()
    wrapped = model.transformer.resblocks[0]
    adapter = injection.modules[0]
    scale = presets()[preset][1]["scale"]
    with torch.no_grad():
        ours = wrapped(X)
        ref = reference(wrapped.block, adapter, X, scale) if preset == "adaptformer" else reference(wrapped.block, adapter, X)
    assert (ours - ref).abs().max() < 1e-5


def test_adaptformer_ln_input_is_the_papers_figure(visual):
    model = copy.deepcopy(visual)
    injection = inject(model, "adaptformer", {"input": "ln"})
    adapter = injection.modules[0]
    randomise_(adapter, 3)
    adapter.eval()
    block = model.transformer.resblocks[0].block
    with torch.no_grad():
        x = X + attention(block, block.ln_1(X))
        y = block.ln_2(x)
        ref = x + block.ls_2(block.mlp(y)) + 0.1 * adapter.up(torch.relu(adapter.down(y)))
        assert (model.transformer.resblocks[0](X) - ref).abs().max() < 1e-5


def test_inits_follow_the_reference_code(visual):
    af = inject(copy.deepcopy(visual), "adaptformer").modules[0]
    bound = 1 / math.sqrt(af.down.in_features)  # kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert af.down.weight.abs().max() <= bound and af.down.weight.abs().max() > 0.8 * bound
    assert not af.up.weight.any() and not af.up.bias.any() and not af.down.bias.any()
    noah = inject(copy.deepcopy(visual), "adapter").modules[0]
    for layer in (noah.down, noah.up):  # xavier on both, biases ~ N(0, 1e-6): not the identity at init
        fan_in, fan_out = layer.weight.shape[1], layer.weight.shape[0]
        assert layer.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out)) and layer.weight.abs().max() > 0
        assert 0 < layer.bias.abs().max() < 1e-4
    assert type(noah.act).__name__ == "QuickGELU" and noah.dropout.p == 0.1


def test_vpt_prompt_dropout_acts_in_training_only(visual):
    model = copy.deepcopy(visual)
    injection = inject(model, "vpt_deep", {"dropout": 0.5, "length": 4})
    prompts = injection.modules[0]
    prompts.train()
    torch.manual_seed(0)
    dropped = prompts.layer(0, torch.float32, 2)
    kept = prompts.prompts[0].expand(2, -1, -1)
    assert (dropped == 0).any() and torch.allclose(dropped[dropped != 0], 2 * kept[dropped != 0])
    assert not torch.equal(dropped[0] == 0, dropped[1] == 0)  # a mask per sample, as KMnP/vpt's ViT
    prompts.eval()
    assert torch.equal(prompts.layer(0, torch.float32, 2), kept)
