"""Mixed precision that is a gain (issue 17): fused attention in every frozen tower, precision per device,
CoCoOp's column subsets, worker count from the machine."""
import pytest
import torch

from clip_convpass.engine import precision
from clip_convpass.models.clip_loader import load_clip_from_cfg
from clip_convpass.registry import TRAINER_REGISTRY, method_rows

IMAGES = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(11))


def towers(cfg_factory, tiny_weights, fused: bool, prec: str = "fp32"):
    cfg = cfg_factory(opts=["MODEL.PRETRAINED", tiny_weights, "MODEL.FUSED_ATTENTION", str(fused), "PREC", prec])
    return load_clip_from_cfg(cfg), cfg


@pytest.mark.parametrize("grad", [False, True])
def test_fused_frozen_towers_match_open_clips_own_attention(cfg_factory, tiny_weights, grad):
    from clip_convpass.models.blocks import AdaptedBlock
    from clip_convpass.models.text_encoder import TextEncoder

    fused, _ = towers(cfg_factory, tiny_weights, True)
    plain, _ = towers(cfg_factory, tiny_weights, False)
    assert all(isinstance(b, AdaptedBlock) and b.fast_attention for b in fused.model.visual.transformer.resblocks)
    assert all(isinstance(b, AdaptedBlock) for b in fused.model.transformer.resblocks)  # the text tower too
    tokens = fused.tokenizer(["a photo of a tench.", "a photo of a great white shark."])
    with torch.set_grad_enabled(grad):
        for a, b in ((fused.model.visual(IMAGES), plain.model.visual(IMAGES)),
                     (TextEncoder(fused.model)(tokens), TextEncoder(plain.model)(tokens))):
            assert (a - b).abs().max() < 1e-5  # fp32: the same math


def test_fused_towers_under_bf16_autocast_stay_close_to_fp32(cfg_factory, tiny_weights):
    fused, _ = towers(cfg_factory, tiny_weights, True)
    with torch.no_grad():
        ref = fused.model.visual(IMAGES)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = fused.model.visual(IMAGES).float()
    # bf16 keeps 8 bits of mantissa: the stated tolerance is 3% of the feature scale
    assert (low - ref).abs().max() <= 0.03 * ref.abs().max()
    cos = torch.nn.functional.cosine_similarity(low, ref, dim=-1)
    assert cos.min() > 0.999


def test_precision_per_device(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve("auto", torch.device("cpu")) == "fp32"
    assert precision.resolve("auto", torch.device("cuda")) == "amp"
    assert precision.resolve("bf16", torch.device("cpu")) == "bf16"
    assert precision.grad_scaler("auto", torch.device("cuda")).is_enabled() is torch.cuda.is_available()


@pytest.mark.parametrize("row", [r for r in method_rows(lambda r: r.benchmark == "coop")
                                  if r.trainer != "PETLCLIP" or r.name == "PETL lora"],
                         ids=lambda r: r.name)
def test_every_method_under_bf16_matches_fp32_within_tolerance(row, cfg_factory, tiny_weights, tmp_path):
    """Same weights and fitted state; logits in bf16 autocast within 5% of their scale of the fp32 ones."""
    opts = ["TRAINER.NAME", row.trainer, *row.opts, "MODEL.PRETRAINED", tiny_weights, "DATASET.NUM_SHOTS", "2",
            "DATASET.VAL_SHOTS", "2", "TRAINER.TIP.AUGMENT_EPOCH", "1", "OPTIM.MAX_EPOCH", "0"]
    fp32 = TRAINER_REGISTRY.get(row.trainer)(cfg_factory(config_file="configs/" + row.config, output_dir=tmp_path / "a",
                                                         opts=[*opts, "PREC", "fp32"]))
    bf16 = TRAINER_REGISTRY.get(row.trainer)(cfg_factory(config_file="configs/" + row.config, output_dir=tmp_path / "b",
                                                         opts=[*opts, "PREC", "bf16"]))
    if fp32.fit():  # training-free state (cache, probe): fitted once, shared, so only precision differs
        bf16.load_extra_state({k: v.clone() for k, v in fp32.extra_state().items()})
    bf16.model.load_state_dict(fp32.model.state_dict())
    a, b = fp32.predict(IMAGES), bf16.predict(IMAGES)
    assert bf16.prec == "bf16" and fp32.prec == "fp32"
    # bf16 keeps 8 bits of mantissa: through both towers the logits drift by up to a few % of their largest value,
    # depending on the weights (0.4-1.6% for most rows, 3.5% for CoOp's 16 random contexts at seed 1)
    assert (a - b).abs().max() <= 0.05 * a.abs().max() + 1e-3


def test_cocoop_scores_only_the_evaluated_classes_identically(cfg_factory, tiny_weights):
    cfg = cfg_factory("ImageNetR", config_file="configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1.yaml",
                      opts=["MODEL.PRETRAINED", tiny_weights, "TRAINER.COCOOP.PROMPTS_PER_CHUNK", "2"])
    trainer = TRAINER_REGISTRY.get("CoCoOp")(cfg)
    with torch.no_grad():
        torch.nn.init.normal_(trainer.model.meta_net.linear2.bias)  # image-dependent prompts
    columns = torch.tensor(trainer.dataset.label_columns)
    assert len(columns) < len(trainer.classnames)  # the synthetic -R holds 3 of the 6 universe classes
    subset = trainer.predict(IMAGES, columns)
    full = trainer.predict(IMAGES)
    assert subset.shape == (4, len(columns)) and (subset - full[:, columns]).abs().max() < 1e-5
    assert torch.equal(subset.argmax(1), full[:, columns].argmax(1))


def test_num_workers_default_follows_the_machine(cfg_factory, monkeypatch):
    import os

    from clip_convpass.config import get_cfg_default
    from clip_convpass.data.loader import num_workers

    assert get_cfg_default().DATALOADER.NUM_WORKERS == -1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)))
    assert num_workers(cfg_factory(opts=["DATALOADER.NUM_WORKERS", "-1"])) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert num_workers(cfg_factory(opts=["DATALOADER.NUM_WORKERS", "-1"])) == 8
    assert num_workers(cfg_factory(opts=["DATALOADER.NUM_WORKERS", "3"])) == 3
