"""The grid as cluster jobs, through submitit's local executor (real subprocess jobs, no scheduler)."""
import json
import time

import pytest
import torch
from conftest import TINY

from clip_convpass.engine.checkpoint import list_checkpoints, load_checkpoint
from clip_convpass.engine.rundir import RunDir
from clip_convpass.experiments.grid import build_cell_cfg, cell_status, run_grid
from clip_convpass.experiments.jobs import JOBS_FILE, JobOptions, PendingCell, submit_cells
from clip_convpass.registry import find_row
from clip_convpass.utils.errors import UserError

LOCAL = JobOptions("local", cpus_per_job=1)


def tiny_opts(synth, weights, tmp_path, epochs):
    return ["DATASET.CLASS_LIST", synth["class_list"], "MODEL.PRETRAINED", weights, "DATASET.NUM_SHOTS", "2",
            "OPTIM.MAX_EPOCH", str(epochs), "DATALOADER.NUM_WORKERS", "0", "DATASET.SPLIT_DIR",
            str(tmp_path / "splits"), "TRAIN.CHECKPOINT_MIN_SECONDS", "0"]  # a checkpoint per epoch: killed between


def metrics(root):
    return {str(p.relative_to(root)): json.loads(p.read_text())["metrics"] for p in sorted(root.rglob("results.json"))}


@pytest.mark.slow
def test_a_grid_of_local_jobs_writes_what_the_in_process_grid_writes(synth, tiny_weights, tmp_path):
    rows = [find_row("ZeroShotCLIP"), find_row("ConvpassCLIP")]
    opts = tiny_opts(synth, tiny_weights, tmp_path, 2)
    kw = dict(override_configs=[TINY], sweeps=False, domains=["ImageNet", "ImageNetA"])
    run_grid(rows, [1], synth["root"], tmp_path / "here", opts, **kw)
    dirs = run_grid(rows, [1], synth["root"], tmp_path / "jobs", opts, jobs=LOCAL, **kw)
    assert metrics(tmp_path / "jobs") == metrics(tmp_path / "here") and len(metrics(tmp_path / "here")) == 4
    for d in dirs:  # each cell lists its job, whose logs exist
        job_id, executor, stdout, stderr = (d / JOBS_FILE).read_text().split()
        assert executor == "local" and stdout.startswith("stdout=")
        assert __import__("pathlib").Path(stderr.removeprefix("stderr=")).is_file()
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "jobs").rglob("results.json")}
    run_grid(rows, [1], synth["root"], tmp_path / "jobs", opts, jobs=LOCAL, **kw)  # all done: nothing submitted
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


@pytest.mark.slow
def test_a_killed_job_resumes_when_resubmitted_and_ends_with_the_same_weights(synth, tiny_weights, tmp_path):
    row = find_row("ConvpassCLIP")
    opts = tiny_opts(synth, tiny_weights, tmp_path, 150)
    cfg = build_cell_cfg(row, 1, synth["root"], tmp_path / "jobs", opts, [TINY])
    run_dir = RunDir(cfg.OUTPUT_DIR)
    [job] = submit_cells([PendingCell("ConvpassCLIP seed 1", cfg, [], False, {})], LOCAL, tmp_path / "jobs")
    deadline = time.time() + 300
    while len(list_checkpoints(run_dir.root)) < 1 or list_checkpoints(run_dir.root)[-1][0] < 3:
        assert time.time() < deadline and not job.done(), "the job ended before it could be killed"
        time.sleep(0.05)
    job.cancel()  # SIGINT, as a scheduler's cancellation
    job.wait()
    killed_at = list_checkpoints(run_dir.root)[-1][0]
    assert killed_at < 150 and cell_status(run_dir, ["ImageNet"])[0] == "interrupted"
    run_grid([row], [1], synth["root"], tmp_path / "jobs", opts, override_configs=[TINY], sweeps=False,
             domains=["ImageNet"], jobs=LOCAL)
    assert "Resuming from" in (run_dir.root / "log.txt").read_text()
    assert len((run_dir.root / JOBS_FILE).read_text().splitlines()) == 2  # the killed job and the resubmitted one
    run_grid([row], [1], synth["root"], tmp_path / "here", opts, override_configs=[TINY], sweeps=False,
             domains=["ImageNet"])
    here = RunDir(build_cell_cfg(row, 1, synth["root"], tmp_path / "here", opts, [TINY]).OUTPUT_DIR)
    resumed = load_checkpoint(list_checkpoints(run_dir.root)[-1][1])["state_dict"]
    straight = load_checkpoint(list_checkpoints(here.root)[-1][1])["state_dict"]
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in straight)


@pytest.mark.slow
def test_a_jobs_base2new_grid_evaluates_the_new_classes_inside_the_job(synth, tiny_weights, tmp_path):
    from clip_convpass.experiments.grid import run_base2new_grid

    opts = tiny_opts(synth, tiny_weights, tmp_path, 1)
    [cell] = run_base2new_grid([find_row("ConvpassCLIP")], ["ImageNet"], [1], synth["root"], tmp_path / "b2n", opts,
                               override_configs=[TINY], sweeps=False, jobs=LOCAL)
    new = json.loads(RunDir(cell).results("ImageNet", subsample="new").read_text())
    assert new["transfer"] and new["class_bound_rebuilt"]
    job_log = (cell / JOBS_FILE).read_text().split()[2].removeprefix("stdout=")
    assert "transfer evaluation on ImageNet (new classes)" in open(job_log).read()  # it ran inside the job


def test_job_options_are_checked_before_any_work():
    with pytest.raises(UserError, match="--cpus-per-job must be >= 1"):
        JobOptions("local", cpus_per_job=0).check()
    with pytest.raises(UserError, match="--executor must be one of"):
        JobOptions("pbs").check()


@pytest.mark.parametrize("grid", ["fewshot", "base2new"])
def test_a_suite_of_grids_goes_to_the_cluster_as_one_array(synth, tiny_weights, tmp_path, monkeypatch, grid):
    """Few-shot (dataset x shots) and base-to-new (per dataset) parts: one submission for all their cells, not one
    array per part waited on in turn."""
    from clip_convpass.experiments import grid as grid_module
    from clip_convpass.experiments import jobs

    calls = []
    monkeypatch.setattr(jobs, "submit_cells", lambda cells, options, output: calls.append(list(cells)) or
                        [f"job{i}" for i in range(len(cells))])
    monkeypatch.setattr(jobs, "wait_for", lambda cells, submitted: None)
    opts = tiny_opts(synth, tiny_weights, tmp_path, 1)
    rows = [find_row("ConvpassCLIP"), find_row("KgCoOp")]
    if grid == "fewshot":
        dirs = grid_module.run_fewshot_grid(rows, ["ImageNet"], [1, 2], [1, 2], synth["root"], tmp_path / "g", opts,
                                            override_configs=[TINY], sweeps=False, jobs=LOCAL)
        expected = 2 * 2 * 2  # shots x rows x seeds
    else:
        dirs = grid_module.run_base2new_grid(rows, ["ImageNet"], [1, 2], synth["root"], tmp_path / "g", opts,
                                             override_configs=[TINY], sweeps=False, jobs=LOCAL)
        expected = 2 * 2
    assert len(calls) == 1 and len(calls[0]) == expected
    assert sorted(map(str, dirs)) == sorted({cell.cfg.OUTPUT_DIR for cell in calls[0]}) and len(set(dirs)) == expected
