"""DataLoaders for a list of Datums: train (shuffled; under torchrun a 1/W share of the global batch)
or test (in order), skipping unreadable images when DATASET.SKIP_BAD_IMAGES is set.

Randomness policy: every random draw of data loading comes from a named stream (SEED, purpose,
epoch or pass): the order from a generator seeded by the stream, each sample's augmentation from
a seed derived from (stream, sample index). So the same stream gives bit-identical batches for any
NUM_WORKERS, any number of processes, and across a kill and resume; and the process's own RNG
(dropout) is never consumed by data loading.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, DistributedSampler

from clip_convpass.data.images import ImageListDataset, collate_skipping
from clip_convpass.data.transforms import build_transform
from clip_convpass.data.types import stable_int
from clip_convpass.utils import distributed

Stream = Tuple[str, int]  # (purpose, epoch or pass), e.g. ("train", 3), ("tip-cache", 0)


def stream_seed(seed: int, stream: Stream, what: str) -> int:
    return stable_int(seed, *stream, what) % (2**63)


def num_workers(cfg) -> int:
    """DATALOADER.NUM_WORKERS, or with -1 the cores this process may use, at most 8 (more workers than
    cores only adds contention)."""
    n = cfg.DATALOADER.NUM_WORKERS
    if n >= 0:
        return n
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, 8)


def build_loader(cfg, items: Sequence, is_train: bool, device: torch.device, transform=None,
                 stream: Optional[Stream] = None) -> DataLoader:
    """stream: the random stream this pass draws from (required for shuffled or augmented passes)."""
    if stream is None and is_train:
        raise ValueError("a training loader needs a random stream (purpose, epoch)")
    generator = torch.Generator()
    sample_seed = None
    if stream is not None:
        generator.manual_seed(stream_seed(cfg.SEED, stream, "order"))
        sample_seed = stream_seed(cfg.SEED, stream, "samples")
    ds = ImageListDataset(items, transform or build_transform(cfg, is_train), cfg.DATASET.SKIP_BAD_IMAGES,
                          sample_seed)
    batch_size = cfg.DATALOADER.TRAIN_X.BATCH_SIZE if is_train else cfg.DATALOADER.TEST.BATCH_SIZE
    sampler = None
    if is_train and distributed.is_distributed():
        # TRAIN_X.BATCH_SIZE is the global batch: each of the W processes takes 1/W of it.
        w = distributed.world_size()
        if batch_size % w:
            raise ValueError(f"DATALOADER.TRAIN_X.BATCH_SIZE={batch_size} must be divisible by the {w} processes")
        batch_size //= w
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
        sampler = DistributedSampler(ds, shuffle=True, seed=seed)  # the same order on every process
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=is_train and sampler is None,
        sampler=sampler,
        num_workers=num_workers(cfg),
        collate_fn=collate_skipping,
        generator=generator,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
