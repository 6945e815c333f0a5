"""Run a grid of (row, seed) cells: train on ImageNet, evaluate on it and on every dataset that evaluates
its models (the five test sets of Table 2). Rows are the methods' registered configurations.

Each cell lives in OUTPUT/<train dataset>/<trainer>/<config>_<shots>shots/seed<S>/ with
eval/<dataset>/results.json per test set. A cell whose results all exist is skipped; a cell that
was interrupted resumes from its last checkpoint. Everything runs in this process.

    python -m clip_convpass.grid --data DATA --output OUT [--methods ...] [--seeds 1 2 3] [--force]
"""
from __future__ import annotations

import argparse
import functools
import gc
import logging
import shutil
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from clip_convpass.config import ConfigError
from clip_convpass.engine.checkpoint import check_stored_config
from clip_convpass.engine.rundir import RunDir, cell_dir
from clip_convpass.experiments.jobs import evaluate_transfer, last_job
from clip_convpass.models.clip_loader import reuse_loaded_models
from clip_convpass.registry import Row, evaluation_domains, method_rows, table_names, trainable_datasets
from clip_convpass.reporting.table2 import TABLE2_SOURCE
from clip_convpass.utils.args import join_numeric_lists, number_list
from clip_convpass.utils.errors import entry_point
from clip_convpass.utils.locks import LockedError, is_locked
from clip_convpass.utils.logging import format_seconds, setup_logger

logger = logging.getLogger(__name__)


def table_rows(table: str = "table2") -> List[Row]:
    return method_rows(lambda r: table in r.tables)


def table2_rows() -> List[Row]:
    return table_rows("table2")


def row_dir(output: Path, cfg, row: Row) -> RunDir:
    from clip_convpass.registry import DATASET_REGISTRY

    stem = row.tag or (Path(row.config).stem if row.config else row.name)
    fixed = DATASET_REGISTRY.get(cfg.DATASET.NAME).SHOT_SOURCE == "fixed"  # one training list: no shots
    return cell_dir(output, cfg.DATASET.NAME, cfg.TRAINER.NAME, stem, None if fixed else cfg.DATASET.NUM_SHOTS,
                    cfg.SEED, cfg.DATASET.SUBSAMPLE)


def build_cell_cfg(row: Row, seed: int, data: str, output: Path, extra_opts: Sequence[str] = (),
                   override_configs: Sequence[str | Path] = (), source: str = TABLE2_SOURCE, output_dir: str = ""):
    """defaults -> method YAML -> override files (e.g. configs/demo.yaml) -> row and extra opts. output_dir: the
    run directory (default: the cell's own; a transfer evaluation writes into the trained cell's)."""
    from clip_convpass.config import dataset_config_file, setup_cfg

    opts = ["DATASET.ROOT", data, "SEED", str(seed), "NAME", row.name, "TRAINER.NAME", row.trainer, *row.opts,
            *extra_opts]
    cfg = setup_cfg(dataset_config_file(source), row.config or None, opts, freeze=False, override_files=override_configs)
    cfg.OUTPUT_DIR = output_dir or str(row_dir(output, cfg, row).root)
    cfg.freeze()
    return cfg


def select_by_sweep(row: Row, seed: int, data: str, output: Path, opts: Sequence[str],
                    override_configs: Sequence[str | Path], source: str, sweep_json: Optional[Path] = None,
                    shots: int = 16, force: bool = False, subsample: str = "all"):
    """The values a row's sweep chooses on the validation shots: read from `sweep_json` if given, else
    from <output>/sweeps/<dataset>_<shots>shots[_base]/<row>/ (a choice is made per training set, shot count and
    class subset), running the sweep there first if it has not finished."""
    from clip_convpass.config import dataset_config_file
    from clip_convpass.experiments.sweep import parse_grid, run_sweep
    from clip_convpass.registry import DATASET_REGISTRY
    from clip_convpass.utils.io import read_json

    swept = parse_grid(row.sweep)
    if sweep_json is None:
        trained_on = source if DATASET_REGISTRY.get(source).SHOT_SOURCE == "fixed" else f"{source}_{shots}shots"
        where = output / "sweeps" / f"{trained_on}{'' if subsample == 'all' else '_' + subsample}"
        sweep_json = where / (row.tag or row.name.replace(" ", "_")) / "sweep.json"
        done = sweep_json.is_file() and "best" in read_json(sweep_json)
        if not done:
            print(f"[grid] {row.name}: choosing {', '.join(swept)} on the validation shots (sweep in {sweep_json.parent})")
        # finished points of this configuration are reused; points made with another are refused (force: retrained)
        run_sweep(swept, sweep_json.parent, str(dataset_config_file(source)), row.config or None,
                  ["DATASET.ROOT", data, "SEED", str(seed), "TRAINER.NAME", row.trainer, *row.opts, *opts],
                  override_files=override_configs, force=force)
    try:
        summary = read_json(sweep_json)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{sweep_json} is not valid JSON ({e})") from e
    best = summary.get("best", {}).get("point") if isinstance(summary, dict) else None
    if not isinstance(best, dict):
        raise ConfigError(f"{sweep_json} holds no finished sweep (no 'best' point); finish it or remove it")
    foreign = sorted(set(best) - set(swept))
    if foreign:
        raise ConfigError(f"{sweep_json}: its best point sets {foreign}, which row {row.name!r} does not sweep "
                          f"(it sweeps {sorted(swept)}); use a sweep.json of this row")
    return {k: str(v) for k, v in best.items()}, sweep_json


def run_grid(*args, **kwargs) -> List[Path]:
    """Run every (row, seed) cell: train on `source`, evaluate on `domains` (default: source and every
    dataset that evaluates its models). With feature_cache, frozen-encoder methods share test-set
    features through <output>/feature_cache: each test set is encoded once for all of them and all seeds.
    demo_opts: apply each row's demo-scale settings. sweeps: a row that declares a sweep runs with the
    values it chooses on the validation shots (sweep_files: {row name: a given sweep.json}); the choice is
    written into the cell's results.json. transfers(row, seed, cfg, opts): the configurations a finished cell is
    then evaluated under by the transfer path (other classes, into the cell's own eval/), skipped where done.
    jobs (experiments.jobs.JobOptions): the cells that have to run go to the cluster as one array of jobs (sweeps
    run here first; a job runs its cell's transfer evaluations too); wait: block until they end. queue: collect the
    cells for the cluster there instead of submitting them (submit_queued then sends several grids as one array)."""
    with reuse_loaded_models():  # one load of the backbone for the cells that share it
        try:
            return _run_grid(*args, **kwargs)
        finally:
            gc.unfreeze()  # what the cells' collections set aside is the collector's again


def _run_grid(rows: Sequence[Row], seeds: Sequence[int], data: str, output: str | Path,
             extra_opts: Sequence[str] = (), domains: Optional[Sequence[str]] = None, force: bool = False,
             override_configs: Sequence[str | Path] = (), demo_opts: bool = False,
             eval_step0: bool = False, feature_cache: bool = True, source: str = TABLE2_SOURCE,
             sweeps: bool = True, sweep_files: Optional[Dict[str, Path]] = None,
             transfers: Optional[Callable[[Row, int, object, List[str]], List[object]]] = None,
             jobs=None, wait: bool = True, queue: Optional[List] = None) -> List[Path]:
    """run_grid's work (see its documentation)."""
    from clip_convpass.engine.runner import run
    from clip_convpass.experiments.jobs import PendingCell

    output = Path(output)
    selections = {}
    domains = list(domains or evaluation_domains(source))
    stages = ("final", "step0") if eval_step0 else ("final",)
    cells = [(r, s) for r in rows for s in seeds]

    def cell_opts(row: Row) -> List[str]:
        opts = [*extra_opts, *(row.demo_opts if demo_opts else ())]
        return ["TEST.FEATURE_CACHE_DIR", str(output / "feature_cache"), *opts] if feature_cache else opts

    # each cell's config before a sweep's choice; its directory does not depend on that choice, so these
    # tell which cells still have to run
    base_cfgs = [build_cell_cfg(r, s, data, output, cell_opts(r), override_configs, source) for r, s in cells]
    pending = [force or not RunDir(c.OUTPUT_DIR).has_results(domains, stages, subsample=c.DATASET.SUBSAMPLE)
               for c in base_cfgs]
    print(f"[grid] {len(cells)} cells ({len(rows)} rows x {len(seeds)} seeds), {sum(pending)} to run, "
          f"{len(cells) - sum(pending)} done before")
    done_dirs = []
    busy: List[Path] = []  # cells another process holds
    queued: List[tuple] = []  # (PendingCell, row, seed, opts) for the cluster
    durations: List[float] = []  # of cells that ran: the ETA comes from measured cells only
    t0 = time.time()
    for i, (row, seed) in enumerate(cells, 1):
        opts = cell_opts(row)
        annotations = {}
        t_cell = time.time()
        cfg = base_cfgs[i - 1]
        if sweeps and row.sweep:
            if row.name not in selections:
                selections[row.name] = select_by_sweep(row, seeds[0], data, output, opts, override_configs, source,
                                                       (sweep_files or {}).get(row.name), cfg.DATASET.NUM_SHOTS, force,
                                                       cfg.DATASET.SUBSAMPLE)
            chosen, sweep_json = selections[row.name]
            opts = [*opts, *[x for kv in chosen.items() for x in kv]]
            annotations = {"selected": chosen, "selected_by": str(sweep_json)}
            cfg = build_cell_cfg(row, seed, data, output, opts, override_configs, source)
        run_dir = RunDir(cfg.OUTPUT_DIR)
        prefix = f"[grid {i}/{len(cells)}] {row.name} seed {seed}"
        if run_dir.has_results(domains, stages, subsample=cfg.DATASET.SUBSAMPLE) and not force:
            check_stored_config(run_dir, cfg, "rerun the grid with --force to replace them")
            print(f"{prefix}: results exist in {run_dir.root}, skipping (use --force to rerun)")
        else:
            if is_locked(run_dir.lock):  # another grid (or a job) is running this cell: never twice
                print(f"{prefix}: running in another process ({run_dir.root}), left to it")
                busy.append(run_dir.root)
                continue
            if force and run_dir.root.exists():
                shutil.rmtree(run_dir.root)  # a forced rerun trains from scratch, as scripts/train.sh --force
            if jobs is not None:
                queued.append(PendingCell(f"{row.name} seed {seed}", cfg, [d for d in domains if d != cfg.DATASET.NAME],
                                          eval_step0, annotations, transfers(row, seed, cfg, opts) if transfers else [],
                                          force))
                continue
            print(f"{prefix}: running in {run_dir.root}")
            try:
                run(cfg, eval_datasets=[d for d in domains if d != cfg.DATASET.NAME], eval_step0=eval_step0,
                    annotations=annotations)
            except LockedError:  # taken by another process between the check and the run
                print(f"{prefix}: running in another process ({run_dir.root}), left to it")
                busy.append(run_dir.root)
                continue
            # the finished cell's model and loaders go now, not during the next cell; what survives is moved out of
            # the collector's sight (gc.freeze), so the next collection walks one cell's objects, not every
            # object of torch and the imports (175 ms a cell before)
            gc.collect()
            gc.freeze()
            durations.append(time.time() - t_cell)
            left = sum(pending[i:])
            eta = format_seconds(sum(durations) / len(durations) * left) if left else "0:00:00"
            print(f"{prefix}: done in {format_seconds(durations[-1])}; grid elapsed "
                  f"{format_seconds(time.time() - t0)}, eta {eta} ({left} cells left to run)")
        done_dirs.append(run_dir.root)
        for transfer in (transfers(row, seed, cfg, opts) if transfers else []):
            evaluate_transfer(transfer, cfg.OUTPUT_DIR, force)
    if queued and queue is not None:  # the caller submits the cells of several grids as one array
        queue.extend(queued)
    elif queued:
        done_dirs = submit_queued(queued, jobs, output, wait, done_dirs)
    if busy:
        print(f"[grid] {len(busy)} cell(s) were running in another process and are finished by it: "
              f"{', '.join(str(b) for b in busy[:5])}{' ...' if len(busy) > 5 else ''}")
    return done_dirs


def submit_queued(queued: List, jobs, output: Path, wait: bool, done_dirs: List[Path]) -> List[Path]:
    """Submit cells as one array of jobs; with wait, block until they end and add their run directories."""
    from clip_convpass.experiments.jobs import submit_cells, wait_for

    submitted = submit_cells(queued, jobs, Path(output))
    if not wait:
        print(f"[grid] {len(submitted)} jobs submitted; `grid ... --status` follows them")
        return done_dirs
    wait_for(queued, submitted)
    return done_dirs + [Path(cell.cfg.OUTPUT_DIR) for cell in queued]


def run_grids_as_one_array(grids: Sequence[Tuple[str, Callable[..., List[Path]]]], output: Path, jobs=None,
                           wait: bool = True) -> List[Path]:
    """Run grid parts one after another in this process, or, with jobs, collect all their cells and submit them as
    one array (a few-shot suite is 55 parts: one array each, waited on in turn, would run them in series)."""
    from clip_convpass.experiments.jobs import JobsError

    queue: Optional[List] = [] if jobs is not None else None
    dirs: List[Path] = []
    failed: List[str] = []
    try:
        for label, part in grids:
            print(label)
            try:
                dirs += part(queue=queue, jobs=jobs, wait=wait)
            except JobsError as e:  # the other parts still run
                failed.append(str(e))
    finally:  # an error in a later part (a bad config) still sends the cells the earlier parts queued
        if queue:
            dirs = submit_queued(queue, jobs, output, wait, dirs)
    if failed:
        raise JobsError("; ".join(failed))
    return dirs


CELL_STATES = ("done", "running", "failed", "interrupted", "pending")


def cell_status(run_dir: RunDir, domains: Sequence[str], stages: Sequence[str] = ("final",),
                subsamples: Sequence[str] = ("all",)) -> Tuple[str, str]:
    """(state, detail) of a cell from its run directory alone: done (every result written), running (another
    process holds its lock), failed (the error that stopped it), interrupted (checkpoints, no process: it
    resumes when run again) or pending."""
    from clip_convpass.engine.checkpoint import latest_checkpoint

    if all(run_dir.has_results(domains, stages, subsample=s) for s in subsamples):
        return "done", ""
    if is_locked(run_dir.lock):
        return "running", ""
    if run_dir.error.is_file():
        return "failed", run_dir.error.read_text().strip()
    if run_dir.results(domains[0], subsample=subsamples[0]).is_file():  # written once training has finished
        return "pending", "trained; evaluations left (run the grid again)"
    checkpoint = latest_checkpoint(run_dir.root)
    if checkpoint is not None:
        return "interrupted", f"resumes after {checkpoint.name}"
    return "pending", ""


Cell = Tuple[Row, int, str, List[str], List[str]]  # row, seed, training dataset, opts, evaluated datasets
BASE2NEW_SHOTS = 16  # CoCoOp's protocol


def grid_status(cells: Sequence[Cell], data: str, output: Path, override_configs: Sequence[str | Path] = (),
                eval_step0: bool = False) -> List[Tuple[str, str, Row, int, Path]]:
    """(state, detail, row, seed, run directory) of every cell."""
    stages = ("final", "step0") if eval_step0 else ("final",)
    out = []
    for row, seed, source, opts, domains in cells:
        cfg = build_cell_cfg(row, seed, data, output, opts, override_configs, source)
        halves = ("base", "new") if cfg.DATASET.SUBSAMPLE == "base" else ("all",)  # base-to-new: both evaluations
        run_dir = RunDir(cfg.OUTPUT_DIR)
        state, detail = cell_status(run_dir, domains, stages, halves)
        job = last_job(run_dir)
        detail = "; ".join(d for d in (detail, f"last job {job}" if job else "") if d)
        out.append((state, detail, row, seed, run_dir.root))
    return out


def print_status(statuses) -> None:
    counts = {s: sum(1 for st in statuses if st[0] == s) for s in CELL_STATES}
    for state, detail, row, seed, root in statuses:
        print(f"{state:12s} {row.name:28s} seed {seed:<3d} {root}" + (f"  ({detail})" if detail else ""))
    print("[grid] " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" of {len(statuses)} cells")


def run_fewshot_grid(rows: Sequence[Row], datasets: Sequence[str], shots: Sequence[int], seeds: Sequence[int],
                     data: str, output: str | Path, extra_opts: Sequence[str] = (), **kwargs) -> List[Path]:
    """Few-shot curves: every (dataset, shots, row, seed) cell, trained and tested on the dataset itself
    (per-shot epochs come from each row's config). With jobs, all of them go to the cluster as one array."""
    jobs, wait = kwargs.pop("jobs", None), kwargs.pop("wait", True)
    return run_grids_as_one_array(
        [(f"[few-shot] {dataset}, {k} shot{'s' if k > 1 else ''}",
          functools.partial(run_grid, rows, seeds, data, output, [*extra_opts, "DATASET.NUM_SHOTS", str(k)],
                            domains=[dataset], source=dataset, **kwargs))
         for dataset in datasets for k in shots], Path(output), jobs, wait)


def run_vtab_grid(rows: Sequence[Row], tasks: Sequence[str], seeds: Sequence[int], data: str, output: str | Path,
                  extra_opts: Sequence[str] = (), **kwargs) -> List[Path]:
    """VTAB-1K: per task, every (row, seed) cell trains on train800val200 and is scored on test; a row's sweep is
    first run per task on train800 -> val200. With jobs, all tasks' cells go to the cluster as one array."""
    jobs, wait = kwargs.pop("jobs", None), kwargs.pop("wait", True)
    return run_grids_as_one_array(
        [(f"[vtab-1k] {task}", functools.partial(run_grid, rows, seeds, data, output, extra_opts, domains=[task],
                                                 source=task, **kwargs)) for task in tasks], Path(output), jobs, wait)


def base2new_opts(extra_opts: Sequence[str], shots: int = BASE2NEW_SHOTS) -> List[str]:
    """The protocol's shots (a DATASET.NUM_SHOTS in extra_opts wins) and training on the base classes."""
    return ["DATASET.NUM_SHOTS", str(shots), *extra_opts, "DATASET.SUBSAMPLE", "base"]


def run_base2new_grid(rows: Sequence[Row], datasets: Sequence[str], seeds: Sequence[int], data: str,
                      output: str | Path, extra_opts: Sequence[str] = (), shots: int = BASE2NEW_SHOTS,
                      force: bool = False, **kwargs) -> List[Path]:
    """CoCoOp's base-to-new protocol: per dataset, every (row, seed) cell trains on the base classes and is scored
    on them, then the trained run is scored on the new classes (a transfer evaluation) in the same cell.
    `shots`: CoCoOp's 16 unless extra_opts set DATASET.NUM_SHOTS."""
    def on_new_classes(row, seed, cfg, opts):
        new = cfg.clone()  # the trained configuration exactly (a sweep's choice included), on the other half
        new.defrost()
        new.DATASET.SUBSAMPLE = "new"
        new.freeze()
        return [new]

    jobs, wait = kwargs.pop("jobs", None), kwargs.pop("wait", True)
    return run_grids_as_one_array(
        [(f"[base-to-new] {dataset}: train on the base classes, evaluate on base and new",
          functools.partial(run_grid, rows, seeds, data, output, base2new_opts(extra_opts, shots), domains=[dataset],
                            source=dataset, force=force, transfers=on_new_classes, **kwargs))
         for dataset in datasets], Path(output), jobs, wait)


def run_cross_dataset_grid(rows: Sequence[Row], targets: Sequence[str], seeds: Sequence[int], data: str,
                           output: str | Path, extra_opts: Sequence[str] = (), force: bool = False,
                           override_configs: Sequence[str | Path] = (), source: str = TABLE2_SOURCE,
                           **kwargs) -> List[Path]:
    """CoCoOp's cross-dataset transfer: the Table 2 cells (trained on `source`; finished ones are reused), each
    then scored on every target's test split over the target's own classes, in the cell's own eval/ folder."""
    output = Path(output)

    def on_targets(row, seed, cfg, opts):
        return [build_cell_cfg(row, seed, data, output, opts, override_configs, target, cfg.OUTPUT_DIR)
                for target in targets]

    print(f"[cross-dataset] train on {source} (finished Table 2 cells are reused), evaluate on {', '.join(targets)}")
    return run_grid(rows, seeds, data, output, extra_opts, force=force, override_configs=override_configs,
                    source=source, transfers=on_targets, **kwargs)


@entry_point
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="", help="DATASET.ROOT")
    p.add_argument("--output", default="", help="output root")
    p.add_argument("--methods", nargs="+", default=None,
                   help="row names (default: the Table 2 rows); see `python -m clip_convpass.grid --list`")
    p.add_argument("--list", action="store_true", help="list every registered row and exit")
    p.add_argument("--table", choices=table_names(), default="table2",
                   help="which table's rows to run when --methods is not given (petl: every adapter on CLIP)")
    p.add_argument("--seeds", type=number_list(int), default=[1, 2, 3], metavar="SEED [SEED ...]")
    p.add_argument("--force", action="store_true", help="rerun cells whose results exist")
    p.add_argument("--override-config", action="append", default=[],
                   help="YAML merged after each method's config (repeat the flag for several, merged in order)")
    p.add_argument("--no-feature-cache", action="store_true", help="re-encode test sets for every method and seed")
    p.add_argument("--no-sweep", action="store_true",
                   help="run rows with their config values instead of choosing them on the validation shots")
    p.add_argument("--sweep-json", action="append", default=[], metavar="ROW=PATH",
                   help="use this finished sweep.json for a row instead of running its sweep (repeatable)")
    p.add_argument("--fewshot", nargs="*", default=None, metavar="DATASET",
                   help="few-shot curves instead of Table 2: train and test on these datasets (registry names; "
                        "none given: CoOp's datasets with a training split) at each of --shots; NOAH's lists "
                        "(fgvc_fs_*, the Convpass paper's Figure 5, seeds 0 1 2) run the fgvc_fewshot table's rows")
    p.add_argument("--shots", type=number_list(int), default=[1, 2, 4, 8, 16], metavar="SHOTS [SHOTS ...]",
                   help="shot counts for --fewshot")
    p.add_argument("--base2new", nargs="*", default=None, metavar="DATASET",
                   help="base-to-new generalization instead of Table 2 (CoCoOp's protocol, 16 shots): train on the base "
                        "classes of these datasets (none given: every dataset with a training split), evaluate on base "
                        "and new")
    p.add_argument("--cross-dataset", nargs="*", default=None, metavar="DATASET",
                   help="cross-dataset transfer: the Table 2 cells (finished ones reused) evaluated on these datasets "
                        "with their own classes (none given: every dataset with a training split but ImageNet)")
    p.add_argument("--vtab", nargs="*", default=None, metavar="TASK",
                   help="VTAB-1K (the Convpass paper's Table 1) instead of Table 2: train on train800val200 and test "
                        "on these tasks (registry names, vtab_<task>; none given: all 19); rows: the vtab table's")
    p.add_argument("--executor", choices=["inprocess", "local", "slurm"], default="inprocess",
                   help="inprocess: every cell in this process; local / slurm: one submitit job per cell (local: "
                        "subprocesses on this machine), submitted as one array; sweeps run here first")
    p.add_argument("--partition", default="", help="SLURM partition")
    p.add_argument("--gpus-per-job", type=int, default=0)
    p.add_argument("--cpus-per-job", type=int, default=2)
    p.add_argument("--time-limit", type=int, default=240, metavar="MINUTES", help="per job")
    p.add_argument("--array-parallelism", type=int, default=16, help="jobs of the array running at once (SLURM)")
    p.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="a further sbatch option, e.g. --sbatch account=myproj --sbatch qos=high (repeatable)")
    p.add_argument("--no-wait", action="store_true",
                   help="submit the jobs and return; run the grid again later to finish what depends on them")
    p.add_argument("--status", action="store_true",
                   help="print each cell's state (done / running / failed with its error / interrupted / pending) "
                        "from the run directories alone, and exit; the same selection flags as a run")
    p.add_argument("opts", nargs="*", help="KEY VALUE overrides for every cell")
    args = p.parse_intermixed_args(join_numeric_lists(argv or [], {"--seeds": int, "--shots": int}))
    if not args.list and not (args.data and args.output):
        p.error("--data and --output are required")
    every = method_rows()
    if args.list:
        for r in every:
            print(f"{r.name:28s} {r.trainer:14s} {r.config or '(defaults)':48s} tables: {', '.join(r.tables) or '-'}")
        return 0
    unknown = set(args.methods or []) - {r.name for r in every}
    if unknown:
        p.error(f"unknown methods {sorted(unknown)}; choices: {[r.name for r in every]}")
    rows = table_rows(args.table) if args.methods is None else [r for r in every if r.name in args.methods]
    setup_logger(None)
    sweep_files = {}
    for entry in args.sweep_json:
        name, sep, path = entry.partition("=")
        if not sep or name not in {r.name for r in every} or not Path(path).is_file():
            p.error(f"--sweep-json takes ROW=PATH with a registered row and an existing file, got {entry!r}")
        sweep_files[name] = Path(path)
    common = dict(force=args.force, override_configs=args.override_config, feature_cache=not args.no_feature_cache,
                  sweeps=not args.no_sweep, sweep_files=sweep_files)
    if args.executor != "inprocess":
        from clip_convpass.experiments.jobs import JobOptions

        bad = [s for s in args.sbatch if "=" not in s]
        if bad:
            p.error(f"--sbatch takes KEY=VALUE, got {bad[0]!r}")
        options = JobOptions(args.executor, args.partition, args.gpus_per_job, args.cpus_per_job, args.time_limit,
                             args.array_parallelism, dict(s.split("=", 1) for s in args.sbatch))
        options.check()  # before any work
        common.update(jobs=options, wait=not args.no_wait)
    from clip_convpass.reporting.records import aggregate, collect
    from clip_convpass.reporting.table2 import build_table, render

    protocols = [f for f, v in (("--fewshot", args.fewshot), ("--base2new", args.base2new),
                                ("--cross-dataset", args.cross_dataset), ("--vtab", args.vtab)) if v is not None]
    if len(protocols) > 1:
        p.error(f"{' and '.join(protocols)}: choose one protocol per grid")
    if args.vtab is not None:
        return vtab_main(p, args, rows, common)
    if args.base2new is not None or args.cross_dataset is not None:
        return generalization_main(p, args, rows, common)
    if args.fewshot is not None:
        from clip_convpass.registry import DATASET_REGISTRY
        from clip_convpass.reporting.fewshot import fewshot_curves, render_curves

        datasets = args.fewshot or trainable_datasets()
        test_only = [name for name in datasets if not DATASET_REGISTRY.get(name).HAS_TRAIN]  # unknown names fail too
        if test_only:
            p.error(f"--fewshot {test_only}: test-only datasets have no shots to train on; few-shot datasets: "
                    f"{trainable_datasets()}")
        families = sorted({DATASET_REGISTRY.get(name).BENCHMARK for name in datasets})
        if len(families) > 1:
            p.error(f"--fewshot {datasets}: one benchmark family per grid (these are {families}); curves average "
                    f"within a family")
        if args.methods is None:  # CoOp's family: the fewshot table; another family: its own (fgvc_fewshot)
            rows = table_rows("fewshot" if families == ["coop"] else families[0])
        if args.status:
            cells = [(r, s, d, [*args.opts, "DATASET.NUM_SHOTS", str(k)], [d])
                     for d in datasets for k in args.shots for r in rows for s in args.seeds]
            print_status(grid_status(cells, args.data, Path(args.output), args.override_config))
            return 0
        run_fewshot_grid(rows, datasets, args.shots, args.seeds, args.data, args.output, args.opts, **common)
        notes = []
        print(render_curves(fewshot_curves(collect([args.output]), notes=notes), notes=notes))
        return 0
    if args.status:
        domains = evaluation_domains(TABLE2_SOURCE)
        cells = [(r, s, TABLE2_SOURCE, list(args.opts), domains) for r in rows for s in args.seeds]
        print_status(grid_status(cells, args.data, Path(args.output), args.override_config))
        return 0
    run_grid(rows, args.seeds, args.data, args.output, args.opts, **common)

    notes: List[str] = []
    print(render(build_table(aggregate(collect([args.output]), notes=notes), paper=True), paper=True, notes=notes))
    return 0


def vtab_main(p, args, rows, common) -> int:
    """grid --vtab: run (or --status) the VTAB-1K cells of the chosen tasks, then print the VTAB table."""
    from clip_convpass.registry import benchmark_datasets
    from clip_convpass.reporting.records import collect
    from clip_convpass.reporting.vtab import VTABView

    every = benchmark_datasets("vtab1k")
    tasks = args.vtab or every
    wrong = [t for t in tasks if t not in every]
    if wrong:
        p.error(f"--vtab {wrong}: choose among {every}")
    if args.methods is None:  # the vtab table, or --table vtab_backbones / vtab_ablations
        rows = table_rows(args.table if args.table.startswith("vtab") else "vtab")
    if args.status:
        cells = [(r, s, t, list(args.opts), [t]) for t in tasks for r in rows for s in args.seeds]
        print_status(grid_status(cells, args.data, Path(args.output), args.override_config))
        return 0
    run_vtab_grid(rows, tasks, args.seeds, args.data, args.output, args.opts, **common)
    notes: List[str] = []
    print(VTABView.render(VTABView.build(collect([args.output]), "top1", notes), "terminal", "top1", notes))
    return 0


def generalization_main(p, args, rows, common) -> int:
    """grid --base2new / --cross-dataset: run (or --status) the protocol's cells, then print its table."""
    from clip_convpass.registry import DATASET_REGISTRY
    from clip_convpass.reporting.cross_dataset import transfer_targets
    from clip_convpass.reporting.records import collect

    base2new = args.base2new is not None
    allowed = trainable_datasets() if base2new else transfer_targets(TABLE2_SOURCE)
    chosen = (args.base2new if base2new else args.cross_dataset) or allowed
    for name in chosen:
        DATASET_REGISTRY.get(name)  # an unknown name fails with the registry's one line
    wrong = [d for d in chosen if d not in allowed]
    if wrong:
        p.error(f"{'--base2new' if base2new else '--cross-dataset'} {wrong}: choose among {allowed}")
    if args.methods is None:
        rows = table_rows("base2new" if base2new else "cross_dataset")
    output = Path(args.output)
    if args.status:
        if base2new:
            cells = [(r, s, d, base2new_opts(args.opts), [d]) for d in chosen for r in rows for s in args.seeds]
        else:
            cells = [(r, s, TABLE2_SOURCE, list(args.opts), evaluation_domains(TABLE2_SOURCE) + list(chosen))
                     for r in rows for s in args.seeds]
        print_status(grid_status(cells, args.data, output, args.override_config))
        return 0
    if base2new:
        from clip_convpass.reporting.base2new import Base2NewView as view

        run_base2new_grid(rows, chosen, args.seeds, args.data, output, args.opts, **common)
    else:
        from clip_convpass.reporting.cross_dataset import CrossDatasetView as view

        run_cross_dataset_grid(rows, chosen, args.seeds, args.data, output, args.opts, **common)
    notes: List[str] = []
    print(view.render(view.build(collect([output]), "top1", notes), "terminal", "top1", notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
