"""Transfer to other classes (base-to-new, cross-dataset): every registered row keeps its class-agnostic state
bit-exactly, rebuilds its class-bound state as a fresh model over the target classes has it, or says n/a."""
import pytest
import torch

from clip_convpass.engine.checkpoint import (
    CheckpointMismatchError,
    is_class_bound,
    latest_checkpoint,
    load_checkpoint,
)
from clip_convpass.registry import TRAINER_REGISTRY, method_rows

ROWS = method_rows(lambda r: r.benchmark == "coop")  # CLIP rows; supervised rows: tests/data/test_vtab.py


def build_row(cfg_factory, row, weights, out, subsample):
    opts = ["MODEL.PRETRAINED", weights, "DATASET.NUM_SHOTS", "2", "DATASET.VAL_SHOTS", "1", "DATASET.SUBSAMPLE",
            subsample, "TRAINER.NAME", row.trainer, *row.opts]
    cfg = cfg_factory("ImageNet", f"configs/{row.config}" if row.config else None, opts=opts, output_dir=out)
    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)


def state_of(trainer):
    return {**{n: p.detach() for n, p in trainer.trainable_named_parameters()},
            **{f"extra.{k}": v for k, v in trainer.extra_state().items()}}


@torch.no_grad()
def pretend_trained(trainer):
    """A stand-in for training: every tensor a checkpoint holds gets other values."""
    g = torch.Generator().manual_seed(7)
    for tensor in state_of(trainer).values():
        if tensor.is_floating_point():
            tensor.add_(torch.randn(tensor.shape, generator=g))
        else:
            tensor.copy_(torch.randint(0, 3, tensor.shape, generator=g))


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_transfer_keeps_class_agnostic_state_and_rebuilds_class_bound_state(row, cfg_factory, tiny_weights, tmp_path):
    base = build_row(cfg_factory, row, tiny_weights, tmp_path / "base", "base")
    pretend_trained(base)
    base.save(1)
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "base"))
    saved = {**ckpt["state_dict"], **{f"extra.{k}": v for k, v in ckpt["extra_state"].items()}}

    fresh = build_row(cfg_factory, row, tiny_weights, tmp_path / "fresh", "new")
    new = build_row(cfg_factory, row, tiny_weights, tmp_path / "new", "new")
    # without the transfer path, other classes are refused (3 base and 3 new classes: same shapes)
    if saved:
        with pytest.raises(CheckpointMismatchError, match="trained over ImageNet's base 3 classes"):
            new.load_from_model_dir(tmp_path / "base")
    new.load_from_model_dir(tmp_path / "base", allow_transfer=True)
    reason = new.transfer_undefined()
    if reason:
        assert new.transfer == {"rebuilt": False, "not_applicable": reason}
        result = new.test()
        assert result["not_applicable"] == reason and set(result["metrics"].values()) == {None}
        assert result["transfer"] and result["train_classes"]["subsample"] == "base"
        return
    bound = new.class_bound_state()
    for name, tensor in state_of(new).items():
        if is_class_bound(name, bound):  # rebuilt for the new classes exactly as a fresh model has it
            assert torch.equal(tensor, state_of(fresh)[name]), name
        else:  # the trained, class-agnostic state, bit for bit
            assert torch.equal(tensor.cpu(), saved[name]), name
    assert set(state_of(new)) == set(saved)  # every trained tensor was checked, one way or the other
    if saved:
        assert new.transfer == {"rebuilt": True, "not_applicable": ""}


def test_fresh_adapter_model_transferred_to_new_classes_is_zero_shot_clip_on_them(cfg_factory, tiny_weights, tmp_path):
    convpass = next(r for r in ROWS if r.trainer == "ConvpassCLIP")
    zs = next(r for r in ROWS if r.trainer == "ZeroShotCLIP")
    base = build_row(cfg_factory, convpass, tiny_weights, tmp_path / "base", "base")
    base.save(1)  # untrained
    new = build_row(cfg_factory, convpass, tiny_weights, tmp_path / "new", "new")
    new.load_from_model_dir(tmp_path / "base", allow_transfer=True)
    zero_shot = build_row(cfg_factory, zs, tiny_weights, tmp_path / "zs", "new")
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    assert torch.equal(new.predict(images), zero_shot.predict(images))


def test_csc_contexts_and_non_text_heads_have_no_transfer_rule(cfg_factory, tiny_weights, tmp_path):
    coop = next(r for r in ROWS if r.trainer == "CoOp")
    csc = build_row(cfg_factory, coop, tiny_weights, tmp_path / "a", "base").__class__
    cfg = cfg_factory("ImageNet", f"configs/{coop.config}", output_dir=tmp_path / "b",
                      opts=["MODEL.PRETRAINED", tiny_weights, "TRAINER.COOP.CSC", "True"])
    assert "class-specific" in csc(cfg).transfer_undefined()
    convpass = next(r for r in ROWS if r.trainer == "ConvpassCLIP")
    for init, why in (("lp", "linear probe"), ("random", "no class information")):
        cfg = cfg_factory("ImageNet", f"configs/{convpass.config}", output_dir=tmp_path / init,
                          opts=["MODEL.PRETRAINED", tiny_weights, "TRAINER.CONVPASS.HEAD_INIT", init])
        assert why in TRAINER_REGISTRY.get("ConvpassCLIP")(cfg).transfer_undefined()


def test_a_checkpoint_without_its_classes_is_never_transferred(cfg_factory, tiny_weights, tmp_path):
    convpass = next(r for r in ROWS if r.trainer == "ConvpassCLIP")
    base = build_row(cfg_factory, convpass, tiny_weights, tmp_path / "base", "base")
    path = base.save(1)
    ckpt = load_checkpoint(path)
    del ckpt["meta"]["classes"]  # as written before checkpoints recorded their classes
    torch.save(ckpt, path)
    new = build_row(cfg_factory, convpass, tiny_weights, tmp_path / "new", "new")
    with pytest.raises(CheckpointMismatchError, match="predates checkpoints that record their classes"):
        new.load_from_model_dir(tmp_path / "base", allow_transfer=True)


def test_resuming_training_over_other_classes_is_refused(cfg_factory, tiny_weights, tmp_path):
    from clip_convpass.engine.runner import run

    convpass = next(r for r in ROWS if r.trainer == "ConvpassCLIP")
    opts = ["MODEL.PRETRAINED", tiny_weights, "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1",
            "DATALOADER.NUM_WORKERS", "0"]
    run(cfg_factory("ImageNet", f"configs/{convpass.config}", opts=[*opts, "DATASET.SUBSAMPLE", "base"],
                    output_dir=tmp_path / "run"))
    with pytest.raises(CheckpointMismatchError, match="DATASET.SUBSAMPLE"):
        run(cfg_factory("ImageNet", f"configs/{convpass.config}", opts=[*opts, "DATASET.SUBSAMPLE", "new",
                                                                         "OPTIM.MAX_EPOCH", "2"],
                        output_dir=tmp_path / "run"))
