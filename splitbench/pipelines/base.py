"""The split pipeline: the one protocol every method follows.

``mobile(images) -> list[bytes]`` (one bitstream per sample) and ``server(payloads) -> predictions``.
Each side is two steps so the evaluator can time the network and the coding separately:
mobile = ``mobile_forward`` then ``encode``; server = ``decode`` then ``server_forward``.
Images enter as float tensors in [0, 1] (B, 3, H, W), or a list of (3, H, W) of several sizes:
normalisation belongs to the model, so a codec and a learned encoder see the same input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from splitbench.errors import SplitbenchError
from splitbench.pipelines.networks import Networks


@dataclass(frozen=True)
class DeviceExport:
    """What a torch-free device runs (``splitbench export``): ``network`` maps [0, 1] images to the latent
    (normalisation inside it), ``coder`` names the torch-free coder that reads ``tables``, and each image is
    zero-padded bottom/right on its own to a multiple of ``pad_multiple`` first (1: none). ``normalization``
    records the constants the network applies (for the manifest: the device feeds unnormalised images)."""

    network: torch.nn.Module
    coder: str
    tables: dict[str, np.ndarray]
    pad_multiple: int
    normalization: dict[str, list[float]]


class SplitPipeline(ABC):
    """Mobile side → bytes → server side. Subclasses say what runs where; a pipeline whose networks run through
    :attr:`networks` lets the evaluator choose their micro-batches."""

    networks: Networks | None = None
    _macs: dict[tuple[int, ...], int] | None = None

    @abstractmethod
    def mobile_forward(self, images: Any) -> Any: ...

    @abstractmethod
    def encode(self, features: Any) -> list[bytes]: ...

    @abstractmethod
    def decode(self, payloads: list[bytes]) -> Any: ...

    @abstractmethod
    def server_forward(self, decoded: Any) -> Any: ...

    def mobile(self, images: Any) -> list[bytes]:
        return self.encode(self.mobile_forward(images))

    def server(self, payloads: list[bytes]) -> Any:
        return self.server_forward(self.decode(payloads))

    def estimate_bits(self, images: Any, features: Any = None) -> torch.Tensor | None:
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

    def device_export(self) -> DeviceExport:
        """The device half as a network and coder tables, for a device without torch; a pipeline whose device
        side cannot run there raises a one-line SplitbenchError saying why."""
        raise SplitbenchError(f"{type(self).__name__} does not export yet; learned bottlenecks with a "
                              f"factorized prior (e.g. entropic_student fp) do")

    def close(self) -> None:  # noqa: B027  (optional hook, deliberately a no-op by default)
        """Release what the pipeline holds (worker processes)."""

    def mobile_params(self) -> int:
        return 0

    def mobile_macs(self, image: torch.Tensor) -> int:
        """MACs of the device network for one image (a batch of one)."""
        return 0

    def encoder_stats(self, images: Any) -> dict[str, int]:
        """The encoder-size metric: parameters, bits of everything on the device, MACs per sample. The MACs depend
        on the networks' structure and the image size only, so they are counted once per pipeline and size (a
        forward pass under a FLOP counter: ~60 ms for ResNet-50's student at 224 px)."""
        size_bits = sum(t.numel() * t.element_size() * 8 for t in self.mobile_state().values())
        image = first_image(images)
        if self._macs is None:
            self._macs = {}
        key = tuple(image.shape)
        if key not in self._macs:
            self._macs[key] = int(self.mobile_macs(image))
        return {"params": self.mobile_params(), "size_bits": int(size_bits), "macs": self._macs[key]}


def first_image(images: Any) -> torch.Tensor:
    """A batch of one: the first image (MACs are counted per sample)."""
    return images[0][None] if isinstance(images, list) else images[:1]


def state_of(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``modules``, prefixed by their names (what a device holds of them)."""
    state: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        state.update({f"{name}.{k}": v for k, v in module.named_parameters()})
        state.update({f"{name}.{k}": v for k, v in module.named_buffers()})
    return state
