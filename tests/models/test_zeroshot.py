import pytest
import torch
import torch.nn.functional as F

from clip_convpass.models.clip_loader import load_clip
from clip_convpass.models.prompts import TEMPLATE_SETS, build_text_classifier, get_templates
from clip_convpass.models.text_encoder import TextEncoder
from clip_convpass.registry import TRAINER_REGISTRY

CLASSNAMES = ["tench", "goldfish", "great white shark", "a much longer class name with many words in it"]


@pytest.fixture(scope="module")
def bundle():
    torch.manual_seed(0)
    return load_clip("tiny-ViT-Q", "none")


@pytest.fixture(scope="module")
def weights_file(bundle, tmp_path_factory):
    """The random tiny model saved as a local checkpoint, so trainer and reference share weights."""
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    torch.save(bundle.model.state_dict(), path)
    return str(path)


def test_template_sets():
    assert len(TEMPLATE_SETS["ensemble7"]) == 7 and len(TEMPLATE_SETS["ensemble80"]) == 80
    assert TEMPLATE_SETS["single"] == ["a photo of a {}."]
    assert all("{}" in t for t in TEMPLATE_SETS["ensemble80"])
    with pytest.raises(ValueError, match="placeholder"):
        get_templates(["no placeholder"])


def test_truncated_text_encoder_matches_77_tokens_and_open_clip(bundle):
    tokens = bundle.tokenizer([f"a photo of a {c}." for c in CLASSNAMES])
    enc = TextEncoder(bundle.model)
    full = TextEncoder(bundle.model, truncate=False)
    with torch.no_grad():
        ref = bundle.model.encode_text(tokens)
        a, b = enc(tokens), full(tokens)
    assert enc.seq_len_for(enc.eot_indices(tokens)) < 77
    assert (a - ref).abs().max() < 1e-5
    assert (b - ref).abs().max() < 1e-5


def test_ensemble_classifier_by_hand(bundle):
    enc = TextEncoder(bundle.model)
    templates = TEMPLATE_SETS["ensemble7"]
    got = build_text_classifier(enc, bundle.tokenizer, CLASSNAMES, templates)
    with torch.no_grad():
        per_t = [F.normalize(bundle.model.encode_text(bundle.tokenizer([t.format(c) for c in CLASSNAMES])), dim=-1)
                 for t in templates]
    ref = F.normalize(torch.stack(per_t).mean(0), dim=-1)
    assert (got - ref).abs().max() < 1e-5


def zs_trainer(cfg_factory, weights_file, dataset="ImageNet", templates="single"):
    cfg = cfg_factory(dataset, "configs/trainers/ZeroShotCLIP/vit_b16.yaml",
                      opts=["MODEL.BACKBONE", "tiny-ViT-Q", "MODEL.PRETRAINED", weights_file,
                            "TRAINER.ZSCLIP.TEMPLATES", templates])
    return TRAINER_REGISTRY.get("ZeroShotCLIP")(cfg)


def test_zero_shot_logits_by_hand(cfg_factory, bundle, weights_file):
    trainer = zs_trainer(cfg_factory, weights_file)
    reference = bundle
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        img = F.normalize(reference.model.encode_image(images), dim=-1)
        txt = F.normalize(reference.model.encode_text(reference.tokenizer(
            [f"a photo of a {c}." for c in trainer.classnames])), dim=-1)
        expected = 100 * img @ txt.T
        got = trainer.predict(images)
    assert got.shape == (3, 6)
    assert (got - expected).abs().max() < 1e-4


@pytest.mark.parametrize("name", ["ImageNetA", "ImageNetR"])
def test_column_restriction_equals_200_class_classifier(cfg_factory, bundle, weights_file, name):
    trainer = zs_trainer(cfg_factory, weights_file, name)
    ds = trainer.dataset
    images = torch.randn(4, 3, 32, 32)
    restricted = trainer.predict(images)[:, ds.label_columns]
    w = 100 * build_text_classifier(TextEncoder(bundle.model), bundle.tokenizer, ds.classnames, "single")
    with torch.no_grad():
        direct = F.normalize(bundle.model.encode_image(images), dim=-1) @ w.T
    assert restricted.shape == (4, ds.num_classes)
    assert (restricted - direct).abs().max() < 1e-4
    assert torch.equal(restricted.argmax(1), direct.argmax(1))


def test_eval_writes_results_json(cfg_factory, tmp_path):
    from clip_convpass.engine.runner import run
    from clip_convpass.utils.io import read_json

    cfg = cfg_factory("ImageNetA", "configs/trainers/ZeroShotCLIP/vit_b16.yaml",
                      opts=["MODEL.BACKBONE", "tiny-ViT-Q", "MODEL.PRETRAINED", "none"])
    results = run(cfg, eval_only=True)
    rec = read_json(tmp_path / "out" / "eval" / "ImageNetA" / "results.json")
    assert rec == results[0]
    for key in ("dataset", "split", "metrics", "n_images", "trainer", "backbone", "seed", "shots", "config_hash",
                "elapsed_s"):
        assert key in rec
    assert rec["n_images"] == 16 and rec["n_classes"] == 4
    assert set(rec["metrics"]) == {"top1", "top5", "macro_f1", "mean_per_class_acc"}
    assert (tmp_path / "out" / "log.txt").read_text().count("ImageNetA/test") >= 1


def test_shared_prefix_and_truncation_are_exact_with_gradients(bundle):
    from clip_convpass.models.prompt_learner import PromptLearner

    names = CLASSNAMES + ["x", "yet another name"]
    encoders = {"full77": TextEncoder(bundle.model, truncate=False),
                "truncated": TextEncoder(bundle.model, truncate=True, share_prefix=False),
                "shared_prefix": TextEncoder(bundle.model, truncate=True, share_prefix=True)}
    assert encoders["shared_prefix"].share_prefix and not encoders["full77"].share_prefix
    torch.manual_seed(0)
    feats, grads = {}, {}
    for key, enc in encoders.items():
        torch.manual_seed(0)
        pl = PromptLearner(enc, bundle.tokenizer, names, n_ctx=16)
        out = enc.forward_prompts(*pl.parts(pl.ctx), pl.eot())
        out.square().sum().backward()
        feats[key], grads[key] = out.detach(), pl.ctx.grad.clone()
        if key != "full77":
            assert pl.seq_len < 77
    for key in ("truncated", "shared_prefix"):
        assert (feats[key] - feats["full77"]).abs().max() < 1e-5, key
        assert torch.allclose(grads[key], grads["full77"], atol=1e-5, rtol=1e-4), key
