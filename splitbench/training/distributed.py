"""DDP set-up from torchrun's environment (gloo on CPU, nccl on CUDA); a no-op in one process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this process group was started here (not by a launcher), so it is ended here

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group of torchrun's (or a cluster job's) environment; single-process info outside one.

    A group already initialised (by a launcher or the caller) is used as it is and left to its owner."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


@torch.no_grad()
def average_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks.

    DDP all-reduces gradients, so parameters agree, but each rank updates its running
    statistics from its own batches: without this the replicas drift apart in their buffers.
    """
    if not info.enabled:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(info.world_size)


def cleanup(info: DistInfo) -> None:
    if info.enabled and info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(spec: str, info: DistInfo | None = None) -> torch.device:
    """``auto`` → the local rank's GPU if CUDA is available, else CPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", info.local_rank if info else 0)
    if device.type == "cuda" and not torch.cuda.is_available():
        from splitbench.errors import SplitbenchError

        raise SplitbenchError("device 'cuda' was asked for but CUDA is not available; use device: auto or cpu")
    return device
