"""CLIP-Adapter, TaskRes and KgCoOp: their exact starting points, and parity with transcriptions of the reference
forwards and losses (gaopengcuhk/CLIP-Adapter clip_adapter.py, geekyutao/TaskRes trainers/taskres.py,
htyao89/KgCoOp trainers/kgcoop.py) on identical tiny weights."""
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY

from clip_convpass.config import dataset_config_file, setup_cfg
from clip_convpass.data.synthetic import build_synthetic_tree
from clip_convpass.models.clip_loader import load_clip
from clip_convpass.models.prompts import prompt_classname
from clip_convpass.registry import TRAINER_REGISTRY

CFG = {"CLIPAdapter": "configs/trainers/CLIPAdapter/vit_b16.yaml", "TaskRes": "configs/trainers/TaskRes/vit_b16.yaml",
       "KgCoOp": "configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml", "CoOp": "configs/trainers/CoOp/vit_b16_ep50.yaml",
       "ZeroShotCLIP": "configs/trainers/ZeroShotCLIP/vit_b16.yaml"}
IMAGES = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def pets_root(tmp_path_factory):
    return build_synthetic_tree(tmp_path_factory.mktemp("pets"), num_classes=3, train_per_class=4, val_per_class=2,
                                split_val_per_class=2, source="OxfordPets")["root"]


@pytest.fixture
def build(cfg_factory, pets_root):
    """A trainer on the tiny CLIP: on the synthetic ImageNet tree, or on a synthetic Oxford-Pets tree."""
    def make(weights, name, opts=(), dataset="OxfordPets", out=None):
        opts = ["MODEL.PRETRAINED", weights, "DATASET.NUM_SHOTS", "2", "DATASET.VAL_SHOTS", "1", *opts]
        if dataset == "ImageNet":
            cfg = cfg_factory("ImageNet", CFG[name], output_dir=out, opts=opts)
        else:
            cfg = setup_cfg(dataset_config_file(dataset), CFG[name].removeprefix("configs/"),
                            ["DATASET.ROOT", pets_root, "OUTPUT_DIR", str(out), "DATASET.SPLIT_DIR",
                             str(out.parent / "splits"), "DEVICE", "cpu", *opts], override_files=[TINY])
        return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)

    return make


@pytest.fixture
def clip(tiny_weights):
    return load_clip("tiny-ViT-Q", tiny_weights)


def plain_text(bundle, prompts, normalize=True):
    with torch.no_grad():
        return bundle.model.encode_text(bundle.tokenizer(prompts), normalize=normalize)


# ---- CLIP-Adapter --------------------------------------------------------------------------------------------
def test_clip_adapter_at_ratio_zero_is_zero_shot_clip_and_the_reference_start_is_not(build, tiny_weights,
                                                                                      tmp_path):
    zs = build(tiny_weights, "ZeroShotCLIP", dataset="ImageNet", out=tmp_path / "zs")
    at_zero = build(tiny_weights, "CLIPAdapter", ["TRAINER.CLIP_ADAPTER.RATIO", "0"], "ImageNet",
                    tmp_path / "a")
    assert torch.equal(at_zero.predict(IMAGES), zs.predict(IMAGES))
    reference_start = build(tiny_weights, "CLIPAdapter", dataset="ImageNet", out=tmp_path / "b")
    assert not torch.allclose(reference_start.predict(IMAGES), zs.predict(IMAGES))


def test_clip_adapter_matches_the_reference_forward(build, tiny_weights, clip, tmp_path):
    trainer = build(tiny_weights, "CLIPAdapter", out=tmp_path / "a")
    m = trainer.model
    with torch.no_grad():
        feats = m.visual(IMAGES)
        x = m.adapter(feats.clone())
        ratio = 0.2
        image_features = ratio * x + (1 - ratio) * feats
        text_features = plain_text(clip, ["a photo of a {}, a type of pet.".format(c.replace("_", " "))
                                          for c in trainer.classnames], normalize=False)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits = clip.model.logit_scale.exp() * image_features @ text_features.t()
    assert (trainer.predict(IMAGES) - logits).abs().max() < 1e-4
    assert trainer.prompt_info["template_text"] == "a photo of a {}, a type of pet."
    assert {n for n, _ in trainer.trainable_named_parameters()} == {"adapter.0.weight", "adapter.2.weight"}


# ---- TaskRes -------------------------------------------------------------------------------------------------
def test_taskres_with_a_zero_residual_is_zero_shot_clip(build, tiny_weights, tmp_path):
    zs = build(tiny_weights, "ZeroShotCLIP", dataset="ImageNet", out=tmp_path / "zs")
    fresh = build(tiny_weights, "TaskRes", ["TRAINER.TASKRES.BASE", "clip", "TRAINER.TASKRES.TEMPLATES",
                                                         "dataset"], "ImageNet", tmp_path / "t")
    assert torch.equal(fresh.predict(IMAGES), zs.predict(IMAGES))


@pytest.mark.parametrize("dataset,n_templates", [("OxfordPets", 1), ("ImageNet", 8)])
def test_taskres_matches_the_reference_forward(build, tiny_weights, clip, tmp_path, dataset, n_templates):
    trainer = build(tiny_weights, "TaskRes", dataset=dataset, out=tmp_path / dataset)
    templates = ([] if dataset == "OxfordPets" else
                 ["itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
                  "a {} in a video game.", "art of the {}.", "a photo of the small {}."]) + \
        ["a photo of a {}, a type of pet." if dataset == "OxfordPets" else "a photo of a {}."]
    assert len(templates) == n_templates
    # the reference's base: raw embeddings of each template, averaged without normalising
    embeddings = [plain_text(clip, [t.format(prompt_classname(c)) for c in trainer.classnames], normalize=False)
                  for t in templates]
    base = torch.stack(embeddings).mean(0)
    assert (trainer.model.base - base).abs().max() < 1e-4
    with torch.no_grad():
        trainer.model.residual.normal_(std=0.5)
        text_features = base + 0.5 * trainer.model.residual  # t + alpha * x
        image_features = F.normalize(trainer.model.visual(IMAGES), dim=-1)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits = clip.model.logit_scale.exp() * image_features @ text_features.t()
    assert (trainer.predict(IMAGES) - logits).abs().max() < 1e-3


# ---- KgCoOp --------------------------------------------------------------------------------------------------
def plain_prompt_features(bundle, ctx, classnames):
    """The straightforward 77-token encoding of "[SOS] ctx class." (no truncation, no shared prefix)."""
    model = bundle.model
    tokens = bundle.tokenizer([f"a photo of a {prompt_classname(c)}." for c in classnames])
    x = model.token_embedding(tokens)
    n = ctx.shape[0]
    x = torch.cat([x[:, :1], ctx.unsqueeze(0).expand(len(classnames), -1, -1), x[:, 1 + n:]], dim=1)
    x = model.transformer(x + model.positional_embedding, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    return x[torch.arange(len(tokens)), tokens.argmax(-1)] @ model.text_projection


def test_kgcoop_loss_and_gradient_match_the_reference(build, tiny_weights, clip, tmp_path):
    trainer = build(tiny_weights, "KgCoOp", out=tmp_path / "k")
    labels = torch.tensor([0, 1, 2, 0])
    ctx = trainer.model.prompt_learner.ctx
    with torch.no_grad():
        ctx.add_(0.1 * torch.randn(ctx.shape, generator=torch.Generator().manual_seed(2)))
    # ours
    trainer.set_model_mode(True)
    logits, score = trainer.model(IMAGES)
    loss = F.cross_entropy(logits, labels) + 8.0 * score
    ours = torch.autograd.grad(loss, ctx)[0]
    # the reference's forward and loss, on a leaf copy of the same context
    ref_ctx = ctx.detach().clone().requires_grad_(True)
    for p in clip.model.parameters():
        p.requires_grad_(False)
    text_features_old = plain_text(clip, [f"a photo of a {prompt_classname(c)}, a type of pet."
                                          for c in trainer.classnames], normalize=False)
    image_features = clip.model.encode_image(IMAGES)
    text_features = plain_prompt_features(clip, ref_ctx, trainer.classnames)
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    ref_logits = clip.model.logit_scale.exp() * image_features @ text_features.t()
    cos = torch.nn.CosineSimilarity(dim=1, eps=1e-07)
    text_features_old = text_features_old / text_features_old.norm(dim=-1, keepdim=True)
    ref_score = 1.0 - torch.mean(cos(text_features, text_features_old))
    ref_loss = F.cross_entropy(ref_logits, labels) + 8.0 * ref_score
    ref_grad = torch.autograd.grad(ref_loss, ref_ctx)[0]
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6) and abs(score.item() - ref_score.item()) < 1e-6
    assert (ours - ref_grad).abs().max() <= 1e-5 * ref_grad.abs().max()  # float32 rounding, relative


def test_kgcoop_with_w_zero_takes_coops_training_step(build, tiny_weights, tmp_path):
    common = ["OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
              "OPTIM.LR", "0.5"]
    kg = build(tiny_weights, "KgCoOp", [*common, "TRAINER.KGCOOP.W", "0"], out=tmp_path / "kg")
    coop = build(tiny_weights, "CoOp", [*common, "TRAINER.COOP.N_CTX", "4", "TRAINER.COOP.CTX_INIT",
                                                     "a photo of a", "OPTIM.MAX_EPOCH", "1"], out=tmp_path / "coop")
    assert torch.equal(kg.model.prompt_learner.ctx, coop.model.prompt_learner.ctx)
    kg.train()
    coop.train()
    assert torch.equal(kg.model.prompt_learner.ctx, coop.model.prompt_learner.ctx)
    weighted = build(tiny_weights, "KgCoOp", common, out=tmp_path / "w8")
    weighted.train()  # W = 8 moves the context elsewhere: the term is in the step
    assert not torch.equal(weighted.model.prompt_learner.ctx, coop.model.prompt_learner.ctx)
