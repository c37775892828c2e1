"""The one interface every standard image codec follows: ``encode(image) -> bytes``, ``decode(bytes) -> image``.

Images are ``numpy`` arrays of shape (H, W, 3), dtype uint8, RGB. Codecs are small picklable
objects so an evaluator can fan samples out over a process pool.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from splitbench.registry import Registry


class CodecError(ValueError):
    """A codec could not encode an image or decode a bitstream (corrupt, truncated, unsupported)."""


class CodecUnavailableError(RuntimeError):
    """The codec's backend is not installed; the message names what to install."""


class ImageCodec(ABC):
    """A lossy image codec at one rate point (``quality``; its meaning is the codec's own)."""

    name: str = ""
    quality_range: tuple[float, float] = (0, 100)

    def __init__(self, quality: float) -> None:
        low, high = self.quality_range
        if not low <= quality <= high:
            raise ValueError(f"{self.name} quality must be in [{low}, {high}], got {quality}")
        self.quality = quality

    @abstractmethod
    def encode(self, image: np.ndarray) -> bytes: ...

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray: ...

    def describe(self) -> dict:
        """Settings that identify this rate point in a result record."""
        return {"codec": self.name, "quality": self.quality}


def check_image(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise CodecError(f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


CODECS: Registry[Callable[[float], ImageCodec]] = Registry("codec")


def get_codec(name: str, quality: float) -> ImageCodec:
    return CODECS.get(name)(quality)


def list_codecs() -> list[str]:
    return CODECS.names()
