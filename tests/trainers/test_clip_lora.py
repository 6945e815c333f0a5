"""CLIP-LoRA: its exact starting point, the reference's LoRA attention (MaxZanella/CLIP-LoRA loralib/
easymultiheadattention.py and layers.py: separate q, k, v projections, y = W x + b + (alpha / sqrt r) x A^T B^T, dropout
on the branch input) transcribed, merged evaluation, and its iteration budget."""
import math

import torch

from clip_convpass.adapters.lora import LoRAQV
from clip_convpass.models.clip_loader import load_clip
from clip_convpass.registry import TRAINER_REGISTRY

IMAGES = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(7))
CONFIG = "configs/trainers/CLIPLoRA/vit_b16.yaml"


def build(cfg_factory, tiny_weights, tmp_path, name="CLIPLoRA", config=CONFIG, *opts):
    cfg = cfg_factory(config_file=config, output_dir=tmp_path / name,
                      opts=["MODEL.PRETRAINED", tiny_weights, "DATASET.NUM_SHOTS", "2", *opts])
    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)


def test_a_fresh_clip_lora_is_zero_shot_clip_exactly(cfg_factory, tiny_weights, tmp_path):
    zs = build(cfg_factory, tiny_weights, tmp_path, "zs", "configs/trainers/ZeroShotCLIP/vit_b16.yaml",
               "TRAINER.ZSCLIP.TEMPLATES", "single")
    lora = build(cfg_factory, tiny_weights, tmp_path)
    names = [n for n, _ in lora.trainable_named_parameters()]
    assert any(n.startswith("visual.") for n in names) and any(n.startswith("text_encoder.") for n in names)
    assert {n.rsplit(".", 1)[1] for n in names} == {"a_q", "b_q", "a_k", "b_k", "a_v", "b_v"}
    assert torch.equal(lora.predict(IMAGES), zs.predict(IMAGES))  # B = 0: merged weights are the frozen ones
    with torch.no_grad():
        for n, p in lora.trainable_named_parameters():
            if n.endswith(("b_q", "b_k", "b_v")):
                p.normal_(std=0.1)
    assert not torch.allclose(lora.predict(IMAGES), zs.predict(IMAGES))


def reference_attention(attn, lora, x, mask, scale):
    """loralib's PlainMultiheadAttentionLoRA forward (eval of dropout, unmerged): q, k, v from their own Linears."""
    d, h = attn.embed_dim, attn.num_heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    q, k, v = (x @ w[i * d:(i + 1) * d].t() + b[i * d:(i + 1) * d]
               + scale * x @ (getattr(lora, f"b_{t}") @ getattr(lora, f"a_{t}")).t() for i, t in enumerate("qkv"))
    split = lambda t: t.view(t.shape[0], t.shape[1], h, d // h).transpose(1, 2)  # noqa: E731
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d // h)
    if mask is not None:
        scores = scores + mask
    out = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(x.shape)
    return out @ attn.out_proj.weight.t() + attn.out_proj.bias


def test_lora_attention_matches_the_reference_and_merges_exactly_enough(tiny_weights):
    model = load_clip("tiny-ViT-Q", tiny_weights).model
    scale = 1.0 / math.sqrt(2)  # CLIP-LoRA's alpha / sqrt(r) at r = 2, alpha = 1
    for block, mask in ((model.visual.transformer.resblocks[0], None),
                        (model.transformer.resblocks[1], model.attn_mask[:9, :9])):
        attn = block.attn
        lora = LoRAQV(attn, 2, scale, "qkv", dropout=0.0)
        with torch.no_grad():
            for t in "qkv":
                getattr(lora, f"b_{t}").normal_(std=0.2)
        x = torch.randn(3, 9, attn.embed_dim)
        ours = lora.attention(attn, x, mask)
        ref = reference_attention(attn, lora, x, mask, scale)
        assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
        lora.merge()  # evaluation: W + s B A in the packed projection, MHA's own kernel
        out, _ = attn(x, x, x, need_weights=False, attn_mask=mask)
        assert torch.allclose(out, ref, atol=1e-5)
        lora.unmerge()
        assert torch.equal(attn.in_proj_weight, lora.base_weight)


def test_lora_dropout_acts_on_the_branch_only_and_only_in_training(tiny_weights):
    model = load_clip("tiny-ViT-Q", tiny_weights).model
    attn = model.visual.transformer.resblocks[0].attn
    lora = LoRAQV(attn, 2, 1.0, "qkv", dropout=0.25)
    x = torch.randn(2, 5, attn.embed_dim)
    frozen = lora.attention(attn, x)  # B = 0: dropout on the branch leaves the frozen path untouched
    assert torch.equal(frozen, lora.attention(attn, x))
    with torch.no_grad():
        lora.b_v.normal_()
    torch.manual_seed(0)
    a = lora.attention(attn, x)
    torch.manual_seed(1)
    assert not torch.equal(a, lora.attention(attn, x))  # different masks while training
    lora.eval()
    lora.dropout.eval()
    torch.manual_seed(0)
    b = lora.attention(attn, x)
    torch.manual_seed(1)
    assert torch.equal(b, lora.attention(attn, x))


def test_the_iteration_budget_ends_inside_an_epoch_with_the_cosine_at_its_floor(cfg_factory, tiny_weights, tmp_path):
    """500 x shots iterations in the reference; here 5 x 2 = 10 steps of 3 per epoch: 4 epochs, the last of one."""
    trainer = build(cfg_factory, tiny_weights, tmp_path, "CLIPLoRA", CONFIG, "OPTIM.ITERS_PER_SHOT", "5",
                    "DATALOADER.TRAIN_X.BATCH_SIZE", "4")
    assert len(trainer.dataset.train_x) == 12 and trainer.max_epoch == 4
    steps = []
    real = trainer.forward_backward
    trainer.forward_backward = lambda batch: steps.append(trainer.optim.param_groups[0]["lr"]) or real(batch)
    trainer.train()
    assert len(steps) == 10
    cfg = trainer.cfg.OPTIM
    expected = [cfg.MIN_LR + 0.5 * (cfg.LR - cfg.MIN_LR) * (1 + math.cos(math.pi * i / 10)) for i in range(10)]
    assert all(abs(a - b) < 1e-12 for a, b in zip(steps, expected))  # torch's CosineAnnealingLR(T_max=10, eta_min)
    assert abs(trainer.optim.param_groups[0]["lr"] - cfg.MIN_LR) < 1e-12
