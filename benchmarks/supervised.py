#!/usr/bin/env python
"""Benchmark: the supervised-backbone benchmarks (VTAB-1K, few-shot FGVC) on this machine.

    .venv/bin/python benchmarks/supervised.py [--batch 4] [--output benchmarks/results/NAME.json]

1. Per-sample data cost at 224 px: VTAB's resize, NOAH's few-shot pipeline (crop, flip, RandAugment, erasing), and
   the per-sample seeding around it: torch's CPU generator alone (before timm's transforms needed more) vs torch,
   Python and numpy (now), so the price of seeding RandAugment per sample is measured, not assumed.
2. One training step (forward, backward, AdamW) per VTAB row kind on random-weight ViT-B/16, Swin-B and ConvNeXt-B
   (real shapes, no download), fp32, with the trainable parameters of the backbone.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clip_convpass.config import setup_cfg
from clip_convpass.data import build_transform
from clip_convpass.data.images import ImageListDataset, forked_python_and_numpy_rng
from clip_convpass.data.types import Datum

CONFIGS = {"ViT-B/16 Linear": "vtab_linear", "ViT-B/16 Convpass_attn": "vtab_convpass_attn",
           "ViT-B/16 Convpass": "vtab_convpass", "ViT-B/16 LoRA": "vtab_lora", "ViT-B/16 VPT-Deep": "vtab_vpt_deep",
           "ViT-B/16 Full": "vtab_full", "Swin-B Linear": "vtab_swin_linear", "Swin-B Convpass": "vtab_swin_convpass",
           "Swin-B VPT-Deep": "vtab_swin_vpt_deep", "ConvNeXt-B Full": "vtab_convnext_full"}


def timed(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_samples(n: int = 200) -> dict:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8))
    out = {}
    for label, config in (("VTAB resize 224 (train = test)", "vtab_convpass"),
                          ("NOAH few-shot training pipeline", "fgvc_convpass")):
        transform = build_transform(setup_cfg(None, f"trainers/PETLCLIP/{config}.yaml"), True)
        for seeding in ("torch", "torch+python+numpy"):
            def one(i):
                with torch.random.fork_rng(devices=[]):
                    torch.default_generator.manual_seed(i)
                    if seeding == "torch":
                        return transform(image)
                    with forked_python_and_numpy_rng(i):
                        return transform(image)
            t = timed(lambda: [one(i) for i in range(n)], 2) / n
            out[f"{label}, seeding {seeding}"] = round(t * 1000, 3)
        with tempfile.TemporaryDirectory() as folder:  # what a loader worker does: decode, seed, transform
            path = str(Path(folder) / "x.jpg")
            image.save(path, quality=90)
            dataset = ImageListDataset([Datum(path, 0, "x")] * n, transform)
            t = timed(lambda: [dataset[(7, i)] for i in range(n)], 2) / n
            out[f"{label}, a dataset sample (decode, seeding as the transform needs)"] = round(t * 1000, 3)
    return {"ms_per_sample": out}


def bench_steps(batch: int, repeats: int) -> list:
    from clip_convpass.data.synthetic import build_synthetic_tree
    from clip_convpass.registry import TRAINER_REGISTRY

    rows = []
    with tempfile.TemporaryDirectory() as root:
        build_synthetic_tree(root, source="vtab_cifar")  # a 100-class task, as CIFAR-100's head
        for label, config in CONFIGS.items():
            cfg = setup_cfg("datasets/vtab_cifar.yaml", f"trainers/PETLCLIP/{config}.yaml",
                            ["MODEL.PRETRAINED", "none", "DEVICE", "cpu", "DATASET.ROOT", root, "OUTPUT_DIR",
                             str(Path(root) / "out")])
            rows.append(bench_step(label, config, TRAINER_REGISTRY.get("PETLCLIP")(cfg), batch, repeats))
    return rows


def bench_step(label: str, config: str, trainer, batch: int, repeats: int) -> dict:
    """One forward / backward / AdamW step of the trainer's model on a random batch (the recipe's optimiser)."""
    model = trainer.model
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    images, labels = torch.randn(batch, 3, 224, 224), torch.randint(0, 100, (batch,))
    trainer.set_model_mode(True)

    def step():
        optim.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optim.step()

    seconds = timed(step, repeats)
    head = {id(p) for p in model.head.parameters()}
    row = {"row": label, "config": config, "ms_per_step": round(seconds * 1000, 1),
           "images_per_s": round(batch / seconds, 2),
           "trainable_backbone_params": sum(p.numel() for p in params if id(p) not in head)}
    print(f"{label:24s} {seconds * 1000:9.1f} ms/step  {row['trainable_backbone_params']:>12,} params")
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--output", default="")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    samples = bench_samples()
    for k, v in samples["ms_per_sample"].items():
        print(f"{k:60s} {v:8.3f} ms/sample")
    result = {"machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
                          "torch": torch.__version__},
              "date": datetime.date.today().isoformat(), "batch": args.batch, "data": samples,
              "train_steps": bench_steps(args.batch, args.repeats)}
    if args.output:
        from bench import write_result

        write_result(result, Path(args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
