"""Evaluation: metrics (top-1, top-5, macro-F1, mean per-class accuracy, optional per-class accuracy)
and the one evaluation loop, fed by a feature source (images through the whole model, or a frozen
encoder's cached features through the method's head), gathered across processes under torchrun."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from clip_convpass.config import config_hash, experiment_hash, flat_items
from clip_convpass.data import build_transform
from clip_convpass.data.types import DatasetLayoutError
from clip_convpass.engine import feature_cache
from clip_convpass.engine.checkpoint import same_classes
from clip_convpass.utils import distributed
from clip_convpass.utils.logging import Progress

if TYPE_CHECKING:
    from clip_convpass.engine.trainer import TrainerBase

logger = logging.getLogger(__name__)
METRICS = ("top1", "top5", "macro_f1", "mean_per_class_acc")
METRIC_LABELS = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "macro_f1": "macro-F1",
                 "mean_per_class_acc": "mean per-class accuracy"}


class Evaluator:
    def __init__(self, num_classes: int, classnames: Optional[Sequence[str]] = None, per_class: bool = False):
        self.num_classes = num_classes
        self.classnames = list(classnames) if classnames is not None else None
        self.per_class = per_class
        self.reset()

    def reset(self) -> None:
        self._preds: List[torch.Tensor] = []
        self._labels: List[torch.Tensor] = []
        self._top5 = 0

    def process(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """logits [B, num_classes] over this dataset's classes, labels [B]."""
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"Expected logits over {self.num_classes} classes, got shape {tuple(logits.shape)}")
        logits, labels = logits.detach().float().cpu(), labels.cpu()
        k = min(5, self.num_classes)
        self._top5 += (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).sum().item()
        self._preds.append(logits.argmax(dim=1))
        self._labels.append(labels)

    def state(self) -> dict:
        return {"preds": torch.cat(self._preds) if self._preds else torch.zeros(0, dtype=torch.long),
                "labels": torch.cat(self._labels) if self._labels else torch.zeros(0, dtype=torch.long),
                "top5": self._top5}

    def merge(self, states: Sequence[dict]) -> None:
        """Replace this evaluator's samples with the union of several (e.g. one per process)."""
        self.reset()
        for st in states:
            self._preds.append(st["preds"])
            self._labels.append(st["labels"])
            self._top5 += st["top5"]

    def evaluate(self) -> Dict:
        if not self._labels:
            raise ValueError("No samples were evaluated")
        preds, labels = torch.cat(self._preds), torch.cat(self._labels)
        c = self.num_classes
        confusion = torch.bincount(labels * c + preds, minlength=c * c).reshape(c, c).double()
        tp = confusion.diag()
        support = confusion.sum(1)
        predicted = confusion.sum(0)
        n = labels.numel()
        has_support = support > 0
        per_class_acc = tp / support.clamp(min=1)
        # F1 over classes that occur in the labels or the predictions (as scikit-learn's macro average)
        seen = has_support | (predicted > 0)
        f1 = 2 * tp / (support + predicted).clamp(min=1)
        out = {
            "n": n,
            "top1": 100.0 * tp.sum().item() / n,
            "top5": 100.0 * self._top5 / n,
            "macro_f1": 100.0 * f1[seen].mean().item(),
            "mean_per_class_acc": 100.0 * per_class_acc[has_support].mean().item(),
        }
        if self.per_class:
            names = self.classnames or [str(i) for i in range(c)]
            out["per_class_acc"] = {names[i]: 100.0 * per_class_acc[i].item() for i in range(c) if has_support[i]}
        return out


# ---- the evaluation loop ------------------------------------------------------------------------
def encode_batches(trainer: "TrainerBase", encode: Callable, items: Sequence, transform, desc: str, stream=None):
    """encode() of every batch of items, in order: (per-batch outputs, per-batch labels, skipped files).
    A random transform needs the stream (purpose, pass) its draws come from."""
    loader = trainer.build_loader(items, is_train=False, transform=transform, stream=stream)
    progress = Progress(len(loader), desc, max(1, len(loader) // 10))
    outputs, labels, skipped = [], [], []
    with torch.no_grad():
        for batch in loader:
            skipped += batch["skipped"]
            if batch["img"] is not None:
                with trainer.autocast():
                    outputs.append(encode(batch["img"].to(trainer.device)))
                labels.append(batch["label"])
            progress.step()
    return outputs, labels, skipped


class ImageBatches:
    """Feature source: decode and run the whole model on every batch; logits of the dataset's columns."""

    def __init__(self, trainer: "TrainerBase", items: Sequence, desc: str, columns: torch.Tensor):
        self.trainer, self.items, self.desc, self.columns = trainer, items, desc, columns
        self.skipped: List[Tuple[str, str]] = []

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        loader = self.trainer.build_loader(self.items, is_train=False)
        progress = Progress(len(loader), self.desc, max(1, len(loader) // 10))
        feature_cache.STATS["passes"] += 1
        for batch in loader:
            self.skipped += batch["skipped"]
            if batch["img"] is not None:
                feature_cache.STATS["images"] += len(batch["label"])
                yield self.trainer.predict(batch["img"], self.columns), batch["label"]
            progress.step()


class CachedFeatures:
    """Feature source for frozen image encoders: raw features from the shared on-disk cache (computed
    and stored on a miss), turned into logits by the method's head."""

    def __init__(self, trainer: "TrainerBase", dataset, split: str, items: Sequence, desc: str,
                 columns: torch.Tensor):
        cfg = trainer.cfg
        self.trainer, self.columns = trainer, columns
        transform = build_transform(cfg, False)
        key, meta = feature_cache.cache_key(cfg, dataset.NAME, split, items, dataset.root, transform)

        def compute():
            out = encode_batches(trainer, trainer.encode_images, items, transform, desc)
            feature_cache.STATS["passes"] += 1
            feature_cache.STATS["images"] += sum(len(lab) for lab in out[1])
            return out

        self.feats, self.labels, self.skipped = feature_cache.get_or_compute(
            cfg.TEST.FEATURE_CACHE_DIR, key, meta, compute, cfg.TEST.FEATURE_CACHE_DTYPE)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        t = self.trainer
        for f, lab in zip(self.feats, self.labels):
            with t.autocast():
                yield t.logits_over(f.to(t.device), self.columns).float(), lab


@torch.no_grad()
def check_same_classes(trainer: "TrainerBase", dataset) -> None:
    """A dataset is scored only over the classes the model is built over (its universe), or its scores would
    be read off the wrong columns."""
    own, other = trainer.dataset.universe, dataset.universe
    if other.names_hash != own.names_hash:
        raise DatasetLayoutError(
            f"{dataset.NAME} is not scored over the classes this {trainer.NAME} model is built over "
            f"({trainer.dataset.NAME}, {len(own)} classes, names {own.names_hash}; {dataset.NAME} has {len(other)}, "
            f"names {other.names_hash}); evaluate models of {dataset.SOURCE or dataset.NAME} on it")


def evaluate(trainer: "TrainerBase", dataset, split: str, stage: str = "final") -> dict:
    """Score `trainer` on a dataset split and write its results.json (rank 0). stage "step0" marks an
    evaluation before any training.

    Under torchrun each process evaluates a contiguous shard (no padded duplicates) and the
    predictions are gathered, so the metrics equal a single-process run's.
    """
    check_same_classes(trainer, dataset)
    if trainer.transfer.get("not_applicable"):
        return write_not_applicable(trainer, dataset, split, stage)
    metrics, skipped, elapsed = score(trainer, dataset, split)
    for _, err in skipped:
        logger.warning(f"Skipped unreadable image: {err}")
    result = result_record(trainer, dataset, split, metrics, elapsed, skipped)
    result["stage"] = stage
    if distributed.is_main():
        path = trainer.run_dir.write_results(result)
        m = result["metrics"]
        logger.info(
            f"=> {result['dataset']}/{split}: top1 {m['top1']:.2f} top5 {m['top5']:.2f} "
            f"macro-F1 {m['macro_f1']:.2f} mean-per-class {m['mean_per_class_acc']:.2f} "
            f"({result['n_images']} images, {result['n_skipped']} skipped) -> {path}"
        )
    distributed.barrier()
    return result


def score(trainer: "TrainerBase", dataset, split: str) -> Tuple[dict, list, float]:
    """(metrics, skipped files, seconds) of the model on a dataset split, every process's shard gathered; nothing
    written (evaluate writes results.json; the training loop's monitor writes the history)."""
    cfg = trainer.cfg
    items = distributed.shard(dataset.test if split == "test" else dataset.val)
    trainer.set_model_mode(False)
    evaluator = Evaluator(dataset.num_classes, dataset.classnames, cfg.TEST.PER_CLASS_RESULT)
    # Restricting universe logits to the dataset's classes: the one mechanism for 200-class sets.
    columns = torch.tensor(dataset.label_columns, device=trainer.device)
    desc = f"eval {dataset.NAME}/{split}"
    t0 = time.time()
    if trainer.FROZEN_IMAGE_ENCODER and cfg.TEST.FEATURE_CACHE_DIR:
        source = CachedFeatures(trainer, dataset, split, items, desc, columns)
    else:
        source = ImageBatches(trainer, items, desc, columns)
    for logits, labels in source:
        evaluator.process(logits, labels)
    skipped = source.skipped
    if distributed.is_distributed():
        evaluator.merge(distributed.gather_objects(evaluator.state()))
        skipped = [s for part in distributed.gather_objects(skipped) for s in part]
    return evaluator.evaluate(), skipped, time.time() - t0


def write_not_applicable(trainer: "TrainerBase", dataset, split: str, stage: str) -> dict:
    """The results.json of an evaluation the method has no definition for (a transfer to classes its trained state
    cannot cover): metrics are null and the reason is given, so that no table shows a number or a 0 for it."""
    result = result_record(trainer, dataset, split, {"n": 0, **{m: None for m in METRICS}}, 0.0, [])
    result.update(stage=stage, n_images=0, not_applicable=trainer.transfer["not_applicable"])
    if distributed.is_main():
        path = trainer.run_dir.write_results(result)
        logger.info(f"=> {result['dataset']}/{split}: n/a ({result['not_applicable']}) -> {path}")
    distributed.barrier()
    return result


def trainable_encoder_params(model) -> int:
    """Trainable parameters of the image encoder, the head excluded (a timm model keeps its head inside)."""
    visual = getattr(model, "visual", None)
    if visual is None:
        return 0
    head = {id(p) for p in model.head.parameters()} if isinstance(getattr(model, "head", None), nn.Module) else set()
    return sum(p.numel() for p in visual.parameters() if p.requires_grad and id(p) not in head)


def shot_fields(trainer: "TrainerBase", trained: dict) -> dict:
    """What the model trained on: shots per class and validation shots, or the published list it trained on."""
    ds = trainer.dataset
    if ds.SHOT_SOURCE == "fixed":
        return {"shots": None, "val_shots": None, "train_list": ds.train_list}
    out = {"shots": trained["DATASET.NUM_SHOTS"],
           "val_shots": ds.val_shots if ds.HAS_TRAIN and ds.SHOT_SOURCE == "sampled" else trainer.cfg.DATASET.VAL_SHOTS}
    return {**out, "train_list": ds.train_list} if ds.train_list else out


def result_record(trainer: "TrainerBase", dataset, split: str, metrics: dict, elapsed: float, skipped) -> dict:
    cfg = trainer.cfg
    per_class = metrics.pop("per_class_acc", None)
    # the trained model's own settings: an evaluation of a loaded checkpoint reports its seed and shots
    trained = flat_items(trainer.train_config)
    rec = {
        "dataset": dataset.NAME,
        "split": split,
        "metrics": {k: v for k, v in metrics.items() if k != "n"},
        "n_images": metrics["n"],
        "n_classes": dataset.num_classes,
        "n_skipped": len(skipped),
        "skipped_files": [p for p, _ in skipped][:1000],
        "trainer": trainer.NAME,
        "name": cfg.NAME or trainer.NAME,
        "backbone": cfg.MODEL.BACKBONE,
        "pretrained": cfg.MODEL.PRETRAINED,
        "seed": trained["SEED"],
        **shot_fields(trainer, trained),
        "train_dataset": trainer.train_dataset,
        "epochs_trained": trainer.epochs_done,
        "config_hash": config_hash(cfg),
        "experiment": experiment_hash(trainer.train_config),
        "class_names": {"source": dataset.universe.source, "sha256": dataset.universe.names_hash},
        # which classes the weights were trained over and which this evaluation is built over; a transfer
        # evaluation (they differ) says whether the method's class-bound state was rebuilt for these
        "subsample": cfg.DATASET.SUBSAMPLE,
        "train_classes": trainer.train_classes,
        "eval_classes": dataset.class_identity(),
        "transfer": not same_classes(trainer.train_classes, trainer.dataset.class_identity()),
        "class_bound_rebuilt": bool(trainer.transfer.get("rebuilt")),
        "weights_sha256": trainer.weights_sha256,
        "prompts": trainer.prompt_info,
        # what trains: in all, and in the image encoder (the PETL budgets, head excluded)
        "trainable_params": {"total": sum(p.numel() for _, p in trainer.trainable_named_parameters()),
                             "image_encoder": trainable_encoder_params(trainer.model)},
        "prec": trainer.prec,
        "prec_config": cfg.PREC,
        "elapsed_s": round(elapsed, 3),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if per_class is not None:
        rec["per_class_acc"] = per_class
    rec.update(trainer.annotations)
    return rec
