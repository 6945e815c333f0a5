"""Few-shot splits: K training shots and validation shots per class, drawn by named seeds and cached.

Per class: the sorted file list and an RNG seeded by (SEED, class id) — independent of file order and of the
other classes; validation shots come from the dataset's val split (VAL_SPLIT, CoOp's datasets) or are held
out of the training images (ImageNet). The split is written once as relative-path JSON (`split_file`) and
read back by every later run with the same shots, seed and classes.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, List, Tuple

from clip_convpass.data.types import DatasetLayoutError, Datum, stable_int
from clip_convpass.utils.io import atomic_write_json, read_json

if TYPE_CHECKING:
    from clip_convpass.data.base import DatasetBase

logger = logging.getLogger(__name__)


def split_file(ds: "DatasetBase") -> Path:
    d = Path(ds.cfg.DATASET.SPLIT_DIR) if ds.cfg.DATASET.SPLIT_DIR else ds.dataset_dir / "split_fewshot"
    c = ds.cfg.DATASET
    universe_tag = hashlib.sha256(",".join(ds.class_ids).encode()).hexdigest()[:8]
    sampler = "" if c.FEWSHOT_SAMPLER == "per_class" else f"-{c.FEWSHOT_SAMPLER}"
    return d / f"shot_{c.NUM_SHOTS}-val_{ds.val_shots}-seed_{ds.cfg.SEED}-classes_{universe_tag}{sampler}.json"


def load_or_sample(ds: "DatasetBase") -> Tuple[List[Datum], List[Datum]]:
    path = split_file(ds)
    source = source_fingerprint(ds)
    data = None
    if path.is_file():
        try:
            data = read_json(path)
        except (ValueError, UnicodeDecodeError) as e:
            raise DatasetLayoutError(f"Split file {path} is not valid JSON ({e}); delete it to resample") from e
        if not isinstance(data, dict) or not isinstance(data.get("train"), list):
            raise DatasetLayoutError(f"Split file {path} is not a few-shot split of this project; delete it to resample")
        if data.get("class_ids", data.get("class_wnids")) != ds.class_ids:
            raise DatasetLayoutError(f"Split file {path} was made for other classes; delete it to resample")
        if data.get("source") != source:  # derived state: made from other files than the dataset has now
            why = ("it predates source fingerprints" if "source" not in data else
                   f"it was sampled from other files than {ds.NAME} lists now (its split file or folders changed)")
            logger.warning(f"{path}: {why}; sampling again")
            data = None
        else:
            logger.info(f"Loaded few-shot split {path}")
    if data is None:
        data = {**ds.sample_fewshot(), "source": source}
        try:
            atomic_write_json(path, data)
        except OSError as e:  # read-only mount, permissions, full disk...
            raise DatasetLayoutError(
                f"Cannot write the few-shot split to {path} ({e.strerror or e}); set DATASET.SPLIT_DIR to a "
                f"writable folder"
            ) from e
        logger.info(f"Sampled few-shot split and saved it to {path}")

    def to_datums(rows):
        return [Datum(str(ds.root / rel), lab, ds.classnames[lab]) for rel, lab in rows]

    return to_datums(data["train"]), to_datums(data["val"])


def source_fingerprint(ds: "DatasetBase") -> str:
    """What a split is drawn from: every candidate file per class of the train (and val) split, hashed, so that
    a cached split made from other files (a changed split file, images moved) is never reused."""
    parts = [ds.cfg.DATASET.FEWSHOT_SAMPLER]
    stamp = ds.split_source_stamp()
    if stamp is not None:  # a cheap stand-in the dataset gives for its listing (ImageNet: folder mtimes)
        return hashlib.sha256("\n".join([*parts, *stamp]).encode()).hexdigest()[:16]
    files = ds.split_source_files()
    if files:  # the split files themselves (their order matters to CoOp's sampler)
        return hashlib.sha256(b"".join([parts[0].encode(), *(Path(f).read_bytes() for f in files)])).hexdigest()[:16]
    sources = [ds._read_train_per_class()] + ([ds._read_val_per_class()] if ds.VAL_SPLIT else [])
    for per_class in sources:
        for label in sorted(per_class):
            parts.append(f"{label}:" + "|".join(sorted(os.path.relpath(f, ds.root) for f in per_class[label])))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def sample_per_class(ds: "DatasetBase") -> dict:
    """Per class: sorted files, RNG seeded by (seed, class id); K train shots, and val shots either from
    the dataset's val split (VAL_SPLIT, CoOp's datasets) or disjoint from the shots (ImageNet)."""
    k, v, seed = ds.cfg.DATASET.NUM_SHOTS, ds.val_shots, ds.cfg.SEED
    per_class = ds._read_train_per_class()
    val_per_class = ds._read_val_per_class() if ds.VAL_SPLIT else None
    train, val = [], []
    for label, cid in enumerate(ds.class_ids):
        if val_per_class is None:
            chosen = draw(ds, per_class[label], k + v, (seed, cid), label, "training", f"NUM_SHOTS + VAL_SHOTS = {k} + {v}")
            k_c = min(k, len(chosen))
            picked_train, picked_val = chosen[:k_c], chosen[k_c:]
        else:
            picked_train = draw(ds, per_class[label], k, (seed, cid), label, "training", f"NUM_SHOTS = {k}")
            picked_val = draw(ds, val_per_class.get(label, []), v, (seed, cid, "val"), label, "val",
                                    f"VAL_SHOTS = {v}")
        train += [[os.path.relpath(f, ds.root), label] for f in picked_train]
        val += [[os.path.relpath(f, ds.root), label] for f in picked_val]
    return {"dataset": ds.NAME, "seed": seed, "num_shots": k, "val_shots": v,
            "class_ids": ds.class_ids, "train": train, "val": val}


def draw(ds: "DatasetBase", files: List[str], need: int, seed_parts: tuple, label: int, split: str, what: str) -> List[str]:
    """`need` files of one class, drawn by an RNG seeded by `seed_parts` from the sorted list."""
    files = sorted(files)
    if len(files) < need:
        cid = ds.class_ids[label]
        msg = f"{ds.NAME}: class {cid} ({ds.classnames[label]}) has {len(files)} {split} images, fewer than {what}"
        if not ds.cfg.DATASET.ALLOW_FEWER_SHOTS:
            raise DatasetLayoutError(msg + " (set DATASET.ALLOW_FEWER_SHOTS True to use what there is)")
        logger.warning(msg + "; using all of them")
    return random.Random(stable_int(*seed_parts)).sample(files, min(need, len(files)))
