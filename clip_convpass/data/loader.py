"""DataLoaders for a list of Datums: train (shuffled; under torchrun a 1/W share of the global batch)
or test (in order), skipping unreadable images when DATASET.SKIP_BAD_IMAGES is set."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader, DistributedSampler

from .. import distributed
from .images import ImageListDataset, collate_skipping
from .transforms import build_transform


def build_loader(cfg, items: Sequence, is_train: bool, device: torch.device,
                 generator: Optional[torch.Generator] = None, transform=None) -> DataLoader:
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
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
