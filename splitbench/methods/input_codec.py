"""Input compression: the mobile side is an image codec, the server decodes and runs the full model."""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from splitbench.codecs import ImageCodec, get_codec
from splitbench.compression.bitstream import pack, unpack
from splitbench.methods.base import BuildContext, Method, MethodArgs, register_method
from splitbench.models.staged import StagedNetwork
from splitbench.pipeline import SplitPipeline


def to_uint8_images(images: torch.Tensor) -> list[np.ndarray]:
    """[0, 1] float (B, 3, H, W) → list of (H, W, 3) uint8, as a camera would hand them to a codec."""
    array = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(array)


def to_tensor(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255).to(device)


class RawPixels(ImageCodec):
    """Uncompressed 8-bit pixels in a container: what "send the image" costs without a codec."""

    name = "raw"

    def __init__(self, quality: float = 0) -> None:
        self.quality = quality

    def encode(self, image: np.ndarray) -> bytes:
        return pack(image.shape, [image.tobytes()])

    def decode(self, data: bytes) -> np.ndarray:
        stream = unpack(data, ndim=3, num_segments=1, max_elements=1 << 26)
        if stream.shape[2] != 3 or len(stream.segments[0]) != np.prod(stream.shape):
            raise ValueError(f"raw bitstream of shape {stream.shape} has {len(stream.segments[0])} bytes")
        return np.frombuffer(stream.segments[0], np.uint8).reshape(stream.shape)

    def describe(self) -> dict:
        return {"codec": "raw"}


class InputCodecPipeline(SplitPipeline):
    """Codec on the device; decoded image → the full model on the server. No learned device part."""

    def __init__(self, codec: ImageCodec, model: StagedNetwork, device: torch.device, workers: int | None = 1):
        self.codec = codec
        self.model = model.to(device).eval()
        self.device = device
        self.workers = workers
        self.codec_seconds = {"encode": 0.0, "decode": 0.0}

    def mobile_forward(self, images: torch.Tensor) -> list[np.ndarray]:
        return to_uint8_images(images)

    def encode(self, features: list[np.ndarray]) -> list[bytes]:
        start = time.perf_counter()
        out = [self.codec.encode(image) for image in features]
        self.codec_seconds["encode"] += time.perf_counter() - start
        return out

    def decode(self, payloads: list[bytes]) -> torch.Tensor:
        start = time.perf_counter()
        images = [self.codec.decode(p) for p in payloads]
        self.codec_seconds["decode"] += time.perf_counter() - start
        return to_tensor(images, self.device)

    @torch.no_grad()
    def server_forward(self, decoded: torch.Tensor) -> torch.Tensor:
        return self.model(decoded)


class InputCodecArgs(MethodArgs):
    codec: str = "jpeg"
    quality: float = Field(75, ge=0)


@register_method
class InputCodec(Method):
    """Input compression with a standard codec (JPEG, WebP, ...); the server runs the full teacher."""

    name = "input_codec"
    Args: ClassVar = InputCodecArgs
    server_is_teacher = True

    def variant(self, args: InputCodecArgs) -> str:
        return args.codec

    def rate_param(self, args: InputCodecArgs) -> dict:
        quality = int(args.quality) if float(args.quality).is_integer() else args.quality
        return {"quality": quality}

    def pipeline(self, ctx: BuildContext, args: InputCodecArgs, model, teacher) -> SplitPipeline:
        assert teacher is not None
        return InputCodecPipeline(get_codec(args.codec, args.quality), teacher, ctx.device,
                                  ctx.config.eval.workers)
