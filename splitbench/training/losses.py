"""Losses shared by the training recipes, written once so the methods cannot drift apart.

Conventions (the published recipes differ, so each loss names its reduction):

* feature distillation: Σ over stages of MSE *summed* over all elements (Entropic Student stage 1,
  CR+BQ head-network distillation);
* rate: bits from the entropy model's likelihoods, either summed over the batch (Entropic Student,
  whose β values go with summed MSE) or as the mean bits per image (End-to-End and EB fine-tuning,
  sc2bench's ``BppLoss(reduction='batchmean')``: Σ_batch bits / batch size);
* knowledge distillation: KL(teacher ‖ student) at temperature T, scaled by T².
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F

from splitbench.compression.latent_coders import bits_per_sample


def feature_distillation(
    student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], stages: Iterable[str]
) -> torch.Tensor:
    """Σ_stages MSE(sum) between student and teacher outputs (in float32, whatever autocast did)."""
    losses = [F.mse_loss(student[s].float(), teacher[s].float(), reduction="sum") for s in stages]
    if not losses:
        raise ValueError("feature distillation needs at least one stage")
    return torch.stack(losses).sum()


def rate_bits(likelihoods: dict[str, torch.Tensor], reduction: Literal["sum", "batchmean"]) -> torch.Tensor:
    """Bits of every latent (y and, for hyperpriors, z) over the batch: summed, or per image."""
    bits = bits_per_sample(likelihoods)
    return bits.sum() if reduction == "sum" else bits.mean()


def kd_divergence(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher_logits / t, 1), reduction="batchmean",
                    log_target=True) * t * t
