"""Trainer base class with Dassl-style hooks.

Subclasses implement `build_model` (set ``self.model``, an nn.Module whose parameters with
``requires_grad`` are exactly what trains and what checkpoints hold) and `model_inference`
(images -> logits over the class universe); trainable methods also implement `forward_backward`.
Optional hooks: before_train, before_epoch, after_epoch, after_train, set_model_mode,
extra_state / load_extra_state (non-parameter tensors a method must checkpoint, e.g. a cache).
"""
from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from . import distributed, feature_cache
from .checkpoint import check_compatible, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import config_hash
from .data import DatasetBase, ImageListDataset, build_dataset, build_transform, collate_skipping
from .data.base import stable_int
from .evaluation import Evaluator
from .optim import build_lr_scheduler, build_optimizer
from .utils import Progress, atomic_write_json, format_seconds, resolve_device, set_random_seed

logger = logging.getLogger("clip_convpass")


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


class TrainerBase:
    NAME = ""
    # Methods whose image encoder never changes set this and implement encode_images and
    # logits_from_features; their evaluation features can then come from the shared feature cache.
    FROZEN_IMAGE_ENCODER = False

    def __init__(self, cfg):
        self.cfg = cfg
        self.device = resolve_device(cfg.DEVICE)
        distributed.init_from_env(self.device)  # no-op unless launched by torchrun with WORLD_SIZE > 1
        self.device = distributed.local_device(self.device)
        set_random_seed(cfg.SEED)
        self.output_dir = Path(cfg.OUTPUT_DIR)
        self.dataset: DatasetBase = build_dataset(cfg)
        self.universe = self.dataset.universe
        self.classnames = self.universe.classnames  # the model is built over these
        self.model: Optional[nn.Module] = None
        self.start_epoch = 0
        self.epoch = 0
        self.epochs_done = 0
        self.train_dataset = cfg.DATASET.NAME  # replaced by the checkpoint's when weights are loaded
        self.skipped_train_images: set = set()
        self.build_model()
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__}.build_model() must set self.model")
        self.model.to(self.device)
        n_train = sum(p.numel() for p in self.trainable_parameters())
        n_all = sum(p.numel() for p in self.model.parameters())
        logger.info(f"{self.NAME}: {n_train:,} trainable parameters of {n_all:,} in the model")
        self.optim = self.sched = None
        self.ddp: Optional[nn.Module] = None
        if self.is_trainable:
            self.optim = build_optimizer(self.trainable_parameters(), cfg.OPTIM)
            self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
            if distributed.is_distributed():
                # Only a model with trainable parameters is wrapped; DDP syncs just those gradients.
                from torch.nn.parallel import DistributedDataParallel

                ids = [self.device.index] if self.device.type == "cuda" else None
                self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.PREC == "amp" and self.device.type == "cuda")

    # ---- hooks ------------------------------------------------------------------------------
    def build_model(self) -> None:
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

    def forward_backward(self, batch: dict) -> Dict[str, float]:
        images, labels = batch["img"].to(self.device), batch["label"].to(self.device)
        with self.autocast():
            logits = self.train_forward(images)
            loss = F.cross_entropy(logits.float(), labels)
        self.optimize(loss)
        acc = (logits.argmax(1) == labels).float().mean().item() * 100
        return {"loss": loss.item(), "acc": acc}

    def train_forward(self, images: torch.Tensor) -> torch.Tensor:
        """Training logits; through DDP under torchrun (every model's forward() is its model_inference)."""
        return self.ddp(images) if self.ddp is not None else self.model_inference(images)

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass

    def set_model_mode(self, train: bool) -> None:
        # nothing in a frozen-encoder method's model behaves differently in training
        self.model.train(train and not self.FROZEN_IMAGE_ENCODER)

    def fit(self) -> bool:
        """Training-free methods compute their state from the training data here (cache, probe).

        Return True if there is state to checkpoint."""
        return False

    def extra_state(self) -> Dict[str, torch.Tensor]:
        return {}

    def load_extra_state(self, state: Dict[str, torch.Tensor]) -> None:
        pass

    # ---- parameters / checkpoints -----------------------------------------------------------
    @property
    def is_trainable(self) -> bool:
        return any(True for _ in self.trainable_parameters()) and self.cfg.OPTIM.MAX_EPOCH > 0

    def trainable_named_parameters(self):
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def trainable_parameters(self):
        return [p for _, p in self.trainable_named_parameters()]

    def trainable_state_dict(self) -> Dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.trainable_named_parameters()}

    def checkpoint_meta(self) -> dict:
        state = {**self.trainable_state_dict(), **{f"extra.{k}": v for k, v in self.extra_state().items()}}
        return {
            "trainer": self.NAME,
            "backbone": self.cfg.MODEL.BACKBONE,
            "num_classes": len(self.classnames),
            "shapes": {k: list(v.shape) for k, v in state.items()},
        }

    def save(self, epoch: int) -> Optional[Path]:
        if not distributed.is_main():
            distributed.barrier()  # rank 0 writes; the others wait so no one reads a half-written file
            return None
        state = {
            "epoch": epoch,
            "meta": self.checkpoint_meta(),
            "state_dict": self.trainable_state_dict(),
            "extra_state": {k: v.detach().cpu() for k, v in self.extra_state().items()},
            "optimizer": self.optim.state_dict() if self.optim else None,
            "scheduler": self.sched.state_dict() if self.sched else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "config_hash": config_hash(self.cfg),
            "train_dataset": self.cfg.DATASET.NAME,
        }
        path = save_checkpoint(self.output_dir, epoch, state, keep=self.cfg.TRAIN.KEEP_CHECKPOINTS)
        logger.info(f"Saved checkpoint {path}")
        distributed.barrier()
        return path

    def load_model(self, path: Path, with_optimizer: bool = False) -> int:
        ckpt = load_checkpoint(path)
        check_compatible(ckpt["meta"], self.checkpoint_meta(), path)
        params = dict(self.trainable_named_parameters())
        with torch.no_grad():
            for name, tensor in ckpt["state_dict"].items():
                params[name].copy_(tensor)
        self.load_extra_state({k: v.to(self.device) for k, v in ckpt.get("extra_state", {}).items()})
        if with_optimizer:
            if self.optim is not None and ckpt.get("optimizer") is not None:
                self.optim.load_state_dict(ckpt["optimizer"])
            if self.sched is not None and ckpt.get("scheduler") is not None:
                self.sched.load_state_dict(ckpt["scheduler"])
            if self.scaler.is_enabled() and ckpt.get("scaler") is not None:
                self.scaler.load_state_dict(ckpt["scaler"])
        logger.info(f"Loaded weights from {path} (epoch {ckpt['epoch']})")
        self.epochs_done = int(ckpt["epoch"])
        self.train_dataset = ckpt.get("train_dataset", self.train_dataset)
        return self.epochs_done

    def load_from_model_dir(self, model_dir: str | Path, epoch: Optional[int] = None) -> int:
        from .checkpoint import checkpoint_path

        if not self.trainable_named_parameters() and not self.extra_state():
            logger.info(f"{self.NAME} has no trained state; nothing to load from {model_dir}")
            return 0
        path = checkpoint_path(model_dir, epoch) if epoch is not None else latest_checkpoint(model_dir)
        if path is None or not Path(path).is_file():
            raise FileNotFoundError(
                f"No checkpoint {'for epoch ' + str(epoch) if epoch is not None else ''} in {Path(model_dir) / 'checkpoints'}"
            )
        return self.load_model(path)

    # ---- precision --------------------------------------------------------------------------
    def autocast(self):
        prec = self.cfg.PREC
        if prec == "fp32":
            return contextlib.nullcontext()
        if self.device.type == "cuda":
            dtype = torch.float16 if prec == "amp" else torch.bfloat16
        else:
            dtype = torch.bfloat16  # CPU autocast: bf16 for both amp and bf16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def optimize(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            last = latest_checkpoint(self.output_dir)
            raise NonFiniteLossError(
                f"Loss is {loss.item()} at epoch {self.epoch + 1}; stopping. "
                f"Last good checkpoint: {last if last else 'none yet'}"
            )
        self.optim.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optim)
        self.scaler.update()

    # ---- data -------------------------------------------------------------------------------
    def build_loader(self, items, is_train: bool, generator: Optional[torch.Generator] = None, transform=None):
        cfg = self.cfg
        ds = ImageListDataset(items, transform or build_transform(cfg, is_train), cfg.DATASET.SKIP_BAD_IMAGES)
        batch_size = cfg.DATALOADER.TRAIN_X.BATCH_SIZE if is_train else cfg.DATALOADER.TEST.BATCH_SIZE
        sampler = None
        if is_train and distributed.is_distributed():
            # TRAIN_X.BATCH_SIZE is the global batch: each of the W processes takes 1/W of it.
            w = distributed.world_size()
            if batch_size % w:
                raise ValueError(f"DATALOADER.TRAIN_X.BATCH_SIZE={batch_size} must be divisible by the {w} processes")
            batch_size //= w
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item()) if generator is not None else 0
            sampler = DistributedSampler(ds, shuffle=True, seed=seed)
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=is_train and sampler is None,
            sampler=sampler,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
            collate_fn=collate_skipping,
            generator=generator,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    @torch.no_grad()
    def encode_batches(self, encode, items, transform, desc: str):
        """encode() of every batch of items in order: (per-batch features, per-batch labels, skipped files)."""
        # a private generator: creating the iterator then draws nothing from the global RNG, which
        # random transforms (cache passes) consume in item order from a state the caller seeded
        loader = self.build_loader(items, is_train=False, transform=transform, generator=torch.Generator())
        progress = Progress(len(loader), desc, max(1, len(loader) // 10))
        feats, labels, skipped = [], [], []
        for batch in loader:
            skipped += batch["skipped"]
            if batch["img"] is not None:
                with self.autocast():
                    feats.append(encode(batch["img"].to(self.device)))
                labels.append(batch["label"])
            progress.step()
        return feats, labels, skipped

    def extract_features(self, encode, items, transform=None, desc: str = "features"):
        """(features [N, D] as returned by encode, labels [N]) for state built per sample (caches, probes)."""
        feats, labels, skipped = self.encode_batches(encode, items, transform, desc)
        if skipped:
            raise RuntimeError(f"{desc}: unreadable images {[p for p, _ in skipped]}; cannot skip images when "
                               f"building per-sample state")
        return torch.cat(feats).float(), torch.cat(labels).to(self.device)

    # ---- training ---------------------------------------------------------------------------
    def resume_if_possible(self) -> None:
        path = latest_checkpoint(self.output_dir)
        if path is None:
            return
        self.start_epoch = self.load_model(path, with_optimizer=True)
        logger.info(f"Resuming from {path}: {self.start_epoch} of {self.cfg.OPTIM.MAX_EPOCH} epochs done")

    def train(self) -> None:
        if not self.is_trainable:
            path = latest_checkpoint(self.output_dir)
            if path is not None:
                self.load_model(path)
                logger.info(f"{self.NAME}: fitted state loaded from {path}")
            elif self.fit():
                self.save(0)
            else:
                logger.info(f"{self.NAME}: nothing to train")
            self.after_train()
            return
        self.resume_if_possible()
        self.before_train()
        t0 = time.time()
        for self.epoch in range(self.start_epoch, self.cfg.OPTIM.MAX_EPOCH):
            self.before_epoch()
            lr = self.optim.param_groups[0]["lr"]
            stats = self.run_epoch()
            self.sched.step()
            self.record_epoch({"lr": lr, **stats})
            self.after_epoch()
            done = self.epochs_done = self.epoch + 1
            if done % self.cfg.TRAIN.CHECKPOINT_FREQ == 0 or done == self.cfg.OPTIM.MAX_EPOCH:
                self.save(done)
        logger.info(f"Training took {format_seconds(time.time() - t0)}")
        self.after_train()

    def epoch_seed(self) -> int:
        # Each epoch's randomness depends only on (seed, epoch): a resumed run repeats it exactly.
        return stable_int(self.cfg.SEED, "epoch", self.epoch) % (2**63)

    def run_epoch(self) -> Dict[str, float]:
        seed = self.epoch_seed()
        torch.manual_seed(seed)
        random.seed(seed)
        gen = torch.Generator().manual_seed(seed)
        loader = self.build_loader(self.dataset.train_x, is_train=True, generator=gen)
        self.set_model_mode(True)
        cfg = self.cfg
        progress = Progress(len(loader), f"epoch [{self.epoch + 1}/{cfg.OPTIM.MAX_EPOCH}]", cfg.TRAIN.PRINT_FREQ)
        totals: Dict[str, float] = {}
        n = 0
        for batch in loader:
            self.skipped_train_images.update(p for p, _ in batch["skipped"])
            if batch["img"] is None:
                continue
            out = self.forward_backward(batch)
            bs = batch["label"].shape[0]
            n += bs
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + v * bs
            progress.step(" ".join(f"{k} {v:.4f}" for k, v in out.items()) + f" lr {self.optim.param_groups[0]['lr']:.3e}")
        return {k: v / max(n, 1) for k, v in totals.items()}

    def record_epoch(self, stats: Dict[str, float]) -> None:
        if not distributed.is_main():
            return
        path = self.output_dir / "train_history.json"
        history = json.loads(path.read_text()) if path.is_file() else []
        history = [h for h in history if h["epoch"] < self.epoch + 1]
        history.append({"epoch": self.epoch + 1, **stats,
                        "skipped_images": len(self.skipped_train_images)})
        atomic_write_json(path, history)

    # ---- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        self.set_model_mode(False)
        with self.autocast():
            return self.model_inference(images.to(self.device)).float()

    def encode_split(self, items, transform, desc: str):
        """Frozen-encoder features of an evaluation split, per test batch (counted for the benchmark)."""
        feats, labels, skipped = self.encode_batches(self.encode_images, items, transform, desc)
        feature_cache.STATS["passes"] += 1
        feature_cache.STATS["images"] += sum(len(lab) for lab in labels)
        return feats, labels, skipped

    @torch.no_grad()
    def test(self, dataset: Optional[DatasetBase] = None, split: Optional[str] = None, stage: str = "final") -> dict:
        """Evaluate and write results.json. stage "step0" marks an evaluation before any training.

        Under torchrun each process evaluates a contiguous shard (no padded duplicates) and the
        predictions are gathered, so the metrics equal a single-process run's.
        """
        cfg = self.cfg
        dataset = dataset or self.dataset
        split = split or cfg.TEST.SPLIT
        items = distributed.shard(dataset.test if split == "test" else dataset.val)
        self.set_model_mode(False)
        evaluator = Evaluator(dataset.num_classes, dataset.classnames, cfg.TEST.PER_CLASS_RESULT)
        # Restricting universe logits to the dataset's classes: the one mechanism for 200-class sets.
        columns = torch.tensor(dataset.label_columns, device=self.device)
        desc = f"eval {dataset.NAME}/{split}"
        t0 = time.time()
        if self.FROZEN_IMAGE_ENCODER and cfg.TEST.FEATURE_CACHE_DIR:
            transform = build_transform(cfg, False)
            key, meta = feature_cache.cache_key(cfg, dataset.NAME, split, items, dataset.root, transform)
            feats, labels, skipped = feature_cache.get_or_compute(
                cfg.TEST.FEATURE_CACHE_DIR, key, meta, lambda: self.encode_split(items, transform, desc),
                cfg.TEST.FEATURE_CACHE_DTYPE)
            for f, lab in zip(feats, labels):
                with self.autocast():
                    logits = self.logits_from_features(f.to(self.device)).float()
                evaluator.process(logits.index_select(1, columns), lab)
        else:
            loader = self.build_loader(items, is_train=False)
            progress = Progress(len(loader), desc, max(1, len(loader) // 10))
            skipped = []
            feature_cache.STATS["passes"] += 1
            for batch in loader:
                skipped += batch["skipped"]
                if batch["img"] is not None:
                    evaluator.process(self.predict(batch["img"]).index_select(1, columns), batch["label"])
                    feature_cache.STATS["images"] += len(batch["label"])
                progress.step()
        if distributed.is_distributed():
            evaluator.merge(distributed.gather_objects(evaluator.state()))
            skipped = [s for part in distributed.gather_objects(skipped) for s in part]
        metrics = evaluator.evaluate()
        for path, err in skipped:
            logger.warning(f"Skipped unreadable image: {err}")
        result = self.result_record(dataset, split, metrics, time.time() - t0, skipped)
        result["stage"] = stage
        if distributed.is_main():
            self.write_result(result)
        distributed.barrier()
        return result

    def result_record(self, dataset, split, metrics, elapsed, skipped) -> dict:
        cfg = self.cfg
        per_class = metrics.pop("per_class_acc", None)
        rec = {
            "dataset": dataset.NAME,
            "split": split,
            "metrics": {k: v for k, v in metrics.items() if k != "n"},
            "n_images": metrics["n"],
            "n_classes": dataset.num_classes,
            "n_skipped": len(skipped),
            "skipped_files": [p for p, _ in skipped][:1000],
            "trainer": self.NAME,
            "name": cfg.NAME or self.NAME,
            "backbone": cfg.MODEL.BACKBONE,
            "pretrained": cfg.MODEL.PRETRAINED,
            "seed": cfg.SEED,
            "shots": cfg.DATASET.NUM_SHOTS,
            "val_shots": cfg.DATASET.VAL_SHOTS,
            "train_dataset": self.train_dataset,
            "epochs_trained": self.epochs_done,
            "config_hash": config_hash(cfg),
            "prec": cfg.PREC,
            "elapsed_s": round(elapsed, 3),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        if per_class is not None:
            rec["per_class_acc"] = per_class
        return rec

    def results_path(self, dataset_name: str, split: str, stage: str = "final") -> Path:
        tag = dataset_name if split == "test" else f"{dataset_name}_{split}"
        return self.output_dir / ("eval" if stage == "final" else f"eval_{stage}") / tag / "results.json"

    def write_result(self, rec: dict) -> None:
        path = self.results_path(rec["dataset"], rec["split"], rec.get("stage", "final"))
        atomic_write_json(path, rec)
        m = rec["metrics"]
        logger.info(
            f"=> {rec['dataset']}/{rec['split']}: top1 {m['top1']:.2f} top5 {m['top5']:.2f} "
            f"macro-F1 {m['macro_f1']:.2f} mean-per-class {m['mean_per_class_acc']:.2f} "
            f"({rec['n_images']} images, {rec['n_skipped']} skipped) -> {path}"
        )
