"""Compute cost of a forward call, for the encoder-size metric."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs(module: nn.Module, *args: Any) -> int:
    """Multiply–accumulates of one forward call (torch's FLOP counter counts 2 FLOPs per MAC)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*args)
    return counter.get_total_flops() // 2
