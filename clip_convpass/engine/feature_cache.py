"""On-disk cache of frozen image-encoder features for evaluation splits.

Methods whose image encoder is frozen (zero-shot, linear probe, CoOp, CoCoOp, Tip-Adapter) see the
same raw image features on a test set whatever their seed or head; the Table 2 grid therefore
encodes each test set once for all of them. The key covers everything the features depend on:
backbone, weights (tag, or file path + size + mtime, or the seed for random init), dataset, split,
the exact item list, the transform, precision and batch size (batch composition can change the last
bits of a batched matmul, and cached and uncached evaluations must give identical metrics).

Entries are written atomically (temporary file + rename) under a per-entry lock: a second run
asking for an entry that is being computed waits for it and then reads it instead of encoding again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

import torch

from clip_convpass.engine import precision
from clip_convpass.models.clip_loader import RANDOM_INIT
from clip_convpass.utils.errors import UserError, refuse_unsafe_load_override
from clip_convpass.utils.io import atomic_torch_save, atomic_write_json
from clip_convpass.utils.locks import blocking_lock
from clip_convpass.utils.runtime import resolve_device

logger = logging.getLogger(__name__)

# Counts image-encoder passes over evaluation splits in this process (benchmarks read it).
STATS = {"passes": 0, "images": 0, "cache_hits": 0}
VERSION = 2  # 2: fused attention in frozen towers


def weights_identity(cfg) -> str:
    tag = str(cfg.MODEL.PRETRAINED)
    if tag.lower() in RANDOM_INIT:
        return f"random-init-seed{cfg.SEED}"  # random weights are drawn from the run's seed
    path = Path(tag).expanduser()
    if path.is_file():
        st = path.stat()
        return f"file:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return f"tag:{tag}:{cfg.MODEL.CACHE_DIR}"


def cache_key(cfg, dataset_name: str, split: str, items: Sequence, root: Path, transform) -> Tuple[str, dict]:
    h = hashlib.sha256()
    for d in items:
        h.update(f"{os.path.relpath(d.impath, root)}\t{d.label}\n".encode())
    meta = {
        "version": VERSION,
        "backbone": cfg.MODEL.BACKBONE,
        "weights": weights_identity(cfg),
        "dataset": dataset_name,
        "split": split,
        "items": h.hexdigest(),
        "n_items": len(items),
        "transform": repr(transform),
        "prec": precision.resolve(cfg.PREC, torch.device(resolve_device(cfg.DEVICE))),
        "batch_size": cfg.DATALOADER.TEST.BATCH_SIZE,
        "fused_attention": bool(cfg.MODEL.FUSED_ATTENTION),
        "skip_bad_images": bool(cfg.DATASET.SKIP_BAD_IMAGES),
        "dtype": cfg.TEST.FEATURE_CACHE_DTYPE,
    }
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:24]
    return key, meta


EncodeResult = Tuple[List[torch.Tensor], List[torch.Tensor], List[Tuple[str, str]]]


def get_or_compute(cache_dir: str | Path, key: str, meta: dict, compute: Callable[[], EncodeResult],
                   dtype: str = "native") -> EncodeResult:
    """(per-batch features, per-batch labels, skipped files), from disk if present, else computed and stored."""
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{key}.pt"
    with blocking_lock(cache_dir / f"{key}.lock"):
        if path.is_file():
            refuse_unsafe_load_override()
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # never retried without weights_only
                raise UserError(f"Feature cache entry {path} is unreadable ({type(e).__name__}); delete it to "
                                f"recompute") from e
            STATS["cache_hits"] += 1
            logger.info(f"Feature cache hit {path.name} ({meta['dataset']}/{meta['split']}, {meta['n_items']} items)")
            return list(data["features"]), list(data["labels"]), [tuple(s) for s in data["skipped"]]
        feats, labels, skipped = compute()
        if dtype == "fp16":
            feats = [f.half() for f in feats]  # return what later runs will read
        atomic_torch_save(path, {"features": [f.cpu() for f in feats],
                                 "labels": [lab.cpu() for lab in labels], "skipped": [list(s) for s in skipped]})
        atomic_write_json(cache_dir / f"{key}.json", meta)
        logger.info(f"Feature cache stored {path.name} ({meta['dataset']}/{meta['split']})")
        return feats, labels, skipped
