"""The split protocol of every learned bottleneck: one :class:`LearnedPipeline` for every trunk and head.

The wire rule: one container per sample (:mod:`splitbench.compression.bitstream`) whose dims are the
image's (h, w) and whose segments are the latent coder's strings. The server derives the latent's
shape from the image size through the encoder (on the meta device: shapes only), so a latent shape is
never read off the wire, and a size no image can have is rejected before anything is decoded.
Images of one size are coded together; each is padded on its own when the heads need image sizes, so
a sample's bytes never depend on its batch.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import torch

from splitbench.complexity import count_macs
from splitbench.compression.bitstream import (
    DEFAULT_BACKEND,
    DEFAULT_MAX_BYTES,
    Bitstream,
    BitstreamError,
    pack,
    unpack,
)
from splitbench.compression.latent_coders import MAX_LATENT_ELEMENTS
from splitbench.errors import SplitbenchError
from splitbench.models.images import Images, Size, group_by_size, in_order, padded_size
from splitbench.models.network import SplitNetwork
from splitbench.models.trunks import BottleneckTrunk
from splitbench.pipelines.base import DeviceExport, SplitPipeline, state_of
from splitbench.pipelines.networks import MOBILE_NETWORK, SERVER_NETWORK, Networks

MAX_CACHED_SHAPES = 256  # latent shapes remembered per image size (a server sees few sizes; bound the rest)


class Group(NamedTuple):
    """Samples of one image size: their batch positions, their (h, w) and their latent."""

    indices: list[int]
    sizes: list[Size]
    latent: torch.Tensor


class LearnedPipeline(SplitPipeline):
    """A :class:`SplitNetwork` with a bottleneck trunk: normalise → g_a → coder on the device, decoder → later
    stages → heads on the server. ``backend`` is the entropy coder :meth:`encode` writes with (CompressAI's by
    default); :meth:`decode` reads each stream with the one it records.

    The networks run as :attr:`networks` says (:mod:`~splitbench.pipelines.networks`): the device network one
    image at a time on a CPU (bytes independent of the batch), the server's in the micro-batch the evaluator
    measures fastest, both under bf16 autocast on CUDA with ``amp``. The server's modules are kept in
    channels-last layout (in place; the device network keeps the default layout, so its latent, and the bytes,
    are what the reference computes, e.g. sc2bench at batch 1): ResNet-50's student tail ran ~10% faster so
    at batch 1 on this project's CPU, and ~25% at batch 32."""

    def __init__(self, network: SplitNetwork, device: torch.device | str = "cpu",
                 max_latent_elements: int = MAX_LATENT_ELEMENTS, backend: str = DEFAULT_BACKEND,
                 amp: bool = False) -> None:
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.trunk: BottleneckTrunk = network.trunk  # type: ignore[assignment]
        self.coder = self.trunk.coder
        if backend not in self.coder.backends:
            raise SplitbenchError(f"{type(self.coder).__name__} writes {' or '.join(self.coder.backends)} streams, "
                                  f"not {backend} (eval.backend)")
        self.backend = backend
        per_sample = {MOBILE_NETWORK: 1} if self.device.type == "cpu" else {}
        self.networks = Networks(self.device, (MOBILE_NETWORK, SERVER_NETWORK), amp, per_sample)
        for module in (self.trunk.bottleneck.decoder, self.trunk.tail, self.network.heads):
            module.to(memory_format=torch.channels_last)
        self.max_latent_elements = max_latent_elements
        # The encoder on the meta device: latent shapes per padded image size, without computing anything.
        self._meta_encoder = copy.deepcopy(self.trunk.device_network()).to("meta")
        self._latent_shapes: dict[Size, Size] = {}

    @torch.no_grad()
    def mobile_forward(self, images: Images) -> list[Group]:
        groups = []
        for indices, batch in group_by_size(images):
            batch, sizes = self.network.prepare(batch.to(self.device))
            groups.append(Group(indices, sizes, self.networks.run(MOBILE_NETWORK, self.trunk.encode, batch)))
        return groups

    def encode(self, features: list[Group]) -> list[bytes]:
        out: dict[int, bytes] = {}
        for group in features:
            strings = self.coder.compress(group.latent, self.backend)
            out.update((i, pack(size, s, self.backend))
                       for i, size, s in zip(group.indices, group.sizes, strings, strict=True))
        return [out[i] for i in range(len(out))]

    @torch.no_grad()
    def decode(self, payloads: list[bytes]) -> list[Group]:
        if not payloads:
            raise BitstreamError("no bitstreams to decode")
        # Streams of one image size decode together, each with the entropy coder that wrote it (its backend).
        by_kind: dict[tuple[Size, str], list[tuple[int, tuple[bytes, ...]]]] = {}
        for i, payload in enumerate(payloads):
            stream = self.parse(payload)
            by_kind.setdefault(((stream.shape[0], stream.shape[1]), stream.backend), []).append((i, stream.segments))
        groups = []
        for (size, backend), items in by_kind.items():
            y_hat = self.coder.decompress([s for _, s in items], self.latent_shape(size), backend).to(self.device)
            groups.append(Group([i for i, _ in items], [size] * len(items), y_hat))
        return groups

    def parse(self, payload: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Bitstream:
        """One stream's container, checked against this model (2-D image size, its coder's segments and
        backends, a latent within the limit) before anything reaches an entropy decoder."""
        stream = unpack(payload, ndim=2, num_segments=self.coder.num_segments, backends=self.coder.backends,
                        max_bytes=max_bytes)
        self.latent_shape((stream.shape[0], stream.shape[1]))
        return stream

    def latent_shape(self, size: Size) -> Size:
        """The latent's (h, w) for an image of ``size``: the encoder run on the meta device (shapes only),
        once per padded size; a size the encoder cannot take, or one whose latent is over the limit, is
        a :class:`BitstreamError`."""
        padded = padded_size([size], self.network.stride) if self.network.needs_image_size else size
        shape = self._latent_shapes.get(padded)  # read once: a server's request thread and model thread share this
        if shape is None:
            try:
                with torch.no_grad():
                    y = self._meta_encoder(torch.empty(1, 3, *padded, device="meta"))
            except RuntimeError:  # e.g. a kernel larger than the input
                raise BitstreamError(f"an image of size {size} is too small for this model") from None
            if y.numel() > self.max_latent_elements:
                raise BitstreamError(f"an image of size {size} has a latent of {y.numel()} values, over this "
                                     f"model's limit of {self.max_latent_elements}")
            if len(self._latent_shapes) >= MAX_CACHED_SHAPES:
                self._latent_shapes.clear()
            shape = self._latent_shapes[padded] = (int(y.shape[-2]), int(y.shape[-1]))
        return shape

    @torch.no_grad()
    def server_forward(self, decoded: list[Group]) -> Any:
        return in_order([(g.indices, self.networks.run(SERVER_NETWORK, self.network.server_forward,
                                                       g.latent.contiguous(memory_format=torch.channels_last),
                                                       g.sizes)) for g in decoded])

    @torch.no_grad()
    def estimate_bits(self, images: Images, features: list[Group] | None = None) -> torch.Tensor:
        groups = self.mobile_forward(images) if features is None else features
        parts = [(g.indices, self.coder.estimate_bits(g.latent).cpu()) for g in groups]
        merged = in_order(parts)
        return merged if isinstance(merged, torch.Tensor) else torch.stack(merged)

    def mobile_state(self) -> dict[str, torch.Tensor]:
        state = state_of({"network": self.trunk.device_network()})
        state.update({f"coder.{k}": v for k, v in self.coder.mobile_state().items()})
        return state

    def device_export(self) -> DeviceExport:
        """normalise → g_a and the coder's tables (a coder that cannot run without torch says why)."""
        kind, tables = self.coder.export_tables()
        pad = self.network.stride if self.network.needs_image_size else 1
        normalization = {k: v.flatten().tolist() for k, v in self.trunk.normalize.named_buffers()}
        return DeviceExport(self.trunk.device_network().eval(), kind, tables, pad, normalization)

    def describe_runtime(self) -> dict[str, Any]:
        return {"backend": self.backend, "server_layout": "channels_last", "amp": self.networks.amp}

    def mobile_params(self) -> int:
        networks = [self.trunk.device_network(), *self.coder.device_networks().values()]
        return sum(p.numel() for net in networks for p in net.parameters())

    @torch.no_grad()
    def mobile_macs(self, image: torch.Tensor) -> int:
        batch, _ = self.network.prepare(image.to(self.device))
        network = self.trunk.device_network()
        return count_macs(network, batch) + self.coder.device_macs(network(batch))
