"""The CUDA path (skipped without a GPU; `benchmarks/gpu_check.sh` runs these on one): fp16 autocast with a
GradScaler and bf16 for every method's training step, TF32, a single-process nccl group, and the fused attention
under autocast against fp32."""
import socket

import pytest
import torch

from clip_convpass.registry import TRAINER_REGISTRY, method_rows

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")]


def one_row_per_trainer():
    rows = {}
    for row in method_rows(lambda r: r.benchmark == "coop"):
        rows.setdefault(row.trainer, row)
    return sorted(rows.values(), key=lambda r: r.trainer)


def cuda_trainer(cfg_factory, row, weights, out, prec):
    cfg = cfg_factory("ImageNet", f"configs/{row.config}", output_dir=out,
                      opts=["TRAINER.NAME", row.trainer, *row.opts, "MODEL.PRETRAINED", weights, "DEVICE", "cuda",
                            "PREC", prec, "DATASET.NUM_SHOTS", "2", "DATASET.VAL_SHOTS", "1",
                            "TRAINER.TIP.AUGMENT_EPOCH", "1"])
    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)


@pytest.mark.parametrize("prec", ["amp", "bf16"])
@pytest.mark.parametrize("row", one_row_per_trainer(), ids=lambda r: r.trainer)
def test_every_method_trains_a_step_on_cuda(row, prec, cfg_factory, tiny_weights, tmp_path):
    trainer = cuda_trainer(cfg_factory, row, tiny_weights, tmp_path / "run", prec)
    images = torch.randn(4, 3, 32, 32)
    if not trainer.is_trainable:  # training-free: its fitted state, then inference under autocast
        trainer.fit()
        assert torch.isfinite(trainer.predict(images)).all()
        return
    assert trainer.scaler.is_enabled() == (prec == "amp")  # fp16 gradients need the loss scaler, bf16 do not
    before = {n: p.detach().clone() for n, p in trainer.trainable_named_parameters()}
    trainer.set_model_mode(True)
    out = trainer.forward_backward({"img": images, "label": torch.tensor([0, 1, 2, 0])})
    assert out["loss"] == out["loss"] and abs(out["loss"]) < float("inf")
    changed = [n for n, p in trainer.trainable_named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed, "the step moved no trainable parameter"
    assert torch.isfinite(trainer.predict(images)).all()


def test_prec_auto_on_cuda_is_fp16_with_tf32_matmuls(cfg_factory, tiny_weights, tmp_path):
    row = next(r for r in method_rows() if r.trainer == "ConvpassCLIP")
    trainer = cuda_trainer(cfg_factory, row, tiny_weights, tmp_path / "run", "auto")
    assert trainer.prec == "amp" and trainer.scaler.is_enabled()
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_a_single_process_nccl_group_all_reduces():
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        t = torch.ones(3, device="cuda")
        dist.all_reduce(t)
        assert t.tolist() == [1.0, 1.0, 1.0]
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_attention_under_autocast_matches_fp32(cfg_factory, tiny_weights, tmp_path, dtype):
    row = next(r for r in method_rows() if r.trainer == "ZeroShotCLIP")
    trainer = cuda_trainer(cfg_factory, row, tiny_weights, tmp_path / "run", "fp32")
    images = torch.randn(8, 3, 32, 32, device="cuda")
    visual = trainer.model.visual
    with torch.no_grad():
        ref = visual(images)
        with torch.autocast("cuda", dtype=dtype):
            low = visual(images).float()
    assert (low - ref).abs().max() <= 0.03 * ref.abs().max() + 1e-3  # the tolerance of the bf16 CPU test
