#!/usr/bin/env python
"""Benchmark: training-step cost per trainer, exact text truncation, the feature cache, Convpass overhead.

    .venv/bin/python benchmarks/bench.py [--classes 100] [--batch 4] [--output benchmarks/results/NAME.json]

Real ViT-B/16 shapes with random weights (no download). Each training-step measurement runs in its
own subprocess, so its peak memory (max RSS, or CUDA max allocated) belongs to that trainer alone.
Prints a table and writes JSON with the machine and date inside. Sections:

1. ms/step and images/s for one training step of every Table 2 row that trains (registry order) and of
   every other registered method (its first row),
   with each optimisation on and off (text truncation; bf16 autocast), and peak memory.
2. CoOp's text encoder (N_CTX 16, the 1000 ImageNet class names): sequences cut at the longest
   prompt's EOT vs all 77 positions. The sequence length comes from all 1000 prompts; the time is
   measured on a --text-chunk slice of them (time is linear in the number of prompts, the ratio is not
   affected) and scaled to 1000.
3. Image-encoder passes over test images for the whole Table 2 grid (its rows x 3 seeds x its test
   sets), counted, with the feature cache on and off (synthetic data, tiny model: counts do not
   depend on the model).
4. Convpass_CLIP training step / frozen image encoder's no-grad forward, same batch.
5. Every registered adapter's training step divided by the frozen encoder's no-grad forward.
6. Tip-Adapter: the alpha/beta search with the cache term computed once per beta vs once per grid point
   (both on the same sub-grid, same chosen point), and the cache logits as a scatter over the keys'
   labels vs the dense one-hot matmul (1000 classes x 16 shots).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from clip_convpass.config import setup_cfg
from clip_convpass.datasets.imagenet import imagenet_wnids
from clip_convpass.experiments.grid import table2_rows
from clip_convpass.registry import TRAINER_REGISTRY, find_row

REPO = Path(__file__).resolve().parents[1]


def timed(fn, warmup: int = 1, repeats: int = 3) -> float:
    """Fastest of `repeats` runs (the least disturbed by other load on the machine)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_root(n_classes: int) -> tuple[str, str]:
    """A data root with the folders trainers check at build time, and a class list of n real wnids."""
    root = Path(tempfile.mkdtemp(prefix="ccp_bench_"))
    (root / "imagenet").mkdir()
    wnids = imagenet_wnids()[:n_classes]
    (root / "classes.txt").write_text("\n".join(wnids) + "\n")
    return str(root), str(root / "classes.txt")


def build_trainer(row_name: str, n_classes: int, opts=()):
    """The registered row's trainer at real shapes, random weights, on an empty ImageNet root."""
    row = find_row(row_name)
    root, class_list = bench_root(n_classes)
    cfg = setup_cfg("datasets/imagenet.yaml", row.config or None,
                    ["TRAINER.NAME", row.trainer, *row.opts, "DATASET.ROOT", root, "DATASET.CLASS_LIST", class_list,
                     "MODEL.PRETRAINED", "none", "OUTPUT_DIR", str(Path(root) / "out"), "DATASET.NUM_SHOTS", "16",
                     *opts])
    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    # VmHWM belongs to this process image (ru_maxrss survives exec and would report the parent's peak)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fast_bf16() -> bool:
    """bf16 autocast is only worth timing on hardware that computes in bf16 (emulated on plain AVX2)."""
    if torch.cuda.is_available():
        return True
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def single_train_step(name: str, n_classes: int, batch: int, prec: str, truncate: bool, share: bool,
                      repeats: int, fused: bool = True) -> dict:
    trainer = build_trainer(name, n_classes, ["PREC", prec, "MODEL.TEXT_TRUNCATE", str(truncate),
                                              "MODEL.TEXT_SHARED_PREFIX", str(share), "MODEL.FUSED_ATTENTION", str(fused)])
    if not trainer.is_trainable:
        return {"trainer": name, "trainable": False}
    if getattr(trainer, "TRAIN_KEYS", False):  # Tip-Adapter-F: a filled cache, as after build_cache()
        with torch.no_grad():
            keys = torch.nn.functional.normalize(torch.randn_like(trainer.model.keys), dim=-1)
            trainer.model.keys.copy_(keys)
            trainer.model.key_labels.copy_(torch.arange(len(keys)) % n_classes)
    trainer.set_model_mode(True)
    data = {"img": torch.randn(batch, 3, 224, 224), "label": torch.randint(0, n_classes, (batch,))}
    sec = timed(lambda: trainer.forward_backward(data), warmup=1, repeats=repeats)
    return {"trainer": name, "trainable": True, "prec": prec, "fused_attention": fused,
            "text_truncate": truncate, "text_shared_prefix": share,
            "batch": batch, "classes": n_classes,
            "ms_per_step": 1000 * sec, "images_per_s": batch / sec, "peak_memory_mb": peak_memory_mb()}


def run_isolated(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def step_rows():
    """The Table 2 rows, then the first row of every other registered method (the adapters: section 5)."""
    from clip_convpass.registry import method_rows

    rows = list(table2_rows())
    for row in method_rows():
        if row.trainer not in {r.trainer for r in rows} | {"PETLCLIP"}:
            rows.append(row)
    return rows


def bench_train_steps(n_classes: int, batch: int, repeats: int) -> list[dict]:
    from clip_convpass.trainers.coop import CoOp

    rows = []
    for table_row in step_rows():
        name = table_row.name
        method_batch = setup_cfg(None, table_row.config or None).DATALOADER.TRAIN_X.BATCH_SIZE
        b = min(batch, method_batch)  # CoCoOp trains at batch 1
        # fp32 and bf16 side by side, each with the fused attention on and off (off = open_clip's MHA calls)
        settings = [("fp32", True, True, True), ("fp32", True, True, False)]
        if fast_bf16():
            settings += [("bf16", True, True, True), ("bf16", True, True, False)]
        if issubclass(TRAINER_REGISTRY.get(table_row.trainer), CoOp):  # text-encoder optimisations, one at a time
            settings += [("fp32", True, False, True), ("fp32", False, False, True)]
        for prec, truncate, share, fused in settings:
            row = run_isolated(["--single", name, "--classes", str(n_classes), "--batch", str(b), "--prec", prec,
                                "--truncate", str(int(truncate)), "--share", str(int(share)),
                                "--fused", str(int(fused)), "--repeats", str(repeats)])
            if not row["trainable"]:
                print(f"  {name:13s} trains nothing by gradient: no step to time", flush=True)
                break
            print(f"  {name:13s} prec={prec:5s} fused={fused!s:5s} truncate={truncate!s:5s} shared_prefix={share!s:5s} "
                  f"{row['ms_per_step']:9.1f} ms/step "
                  f"{row['images_per_s']:7.2f} img/s  peak {row['peak_memory_mb']:.0f} MB", flush=True)
            rows.append(row)
    return rows


def bench_text_truncation(chunk: int, repeats: int) -> dict:
    import open_clip

    from clip_convpass.datasets.imagenet import RESOURCES
    from clip_convpass.models.prompt_learner import PromptLearner
    from clip_convpass.models.prompts import read_classnames_file
    from clip_convpass.models.text_encoder import TextEncoder

    names = list(read_classnames_file(RESOURCES / "imagenet_classnames.txt").values())
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).eval()
    tok = open_clip.get_tokenizer("ViT-B-16-quickgelu")
    out = {"classes": len(names), "chunk": chunk, "n_ctx": 16}
    variants = {"full77": (False, False), "truncated": (True, False), "truncated_shared_prefix": (True, True)}
    for key, (truncate, share) in variants.items():
        text = TextEncoder(model, truncate, share)
        torch.manual_seed(0)
        learner = PromptLearner(text, tok, names, n_ctx=16)
        idx = torch.arange(chunk)
        every = torch.arange(len(names))

        def encode(ix):
            return text.forward_prompts(*learner.parts(learner.ctx, ix), learner.eot(ix))

        def fwd():  # all 1000 prompts in one call (chunked timings overstate the 77-token cost)
            with torch.no_grad():
                encode(every)

        def fwd_bwd():  # a chunk (the backward of 1000 x 77 tokens does not fit in memory), scaled
            learner.ctx.grad = None
            encode(idx).sum().backward()

        scale = len(names) / chunk
        out[key] = {"seq_len": learner.seq_len, "forward_s_1000": timed(fwd, 0, repeats),
                    "forward_backward_s_1000": timed(fwd_bwd, 1, repeats) * scale,
                    "forward_backward_measured_on": f"{chunk} prompts per call, scaled to 1000"}
        with torch.no_grad():
            out[key]["features"] = encode(idx)
        print(f"  {key:24s} L={learner.seq_len:2d}: forward {out[key]['forward_s_1000']:6.2f} s, "
              f"forward+backward {out[key]['forward_backward_s_1000']:6.2f} s per 1000 prompts", flush=True)
    ref = out["full77"].pop("features")
    for key in ("truncated", "truncated_shared_prefix"):
        out[key]["max_abs_diff_vs_full77"] = (out[key].pop("features") - ref).abs().max().item()
        for what in ("forward", "forward_backward"):
            out[key][f"speedup_{what}"] = out["full77"][f"{what}_s_1000"] / out[key][f"{what}_s_1000"]
    return out


def bench_grid_passes(seeds=(1, 2, 3)) -> dict:
    from clip_convpass.data.synthetic import build_synthetic_tree
    from clip_convpass.engine import feature_cache
    from clip_convpass.experiments.demo import DEMO_CONFIG, make_tiny_checkpoint
    from clip_convpass.experiments.grid import run_grid
    from clip_convpass.registry import evaluation_domains
    from clip_convpass.utils.logging import setup_logger

    tmp = Path(tempfile.mkdtemp(prefix="ccp_grid_"))
    info = build_synthetic_tree(tmp / "data")
    make_tiny_checkpoint(tmp / "data" / "tiny.pt")
    setup_logger(None, level=40)
    rows = table2_rows()
    out = {"methods": len(rows), "seeds": len(seeds), "test_sets": len(evaluation_domains("ImageNet"))}
    for cache in (False, True):
        before = dict(feature_cache.STATS)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the runs' own logs
            run_grid(rows, list(seeds), info["root"], tmp / f"runs_{cache}",
                     ["DATASET.CLASS_LIST", info["class_list"], "MODEL.PRETRAINED", str(tmp / "data" / "tiny.pt")],
                     override_configs=[DEMO_CONFIG], demo_opts=True, feature_cache=cache)
        key = "cache_on" if cache else "cache_off"
        out[key] = {"encoder_passes": feature_cache.STATS["passes"] - before["passes"],
                    "images_encoded": feature_cache.STATS["images"] - before["images"],
                    "grid_seconds": time.perf_counter() - t0}
        print(f"  Table 2 grid, feature cache {key[6:]:3s}: {out[key]['encoder_passes']} test-set passes, "
              f"{out[key]['images_encoded']} images encoded", flush=True)
    out["pass_reduction"] = out["cache_off"]["encoder_passes"] / out["cache_on"]["encoder_passes"]
    return out


def bench_frozen_forward(batch: int, repeats: int) -> dict:
    """The frozen ViT-B/16 image tower's no-grad forward: fp32 and bf16 autocast, fused attention on/off."""
    images = torch.randn(batch, 3, 224, 224)
    out = {"batch": batch}
    precs = ["fp32", "bf16"] if fast_bf16() else ["fp32"]
    for fused in (True, False):
        visual = build_trainer("ZeroShotCLIP", 100, ["MODEL.FUSED_ATTENTION", str(fused)]).model.visual.eval()
        for prec in precs:
            def fwd(v=visual, p=prec):
                with torch.no_grad(), (torch.autocast("cpu", dtype=torch.bfloat16) if p == "bf16"
                                       else contextlib.nullcontext()):
                    v(images)

            out[f"{prec}_{'fused' if fused else 'mha'}_s"] = timed(fwd, 1, repeats)
        del visual
    for prec in precs:
        print(f"  frozen forward {prec}: fused {out[f'{prec}_fused_s']:.2f} s, open_clip MHA "
              f"{out[f'{prec}_mha_s']:.2f} s", flush=True)
    return out


def bench_convpass_ratio(batch: int, repeats: int) -> dict:
    images = torch.randn(batch, 3, 224, 224)
    data = {"img": images, "label": torch.randint(0, 100, (batch,))}
    out = {"batch": batch}
    for fast in (True, False):
        trainer = build_trainer("ConvpassCLIP", 100, ["TRAINER.CONVPASS.FAST_ATTENTION", str(fast)])
        trainer.set_model_mode(True)
        step_s = timed(lambda t=trainer: t.forward_backward(data), 1, repeats)
        out["step_s" if fast else "step_s_fast_attention_off"] = step_s
        del trainer
    # the same image tower without bypasses (the frozen encoder every other method runs), in the same
    # precision as the steps (PREC auto: bf16 on CPUs that have it)
    probe = build_trainer("ConvpassCLIP", 100, ["TRAINER.CONVPASS.POSITIONS", "none"])
    frozen = probe.model.visual.eval()
    out["prec"] = probe.prec

    def fwd():
        with torch.no_grad(), probe.autocast():
            frozen(images)

    out["frozen_forward_s"] = timed(fwd, 1, repeats)
    out["ratio"] = out["step_s"] / out["frozen_forward_s"]
    out["ratio_fast_attention_off"] = out["step_s_fast_attention_off"] / out["frozen_forward_s"]
    return out


def bench_adapters(batch: int, repeats: int) -> dict:
    """Each registered adapter's training step (PETLCLIP, ViT-B/16) / the frozen encoder's no-grad forward."""
    from clip_convpass.adapters.base import presets

    images = torch.randn(batch, 3, 224, 224)
    data = {"img": images, "label": torch.randint(0, 100, (batch,))}
    probe = build_trainer("ConvpassCLIP", 100, ["TRAINER.CONVPASS.POSITIONS", "none"])
    frozen = probe.model.visual.eval()

    def fwd():  # same precision as the steps
        with torch.no_grad(), probe.autocast():
            frozen(images)

    out = {"batch": batch, "prec": probe.prec, "frozen_forward_s": timed(fwd, 1, repeats), "adapters": {}}
    for preset in presets():
        trainer = build_trainer("PETL adaptformer", 100, ["TRAINER.PETL.ADAPTER", preset])
        trainer.set_model_mode(True)
        step = timed(lambda t=trainer: t.forward_backward(data), 1, repeats)
        out["adapters"][preset] = {"step_s": step, "ratio": step / out["frozen_forward_s"],
                                   "trainable_encoder_params": trainer.injection.count()}
        print(f"  {preset:15s} step {step:.2f} s = {step / out['frozen_forward_s']:.2f} x frozen forward", flush=True)
        del trainer
    return out


def bench_tip(repeats: int, n_classes: int = 100, shots: int = 16, dim: int = 512) -> dict:
    import torch.nn.functional as F

    from clip_convpass.trainers.tip_adapter import cache_logits, search_alpha_beta_grid, search_grid

    g = torch.Generator().manual_seed(0)
    keys = F.normalize(torch.randn(n_classes * shots, dim, generator=g), dim=-1)
    key_labels = torch.arange(n_classes).repeat_interleave(shots)
    text = 100 * F.normalize(torch.randn(n_classes, dim, generator=g), dim=-1)
    feats = F.normalize(torch.randn(4 * n_classes, dim, generator=g), dim=-1)
    labels = torch.randint(0, n_classes, (len(feats),), generator=g)
    values = F.one_hot(key_labels, n_classes).float()
    alphas, betas = search_grid(0.1, 3.0, 20), search_grid(0.1, 7.0, 200)[::10]  # 20 x 20 sub-grid

    def per_point():  # the reference's loop: affinity, exp and a dense matmul at every (alpha, beta)
        best = (-1.0, 0.0, 0.0)
        for beta in betas:
            for alpha in alphas:
                logits = feats @ text.t() + alpha * ((-1) * (beta - beta * (feats @ keys.t()))).exp() @ values
                acc = (logits.argmax(1) == labels).float().mean().item()
                if acc > best[0]:
                    best = (acc, alpha, beta)
        return best

    def per_beta():
        return search_alpha_beta_grid(feats @ text.t(), feats @ keys.t(), key_labels, labels, alphas, betas,
                                      (-1.0, 0.0, 0.0))

    out = {"classes": n_classes, "shots": shots, "grid_points": len(alphas) * len(betas)}
    out["search_per_point_s"] = timed(per_point, 0, repeats)
    out["search_per_beta_s"] = timed(per_beta, 0, repeats)
    out["search_speedup"] = out["search_per_point_s"] / out["search_per_beta_s"]
    out["same_choice"] = per_point() == per_beta()
    big_keys = F.normalize(torch.randn(1000 * shots, dim, generator=g), dim=-1)
    big_labels = torch.arange(1000).repeat_interleave(shots)
    big_values = F.one_hot(big_labels, 1000).float()
    batch = F.normalize(torch.randn(100, dim, generator=g), dim=-1)
    affinity = batch @ big_keys.t()
    out["cache_dense_s"] = timed(lambda: torch.exp(-1.0 * (1 - affinity)) @ big_values, 1, repeats)
    out["cache_scatter_s"] = timed(lambda: cache_logits(affinity, big_labels, 1000, 1.0), 1, repeats)
    out["cache_speedup"] = out["cache_dense_s"] / out["cache_scatter_s"]
    out["cache_values_mb"] = {"dense": big_values.numel() * 4 / 2**20, "labels": big_labels.numel() * 8 / 2**20}
    diff = (torch.exp(-1.0 * (1 - affinity)) @ big_values - cache_logits(affinity, big_labels, 1000, 1.0)).abs().max()
    out["cache_max_abs_diff"] = diff.item()
    return out


def bench_split_read(n_classes: int = 101, per_class: int = 1000) -> dict:
    """CoOp split-file dataset at Food-101's size (101 classes x 1000 images): reading the split and checking
    every listed file, with one directory listing per folder (ours) vs one stat per file."""
    import tempfile

    from clip_convpass.config import setup_cfg
    from clip_convpass.registry import DATASET_REGISTRY

    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "food-101" / "images"
        split = {"train": [], "val": [], "test": []}
        for c in range(n_classes):
            folder = images / f"dish_{c:03d}"
            folder.mkdir(parents=True)
            for j in range(per_class):
                (folder / f"{j}.jpg").touch()
                part = "train" if j < 500 else "val" if j < 700 else "test"
                split[part].append([f"dish_{c:03d}/{j}.jpg", c, f"dish_{c:03d}"])
        (Path(tmp) / "food-101" / "split_zhou_Food101.json").write_text(json.dumps(split))
        cfg = setup_cfg("datasets/food101.yaml", None, ["DATASET.ROOT", tmp])
        cls = DATASET_REGISTRY.get("Food101")

        def ours():
            return len(cls(cfg).test)

        def per_file_stat():
            ds = cls(cfg)
            return sum(os.path.isfile(ds.image_dir / rel) for rel, _, _ in ds.splits["test"])

        t_ours, t_stat = timed(ours), timed(per_file_stat)
    return {"classes": n_classes, "test_images": len(split["test"]), "listing_s": t_ours, "per_file_stat_s": t_stat,
            "speedup": t_stat / t_ours}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, default=100, help="classes for the training-step section")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--text-chunk", type=int, default=100)
    p.add_argument("--skip", nargs="*", default=[],
                   choices=["steps", "text", "grid", "convpass", "tip", "adapters", "frozen", "splits"])
    p.add_argument("--output", default="")
    p.add_argument("--single", default="", help=argparse.SUPPRESS)
    p.add_argument("--prec", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--truncate", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--share", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--fused", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    if args.single:  # one isolated training-step measurement, printed as JSON
        print(json.dumps(single_train_step(args.single, args.classes, args.batch, args.prec, bool(args.truncate),
                                           bool(args.share), args.repeats, bool(args.fused))))
        return 0
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "no pretrained weights" warnings
    result = {"machine": {"host": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count(),
                          "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
              "date": datetime.datetime.now().isoformat(timespec="seconds"), "settings": vars(args)}
    if "splits" not in args.skip:
        print("Split-file dataset at Food-101's size: read + check every test file:", flush=True)
        result["split_read"] = r = bench_split_read()
        print(f"  {r['test_images']} test images: {r['listing_s']:.2f} s with one listing per folder (whole dataset "
              f"construction included) vs {r['per_file_stat_s']:.2f} s with one stat per file", flush=True)
    if "convpass" not in args.skip:
        print("Convpass_CLIP step vs frozen forward (ViT-B/16, 224px):", flush=True)
        result["convpass_ratio"] = r = bench_convpass_ratio(args.batch, args.repeats)
        print(f"  batch {r['batch']}: step {r['step_s']:.2f} s (fused attention off: "
              f"{r['step_s_fast_attention_off']:.2f} s), frozen forward {r['frozen_forward_s']:.2f} s, "
              f"ratio {r['ratio']:.2f} (off: {r['ratio_fast_attention_off']:.2f}; target <= 2.5)", flush=True)
    if "frozen" not in args.skip:
        print(f"Frozen image encoder forward (ViT-B/16, batch {args.batch}):", flush=True)
        result["frozen_forward"] = bench_frozen_forward(args.batch, args.repeats)
    if "adapters" not in args.skip:
        print(f"Adapter training step / frozen no-grad forward (ViT-B/16, batch {args.batch}):", flush=True)
        result["adapters"] = bench_adapters(args.batch, args.repeats)
    if "tip" not in args.skip:
        print("Tip-Adapter alpha/beta search and cache logits:", flush=True)
        result["tip"] = t = bench_tip(args.repeats)
        print(f"  search ({t['classes']} classes x {t['shots']} shots, {t['grid_points']} points): per point "
              f"{t['search_per_point_s']:.2f} s -> per beta {t['search_per_beta_s']:.3f} s = {t['search_speedup']:.1f}x "
              f"(same choice: {t['same_choice']})", flush=True)
        print(f"  cache logits, 1000 classes x 16 shots, batch 100: dense {1000 * t['cache_dense_s']:.1f} ms -> "
              f"scatter {1000 * t['cache_scatter_s']:.1f} ms = {t['cache_speedup']:.2f}x; values "
              f"{t['cache_values_mb']['dense']:.1f} MB -> {t['cache_values_mb']['labels']:.2f} MB", flush=True)
    if "text" not in args.skip:
        print("CoOp text encoder, 1000 ImageNet classes, N_CTX 16 (ViT-B/16 text tower):", flush=True)
        result["text_truncation"] = t = bench_text_truncation(args.text_chunk, args.repeats)
        for key in ("truncated", "truncated_shared_prefix"):
            r = t[key]
            print(f"  {key}: {r['speedup_forward']:.2f}x forward, {r['speedup_forward_backward']:.2f}x forward+backward "
                  f"vs 77 tokens (target >= 2.5x); max |diff| {r['max_abs_diff_vs_full77']:.1e}", flush=True)
    if "grid" not in args.skip:
        print("Image-encoder passes over test sets, Table 2 grid:", flush=True)
        result["grid_passes"] = g = bench_grid_passes()
        print(f"  reduction {g['pass_reduction']:.1f}x (target >= 4x)", flush=True)
    if "steps" not in args.skip:
        print(f"Training step per trainer (ViT-B/16, {args.classes} classes, batch {args.batch}):", flush=True)
        if not fast_bf16():
            print("  (bf16 not timed: this CPU has no native bf16; PREC bf16 works but is emulated)", flush=True)
        result["train_steps"] = bench_train_steps(args.classes, args.batch, args.repeats)
    out = Path(args.output or REPO / "benchmarks" / "results" /
               f"{platform.node()}-{datetime.date.today().isoformat()}.json")
    write_result(result, out)
    return 0


def write_result(result: dict, out: Path) -> None:
    """A benchmark's JSON, its folder made if needed (bench.py and gpu_check.py)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"Wrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
