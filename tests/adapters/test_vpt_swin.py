"""VPT on Swin equals a transcription of KMnP/vpt's prompted Swin (src/models/vit_prompt/swin_transformer.py:
PromptedSwinTransformer.forward_features with location "prepend", PromptedSwinTransformerBlock,
PromptedWindowAttention, PromptedPatchMerging; the deep schedule of src/models/vit_backbones/swin_transformer.py
BasicLayer.forward), on the same timm weights; its batch-order pairing is available and differs only in shallow
mode."""
import copy

import pytest
import torch

from clip_convpass.adapters.base import inject
from clip_convpass.models.timm_backbone import create_timm_model, timm_visual

IMAGES = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def swin():
    """Three stages: 16 x 16 (16 windows, shifted every other block), 8 x 8 (4 windows), 4 x 4 (one window)."""
    torch.manual_seed(0)
    return create_timm_model("timm:swin_tiny_patch4_window7_224", "none", num_classes=5, img_size=64, patch_size=4,
                             window_size=4, embed_dim=16, depths=(2, 2, 2), num_heads=(2, 4, 8)).eval()


def ms_window_partition(x, ws):
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, C)


def ms_window_reverse(windows, ws, H, W):
    B = int(windows.shape[0] / (H * W / ws / ws))
    x = windows.view(B, H // ws, W // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


def kmnp_window_attention(attn, x, mask, num_prompts):
    """PromptedWindowAttention.forward: the relative-position bias and the mask padded with zeros for the prompts."""
    B_, N, C = x.shape
    qkv = attn.qkv(x).reshape(B_, N, 3, attn.num_heads, C // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    q = q * attn.scale
    a = q @ k.transpose(-2, -1)
    ws2 = attn.window_size[0] * attn.window_size[1]
    rpb = attn.relative_position_bias_table[attn.relative_position_index.view(-1)].view(ws2, ws2, -1)
    rpb = rpb.permute(2, 0, 1).contiguous()
    _C, _H, _W = rpb.shape
    rpb = torch.cat((torch.zeros(_C, num_prompts, _W), rpb), dim=1)
    rpb = torch.cat((torch.zeros(_C, _H + num_prompts, num_prompts), rpb), dim=-1)
    a = a + rpb.unsqueeze(0)
    if mask is not None:
        nW = mask.shape[0]
        mask = torch.cat((torch.zeros(nW, num_prompts, _W), mask), dim=1)
        mask = torch.cat((torch.zeros(nW, _H + num_prompts, num_prompts), mask), dim=-1)
        a = a.view(B_ // nW, nW, attn.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
        a = a.view(-1, attn.num_heads, N, N)
    a = a.softmax(dim=-1)
    return attn.proj((a @ v).transpose(1, 2).reshape(B_, N, C))


def kmnp_block(blk, x, num_prompts, batch_order_bug):
    """PromptedSwinTransformerBlock.forward (eval: no drop-path); batch_order_bug False: the per-image fix."""
    H, W = blk.input_resolution
    B, L, C = x.shape
    shortcut = x
    x = blk.norm1(x)
    prompt_emb, x = x[:, :num_prompts, :], x[:, num_prompts:, :]
    x = x.view(B, H, W, C)
    ws, shift = blk.window_size[0], blk.shift_size[0]
    shifted_x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2)) if shift > 0 else x
    x_windows = ms_window_partition(shifted_x, ws).view(-1, ws * ws, C)
    num_windows = int(x_windows.shape[0] / B)
    if batch_order_bug:
        prompt_emb = prompt_emb.unsqueeze(0).expand(num_windows, -1, -1, -1).reshape((-1, num_prompts, C))
    else:
        prompt_emb = prompt_emb.repeat_interleave(num_windows, dim=0)
    x_windows = torch.cat((prompt_emb, x_windows), dim=1)
    attn_windows = kmnp_window_attention(blk.attn, x_windows, blk.attn_mask, num_prompts)
    prompt_emb, attn_windows = attn_windows[:, :num_prompts, :], attn_windows[:, num_prompts:, :]
    if batch_order_bug:
        prompt_emb = prompt_emb.view(-1, B, num_prompts, C).mean(0)
    else:
        prompt_emb = prompt_emb.view(B, -1, num_prompts, C).mean(1)
    shifted_x = ms_window_reverse(attn_windows.view(-1, ws, ws, C), ws, H, W)
    x = torch.roll(shifted_x, shifts=(shift, shift), dims=(1, 2)) if shift > 0 else shifted_x
    x = torch.cat((prompt_emb, x.view(B, H * W, C)), dim=1)
    x = shortcut + x
    return x + blk.mlp(blk.norm2(x))


def kmnp_patch_merging(merging, x, num_prompts, resolution):
    """PromptedPatchMerging.forward: the prompts tiled 4x, through the merging's norm and reduction."""
    H, W = resolution
    B, L, C = x.shape
    prompt_emb, x = x[:, :num_prompts, :], x[:, num_prompts:, :]
    prompt_emb = torch.cat((prompt_emb, prompt_emb, prompt_emb, prompt_emb), dim=-1)
    x = x.view(B, H, W, C)
    x = torch.cat([x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :], x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]], -1)
    x = torch.cat((prompt_emb, x.view(B, -1, 4 * C)), dim=1)
    return merging.reduction(merging.norm(x))


def kmnp_prompted_swin(trunk, images, prompt_embeddings, deep_prompt_embeddings, batch_order_bug=True):
    """PromptedSwinTransformer.forward_features + the linear head. Its BasicLayer is a stage's blocks followed by
    the next stage's merging (timm puts the merging first in the next stage)."""
    x = trunk.patch_embed(images).flatten(1, 2)
    B, P = x.shape[0], prompt_embeddings.shape[1]
    x = torch.cat((prompt_embeddings.expand(B, -1, -1), x), dim=1)
    stages = list(trunk.layers)
    for s, stage in enumerate(stages):
        blocks = stage.blocks
        deep = deep_prompt_embeddings[s] if deep_prompt_embeddings else None
        for i, blk in enumerate(blocks):
            if deep is not None and deep.shape[0] != len(blocks):  # the first layer: block 0 keeps its prompts
                if i > 0:
                    x = torch.cat((deep[i - 1].expand(B, -1, -1), x[:, P:, :]), dim=1)
            elif deep is not None:
                x = torch.cat((deep[i].expand(B, -1, -1), x[:, P:, :]), dim=1)
            x = kmnp_block(blk, x, P, batch_order_bug)
        if s + 1 < len(stages):
            x = kmnp_patch_merging(stages[s + 1].downsample, x, P, blocks[0].input_resolution)
    x = trunk.norm(x).mean(1)  # avgpool over all tokens, the prompts included
    return trunk.head.fc(x)


def prompted(swin, preset, pairing="image", length=3):
    visual = timm_visual(copy.deepcopy(swin))
    injection = inject(visual, preset, {"length": length, "window_pairing": pairing})
    return visual.eval(), injection


@pytest.mark.parametrize("preset", ["vpt_shallow", "vpt_deep"])
@pytest.mark.parametrize("pairing", ["image", "reference"])
def test_vpt_on_swin_equals_kmnp_vpts_prompted_swin(swin, preset, pairing):
    visual, injection = prompted(swin, preset, pairing)
    sets = [m.prompts for m in injection.modules]
    deep = [sets[0][1:], *sets[1:]] if preset == "vpt_deep" else None
    with torch.no_grad():
        ours = visual(IMAGES)
        ref = kmnp_prompted_swin(swin, IMAGES, sets[0][:1], deep, batch_order_bug=pairing == "reference")
        assert torch.allclose(ours, ref, atol=1e-5)
        assert not torch.allclose(ours, swin(IMAGES), atol=1e-3)


def test_the_reference_pairing_mixes_images_and_is_the_same_model_only_deep_with_a_one_window_last_stage(swin):
    other = IMAGES.clone()
    other[1:] = torch.randn_like(other[1:])  # image 0 unchanged, the rest of the batch changed
    with torch.no_grad():
        fixed, _ = prompted(swin, "vpt_shallow", "image")
        reference, _ = prompted(swin, "vpt_shallow", "reference")
        assert (fixed(IMAGES)[0] - fixed(other)[0]).abs().max() < 1e-6
        assert (reference(IMAGES)[0] - reference(other)[0]).abs().max() > 1e-4
        deep_fixed, _ = prompted(swin, "vpt_deep", "image")
        deep_reference, _ = prompted(swin, "vpt_deep", "reference")
        deep_reference.load_state_dict(deep_fixed.state_dict())
        assert torch.allclose(deep_fixed(IMAGES), deep_reference(IMAGES), atol=1e-5)
        # a last stage of 4 windows: its pooled prompt outputs are mixed
        torch.manual_seed(0)
        small_windows = create_timm_model("timm:swin_tiny_patch4_window7_224", "none", num_classes=5, img_size=64,
                                          patch_size=4, window_size=2, embed_dim=16, depths=(2, 2, 2),
                                          num_heads=(2, 4, 8)).eval()
        deep_fixed, _ = prompted(small_windows, "vpt_deep", "image")
        deep_reference, _ = prompted(small_windows, "vpt_deep", "reference")
        deep_reference.load_state_dict(deep_fixed.state_dict())
        assert (deep_fixed(IMAGES) - deep_reference(IMAGES)).abs().max() > 1e-4
    # prompt dropout in training: the first prompts differ per image, and the reference pairing mixes them
    outputs = []
    for pairing in ("image", "reference"):
        visual = timm_visual(copy.deepcopy(swin))
        torch.manual_seed(1)  # the same prompts, and the same dropout masks
        inject(visual, "vpt_deep", {"length": 3, "dropout": 0.5, "window_pairing": pairing})
        with torch.no_grad():
            outputs.append(visual.train()(IMAGES))
    assert (outputs[0] - outputs[1]).abs().max() > 1e-5


def test_vpt_on_swin_trains_its_prompts_only_with_the_first_stages_init(swin):
    visual, injection = prompted(swin, "vpt_deep", length=4)
    widths, depths = (16, 32, 64), (2, 2, 2)
    assert [tuple(m.prompts.shape) for m in injection.modules] == [(d, 4, w) for d, w in zip(depths, widths)]
    bound = (6.0 / (3 * 16 + 16)) ** 0.5  # VPT's uniform init at the first stage's width, for every stage
    assert all(m.prompts.abs().max() <= bound for m in injection.modules)
    assert injection.modules[2].prompts.abs().max() > (6.0 / (3 * 16 + 64)) ** 0.5
    visual.train()
    visual(IMAGES).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in injection.parameters)
    with pytest.raises(ValueError, match="VPT_WINDOW_PAIRING must be one of image, reference"):
        inject(timm_visual(copy.deepcopy(swin)), "vpt_deep", {"window_pairing": "window"})


def test_vpt_on_swin_b_counts_a_set_per_block_at_its_stages_width():
    from clip_convpass.cli.params import adapter_param_counts

    counts = adapter_param_counts("timm:swin_base_patch4_window7_224")
    assert counts["vpt_deep"] == 58 * (2 * 128 + 2 * 256 + 18 * 512 + 2 * 1024) == 697856
    assert counts["vpt_shallow"] == 82 * 128


def test_vpt_refuses_a_swin_whose_attention_it_does_not_know_and_window_pairing_on_a_vit():
    from clip_convpass.config import ConfigError

    v2 = timm_visual(create_timm_model("timm:swinv2_tiny_window8_256", "none", num_classes=5, img_size=32, patch_size=4,
                                       window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4)))
    with pytest.raises(ConfigError, match="needs timm's SwinTransformer.*got a stage of SwinTransformerV2Block"):
        inject(v2, "vpt_deep")
    vit = timm_visual(create_timm_model("timm:vit_tiny_demo", "none", num_classes=5))
    with pytest.raises(ConfigError, match="VPT_WINDOW_PAIRING pairs prompts with a Swin's windows; a ViT has none"):
        inject(vit, "vpt_deep", {"window_pairing": "reference"})


def test_vpt_on_swin_drops_the_first_prompts_per_sample_and_each_deep_set_once_per_batch(swin):
    """KMnP/vpt: prompt_dropout(prompt_embeddings.expand(B, -1, -1)), then prompt_dropout(deep_prompt_embeddings_s)
    on the whole stage's sets, expanded per block after."""
    visual = timm_visual(copy.deepcopy(swin))
    injection = inject(visual, "vpt_deep", {"length": 3, "dropout": 0.5})
    calls = []
    for s, module in enumerate(injection.modules):
        def recorded(i, dtype, batch=1, s=s, layer=module.layer):
            calls.append((s, i, batch))
            return layer(i, dtype, batch)
        module.layer = recorded
    visual.train()(IMAGES)
    assert calls == [(0, 0, 3), (0, 1, 1), (1, 0, 1), (1, 1, 1), (2, 0, 1), (2, 1, 1)]
    torch.manual_seed(0)
    first = injection.modules[0].layer(0, torch.float32, 3)
    assert not torch.equal(first[0] == 0, first[1] == 0)
