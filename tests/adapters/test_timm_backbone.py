"""Supervised timm ViTs behind the adapter injection layer: every adapter kind injects with its one implementation,
a fresh adapter model is exactly the frozen one, the counts at ViT-B/16 are the CLIP ones, and Convpass equals a
transcription of PETL-ViT's (JieShibo/PETL-ViT convpass/vtab/convpass.py: set_Convpass, forward_block, Convpass)."""
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from clip_convpass.adapters.base import ADAPTER_REGISTRY, inject, presets
from clip_convpass.models.timm_backbone import TimmVisual, create_timm_model

IMAGES = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def tiny_timm():
    torch.manual_seed(0)
    return create_timm_model("timm:vit_tiny_patch16_224", "none", num_classes=5, img_size=32, patch_size=8, depth=2).eval()


def test_the_wrapped_timm_model_computes_what_timm_computes(tiny_timm):
    wrapped = TimmVisual(copy.deepcopy(tiny_timm)).eval()
    assert wrapped.grid_size == (4, 4) and len(wrapped.transformer.resblocks) == 2
    with torch.no_grad():
        assert torch.allclose(wrapped(IMAGES), tiny_timm(IMAGES), atol=1e-5)


@pytest.mark.parametrize("preset", sorted(presets()))
def test_every_adapter_injects_into_timm_and_a_fresh_model_is_the_frozen_one(tiny_timm, preset):
    kind, options = presets()[preset]
    frozen = TimmVisual(copy.deepcopy(tiny_timm)).eval()
    adapted = TimmVisual(copy.deepcopy(tiny_timm))
    injection = inject(adapted, preset, dict(kind.IDENTITY_OVERRIDES))
    assert injection.count() > 0 or kind.IDENTITY_OVERRIDES
    adapted.eval()
    with torch.no_grad():
        assert torch.equal(adapted(IMAGES), frozen(IMAGES)), preset
    if not kind.IDENTITY_OVERRIDES:  # and with trained-looking weights it is another model
        with torch.no_grad():
            for p in injection.parameters:
                p.add_(0.1 * torch.randn_like(p))
            adapted.train().eval()  # LoRA merges its (new) deltas for evaluation
            assert not torch.allclose(adapted(IMAGES), frozen(IMAGES))


def test_counts_at_vit_b16_are_the_clip_ones_and_the_cli_prints_them(capsys):
    from clip_convpass.cli.params import main

    main(["--backbone", "timm:vit_base_patch16_224", "--json"])
    counts = json.loads(capsys.readouterr().out)
    expected = {k: v for kind in ADAPTER_REGISTRY.classes() for k, v in kind.PARAMS_AT_VIT_B16.items()}
    assert counts == expected and counts["convpass"] == 327552


def petl_vit_convpass(x, bp, grid):
    """PETL-ViT's Convpass.forward (14 x 14 there; the tiny model's grid here), with our bypass's weights."""
    b, n, c = x.shape
    h = bp.down.out_features
    x_down = bp.act(bp.down(x))
    x_patch = x_down[:, 1:].reshape(b, grid, grid, h).permute(0, 3, 1, 2)
    x_patch = bp.conv(x_patch).permute(0, 2, 3, 1).reshape(b, grid * grid, h)
    x_cls = x_down[:, :1].reshape(b, 1, 1, h).permute(0, 3, 1, 2)
    x_cls = bp.conv(x_cls).permute(0, 2, 3, 1).reshape(b, 1, h)
    x_down = torch.cat([x_cls, x_patch], dim=1)
    return bp.up(bp.dropout(bp.act(x_down)))


def test_convpass_on_timm_equals_petl_vits_forward(tiny_timm):
    adapted = TimmVisual(copy.deepcopy(tiny_timm))
    inject(adapted, "convpass", {"scale": 10.0})
    with torch.no_grad():
        for module in adapted.modules():
            if type(module).__name__ == "Convpass":
                module.up.weight.normal_(std=0.1)
                module.up.bias.normal_(std=0.1)
                module.conv.weight.normal_(std=0.1)
    adapted.eval()
    ref = copy.deepcopy(tiny_timm)
    blocks = list(adapted.transformer.resblocks)

    def forward_block(i, x):  # PETL-ViT's forward_block: drop_path identity at evaluation
        block, ours = ref.blocks[i], blocks[i]
        x = x + block.attn(block.norm1(x)) + petl_vit_convpass(block.norm1(x), ours.bypass_attn, 4) * 10.0
        return x + block.mlp(block.norm2(x)) + petl_vit_convpass(block.norm2(x), ours.bypass_mlp, 4) * 10.0

    with torch.no_grad():
        x = ref.norm_pre(ref.patch_drop(ref._pos_embed(ref.patch_embed(IMAGES))))
        for i in range(len(blocks)):
            x = forward_block(i, x)
        expected = ref.forward_head(ref.norm(x))
        assert torch.allclose(adapted(IMAGES), expected, atol=1e-5)
        assert not torch.allclose(expected, tiny_timm(IMAGES), atol=1e-3)


def test_local_weights_load_without_pickles_and_bad_files_say_what_is_expected(tiny_timm, tmp_path):
    from safetensors.torch import save_file

    from clip_convpass.models.timm_backbone import MissingTimmWeightsError

    state = {k: v.contiguous() for k, v in tiny_timm.state_dict().items()}
    torch.save(state, tmp_path / "w.pth")
    save_file(state, str(tmp_path / "w.safetensors"))
    kwargs = dict(num_classes=7, img_size=32, patch_size=8, depth=2)  # another class count: the head is new
    for name in ("w.pth", "w.safetensors"):
        model = create_timm_model("timm:vit_tiny_patch16_224", str(tmp_path / name), **kwargs)
        assert torch.equal(model.blocks[1].mlp.fc2.weight, tiny_timm.blocks[1].mlp.fc2.weight)
        assert model.head.out_features == 7
    with pytest.raises(MissingTimmWeightsError, match="does not exist"):
        create_timm_model("timm:vit_tiny_patch16_224", str(tmp_path / "absent.npz"), **kwargs)
    torch.save({"blocks.0.norm1.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(MissingTimmWeightsError, match="does not hold"):
        create_timm_model("timm:vit_tiny_patch16_224", str(tmp_path / "other.pth"), **kwargs)
    with pytest.raises(Exception, match="timm model name"):
        create_timm_model("timm:not_a_model", "none")


def test_a_supervised_run_trains_the_adapter_and_head_only_and_reloads(cfg_factory, tmp_path):
    from clip_convpass.config import ConfigError
    from clip_convpass.engine.checkpoint import latest_checkpoint, load_checkpoint
    from clip_convpass.engine.runner import run
    from clip_convpass.registry import TRAINER_REGISTRY

    torch.manual_seed(0)
    backbone = create_timm_model("timm:vit_tiny_demo", "none", num_classes=1000)
    torch.save(backbone.state_dict(), tmp_path / "in21k.pth")  # a pretrained checkpoint with another head
    opts = ["MODEL.BACKBONE", "timm:vit_tiny_demo", "MODEL.PRETRAINED", str(tmp_path / "in21k.pth"),
            "TRAINER.PETL.HEAD_INIT", "random", "MODEL.DROP_PATH_RATE", "0.1", "DATASET.NUM_SHOTS", "2",
            "OPTIM.MAX_EPOCH", "2", "OPTIM.LR", "0.01", "DATALOADER.NUM_WORKERS", "2"]
    cfg = cfg_factory(config_file="configs/trainers/PETLCLIP/convpass_attn.yaml", output_dir=tmp_path / "run",
                      opts=opts)
    record = run(cfg)[0]
    assert record["metrics"]["top1"] is not None
    state = load_checkpoint(latest_checkpoint(tmp_path / "run"))["state_dict"]
    assert state and all(".bypass_attn." in k or k.endswith(("head.weight", "head.bias")) for k in state)
    trainer = TRAINER_REGISTRY.get("PETLCLIP")(cfg)
    trainer.load_from_model_dir(tmp_path / "run")
    blocks = trainer.model.visual.trunk.blocks.resblocks
    assert torch.equal(blocks[1].block.mlp.fc2.weight, backbone.blocks[1].mlp.fc2.weight)  # frozen: as loaded
    assert trainer.model.head.out_features == trainer.dataset.num_classes
    assert trainer.test()["metrics"] == record["metrics"]
    with pytest.raises(ConfigError, match="no text tower.*HEAD_INIT random"):
        TRAINER_REGISTRY.get("PETLCLIP")(cfg_factory(config_file="configs/trainers/PETLCLIP/convpass_attn.yaml",
                                                     opts=[*opts[:4], "OPTIM.MAX_EPOCH", "1"]))
    with pytest.raises(ConfigError, match="image-only supervised backbone"):
        TRAINER_REGISTRY.get("CoOp")(cfg_factory(config_file="configs/trainers/CoOp/vit_b16_ep50.yaml", opts=opts[:4]))
    with pytest.raises(ConfigError, match="DROP_PATH_RATE needs a timm backbone"):
        cfg_factory(opts=["MODEL.DROP_PATH_RATE", "0.1"])


def google_npz(model, path, representation=None):
    """A timm ViT in the layout of Google's ViT .npz files (ViT-B_16.npz: what timm's _load_weights reads), with a
    representation layer (pre_logits/kernel, pre_logits/bias) if given."""
    import numpy as np

    def a(t):
        return t.detach().numpy()

    d, heads = model.embed_dim, model.blocks[0].attn.num_heads
    w = {"embedding/kernel": a(model.patch_embed.proj.weight.permute(2, 3, 1, 0)),
         "embedding/bias": a(model.patch_embed.proj.bias), "cls": a(model.cls_token),
         "Transformer/posembed_input/pos_embedding": a(model.pos_embed),
         "Transformer/encoder_norm/scale": a(model.norm.weight), "Transformer/encoder_norm/bias": a(model.norm.bias)}
    for i, b in enumerate(model.blocks):
        p = f"Transformer/encoderblock_{i}/"
        w.update({p + "LayerNorm_0/scale": a(b.norm1.weight), p + "LayerNorm_0/bias": a(b.norm1.bias),
                  p + "LayerNorm_2/scale": a(b.norm2.weight), p + "LayerNorm_2/bias": a(b.norm2.bias),
                  p + "MultiHeadDotProductAttention_1/out/kernel": a(b.attn.proj.weight.reshape(d, heads, -1).permute(1, 2, 0)),
                  p + "MultiHeadDotProductAttention_1/out/bias": a(b.attn.proj.bias)})
        for name, weight, bias in zip(("query", "key", "value"), b.attn.qkv.weight.chunk(3), b.attn.qkv.bias.chunk(3)):
            w[p + f"MultiHeadDotProductAttention_1/{name}/kernel"] = a(weight.T.reshape(d, heads, -1))
            w[p + f"MultiHeadDotProductAttention_1/{name}/bias"] = a(bias.reshape(heads, -1))
        for r, fc in enumerate((b.mlp.fc1, b.mlp.fc2)):
            w[p + f"MlpBlock_3/Dense_{r}/kernel"], w[p + f"MlpBlock_3/Dense_{r}/bias"] = a(fc.weight.T), a(fc.bias)
    if representation is not None:
        w["pre_logits/kernel"], w["pre_logits/bias"] = a(representation[0].T), a(representation[1])
    np.savez(path, **w)


def test_googles_npz_loads_with_its_representation_layer_frozen_before_the_head(tmp_path):
    """timm 0.4.12's vit_base_patch16_224_in21k (PETL-ViT, NOAH): head(tanh(pre_logits.fc(cls features)))."""
    from clip_convpass.config import setup_cfg
    from clip_convpass.registry import TRAINER_REGISTRY

    torch.manual_seed(0)
    source = create_timm_model("timm:vit_tiny_demo", "none", num_classes=0).eval()
    weight, bias = torch.randn(48, 48) / 7, torch.randn(48)
    google_npz(source, tmp_path / "ViT.npz", (weight, bias))
    with torch.no_grad():
        features = source.forward_head(source.forward_features(IMAGES), pre_logits=True)
        kept = create_timm_model("timm:vit_tiny_demo", str(tmp_path / "ViT.npz"), num_classes=5).eval()
        assert torch.allclose(kept.forward_head(kept.forward_features(IMAGES), pre_logits=True),
                              torch.tanh(features @ weight.T + bias), atol=1e-5)
        dropped = create_timm_model("timm:vit_tiny_demo", str(tmp_path / "ViT.npz"), num_classes=5, pre_logits=False)
        assert torch.allclose(dropped.eval().forward_head(dropped.forward_features(IMAGES), pre_logits=True), features,
                              atol=1e-5)
        # a timm-0.4.12 state dict names it pre_logits.fc
        state = {**source.state_dict(), "pre_logits.fc.weight": weight, "pre_logits.fc.bias": bias}
        torch.save(state, tmp_path / "old_timm.pth")
        from_pth = create_timm_model("timm:vit_tiny_demo", str(tmp_path / "old_timm.pth"), num_classes=5).eval()
        assert torch.allclose(from_pth.forward_head(from_pth.forward_features(IMAGES), pre_logits=True),
                              torch.tanh(features @ weight.T + bias), atol=1e-5)
    cfg = setup_cfg(None, "configs/trainers/PETLCLIP/vtab_convpass.yaml",
                    ["MODEL.BACKBONE", "timm:vit_tiny_demo", "MODEL.PRETRAINED", str(tmp_path / "ViT.npz"),
                     "INPUT.SIZE", "(32,32)", "DATASET.ROOT", str(tmp_path), "DEVICE", "cpu"])
    from clip_convpass.data.synthetic import build_synthetic_tree

    build_synthetic_tree(tmp_path, source="vtab_kitti")
    cfg.defrost()
    cfg.DATASET.NAME = "vtab_kitti"
    cfg.freeze()
    trainer = TRAINER_REGISTRY.get("PETLCLIP")(cfg)
    representation = trainer.model.visual.trunk.head_drop[1]
    assert not any(p.requires_grad for p in representation.parameters())  # frozen, as in the reference
    assert torch.equal(representation.fc.weight, weight)


def tiny_swin():
    torch.manual_seed(0)
    return create_timm_model("timm:swin_tiny_patch4_window7_224", "none", num_classes=5, img_size=32, patch_size=4,
                             window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4)).eval()


def petl_vit_forward_swin_block(blk, x, bp_attn, bp_mlp, s):
    """PETL-ViT's forward_swin_block (timm 0.4.12's SwinTransformerBlock on (B, L, C) tokens) with its
    Convpass_swin (H = sqrt(N); down, act, 3x3 conv, act, dropout, up), transcribed."""
    from timm.models.swin_transformer import window_partition, window_reverse

    def convpass_swin(bp, t):
        b, n, _ = t.shape
        h = int(math.sqrt(n))
        z = F.linear(t, bp.down.weight, bp.down.bias).reshape(b, h, h, -1).permute(0, 3, 1, 2)
        z = bp.act(z)
        z = F.conv2d(z, bp.conv.weight, bp.conv.bias, padding=bp.conv.padding)
        z = bp.act(z.permute(0, 2, 3, 1).reshape(b, n, -1))
        return F.linear(z, bp.up.weight, bp.up.bias)

    H, W = blk.input_resolution
    B, L, C = x.shape
    shortcut = x + convpass_swin(bp_attn, blk.norm1(x)) * s
    y = blk.norm1(x).view(B, H, W, C)
    shift = blk.shift_size[0]
    if shift:
        y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
    ws = blk.window_size[0]
    windows = window_partition(y, (ws, ws)).view(-1, ws * ws, C)
    attn = blk.attn(windows, mask=blk.attn_mask).view(-1, ws, ws, C)
    y = window_reverse(attn, (ws, ws), H, W)
    if shift:
        y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
    x = shortcut + y.reshape(B, H * W, C)
    return x + blk.mlp(blk.norm2(x)) + convpass_swin(bp_mlp, blk.norm2(x)) * s


def test_convpass_on_swin_is_exact_at_init_and_equals_petl_vits_swin_block():
    from clip_convpass.models.timm_backbone import SwinStageBlock, timm_visual

    swin = tiny_swin()
    adapted = timm_visual(copy.deepcopy(swin))
    injection = inject(adapted, "convpass", {"scale": 10.0})
    adapted.eval()
    with torch.no_grad():
        assert torch.equal(adapted(IMAGES), swin(IMAGES))  # up projections start at zero
        for p in injection.parameters:
            p.add_(0.05 * torch.randn_like(p))
        blocks = [b for b in adapted.trunk.modules() if isinstance(b, SwinStageBlock)]
        assert len(blocks) == 4 and len(injection.modules) == 8
        for block in blocks:  # both stages, unshifted and shifted windows
            timm_block, slots = block.block.block.swin, block.block
            h, w = timm_block.input_resolution
            x = torch.randn(2, h, w, timm_block.norm1.normalized_shape[0])
            ours = block(x).reshape(2, h * w, -1)
            ref = petl_vit_forward_swin_block(timm_block, x.reshape(2, h * w, -1), slots.bypass_attn, slots.bypass_mlp,
                                              10.0)
            assert torch.allclose(ours, ref, atol=1e-5)
        assert not torch.allclose(adapted(IMAGES), swin(IMAGES))


def test_hierarchical_backbones_take_the_slot_adapters_on_swin_and_nothing_else():
    from clip_convpass.cli.params import adapter_param_counts
    from clip_convpass.config import ConfigError
    from clip_convpass.models.timm_backbone import TimmClassifier, timm_visual

    swin = timm_visual(tiny_swin())
    assert isinstance(swin, TimmClassifier)
    for preset in ("lora", "bitfit"):  # VPT has its Swin form (test_vpt_swin.py)
        with pytest.raises(ConfigError, match="hierarchical backbone"):
            inject(copy.deepcopy(swin), preset)
    with pytest.raises(ConfigError, match="SHARE: Swin's stages have different widths"):
        inject(copy.deepcopy(swin), "convpass_share")
    for preset in ("adaptformer", "adapter", "convpass_attn"):  # exact at init, and trainable
        frozen, adapted = copy.deepcopy(swin).eval(), copy.deepcopy(swin)
        injection = inject(adapted, preset, dict(presets()[preset][0].IDENTITY_OVERRIDES))
        with torch.no_grad():
            assert torch.equal(adapted.eval()(IMAGES), frozen(IMAGES)), preset
        assert injection.count() > 0
    convnext = timm_visual(create_timm_model("timm:convnext_atto", "none", num_classes=4, img_size=(32, 32)))
    with pytest.raises(ConfigError, match="no Swin stages.*ADAPTER none"):
        inject(convnext, "convpass")
    # Swin-B: bypasses of each stage's width (128, 256, 512, 1024) at h = 8
    counts = adapter_param_counts("timm:swin_base_patch4_window7_224")
    widths = [128] * 2 + [256] * 2 + [512] * 18 + [1024] * 2
    assert counts["convpass"] == sum(2 * ((2 * 8 + 1) * d + 9 * 64 + 2 * 8) for d in widths) == 437504
    assert counts["convpass_attn"] == counts["convpass"] // 2
    assert counts["adaptformer"] == sum((2 * 8 + 1) * d + 8 for d in widths)  # down + up with biases, per block
    assert "lora" not in counts and "convpass_share" not in counts


def test_fairs_convnext_checkpoint_loads_through_timms_converter(tmp_path):
    import re

    torch.manual_seed(0)
    source = create_timm_model("timm:convnext_atto", "none", num_classes=0)
    fair = {}
    for k, v in source.state_dict().items():  # timm's names back to FAIR's (the inverse of checkpoint_filter_fn)
        k = k.replace("stem.", "downsample_layers.0.")
        k = re.sub(r"stages\.([0-9]+)\.blocks\.([0-9]+)", r"stages.\1.\2", k)
        k = re.sub(r"stages\.([0-9]+)\.downsample\.([0-9]+)", r"downsample_layers.\1.\2", k)
        k = k.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv").replace("head.norm.", "norm.")
        fair[k] = v
    fair["head.weight"], fair["head.bias"] = torch.randn(11, 320), torch.randn(11)  # ImageNet-22K's, another count
    torch.save({"model": fair}, tmp_path / "convnext_atto_22k.pth")
    loaded = create_timm_model("timm:convnext_atto", str(tmp_path / "convnext_atto_22k.pth"), num_classes=4)
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert loaded.get_classifier().out_features == 4


def test_full_and_linear_train_a_convnext(cfg_factory, tmp_path):
    from clip_convpass.engine.runner import run

    for method in ("linear", "full"):
        opts = ["MODEL.BACKBONE", "timm:convnext_atto", "MODEL.PRETRAINED", "none", "INPUT.SIZE", "(32,32)",
                "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0",
                "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "TEST.MONITOR_EVERY", "0", "TEST.SPLIT", "test"]
        cfg = cfg_factory(config_file=f"configs/trainers/PETLCLIP/vtab_{method}.yaml", output_dir=tmp_path / method,
                          opts=opts)
        record = run(cfg)[0]
        encoder = record["trainable_params"]["image_encoder"]
        assert (encoder == 0) if method == "linear" else (encoder > 3_000_000)
