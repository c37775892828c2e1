"""The split pipeline: the one protocol every method follows (see DESIGN.md).

``mobile(images) -> list[bytes]`` (one bitstream per sample) and ``server(payloads) -> predictions``.
Each side is two steps so the evaluator can time the network and the coding separately:
mobile = ``mobile_forward`` then ``encode``; server = ``decode`` then ``server_forward``.
Images enter as float tensors in [0, 1] (B, 3, H, W): normalisation belongs to the model, so a
codec and a learned encoder see the same input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from splitbench.complexity import count_macs
from splitbench.compression.latent_coders import LatentCoder, bits_per_sample


class SplitPipeline(ABC):
    """Mobile side → bytes → server side. Subclasses say what runs where."""

    task: str = "classification"

    @abstractmethod
    def mobile_forward(self, images: torch.Tensor) -> Any: ...

    @abstractmethod
    def encode(self, features: Any) -> list[bytes]: ...

    @abstractmethod
    def decode(self, payloads: list[bytes]) -> Any: ...

    @abstractmethod
    def server_forward(self, decoded: Any) -> Any: ...

    def mobile(self, images: torch.Tensor) -> list[bytes]:
        return self.encode(self.mobile_forward(images))

    def server(self, payloads: list[bytes]) -> Any:
        return self.server_forward(self.decode(payloads))

    def estimate_bits(self, images: torch.Tensor, features: Any = None) -> torch.Tensor | None:
        """The entropy model's rate estimate per sample, where one exists. ``features`` is what
        :meth:`mobile_forward` returned for ``images``, when the caller has it (saves a second pass)."""
        return None

    def mobile_state(self) -> dict[str, torch.Tensor]:
        """Every tensor the device holds at inference (weights, buffers, coder tables)."""
        return {}

    def describe_runtime(self) -> dict[str, Any]:
        """Settings of this run for the record (codec options, worker processes). A ``timing`` entry
        with per-sample ``entropy_encode_ms_mean``/``entropy_decode_ms_mean`` measured where the
        coding really ran (e.g. inside pool workers) replaces the evaluator's wall-clock split."""
        return {}

    def close(self) -> None:  # noqa: B027  (optional hook, deliberately a no-op by default)
        """Release what the pipeline holds (worker processes)."""

    def mobile_params(self) -> int:
        return 0

    def mobile_macs(self, images: torch.Tensor) -> int:
        return 0

    def encoder_stats(self, images: torch.Tensor) -> dict[str, int]:
        """The encoder-size metric: parameters, bits of everything on the device, MACs per sample."""
        size_bits = sum(t.numel() * t.element_size() * 8 for t in self.mobile_state().values())
        return {"params": self.mobile_params(), "size_bits": int(size_bits),
                "macs": int(self.mobile_macs(images[:1]))}


class SplitModel(nn.Module):
    """A learned split model: a device network producing latent y, a coder, and a server network."""

    coder: LatentCoder

    def mobile_network(self) -> nn.Module:
        raise NotImplementedError

    def mobile_forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.mobile_network()(images)

    def server_forward(self, y_hat: torch.Tensor) -> Any:
        raise NotImplementedError


class LearnedPipeline(SplitPipeline):
    """Any :class:`SplitModel` as a pipeline: the coder's bitstreams cross the split."""

    def __init__(self, model: SplitModel, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def mobile_forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.mobile_forward(images.to(self.device))

    def encode(self, features: torch.Tensor) -> list[bytes]:
        return self.model.coder.compress(features)

    @torch.no_grad()
    def decode(self, payloads: list[bytes]) -> torch.Tensor:
        return self.model.coder.decompress(payloads).to(self.device)

    @torch.no_grad()
    def server_forward(self, decoded: torch.Tensor) -> Any:
        return self.model.server_forward(decoded)

    @torch.no_grad()
    def estimate_bits(self, images: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        y = self.model.mobile_forward(images.to(self.device)) if features is None else features
        _, likelihoods = self.model.coder(y)
        return bits_per_sample(likelihoods)

    def mobile_state(self) -> dict[str, torch.Tensor]:
        network = self.model.mobile_network()
        state = {f"network.{k}": v for k, v in network.named_parameters()}
        state.update({f"network.{k}": v for k, v in network.named_buffers()})
        state.update({f"coder.{k}": v for k, v in self.model.coder.mobile_state().items()})
        return state

    def mobile_params(self) -> int:
        networks = [self.model.mobile_network(), *self.model.coder.device_networks().values()]
        return sum(p.numel() for net in networks for p in net.parameters())

    @torch.no_grad()
    def mobile_macs(self, images: torch.Tensor) -> int:
        network = self.model.mobile_network()
        y = network(images.to(self.device))
        return count_macs(network, images.to(self.device)) + self.model.coder.device_macs(y)
