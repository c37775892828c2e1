"""Neural input compression: a CompressAI codec on the device, the teacher on the server.

The device runs the analysis transforms and the entropy coder; everything it needs to produce the
bits counts as encoder size (:meth:`~splitbench.models.neural_codecs.Architecture.device_modules`
and the coder tables). One container per sample holds the image size and the y (and z) strings, as
for every learned pipeline: the latent shapes follow from the image size, never from the wire.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from splitbench.codecs.base import MAX_PIXELS
from splitbench.complexity import count_macs
from splitbench.compression.bitstream import BitstreamError, pack, unpack
from splitbench.compression.latent_coders import bits_per_sample
from splitbench.compression.rans_coder import pad_for_decoder
from splitbench.errors import SplitbenchError
from splitbench.models.images import pad_replicate, padded_size
from splitbench.models.network import SplitNetwork
from splitbench.models.neural_codecs import DeviceNetwork, architecture_of, coder_ready
from splitbench.pipelines.base import SplitPipeline, state_of
from splitbench.pipelines.networks import SERVER_NETWORK, Networks


class Latents(NamedTuple):
    y: torch.Tensor
    z: torch.Tensor | None
    size: tuple[int, int]  # the image's (height, width) before padding


class NeuralCodecPipeline(SplitPipeline):
    """g_a (+ hyperprior and context model) and entropy coding on the device; decode, g_s, the network on the server."""

    def __init__(self, codec, network: SplitNetwork, device: torch.device, max_pixels: int = MAX_PIXELS,
                 description: dict | None = None) -> None:
        if not coder_ready(codec):
            raise SplitbenchError("the codec's entropy coder has no tables: train it (its stage ends with "
                                  "update) or load updated weights")
        self.device = torch.device(device)
        self.codec = codec.to(self.device).eval()
        self.arch = architecture_of(codec)
        self.network = network.to(self.device).eval()
        self.factor = int(codec.downsampling_factor)
        self.max_pixels = max_pixels
        self.description = description or {}
        self.networks = Networks(self.device, (SERVER_NETWORK,))

    @torch.no_grad()
    def mobile_forward(self, images: torch.Tensor) -> Latents:
        images = images.to(self.device)
        y, z = self.arch.analysis(self.codec, pad_replicate(images, self.factor))
        return Latents(y, z, (int(images.shape[2]), int(images.shape[3])))

    @torch.no_grad()
    def encode(self, features: Latents) -> list[bytes]:
        strings = self.arch.compress(self.codec, features.y, features.z)
        return [pack(features.size, list(segments)) for segments in zip(*strings, strict=True)]

    @torch.no_grad()
    def decode(self, payloads: list[bytes]) -> torch.Tensor:
        if not payloads:
            raise BitstreamError("no bitstreams to decode")
        count = self.arch.num_segments
        streams = [unpack(p, ndim=2, num_segments=count, max_elements=self.max_pixels) for p in payloads]
        size = streams[0].shape
        if any(s.shape != size for s in streams):
            raise BitstreamError("bitstreams in one batch must share an image size; decode them separately")
        height, width = size
        ph, pw = padded_size([(height, width)], self.factor)
        symbols = self.codec.M * (ph // 16) * (pw // 16)  # y has the most symbols; the padding bounds both
        strings = [[pad_for_decoder(s.segments[k], symbols) for s in streams] for k in range(count)]
        x_hat = self.codec.decompress(strings, (ph // self.factor, pw // self.factor))["x_hat"]
        return x_hat[..., :height, :width]

    @torch.no_grad()
    def server_forward(self, decoded: torch.Tensor) -> Any:
        return self.networks.run(SERVER_NETWORK, self.network.predict, decoded)

    @torch.no_grad()
    def estimate_bits(self, images: torch.Tensor, features: Latents | None = None) -> torch.Tensor:
        """CompressAI's likelihoods of the latents :meth:`mobile_forward` computed (no second analysis, no g_s)."""
        latents = self.mobile_forward(images) if features is None else features
        return bits_per_sample(self.arch.likelihoods(self.codec, latents.y, latents.z))

    def mobile_state(self) -> dict[str, torch.Tensor]:
        state = state_of(self.arch.device_modules(self.codec))
        state.update(self.arch.coder_tables(self.codec))
        return state

    def mobile_params(self) -> int:
        return sum(p.numel() for m in self.arch.device_modules(self.codec).values() for p in m.parameters())

    @torch.no_grad()
    def mobile_macs(self, image: torch.Tensor) -> int:
        return count_macs(DeviceNetwork(self.codec), image.to(self.device))

    def describe_runtime(self) -> dict[str, Any]:
        return {"workers": 1, "threads": torch.get_num_threads(),
                "codec": {"arch": self.description.get("arch"), "N": int(self.codec.N), "M": int(self.codec.M),
                          **{k: v for k, v in self.description.items() if k != "arch"}}}
