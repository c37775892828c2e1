"""How a pipeline runs its networks: in micro-batches, and under autocast on CUDA.

A large batch is not always the fastest on a CPU (ResNet-50's student at 224 px: its device network took
1.8x as long per image at batch 32 as at batch 1), so each network step runs in micro-batches whose size the
evaluator chooses by measuring (:mod:`splitbench.evaluation.micro_batch`); coding stays per sample whatever
they are. On a CPU a learned bottleneck's device network runs one image at a time: convolutions there round
differently at different batch sizes (one latent symbol in ~2 million flipped between batch 1 and 4), and a
device codes one image at a time, so its latent, and its bytes, then never depend on how the evaluator
batched (and are what a batch-1 run computes, e.g. sc2bench's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

MOBILE_NETWORK, SERVER_NETWORK = "mobile_network", "server_network"  # the evaluator's names for the two steps


def join(parts: Sequence[Any]) -> Any:
    """Micro-batches' outputs as one batch's: tensors (a batch of logits, masks) concatenated, lists (one
    prediction per image) item by item."""
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(list(parts))
    return [item for part in parts for item in part]


def micro_batched(fn: Callable[..., Any], size: int | None, *batch: Any) -> Any:
    """``fn(*batch)`` on consecutive slices of at most ``size`` samples of every argument (tensors or lists), the
    outputs joined in order; the whole batch at once where ``size`` is None or not smaller."""
    count = len(batch[0])
    if size is None or size >= count:
        return fn(*batch)
    return join([fn(*(b[i : i + size] for b in batch)) for i in range(0, count, size)])


def to_float(output: Any) -> Any:
    """Floating-point tensors in ``output`` (a tensor, or lists, tuples and dicts of them) as float32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, dict):
        return {k: to_float(v) for k, v in output.items()}
    if isinstance(output, (list, tuple)):
        return type(output)(to_float(v) for v in output)
    return output


class Networks:
    """Runs a pipeline's network steps: each in micro-batches of :attr:`micro_batch` ``[step]`` samples (absent:
    the whole batch), under bf16 autocast on CUDA when ``amp`` (outputs back in float32, so entropy models and
    coders always see fp32). ``tunable`` are the steps the evaluator may choose a micro-batch for; the others
    keep the size they were given (e.g. 1)."""

    def __init__(self, device: torch.device, steps: Sequence[str], amp: bool = False,
                 fixed: dict[str, int] | None = None) -> None:
        self.device = device
        self.amp = amp and device.type == "cuda"
        self.micro_batch: dict[str, int] = dict(fixed or {})
        self.tunable = tuple(s for s in steps if s not in self.micro_batch)

    def run(self, step: str, fn: Callable[..., Any], *batch: Any) -> Any:
        if not self.amp:
            return micro_batched(fn, self.micro_batch.get(step), *batch)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return to_float(micro_batched(fn, self.micro_batch.get(step), *batch))
