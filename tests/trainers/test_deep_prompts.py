"""Deep prompts (IVLP, MaPLe, PromptSRC) against transcriptions of the reference forwards
(muzairkhattak/multimodal-prompt-learning clip/model.py: ResidualAttentionBlock_IVLP / _MaPLe, VisionTransformer,
TextEncoder): 77-token text sequences, prompts appended after the patch tokens before ln_pre, the original
open_clip blocks. Ours truncates at the longest EOT, computes the shared prefix once, puts vision prompts after
[cls] and runs the fused attention path: the same numbers within float tolerance, forward and gradients."""
import pytest
import torch
import torch.nn.functional as F

from clip_convpass.models.text_encoder import TextEncoder, open_clip_block
from clip_convpass.registry import TRAINER_REGISTRY

DEEP = ("IVLP", "MaPLe", "PromptSRC")


def build(cfg_factory, name, tmp_path, *opts):
    cfg = cfg_factory(output_dir=tmp_path / name, opts=["TRAINER.NAME", name, "DATASET.NUM_SHOTS", "2", *opts])
    trainer = TRAINER_REGISTRY.get(name)(cfg)
    with torch.no_grad():  # trained-looking prompts and projections, not their initial values
        for _, p in trainer.trainable_named_parameters():
            p.add_(0.05 * torch.randn_like(p))
    return trainer


def reference_text_features(trainer):
    """IVLP / MaPLe TextEncoder.forward over the full 77 tokens, deep prompts replacing positions 1..n."""
    m = trainer.model
    text = m.text_encoder
    pl = m.prompt_learner
    tokenizer = trainer.clip_bundle.tokenizer
    c = trainer.cfg.TRAINER[trainer.CONFIG_NODE]
    names = [n.replace("_", " ") for n in trainer.classnames]
    tokens = tokenizer([f"{c.CTX_INIT} {n}." for n in names])
    x = text.token_embedding(tokens)
    n = pl.n_ctx
    x = torch.cat([x[:, :1], pl.ctx.unsqueeze(0).expand(len(names), -1, -1), x[:, 1 + n:]], dim=1)
    x = x + text.positional_embedding
    deep = m.deep_text
    for i, block in enumerate(text.transformer.resblocks):
        if 1 <= i <= deep.shape[0]:
            x = torch.cat([x[:, :1], deep[i - 1].unsqueeze(0).expand(x.shape[0], -1, -1), x[:, 1 + n:]], dim=1)
        x = open_clip_block(block)(x, attn_mask=text.attn_mask)
    x = text.ln_final(x)
    x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ text.text_projection
    return F.normalize(x, dim=-1)


def reference_image_features(trainer, images):
    """VisionTransformer(_MaPLe).forward: prompts appended after the patch tokens, then ln_pre; block i >= 1 of the
    prompted ones replaces the last n tokens with its own; pooled at [cls]."""
    visual = trainer.model.visual
    prompted = visual.transformer
    prompts = prompted.vpt
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding
    n = prompts.length
    x = torch.cat([x, prompts.layer(0, x.dtype).expand(x.shape[0], -1, -1)], dim=1)
    x = visual.ln_pre(x)
    for i, block in enumerate(prompted.resblocks):
        if 0 < i < prompts.num_layers:
            x = torch.cat([x[:, :-n], prompts.layer(i, x.dtype).expand(x.shape[0], -1, -1)], dim=1)
        x = open_clip_block(block)(x)
    return F.normalize(visual.ln_post(x[:, 0]) @ visual.proj, dim=-1)


@pytest.mark.parametrize("name", DEEP)
@pytest.mark.parametrize("truncate,share", [(True, True), (True, False), (False, False)])
def test_deep_prompts_equal_the_reference_forward_and_gradients(cfg_factory, tmp_path, name, truncate, share):
    trainer = build(cfg_factory, name, tmp_path, "MODEL.TEXT_TRUNCATE", str(truncate),
                    "MODEL.TEXT_SHARED_PREFIX", str(share))
    assert trainer.model.deep_text.shape[0] >= 1 and trainer.model.visual.transformer.vpt.num_layers >= 2
    images = torch.randn(3, 3, *trainer.cfg.INPUT.SIZE)
    params = [p for _, p in trainer.trainable_named_parameters()]
    trainer.set_model_mode(True)
    ours = (trainer.model.text_features(), trainer.model.encode_image(images))
    ref = (reference_text_features(trainer), reference_image_features(trainer, images))
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()
    weights = torch.randn(ours[0].shape[0], 3)  # a loss touching every class and image
    for out_ours, out_ref in ((ours, ref),):
        g_ours = torch.autograd.grad((out_ours[1] @ out_ours[0].t() * weights.t()).sum(), params, allow_unused=True)
        g_ref = torch.autograd.grad((out_ref[1] @ out_ref[0].t() * weights.t()).sum(), params, allow_unused=True)
        for p, a, b in zip(params, g_ours, g_ref):
            assert a is not None and b is not None
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (p.shape, (a - b).abs().max())


def test_the_init_phrase_keeps_its_unlearned_words(cfg_factory, tmp_path):
    """N_CTX 2 from "a photo of a": "a photo" trains, "of a" stays a fixed word before every class name."""
    trainer = build(cfg_factory, "MaPLe", tmp_path)
    pl, text = trainer.model.prompt_learner, trainer.model.text_encoder
    tokens = trainer.clip_bundle.tokenizer(["a photo of a"])
    words = text.token_embedding(tokens)[0]
    assert pl.n_ctx == 2
    assert torch.equal(pl.token_suffix[:, :2], words[3:5].unsqueeze(0).expand(len(trainer.classnames), -1, -1))
    fresh = TRAINER_REGISTRY.get("MaPLe")(trainer.cfg)
    assert torch.equal(fresh.model.prompt_learner.ctx, words[1:3])
    projections = fresh.model.visual.transformer.vpt.projections
    assert all(torch.equal(p.weight, projections[0].weight) for p in projections)  # clones of one Linear


def test_promptsrc_templates_are_the_references():
    """Transcribed (the reference needs its repository): its first three and last templates, 60 distinct."""
    from clip_convpass.models.prompts import TEMPLATE_SETS

    t = TEMPLATE_SETS["promptsrc60"]
    assert len(t) == len(set(t)) == 60 and t[:3] == ["a photo of a {}.", "a bad photo of a {}.", "a photo of many {}."]
    assert t[-1] == "itap of the {}." and set(t) <= set(TEMPLATE_SETS["ensemble80"])


def test_promptsrc_loss_equals_the_reference_transcription(cfg_factory, tmp_path, tiny_weights):
    """promptsrc.py's forward_backward: CE + KL(sum / B C) + 25 L1(text) + 10 L1(image), teachers from a separate
    frozen CLIP (60 templates averaged raw; the plain image tower), prompts through the 77-token forwards above."""
    from clip_convpass.models.clip_loader import load_clip_from_cfg
    from clip_convpass.models.prompts import TEMPLATE_SETS

    trainer = build(cfg_factory, "PromptSRC", tmp_path, "MODEL.PRETRAINED", tiny_weights, "PREC", "fp32")
    frozen = load_clip_from_cfg(trainer.cfg).model
    tokenizer = trainer.clip_bundle.tokenizer
    names = [n.replace("_", " ") for n in trainer.classnames]
    with torch.no_grad():
        plain = TextEncoder(frozen, truncate=False, share_prefix=False)  # all 77 positions
        raw = torch.stack([plain(tokenizer([t.format(n) for n in names]))
                           for t in TEMPLATE_SETS["promptsrc60"]], dim=1).mean(dim=1)
        fixed = F.normalize(raw, dim=-1)
    images, labels = torch.randn(4, 3, *trainer.cfg.INPUT.SIZE), torch.tensor([0, 1, 2, 1])
    scale = frozen.logit_scale.exp()
    trainer.set_model_mode(True)
    with torch.no_grad():
        text, feats = reference_text_features(trainer), reference_image_features(trainer, images)
        zs = F.normalize(frozen.visual(images), dim=-1)
        logits, zs_logits = scale * feats @ text.t(), scale * zs @ fixed.t()
        kl = F.kl_div(F.log_softmax(logits / 1, dim=1), F.log_softmax(zs_logits / 1, dim=1), reduction="sum",
                      log_target=True) * (1 * 1) / logits.numel()
        reference = (F.cross_entropy(logits, labels) + kl + F.l1_loss(text, fixed, reduction="mean") * 25
                     + F.l1_loss(feats, zs, reduction="mean") * 10)
    trainer.optimize = lambda loss: None  # the loss, not a step
    ours = trainer.forward_backward({"img": images, "label": labels})
    assert abs(ours["loss"] - reference.item()) <= 1e-5 * abs(reference.item()), (ours, reference)
    assert ours["kl"] > 0 and ours["l1_text"] > 0 and ours["l1_image"] > 0  # the prompts moved every feature


def test_gpa_is_the_weighted_average_of_each_epochs_prompts_and_resumes_exactly(cfg_factory, tmp_path, monkeypatch):
    import math
    import shutil

    from clip_convpass.engine.checkpoint import latest_checkpoint, load_checkpoint
    from clip_convpass.engine.runner import run
    from clip_convpass.trainers import promptsrc

    mean, std, epochs = 2.0, 1.0, 3
    gauss = [math.exp(-0.5 * ((e - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi)) for e in range(1, epochs + 1)]
    assert torch.allclose(promptsrc.gpa_weights(epochs, mean, std),  # the reference's get_gauss, normalised
                          torch.tensor(gauss, dtype=torch.float64) / sum(gauss))
    snapshots = []
    real = promptsrc.PromptSRC.after_epoch

    def snapshot_then_aggregate(self):
        snapshots.append({n: p.detach().clone() for n, p in self.trainable_named_parameters()})
        real(self)

    monkeypatch.setattr(promptsrc.PromptSRC, "after_epoch", snapshot_then_aggregate)

    def cfg(out):
        return cfg_factory(output_dir=out, opts=["TRAINER.NAME", "PromptSRC", "DATASET.NUM_SHOTS", "2",
                                                 "OPTIM.MAX_EPOCH", str(epochs), "OPTIM.LR", "0.05",
                                                 "TRAINER.PROMPTSRC.GPA_MEAN", str(mean),
                                                 "TRAINER.PROMPTSRC.GPA_STD", str(std), "TRAIN.KEEP_CHECKPOINTS", "3",
                                                 "TRAIN.CHECKPOINT_MIN_SECONDS", "0"])

    run(cfg(tmp_path / "a"))
    final = load_checkpoint(latest_checkpoint(tmp_path / "a"))["state_dict"]
    weights = promptsrc.gpa_weights(epochs, mean, std)
    assert len(snapshots) == epochs
    for name, value in final.items():
        direct = sum(float(w) * s[name].double() for w, s in zip(weights, snapshots)).float()
        assert torch.allclose(value, direct, atol=1e-7, rtol=1e-6), name
        assert not torch.equal(value, snapshots[-1][name])  # not simply the last epoch's
    # a run stopped after epoch 2 and resumed aggregates as the uninterrupted one
    shutil.copytree(tmp_path / "a", tmp_path / "b", ignore=shutil.ignore_patterns("eval", "model-epoch3.pt"))
    run(cfg(tmp_path / "b"))
    resumed = load_checkpoint(latest_checkpoint(tmp_path / "b"))["state_dict"]
    assert all(torch.equal(final[k], resumed[k]) for k in final)
    # a finished run holds the aggregate: extending it would train on from there, so it is refused in one line
    from clip_convpass.config import ConfigError

    longer = cfg(tmp_path / "a").clone()
    longer.defrost()
    longer.OPTIM.MAX_EPOCH = epochs + 1
    longer.freeze()
    with pytest.raises(ConfigError, match="Gaussian aggregate.*--force"):
        run(longer)
