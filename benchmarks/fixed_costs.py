#!/usr/bin/env python
"""Fixed costs of a small run (issue: scale), measured before any of them is cut.

    .venv/bin/python benchmarks/fixed_costs.py [--epochs 20] [--workers 2] [--demo-grid] [--output results/NAME.json]

A 1-shot CoOp run on a synthetic Oxford-Pets tree (one batch per epoch) with the tiny model, through
`engine.runner.run` as the grid runs it. The run's wall time is split into its steps (forward_backward), the
evaluation's forwards, and what is left: per run (process start and imports, model load, text encoding, data
setup, evaluation setup) and per epoch (the DataLoader and its workers made again every epoch, the checkpoint
written and read back, the history files). The JSON also models the fraction these take when a GPU makes each
step --gpu-step-ms long.

--demo-grid also runs the few-shot demo grid (`make demo-fewshot`'s cells, in this process) and compares its wall
time with the sum of its model work: training steps, evaluation forwards, the encoding passes of
training-free methods, the linear probe's L-BFGS fits and Tip-Adapter's alpha/beta search (their training)
(the issue's target: within 1.3x).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Timer:
    """Wraps callables and sums the seconds spent in each, by name; a call inside a timed call of the same name
    (an override calling super()) is not counted twice."""

    def __init__(self):
        self.seconds, self.calls, self.depth = {}, {}, {}

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            if self.depth.get(name):
                return fn(*args, **kwargs)
            self.depth[name] = 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth[name] = 0
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
                self.calls[name] = self.calls.get(name, 0) + 1
        return timed


def import_seconds() -> float:
    """A fresh process importing what a run imports (the per-run cost of a script or a job)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import clip_convpass.engine.runner, clip_convpass.trainers.coop"],
                   check=True)
    return time.perf_counter() - t0


def measure(epochs: int, workers: int) -> dict:
    import torch

    from clip_convpass.config import dataset_config_file, setup_cfg
    from clip_convpass.data import fewshot
    from clip_convpass.data.synthetic import build_synthetic_tree
    from clip_convpass.engine import evaluation, runner
    from clip_convpass.engine import trainer as trainer_module
    from clip_convpass.engine.rundir import RunDir
    from clip_convpass.experiments.demo import make_tiny_checkpoint
    from clip_convpass.models import clip_loader
    from clip_convpass.utils.logging import setup_logger

    tmp = Path(tempfile.mkdtemp(prefix="ccp_fixed_"))
    root = build_synthetic_tree(tmp / "data", num_classes=6, train_per_class=4, val_per_class=4,
                                split_val_per_class=2, source="OxfordPets")["root"]
    make_tiny_checkpoint(tmp / "tiny.pt")
    setup_logger(None, level=40)
    cfg = setup_cfg(dataset_config_file("OxfordPets"), "trainers/CoOp/vit_b16_fewshot.yaml",
                    ["DATASET.ROOT", root, "OUTPUT_DIR", str(tmp / "run"), "MODEL.PRETRAINED", str(tmp / "tiny.pt"),
                     "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH_BY_SHOTS", "", "OPTIM.MAX_EPOCH", str(epochs),
                     "DATALOADER.NUM_WORKERS", str(workers), "DATALOADER.TRAIN_X.BATCH_SIZE", "32"],
                    override_files=[REPO / "configs" / "tiny.yaml"])
    timer = Timer()
    patches = [(clip_loader, "load_clip_from_cfg"), (trainer_module, "build_dataset"),
               (trainer_module.TrainerBase, "forward_backward"), (trainer_module.TrainerBase, "run_epoch"),
               (trainer_module.TrainerBase, "save"), (RunDir, "append_history"),
               (evaluation, "evaluate"), (trainer_module.TrainerBase, "predict"), (fewshot, "load_or_sample"),
               (trainer_module, "build_loader")]
    from clip_convpass.trainers import coop as coop_module

    patches.append((coop_module.CoOp, "build_model"))
    originals = [(obj, name, getattr(obj, name)) for obj, name in patches]
    for obj, name, fn in originals:
        setattr(obj, name, timer.wrap(name, fn))
    coop_module.load_clip_from_cfg = clip_loader.load_clip_from_cfg  # the trainer imported the name itself
    try:
        t0 = time.perf_counter()
        runner.run(cfg)
        wall = time.perf_counter() - t0
    finally:
        for obj, name, fn in originals:
            setattr(obj, name, fn)
        coop_module.load_clip_from_cfg = clip_loader.load_clip_from_cfg
    s = timer.seconds
    steps, epochs_s = s["forward_backward"], s["run_epoch"]
    eval_forward = s.get("predict", 0.0)
    per_epoch_fixed = (epochs_s - steps) / epochs
    model_load = s["load_clip_from_cfg"]
    text_encoding = s["build_model"] - model_load  # prompt learner and its text setup
    out = {
        "epochs": epochs, "workers": workers, "images_per_epoch": 6, "steps_per_epoch": 1,
        "run_wall_s": wall, "steps_s": steps, "eval_forward_s": eval_forward,
        "per_run_s": {"process_start_and_imports": import_seconds(), "model_load": model_load,
                      "text_encoding_and_model_build": text_encoding,
                      "data_setup": s["build_dataset"] + s["load_or_sample"],
                      "evaluation_setup_and_loading": s["evaluate"] - eval_forward},
        "per_epoch_s": {"epoch_beyond_steps": per_epoch_fixed,
                        "of_which_checkpoint_write_and_readback": s["save"] / epochs,
                        "of_which_history_files": s["append_history"] / epochs,
                        "of_which_loader_and_workers (rest)":
                            per_epoch_fixed - (s["save"] + s["append_history"]) / epochs},
        "calls": timer.calls,
    }
    out["fixed_fraction_of_run"] = 1 - (steps + eval_forward) / (wall + out["per_run_s"]["process_start_and_imports"])
    del torch
    return out


def measure_demo_grid() -> dict:
    """The few-shot demo grid in this process: its wall time against the model work inside it."""
    import clip_convpass.trainers  # noqa: F401  (registers every method)
    from clip_convpass.engine import evaluation
    from clip_convpass.experiments import demo
    from clip_convpass.models import probe
    from clip_convpass.registry import TRAINER_REGISTRY
    from clip_convpass.trainers.tip_adapter import TipAdapter
    from clip_convpass.utils.logging import setup_logger

    setup_logger(None, level=40)
    timer = Timer()
    classes = {TRAINER_REGISTRY.get(name) for name in TRAINER_REGISTRY.names()}
    owners = {c for cls in classes for c in cls.__mro__ if "forward_backward" in vars(c) or "predict" in vars(c)}
    originals = [(c, name, vars(c)[name]) for c in owners for name in ("forward_backward", "predict") if name in vars(c)]
    for c, name, fn in originals:
        setattr(c, name, timer.wrap(name, fn))
    real_encode_batches, real_fit_logreg = evaluation.encode_batches, probe.fit_logreg
    probe.fit_logreg = timer.wrap("probe_fit", real_fit_logreg)
    originals.append((TipAdapter, "search_alpha_beta", vars(TipAdapter)["search_alpha_beta"]))
    TipAdapter.search_alpha_beta = timer.wrap("tip_search", TipAdapter.search_alpha_beta)

    def encode_batches(trainer, encode, *args, **kwargs):  # the model's share of an encoding pass
        return real_encode_batches(trainer, timer.wrap("encode", encode), *args, **kwargs)

    evaluation.encode_batches = encode_batches
    out = Path(tempfile.mkdtemp(prefix="ccp_demo_grid_"))
    weights = demo.demo_trees(out / "data", demo.FEWSHOT_DEMO_DATASETS)  # the data, not the grid: untimed
    try:
        t0 = time.perf_counter()
        demo.fewshot_demo_grid(out, weights, [1], force=False)
        wall = time.perf_counter() - t0
    finally:
        for c, name, fn in originals:
            setattr(c, name, fn)
        evaluation.encode_batches, probe.fit_logreg = real_encode_batches, real_fit_logreg
    model_work = sum(timer.seconds.values())
    cells = len(list((out / "runs").rglob("results.json")))
    return {"wall_s": wall, "model_work_s": model_work, "by_kind_s": timer.seconds, "calls": timer.calls,
            "results_written": cells, "wall_over_model_work": wall / model_work}


def gpu_model(m: dict, gpu_step_ms: float) -> dict:
    """The same run if each step (and each evaluation batch) took gpu_step_ms: how much of it would be fixed cost."""
    steps = m["epochs"] * m["steps_per_epoch"] * gpu_step_ms / 1000
    evals = gpu_step_ms / 1000  # one evaluation batch
    fixed = sum(m["per_run_s"].values()) + m["epochs"] * m["per_epoch_s"]["epoch_beyond_steps"]
    return {"gpu_step_ms": gpu_step_ms, "steps_s": steps, "fixed_s": fixed,
            "fixed_fraction": fixed / (fixed + steps + evals)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--gpu-step-ms", type=float, default=30.0, help="a ViT-B/16 step on a GPU, for the model")
    p.add_argument("--demo-grid", action="store_true", help="also time the few-shot demo grid")
    p.add_argument("--output", default="")
    args = p.parse_args(argv)
    m = measure(args.epochs, args.workers)
    m["gpu_model"] = gpu_model(m, args.gpu_step_ms)
    if args.demo_grid:
        m["demo_grid"] = measure_demo_grid()
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
              "date": datetime.datetime.now().isoformat(timespec="seconds"), "settings": vars(args), **m}
    print(json.dumps(result, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
