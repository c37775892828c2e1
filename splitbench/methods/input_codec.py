"""Input compression: the mobile side is an image codec, the server decodes and runs the full model.

Standard codecs are single-threaded by design (deterministic bytes, honest per-image times), so the
pipeline gets its parallelism from a process pool (:class:`CodecPool`) that is started once and
kept for the whole evaluation: starting a pool per batch costs ~0.1 s, more than coding a batch of
small images (see the module docstring of :mod:`splitbench.codecs.pool` for the start method).
"""

from __future__ import annotations

import inspect
import math
import os
import time
import weakref
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from splitbench.codecs import CODECS, CodedSample, ImageCodec, get_codec
from splitbench.codecs.pool import _context as pool_context
from splitbench.codecs.pool import code_one
from splitbench.compression.bitstream import pack, unpack
from splitbench.methods.base import BuildContext, Method, MethodArgs, register_method
from splitbench.pipeline import SplitPipeline


class SampleCodec(Protocol):
    """Anything with per-sample ``encode``/``decode`` and ``describe``: an ImageCodec or a FeatureCodec."""

    def encode(self, item: np.ndarray) -> bytes: ...

    def decode(self, data: bytes) -> np.ndarray: ...

    def describe(self) -> dict: ...


def to_uint8_images(images: torch.Tensor | list[torch.Tensor]) -> list[np.ndarray]:
    """[0, 1] float (B, 3, H, W), or a list of (3, H, W) of any sizes → list of (H, W, 3) uint8, as a camera
    would hand them to a codec."""
    if isinstance(images, list):
        return [a for im in images for a in to_uint8_images(im[None])]
    array = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(array)


def to_tensor(images: list[np.ndarray], device: torch.device) -> torch.Tensor | list[torch.Tensor]:
    """One batch tensor, or a list of (3, H, W) tensors where the images differ in size (detection data)."""
    if any(im.shape != images[0].shape for im in images):
        return [to_tensor([im], device)[0] for im in images]
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


class CodecPool:
    """Encode + decode samples with one codec, in this process or in a pool kept alive across batches.

    Each sample is encoded and decoded by the same worker (one round trip), timed inside it, so the
    per-sample times stay meaningful however many workers run. The pool starts on first use and
    is shut down by :meth:`close` or when this object is garbage-collected.
    """

    def __init__(self, codec: SampleCodec, workers: int | None = None, chunks_per_worker: int = 4) -> None:
        workers = (os.cpu_count() or 1) if workers is None else workers
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.codec = codec
        self.workers = workers
        self.chunks_per_worker = chunks_per_worker
        self._pool: ProcessPoolExecutor | None = None
        self._finalizer: weakref.finalize | None = None

    def code(self, items: list[np.ndarray]) -> list[CodedSample]:
        if self.workers == 1 or len(items) < 2:
            return [code_one(self.codec, item) for item in items]  # type: ignore[arg-type]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=pool_context())
            self._finalizer = weakref.finalize(self, self._pool.shutdown, cancel_futures=True)
        chunksize = max(1, math.ceil(len(items) / (self.workers * self.chunks_per_worker)))
        return list(self._pool.map(code_one, repeat(self.codec), items, chunksize=chunksize))

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # shuts the pool down once, and never again at garbage collection
        self._pool = self._finalizer = None


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
    """Codec on the device; decoded image → the full model on the server. No learned device part."""

    def __init__(self, codec: ImageCodec, model: nn.Module, device: torch.device, workers: int | None = 1):
        super().__init__(codec, workers)
        self.model = model.to(device).eval()
        self.device = device

    def mobile_forward(self, images: torch.Tensor | list[torch.Tensor]) -> list[np.ndarray]:
        return to_uint8_images(images)

    def decode(self, payloads: list[bytes]) -> torch.Tensor | list[torch.Tensor]:
        return to_tensor(self.decode_samples(payloads), self.device)

    @torch.no_grad()
    def server_forward(self, decoded: torch.Tensor | list[torch.Tensor]) -> Any:
        return self.model(decoded)


CodecOption = str | int | float | bool


def check_codec(name: str, options: dict[str, CodecOption]) -> None:
    """Fail at config load, not mid-sweep: the codec name and its option names must exist."""
    try:
        factory = CODECS.get(name)
    except KeyError as error:  # as ValueError, so the config error names method_args
        raise ValueError(str(error.args[0])) from None
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    allowed = sorted(set(params) - {"self", "quality"})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"codec {name!r} has no option {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}")


def codec_variant(codec: str, options: dict[str, CodecOption], *more: str) -> str:
    """Run/series name: the codec, its non-default options, and e.g. the split point."""
    return "-".join([codec, *(f"{k}{v}" for k, v in sorted(options.items())), *more])


def quality_param(quality: float) -> dict:
    return {"quality": int(quality) if float(quality).is_integer() else quality}


class InputCodecArgs(MethodArgs):
    codec: str = "jpeg"
    quality: float = Field(75, ge=0)
    options: dict[str, CodecOption] = Field({}, description="codec-specific settings, e.g. {preset: medium} for vvc")

    @model_validator(mode="after")
    def _known_codec(self) -> InputCodecArgs:
        check_codec(self.codec, self.options)
        return self


@register_method
class InputCodec(Method):
    """Input compression with a standard codec (JPEG, WebP, ...); the server runs the full teacher."""

    name = "input_codec"
    Args: ClassVar = InputCodecArgs
    server_is_teacher = True
    tasks = ("classification", "detection", "segmentation")

    def variant(self, args: InputCodecArgs) -> str:
        return codec_variant(args.codec, args.options)

    def rate_param(self, args: InputCodecArgs) -> dict:
        return quality_param(args.quality)

    def pipeline(self, ctx: BuildContext, args: InputCodecArgs, model, teacher) -> SplitPipeline:
        assert teacher is not None
        return InputCodecPipeline(get_codec(args.codec, args.quality, **args.options), teacher, ctx.device,
                                  ctx.config.eval.workers)
