"""Run one configured experiment: build the trainer, train (resuming if possible) and/or evaluate."""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence

from clip_convpass.config import config_hash
from clip_convpass.data import build_dataset
from clip_convpass.engine.checkpoint import check_resume_config, discard_training_state, latest_checkpoint
from clip_convpass.engine.evaluation import check_same_classes
from clip_convpass.engine.rundir import RunDir
from clip_convpass.registry import DATASET_REGISTRY, TRAINER_REGISTRY
from clip_convpass.utils import distributed
from clip_convpass.utils.io import atomic_write_text
from clip_convpass.utils.locks import exclusive_lock
from clip_convpass.utils.logging import setup_logger
from clip_convpass.utils.runtime import environment_info, resolve_device

logger = logging.getLogger(__name__)


def build_trainer(cfg):
    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)


def run(cfg, eval_only: bool = False, model_dir: str = "", load_epoch: Optional[int] = None,
        eval_datasets: Sequence[str] = (), eval_step0: bool = False, force: bool = False,
        annotations: Optional[dict] = None) -> List[dict]:
    """Train and/or evaluate; returns the result records written to OUTPUT_DIR/eval/<dataset>/results.json.

    eval_datasets: further datasets (registry names) to evaluate the same model on, in this process.
    eval_step0: also evaluate the freshly built model before training (OUTPUT_DIR/eval_step0/), e.g. to
    put zero-shot accuracy next to trained accuracy in the head-initialisation experiments.
    force: discard the run directory's checkpoints and history and train afresh.
    model_dir (with eval_only): the trained run to evaluate on this configuration's dataset and classes. Trained
    over other classes (DATASET.SUBSAMPLE new after base, another dataset), it is a transfer evaluation: the
    method's class-agnostic state is loaded and its class-bound state rebuilt for these classes, or its results
    say n/a where the method has no transfer rule (TrainerBase.class_bound_state / transfer_undefined).
    annotations: facts written into every results.json of this run (e.g. {"selected": ...} by a sweep).
    Resuming a run whose checkpoint was made with another configuration is refused before any work.
    """
    TRAINER_REGISTRY.get(cfg.TRAINER.NAME)  # unknown trainer or dataset: fail before any work
    for name in eval_datasets:
        DATASET_REGISTRY.get(name)
    distributed.init_from_env(resolve_device(cfg.DEVICE))
    run_dir = RunDir(cfg.OUTPUT_DIR)
    out = run_dir.root
    out.mkdir(parents=True, exist_ok=True)
    if not distributed.is_main():  # under torchrun, rank 0 holds the lock and writes logs and files
        setup_logger(None, level=logging.WARNING)
        return _run_trainer(cfg, eval_only, model_dir, load_epoch, eval_datasets, eval_step0, annotations)
    # One process at a time may train into a directory (checkpoints, history); evaluations of
    # different datasets only write their own eval/<dataset>/ and may run side by side.
    lock = run_dir.eval_lock(cfg.DATASET.NAME, cfg.DATASET.SUBSAMPLE) if eval_only else run_dir.lock
    with exclusive_lock(lock, f"Output directory {out}"):
        if not eval_only:
            if force:
                discard_training_state(run_dir)
            check_resume_config(run_dir, cfg)  # before config.yaml is replaced
        setup_logger(out, run_dir.log_name)
        logger.info("=" * 20 + f" {'evaluation' if eval_only else 'run'} " + "=" * 20)
        logger.info(f"Environment: {environment_info()}, processes: {distributed.world_size()}")
        logger.info(f"Config (hash {config_hash(cfg)}):\n{cfg.dump()}")
        # an evaluation of a trained run must not overwrite the training run's config
        (run_dir.eval_config(cfg.DATASET.NAME, cfg.DATASET.SUBSAMPLE) if eval_only else run_dir.config).write_text(cfg.dump())
        try:
            results = _run_trainer(cfg, eval_only, model_dir, load_epoch, eval_datasets, eval_step0, annotations)
        except BaseException as e:  # a training run records why it failed, for `grid --status`
            if not eval_only and not isinstance(e, KeyboardInterrupt):  # interrupted (a cancelled job): resumes
                atomic_write_text(run_dir.error, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}\n")
            raise
        if not eval_only:
            run_dir.error.unlink(missing_ok=True)
        return results


def check_splits_before_work(trainer, eval_sets, eval_only: bool) -> None:
    """Every split the run will read is read now, so that a missing image, an empty split or an evaluation
    set over other classes fails before minutes of training, not after."""
    from clip_convpass.data.types import DatasetLayoutError

    evaluated = eval_only or trainer.cfg.TEST.AFTER_TRAIN
    if evaluated and trainer.cfg.TEST.SPLIT == "test" and not trainer.dataset.test:
        raise DatasetLayoutError(f"{trainer.dataset.NAME}: the test split is empty")
    if not eval_only and trainer.is_trainable and not trainer.dataset.train_x:
        raise DatasetLayoutError(f"{trainer.dataset.NAME}: the training split gives no shots")
    for ds in eval_sets:
        if not ds.test:
            raise DatasetLayoutError(f"{ds.NAME}: the test split is empty")
        check_same_classes(trainer, ds)


def _run_trainer(cfg, eval_only, model_dir, load_epoch, eval_datasets, eval_step0, annotations) -> List[dict]:
    trainer = build_trainer(cfg)
    trainer.annotations.update(annotations or {})
    eval_sets = [build_dataset(cfg, name) for name in eval_datasets]
    check_splits_before_work(trainer, eval_sets, eval_only)
    results = []
    if eval_step0 and not eval_only and latest_checkpoint(cfg.OUTPUT_DIR) is None:
        trainer.initialize()  # step 0 is the model training starts from (LP-FT: the probed head)
        results.append(trainer.test(stage="step0"))
        for ds in eval_sets:
            results.append(trainer.test(ds, stage="step0"))
    if eval_only:
        if model_dir:  # trained over other classes: a transfer evaluation, by the method's own rule
            trainer.load_from_model_dir(model_dir, load_epoch, allow_transfer=True)
        elif trainer.trainable_named_parameters() or trainer.extra_state():
            logger.warning("--eval-only without --model-dir: evaluating the untrained model")
    else:
        trainer.train()
    if eval_only or cfg.TEST.AFTER_TRAIN:
        results.append(trainer.test())
    for ds in eval_sets:
        results.append(trainer.test(ds))
    return results
