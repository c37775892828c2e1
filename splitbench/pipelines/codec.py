"""Pipelines whose split is crossed by a standard codec: of the image (input compression, and raw pixels
for the unsplit teacher) or of a split point's features (feature codecs, and the naive split's raw
features). Nothing on the device is learned; the server runs a trained :class:`SplitNetwork`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from splitbench.codecs.pool import CodecPool, SampleCodec
from splitbench.complexity import count_macs
from splitbench.errors import SplitbenchError
from splitbench.models.images import Images
from splitbench.models.network import SplitNetwork
from splitbench.models.trunks import FeatureTrunk
from splitbench.pipelines.base import DeviceExport, SplitPipeline, state_of
from splitbench.pipelines.networks import SERVER_NETWORK, Networks


def to_uint8_images(images: Images) -> list[np.ndarray]:
    """[0, 1] float (B, 3, H, W), or a list of (3, H, W) of any sizes → list of (H, W, 3) uint8, as a camera
    would hand them to a codec."""
    if isinstance(images, list):
        return [a for im in images for a in to_uint8_images(im[None])]
    array = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(array)


def to_tensor(images: list[np.ndarray], device: torch.device) -> Images:
    """One batch tensor, or a list of (3, H, W) tensors where the images differ in size (detection data)."""
    if any(im.shape != images[0].shape for im in images):
        return [to_tensor([im], device)[0] for im in images]  # type: ignore[index]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255).to(device)


class CodecPipeline(SplitPipeline):
    """Shared by every pipeline whose split is crossed by a standard codec (images or feature maps).

    ``encode`` codes each sample (encode and decode) in the pool and keeps what the workers decoded;
    ``decode`` returns those results for payloads identical to what was encoded (decoding is a pure
    function of the bytes) and decodes any other payload itself, so a corrupted or foreign
    bitstream is still parsed and rejected. Per-sample codec times measured inside the workers
    accumulate in :attr:`codec_seconds`; :meth:`describe_runtime` reports them for the record.
    """

    def __init__(self, codec: SampleCodec, workers: int | None = 1) -> None:
        self.codec = codec
        self.pool = CodecPool(codec, workers)
        self.codec_seconds = {"encode": 0.0, "decode": 0.0}
        self.codec_samples = {"encode": 0, "decode": 0}
        self._decoded: dict[bytes, list[tuple[np.ndarray, float]]] = {}

    @property
    def workers(self) -> int:
        return self.pool.workers

    def encode(self, features: list[np.ndarray]) -> list[bytes]:
        samples = self.pool.code(list(features))
        self._decoded = {}
        for sample in samples:
            self._decoded.setdefault(sample.data, []).append((sample.decoded, sample.decode_seconds))
        self.codec_seconds["encode"] += sum(s.encode_seconds for s in samples)
        self.codec_samples["encode"] += len(samples)
        return [s.data for s in samples]

    def decode_samples(self, payloads: list[bytes]) -> list[np.ndarray]:
        out = []
        for payload in payloads:
            done = self._decoded.get(payload)
            if done:
                decoded, seconds = done.pop()
            else:
                start = time.perf_counter()
                decoded = self.codec.decode(payload)
                seconds = time.perf_counter() - start
            self.codec_seconds["decode"] += seconds
            self.codec_samples["decode"] += 1
            out.append(decoded)
        self._decoded = {}
        return out

    def describe_runtime(self) -> dict[str, Any]:
        """For the result record: codec settings, worker count and per-sample codec times (ms)."""
        timing = {f"entropy_{k}_ms_mean": 1000 * self.codec_seconds[k] / self.codec_samples[k]
                  for k in ("encode", "decode") if self.codec_samples[k]}
        return {"workers": self.workers, "codec": self.codec.describe(), "timing": timing}

    def close(self) -> None:
        self.pool.close()


class InputCodecPipeline(CodecPipeline):
    """Codec on the device; the decoded image → the whole network on the server. No learned device part."""

    def __init__(self, codec: SampleCodec, network: SplitNetwork, device: torch.device, workers: int | None = 1):
        super().__init__(codec, workers)
        self.network = network.to(device).eval()
        self.device = device
        self.networks = Networks(torch.device(device), (SERVER_NETWORK,))

    def mobile_forward(self, images: Images) -> list[np.ndarray]:
        return to_uint8_images(images)

    def decode(self, payloads: list[bytes]) -> Images:
        return to_tensor(self.decode_samples(payloads), self.device)

    @torch.no_grad()
    def server_forward(self, decoded: Images) -> Any:
        return self.networks.run(SERVER_NETWORK, self.network.predict, decoded)

    def device_export(self) -> DeviceExport:
        raise SplitbenchError("codecs need no export: the device runs a standard codec (or sends raw pixels) and "
                              "nothing learned; export a learned bottleneck's run, or serve this unsplit run "
                              "behind a codec with `splitbench serve RUN --codec jpeg`")


class FeatureCodecPipeline(CodecPipeline):
    """The teacher up to ``split_after`` → a feature codec (pooled like the input codecs) → the rest of it."""

    def __init__(self, codec: SampleCodec, network: SplitNetwork, split_after: str, device: torch.device,
                 workers: int | None = 1) -> None:
        super().__init__(codec, workers)
        self.network = network.to(device).eval()
        self.trunk: FeatureTrunk = network.trunk  # type: ignore[assignment]
        self.split_after = split_after
        self.head = self.trunk.device_part(split_after)
        self.device = device
        self.networks = Networks(torch.device(device), (SERVER_NETWORK,))

    @torch.no_grad()
    def mobile_forward(self, images: torch.Tensor) -> list[np.ndarray]:
        return list(self.head(images.to(self.device)).float().cpu().numpy())

    def decode(self, payloads: list[bytes]) -> torch.Tensor:
        return torch.from_numpy(np.stack(self.decode_samples(payloads))).to(self.device)

    @torch.no_grad()
    def server_forward(self, decoded: torch.Tensor) -> Any:
        return self.networks.run(SERVER_NETWORK, self._server, decoded)

    def _server(self, decoded: torch.Tensor) -> Any:
        features = self.trunk.features_from(self.split_after, decoded)
        size = (int(decoded.shape[-2]), int(decoded.shape[-1]))
        predictions, _ = self.network.run_heads(features, [size] * len(decoded), size)
        return self.network.output(predictions)

    def mobile_state(self) -> dict[str, torch.Tensor]:
        return state_of({"network": self.head})

    def mobile_params(self) -> int:
        return sum(p.numel() for p in self.head.parameters())

    def mobile_macs(self, image: torch.Tensor) -> int:
        return count_macs(self.head, image.to(self.device))

    def describe_runtime(self) -> dict:
        return {**super().describe_runtime(), "split_after": self.split_after}
