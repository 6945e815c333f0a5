"""The PETL family on CLIP's image encoder, parametrised over every registered adapter preset."""
import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from clip_convpass.adapters.base import inject, presets
from clip_convpass.config import ConfigError
from clip_convpass.engine.runner import run
from clip_convpass.models.blocks import AdaptedBlock
from clip_convpass.models.clip_loader import load_clip
from clip_convpass.models.heads import CLIPClassifier, build_head
from clip_convpass.registry import TRAINER_REGISTRY

PRESETS = sorted(presets())
IMAGES = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
PETL = "configs/trainers/PETLCLIP/adaptformer.yaml"


@pytest.fixture(scope="module")
def vit_b16_counts():
    from clip_convpass.cli.params import adapter_param_counts

    return adapter_param_counts("ViT-B-16-quickgelu")


@pytest.mark.parametrize("preset", PRESETS)
def test_parameter_count_at_vit_b16_is_what_the_adapter_declares(preset, vit_b16_counts):
    kind = presets()[preset][0]
    assert preset in kind.PARAMS_AT_VIT_B16, f"{kind.__name__}.PARAMS_AT_VIT_B16 lacks {preset!r}"
    assert vit_b16_counts[preset] == kind.PARAMS_AT_VIT_B16[preset]


def test_bitfit_trains_every_bias_of_vit_b16(vit_b16_counts):
    import open_clip

    visual = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).visual
    biases = sum(m.bias.numel() for m in visual.modules() if isinstance(getattr(m, "bias", None), torch.nn.Parameter))
    biases += sum(m.in_proj_bias.numel() for m in visual.modules() if isinstance(m, torch.nn.MultiheadAttention))
    assert vit_b16_counts["bitfit"] == biases


def test_params_command_prints_json():
    out = subprocess.run([sys.executable, "-m", "clip_convpass.cli.params", "--json", "--backbone", "tiny-ViT-Q"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and set(json.loads(out.stdout)) == set(PRESETS)


@pytest.fixture(scope="module")
def tiny_clip(tiny_weights):
    return load_clip("tiny-ViT-Q", tiny_weights)


def classifier(tiny_clip, preset, **overrides):
    head = build_head(tiny_clip, ["tench", "goldfish", "great_white_shark"], "single")
    visual = copy.deepcopy(tiny_clip.model.visual)
    injection = inject(visual, preset, overrides)
    model = CLIPClassifier(visual, head).eval()
    return model, injection


@pytest.mark.parametrize("preset", PRESETS)
def test_a_fresh_adapter_model_gives_zero_shot_logits(tiny_clip, preset):
    zs, _ = classifier(tiny_clip, "bitfit")  # adds nothing: the zero-shot model behind a wrapper
    plain = CLIPClassifier(tiny_clip.model.visual, zs.head).eval()
    kind, options = presets()[preset]
    if not kind.identity_at_init(options):  # VPT's prompts, NOAH's Adapter: only with the declared overrides
        assert kind.IDENTITY_OVERRIDES and kind.identity_at_init({**options, **kind.IDENTITY_OVERRIDES})
        model, _ = classifier(tiny_clip, preset)
        with torch.no_grad():
            assert (model.eval()(IMAGES) - plain(IMAGES)).abs().max() > 1e-4  # the flag tells the truth
    overrides = {} if kind.identity_at_init(options) else kind.IDENTITY_OVERRIDES
    model, injection = classifier(tiny_clip, preset, **overrides)
    for m in injection.modules:
        m.eval()
    with torch.no_grad():
        assert (model(IMAGES) - plain(IMAGES)).abs().max() < 1e-5
        with torch.enable_grad():  # the fused training path too
            assert (model(IMAGES) - plain(IMAGES)).abs().max() < 1e-5


@pytest.mark.parametrize("preset", ["vpt_shallow", "vpt_deep"])
def test_vpt_prompts_change_attention_but_not_the_token_grid(tiny_clip, preset):
    model, injection = classifier(tiny_clip, preset)
    plain, _ = classifier(tiny_clip, "bitfit")
    visual = model.visual
    tokens = visual._embeds(IMAGES)
    out = visual.transformer(tokens)
    assert out.shape == tokens.shape  # prompts are removed before pooling: [cls] + patches only
    with torch.no_grad():
        assert (model(IMAGES) - plain(IMAGES)).abs().max() > 1e-4  # prompts take part in attention
    with pytest.raises(ConfigError, match="already has adapters"):
        inject(visual, "convpass")  # one adapter per model: a second one is refused, not silently stacked


@pytest.mark.parametrize("preset", PRESETS)
def test_only_adapter_and_head_train_and_the_backbone_stays_bit_identical(cfg_factory, tiny_weights, preset):
    cfg = cfg_factory(config_file=PETL, opts=["TRAINER.PETL.ADAPTER", preset, "MODEL.PRETRAINED", tiny_weights,
                                              "OPTIM.LR", "0.01", "DATASET.NUM_SHOTS", "2"])
    trainer = TRAINER_REGISTRY.get("PETLCLIP")(cfg)
    trainable = {n for n, _ in trainer.trainable_named_parameters()}
    adapter_ids = {id(p) for p in trainer.injection.parameters}
    for n, p in trainer.model.named_parameters():
        assert p.requires_grad == (id(p) in adapter_ids or n.startswith("head.")), n
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if n not in trainable}
    trainer.set_model_mode(True)
    batch = {"img": IMAGES, "label": torch.tensor([0, 1, 2])}
    trainer.forward_backward(batch)
    trainer.forward_backward(batch)  # the second step moves what zero-initialised B/up let through
    for n, p in trainer.model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
            assert p.grad is None, n
    assert all(p.grad is not None for p in trainer.injection.parameters)


@pytest.mark.parametrize("preset", PRESETS)
def test_checkpoint_holds_only_adapter_and_head_and_resume_equals_straight_training(cfg_factory, tiny_weights,
                                                                                     tmp_path, preset):
    from clip_convpass.engine.checkpoint import latest_checkpoint, load_checkpoint

    def cfg(out, epochs):
        return cfg_factory(config_file=PETL, output_dir=out,
                           opts=["TRAINER.PETL.ADAPTER", preset, "MODEL.PRETRAINED", tiny_weights, "OPTIM.LR", "0.01",
                                 "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", str(epochs),
                                 "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "TRAIN.KEEP_CHECKPOINTS", "2",
                                 "TRAIN.CHECKPOINT_MIN_SECONDS", "0"])

    import shutil

    straight = run(cfg(tmp_path / "a", 2))[0]
    # the same run stopped after epoch 1: its directory as it was then, resumed by a new run
    shutil.copytree(tmp_path / "a", tmp_path / "b", ignore=shutil.ignore_patterns("eval", "model-epoch2.pt"))
    resumed = run(cfg(tmp_path / "b", 2))[0]
    assert "Resuming from" in (tmp_path / "b" / "log.txt").read_text()
    assert straight["metrics"] == resumed["metrics"]
    sa = load_checkpoint(latest_checkpoint(tmp_path / "a"))["state_dict"]
    sb = load_checkpoint(latest_checkpoint(tmp_path / "b"))["state_dict"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    trainer = TRAINER_REGISTRY.get("PETLCLIP")(cfg(tmp_path / "c", 2))
    expected = {n for n, _ in trainer.trainable_named_parameters()}
    assert set(sa) == expected and any(k.startswith("head.") for k in sa)
    trainer.load_from_model_dir(tmp_path / "a")
    again = TRAINER_REGISTRY.get("PETLCLIP")(cfg(tmp_path / "d", 2))
    again.load_from_model_dir(tmp_path / "a")
    assert torch.equal(trainer.predict(IMAGES), again.predict(IMAGES))


def test_lora_is_merged_for_evaluation_and_agrees_with_the_unmerged_path(tiny_clip):
    model, injection = classifier(tiny_clip, "lora")
    with torch.no_grad():
        for m in injection.modules:
            torch.nn.init.normal_(m.b_q, std=0.05)
            torch.nn.init.normal_(m.b_v, std=0.05)
    for m in injection.modules:
        m.train(True)
    with torch.no_grad():
        unmerged = model(IMAGES)
    for m in injection.modules:
        m.train(False)
    assert all(m.merged for m in injection.modules)
    blocks = [b for b in model.visual.transformer.resblocks if isinstance(b, AdaptedBlock)]
    plain, _ = classifier(tiny_clip, "bitfit")
    with torch.no_grad():
        merged = model(IMAGES)  # MHA's own kernel on W + s B A: no extra work at inference
        assert (merged - unmerged).abs().max() < 1e-4
        assert (merged - plain(IMAGES)).abs().max() > 1e-3  # the low-rank update does change the model
    for m in injection.modules:
        m.train(True)  # unmerging restores the stored frozen weights exactly
    for b in blocks:
        assert torch.equal(b.block.attn.in_proj_weight, b.lora.base_weight)


def test_bad_adapter_settings_fail_before_work():
    from clip_convpass.config import setup_cfg

    for opts, key in ((["TRAINER.PETL.ADAPTER", "prefix_tuning"], "ADAPTER"), (["TRAINER.PETL.LORA_RANK", "-1"], "LORA_RANK"),
                      (["TRAINER.PETL.VPT_LENGTH", "-2"], "VPT_LENGTH"), (["TRAINER.PETL.HIDDEN", "-1"], "HIDDEN"),
                      (["TRAINER.PETL.ADAPTER", "lora", "TRAINER.PETL.LORA_RANK", "0.5"], "LORA_RANK"),
                      (["TRAINER.PETL.ADAPTER", "vpt_deep", "TRAINER.PETL.VPT_WINDOW_PAIRING", "window"],
                       "VPT_WINDOW_PAIRING must be one of image, reference")):
        with pytest.raises(ConfigError, match=key):
            setup_cfg(None, PETL, opts)


@pytest.mark.parametrize("preset", sorted(presets()))
def test_every_adapter_option_is_a_petl_key_and_foreign_ones_are_refused(preset):
    """PETLCLIP's keys come from the adapters' OPTIONS: each of the preset's options can be set, and a key
    that only other adapters have is refused with one line naming this adapter's options."""
    from clip_convpass.config import setup_cfg
    from clip_convpass.trainers.petl_clip import PETLCLIP, option_keys

    kind, options = presets()[preset]
    for option, value in options.items():
        cfg = setup_cfg(None, PETL, ["TRAINER.PETL.ADAPTER", preset, f"TRAINER.PETL.{kind.config_key(option)}", repr(value)])
        assert PETLCLIP.overrides(cfg.TRAINER.PETL) == {option: value}
    foreign = sorted(k for k, kinds in option_keys().items() if kind.NAME not in kinds)
    for key in foreign:
        with pytest.raises(ConfigError, match=f"TRAINER.PETL.{key} is not an option of adapter '{preset}'"):
            setup_cfg(None, PETL, ["TRAINER.PETL.ADAPTER", preset, f"TRAINER.PETL.{key}", "1"])


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_for_every_adapter(synth, tmp_path):
    """One torchrun launch trains every adapter preset; the same script in one process is the reference.
    Random crops and flips stay on: augmentation is seeded per sample, so the processes' halves of a batch
    are the same crops as in one process (one batch of all 12 shots: only the gradient sum is split). SGD,
    not Adam: Adam turns the rounding noise of an exactly-zero gradient (BitFit's key bias) into +-lr."""
    script = tmp_path / "train_all.py"
    script.write_text(f"""
import sys
from clip_convpass.adapters.base import presets
from clip_convpass.config import setup_cfg
from clip_convpass.engine import run
out = sys.argv[1]
for preset, (kind, _) in sorted(presets().items()):
    no_dropout = ["TRAINER.PETL." + kind.config_key("dropout"), "0.0"] if "dropout" in kind.OPTIONS else []
    cfg = setup_cfg("datasets/imagenet.yaml", "{REPO / PETL}", [
        "TRAINER.PETL.ADAPTER", preset, "DATASET.ROOT", "{synth['root']}", "DATASET.CLASS_LIST",
        "{synth['class_list']}", "MODEL.BACKBONE", "tiny-ViT-Q", "MODEL.PRETRAINED", "none", "INPUT.SIZE", "(32,32)",
        "PREC", "fp32",
        "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "2", "DATASET.VAL_SHOTS", "0",
        "DATASET.SPLIT_DIR", "{tmp_path / 'splits'}", "OPTIM.MAX_EPOCH", "1", "OPTIM.NAME", "sgd", "OPTIM.LR", "0.1",
        "DATALOADER.TRAIN_X.BATCH_SIZE", "12", "DEVICE", "cpu", "OUTPUT_DIR", out + "/" + preset, *no_dropout])
    run(cfg)
""")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one")], capture_output=True, text=True,
                         timeout=900, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=900, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    from clip_convpass.engine.checkpoint import latest_checkpoint, load_checkpoint

    for preset in PRESETS:
        a = load_checkpoint(latest_checkpoint(tmp_path / "one" / preset))["state_dict"]
        b = load_checkpoint(latest_checkpoint(tmp_path / "two" / preset))["state_dict"]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-6), (preset, k)
