"""The demo: the full Table 2 pipeline on a synthetic ImageNet-family tree with a tiny random-init CLIP.

    python -m clip_convpass.demo [--output demo_output] [--seeds 1 2]
    python -m clip_convpass.demo --fewshot [--output demo_output_fewshot]   (few-shot curves, see fewshot_demo)
    python -m clip_convpass.demo --generalization [--output demo_output_generalization]   (base-to-new and
        cross-dataset transfer, see generalization_demo)
    python -m clip_convpass.demo --supervised [--output demo_output_supervised]   (VTAB-1K and few-shot FGVC with a
        tiny timm ViT, see supervised_demo)

Writes the synthetic data, runs every registered row (the Table 2 grid, the PETL rows and the other
baselines: train on synthetic "ImageNet", evaluate on all five synthetic test sets), a few cells of the
head-init study (one seed), WiSE-FT of Convpass_CLIP and CoOp at alpha 0, 0.5, 1, and prints the tables
(Table 2, PETL, head init, effective robustness). The numbers are SYNTHETIC: they
show that the pipeline works end to end, not how the methods compare on real data.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List, Optional

from clip_convpass.config import CONFIG_DIR
from clip_convpass.data.synthetic import build_synthetic_tree
from clip_convpass.engine.rundir import RunDir
from clip_convpass.experiments.grid import build_cell_cfg, run_grid
from clip_convpass.experiments.headinit import CONVPASS_ROW, head_init_rows, head_init_table, table2_choice
from clip_convpass.experiments.wiseft import stage_name, wise_ft
from clip_convpass.registry import find_row, method_rows
from clip_convpass.reporting.format import base_name
from clip_convpass.reporting.records import aggregate, collect
from clip_convpass.reporting.robustness import plot_points, render_points, robustness_points
from clip_convpass.reporting.table2 import build_table, plot, render
from clip_convpass.utils.args import join_numeric_lists, number_list
from clip_convpass.utils.errors import entry_point
from clip_convpass.utils.logging import format_seconds, set_console_level, setup_logger

BANNER = "#" * 100
DEMO_CONFIG = CONFIG_DIR / "demo.yaml"  # tiny model, 8 shots; each row adds its own demo_opts


def make_tiny_checkpoint(path: Path, seed: int = 0) -> None:
    """A fixed random tiny CLIP saved as a local checkpoint: every method and seed starts from the same
    "pretrained" weights, as with real CLIP, and the local-file loading path is exercised."""
    import logging

    import torch

    from clip_convpass.models.clip_loader import load_clip
    from clip_convpass.utils.io import atomic_torch_save

    torch.manual_seed(seed)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns that random weights are random: they are meant to be
    try:
        atomic_torch_save(path, load_clip("tiny-ViT-Q", "none").model.state_dict())
    finally:
        root.setLevel(level)


DEMO_HEAD_INITS = ("text-1", "random", "lp")
DEMO_HEAD_SWEEPS = {"trainable": ("TRAINER.CONVPASS.HEAD_LR_MULT=1,100",)}
DEMO_WISE_ROWS = ("ConvpassCLIP", "CoOp")
DEMO_ALPHAS = (0.0, 0.5, 1.0)
FEWSHOT_DEMO_DATASETS = ("OxfordPets", "EuroSAT")
FEWSHOT_DEMO_SHOTS = (1, 2, 4)


def fewshot_demo(out: Path, seeds: List[int], force: bool) -> None:
    """Few-shot curves on two synthetic datasets in CoOp's layouts: every row of the "fewshot" table at
    1, 2 and 4 shots (rows' own sweeps skipped), then the curve table and plot."""
    from clip_convpass.reporting.fewshot import fewshot_curves, plot_curves, render_curves

    runs = fewshot_demo_grid(out, demo_trees(out / "data", FEWSHOT_DEMO_DATASETS), seeds, force)
    notes: List[str] = []
    curves = fewshot_curves(collect([runs]), notes=notes)
    print(BANNER)
    print("SYNTHETIC DATA + TINY RANDOM-INIT MODEL: these numbers only show that the pipeline runs end to end.")
    print(BANNER)
    print(render_curves(curves, notes=notes))
    (out / "fewshot.md").write_text(render_curves(curves, "markdown", notes=notes) + "\n")
    (out / "fewshot.json").write_text(render_curves(curves, "json", notes=notes) + "\n")
    plot_curves(curves, out / "fewshot.png")
    print(f"Tables: {out}/fewshot.{{md,json}}, plot: {out}/fewshot.png; results: {runs}")


def fewshot_demo_grid(out: Path, weights: Path, seeds: List[int], force: bool) -> Path:
    """The few-shot demo's cells (benchmarks/fixed_costs.py times this); their runs folder."""
    from clip_convpass.experiments.grid import run_fewshot_grid, table_rows

    runs = out / "runs"
    run_fewshot_grid(table_rows("fewshot"), FEWSHOT_DEMO_DATASETS, FEWSHOT_DEMO_SHOTS, seeds, str(out / "data"), runs,
                     ["MODEL.PRETRAINED", str(weights)], force=force, override_configs=[DEMO_CONFIG],
                     demo_opts=True, sweeps=False)
    return runs


def synthetic_trees(data: Path, sources) -> None:
    """Synthetic trees of `sources` (each with its evaluation sets) under data/, each written once."""
    for name in sources:
        marker = data / f".{name}.done"  # written last: the tree of this dataset is complete
        if not marker.is_file():
            build_synthetic_tree(data, source=name)
            marker.write_text("")


def show_views(out: Path, runs: Path, views) -> None:
    """The synthetic-data banner, then each (view, file stem) printed and written as markdown, JSON and PNG."""
    print(BANNER)
    print("SYNTHETIC DATA + TINY RANDOM-INIT MODEL: these numbers only show that the pipeline runs end to end.")
    print(BANNER)
    records = collect([runs])
    for view, stem in views:
        notes: List[str] = []
        table = view.build(records, "top1", notes)
        print(view.render(table, "terminal", "top1", notes) + "\n")
        for fmt, suffix in (("markdown", "md"), ("json", "json")):
            (out / f"{stem}.{suffix}").write_text(view.render(table, fmt, "top1", notes) + "\n")
        view.plot(table, out / f"{stem}.png", "top1")
    stems = [stem for _, stem in views]
    print(f"Tables: {', '.join(f'{out}/{s}.{{md,json}}' for s in stems)}, plots: "
          f"{', '.join(f'{out}/{s}.png' for s in stems)}; results: {runs}")


def demo_trees(data: Path, sources) -> Path:
    """Synthetic trees of `sources` (each with its evaluation sets) under data/, and the tiny CLIP; the weights."""
    synthetic_trees(data, sources)
    weights = data / "tiny_clip.pt"
    if not weights.is_file():
        make_tiny_checkpoint(weights)
    return weights


def generalization_demo(out: Path, seeds: List[int], force: bool) -> None:
    """CoCoOp's two transfer protocols on synthetic trees: base-to-new on the few-shot demo's datasets, and
    cross-dataset transfer from synthetic ImageNet to them; every row of the two tables (rows' own sweeps
    skipped), then both tables and their plots. Methods without a transfer rule show n/a."""
    from clip_convpass.experiments.grid import run_base2new_grid, run_cross_dataset_grid, table_rows
    from clip_convpass.reporting.base2new import Base2NewView
    from clip_convpass.reporting.cross_dataset import CrossDatasetView

    data = out / "data"
    weights = demo_trees(data, ("ImageNet", *FEWSHOT_DEMO_DATASETS))
    runs = out / "runs"
    common = dict(force=force, override_configs=[DEMO_CONFIG], demo_opts=True, sweeps=False)
    opts = ["MODEL.PRETRAINED", str(weights)]
    run_base2new_grid(table_rows("base2new"), FEWSHOT_DEMO_DATASETS, seeds, str(data), runs, opts, shots=8, **common)
    run_cross_dataset_grid(table_rows("cross_dataset"), FEWSHOT_DEMO_DATASETS, seeds, str(data), runs, opts, **common)
    show_views(out, runs, ((Base2NewView, "base2new"), (CrossDatasetView, "cross_dataset")))


VTAB_DEMO_TASKS = ("vtab_patch_camelyon", "vtab_kitti")
FGVC_DEMO_DATASETS = ("fgvc_fs_pets",)
FGVC_DEMO_SHOTS = (1, 2)
TINY_TIMM_OPTS = ("MODEL.BACKBONE", "timm:vit_tiny_demo", "MODEL.PRETRAINED", "none", "INPUT.SIZE", "(32,32)",
                  "DATALOADER.NUM_WORKERS", "0")


def supervised_demo(out: Path, seeds: List[int], force: bool) -> None:
    """The Convpass paper's own benchmarks with a tiny random timm ViT, on synthetic trees in both layouts: VTAB-1K
    (two tasks in the PETL repositories' layout; every row of the vtab table, each row's sweep on train800 -> val200
    first) and few-shot FGVC on NOAH's lists over CoOp's folders (Oxford-Pets at 1 and 2 shots, NOAH's seed 0, sweeps
    on val_meta.list); then the VTAB table, the few-shot curves and their plots."""
    from clip_convpass.experiments.grid import run_fewshot_grid, run_vtab_grid, table_rows
    from clip_convpass.reporting.fewshot import FewShotView
    from clip_convpass.reporting.vtab import VTABView

    data = out / "data"
    synthetic_trees(data, (*VTAB_DEMO_TASKS, *FGVC_DEMO_DATASETS))
    runs = out / "runs"
    run_vtab_grid(table_rows("vtab"), VTAB_DEMO_TASKS, seeds, str(data), runs, list(TINY_TIMM_OPTS), force=force,
                  demo_opts=True)
    fgvc_opts = [*TINY_TIMM_OPTS, "INPUT.RESIZE_SIZE", "36"]  # NOAH's 256 -> 224 test crop, at 32 px
    run_fewshot_grid(table_rows("fgvc_fewshot"), FGVC_DEMO_DATASETS, FGVC_DEMO_SHOTS, [s - 1 for s in seeds],
                     str(data), runs, fgvc_opts, force=force, demo_opts=True)
    show_views(out, runs, ((VTABView, "vtab"), (FewShotView, "fgvc_fewshot")))


@entry_point
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="")
    p.add_argument("--seeds", type=number_list(int), default=None, metavar="SEED [SEED ...]",
                   help="default: 1 2 (few-shot demo: 1)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--verbose", action="store_true", help="print every run's log (default: one line per run; "
                                                           "each run's log.txt holds the full log)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--fewshot", action="store_true",
                       help=f"few-shot curves on synthetic {' and '.join(FEWSHOT_DEMO_DATASETS)} instead of Table 2")
    which.add_argument("--generalization", action="store_true",
                       help=f"base-to-new on synthetic {' and '.join(FEWSHOT_DEMO_DATASETS)} and cross-dataset transfer "
                            f"from synthetic ImageNet to them, instead of Table 2")
    which.add_argument("--supervised", action="store_true",
                       help=f"the Convpass paper's own benchmarks with a tiny timm ViT instead of Table 2: VTAB-1K on "
                            f"synthetic {' and '.join(VTAB_DEMO_TASKS)}, few-shot FGVC on NOAH's lists of synthetic "
                            f"{' and '.join(FGVC_DEMO_DATASETS)}")
    args = p.parse_args(join_numeric_lists(argv or [], {"--seeds": int}))
    t0 = time.time()
    if not args.verbose:
        import logging

        set_console_level(logging.WARNING)
    if args.fewshot:
        setup_logger(None)
        fewshot_demo(Path(args.output or "demo_output_fewshot").resolve(), args.seeds or [1], args.force)
        print(f"Demo finished in {format_seconds(time.time() - t0)}")
        return 0
    if args.supervised:
        setup_logger(None)
        supervised_demo(Path(args.output or "demo_output_supervised").resolve(), args.seeds or [1], args.force)
        print(f"Demo finished in {format_seconds(time.time() - t0)}")
        return 0
    if args.generalization:
        setup_logger(None)
        generalization_demo(Path(args.output or "demo_output_generalization").resolve(), args.seeds or [1], args.force)
        print(f"Demo finished in {format_seconds(time.time() - t0)}")
        return 0
    args.output = args.output or "demo_output"
    args.seeds = args.seeds or [1, 2]
    out = Path(args.output).resolve()
    data = out / "data"
    class_list = data / "synthetic_classes.txt"  # written last: its presence means the tree is complete
    if not class_list.is_file():
        info = build_synthetic_tree(data)
        print(f"Wrote a synthetic dataset tree to {data}: {info['counts']}")
    weights = data / "tiny_clip.pt"
    if not weights.is_file():
        make_tiny_checkpoint(weights)
    setup_logger(None)
    runs = out / "runs"
    common = ["DATASET.CLASS_LIST", str(class_list), "MODEL.PRETRAINED", str(weights)]
    # every registered row; the PETL rows' own sweeps are skipped to keep the demo short (Convpass_CLIP's runs)
    petl_only = [r for r in method_rows() if r.tables == ("petl",)]
    # rows of the other protocols only (few-shot, base-to-new) are run by their own demos
    table2_rows = [r for r in method_rows() if "table2" in r.tables or not r.tables]
    run_grid(table2_rows, args.seeds, str(data), runs, common,
             force=args.force, override_configs=[DEMO_CONFIG], demo_opts=True)
    run_grid(petl_only, args.seeds, str(data), runs, common, force=args.force, override_configs=[DEMO_CONFIG],
             demo_opts=True, sweeps=False)
    headinit = out / "headinit"
    # a few cells of the head-init study, one seed, each trainable head's multiplier chosen from two values
    convpass_opts = [*common, *find_row(CONVPASS_ROW).demo_opts]
    chosen = table2_choice(str(data), runs, convpass_opts, [DEMO_CONFIG], args.seeds[0])  # the Table 2 grid's sweep
    head_rows = head_init_rows(find_row(CONVPASS_ROW).demo_opts, inits=DEMO_HEAD_INITS, sweeps=DEMO_HEAD_SWEEPS,
                               convpass_values=chosen)
    run_grid(head_rows, args.seeds[:1], str(data), headinit, common, force=args.force,
             override_configs=[DEMO_CONFIG], eval_step0=True)
    # WiSE-FT of the fine-tuned rows' first-seed runs, then the effective-robustness view
    for name in DEMO_WISE_ROWS:
        row = find_row(name)
        cfg = build_cell_cfg(row, args.seeds[0], str(data), runs, [*common, *row.demo_opts], [DEMO_CONFIG])
        if args.force or not RunDir(cfg.OUTPUT_DIR).has_results(["ImageNet"], [stage_name(a) for a in DEMO_ALPHAS]):
            wise_ft(cfg.OUTPUT_DIR, DEMO_ALPHAS)
    notes: List[str] = []
    params: dict = {}
    records = collect([runs])
    rows = aggregate(records, notes=notes, params=params)
    petl_only_names = {r.name for r in petl_only}
    petl_names = {r.name for r in method_rows(lambda r: "petl" in r.tables)}
    table = build_table({k: v for k, v in rows.items() if base_name(k) not in petl_only_names})
    petl = build_table({k: v for k, v in rows.items() if base_name(k) in petl_names}, params=params)
    print(BANNER)
    print("SYNTHETIC DATA + TINY RANDOM-INIT MODEL: these numbers only show that the pipeline runs end to end.")
    print(BANNER)
    print("Table 2 (top-1, mean ± std over seeds):")
    print(render(table, notes=notes))
    print("\nPETL on CLIP (top-1; trainable parameters in the image encoder, head excluded):")
    print(render(petl))
    print("\nHead initialisation (top-1; 'step 0' = before training, then after training):")
    print(head_init_table([headinit]))
    robust_notes: List[str] = []
    points = robustness_points(collect([runs]), notes=robust_notes)
    print("\n" + render_points(points, notes=robust_notes))
    (out / "robustness.md").write_text(render_points(points, "markdown", notes=robust_notes) + "\n")
    plot_points(points, out / "robustness.png")
    (out / "headinit.md").write_text(head_init_table([headinit], "markdown") + "\n")
    (out / "table2.md").write_text(render(table, "markdown", notes=notes) + "\n")
    (out / "table2.csv").write_text(render(table, "csv"))
    (out / "table2.json").write_text(render(table, "json") + "\n")
    (out / "petl.md").write_text(render(petl, "markdown") + "\n")
    (out / "petl.json").write_text(render(petl, "json") + "\n")
    plot(petl, out / "petl.png", title="PETL on CLIP: top-1 per domain (SYNTHETIC demo)")
    plot(table, out / "table2.png", title="Top-1 per domain (SYNTHETIC demo)")
    print(f"Tables: {out}/table2.{{md,csv,json}}, {out}/petl.{{md,json}}, {out}/headinit.md, {out}/robustness.md, "
          f"plots: {out}/table2.png, {out}/petl.png, {out}/robustness.png; results: {runs}")
    print(f"Demo finished in {format_seconds(time.time() - t0)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
