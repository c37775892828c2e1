"""The split protocol for a detection/segmentation student (:class:`TaskModel` with a bottleneck trunk).

Images may differ in size (COCO, VOC), so each is padded on its own and images of one size are
coded together; every sample's bitstream is the coder's, wrapped in a container whose dims are the
image's (h, w): the server needs them to clip boxes and crop masks, so they are sent and counted.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from splitbench.compression.bitstream import BitstreamError, pack, unpack
from splitbench.compression.latent_coders import bits_per_sample
from splitbench.models.task_model import TaskModel, group_by_size, pad_images, padded_size
from splitbench.pipeline import LearnedPipeline

Group = tuple[list[int], list[tuple[int, int]], torch.Tensor]  # sample indices, image sizes, latent


class TaskPipeline(LearnedPipeline):
    model: TaskModel

    def __init__(self, model: TaskModel, device: torch.device | str = "cpu") -> None:
        super().__init__(model, device)
        # The encoder on the meta device: latent shapes per padded image size, without computing anything.
        self._meta_encoder = copy.deepcopy(self.model.mobile_network()).to("meta")
        self._latent_shapes: dict[tuple[int, int], tuple[int, int]] = {}

    @torch.no_grad()
    def mobile_forward(self, images: torch.Tensor | list[torch.Tensor]) -> list[Group]:
        groups = []
        for indices, batch in group_by_size(images):
            padded, sizes = pad_images(batch.to(self.device), self.model.stride)
            groups.append((indices, sizes, self.model.mobile_forward(padded)))
        return groups

    def encode(self, features: list[Group]) -> list[bytes]:
        out: dict[int, bytes] = {}
        for indices, sizes, y in features:
            for i, size, payload in zip(indices, sizes, self.model.coder.compress(y), strict=True):
                out[i] = pack(size, [payload])
        return [out[i] for i in range(len(out))]

    @torch.no_grad()
    def decode(self, payloads: list[bytes]) -> list[Group]:
        by_size: dict[tuple[int, int], list[tuple[int, bytes]]] = {}
        for i, payload in enumerate(payloads):
            outer = unpack(payload, ndim=2, num_segments=1)
            by_size.setdefault(tuple(outer.shape), []).append((i, outer.segments[0]))  # type: ignore[arg-type]
        groups = []
        for size, items in by_size.items():
            y_hat = self.model.coder.decompress([p for _, p in items]).to(self.device)
            expected = self._latent_shape(size)
            if tuple(y_hat.shape[-2:]) != expected:
                raise BitstreamError(f"a {tuple(y_hat.shape[-2:])} latent cannot belong to a {size} image "
                                     f"(expected {expected})")
            groups.append(([i for i, _ in items], [size] * len(items), y_hat))
        return groups

    def _latent_shape(self, size: tuple[int, int]) -> tuple[int, int]:
        """The latent's (h, w) for an image of ``size``: the encoder run on the meta device (shapes only, no
        compute), once per padded size."""
        padded = padded_size([size], self.model.stride)
        if padded not in self._latent_shapes:
            with torch.no_grad():
                y = self._meta_encoder(torch.empty(1, 3, *padded, device="meta"))
            self._latent_shapes[padded] = tuple(y.shape[-2:])
        return self._latent_shapes[padded]

    @torch.no_grad()
    def server_forward(self, decoded: list[Group]) -> list[Any]:
        out: dict[int, Any] = {}
        for indices, sizes, y_hat in decoded:
            out.update(zip(indices, self.model.server_forward_sized(y_hat, sizes), strict=True))
        return [out[i] for i in range(len(out))]

    @torch.no_grad()
    def estimate_bits(self, images: Any, features: list[Group] | None = None) -> torch.Tensor:
        groups = self.mobile_forward(images) if features is None else features
        bits: dict[int, float] = {}
        for indices, _, y in groups:
            _, likelihoods = self.model.coder(y)
            bits.update(zip(indices, bits_per_sample(likelihoods).tolist(), strict=True))
        return torch.tensor([bits[i] for i in range(len(bits))])

    @torch.no_grad()
    def mobile_macs(self, images: Any) -> int:
        first = images[0] if isinstance(images, list) else images[:1]
        padded, _ = pad_images(first.to(self.device), self.model.stride)
        return super().mobile_macs(padded[:1])
