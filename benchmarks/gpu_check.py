#!/usr/bin/env python
"""The GPU check: measurements of the CUDA path at ViT-B/16 shapes (random weights, no network) and the wall
time they project for the grids. `benchmarks/gpu_check.sh` runs the CUDA tests first, then this.

    python benchmarks/gpu_check.py [--device cuda] [--output PATH]      (on a GPU; under 8 minutes)
    python benchmarks/gpu_check.py --device cpu --quick                  (the same code on a tiny model: CI)

Measures, per registered method (bench.py's step rows): one training step and evaluation throughput in fp16
(PREC amp) and bf16, with peak memory; the evaluation loop's data-loading throughput (JPEG decode + test
transform, DataLoader workers) against the frozen encoder's, which says which one bounds evaluation; and from
them the wall time of the Table 2 grid, the few-shot suite and base-to-new on one GPU. Writes one JSON: to
$OUT/gpu_check.json when OUT is set, else benchmarks/results/gpu-<device>-<date>.json (or --output).
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import build_trainer, step_rows, timed, write_result  # noqa: E402

from clip_convpass.config import dataset_config_file, setup_cfg  # noqa: E402
from clip_convpass.registry import DATASET_REGISTRY, evaluation_domains, method_rows, trainable_datasets  # noqa: E402

TINY = ["MODEL.BACKBONE", "tiny-ViT-Q", "INPUT.SIZE", "(32,32)"]
SEEDS = 3
FEWSHOT_SHOTS = (1, 2, 4, 8, 16)


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_mb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None


def measure_method(row, device: str, prec: str, classes: int, batch: int, eval_batch: int, size: int,
                   repeats: int, quick: bool) -> dict:
    opts = ["DEVICE", device, "PREC", prec, *(TINY if quick else [])]
    reset_peak(device)
    trainer = build_trainer(row.name, classes, opts)
    out = {"row": row.name, "trainer": row.trainer, "prec": trainer.prec}
    images = torch.randn(eval_batch, 3, size, size)
    out["eval_images_per_s"] = eval_batch / timed(lambda: trainer.predict(images), 1, repeats)
    if trainer.is_trainable:
        if getattr(trainer, "TRAIN_KEYS", False):  # Tip-Adapter-F: a filled cache, as after build_cache()
            with torch.no_grad():
                trainer.model.keys.copy_(torch.nn.functional.normalize(torch.randn_like(trainer.model.keys), dim=-1))
                trainer.model.key_labels.copy_(torch.arange(len(trainer.model.keys)) % classes)
        b = min(batch, trainer.cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
        data = {"img": torch.randn(b, 3, size, size), "label": torch.randint(0, classes, (b,))}
        trainer.set_model_mode(True)
        step = timed(lambda: trainer.forward_backward(data), 1, repeats)
        out.update(batch=b, ms_per_step=1000 * step, train_images_per_s=b / step)
    out["peak_memory_mb"] = peak_mb(device)
    trainer = None  # the model goes before the next method is built (peak memory per method)
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def data_loading(device: str, n_images: int, workers: int, quick: bool) -> dict:
    """Images/s of the evaluation loop's loading alone (JPEG decode, resize + crop + normalise, workers)."""
    import numpy as np
    from PIL import Image

    from clip_convpass.data import build_loader
    from clip_convpass.data.types import Datum

    folder = Path(tempfile.mkdtemp(prefix="ccp_gpu_check_"))
    rng = np.random.default_rng(0)
    items = []
    for i in range(n_images):  # ImageNet-like JPEGs (500 x 375)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)).save(path, quality=90)
        items.append(Datum(str(path), 0, "x"))
    cfg = setup_cfg(dataset_config_file("ImageNet"), None,
                    ["DATALOADER.NUM_WORKERS", str(workers), "DEVICE", device, *(TINY if quick else [])])
    t0 = time.perf_counter()
    n = sum(len(batch["label"]) for batch in build_loader(cfg, items, False, torch.device(device)))
    return {"images": n, "workers": workers, "images_per_s": n / (time.perf_counter() - t0)}


def test_images(name: str) -> int:
    return DATASET_REGISTRY.get(name).EXPECTED_TEST_IMAGES or 0


def epochs(row, dataset: str, shots: int) -> int:
    return setup_cfg(dataset_config_file(dataset), row.config or None, ["DATASET.NUM_SHOTS", str(shots)]).OPTIM.MAX_EPOCH


def cell_seconds(m: dict, row, dataset: str, shots: int, classes: int, eval_images: int) -> float:
    """One cell: its training images (epochs x shots x classes) at the measured step rate, its evaluations at the
    measured throughput. Training-free methods cost their feature passes (counted as evaluation images)."""
    train = epochs(row, dataset, shots) * shots * classes / m["train_images_per_s"] if "ms_per_step" in m else 0.0
    fit = 0.0 if "ms_per_step" in m else 10 * shots * classes / m["eval_images_per_s"]  # Tip's 10 cache passes
    return train + fit + eval_images / m["eval_images_per_s"]


def projections(measured: dict) -> dict:
    """Wall time on one device of the three grids, from the fp16 (amp) measurements, 3 seeds each."""
    def rows_of(table):
        return [r for r in method_rows(lambda r: table in r.tables) if (r.name, "amp") in measured]

    out = {}
    domains = evaluation_domains("ImageNet")
    t2 = sum(cell_seconds(measured[(r.name, "amp")], r, "ImageNet", 16, 1000, sum(map(test_images, domains)))
             for r in rows_of("table2"))
    out["table2_grid_hours"] = SEEDS * t2 / 3600
    trainable = trainable_datasets()
    few = sum(cell_seconds(measured[(r.name, "amp")], r, d, k, DATASET_REGISTRY.get(d).EXPECTED_CLASSES or 100,
                           test_images(d)) for r in rows_of("fewshot") for d in trainable for k in FEWSHOT_SHOTS)
    out["fewshot_suite_hours"] = SEEDS * few / 3600
    b2n = sum(cell_seconds(measured[(r.name, "amp")], r, d, 16,
                           math.ceil((DATASET_REGISTRY.get(d).EXPECTED_CLASSES or 100) / 2), test_images(d))
              for r in rows_of("base2new") for d in trainable)
    out["base2new_hours"] = SEEDS * b2n / 3600
    out["assumptions"] = ("steps measured at --classes classes (prompt methods encode every class each step: "
                          "slower at 1000); no feature cache; 3 seeds; fp16 (PREC auto on CUDA)")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny model and sizes: checks the code paths (CI)")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--eval-batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pytest-summary", default="", help="the CUDA tests' last line (gpu_check.sh passes it)")
    p.add_argument("--output", default="")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here (use --device cpu --quick to check the code paths)")
    if args.quick:
        args.classes, args.batch, args.eval_batch, args.repeats = 4, 4, 8, 1
    import logging

    logging.getLogger().setLevel(logging.ERROR)
    size = 32 if args.quick else 224
    precs = ("amp", "bf16")
    result = {"machine": {"platform": platform.platform(), "torch": torch.__version__, "cpus": os.cpu_count(),
                          "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"},
              "date": datetime.datetime.now().isoformat(timespec="seconds"), "settings": vars(args),
              "cuda_tests": args.pytest_summary or None}
    measured = {}
    t0 = time.perf_counter()
    # every method: bench.py's step rows, and each PETL preset on CLIP (bench.py times those against the frozen
    # forward); the supervised-backbone rows are benchmarks/supervised.py's
    rows = step_rows() + [r for r in method_rows(lambda r: r.trainer == "PETLCLIP" and r.benchmark == "coop")]
    for row in rows:
        for prec in precs:
            m = measure_method(row, args.device, prec, args.classes, args.batch, args.eval_batch, size, args.repeats,
                               args.quick)
            measured[(row.name, prec)] = m
            step = f"{m['ms_per_step']:8.1f} ms/step (batch {m['batch']})" if "ms_per_step" in m else "training-free"
            peak = f"{m['peak_memory_mb']:.0f} MB" if m["peak_memory_mb"] is not None else "-"
            print(f"  {row.name:18s} {prec:4s} {step}, eval {m['eval_images_per_s']:8.1f} img/s, peak {peak}",
                  flush=True)
    result["methods"] = list(measured.values())
    frozen = measured[("ZeroShotCLIP", "amp")]["eval_images_per_s"]
    loading = data_loading(args.device, 32 if args.quick else 512, 2 if args.quick else min(8, os.cpu_count() or 1),
                           args.quick)
    loading["frozen_encoder_images_per_s"] = frozen
    loading["evaluation_bound_by"] = "data loading" if loading["images_per_s"] < frozen else "the model"
    result["data_loading"] = loading
    print(f"  evaluation: loading {loading['images_per_s']:.0f} img/s ({loading['workers']} workers) vs frozen "
          f"encoder {frozen:.0f} img/s: bound by {loading['evaluation_bound_by']}", flush=True)
    result["projections"] = proj = projections(measured)
    print(f"  projected on this device: Table 2 grid {proj['table2_grid_hours']:.1f} h, few-shot suite "
          f"{proj['fewshot_suite_hours']:.1f} h, base-to-new {proj['base2new_hours']:.1f} h", flush=True)
    result["seconds"] = time.perf_counter() - t0
    out = Path(args.output) if args.output else (
        Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else
        Path(__file__).resolve().parent / "results" / f"gpu-{args.device}-{datetime.date.today().isoformat()}.json")
    write_result(result, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
