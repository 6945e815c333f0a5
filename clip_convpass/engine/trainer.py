"""TrainerBase: the hooks a method implements and the training loop (Dassl style); see
docs/ARCHITECTURE.md for what a method declares. Evaluation lives in evaluation.py, checkpoints in
checkpoint.py, paths in rundir.py, loaders in data/."""
from __future__ import annotations

import itertools
import logging
import math
import random
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clip_convpass.config import ConfigError
from clip_convpass.data import DatasetBase, build_dataset, build_loader
from clip_convpass.data.images import log_new_skipped
from clip_convpass.data.loader import set_stream
from clip_convpass.data.types import stable_int
from clip_convpass.engine import evaluation, precision
from clip_convpass.engine.checkpoint import CheckpointManager
from clip_convpass.engine.optim import build_lr_scheduler, build_optimizer
from clip_convpass.engine.rundir import RunDir
from clip_convpass.models.prompts import resolve_templates
from clip_convpass.registry import DATASET_REGISTRY
from clip_convpass.utils import distributed
from clip_convpass.utils.errors import UserError
from clip_convpass.utils.logging import Progress, RunClock, format_seconds
from clip_convpass.utils.runtime import resolve_device, set_random_seed

logger = logging.getLogger(__name__)


class NonFiniteLossError(UserError, FloatingPointError):
    """Training produced a NaN or infinite loss."""


class TrainerBase:
    NAME = ""
    FROZEN_IMAGE_ENCODER = False
    CONFIG_NODE = ""  # TRAINER.<CONFIG_NODE> holds this method's keys
    # keys of its node that only steer training (searches, learning-rate multipliers): they may differ when a
    # checkpoint is evaluated; every other key of the node defines the evaluated model and must match
    TRAINING_ONLY_KEYS: Tuple[str, ...] = ()
    # What the method declares about its keys' validation (tests/trainers/test_fidelity.py checks every one):
    # for each validated key, a value check_config refuses; pairs refused only together; keys that take any value.
    INVALID_EXAMPLES: Dict[str, str] = {}
    INVALID_PAIRS: Dict[Tuple[str, str], Tuple[str, str]] = {}
    FREE_KEYS: Tuple[str, ...] = ()

    def __init__(self, cfg):
        self.cfg = cfg
        self.device = resolve_device(cfg.DEVICE)
        distributed.init_from_env(self.device)  # no-op unless launched by torchrun with WORLD_SIZE > 1
        self.device = distributed.local_device(self.device)
        set_random_seed(cfg.SEED)
        self.output_dir = Path(cfg.OUTPUT_DIR)
        self.run_dir = RunDir(self.output_dir)
        self._mixer = None  # timm's Mixup, made at the first mixed batch (TRAIN.MIXUP / TRAIN.CUTMIX)
        own_loss = type(self).forward_backward is not TrainerBase.forward_backward
        if own_loss and (cfg.TRAIN.MIXUP or cfg.TRAIN.CUTMIX or cfg.TRAIN.LABEL_SMOOTHING):
            raise ConfigError(f"{self.NAME} computes its own loss: TRAIN.MIXUP, TRAIN.CUTMIX and TRAIN.LABEL_SMOOTHING "
                              f"do not apply to it; leave them 0")
        dataset_cls = DATASET_REGISTRY.get(cfg.DATASET.NAME)
        if not dataset_cls.NAMED_CLASSES and self.reads_class_names(cfg):  # before any work
            raise ConfigError(f"{self.NAME} reads class names (text prompts), and {dataset_cls.NAME} knows its classes by "
                              f"label only; use a method whose head does not start from text (e.g. ConvpassCLIP or "
                              f"PETLCLIP with HEAD_INIT random)")
        self.dataset: DatasetBase = build_dataset(cfg)
        self.classnames = self.dataset.universe.classnames  # the model is built over these
        self.model: Optional[nn.Module] = None
        self.start_epoch = self.epoch = self.epochs_done = 0
        self.steps_per_epoch = 1  # set from the training loader
        self.train_dataset = cfg.DATASET.NAME  # replaced by the checkpoint's when weights are loaded
        self.train_config = cfg.dump()  # likewise: the configuration the weights were trained with
        self.train_classes = self.dataset.class_identity()  # likewise: the classes they were trained over
        # set by a transfer evaluation (weights trained over other classes): {"rebuilt": the class-bound state was
        # rebuilt for these classes, "not_applicable": why the method has no transfer rule ("" if it has)}
        self.transfer: dict = {}
        self.weights_sha256 = ""  # the checkpoint file weights were loaded from (results.json: which weights)
        self.skipped_train_images: set = set()
        self.prompt_info: dict = {}  # the text a method's classifier starts from (recorded in results.json)
        self.annotations: dict = {}  # further facts for results.json (e.g. values chosen by a sweep)
        self._initialized = False  # init_from_data has run (or the weights came from a checkpoint)
        self.run_clock: Optional[RunClock] = None  # run-level ETA, made once the loader's length is known
        self._tb = None  # TensorBoard writer, made at the first epoch with TRAIN.TENSORBOARD
        self._train_loader = None  # made at the first epoch, kept (with its workers) until training ends
        self.build_model()
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__}.build_model() must set self.model")
        self.model.to(self.device)
        n_train = sum(p.numel() for _, p in self.trainable_named_parameters())
        n_all = sum(p.numel() for p in self.model.parameters())
        logger.info(f"{self.NAME}: {n_train:,} trainable parameters of {n_all:,} in the model")
        self.optim = self.sched = None
        self.ddp: Optional[nn.Module] = None
        if self.is_trainable:
            self.optim = build_optimizer(self.optimizer_param_groups(), cfg.OPTIM)
            self.sched = build_lr_scheduler(self.optim, cfg.OPTIM, lambda: self.steps_per_epoch,
                                            lambda: self.iteration_budget / self.steps_per_epoch
                                            if self.iteration_budget else None)
            self.ddp = distributed.wrap_trainable(self.model, self.device)
        self.prec, self.scaler = precision.setup(cfg.PREC, self.device)
        self.checkpoints = CheckpointManager(self)

    def templates(self, spec: str) -> List[str]:
        """A method's TEMPLATES value as format strings (\"dataset\": the training dataset's own)."""
        return resolve_templates(spec, type(self.dataset))

    # ---- the method's own configuration (classmethods: read before any trainer exists) --------
    @classmethod
    def config_node(cls):
        """Defaults of TRAINER.<CONFIG_NODE> (a yacs CfgNode), for methods that own keys."""
        raise NotImplementedError

    @classmethod
    def check_config(cls, cfg) -> None:
        """Raise ConfigError for invalid values of the method's own keys."""

    @classmethod
    def reads_class_names(cls, cfg) -> bool:
        """Whether the method, so configured, builds anything from the class names (text prompts); a dataset that
        knows its classes by label only (VTAB-1K) refuses such a method before any work."""
        return True

    # ---- hooks ------------------------------------------------------------------------------
    def build_model(self) -> None:
        """Set self.model: an nn.Module whose parameters with requires_grad are what trains and checkpoints hold."""
        raise NotImplementedError

    def model_inference(self, images: torch.Tensor) -> torch.Tensor:
        """Logits over the class universe."""
        if self.FROZEN_IMAGE_ENCODER:
            return self.logits_from_features(self.encode_images(images))
        raise NotImplementedError

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) features of the frozen image encoder (by default self.model.visual)."""
        return self.model.visual(images)

    def logits_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def class_text_features(self, compute, state: Sequence[torch.Tensor]) -> torch.Tensor:
        """compute() of the class texts: each training step anew (gradients flow), at evaluation once per state of
        the tensors they depend on (their identity and _version, which every in-place update and checkpoint load
        bumps) and autocast mode, not once per batch."""
        if torch.is_grad_enabled():
            return compute()
        key = (tuple((id(t), t._version) for t in state), torch.is_autocast_enabled(self.device.type))
        if getattr(self, "_text_cache_key", None) != key:
            self._text_cache = compute()
            self._text_cache_key = key
        return self._text_cache

    def logits_over(self, feats: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """Logits of the universe columns a dataset is scored on (a method may compute only those)."""
        return self.logits_from_features(feats).index_select(1, columns)

    def forward_backward(self, batch: dict) -> Dict[str, float]:
        images, labels = batch["img"].to(self.device), batch["label"].to(self.device)
        images, targets = self.mix(images, labels)
        with self.autocast():  # through DDP under torchrun (every model's forward() is its model_inference)
            logits = self.ddp(images) if self.ddp is not None else self.model_inference(images)
            loss = self.classification_loss(logits.float(), targets)
        self.optimize(loss)
        acc = (logits.argmax(1) == labels).float().mean().item() * 100
        return {"loss": loss.item(), "acc": acc}

    def before_train(self) -> None:
        """Called once before the first epoch (also when resuming)."""

    def after_train(self) -> None:
        """Called after the last epoch, or after fitting a training-free method."""

    def before_epoch(self) -> None:
        """Called before every epoch."""

    def after_epoch(self) -> None:
        """Called after every epoch, before its checkpoint."""

    def set_model_mode(self, train: bool) -> None:
        # nothing in a frozen-encoder method's model behaves differently in training
        self.model.train(train and not self.FROZEN_IMAGE_ENCODER)

    def optimizer_param_groups(self) -> List[dict]:
        """Groups {"params", "lr_mult"} for the optimizer (e.g. a head learning-rate multiplier)."""
        return [{"params": [p for _, p in self.trainable_named_parameters()], "lr_mult": 1.0}]

    def init_from_data(self) -> None:
        """State a method derives from the training data before its first step (LP-FT's probed head);
        called once on a fresh run, before the step-0 evaluation and training."""

    def initialize(self) -> None:
        if not self._initialized:
            self._initialized = True
            self.init_from_data()

    def fit(self) -> bool:
        """Training-free methods compute their state from the training data here (cache, probe).

        Return True if there is state to checkpoint."""
        return False

    def wise_ft_start(self) -> None:
        """Make the freshly built model the one fine-tuning started from (WiSE-FT's theta_0): as built, unless
        a method derives its starting state from data before training (Tip-Adapter-F's cache)."""

    def wise_ft_tensors(self) -> Dict[str, torch.Tensor]:
        """What WiSE-FT interpolates between theta_0 and the trained model: the gradient-trained parameters, and
        whatever else fine-tuning changed that the method names."""
        return dict(self.trainable_named_parameters())

    # ---- transfer to other classes (base-to-new, cross-dataset): each method declares its rule -------------
    def class_bound_state(self) -> Tuple[str, ...]:
        """The checkpointed tensors built over the training classes: parameter names, extra state as
        "extra.<key>", or name prefixes ending in ".". The rest of the trained state is class-agnostic: a transfer
        evaluation loads it, and keeps the class-bound tensors as build_model made them for the target classes."""
        return ()

    def transfer_undefined(self) -> str:
        """Why this model cannot be evaluated on classes it was not trained on (reported as n/a), or "" when its
        class-bound state can be rebuilt for them as build_model builds it."""
        return ""

    def extra_state(self) -> Dict[str, torch.Tensor]:
        """Non-parameter tensors the method must checkpoint (e.g. a cache)."""
        return {}

    def load_extra_state(self, state: Dict[str, torch.Tensor]) -> None:
        """Restore what extra_state() returned."""

    # ---- parameters, checkpoints ------------------------------------------------------------
    @property
    def is_trainable(self) -> bool:
        # max_epoch > 0 exactly when MAX_EPOCH > 0 (a budget is at least one iteration); this reads no data
        return bool(self.trainable_named_parameters()) and self.cfg.OPTIM.MAX_EPOCH > 0

    @property
    def iteration_budget(self) -> int:
        """OPTIM.ITERS_PER_SHOT x NUM_SHOTS training iterations, or 0 (MAX_EPOCH epochs)."""
        return self.cfg.OPTIM.ITERS_PER_SHOT * max(self.cfg.DATASET.NUM_SHOTS, 0)

    @property
    def max_epoch(self) -> int:
        """The epochs training runs: MAX_EPOCH, or those the iteration budget takes (at most MAX_EPOCH)."""
        if not self.iteration_budget:
            return self.cfg.OPTIM.MAX_EPOCH
        return min(self.cfg.OPTIM.MAX_EPOCH, math.ceil(self.iteration_budget / self.planned_steps_per_epoch()))

    def planned_steps_per_epoch(self) -> int:
        """The training loader's length (the loader made now if training has not made it: its workers start only
        when it is iterated)."""
        return max(1, len(self.train_loader()))

    def trainable_named_parameters(self):
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def save(self, epoch: int) -> Optional[Path]:
        return self.checkpoints.save(epoch)

    def load_from_model_dir(self, model_dir: str | Path, epoch: Optional[int] = None,
                            allow_transfer: bool = False) -> int:
        return self.checkpoints.load_from_model_dir(model_dir, epoch, allow_transfer)

    # ---- precision, data ----------------------------------------------------------------------
    def autocast(self):
        return precision.autocast(self.cfg.PREC, self.device)

    def optimize(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            last = self.checkpoints.latest()
            raise NonFiniteLossError(f"Loss is {loss.item()} at epoch {self.epoch + 1}; stopping. "
                                     f"Last good checkpoint: {last if last else 'none yet'}")
        self.optim.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optim)
        self.scaler.update()

    def build_loader(self, items, is_train: bool, transform=None, stream=None, persistent: bool = False):
        """stream (purpose, epoch/pass): see data/loader.py's randomness policy."""
        return build_loader(self.cfg, items, is_train, self.device, transform, stream, persistent)

    def train_loader(self):
        """The training loader of this epoch: made once with workers that persist across epochs (starting them
        every epoch cost more than a small run's steps), pointed at the epoch's stream."""
        stream = ("train", self.epoch)
        if self._train_loader is None:
            self._train_loader = self.build_loader(self.dataset.train_x, is_train=True, stream=stream,
                                                   persistent=True)
        set_stream(self._train_loader, stream)
        return self._train_loader

    def extract_features(self, encode, items, transform=None, desc: str = "features", stream=None):
        """(features [N, D] as returned by encode, labels [N]) for state built per sample (caches, probes)."""
        feats, labels, skipped = evaluation.encode_batches(self, encode, items, transform, desc, stream)
        if skipped:
            raise RuntimeError(f"{desc}: unreadable images {[p for p, _ in skipped]}; cannot skip images when "
                               f"building per-sample state")
        return torch.cat(feats).float(), torch.cat(labels).to(self.device)

    # ---- training ---------------------------------------------------------------------------
    def train(self) -> None:
        if not self.is_trainable:
            path = self.checkpoints.latest()
            if path is not None:
                self.checkpoints.load(path)
                logger.info(f"{self.NAME}: fitted state loaded from {path}")
            elif self.fit():
                self.save(0)
            else:
                logger.info(f"{self.NAME}: nothing to train")
            self.after_train()
            return
        self.start_epoch = self.checkpoints.resume()
        if self.start_epoch == 0:
            self.initialize()
        self.before_train()
        t0 = time.time()
        last_saved = time.monotonic()
        if self.iteration_budget:
            logger.info(f"{self.iteration_budget} iterations: {self.max_epoch} epochs of "
                        f"{self.planned_steps_per_epoch()}")
        for self.epoch in range(self.start_epoch, self.max_epoch):
            self.before_epoch()
            lr = self.optim.param_groups[0]["lr"]
            stats = self.run_epoch()
            if self.cfg.OPTIM.SCHEDULER_UNIT == "epoch":
                self.sched.step()
            stats.update(self.monitor(self.epoch + 1))
            if distributed.is_main():
                scalars = {"lr": lr, **stats, "skipped_images": len(self.skipped_train_images)}
                self.run_dir.append_history(self.epoch + 1, scalars)
                self.log_scalars(self.epoch + 1, scalars)
            self.after_epoch()
            done = self.epochs_done = self.epoch + 1
            if self.checkpoint_due(done, last_saved):
                self.save(done)
                last_saved = time.monotonic()
        self._train_loader = None  # its workers exit
        logger.info(f"Training took {format_seconds(time.time() - t0)}")
        self.after_train()

    def monitor(self, done: int) -> Dict[str, float]:
        """TEST.MONITOR_EVERY: the model after `done` epochs scored on TEST.SPLIT, for the history only. Evaluation
        draws no random numbers, so monitored and unmonitored runs train identically (tested)."""
        every, split = self.cfg.TEST.MONITOR_EVERY, self.cfg.TEST.SPLIT
        if not every or done % every:
            return {}
        metrics, _, _ = evaluation.score(self, self.dataset, split)
        logger.info(f"epoch {done}: {split} top1 {metrics['top1']:.2f} (monitor; results.json holds the final model)")
        return {f"{split}_top1": metrics["top1"]}

    def checkpoint_due(self, done: int, last_saved: float) -> bool:
        """After `done` epochs: every CHECKPOINT_FREQ epochs unless the last checkpoint is younger than
        CHECKPOINT_MIN_SECONDS (with KEEP_CHECKPOINTS 1: one asking to keep several gets each one it asks for);
        the last epoch always. Rank 0's clock decides for every process."""
        train = self.cfg.TRAIN
        if done == self.max_epoch:
            return True
        young = train.KEEP_CHECKPOINTS == 1 and time.monotonic() - last_saved < train.CHECKPOINT_MIN_SECONDS
        due = done % train.CHECKPOINT_FREQ == 0 and not young
        return bool(distributed.from_main(due))

    def log_scalars(self, epoch: int, scalars: Dict[str, float]) -> None:
        if not self.cfg.TRAIN.TENSORBOARD:
            return
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.output_dir / "tensorboard"))
        for key, value in scalars.items():
            self._tb.add_scalar(f"train/{key}", value, epoch)
        self._tb.flush()

    def epoch_seed(self) -> int:
        # Each epoch's randomness depends only on (seed, epoch): a resumed run repeats it exactly.
        return stable_int(self.cfg.SEED, "epoch", self.epoch) % (2**63)

    def mix(self, images: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """TRAIN.MIXUP / TRAIN.CUTMIX: timm's Mixup on the batch, with soft (smoothed) targets; else the labels."""
        c = self.cfg.TRAIN
        if not (c.MIXUP or c.CUTMIX):
            return images, labels
        if self._mixer is None:
            from timm.data import Mixup

            self._mixer = Mixup(mixup_alpha=c.MIXUP, cutmix_alpha=c.CUTMIX, prob=1.0, switch_prob=0.5, mode="batch",
                                label_smoothing=c.LABEL_SMOOTHING, num_classes=len(self.classnames))
        return self._mixer(images, labels)

    def classification_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with class labels (smoothed by TRAIN.LABEL_SMOOTHING), or with soft targets (mixed)."""
        if targets.dtype.is_floating_point:
            return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()  # timm's SoftTargetCrossEntropy
        return F.cross_entropy(logits, targets, label_smoothing=self.cfg.TRAIN.LABEL_SMOOTHING)

    def run_epoch(self) -> Dict[str, float]:
        cfg = self.cfg
        seed = self.epoch_seed()  # the process's own stream this epoch (dropout); data loading has its own
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % (2**32))  # timm's Mixup draws its mixing weights from numpy's generator
        loader = self.train_loader()
        self.steps_per_epoch = len(loader)
        per_iteration = cfg.OPTIM.SCHEDULER_UNIT == "iteration"
        self.set_model_mode(True)
        if self.run_clock is None:
            self.run_clock = RunClock(len(loader) * (self.max_epoch - self.epoch))
        progress = Progress(len(loader), f"epoch [{self.epoch + 1}/{self.max_epoch}]", cfg.TRAIN.PRINT_FREQ,
                            run=self.run_clock)
        totals: Dict[str, float] = {}
        n = 0
        steps_left = self.iteration_budget - self.epoch * len(loader) if self.iteration_budget else len(loader)
        for batch in itertools.islice(loader, max(0, steps_left)):  # a budget may end inside this epoch
            log_new_skipped(batch, self.skipped_train_images)
            if batch["img"] is None:
                continue
            out = self.forward_backward(batch)
            if per_iteration:
                self.sched.step()
            bs = batch["label"].shape[0]
            n += bs
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + v * bs
            progress.step(" ".join(f"{k} {v:.4f}" for k, v in out.items()) + f" lr {self.optim.param_groups[0]['lr']:.3e}")
        return {k: v / max(n, 1) for k, v in totals.items()}

    # ---- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor, columns: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Evaluation logits over the universe, or over `columns` of it."""
        self.set_model_mode(False)
        with self.autocast():
            images = images.to(self.device)
            if columns is None:
                return self.model_inference(images).float()
            if self.FROZEN_IMAGE_ENCODER:
                return self.logits_over(self.encode_images(images), columns).float()
            return self.model_inference(images).index_select(1, columns).float()

    def test(self, dataset: Optional[DatasetBase] = None, split: Optional[str] = None, stage: str = "final") -> dict:
        """Evaluate on a dataset split (default: the training dataset's TEST.SPLIT) and write results.json."""
        return evaluation.evaluate(self, dataset or self.dataset, split or self.cfg.TEST.SPLIT, stage)
