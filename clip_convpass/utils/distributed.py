"""torchrun support: process group from the environment, contiguous shards without padding, gathers."""
from __future__ import annotations

import os
from typing import Any, List, Sequence

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: torch.device) -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1); gloo on CPU, nccl on CUDA."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def local_device(device: torch.device) -> torch.device:
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def wrap_trainable(model: torch.nn.Module, device: torch.device):
    """DistributedDataParallel around a model with trainable parameters under torchrun, else None.
    DDP syncs just the gradients of the parameters that train."""
    if not is_distributed():
        return None
    from torch.nn.parallel import DistributedDataParallel

    # buffers are frozen state (LoRA's base weights, frozen text features) equal on every process: not re-sent
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   broadcast_buffers=False)


def shard(items: Sequence) -> list:
    """This rank's contiguous slice; slices cover every item exactly once (DistributedSampler would pad)."""
    n, w, r = len(items), world_size(), rank()
    return list(items[r * n // w:(r + 1) * n // w])


def gather_objects(obj: Any) -> List[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (just [obj] when not distributed)."""
    if not is_distributed():
        return [obj]
    out: List[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def from_main(obj: Any) -> Any:
    """Rank 0's obj on every rank: a decision all processes must share (e.g. one made from a clock)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()
