"""DataLoaders for a list of Datums: train (shuffled; under torchrun a 1/W share of the global batch)
or test (in order), skipping unreadable images when DATASET.SKIP_BAD_IMAGES is set.

Randomness policy: every random draw of data loading comes from a named stream (SEED, purpose,
epoch or pass): the order from a generator seeded by the stream, each sample's augmentation from
a seed derived from (stream, sample index), both made by the sampler in the main process. So the same
stream gives bit-identical batches for any NUM_WORKERS, any number of processes, with workers made anew
or kept from the previous epoch, and across a kill and resume; and the process's own RNG (dropout) is
never consumed by data loading.
"""
from __future__ import annotations

import math
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

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


class StreamSampler(Sampler):
    """Yields (sample seed, index) pairs of one stream: the order from a generator seeded by (SEED, stream,
    "order"), every index paired with the stream's sample seed (ImageListDataset seeds the item's transforms from
    it). set_stream() moves a loader whose workers persist to the next epoch's stream; the pairs depend on the
    stream alone, so batches are the same whether workers are new or reused, and for any NUM_WORKERS.

    Under torchrun each process takes its 1/W share of one order common to all (DistributedSampler's)."""

    def __init__(self, n: int, seed: int, stream: Stream, shuffle: bool):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.set_stream(stream)

    def set_stream(self, stream: Stream) -> None:
        self.stream = stream
        self.sample_seed = stream_seed(self.seed, stream, "samples")

    def __len__(self) -> int:
        if self.shuffle and distributed.is_distributed():
            return math.ceil(self.n / distributed.world_size())
        return self.n

    def order(self) -> List[int]:
        if not self.shuffle:
            return list(range(self.n))
        generator = torch.Generator()
        generator.manual_seed(stream_seed(self.seed, self.stream, "order"))
        if distributed.is_distributed():
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
            return list(DistributedSampler(range(self.n), shuffle=True, seed=seed))
        # the DataLoader of earlier versions drew its workers' base seed from this generator first: drawing it
        # here too keeps every stream's order (and so the results of runs made then) unchanged
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        return torch.randperm(self.n, generator=generator).tolist()

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        return iter([(self.sample_seed, i) for i in self.order()])


def set_stream(loader: DataLoader, stream: Stream) -> None:
    """Point a loader made by build_loader(..., stream=...) at another stream (the next epoch)."""
    loader.sampler.set_stream(stream)


def build_loader(cfg, items: Sequence, is_train: bool, device: torch.device, transform=None,
                 stream: Optional[Stream] = None, persistent: bool = False) -> DataLoader:
    """stream: the random stream this pass draws from (required for shuffled or augmented passes).
    persistent: keep the workers for further passes (set_stream between them), e.g. one loader for all epochs."""
    if stream is None and is_train:
        raise ValueError("a training loader needs a random stream (purpose, epoch)")
    ds = ImageListDataset(items, transform or build_transform(cfg, is_train), cfg.DATASET.SKIP_BAD_IMAGES)
    batch_size = cfg.DATALOADER.TRAIN_X.BATCH_SIZE if is_train else cfg.DATALOADER.TEST.BATCH_SIZE
    if is_train and distributed.is_distributed():
        # TRAIN_X.BATCH_SIZE is the global batch: each of the W processes takes 1/W of it.
        w = distributed.world_size()
        if batch_size % w:
            raise ValueError(f"DATALOADER.TRAIN_X.BATCH_SIZE={batch_size} must be divisible by the {w} processes")
        batch_size //= w
    sampler = StreamSampler(len(ds), cfg.SEED, stream, shuffle=is_train) if stream is not None else None
    workers = num_workers(cfg)
    # the DataLoader draws its workers' base seed from this generator, not from the process RNG (dropout); our
    # transforms are seeded per sample, so the base seed itself never matters
    generator = torch.Generator()
    generator.manual_seed(0)
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skipping,
        generator=generator,
        pin_memory=device.type == "cuda",
        persistent_workers=persistent and workers > 0,
        drop_last=is_train and cfg.DATALOADER.TRAIN_X.DROP_LAST and len(ds) > batch_size,
    )
