import pytest
import torch
import torch.nn.functional as F

from clip_convpass.data import build_dataset, build_transform, load_rgb
from clip_convpass.data.base import stable_int
from clip_convpass.data.loader import stream_seed
from clip_convpass.engine.runner import run
from clip_convpass.models.clip_loader import load_clip
from clip_convpass.registry import TRAINER_REGISTRY

CFG = {
    "ZeroShotCLIP": "configs/trainers/ZeroShotCLIP/vit_b16.yaml",
    "CoOp": "configs/trainers/CoOp/vit_b16_ep50.yaml",
    "CoOpInit": "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml",
    "CoCoOp": "configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1.yaml",
    "TipAdapter": "configs/trainers/TipAdapter/vit_b16.yaml",
    "TipAdapterF": "configs/trainers/TipAdapterF/vit_b16.yaml",
    "LinearProbeCLIP": "configs/trainers/LinearProbeCLIP/vit_b16.yaml",
}
IMAGES = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def build(cfg_factory, weights, key, opts=(), dataset="ImageNet", output_dir=None):
    cfg = cfg_factory(dataset, CFG[key], output_dir=output_dir,
                      opts=["MODEL.PRETRAINED", weights, "DATASET.NUM_SHOTS", "2", "DATASET.VAL_SHOTS", "2", *opts])
    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)


def plain_text_features(weights, prompts):
    bundle = load_clip("tiny-ViT-Q", weights)
    with torch.no_grad():
        return F.normalize(bundle.model.encode_text(bundle.tokenizer(prompts)), dim=-1)


@pytest.mark.parametrize("position,template", [("end", "a photo of a {}."), ("front", "{} a photo of a."),
                                               ("middle", "a photo {} of a.")])
def test_coop_init_prompt_equals_plain_prompt(cfg_factory, tiny_weights, position, template):
    coop = build(cfg_factory, tiny_weights, "CoOpInit", ["TRAINER.COOP.CLASS_TOKEN_POSITION", position])
    with torch.no_grad():
        got = coop.model.text_features()
    ref = plain_text_features(tiny_weights, [template.format(c) for c in coop.classnames])
    assert (got - ref).abs().max() < 1e-5
    if position == "end":
        zs = build(cfg_factory, tiny_weights, "ZeroShotCLIP")
        assert (coop.predict(IMAGES) - zs.predict(IMAGES)).abs().max() < 1e-4


def test_coop_random_context_and_csc_shapes(cfg_factory, tiny_weights):
    coop = build(cfg_factory, tiny_weights, "CoOp", ["TRAINER.COOP.CSC", "True"])
    assert tuple(coop.model.prompt_learner.ctx.shape) == (6, 16, 32)
    assert coop.predict(IMAGES).shape == (3, 6)


def test_cocoop_with_zero_meta_net_equals_coop(cfg_factory, tiny_weights):
    cocoop = build(cfg_factory, tiny_weights, "CoCoOp", ["TRAINER.COCOOP.PROMPTS_PER_CHUNK", "4"])
    coop = build(cfg_factory, tiny_weights, "CoOpInit")
    with torch.no_grad():
        cocoop.model.meta_net.linear2.weight.zero_()
        cocoop.model.meta_net.linear2.bias.zero_()
    assert torch.equal(cocoop.model.prompt_learner.ctx, coop.model.prompt_learner.ctx)
    assert (cocoop.predict(IMAGES) - coop.predict(IMAGES)).abs().max() < 1e-4
    # with a non-zero meta-net, each image gets its own prompts
    torch.nn.init.normal_(cocoop.model.meta_net.linear2.bias)
    assert (cocoop.predict(IMAGES) - coop.predict(IMAGES)).abs().max() > 1e-3


def test_tip_adapter_alpha_zero_equals_zero_shot_and_cache_keys(cfg_factory, tiny_weights):
    """Built with 2 DataLoader workers: each pass's crops still come from its own stream."""
    tip = build(cfg_factory, tiny_weights, "TipAdapter",
                ["TRAINER.TIP.AUGMENT_EPOCH", "3", "TRAINER.TIP.SEARCH", "False", "DATALOADER.NUM_WORKERS", "2"])
    tip.train()
    zs = build(cfg_factory, tiny_weights, "ZeroShotCLIP", ["TRAINER.ZSCLIP.TEMPLATES", "ensemble7"])
    with torch.no_grad():
        feats = tip.model.encode(IMAGES)
        assert (tip.model.logits_from_features(feats, alpha=0.0, beta=1.0) - zs.predict(IMAGES)).abs().max() < 1e-4
        assert (tip.predict(IMAGES) - zs.predict(IMAGES)).abs().max() > 1e-3  # alpha=1: the cache contributes
    keys = tip.model.keys
    assert torch.allclose(keys.norm(dim=1), torch.ones(len(keys)), atol=1e-5)
    # reference: image i of pass p is transformed with the seed of (SEED, "tip-cache", p, i); average; normalise
    tf = build_transform(tip.cfg, True, ["random_resized_crop", "random_flip", "normalize"], (0.5, 1.0))
    passes = []
    for epoch in range(3):
        base = stream_seed(tip.cfg.SEED, ("tip-cache", epoch), "samples")
        crops = []
        for i, d in enumerate(tip.dataset.train_x):
            torch.manual_seed(stable_int(base, i) % 2**63)
            crops.append(tf(load_rgb(d.impath)))
        with torch.no_grad():
            passes.append(tip.model.visual(torch.stack(crops)))
    assert all((passes[0] - p).abs().max() > 1e-3 for p in passes[1:])  # every pass saw other crops
    ref = F.normalize(torch.stack(passes).mean(0), dim=-1)
    assert (keys - ref).abs().max() < 1e-5
    labels = torch.tensor([d.label for d in tip.dataset.train_x])
    assert torch.equal(tip.model.key_labels, labels)


def test_fresh_tip_adapter_f_equals_tip_adapter(cfg_factory, tiny_weights, tmp_path):
    opts = ["TRAINER.TIP.AUGMENT_EPOCH", "2", "TRAINER.TIP.BETA_STEPS", "10", "TRAINER.TIP.ALPHA_STEPS", "5"]
    tip = build(cfg_factory, tiny_weights, "TipAdapter", opts, output_dir=tmp_path / "a")
    tip.train()
    tipf = build(cfg_factory, tiny_weights, "TipAdapterF", [*opts, "OPTIM.MAX_EPOCH", "0"], output_dir=tmp_path / "b")
    tipf.train()
    assert torch.equal(tip.model.keys, tipf.model.keys)
    assert (tip.model.alpha, tip.model.beta) == (tipf.model.alpha, tipf.model.beta)
    assert torch.equal(tip.predict(IMAGES), tipf.predict(IMAGES))
    # alpha/beta come from the reference's grid: low + i * (high - low) / steps
    alphas = [0.1 + i * 2.9 / 5 for i in range(5)]
    betas = [0.1 + i * 6.9 / 10 for i in range(10)]
    assert any(abs(tip.model.alpha.item() - a) < 1e-6 for a in alphas + [1.17])  # or the initial value
    assert any(abs(tip.model.beta.item() - b) < 1e-6 for b in betas + [1.0])


def separable(n_per_class=30, dim=8, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * 4
    x = torch.cat([centres[i] + 0.3 * torch.randn(n_per_class, dim, generator=g) for i in range(k)])
    y = torch.arange(k).repeat_interleave(n_per_class)
    return x, y


def test_logreg_separable_and_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    from clip_convpass.models.probe import fit_logreg, logreg_objective

    x, y = separable()
    w, b = fit_logreg(x, y, 3, c=10.0)
    assert ((x @ w.t() + b).argmax(1) == y).all()
    x2, y2 = separable(seed=1)
    x2 = x2 + 2 * torch.randn(x2.shape, generator=torch.Generator().manual_seed(2))  # overlapping classes
    for c in (0.01, 1.0, 100.0):
        w, b = fit_logreg(x2, y2, 3, c=c)
        sk = LogisticRegression(C=c, max_iter=10000, tol=1e-10).fit(x2.double().numpy(), y2.numpy())
        ours = logreg_objective(w.double(), b.double(), x2.double(), y2, c).item()
        theirs = logreg_objective(torch.from_numpy(sk.coef_).double(), torch.from_numpy(sk.intercept_).double(),
                                 x2.double(), y2, c).item()
        assert ours <= theirs * (1 + 1e-4) + 1e-6, (c, ours, theirs)
        assert abs(ours - theirs) <= 1e-3 * max(1.0, theirs), (c, ours, theirs)


def test_linear_probe_selects_c_on_val_and_reaches_train_accuracy(cfg_factory, tiny_weights, tmp_path):
    lp = build(cfg_factory, tiny_weights, "LinearProbeCLIP", ["DATASET.NUM_SHOTS", "8"], output_dir=tmp_path / "lp")
    lp.train()
    assert lp.chosen_c is not None
    x, y = lp.extract_features(lp.model.encode, lp.dataset.train_x, build_transform(lp.cfg, False))
    assert ((x @ lp.model.weight.t() + lp.model.bias).argmax(1) == y).float().mean() > 0.5
    # eval-only on a 200-class set from the saved probe
    res = run(cfg_factory("ImageNetA", CFG["LinearProbeCLIP"], output_dir=tmp_path / "lp_eval",
                          opts=["MODEL.PRETRAINED", tiny_weights, "DATASET.NUM_SHOTS", "8"]),
              eval_only=True, model_dir=str(tmp_path / "lp"))[0]
    assert res["n_classes"] == 4 and res["dataset"] == "ImageNetA"
    ref = lp.test(build_dataset(lp.cfg, "ImageNetA"))
    assert res["metrics"] == ref["metrics"]


@pytest.mark.parametrize("key,own", [
    ("CoOp", lambda n: n == "prompt_learner.ctx"),
    ("CoCoOp", lambda n: n == "prompt_learner.ctx" or n.startswith("meta_net.")),
    ("TipAdapterF", lambda n: n == "keys"),
])
def test_only_own_parameters_train_and_eval_only_on_200_classes(cfg_factory, tiny_weights, tmp_path, key, own):
    opts = ["OPTIM.MAX_EPOCH", "1", "OPTIM.LR", "0.01", "TRAINER.TIP.AUGMENT_EPOCH", "1",
            "TRAINER.TIP.BETA_STEPS", "5", "TRAINER.TIP.ALPHA_STEPS", "5", "DATALOADER.TRAIN_X.BATCH_SIZE", "4"]
    trainer = build(cfg_factory, tiny_weights, key, opts, output_dir=tmp_path / "run")
    if key == "CoCoOp":  # the tiny model's meta-net has 2 hidden units: kept active, both layers get gradients
        with torch.no_grad():
            trainer.model.meta_net.linear1.bias.fill_(1.0)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(own(n) for n in trainable)
    if key == "TipAdapterF":
        trainer.before_train()  # build the cache first, so that training moves keys away from it
        before["keys"] = trainer.model.keys.detach().clone()
        trainer.start_epoch = 0
    trainer.train()
    for n, p in trainer.model.named_parameters():
        if own(n):
            assert not torch.equal(p, before[n]), f"{n} did not train"
        else:
            assert torch.equal(p, before[n]), f"{n} changed"
    expected = trainer.predict(IMAGES)
    for ds in ("ImageNetA", "ImageNetR"):
        cfg = cfg_factory(ds, CFG[key], output_dir=tmp_path / f"eval_{ds}",
                          opts=["MODEL.PRETRAINED", tiny_weights, "DATASET.NUM_SHOTS", "2", "DATASET.VAL_SHOTS", "2"])
        fresh = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)
        fresh.load_from_model_dir(tmp_path / "run")
        assert torch.allclose(fresh.predict(IMAGES), expected, atol=1e-5)
        rec = fresh.test()
        assert rec["n_classes"] == fresh.dataset.num_classes < 6
