"""A grid cell's work (training and evaluations, then its transfer evaluations), and cells as cluster jobs through
submitit (SLURM, or its local executor: real subprocesses, no scheduler).

One job per cell, submitted as one array (SLURM: `--array-parallelism` caps how many run at once). A job runs the
cell exactly as the in-process grid does, its transfer evaluations (base-to-new's new classes, cross-dataset
targets) included (`engine.runner.run`: it resumes from the cell's last checkpoint, so a
job killed by the scheduler finishes when the grid is run again). Each cell's `jobs.txt` (in its run directory)
lists the jobs that ran it with their stdout / stderr files. Finished cells are skipped and cells whose run
directory another process holds are left to it, as in the in-process grid.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from clip_convpass.engine.rundir import RunDir
from clip_convpass.utils.errors import UserError
from clip_convpass.utils.locks import LockedError

logger = logging.getLogger(__name__)
EXECUTORS = ("inprocess", "local", "slurm")
JOBS_FILE = "jobs.txt"


class JobsError(UserError, RuntimeError):
    """Jobs of the grid failed (each cell's error.txt and job stderr say why)."""


@dataclass
class JobOptions:
    """What the scheduler gets for every cell's job."""

    executor: str = "local"  # local | slurm
    partition: str = ""
    gpus_per_job: int = 0
    cpus_per_job: int = 2
    time_limit_min: int = 240
    array_parallelism: int = 16
    sbatch: Dict[str, str] = field(default_factory=dict)  # further sbatch options, KEY=VALUE

    def check(self) -> None:
        if self.executor not in EXECUTORS[1:]:
            raise UserError(f"--executor must be one of {EXECUTORS}, got {self.executor!r}")
        for name in ("cpus_per_job", "time_limit_min", "array_parallelism"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_job < 0:
            raise UserError(f"--gpus-per-job must be >= 0, got {self.gpus_per_job}")


def make_executor(options: JobOptions, folder: Path):
    import submitit

    options.check()
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=options.executor)  # %j: array task ids too
    params = {"timeout_min": options.time_limit_min, "cpus_per_task": options.cpus_per_job,
              "slurm_array_parallelism": options.array_parallelism}
    if options.executor == "slurm":
        params.update(slurm_partition=options.partition or None, gpus_per_node=options.gpus_per_job,
                      slurm_additional_parameters=dict(options.sbatch))
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def run_cell_job(cell: "PendingCell") -> List[str]:
    """A job's work: one cell as the in-process grid runs it, then its transfer evaluations; the datasets scored."""
    from clip_convpass.engine.runner import run
    from clip_convpass.utils.logging import setup_logger

    setup_logger(None)
    done = [r["dataset"] for r in run(cell.cfg, eval_datasets=list(cell.eval_datasets), eval_step0=cell.eval_step0,
                                      annotations=cell.annotations)]
    for transfer in cell.transfers:
        evaluate_transfer(transfer, cell.cfg.OUTPUT_DIR, cell.force)
        done.append(transfer.DATASET.NAME)
    return done


def evaluate_transfer(cfg, model_dir: str, force: bool = False) -> None:
    """Evaluate a finished cell on the classes `cfg` is built over (its dataset, its SUBSAMPLE) into the cell's own
    eval/ folder, by the method's transfer rule; skipped when that result exists."""
    from clip_convpass.engine.checkpoint import checkpoint_digest
    from clip_convpass.engine.runner import run
    from clip_convpass.utils.io import read_json

    results = RunDir(cfg.OUTPUT_DIR).results(cfg.DATASET.NAME, subsample=cfg.DATASET.SUBSAMPLE)
    what = f"{cfg.NAME} seed {cfg.SEED}: transfer evaluation on {cfg.DATASET.NAME}" + \
        ("" if cfg.DATASET.SUBSAMPLE == "all" else f" ({cfg.DATASET.SUBSAMPLE} classes)")
    if results.is_file() and not force:
        rec = read_json(results)
        # done only if made by the transfer path from the weights the cell holds now (not a retrained run's)
        if "train_classes" in rec and (rec.get("weights_sha256") or "") == checkpoint_digest(model_dir):
            return
        print(f"[grid] {what}: the stored result is of other weights or predates transfer records; evaluating again")
    print(f"[grid] {what}")
    try:
        run(cfg, eval_only=True, model_dir=model_dir)
    except LockedError:  # another grid or script is evaluating it: never twice
        print(f"[grid] {what}: running in another process, left to it")


@dataclass
class PendingCell:
    name: str  # "row seed S", for messages
    cfg: object
    eval_datasets: List[str]
    eval_step0: bool
    annotations: dict
    transfers: List[object] = field(default_factory=list)  # evaluation configs of the transfer path
    force: bool = False


def submit_cells(cells: Sequence[PendingCell], options: JobOptions, output: Path):
    """Submit every cell as one job of one array; returns the jobs, in the cells' order."""
    executor = make_executor(options, output / "jobs")
    with executor.batch():
        jobs = [executor.submit(run_cell_job, c) for c in cells]
    for cell, job in zip(cells, jobs):
        run_dir = RunDir(cell.cfg.OUTPUT_DIR)
        run_dir.root.mkdir(parents=True, exist_ok=True)
        with open(run_dir.root / JOBS_FILE, "a") as f:
            f.write(f"{job.job_id} {options.executor} stdout={job.paths.stdout} stderr={job.paths.stderr}\n")
        print(f"[grid] {cell.name}: job {job.job_id} ({run_dir.root})")
    return jobs


def wait_for(cells: Sequence[PendingCell], jobs) -> None:
    """Wait for every job; one line per failed cell (its error.txt, its stderr), then one error for them all."""
    failed = []
    for cell, job in zip(cells, jobs):
        try:
            job.result()
            print(f"[grid] {cell.name}: job {job.job_id} done")
        except Exception as e:  # submitit wraps the job's exception; the cell's error.txt holds its first line
            error = RunDir(cell.cfg.OUTPUT_DIR).error
            why = error.read_text().strip() if error.is_file() else f"{type(e).__name__} (see {job.paths.stderr})"
            print(f"[grid] {cell.name}: job {job.job_id} failed: {why}")
            failed.append(cell.name)
    if failed:
        raise JobsError(f"{len(failed)} of {len(cells)} jobs failed ({', '.join(failed[:5])}); run the grid again "
                        f"to resume them from their last checkpoints, --status to see each cell")


def last_job(run_dir: RunDir) -> Optional[str]:
    """The newest job recorded for a cell (its line in jobs.txt), for `grid --status`."""
    path = run_dir.root / JOBS_FILE
    lines = path.read_text().splitlines() if path.is_file() else []
    return lines[-1].split()[0] if lines else None
