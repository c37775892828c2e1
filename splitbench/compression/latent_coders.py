"""Entropy models for a latent ``y``: likelihoods for training, real per-sample bitstreams for inference.

CompressAI supplies the entropy models and the rANS coder; this module adds what a split
pipeline needs on top: one container bitstream per sample, a validated decode, the rate
estimate in bits per sample, and the exact set of tensors the mobile side must hold.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod

import torch
from torch import nn

from splitbench.compression.bitstream import BitstreamError, pack, unpack

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # compressai imports torch.jit.script
    from compressai.entropy_models import EntropyBottleneck
    from compressai.models.utils import update_registered_buffers

# Zero bytes appended to a payload before it reaches CompressAI's C++ rANS decoder. The decoder
# reads at most one 32-bit word per symbol on its normal path and has no bounds checks, so a
# payload that passed the checksum but ends early cannot make it read outside our buffer.
_PAD_BYTES_PER_SYMBOL = 8
MAX_LATENT_ELEMENTS = 1 << 24


class LatentCoder(nn.Module, ABC):
    """Interface every entropy model follows, so bottlenecks and pipelines never special-case one."""

    @abstractmethod
    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(y_hat, likelihoods): noisy y_hat while training, dequantized in eval mode."""

    @abstractmethod
    def quantize(self, y: torch.Tensor) -> torch.Tensor:
        """The y_hat a decoder sees at test time (without coding), e.g. for stage-2 training."""

    @abstractmethod
    def compress(self, y: torch.Tensor) -> list[bytes]:
        """One container bitstream per sample."""

    @abstractmethod
    def decompress(self, payloads: list[bytes]) -> torch.Tensor:
        """Inverse of :meth:`compress`; raises BitstreamError on anything malformed."""

    @abstractmethod
    def update(self) -> None:
        """Freeze the coder's tables from the current model (after rate training)."""

    @abstractmethod
    def aux_loss(self) -> torch.Tensor: ...

    @abstractmethod
    def mobile_state(self) -> dict[str, torch.Tensor]:
        """Every tensor the device needs to produce the bitstream (for encoder size and export)."""


def bits_per_sample(likelihoods: dict[str, torch.Tensor]) -> torch.Tensor:
    """The entropy model's rate estimate, −Σ log2 p, per sample (shape [B])."""
    total = None
    for p in likelihoods.values():
        bits = -torch.log2(p).flatten(1).sum(1)
        total = bits if total is None else total + bits
    assert total is not None
    return total


def _padded(segment: bytes, symbols: int) -> bytes:
    return segment + bytes(_PAD_BYTES_PER_SYMBOL * symbols + 64)


class FactorizedPrior(LatentCoder):
    """A fully factorized (per-channel, non-parametric) prior: CompressAI's EntropyBottleneck."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.entropy_bottleneck = EntropyBottleneck(channels)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        y_hat, likelihoods = self.entropy_bottleneck(y)
        return y_hat, {"y": likelihoods}

    def quantize(self, y: torch.Tensor) -> torch.Tensor:
        eb = self.entropy_bottleneck
        medians = eb._get_medians()
        return torch.round(y - medians) + medians

    def compress(self, y: torch.Tensor) -> list[bytes]:
        strings = self.entropy_bottleneck.compress(y)
        return [pack(y.shape[-2:], [s]) for s in strings]

    def decompress(self, payloads: list[bytes]) -> torch.Tensor:
        parsed = [unpack(p, ndim=2, num_segments=1, max_elements=MAX_LATENT_ELEMENTS // self.channels)
                  for p in payloads]
        shape = parsed[0].shape
        if any(b.shape != shape for b in parsed):
            raise BitstreamError("bitstreams in one batch must share a latent shape; decode them separately")
        symbols = self.channels * shape[0] * shape[1]
        strings = [_padded(b.segments[0], symbols) for b in parsed]
        return self.entropy_bottleneck.decompress(strings, shape)

    def update(self) -> None:
        self.fit_quantiles()
        self.entropy_bottleneck.update(force=True)

    @torch.no_grad()
    def fit_quantiles(self, iterations: int = 64) -> float:
        """Set the coder's range (the quantiles) exactly for the learned density; returns the aux loss.

        CompressAI learns the quantiles by gradient descent on an auxiliary loss that depends only
        on the density model. A short training run leaves them far from converged, and tables built
        from them cover the wrong range (costly escape codes). The cumulative logit is monotone in
        each quantile, so bisection solves the same equations exactly, in milliseconds.
        """
        eb = self.entropy_bottleneck
        target = eb.target.view(1, 1, -1).expand_as(eb.quantiles)
        bound = torch.full_like(eb.quantiles, 16.0)
        while True:  # widen until every root is bracketed (the density has finite tails)
            below = eb._logits_cumulative(-bound, stop_gradient=True) < target
            above = eb._logits_cumulative(bound, stop_gradient=True) > target
            if bool((below & above).all()) or bool((bound > 1e6).any()):
                break
            bound = torch.where(below & above, bound, bound * 4)
        low, high = -bound, bound.clone()
        for _ in range(iterations):
            mid = (low + high) / 2
            too_low = eb._logits_cumulative(mid, stop_gradient=True) < target
            low = torch.where(too_low, mid, low)
            high = torch.where(too_low, high, mid)
        eb.quantiles.data.copy_((low + high) / 2)
        return float(self.aux_loss())

    def aux_loss(self) -> torch.Tensor:
        return self.entropy_bottleneck.loss()

    def mobile_state(self) -> dict[str, torch.Tensor]:
        eb = self.entropy_bottleneck
        return {
            "quantized_cdf": eb._quantized_cdf,
            "cdf_length": eb._cdf_length,
            "offset": eb._offset,
            "medians": eb._get_medians().detach().flatten(),
        }

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The coder tables' sizes depend on the trained model; size the buffers before loading.
        names = ["_quantized_cdf", "_offset", "_cdf_length"]
        if f"{prefix}entropy_bottleneck._quantized_cdf" in state_dict:
            update_registered_buffers(self.entropy_bottleneck, f"{prefix}entropy_bottleneck", names, state_dict,
                                      policy="resize")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
