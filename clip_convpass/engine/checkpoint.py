"""Checkpoints: only trainable tensors (+ a method's extra state) and optimizer/scheduler/scaler state,
written atomically by rank 0, loaded weights-only, checked for compatibility before use."""
from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Sequence

import torch

from clip_convpass.config import LOCATION_KEYS, NEUTRAL_KEYS, ConfigError, config_hash, flat_items
from clip_convpass.engine.rundir import CHECKPOINT_PREFIX, RunDir
from clip_convpass.utils import distributed
from clip_convpass.utils.errors import UserError, refuse_unsafe_load_override
from clip_convpass.utils.io import atomic_torch_save

if TYPE_CHECKING:
    from clip_convpass.engine.trainer import TrainerBase

logger = logging.getLogger(__name__)
_PATTERN = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)\.pt$")


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint was made for another trainer, backbone, class count, module shape or configuration."""


class NonFiniteStateError(UserError, FloatingPointError):
    """Parameters or optimizer state became NaN/inf: such a state is never saved."""


# A run may resume with these changed (extend training, evaluate differently, move files, log less);
# any other difference is another experiment, and resuming refuses it.
RESUME_MAY_DIFFER = (*LOCATION_KEYS, *NEUTRAL_KEYS, "OPTIM.MAX_EPOCH", "TRAIN.CHECKPOINT_FREQ",
                     "TRAIN.KEEP_CHECKPOINTS", "TRAIN.CHECKPOINT_MIN_SECONDS", "NAME", "DEVICE")
RESUME_MAY_DIFFER_PREFIXES = ("TEST.",)


def config_differences(saved_yaml: str, cfg) -> list[tuple[str, object, object]]:
    """(key, saved value, current value) for every key that differs and may not differ on resume."""
    saved, current = flat_items(saved_yaml), flat_items(cfg)
    keys = sorted(set(saved) | set(current))
    # a key added since the run was made differs only if set to other than its default: a new key's default
    # keeps what runs did before it existed
    added_at_default = {k for k in set(current) - set(saved) if current[k] == default_items().get(k, object())}
    return [(k, saved.get(k), current.get(k)) for k in keys
            if saved.get(k) != current.get(k) and k not in RESUME_MAY_DIFFER and k not in added_at_default
            and not k.startswith(RESUME_MAY_DIFFER_PREFIXES)]


@functools.lru_cache(maxsize=1)
def default_items() -> dict:
    from clip_convpass.config import get_cfg_default

    return flat_items(get_cfg_default())


def format_differences(diffs: list[tuple[str, object, object]], then: str, limit: int = 6) -> str:
    """"KEY: a <then>, b now; ..." for the first `limit` differences, and how many more there are."""
    shown = "; ".join(f"{k}: {a!r} {then}, {b!r} now" for k, a, b in diffs[:limit])
    return shown + (f" (and {len(diffs) - limit} more)" if len(diffs) > limit else "")


def check_resume_config(run_dir: RunDir, cfg) -> None:
    """Refuse to continue a run directory whose newest checkpoint was made with another configuration."""
    path = latest_checkpoint(run_dir.root)
    if path is None:
        return
    saved = load_checkpoint(path).get("config")
    if saved is None:
        logger.warning(f"{path} predates stored configurations; cannot check that it is the same experiment")
        return
    diffs = config_differences(saved, cfg)
    if diffs:
        raise CheckpointMismatchError(
            f"{run_dir.root} holds a run of another configuration ({format_differences(diffs, 'in the checkpoint')}); "
            f"use another output directory, or --force to discard its checkpoints and start afresh")


class MissingCheckpointError(UserError, FileNotFoundError):
    """A run directory holds no checkpoint to load."""


class StaleResultsError(ConfigError):
    """Stored results were made with another configuration than the one asked for."""


def check_stored_config(run_dir: RunDir, cfg, remedy: str) -> None:
    """Results count as done only for the configuration that made them (grid cells, sweep points): refuse
    stored results of another, naming the keys that differ."""
    if not run_dir.config.is_file():
        return
    diffs = config_differences(run_dir.config.read_text(), cfg)
    if diffs:
        raise StaleResultsError(f"{run_dir.root} holds results of another configuration "
                                f"({format_differences(diffs, 'then', 5)}); {remedy}, or use another --output")


def discard_training_state(run_dir: RunDir) -> None:
    """--force: forget checkpoints and history so that training starts from scratch."""
    import shutil

    if run_dir.checkpoints.is_dir():
        shutil.rmtree(run_dir.checkpoints)
    run_dir.history.unlink(missing_ok=True)


def file_digest(path: str | Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def checkpoint_digest(output_dir: str | Path) -> str:
    """The newest checkpoint's identity (a hash of its bytes): what state derived from a trained model records,
    so that a retrained run (same configuration, new weights) is recognised."""
    path = latest_checkpoint(output_dir)
    return file_digest(path) if path is not None else ""


def remove_stale_temp_files(output_dir: str | Path) -> None:
    """Checkpoint writes killed before their rename leave `.model-epochN.pt.*.tmp` behind."""
    d = RunDir(output_dir).checkpoints
    if d.is_dir():
        for tmp in d.glob(f".{CHECKPOINT_PREFIX}*.tmp"):
            logger.info(f"Removing {tmp}, left by an interrupted checkpoint write")
            tmp.unlink()


def non_finite_tensors(tree, prefix: str = "") -> list[str]:
    """Names of floating-point tensors holding NaN or inf anywhere in nested dicts/lists."""
    bad = []
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and not torch.isfinite(tree).all():
            bad.append(prefix or "tensor")
    elif isinstance(tree, dict):
        for k, v in tree.items():
            bad += non_finite_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            bad += non_finite_tensors(v, f"{prefix}[{i}]")
    return bad


def checkpoint_path(output_dir: str | Path, epoch: int) -> Path:
    return RunDir(output_dir).checkpoint(epoch)


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    d = RunDir(output_dir).checkpoints
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _PATTERN.match(p.name))]
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Optional[Path]:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def save_checkpoint(output_dir: str | Path, epoch: int, state: dict, keep: int = 1) -> Path:
    """Write atomically, read the file back, and only then delete checkpoints beyond the newest `keep`."""
    bad = non_finite_tensors(state)
    if bad:
        last = latest_checkpoint(output_dir)
        raise NonFiniteStateError(
            f"Epoch {epoch}: non-finite values in {', '.join(bad[:5])}; not saved. Last good checkpoint: "
            f"{last if last else 'none yet'} (lower OPTIM.LR, or check the data)")
    path = checkpoint_path(output_dir, epoch)
    atomic_torch_save(path, state)
    load_checkpoint(path)  # verified readable before any older checkpoint goes
    for _, old in list_checkpoints(output_dir)[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist")
    refuse_unsafe_load_override()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's text suggests weights_only=False, which we never do
        raise CheckpointMismatchError(f"Cannot read checkpoint {path} as a weights-only file "
                                      f"({type(e).__name__}); it is corrupt or not a checkpoint of this project") from e


# Settings that compute the same model whatever their value (exact shortcuts): may differ at evaluation.
SAME_MODEL_KEYS = ("MODEL.FUSED_ATTENTION", "MODEL.TEXT_TRUNCATE", "MODEL.TEXT_SHARED_PREFIX")
SAME_MODEL_SUFFIXES = (".FAST_ATTENTION", ".PROMPTS_PER_CHUNK")


def model_differences(saved_yaml: str, cfg, node: str, training_only=()) -> list[tuple[str, object, object]]:
    """(key, trained value, current value) of the keys that define the trained model (MODEL.*, the method's
    TRAINER node less its training-only keys) and differ: evaluating the checkpoint under them would score
    another model."""
    saved, current = flat_items(saved_yaml), flat_items(cfg)
    prefixes = ("MODEL.", "TRAINER.NAME", *((f"TRAINER.{node}.",) if node else ()))
    skip = {f"TRAINER.{node}.{k}" for k in training_only}
    keys = sorted(k for k in set(saved) | set(current) if k.startswith(prefixes) and k not in skip)
    return [(k, saved.get(k), current.get(k)) for k in keys
            if saved.get(k) != current.get(k) and k not in (*LOCATION_KEYS, *NEUTRAL_KEYS, *SAME_MODEL_KEYS)
            and not k.endswith(SAME_MODEL_SUFFIXES)]


def is_class_bound(name: str, class_bound: Sequence[str]) -> bool:
    """Whether a checkpointed tensor (a parameter's name, or extra.<key>) is one a method declares class-bound:
    a listed name, or under a listed prefix ending in '.'."""
    return any(name == p or (p.endswith(".") and name.startswith(p)) for p in class_bound)


def describe_classes(c: dict) -> str:
    sub = c.get("subsample", "all")
    n = f"{c['n']} classes" if "n" in c else "classes"
    names = f" (names {c['sha256']})" if "sha256" in c else ""
    return f"{c['dataset']}'s {sub + ' ' if sub != 'all' else ''}{n}{names}"


def same_classes(a: dict, b: dict) -> bool:
    """Two class identities (DatasetBase.class_identity) name the same classes in the same order."""
    return a["sha256"] == b["sha256"]


def check_compatible(saved_meta: dict, current_meta: dict, path: str | Path,
                     class_bound: Optional[Sequence[str]] = None) -> None:
    """The checkpoint fits this model. class_bound (a transfer evaluation): the tensors so declared are left out,
    as the model rebuilds them for its own classes; everything else must match as always."""
    for key in ("trainer", "backbone") + (("num_classes",) if class_bound is None else ()):
        if saved_meta.get(key) != current_meta.get(key):
            raise CheckpointMismatchError(
                f"{path} was saved for {key}={saved_meta.get(key)!r}, but this run has {key}={current_meta.get(key)!r}"
            )
    saved_classes, current_classes = saved_meta.get("classes"), current_meta.get("classes")
    if class_bound is None and saved_classes and current_classes and not same_classes(saved_classes, current_classes):
        raise CheckpointMismatchError(
            f"{path} was trained over {describe_classes(saved_classes)}, but this run is built over "
            f"{describe_classes(current_classes)}: its class-bound weights would score other classes; evaluate it on "
            f"other classes only as a transfer evaluation (--eval-only --model-dir), or on its own classes")
    bound = class_bound or ()
    saved = {k: v for k, v in saved_meta.get("shapes", {}).items() if not is_class_bound(k, bound)}
    cur = {k: v for k, v in current_meta.get("shapes", {}).items() if not is_class_bound(k, bound)}
    if set(saved) != set(cur):
        extra, missing = sorted(set(saved) - set(cur)), sorted(set(cur) - set(saved))
        raise CheckpointMismatchError(
            f"{path} holds other trainable tensors than this model: unexpected {extra[:5]}, missing {missing[:5]} "
            f"(was it saved with another method variant?)"
        )
    bad = [(k, saved[k], cur[k]) for k in cur if list(saved[k]) != list(cur[k])]
    if bad:
        k, s, c = bad[0]
        raise CheckpointMismatchError(
            f"{path}: tensor {k} has shape {s} in the checkpoint but {c} in this model "
            f"({len(bad)} mismatching; another backbone or hidden size?)"
        )


class CheckpointManager:
    """Save, load, resume and compatibility checks for one trainer's run directory."""

    def __init__(self, trainer: "TrainerBase"):
        self.trainer = trainer

    @property
    def output_dir(self) -> Path:
        return self.trainer.output_dir

    def trainable_state_dict(self) -> Dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.trainer.trainable_named_parameters()}

    def meta(self) -> dict:
        t = self.trainer
        state = {**self.trainable_state_dict(), **{f"extra.{k}": v for k, v in t.extra_state().items()}}
        return {"trainer": t.NAME, "backbone": t.cfg.MODEL.BACKBONE, "num_classes": len(t.classnames),
                "classes": t.dataset.class_identity(), "shapes": {k: list(v.shape) for k, v in state.items()}}

    def save(self, epoch: int) -> Optional[Path]:
        t = self.trainer
        if not distributed.is_main():
            distributed.barrier()  # rank 0 writes; the others wait so no one reads a half-written file
            return None
        state = {
            "epoch": epoch,
            "meta": self.meta(),
            "state_dict": self.trainable_state_dict(),
            "extra_state": {k: v.detach().cpu() for k, v in t.extra_state().items()},
            "optimizer": t.optim.state_dict() if t.optim else None,
            "scheduler": t.sched.state_dict() if t.sched else None,
            "scaler": t.scaler.state_dict() if t.scaler.is_enabled() else None,
            "config_hash": config_hash(t.cfg),
            "config": t.cfg.dump(),
            "train_dataset": t.cfg.DATASET.NAME,
        }
        path = save_checkpoint(self.output_dir, epoch, state, keep=t.cfg.TRAIN.KEEP_CHECKPOINTS)
        logger.info(f"Saved checkpoint {path}")
        distributed.barrier()
        return path

    def check_trained_model(self, saved_config: str, path) -> None:
        """An evaluation scores the model that was trained: refuse model settings other than the trained ones."""
        t = self.trainer
        diffs = model_differences(saved_config, t.cfg, t.CONFIG_NODE, t.TRAINING_ONLY_KEYS)
        if diffs:
            raise CheckpointMismatchError(
                f"{path} was trained with other model settings ({format_differences(diffs, 'when trained')}); "
                f"evaluating it under these would "
                f"score a model that was never trained; drop those keys (the run's config.yaml has the trained ones)")

    def load(self, path: Path, with_optimizer: bool = False, transfer: bool = False,
             ckpt: Optional[dict] = None) -> int:
        """Load weights (and optionally optimizer state); returns the number of epochs done.

        transfer: the checkpoint was trained over other classes; only its class-agnostic tensors are loaded, and
        the class-bound ones the method declares (class_bound_state) stay as built for this run's classes.
        ckpt: the file's contents when the caller has read it already."""
        t = self.trainer
        if transfer and with_optimizer:
            raise ValueError("a transfer to other classes is an evaluation; it never resumes training")
        ckpt = ckpt if ckpt is not None else load_checkpoint(path)
        bound = t.class_bound_state() if transfer else None
        check_compatible(ckpt["meta"], self.meta(), path, bound)
        if not with_optimizer and ckpt.get("config"):  # an evaluation: the model must be the one trained
            self.check_trained_model(ckpt["config"], path)
        state, extra = ckpt["state_dict"], ckpt.get("extra_state", {})
        if bound:
            state = {k: v for k, v in state.items() if not is_class_bound(k, bound)}
            extra = {k: v for k, v in extra.items() if not is_class_bound(f"extra.{k}", bound)}
        params = dict(t.trainable_named_parameters())
        with torch.no_grad():
            for name, tensor in state.items():
                params[name].copy_(tensor)
        t.load_extra_state({k: v.to(t.device) for k, v in extra.items()})
        if with_optimizer:
            if t.optim is not None and ckpt.get("optimizer") is not None:
                t.optim.load_state_dict(ckpt["optimizer"])
            if t.sched is not None and ckpt.get("scheduler") is not None:
                t.sched.load_state_dict(ckpt["scheduler"])
            if t.scaler.is_enabled() and ckpt.get("scaler") is not None:
                t.scaler.load_state_dict(ckpt["scaler"])
        logger.info(f"Loaded weights from {path} (epoch {ckpt['epoch']})")
        return self.adopt_training_run(ckpt, path)

    def adopt_training_run(self, ckpt: dict, path: Path) -> int:
        """What results.json reports of the weights: the training run's epochs, dataset, configuration, classes
        and checkpoint file; returns the epochs done."""
        t = self.trainer
        t.epochs_done = int(ckpt["epoch"])
        t.train_dataset = ckpt.get("train_dataset", t.train_dataset)
        t.train_config = ckpt.get("config", t.train_config)
        t.train_classes = ckpt["meta"].get("classes", t.train_classes)
        t.weights_sha256 = file_digest(path)
        return t.epochs_done

    def load_from_model_dir(self, model_dir: str | Path, epoch: Optional[int] = None,
                            allow_transfer: bool = False) -> int:
        """Load a trained run's weights for an evaluation. allow_transfer: a run trained over other classes than
        this run's is evaluated by the method's transfer rule (TrainerBase.class_bound_state /
        transfer_undefined): its class-bound state is rebuilt for these classes, or, where the method defines
        none, the evaluation is marked not applicable (trainer.transfer)."""
        t = self.trainer
        if not t.trainable_named_parameters() and not t.extra_state():
            self.adopt_untrained_run(model_dir)
            return 0
        path = checkpoint_path(model_dir, epoch) if epoch is not None else latest_checkpoint(model_dir)
        if path is None or not Path(path).is_file():
            which = f"for epoch {epoch} " if epoch is not None else ""
            raise MissingCheckpointError(f"No checkpoint {which}in {RunDir(model_dir).checkpoints} (--model-dir must "
                                         f"be a trained run's directory)")
        ckpt = load_checkpoint(path)
        saved = ckpt["meta"].get("classes")
        own = t.dataset.class_identity()
        if allow_transfer and saved is None and ckpt.get("config"):  # made before checkpoints recorded classes
            items = flat_items(ckpt["config"])
            trained = {"dataset": items.get("DATASET.NAME"), "subsample": items.get("DATASET.SUBSAMPLE", "all")}
            if trained["dataset"] != own["dataset"] or trained["subsample"] != own["subsample"]:
                raise CheckpointMismatchError(
                    f"{path} predates checkpoints that record their classes and was trained over "
                    f"{describe_classes(trained)}: which of its tensors belong to which classes cannot be checked, so "
                    f"it is not evaluated on {describe_classes(own)}; retrain it")
        if not allow_transfer or saved is None or same_classes(saved, own):
            return self.load(path, ckpt=ckpt)
        reason = t.transfer_undefined()
        if reason:  # nothing to evaluate, but it must be the run it claims to be
            check_compatible(ckpt["meta"], self.meta(), path, t.class_bound_state())
            if ckpt.get("config"):
                self.check_trained_model(ckpt["config"], path)
            t.transfer = {"rebuilt": False, "not_applicable": reason}
            logger.warning(f"{path} was trained over {describe_classes(saved)}; on {describe_classes(own)} "
                           f"{t.NAME} is not applicable: {reason}")
            return self.adopt_training_run(ckpt, path)
        done = self.load(path, transfer=True, ckpt=ckpt)
        t.transfer = {"rebuilt": True, "not_applicable": ""}
        logger.info(f"Transfer evaluation: {path} was trained over {describe_classes(saved)}; its class-agnostic state "
                    f"is loaded and its class-bound state ({', '.join(t.class_bound_state()) or 'none'}) is rebuilt "
                    f"for {describe_classes(own)}")
        return done

    def adopt_untrained_run(self, model_dir: str | Path) -> None:
        """A method with nothing trained (zero-shot) evaluated from a run directory: the run's configuration and
        classes are what its results belong to."""
        t = self.trainer
        config = RunDir(model_dir).config
        if not config.is_file():
            logger.info(f"{t.NAME} has no trained state; nothing to load from {model_dir}")
            return
        text = config.read_text()
        self.check_trained_model(text, config)
        from clip_convpass.data import build_dataset

        items = flat_items(text)
        trained = t.cfg.clone()  # the run's dataset and classes, read from this run's data root
        trained.defrost()
        trained.DATASET.SUBSAMPLE = items.get("DATASET.SUBSAMPLE", "all")
        if items.get("DATASET.CLASS_LIST") and Path(items["DATASET.CLASS_LIST"]).is_file():
            trained.DATASET.CLASS_LIST = items["DATASET.CLASS_LIST"]  # the run's own class universe
        t.train_config, t.train_dataset = text, items["DATASET.NAME"]
        t.train_classes = build_dataset(trained, items["DATASET.NAME"]).class_identity()
        logger.info(f"{t.NAME} has no trained state; evaluating it as the run in {model_dir} "
                    f"({describe_classes(t.train_classes)})")

    def latest(self) -> Optional[Path]:
        return latest_checkpoint(self.output_dir)

    def resume(self) -> int:
        """Load the run directory's newest checkpoint with optimizer state; epochs done (0 if none)."""
        remove_stale_temp_files(self.output_dir)
        path = self.latest()
        if path is None:
            return 0
        done = self.load(path, with_optimizer=True)
        logger.info(f"Resuming from {path}: {done} of {self.trainer.max_epoch} epochs done")
        return done
