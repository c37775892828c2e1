"""The device of the full-offloading reference, without PyTorch: each image coded with a standard codec
(Pillow's JPEG, WebP, ...) and sent whole; the server (:mod:`~splitbench.runtime.codec_server`) decodes it and
runs the unsplit model.

Nothing learned runs here, so there is no bundle and no fingerprint of its own: the device checks that the
server decodes its codec and then carries the server's fingerprint (the served network + codec), so a server
swapped for another model mid-run answers 409. The pixels are rounded to uint8 as ``InputCodecPipeline`` rounds
them, so the bytes equal ``splitbench evaluate``'s.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from splitbench.codecs import get_codec
from splitbench.errors import SplitbenchError


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float (3, h, w) image in [0, 1] → (h, w, 3) uint8, rounded half to even (as torch rounds)."""
    scaled = np.clip(np.asarray(image, np.float32), 0, 1) * np.float32(255)
    return np.ascontiguousarray(np.rint(scaled).astype(np.uint8).transpose(1, 2, 0))


class CodecDevice:
    """Codes each image with ``codec`` at ``quality``; the client's encoder for a codec server."""

    def __init__(self, codec: str, quality: float) -> None:
        self.codec = get_codec(codec, quality)
        self.fingerprint = ""  # the server's, once check_server accepts it

    def check_server(self, model: dict[str, Any], url: str) -> None:
        """Accept a server that decodes this codec (and adopt its fingerprint); else a one-line refusal."""
        theirs = model.get("codec")
        if theirs != self.codec.name:
            serves = f"decodes {theirs}" if theirs else "serves a learned bottleneck"
            raise SplitbenchError(f"the server at {url} {serves}, not {self.codec.name}; serve an unsplit run with "
                                  f"--codec {self.codec.name}")
        self.fingerprint = str(model["fingerprint"])

    def encode_timed(self, image: np.ndarray) -> tuple[bytes, float, float]:
        """One (3, h, w) image's file, no network seconds, and the seconds the codec took."""
        start = time.perf_counter()
        stream = self.codec.encode(to_uint8(image))
        return stream, 0.0, time.perf_counter() - start

    def describe(self) -> dict[str, Any]:
        return self.codec.describe()
