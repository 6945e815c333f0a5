import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, top_k_accuracy_score

from clip_convpass.config import setup_cfg
from clip_convpass.engine.evaluation import Evaluator
from clip_convpass.engine.optim import build_lr_scheduler, build_optimizer, lr_at_epoch


def test_metrics_match_sklearn():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 7, generator=g)
    labels = torch.randint(0, 7, (200,), generator=g)
    logits[labels == 3, 3] += 2  # some signal
    ev = Evaluator(7, per_class=True)
    for i in range(0, 200, 64):
        ev.process(logits[i:i + 64], labels[i:i + 64])
    out = ev.evaluate()
    y, p = labels.numpy(), logits.argmax(1).numpy()
    assert out["top1"] == pytest.approx(100 * accuracy_score(y, p))
    assert out["macro_f1"] == pytest.approx(100 * f1_score(y, p, average="macro"))
    assert out["mean_per_class_acc"] == pytest.approx(100 * balanced_accuracy_score(y, p))
    assert out["top5"] == pytest.approx(100 * top_k_accuracy_score(y, logits.numpy(), k=5, labels=np.arange(7)))
    assert len(out["per_class_acc"]) == 7


def test_warmup_cosine_schedule():
    cfg = setup_cfg(None, None, ["OPTIM.LR", "0.002", "OPTIM.MAX_EPOCH", "4", "OPTIM.WARMUP_EPOCH", "1",
                                 "OPTIM.WARMUP_CONS_LR", "1e-5"])
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], cfg.OPTIM)
    sched = build_lr_scheduler(opt, cfg.OPTIM)
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    import math

    assert seen[0] == pytest.approx(1e-5)
    assert seen[1] == pytest.approx(0.002)
    assert seen[2] == pytest.approx(0.5 * 0.002 * (1 + math.cos(math.pi / 4)))
    assert [lr_at_epoch(e, cfg.OPTIM) for e in range(4)] == pytest.approx(seen)


def test_step_schedule_and_optimizers():
    cfg = setup_cfg(None, None, ["OPTIM.LR_SCHEDULER", "step", "OPTIM.STEPSIZE", "(2,)", "OPTIM.LR", "1.0"])
    assert [lr_at_epoch(e, cfg.OPTIM) for e in range(4)] == pytest.approx([1, 1, 0.1, 0.1])
    p = torch.nn.Parameter(torch.zeros(1))
    for name, cls in [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]:
        c = setup_cfg(None, None, ["OPTIM.NAME", name])
        assert isinstance(build_optimizer([p], c.OPTIM), cls)
