"""The head-initialisation and robustness study: head parameterisations, the head LR multiplier, degenerate
cells, LP-FT, WiSE-FT and the effective-robustness view."""
import json

import pytest
import torch
from conftest import TINY

from clip_convpass.config import ConfigError
from clip_convpass.engine.optim import lr_at_epoch
from clip_convpass.engine.runner import run
from clip_convpass.experiments.headinit import HEAD_SWEEPS, HEADS, INITS, MODELS, cell_opts, degenerate, head_init_rows
from clip_convpass.experiments.wiseft import interpolate_, wise_ft
from clip_convpass.models.probe import fit_probe
from clip_convpass.registry import TRAINER_REGISTRY
from clip_convpass.reporting.robustness import plot_points, render_points, robustness_points

CONVPASS_CFG = "configs/trainers/ConvpassCLIP/vit_b16.yaml"
COOP_CTXV1 = "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml"
IMAGES = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def convpass(cfg_factory, tiny_weights, opts=(), **kw):
    cfg = cfg_factory(config_file=CONVPASS_CFG, opts=["MODEL.PRETRAINED", tiny_weights, "DATASET.NUM_SHOTS", "4",
                                                       "DATALOADER.TRAIN_X.BATCH_SIZE", "8", *opts], **kw)
    return TRAINER_REGISTRY.get("ConvpassCLIP")(cfg)


@pytest.fixture
def zero_shot_logits(cfg_factory, tiny_weights):
    zs = TRAINER_REGISTRY.get("ZeroShotCLIP")(cfg_factory(opts=["MODEL.PRETRAINED", tiny_weights]))
    return zs.predict(IMAGES)


@pytest.mark.parametrize("param,temperature", [("folded", "fixed"), ("scaled", "fixed"), ("scaled", "learnable"),
                                               ("cosine", "fixed"), ("cosine", "learnable")])
def test_every_head_parameterisation_gives_zero_shot_logits_at_init(param, temperature, cfg_factory, tiny_weights,
                                                                    zero_shot_logits):
    t = convpass(cfg_factory, tiny_weights, ["TRAINER.CONVPASS.HEAD_PARAM", param,
                                             "TRAINER.CONVPASS.HEAD_TEMPERATURE", temperature])
    logits = t.predict(IMAGES)
    if param == "folded":
        assert torch.equal(logits, zero_shot_logits)  # the same weights, the same arithmetic
    else:  # T * (w f) instead of (T w) f: float rounding only
        torch.testing.assert_close(logits, zero_shot_logits, rtol=1e-6, atol=1e-4)
        assert t.model.head.weight.norm(dim=-1).sub(1).abs().max() < 1e-5  # unit rows, temperature apart
    names = {n for n, _ in t.trainable_named_parameters()}
    assert ("head.log_scale" in names) == (temperature == "learnable")


def test_a_learnable_temperature_trains_and_a_fixed_one_does_not(cfg_factory, tiny_weights, tmp_path):
    for temperature in ("learnable", "fixed"):
        t = convpass(cfg_factory, tiny_weights, ["TRAINER.CONVPASS.HEAD_PARAM", "scaled", "OPTIM.LR", "0.01",
                                                 "TRAINER.CONVPASS.HEAD_TEMPERATURE", temperature, "OPTIM.MAX_EPOCH", "1"],
                     output_dir=tmp_path / temperature)
        before = t.model.head.log_scale.detach().clone()
        t.train()
        assert torch.equal(t.model.head.log_scale, before) == (temperature == "fixed")


def test_head_lr_multiplier_scales_the_heads_learning_rate_through_the_schedule(cfg_factory, tiny_weights):
    t = convpass(cfg_factory, tiny_weights, ["TRAINER.CONVPASS.HEAD_LR_MULT", "100", "OPTIM.MAX_EPOCH", "3"])
    adapters, head = t.optim.param_groups
    assert {id(p) for p in head["params"]} == {id(p) for p in t.model.head.parameters()}
    assert not {id(p) for p in adapters["params"]} & {id(p) for p in t.model.head.parameters()}
    for epoch in range(3):
        expected = lr_at_epoch(epoch, t.cfg.OPTIM)
        assert adapters["lr"] == pytest.approx(expected) and head["lr"] == pytest.approx(100 * expected)
        t.optim.step()  # (no gradients: nothing moves) keeps the scheduler-after-optimizer order
        t.sched.step()
    # a head-only probe (no bypasses) has the head group alone
    probe = convpass(cfg_factory, tiny_weights, ["TRAINER.CONVPASS.POSITIONS", "none",
                                                 "TRAINER.CONVPASS.HEAD_LR_MULT", "10"])
    (group,) = probe.optim.param_groups
    assert group["lr"] == pytest.approx(10 * lr_at_epoch(0, probe.cfg.OPTIM))


def test_head_lr_multiplier_moves_the_head_proportionally(cfg_factory, tiny_weights):
    """One plain-SGD step: the head's update is the multiplier times the update at multiplier 1 (unit rows:
    on rows of norm 100 such small updates would vanish in float32 rounding, the folded head's problem)."""
    moves = {}
    for mult in ("1", "10"):
        t = convpass(cfg_factory, tiny_weights, ["TRAINER.CONVPASS.HEAD_LR_MULT", mult, "OPTIM.NAME", "sgd",
                                                 "OPTIM.MOMENTUM", "0.0", "OPTIM.WEIGHT_DECAY", "0.0",
                                                 "OPTIM.LR", "0.01", "TRAINER.CONVPASS.DROPOUT", "0.0",
                                                 "TRAINER.CONVPASS.HEAD_PARAM", "scaled"])
        before = t.model.head.weight.detach().clone()
        t.set_model_mode(True)
        t.forward_backward({"img": IMAGES, "label": torch.tensor([0, 1, 2, 3])})
        moves[mult] = t.model.head.weight.detach() - before
    torch.testing.assert_close(moves["10"], 10 * moves["1"], rtol=1e-3, atol=1e-3 * moves["10"].abs().max().item())
    assert moves["1"].abs().max() > 0


def test_degenerate_cells_are_left_out_and_refused(cfg_factory, tiny_weights):
    rows = {r.name for r in head_init_rows()}
    refused = 0
    for model, _ in MODELS:
        for head in HEADS:
            for label, init, templates in INITS:
                name = f"{model} head={label} {head}"
                opts = cell_opts(model, head, init, templates)
                if degenerate(model, head, init):
                    refused += 1
                    assert name not in rows
                    with pytest.raises(ConfigError, match="nothing (would )?train"):
                        cfg_factory(config_file=CONVPASS_CFG, opts=opts)
                else:
                    assert name in rows
                    cfg_factory(config_file=CONVPASS_CFG, opts=opts)  # a valid cell builds
    assert refused == len(INITS) + 1  # the frozen probe (every init) and the frozen zero head
    # each cell chooses its learning rate (frozen head) or head multiplier (trainable head) by a sweep
    for row in head_init_rows():
        assert row.sweep == HEAD_SWEEPS["trainable" if "trainable" in row.name else "frozen"]


def test_head_init_convpass_cells_use_the_table2_rows_chosen_values(synth, tmp_path):
    """The study's Convpass cells are Table 2's model: the s its sweep chose (here from a given sweep.json),
    never the config's default; the head-only probe (no bypasses) takes none."""
    from clip_convpass.experiments.headinit import table2_choice

    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"best": {"point": {"TRAINER.CONVPASS.SCALE": "10"}, "metric": 50.0}}))
    chosen = table2_choice(synth["root"], tmp_path / "out", sweep_json=sweep)
    assert chosen == {"TRAINER.CONVPASS.SCALE": "10"}
    for row in head_init_rows(convpass_values=chosen):
        opts = dict(zip(row.opts[0::2], row.opts[1::2]))
        assert opts.get("TRAINER.CONVPASS.SCALE") == ("10" if row.name.startswith("Convpass") else None), row.name


def test_lp_ft_starts_from_the_linear_probe(cfg_factory, tiny_weights, tmp_path):
    t = convpass(cfg_factory, tiny_weights, ["TRAINER.CONVPASS.HEAD_INIT", "lp", "OPTIM.MAX_EPOCH", "1",
                                             "TRAINER.LINEAR_PROBE.BISECTION_STEPS", "1"])
    text_head = t.model.head.weight.detach().clone()
    t.initialize()
    from clip_convpass.data import build_transform

    tf = build_transform(t.cfg, False)
    reference = fit_probe(t.extract_features(t.model.encode, t.dataset.train_x, tf),
                          t.extract_features(t.model.encode, t.dataset.val, tf), len(t.classnames),
                          t.cfg.TRAINER.LINEAR_PROBE)
    torch.testing.assert_close(t.model.head.weight, reference[0].float())
    torch.testing.assert_close(t.model.head.bias, reference[1].float())
    assert not torch.equal(t.model.head.weight, text_head) and t.annotations["lp_c"] == reference[2]
    # the step-0 evaluation is the probe, and a run records the C it chose
    cfg = cfg_factory(config_file=CONVPASS_CFG, output_dir=tmp_path / "run",
                      opts=["MODEL.PRETRAINED", tiny_weights, "TRAINER.CONVPASS.HEAD_INIT", "lp", "OPTIM.MAX_EPOCH", "1",
                            "TRAINER.LINEAR_PROBE.BISECTION_STEPS", "1", "DATASET.NUM_SHOTS", "4"])
    records = run(cfg, eval_step0=True)
    assert records[0]["stage"] == "step0" and "lp_c" in records[0] and records[-1]["lp_c"] == records[0]["lp_c"]


def trained_run(cfg_factory, tiny_weights, tmp_path, config, opts=()):
    out = tmp_path / "run"
    cfg = cfg_factory(config_file=config, output_dir=out,
                      opts=["MODEL.PRETRAINED", tiny_weights, "DATASET.NUM_SHOTS", "4", "OPTIM.MAX_EPOCH", "2",
                            "OPTIM.LR", "0.01", "DATALOADER.TRAIN_X.BATCH_SIZE", "8", *opts])
    run(cfg)
    return cfg, out


def test_wise_ft_alpha0_is_zero_shot_exactly_and_alpha1_the_trained_model(cfg_factory, tiny_weights, tmp_path,
                                                                         zero_shot_logits):
    cfg, out = trained_run(cfg_factory, tiny_weights, tmp_path, CONVPASS_CFG,
                           ["TRAINER.CONVPASS.DROPOUT", "0.0", "OPTIM.LR", "0.05"])
    trained = TRAINER_REGISTRY.get("ConvpassCLIP")(cfg)
    trained.load_from_model_dir(out)
    fresh = TRAINER_REGISTRY.get("ConvpassCLIP")(cfg)
    theta0 = {n: p.detach().clone() for n, p in fresh.trainable_named_parameters()}
    theta1 = {n: p.detach().clone() for n, p in trained.trainable_named_parameters()}
    interpolate_(fresh, theta0, theta1, 0.0)
    assert torch.equal(fresh.predict(IMAGES), zero_shot_logits)
    interpolate_(fresh, theta0, theta1, 1.0)
    assert torch.equal(fresh.predict(IMAGES), trained.predict(IMAGES))
    interpolate_(fresh, theta0, theta1, 0.5)
    for n, p in fresh.trainable_named_parameters():
        torch.testing.assert_close(p, (theta0[n] + theta1[n]) / 2)
    # the command: results per alpha and domain, alpha recorded; alpha 1 = the run's own final metrics
    records = wise_ft(out, [0.0, 0.5, 1.0], ["ImageNet", "ImageNetA"])
    assert [(r["stage"], r["dataset"]) for r in records] == [
        (s, d) for s in ("wise0", "wise0.5", "wise1") for d in ("ImageNet", "ImageNetA")]
    final = json.loads((out / "eval" / "ImageNet" / "results.json").read_text())
    assert records[4]["metrics"] == final["metrics"] and records[4]["wise_alpha"] == 1.0
    assert json.loads((out / "eval_wise0.5" / "ImageNetA" / "results.json").read_text())["wise_alpha"] == 0.5


def test_wise_ft_of_coop_starts_at_zero_shot_and_refuses_training_free_runs(cfg_factory, tiny_weights, tmp_path,
                                                                           zero_shot_logits):
    cfg, out = trained_run(cfg_factory, tiny_weights, tmp_path, COOP_CTXV1)
    records = wise_ft(out, [0.0], ["ImageNet"])
    zs = TRAINER_REGISTRY.get("ZeroShotCLIP")(cfg_factory(opts=["MODEL.PRETRAINED", tiny_weights],
                                                          output_dir=tmp_path / "zs"))
    assert records[0]["metrics"] == zs.test()["metrics"]  # "a photo of a" context = the single template
    fresh = TRAINER_REGISTRY.get("CoOp")(cfg)
    torch.testing.assert_close(fresh.predict(IMAGES), zero_shot_logits, rtol=1e-5, atol=1e-4)
    zs_out = tmp_path / "zsrun"
    run(cfg_factory(opts=["MODEL.PRETRAINED", tiny_weights], output_dir=zs_out))
    from clip_convpass.utils.errors import UserError

    with pytest.raises(UserError, match="no gradient-trained weights"):
        wise_ft(zs_out, [0.5])
    with pytest.raises(UserError, match=r"alphas must be in \[0, 1\]"):
        wise_ft(out, [1.5])


def point_record(name, dataset, top1, stage="final", seed=1):
    return {"name": name, "trainer": name, "dataset": dataset, "train_dataset": "ImageNet", "shots": 16, "seed": seed,
            "split": "test", "stage": stage, "experiment": "e", "backbone": "b", "pretrained": "p",
            "metrics": {"top1": top1}}


def test_effective_robustness_points_table_and_plot(tmp_path):
    domains = ["ImageNet", "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"]
    recs = [point_record("ZeroShotCLIP", d, v) for d, v in zip(domains, [66, 60, 46, 48, 74])]
    for stage, vals in [("final", [74, 66, 49, 49, 78]), ("wise0", [66, 60, 46, 48, 74]), ("wise0.5", [72, 66, 50, 52, 79])]:
        recs += [point_record("ConvpassCLIP", d, v, stage) for d, v in zip(domains, vals)]
    recs.append(point_record("CoOp", "ImageNet", 71))  # no shifted results: not a point
    points = robustness_points(recs)
    by = {(p["method"], p["alpha"]): p for p in points}
    assert set(by) == {("ZeroShotCLIP", None), ("ConvpassCLIP", None), ("ConvpassCLIP", 0.0), ("ConvpassCLIP", 0.5)}
    assert by[("ConvpassCLIP", 0.5)]["x"] == 72 and by[("ConvpassCLIP", 0.5)]["y"] == pytest.approx((66 + 50 + 52 + 79) / 4)
    assert by[("ConvpassCLIP", 0.0)]["y"] == by[("ZeroShotCLIP", None)]["y"]
    text = render_points(points)
    assert "zero-shot" in text and "final" in text
    plot_points(points, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000
    from clip_convpass.cli.report import main as report_main

    for i, r in enumerate(recs):
        (tmp_path / f"r{i}").mkdir()
        (tmp_path / f"r{i}" / "results.json").write_text(json.dumps(r))
    assert report_main([str(tmp_path), "--robustness", "--format", "json", "--output", str(tmp_path / "p.json")]) == 0
    assert len(json.loads((tmp_path / "p.json").read_text())["points"]) == 4


def test_wise_ft_of_every_fine_tuned_run_under_a_grid(synth, tiny_weights, tmp_path):
    from clip_convpass.experiments.grid import run_grid
    from clip_convpass.experiments.wiseft import wise_ft_all
    from clip_convpass.registry import find_row

    opts = ["MODEL.PRETRAINED", tiny_weights, "DATASET.CLASS_LIST", synth["class_list"], "DATASET.NUM_SHOTS", "2",
            "OPTIM.MAX_EPOCH", "1", "DATASET.SPLIT_DIR", str(tmp_path / "splits")]
    rows = [find_row("ZeroShotCLIP"), find_row("LinearProbeCLIP"), find_row("ConvpassCLIP")]
    run_grid(rows, [1], synth["root"], tmp_path / "grid", opts, override_configs=[str(TINY)], sweeps=False,
             domains=["ImageNet", "ImageNetA"])
    done = wise_ft_all(tmp_path / "grid", [0.0, 1.0], ["ImageNet", "ImageNetA"])
    assert [d.parts[-3] for d in done] == ["ConvpassCLIP"]  # the probe is fitted, not fine-tuned: left out
    stamp = (done[0] / "eval_wise0" / "ImageNetA" / "results.json").stat().st_mtime_ns
    assert wise_ft_all(tmp_path / "grid", [0.0, 1.0], ["ImageNet", "ImageNetA"]) == done
    assert (done[0] / "eval_wise0" / "ImageNetA" / "results.json").stat().st_mtime_ns == stamp  # resumable


TIPF_CFG = "configs/trainers/TipAdapterF/vit_b16.yaml"
PETL_CFG = "configs/trainers/PETLCLIP/lora.yaml"


def test_wise_ft_of_tip_adapter_f_starts_from_its_cache_initialised_model(cfg_factory, tiny_weights, tmp_path):
    """alpha = 0 is the model Tip-Adapter-F fine-tunes (keys = the cache, INIT_ALPHA / INIT_BETA) evaluated before
    fine-tuning; alpha = 1 the fine-tuned run; keys, alpha and beta move linearly between them."""
    cfg, out = trained_run(cfg_factory, tiny_weights, tmp_path, TIPF_CFG,
                           ["TRAINER.TIP.AUGMENT_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "16", "OPTIM.LR", "0.01"])
    start = TRAINER_REGISTRY.get("TipAdapterF")(cfg)
    start.build_cache()
    assert start.model.keys.abs().sum() > 0 and start.model.alpha.item() == pytest.approx(cfg.TRAINER.TIP.INIT_ALPHA)
    before = start.test(stage="before")
    records = wise_ft(out, [0.0, 1.0], ["ImageNet"])
    assert records[0]["metrics"] == before["metrics"]
    final = json.loads((out / "eval" / "ImageNet" / "results.json").read_text())
    assert records[1]["metrics"] == final["metrics"]
    trainer = TRAINER_REGISTRY.get("TipAdapterF")(cfg)
    trainer.wise_ft_start()
    theta0 = {n: t.clone() for n, t in trainer.wise_ft_tensors().items()}
    trainer.load_from_model_dir(out)
    theta1 = {n: t.clone() for n, t in trainer.wise_ft_tensors().items()}
    assert set(theta0) == {"keys", "alpha", "beta"}
    interpolate_(trainer, theta0, theta1, 0.25)
    torch.testing.assert_close(trainer.model.alpha, theta0["alpha"] + 0.25 * (theta1["alpha"] - theta0["alpha"]))


def test_wise_ft_of_lora_is_linear_in_the_weights(cfg_factory, tiny_weights, tmp_path):
    cfg, out = trained_run(cfg_factory, tiny_weights, tmp_path, PETL_CFG, ["OPTIM.LR", "0.05"])
    trainer = TRAINER_REGISTRY.get("PETLCLIP")(cfg)
    theta0 = {n: t.clone() for n, t in trainer.wise_ft_tensors().items()}
    trainer.load_from_model_dir(out)
    theta1 = {n: t.clone() for n, t in trainer.wise_ft_tensors().items()}
    loras = [m for m in trainer.injection.modules]
    deltas1 = [m.delta_weight().detach().clone() for m in loras]
    assert any(d.abs().max() > 0 for d in deltas1)
    for alpha in (0.0, 0.3, 0.5, 1.0):
        interpolate_(trainer, theta0, theta1, alpha)
        for m, d1 in zip(loras, deltas1):  # W(alpha) - W0 = alpha (W1 - W0): linear, not quadratic
            torch.testing.assert_close(m.delta_weight(), alpha * d1, rtol=1e-5, atol=1e-7)


def test_wise_ft_zero_shot_templates_option(cfg_factory, tiny_weights, tmp_path):
    """--zero-shot-templates ensemble7: alpha = 0 is zero-shot CLIP with those templates (wise-ft's zero-shot
    end uses an ensemble); the default keeps the run's own start."""
    cfg, out = trained_run(cfg_factory, tiny_weights, tmp_path, CONVPASS_CFG, ["TRAINER.CONVPASS.DROPOUT", "0.0"])
    (rec,) = wise_ft(out, [0.0], ["ImageNet"], zero_shot_templates="ensemble7")
    zs = TRAINER_REGISTRY.get("ZeroShotCLIP")(cfg_factory(opts=["MODEL.PRETRAINED", tiny_weights,
                                                                "TRAINER.ZSCLIP.TEMPLATES", "ensemble7"],
                                                          output_dir=tmp_path / "zs7"))
    assert rec["metrics"] == zs.test()["metrics"] and rec["wise_zero_shot_templates"] == "ensemble7"
    from clip_convpass.experiments.wiseft import is_current

    assert is_current(out, ["ImageNet"], [0.0], "ensemble7") and not is_current(out, ["ImageNet"], [0.0], "run")
    from clip_convpass.utils.errors import UserError

    _, coop = trained_run(cfg_factory, tiny_weights, tmp_path / "coop", COOP_CTXV1, ["OPTIM.MAX_EPOCH", "1"])
    with pytest.raises(UserError, match="no text-initialised head"):
        wise_ft(coop, [0.0], ["ImageNet"], zero_shot_templates="ensemble7")
