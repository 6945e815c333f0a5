"""Protocol fidelity (issue 11): randomness policy, prompts, report grouping, validation, reference settings."""
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from clip_convpass.config import ConfigError, config_hash, flat_items, get_cfg_default, setup_cfg
from clip_convpass.data import build_dataset, build_transform
from clip_convpass.engine.runner import run
from clip_convpass.registry import TRAINER_REGISTRY, find_row
from clip_convpass.reporting.records import aggregate
from clip_convpass.reporting.table2 import build_table, render

CONVPASS = "configs/trainers/ConvpassCLIP/vit_b16.yaml"
TIP = "configs/trainers/TipAdapter/vit_b16.yaml"
TIPF = "configs/trainers/TipAdapterF/vit_b16.yaml"


# ---- one randomness policy: bit-identical for any NUM_WORKERS --------------------------------------
def run_with_workers(cfg_factory, tmp_path, config, workers, extra=()):
    out = tmp_path / f"w{workers}"
    cfg = cfg_factory(config_file=config, output_dir=out,
                      opts=["DATASET.NUM_SHOTS", "2", "DATASET.VAL_SHOTS", "2", "DATALOADER.NUM_WORKERS", str(workers),
                            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATASET.SPLIT_DIR", str(tmp_path / "splits"), *extra])
    rec = run(cfg)[0]
    trainer = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)
    trainer.load_from_model_dir(out)
    state = {**{n: p.detach().clone() for n, p in trainer.trainable_named_parameters()}, **trainer.extra_state()}
    return rec, state


@pytest.mark.slow
@pytest.mark.parametrize("config,extra", [
    (CONVPASS, ["OPTIM.MAX_EPOCH", "2", "OPTIM.LR", "0.01"]),  # augmentation + dropout + shuffling
    (TIP, ["TRAINER.TIP.AUGMENT_EPOCH", "3"]),  # augmented cache passes
    (TIPF, ["TRAINER.TIP.AUGMENT_EPOCH", "2", "OPTIM.MAX_EPOCH", "2"]),
], ids=["ConvpassCLIP", "TipAdapter", "TipAdapterF"])
def test_same_run_with_0_and_2_workers_is_bit_identical(cfg_factory, tmp_path, config, extra):
    rec0, state0 = run_with_workers(cfg_factory, tmp_path, config, 0, extra)
    rec2, state2 = run_with_workers(cfg_factory, tmp_path, config, 2, extra)
    assert rec0["metrics"] == rec2["metrics"]
    assert state0.keys() == state2.keys() and state0
    for k in state0:
        assert torch.equal(state0[k], state2[k]), k


def test_training_loader_batches_do_not_depend_on_workers_and_epochs_differ(cfg_factory):
    from clip_convpass.data.loader import build_loader, set_stream

    items = build_dataset(cfg_factory(opts=["DATASET.NUM_SHOTS", "2"])).train_x
    batches = {}
    for workers in (0, 1, 2):
        cfg = cfg_factory(opts=["DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", str(workers),
                                "DATALOADER.TRAIN_X.BATCH_SIZE", "5"])
        for epoch in (0, 1):
            loader = build_loader(cfg, items, True, torch.device("cpu"), stream=("train", epoch))
            batches[workers, epoch] = [(b["img"], b["label"]) for b in loader]
        # one loader whose workers persist across epochs, moved to each epoch's stream (as training does)
        loader = build_loader(cfg, items, True, torch.device("cpu"), stream=("train", 0), persistent=True)
        for epoch in (0, 1):
            set_stream(loader, ("train", epoch))
            batches[f"persistent{workers}", epoch] = [(b["img"], b["label"]) for b in loader]
    for key in (1, 2, "persistent0", "persistent1", "persistent2"):
        for epoch in (0, 1):
            assert len(batches[0, epoch]) == len(batches[key, epoch]) > 1
            for (a, la), (b, lb) in zip(batches[0, epoch], batches[key, epoch]):
                assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(batches[0, 0][0][0], batches[0, 1][0][0])  # each epoch draws anew
    with pytest.raises(ValueError, match="random stream"):
        build_loader(cfg, items, True, torch.device("cpu"))


def test_training_order_is_the_order_of_earlier_versions():
    """Runs made before the sampler drew the order (a shuffled DataLoader with the stream's generator) keep it."""
    from torch.utils.data import DataLoader

    from clip_convpass.data.loader import StreamSampler, stream_seed

    for n, stream in ((7, ("train", 0)), (40, ("train", 5)), (33, ("tip-cache", 2))):
        generator = torch.Generator()
        generator.manual_seed(stream_seed(3, stream, "order"))
        earlier = [int(i) for b in DataLoader(list(range(n)), batch_size=4, shuffle=True, generator=generator) for i in b]
        sampler = StreamSampler(n, 3, stream, shuffle=True)
        assert [i for _, i in sampler] == earlier
        assert {seed for seed, _ in sampler} == {stream_seed(3, stream, "samples")}
    assert [i for _, i in StreamSampler(5, 3, ("x", 0), shuffle=False)] == list(range(5))


def test_data_loading_leaves_the_process_rng_alone(cfg_factory):
    """Dropout draws from the process RNG: data loading in the main process must not consume it."""
    from clip_convpass.data.loader import build_loader

    cfg = cfg_factory(opts=["DATASET.NUM_SHOTS", "2"])
    items = build_dataset(cfg).train_x
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for _ in build_loader(cfg, items, True, torch.device("cpu"), stream=("train", 0)):
        pass
    assert torch.equal(torch.rand(3), expected)


# ---- class names: one function turns a name into prompt text ---------------------------------------
def test_underscored_class_names_are_prompted_with_spaces(cfg_factory, synth, tmp_path, tiny_weights):
    from clip_convpass.models.clip_loader import load_clip
    from clip_convpass.models.prompts import build_text_classifier, prompt_classname
    from clip_convpass.models.text_encoder import TextEncoder

    assert prompt_classname("great_white_shark") == "great white shark"
    bundle = load_clip("tiny-ViT-Q", tiny_weights)
    enc = TextEncoder(bundle.model)
    a = build_text_classifier(enc, bundle.tokenizer, ["great_white_shark", "tiger_shark"], "ensemble7")
    b = build_text_classifier(enc, bundle.tokenizer, ["great white shark", "tiger shark"], "ensemble7")
    assert torch.equal(a, b)
    # a universe whose names hold "_" (CoOp's classnames.txt style): zero-shot, Tip-Adapter and CoOp agree
    root = tmp_path / "data"
    shutil.copytree(synth["root"], root)
    names = root / "imagenet" / "classnames.txt"
    lines = [ln.split(" ", 1) for ln in names.read_text().splitlines()]
    names.write_text("".join(f"{w} {n.replace(' ', '_')}\n" for w, n in lines))
    spaced = tmp_path / "spaced"
    shutil.copytree(synth["root"], spaced)
    images = torch.randn(2, 3, 32, 32)
    for config in ("configs/trainers/ZeroShotCLIP/vit_b16.yaml", "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml"):
        preds = []
        for r in (root, spaced):
            cfg = cfg_factory(config_file=config, opts=["DATASET.ROOT", str(r), "MODEL.PRETRAINED", tiny_weights])
            trainer = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)
            preds.append(trainer.predict(images))
        assert any("_" in n for n in trainer.dataset.universe.names.values()) is False  # spaced copy
        assert torch.equal(preds[0], preds[1]), config


# ---- the report never pools different experiments --------------------------------------------------
def record(name, dataset, seed, top1, **kw):
    rec = {"dataset": dataset, "split": "test", "metrics": {"top1": top1}, "trainer": "CoOp", "name": name,
           "seed": seed, "train_dataset": "ImageNet", "shots": 16, "backbone": "ViT-B-16-quickgelu",
           "pretrained": "openai", "experiment": "aaaa", "timestamp": "2026-01-01T00:00:00"}
    rec.update(kw)
    return rec


def test_report_groups_by_experiment_and_says_so():
    recs = [record("CoOp", "ImageNet", 1, 70.0), record("CoOp", "ImageNet", 2, 72.0),
            record("CoOp", "ImageNet", 1, 50.0, shots=1), record("CoOp", "ImageNet", 1, 60.0, backbone="ViT-B-32"),
            record("CoOp", "ImageNet", 3, 10.0, experiment="bbbb")]
    notes = []
    rows = aggregate(recs, notes=notes)
    assert rows["CoOp [shots=16, backbone=ViT-B-16-quickgelu, config aaaa]"]["ImageNet"][:1] == (71.0,)
    assert len(rows) == 4 and all(cell["ImageNet"][2] <= 2 for cell in rows.values())
    assert len(notes) == 1 and "4 different experiments" in notes[0] and "never averaged" in notes[0]
    text = render(build_table(rows), notes=notes)
    assert "Note: CoOp: 4 different experiments" in text
    assert aggregate(recs[:2]) == {"CoOp": {"ImageNet": (71.0, pytest.approx(math.sqrt(2)), 2)}}


def test_config_hash_ignores_every_location_key():
    a = setup_cfg(None, None, [])
    b = setup_cfg(None, None, ["TEST.FEATURE_CACHE_DIR", "/x", "DATASET.SPLIT_DIR", "/y", "MODEL.CACHE_DIR", "/z",
                               "OUTPUT_DIR", "/o", "DATASET.ROOT", "/r", "DATALOADER.NUM_WORKERS", "3"])
    assert config_hash(a) == config_hash(b) != config_hash(setup_cfg(None, None, ["DATASET.CLASS_LIST", "/c"]))


def test_results_record_experiment_seed_shots_and_provenance(cfg_factory, tmp_path):
    out = tmp_path / "run"
    cfg = cfg_factory(config_file=CONVPASS, output_dir=out,
                      opts=["OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "2", "SEED", "1", "PREC", "auto"])
    rec = run(cfg)[0]
    from clip_convpass.engine import precision

    # the precision used is recorded beside the one asked for (auto: bf16 on CPUs that have it, else fp32)
    assert rec["prec"] == precision.resolve("auto", torch.device("cpu")) and rec["prec_config"] == "auto"
    assert rec["class_names"]["source"].endswith("classnames.txt") and len(rec["class_names"]["sha256"]) == 16
    assert rec["prompts"]["templates"] == "dataset" and rec["prompts"]["template_text"] == "a photo of a {}."
    assert rec["prompts"]["templates_sha256"]
    # evaluating the seed-1 model with --seed 2 still reports the model's seed and experiment
    ev = cfg_factory("ImageNetA", config_file=CONVPASS, output_dir=out,
                     opts=["OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "8", "SEED", "2", "PREC", "auto"])
    rec_a = run(ev, eval_only=True, model_dir=str(out))[0]
    assert (rec_a["seed"], rec_a["shots"], rec_a["experiment"]) == (1, 2, rec["experiment"])
    other = run(cfg_factory(config_file=CONVPASS, output_dir=tmp_path / "seed2",
                            opts=["OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "2", "SEED", "2", "PREC", "auto"]))[0]
    assert other["experiment"] == rec["experiment"] and other["config_hash"] != rec["config_hash"]


def test_prec_auto_is_amp_on_cuda_and_fp32_on_cpu_without_bf16(monkeypatch):
    from clip_convpass.engine import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert get_cfg_default().PREC == "auto"
    assert precision.resolve("auto", torch.device("cpu")) == "fp32"
    assert precision.resolve("auto", torch.device("cuda")) == "amp"
    assert precision.grad_scaler("auto", torch.device("cpu")).is_enabled() is False


# ---- every validated key rejects a bad value before any work ----------------------------------------
BAD_VALUES = {
    "PREC": "fp8", "OPTIM.NAME": "lion", "OPTIM.LR": "-0.1", "OPTIM.WEIGHT_DECAY": "-1", "OPTIM.MAX_EPOCH": "-1",
    "OPTIM.LR_SCHEDULER": "poly", "OPTIM.SCHEDULER_UNIT": "batch", "OPTIM.WARMUP_TYPE": "cubic",
    "OPTIM.WARMUP_EPOCH": "-1", "OPTIM.MOMENTUM": "float('nan')", "DATASET.NUM_SHOTS": "0", "DATASET.VAL_SHOTS": "-2",
    "DATASET.SUBSAMPLE": "half", "DATALOADER.TRAIN_X.BATCH_SIZE": "0", "DATALOADER.TEST.BATCH_SIZE": "0",
    "DATALOADER.NUM_WORKERS": "-2", "TRAIN.CHECKPOINT_FREQ": "0", "TRAIN.KEEP_CHECKPOINTS": "0",
    "TEST.SPLIT": "train", "TEST.FEATURE_CACHE_DTYPE": "int8", "INPUT.SIZE": "(224,)", "INPUT.INTERPOLATION": "area",
    "INPUT.TRANSFORMS": "['rotate']", "INPUT.CROP_SCALE": "(0.9, 0.1)", "INPUT.PIXEL_STD": "[0.1, 0.0, 0.1]",
    "TRAINER.NAME": "NoSuchTrainer",
    "TRAINER.ZSCLIP.TEMPLATES": "ensemble9",
    "TRAINER.CONVPASS.HIDDEN": "0", "TRAINER.CONVPASS.KERNEL_SIZE": "5", "TRAINER.CONVPASS.DROPOUT": "1.0",
    "TRAINER.CONVPASS.CONV_INIT": "orthogonal", "TRAINER.CONVPASS.POSITIONS": "qkv", "TRAINER.CONVPASS.MODE": "serial",
    "TRAINER.CONVPASS.TEMPLATES": "ensemble9", "TRAINER.CONVPASS.HEAD_INIT": "ones",
    "TRAINER.COOP.CLASS_TOKEN_POSITION": "left", "TRAINER.COOP.INIT_STD": "0.0",
    "TRAINER.TIP.TEMPLATES": "ensemble9", "TRAINER.TIP.AUGMENT_EPOCH": "0", "TRAINER.TIP.CROP_SCALE": "(0.5, 2.0)",
    "TRAINER.TIP.ALPHA_RANGE": "(3.0, 1.0)", "TRAINER.TIP.BETA_RANGE": "(-1.0, 1.0)", "TRAINER.TIP.ALPHA_STEPS": "0",
    "TRAINER.TIP.BETA_STEPS": "0", "TRAINER.TIP.INIT_ALPHA": "-1.0", "TRAINER.TIP.INIT_BETA": "-1.0",
    "TRAINER.COCOOP.PROMPTS_PER_CHUNK": "0",
    "TRAINER.LINEAR_PROBE.C_GRID": "(1.0, -1.0)", "TRAINER.LINEAR_PROBE.REFINE_POINTS": "0",
    "TRAINER.LINEAR_PROBE.SEARCH": "grid", "TRAINER.LINEAR_PROBE.BISECTION_STEPS": "0",
    "TRAINER.LINEAR_PROBE.MAX_ITER": "0",
    "TRAINER.PETL.ADAPTER": "prefix_tuning", "TRAINER.PETL.HIDDEN": "-1", "TRAINER.PETL.DROPOUT": "1.5",
    "TRAINER.PETL.LORA_RANK": "-1", "TRAINER.PETL.VPT_LENGTH": "-2", "TRAINER.PETL.TEMPLATES": "ensemble9",
    "TRAINER.PETL.HEAD_INIT": "ones",
    "TRAINER.CONVPASS.HEAD_PARAM": "spherical", "TRAINER.CONVPASS.HEAD_TEMPERATURE": "annealed",
    "TRAINER.CONVPASS.HEAD_LR_MULT": "0.0", "TRAINER.PETL.HEAD_PARAM": "spherical",
    "TRAINER.PETL.HEAD_TEMPERATURE": "annealed", "TRAINER.PETL.HEAD_LR_MULT": "-1.0",
    "TRAINER.CONVPASS.ADAPTER_LR_MULT": "0.0", "TRAINER.PETL.ADAPTER_LR_MULT": "-1.0",
    "OPTIM.MAX_EPOCH_BY_SHOTS": "'1=50'", "TRAINER.TIP.SEARCH_SPLIT": "test",
    "DATASET.FEWSHOT_SAMPLER": "random",
    "TRAIN.CHECKPOINT_MIN_SECONDS": "-1.0", "OPTIM.ITERS_PER_SHOT": "-1", "OPTIM.MIN_LR": "-1.0",
    "MODEL.DROP_PATH_RATE": "1.0", "TEST.MONITOR_EVERY": "-1",
    "TRAINER.CONVPASS.ATTN_KERNEL_SIZE": "5", "TRAINER.CONVPASS.MLP_KERNEL_SIZE": "2", "OPTIM.SCHEDULE_LAG": "-1",
    "MODEL.PRE_LOGITS": "remove", "TRAIN.MIXUP": "-0.5", "TRAIN.CUTMIX": "-1.0", "TRAIN.LABEL_SMOOTHING": "1.0",
    "INPUT.RESIZE_SIZE": "-1", "INPUT.RANDOM_ERASING": "1.5", "INPUT.COLOR_JITTER": "-0.1",
    "TRAINER.PETL.VPT_WINDOW_PAIRING": "window",
}
# Keys whose pairs are checked together (a bad value needs its partner changed too).
BAD_PAIRS = {("TRAINER.COOP.N_CTX", "TRAINER.COOP.CTX_INIT"): ("0", "''"),
             ("TRAINER.COCOOP.N_CTX", "TRAINER.COCOOP.CTX_INIT"): ("0", "''")}
# Every method key is either validated above or takes any value of its type.
FREE_METHOD_KEYS = {"TRAINER.CONVPASS.SCALE", "TRAINER.CONVPASS.SHARE", "TRAINER.CONVPASS.FAST_ATTENTION",
                    "TRAINER.CONVPASS.HEAD_TRAINABLE", "TRAINER.COOP.CSC", "TRAINER.COCOOP.INIT_STD",
                    "TRAINER.TIP.SEARCH", "TRAINER.LINEAR_PROBE.NORMALIZE", "TRAINER.PETL.SCALE",
                    "TRAINER.PETL.FAST_ATTENTION", "TRAINER.PETL.HEAD_TRAINABLE", "TRAINER.CONVPASS.BACKBONE_TRAINABLE",
                    "TRAINER.PETL.BACKBONE_TRAINABLE"}


def declared(attr: str) -> dict:
    """What every registered method declares about its own keys (TrainerBase.INVALID_EXAMPLES, INVALID_PAIRS)."""
    out = {}
    for cls in TRAINER_REGISTRY.classes():
        for key, value in getattr(cls, attr).items():
            full = tuple(f"TRAINER.{cls.CONFIG_NODE}.{k}" for k in key) if isinstance(key, tuple) else \
                f"TRAINER.{cls.CONFIG_NODE}.{key}"
            out[full] = value
    return out


BAD_VALUES.update(declared("INVALID_EXAMPLES"))
BAD_PAIRS.update(declared("INVALID_PAIRS"))
FREE_METHOD_KEYS |= {f"TRAINER.{cls.CONFIG_NODE}.{k}" for cls in TRAINER_REGISTRY.classes() for k in cls.FREE_KEYS}


@pytest.mark.parametrize("key", sorted(BAD_VALUES))
def test_every_validated_key_rejects_a_bad_value(key):
    with pytest.raises(ConfigError, match=key.split(".")[-1]):
        setup_cfg(None, None, [key, BAD_VALUES[key]])


@pytest.mark.parametrize("keys", sorted(BAD_PAIRS))
def test_paired_keys_reject_a_bad_combination(keys):
    with pytest.raises(ConfigError, match=keys[0].replace(".", r"\.")):
        setup_cfg(None, None, [x for kv in zip(keys, BAD_PAIRS[keys]) for x in kv])


def test_every_method_key_is_covered_by_the_bad_value_sweep():
    method_keys = {k for k in flat_items(get_cfg_default()) if k.startswith("TRAINER.") and k != "TRAINER.NAME"}
    from clip_convpass.trainers.petl_clip import option_keys

    # PETLCLIP's option keys come from the adapter kinds, which validate them (tests/adapters/test_adapters.py)
    adapter_options = {f"TRAINER.PETL.{k}" for k in option_keys()}
    covered = set(BAD_VALUES) | {k for pair in BAD_PAIRS for k in pair} | FREE_METHOD_KEYS | adapter_options
    assert method_keys <= covered, sorted(method_keys - covered)


# ---- reference settings ------------------------------------------------------------------------------
def test_table2_rows_run_the_reference_settings():
    coop = setup_cfg(None, find_row("CoOp").config)
    assert (coop.TRAINER.COOP.N_CTX, coop.TRAINER.COOP.CTX_INIT) == (4, "a photo of a")  # CoOp's ctxv1
    m16 = find_row("CoOp (M=16)")
    assert m16.paper is None and setup_cfg(None, m16.config).TRAINER.COOP.N_CTX == 16
    tipf = setup_cfg(None, find_row("TipAdapterF").config)
    assert (tipf.TRAINER.TIP.INIT_ALPHA, tipf.TRAINER.TIP.INIT_BETA) == (1.17, 1.0)
    assert tipf.OPTIM.SCHEDULER_UNIT == "iteration" and tipf.OPTIM.EPS == 1e-4
    lp = setup_cfg(None, find_row("LinearProbeCLIP").config)
    assert lp.TRAINER.LINEAR_PROBE.NORMALIZE is False and lp.TRAINER.LINEAR_PROBE.SEARCH == "lpclip"
    assert lp.DATASET.VAL_SHOTS == -1
    assert find_row("ConvpassCLIP").sweep


def test_val_shots_auto_follows_lpclip_schedule(cfg_factory):
    schedule = {1: 1, 2: 2, 4: 4, 8: 4, 16: 4}
    for k, v in schedule.items():
        ds = build_dataset(cfg_factory(opts=["DATASET.NUM_SHOTS", str(k), "DATASET.VAL_SHOTS", "-1"]))
        assert ds.val_shots == v


def test_per_iteration_cosine_matches_the_reference_scheduler():
    from clip_convpass.engine.optim import build_lr_scheduler

    cfg = setup_cfg(None, None, ["OPTIM.NAME", "adamw", "OPTIM.LR", "0.001", "OPTIM.MAX_EPOCH", "3",
                                 "OPTIM.SCHEDULER_UNIT", "iteration", "OPTIM.WARMUP_EPOCH", "0"])
    steps = 5
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    ours = torch.optim.AdamW([p1], lr=0.001)
    ref = torch.optim.AdamW([p2], lr=0.001)
    sched = build_lr_scheduler(ours, cfg.OPTIM, lambda: steps)
    ref_sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref, 3 * steps)
    for _ in range(3 * steps):
        assert ours.param_groups[0]["lr"] == pytest.approx(ref.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        ours.step()
        ref.step()
        sched.step()
        ref_sched.step()


def test_lpclip_search_follows_coops_procedure():
    """The reference's own loop, written out on a toy accuracy function, chooses the same C."""
    import numpy as np

    from clip_convpass.models.probe import lpclip_search

    def acc(c):  # a peaked, tie-rich validation accuracy
        return round(max(0.0, 1 - abs(math.log10(c) - 0.7) / 4), 1)

    lp = setup_cfg(None, None, []).TRAINER.LINEAR_PROBE
    search_list = [1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6]
    peak = search_list[int(np.argmax([acc(c) for c in search_list]))]
    c_left, c_right = 1e-1 * peak, 1e1 * peak
    for _ in range(8):
        if acc(c_left) < acc(c_right):
            c_final = c_right
            c_left, c_right = 0.5 * (np.log10(c_right) + np.log10(c_left)), np.log10(c_right)
        else:
            c_final = c_left
            c_right, c_left = 0.5 * (np.log10(c_right) + np.log10(c_left)), np.log10(c_left)
        c_left, c_right = np.power(10, c_left), np.power(10, c_right)
    assert lpclip_search(acc, lp) == pytest.approx(c_final, rel=1e-12)


def test_tip_search_and_scatter_cache_match_the_dense_reference():
    from clip_convpass.trainers.tip_adapter import search_alpha_beta_grid, search_grid, tip_logits

    g = torch.Generator().manual_seed(0)
    n_cls, shots, dim = 10, 4, 16
    keys = F.normalize(torch.randn(n_cls * shots, dim, generator=g), dim=-1)
    key_labels = torch.arange(n_cls).repeat_interleave(shots)
    text = 100 * F.normalize(torch.randn(n_cls, dim, generator=g), dim=-1)
    feats = F.normalize(torch.randn(60, dim, generator=g), dim=-1)
    labels = torch.randint(0, n_cls, (60,), generator=g)
    values = F.one_hot(key_labels, n_cls).float()

    def dense(alpha, beta):  # the reference's formula with one-hot values
        return 100.0 * feats @ (text / 100).t() + alpha * ((-1) * (beta - beta * (feats @ keys.t()))).exp() @ values

    assert (tip_logits(feats, text, keys, key_labels, 1.3, 5.0) - dense(1.3, 5.0)).abs().max() < 1e-4
    betas = [i * (7 - 0.1) / 200 + 0.1 for i in range(200)]
    alphas = [i * (3 - 0.1) / 20 + 0.1 for i in range(20)]
    assert search_grid(0.1, 7.0, 200) == pytest.approx(betas) and search_grid(0.1, 3.0, 20) == pytest.approx(alphas)
    best_acc, best_beta, best_alpha = 0, 0, 0
    for beta in betas:
        for alpha in alphas:
            acc = (dense(alpha, beta).argmax(1) == labels).float().mean().item()
            if acc > best_acc:
                best_acc, best_beta, best_alpha = acc, beta, alpha
    acc, alpha, beta = search_alpha_beta_grid(feats @ text.t(), feats @ keys.t(), key_labels, labels,
                                              alphas, betas, (-1.0, 1.17, 1.0))
    assert (acc, alpha, beta) == (best_acc, best_alpha, best_beta)


def test_paper_preprocessing_override():
    cfg = setup_cfg(None, CONVPASS, override_files=["overrides/paper_preprocessing.yaml"])
    from PIL import Image

    img = Image.new("RGB", (300, 200), (120, 60, 30))
    square = build_transform(cfg, False)(img)
    default = build_transform(setup_cfg(None, CONVPASS), False)(img)
    assert square.shape == default.shape == (3, 224, 224)
    expected_r = (120 / 255 - 0.485) / 0.229
    assert square[0, 0, 0].item() == pytest.approx(expected_r, abs=1e-3)
    assert not torch.allclose(square, default)


# ---- the Table 2 grid chooses Convpass's s and conv init on the validation shots ---------------------
@pytest.mark.slow
def test_grid_runs_the_rows_sweep_first_and_records_the_choice(synth, tiny_weights, tmp_path):
    from dataclasses import replace

    from clip_convpass.experiments.grid import run_grid
    from clip_convpass.reporting.records import collect

    row = replace(find_row("ConvpassCLIP"), sweep=("TRAINER.CONVPASS.SCALE=0.01,10",
                                                   "TRAINER.CONVPASS.CONV_INIT=identity,xavier"))
    opts = ["MODEL.BACKBONE", "tiny-ViT-Q", "MODEL.PRETRAINED", tiny_weights, "INPUT.SIZE", "(32,32)", "PREC", "fp32",
            "DATALOADER.NUM_WORKERS", "0", "DATASET.CLASS_LIST", synth["class_list"], "DATASET.NUM_SHOTS", "2",
            "DATASET.VAL_SHOTS", "2", "DATASET.SPLIT_DIR", str(tmp_path / "splits"), "OPTIM.MAX_EPOCH", "1",
            "OPTIM.LR", "0.01", "DEVICE", "cpu"]
    (cell,) = run_grid([row], [1], synth["root"], tmp_path / "grid", opts, domains=["ImageNet", "ImageNetA"])
    (sweep_file,) = (tmp_path / "grid" / "sweeps").glob("ImageNet_*shots/ConvpassCLIP/sweep.json")
    sweep = json.loads(sweep_file.read_text())
    assert len(sweep["points"]) == 4 and sweep["best"]["val_top1"] == max(p["val_top1"] for p in sweep["points"])
    rec = json.loads((cell / "eval" / "ImageNetA" / "results.json").read_text())
    assert rec["selected"] == sweep["best"]["point"]
    cfg_text = (cell / "config.yaml").read_text()
    assert f"SCALE: {float(sweep['best']['point']['TRAINER.CONVPASS.SCALE'])}" in cfg_text
    notes = []
    aggregate(collect([tmp_path / "grid" / "ImageNet"]), notes=notes)
    assert any("chosen on the validation shots" in n for n in notes)
    # a given sweep.json is used as it is, without running the sweep again
    given = tmp_path / "given.json"
    given.write_text(json.dumps({"best": {"point": {"TRAINER.CONVPASS.SCALE": "0.01",
                                                    "TRAINER.CONVPASS.CONV_INIT": "xavier"}}}))
    (cell2,) = run_grid([row], [1], synth["root"], tmp_path / "grid2", opts, domains=["ImageNet"],
                        sweep_files={"ConvpassCLIP": given})
    assert json.loads((cell2 / "eval" / "ImageNet" / "results.json").read_text())["selected"]["TRAINER.CONVPASS.SCALE"] == "0.01"
    assert not (tmp_path / "grid2" / "sweeps").exists()


# ---- ImageNet's validation folder, sorted from the official ground truth ------------------------------
def flat_val(tmp_path, n_per_class=2):
    from clip_convpass.datasets.imagenet import imagenet_wnids

    wnids = imagenet_wnids()[:3]
    val = tmp_path / "ILSVRC2012_img_val"
    val.mkdir()
    truth = {}
    for i in range(len(wnids) * n_per_class):
        stem = f"ILSVRC2012_val_{i + 1:08d}"
        (val / f"{stem}.JPEG").write_bytes(f"image {i}".encode())
        truth[stem] = wnids[i % len(wnids)]
    return val, truth, wnids


@pytest.mark.parametrize("mode", ["symlink", "move", "copy"])
def test_val_sorting_from_solution_csv_is_idempotent(tmp_path, mode):
    from clip_convpass.datasets.imagenet_val_prep import main

    val, truth, wnids = flat_val(tmp_path)
    csv_path = tmp_path / "LOC_val_solution.csv"
    csv_path.write_text("ImageId,PredictionString\n" + "".join(f"{s},{w} 1 2 3 4 {w} 5 6 7 8\n" for s, w in truth.items()))
    out = tmp_path / "imagenet" / "images" / "val"
    args = ["--val-dir", str(val), "--solution", str(csv_path), "--out", str(out), "--mode", mode]
    assert main(args) == 0
    for stem, wnid in truth.items():
        assert (out / wnid / f"{stem}.JPEG").read_bytes() == f"image {int(stem[-8:]) - 1}".encode()
    assert main(args) == 0  # again: nothing to do, still verified
    assert sorted(p.name for p in out.iterdir()) == sorted(wnids)


def test_val_sorting_from_devkit_and_missing_images(tmp_path, capsys):
    scipy_io = pytest.importorskip("scipy.io")
    import numpy as np

    from clip_convpass.datasets.imagenet_val_prep import main

    val, truth, wnids = flat_val(tmp_path)
    devkit = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    ids = {w: 500 + i for i, w in enumerate(wnids)}  # devkit ids are not sorted-wnid positions
    synsets = np.array([(ids[w], w) for w in wnids], dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
    scipy_io.savemat(str(devkit / "meta.mat"), {"synsets": synsets})
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{ids[truth[s]]}\n" for s in sorted(truth)))
    out = tmp_path / "val_sorted"
    assert main(["--val-dir", str(val), "--devkit", str(devkit.parent), "--out", str(out)]) == 0
    assert all((out / w / f"{s}.JPEG").exists() for s, w in truth.items())
    (val / "ILSVRC2012_val_00000001.JPEG").unlink()
    shutil.rmtree(out)
    assert main(["--val-dir", str(val), "--devkit", str(devkit.parent), "--out", str(out)]) == 2
    assert "ILSVRC2012_val_00000001" in capsys.readouterr().err
