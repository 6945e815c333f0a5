"""Classification metrics: top-1, top-5, macro-F1, mean per-class accuracy, optional per-class accuracy."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch


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
