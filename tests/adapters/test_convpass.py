import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from PIL import Image

from clip_convpass.adapters.convpass import Convpass, ConvpassSpec, inject_convpass, is_bypass_parameter
from clip_convpass.engine.checkpoint import CheckpointMismatchError, latest_checkpoint
from clip_convpass.engine.runner import run
from clip_convpass.models.clip_loader import load_clip
from clip_convpass.models.heads import CLIPClassifier, build_head
from clip_convpass.registry import TRAINER_REGISTRY

CONVPASS_CFG = "configs/trainers/ConvpassCLIP/vit_b16.yaml"
VARIANTS = [
    ConvpassSpec(positions=p, mode=m, kernel_size=k, share=s, conv_init=c, hidden=4, scale=10.0)
    for p, m, k, s, c in itertools.product(("both", "attn", "mlp"), ("parallel", "sequential"), (3, 1),
                                           (False, True), ("identity", "xavier"))
]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_clip("tiny-ViT-Q", "none")


def variant_id(s):
    return f"{s.positions}-{s.mode}-k{s.kernel_size}-share{int(s.share)}-{s.conv_init}"


@pytest.mark.parametrize("spec", VARIANTS, ids=variant_id)
def test_fresh_model_equals_zero_shot_for_every_variant(tiny, spec):
    from clip_convpass.models.blocks import fuse_attention

    head = build_head(tiny, ["tench", "goldfish", "shark"], "single")
    zs = CLIPClassifier(copy.deepcopy(tiny.model.visual), head).eval()
    fuse_attention(zs.visual.transformer)  # zero-shot CLIP as every trainer builds it (MODEL.FUSED_ATTENTION)
    adapted = CLIPClassifier(copy.deepcopy(tiny.model.visual), copy.deepcopy(head))
    bypasses = inject_convpass(adapted.visual, spec)
    assert len(bypasses) == (4 if spec.positions == "both" else 2)
    adapted.eval()
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        diff = (adapted(images) - zs(images)).abs().max().item()
    assert diff < 1e-5


def vit_b16_visual():
    return VisionTransformer(image_size=224, patch_size=16, width=768, layers=12, heads=12, mlp_ratio=4.0,
                             output_dim=512)


def n_bypass_params(visual):
    return sum(p.numel() for n, p in visual.named_parameters() if is_bypass_parameter(n))


def test_parameter_counts_at_vit_b16_shape():
    L, d, h = 12, 768, 8
    visual = vit_b16_visual()
    inject_convpass(visual, ConvpassSpec(hidden=h))
    assert n_bypass_params(visual) == 2 * L * ((2 * h + 1) * d + 9 * h * h + 2 * h) == 327_552
    visual = vit_b16_visual()
    inject_convpass(visual, ConvpassSpec(hidden=32, share=True))
    assert n_bypass_params(visual) == 2 * d * 32 + 2 * L * 9 * 32 == 56_064


def test_grid_is_row_major_like_the_patch_embedding():
    torch.manual_seed(0)
    visual = load_clip("tiny-ViT-Q-rect", "none").model.visual  # 24x40 input, 3x5 grid
    gh, gw = visual.grid_size
    assert (gh, gw) == (3, 5)
    img = torch.randn(1, 3, 24, 40)
    bumped = img.clone()
    r, c = 1, 3
    bumped[:, :, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] += 1.0
    with torch.no_grad():
        changed = (visual._embeds(bumped) - visual._embeds(img)).abs().amax(-1)[0]
    assert changed.nonzero().flatten().tolist() == [1 + r * gw + c]


@pytest.mark.parametrize("kernel", [3, 1])
def test_locality_and_cls_centre_tap(kernel):
    torch.manual_seed(0)
    gh, gw, d = 4, 5, 16
    bp = Convpass(d, (gh, gw), ConvpassSpec(hidden=6, kernel_size=kernel, conv_init="xavier"))
    torch.nn.init.normal_(bp.up.weight)
    torch.nn.init.normal_(bp.conv.bias)
    bp.eval()
    x = torch.randn(2, 1 + gh * gw, d)
    r, c = 2, 1
    x2 = x.clone()
    x2[:, 1 + r * gw + c] += torch.randn(d)
    with torch.no_grad():
        changed = (bp(x2) - bp(x)).abs().amax(dim=(0, 2)) > 0
    expected = torch.zeros(1 + gh * gw, dtype=torch.bool)
    reach = 1 if kernel == 3 else 0
    for rr in range(r - reach, r + reach + 1):
        for cc in range(c - reach, c + reach + 1):
            if 0 <= rr < gh and 0 <= cc < gw:
                expected[1 + rr * gw + cc] = True
    assert torch.equal(changed, expected)
    # [cls] is a 1x1 image through the same conv: zero padding leaves only the centre tap and bias.
    with torch.no_grad():
        z = bp.act(bp.down(x[:, :1]))
        ref = F.conv2d(z.reshape(2, 6, 1, 1), bp.conv.weight, bp.conv.bias, padding=kernel // 2).reshape(2, 1, 6)
        ref = bp.up(bp.act(ref))
        assert torch.allclose(bp(x)[:, :1], ref, atol=1e-6)


def make_trainer(cfg_factory, opts=(), **kw):
    cfg = cfg_factory(config_file=CONVPASS_CFG, opts=["DATASET.NUM_SHOTS", "4", "DATALOADER.TRAIN_X.BATCH_SIZE", "8",
                                                       *opts], **kw)
    return TRAINER_REGISTRY.get("ConvpassCLIP")(cfg)


def test_trainer_matches_zero_shot_and_frees_text_tower(cfg_factory, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "w.pt"
    torch.save(load_clip("tiny-ViT-Q", "none").model.state_dict(), weights)
    cp = make_trainer(cfg_factory, ["MODEL.PRETRAINED", str(weights)])
    zs = TRAINER_REGISTRY.get("ZeroShotCLIP")(cfg_factory(opts=["MODEL.PRETRAINED", str(weights)]))
    images = torch.randn(4, 3, 32, 32)
    assert (cp.predict(images) - zs.predict(images)).abs().max() < 1e-5
    names = [n for n, _ in cp.model.named_parameters()]
    assert not any("token_embedding" in n or n.startswith("transformer.") for n in names)
    trainable = {n for n, p in cp.model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in names if is_bypass_parameter(n) or n.startswith("head.")}


def test_only_bypasses_and_head_train(cfg_factory):
    trainer = make_trainer(cfg_factory, ["OPTIM.LR", "0.01", "OPTIM.MAX_EPOCH", "1"])
    frozen_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    trained_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    for n, p in trainer.model.named_parameters():
        if n in frozen_before:
            assert p.grad is None, n
            assert torch.equal(p, frozen_before[n]), n
    changed = [n for n, p in trainer.model.named_parameters() if n in trained_before and not torch.equal(p, trained_before[n])]
    assert any(n.startswith("head.") for n in changed)
    assert any(".bypass_attn.up." in n for n in changed) and any(".bypass_mlp.up." in n for n in changed)


def test_frozen_head_stays_fixed(cfg_factory):
    trainer = make_trainer(cfg_factory, ["OPTIM.LR", "0.01", "OPTIM.MAX_EPOCH", "1",
                                         "TRAINER.CONVPASS.HEAD_TRAINABLE", "False"])
    w = trainer.model.head.weight.detach().clone()
    trainer.train()
    assert torch.equal(trainer.model.head.weight, w)


@pytest.mark.parametrize("init", ["random", "zero"])
def test_head_init_variants(cfg_factory, init):
    trainer = make_trainer(cfg_factory, ["TRAINER.CONVPASS.HEAD_INIT", init])
    w = trainer.model.head.weight
    assert torch.count_nonzero(trainer.model.head.bias) == 0
    if init == "zero":
        assert torch.count_nonzero(w) == 0
    else:
        assert torch.allclose(w.norm(dim=1), torch.full((w.shape[0],), 100.0), atol=1e-3)


def test_checkpoint_round_trip_and_mismatches(cfg_factory, tmp_path):
    trainer = make_trainer(cfg_factory, ["OPTIM.LR", "0.01", "OPTIM.MAX_EPOCH", "1"], output_dir=tmp_path / "run")
    trainer.train()
    images = torch.randn(3, 3, 32, 32)
    expected = trainer.predict(images)
    ckpt = latest_checkpoint(tmp_path / "run")
    state = torch.load(ckpt, weights_only=True)
    assert all(is_bypass_parameter(k) or k.startswith("head.") for k in state["state_dict"])
    fresh = make_trainer(cfg_factory, output_dir=tmp_path / "other")
    assert not torch.equal(fresh.predict(images), expected)
    fresh.load_from_model_dir(tmp_path / "run")
    assert torch.equal(fresh.predict(images), expected)
    with pytest.raises(CheckpointMismatchError, match="shape"):
        h4 = make_trainer(cfg_factory, ["TRAINER.CONVPASS.HIDDEN", "4"], output_dir=tmp_path / "h4")
        h4.load_from_model_dir(tmp_path / "run")
    with pytest.raises(CheckpointMismatchError, match="backbone"):
        make_trainer(cfg_factory, ["MODEL.BACKBONE", "tiny-ViT-Q-rect", "INPUT.SIZE", "(24, 40)"],
                     output_dir=tmp_path / "rect").load_from_model_dir(tmp_path / "run")


def test_eval_only_from_model_dir_on_all_sets(cfg_factory, tmp_path):
    run_dir = tmp_path / "run"
    trained = run(cfg_factory(config_file=CONVPASS_CFG, output_dir=run_dir,
                              opts=["OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "2", "OPTIM.LR", "0.01"]))
    for ds in ("ImageNet", "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"):
        cfg = cfg_factory(ds, CONVPASS_CFG, output_dir=run_dir / "evalonly")
        rec = run(cfg, eval_only=True, model_dir=str(run_dir))[0]
        assert rec["dataset"] == ds and rec["epochs_trained"] == 1 and rec["train_dataset"] == "ImageNet"
        if ds == "ImageNet":
            assert rec["metrics"] == trained[0]["metrics"]


def write_pattern_tree(root, n_train=40, n_test=20, seed=0):
    """Two classes told apart only by a local 8x8 pattern (vertical vs horizontal stripes) on noise."""
    rng = np.random.default_rng(seed)
    wnids = ["n01440764", "n01443537"]
    for split, n in (("train", n_train), ("val", n_test)):
        for label, wnid in enumerate(wnids):
            folder = root / "imagenet" / "images" / split / wnid
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(90, 160, (32, 32, 3)).astype(np.uint8)
                y, x = rng.integers(0, 24, 2)
                stripes = (np.arange(8) % 2 * 255).astype(np.uint8)
                patch = np.broadcast_to(stripes[None, :] if label == 0 else stripes[:, None], (8, 8))
                img[y:y + 8, x:x + 8] = patch[..., None]
                Image.fromarray(img).save(folder / f"{i}.png")
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    return root


@pytest.mark.slow
def test_learns_a_local_spatial_pattern(cfg_factory, tmp_path):
    root = write_pattern_tree(tmp_path / "pattern")
    opts = ["DATASET.ROOT", str(root), "DATASET.CLASS_LIST", str(root / "wnids.txt"), "DATASET.NUM_SHOTS", "40",
            "DATASET.VAL_SHOTS", "0", "INPUT.TRANSFORMS", "['random_flip', 'normalize']",
            "INPUT.TEST_TRANSFORMS", "['normalize']", "OPTIM.LR", "1e-2", "OPTIM.MAX_EPOCH", "30",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "16", "TRAINER.CONVPASS.SCALE", "1.0", "TRAINER.CONVPASS.HIDDEN", "8"]
    trainer = make_trainer(cfg_factory, opts, output_dir=tmp_path / "run")
    before = trainer.test()["metrics"]["top1"]
    trainer.train()
    after = trainer.test()["metrics"]["top1"]
    assert after >= 85.0, (before, after)
    assert after >= before + 20.0, (before, after)


def test_fused_attention_matches_open_clip_attention_with_gradients(tiny):
    torch.manual_seed(0)
    models = []
    for fast in (True, False):
        visual = copy.deepcopy(tiny.model.visual)
        visual.requires_grad_(False)
        bps = inject_convpass(visual, ConvpassSpec(hidden=4, dropout=0.0, fast_attention=fast))
        assert all(b.fast_attention == fast for b in visual.transformer.resblocks)
        models.append((visual, bps))
    with torch.no_grad():  # the same non-zero bypass weights in both
        for (na, pa), (nb, pb) in zip(models[0][0].named_parameters(), models[1][0].named_parameters()):
            assert na == nb
            if is_bypass_parameter(na):
                pa.normal_(std=0.1)
                pb.copy_(pa)
    images = torch.randn(3, 3, 32, 32)
    outs, grads = [], []
    for visual, bps in models:
        out = visual(images)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for b in bps for p in b.parameters()]))
    assert (outs[0] - outs[1]).abs().max() < 1e-5
    assert torch.allclose(grads[0], grads[1], atol=1e-4, rtol=1e-4)
