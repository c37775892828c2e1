"""The full-offloading reference through the same edge server: the device sends a standard image file (JPEG,
WebP, ...), the server decodes it and runs the whole unsplit model, exactly as ``InputCodecPipeline`` does in
``splitbench evaluate``.

It is served from a trained unsplit run folder (a ``classifier`` run: the network that ``input_codec`` runs load
as their teacher; input-codec runs train nothing, so they have no folder of their own) and a codec name. The
quality is the device's choice: the decoder reads any. Images are untrusted: a payload whose header is not the
codec's, or claims more than ``max_pixels`` pixels (read from the header before any pixel is allocated: a
decompression bomb), is refused before it joins a batch; one whose data turns out corrupt fails alone in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from splitbench.codecs import CODECS, CodecError, get_codec
from splitbench.compression.bitstream import BitstreamError
from splitbench.errors import SplitbenchError
from splitbench.pipelines import InputCodecPipeline
from splitbench.runtime.fingerprint import fingerprint
from splitbench.runtime.model import load_run_pipeline
from splitbench.runtime.server import BatchAnswer, ServedModel, class_names

DEFAULT_MAX_PIXELS = 1 << 24  # 4096 x 4096; below Pillow's own Image.MAX_IMAGE_PIXELS, which stays a second guard


def codec_fingerprint(network: torch.nn.Module, codec: str) -> str:
    """The served network's weights and buffers, and the codec's name: a client of another model, or of another
    codec, is refused."""
    arrays = {f"network.{k}": v.detach().cpu().numpy() for k, v in network.state_dict().items()}
    return fingerprint({**arrays, "codec": np.frombuffer(codec.encode(), np.uint8)})


class CodecServer(ServedModel):
    """An unsplit run's network behind a standard image codec (the ``Model`` the HTTP app serves)."""

    def __init__(self, run_dir: Path, codec: str, device: torch.device | str = "cpu", top_k: int = 5,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if max_pixels < 1:
            raise SplitbenchError(f"the pixel limit must be at least 1, got {max_pixels}")
        self.run_dir = Path(run_dir)
        self.config, served = load_run_pipeline(run_dir, device)
        if not isinstance(served, InputCodecPipeline):
            raise SplitbenchError(f"{run_dir} is a {self.config.method} run, which splits the model; --codec serves "
                                  f"an unsplit run (a classifier run folder)")
        decoder = get_codec(codec, CODECS.get(codec).default_quality)  # the quality is the encoder's alone
        decoder.max_pixels = max_pixels
        try:
            decoder.image_size(decoder.encode(np.zeros((8, 8, 3), np.uint8)))
        except CodecError as error:
            raise SplitbenchError(f"codec {codec!r} cannot be served: {error}") from None
        self.pipeline = InputCodecPipeline(decoder, served.network, torch.device(device), workers=1)
        self.codec, self.max_pixels, self.top_k = decoder, max_pixels, top_k
        self.fingerprint = codec_fingerprint(served.network, decoder.name)

    def size(self, payload: bytes) -> tuple[int, int]:
        """The image's (h, w) from its header; a foreign, corrupt or oversized header is a one-line refusal."""
        try:
            return self.codec.image_size(payload)
        except CodecError as error:
            raise BitstreamError(str(error)) from None

    def check(self, payload: bytes, max_bytes: int) -> None:
        """Refuse a payload that is not this codec's, or claims an image over the pixel limit, before it is
        decoded (``max_bytes`` is enforced on the body already)."""
        self.size(payload)

    def decode(self, payloads: list[bytes]) -> Any:
        try:
            return self.pipeline.decode(payloads)
        except CodecError as error:
            raise BitstreamError(str(error)) from None

    def answer(self, payloads: list[bytes]) -> BatchAnswer:
        """One batch per image size (a network batch holds one size), answered in request order."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, payload in enumerate(payloads):
            groups.setdefault(self.size(payload), []).append(i)
        if len(groups) == 1:
            return super().answer(payloads)
        answers: list[Any] = [None] * len(payloads)
        sizes = [0] * len(payloads)
        total = BatchAnswer([])
        for indices in groups.values():
            part = super().answer([payloads[i] for i in indices])
            total.decode_s += part.decode_s
            total.network_s += part.network_s
            for i, a, n in zip(indices, part.answers, part.sizes, strict=True):
                answers[i], sizes[i] = a, n
        total.answers, total.sizes = answers, sizes
        return total

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/model`` reports: the run, the codec it decodes, its fingerprint, tasks and classes."""
        c = self.config
        return {"run": c.run_name(), "method": c.method, "variant": c.variant(), "backbone": c.backbone.name,
                "task": c.task, "tasks": list(self.pipeline.network.heads), "fingerprint": self.fingerprint,
                "classes": class_names(c), "codec": self.codec.name, "max_pixels": self.max_pixels,
                "top_k": self.top_k}

    def close(self) -> None:
        self.pipeline.close()
