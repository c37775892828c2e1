"""The one interface of every standard image codec: ``encode(image) -> bytes``, ``decode(bytes) -> image``.

Images are ``numpy`` arrays of shape (H, W, 3), dtype uint8, RGB. Codecs are small picklable
objects (settings only, never a live library handle) so an evaluator can fan samples out over a
process pool. Optional backends are imported lazily, when a codec is built, so that
``import splitbench.codecs`` needs nothing but Pillow.
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import ModuleType

import numpy as np

from splitbench.compression.bitstream import BitstreamError, pack, unpack
from splitbench.errors import SplitbenchError
from splitbench.registry import Registry

# BT.601 luma weights: for an RGB image decoded from YCbCr these recover Y exactly, because the
# chroma terms cancel; that is why a grayscale plane survives a round trip through an RGB codec.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
# Largest picture a sized container may claim: checked before the decoder allocates anything.
MAX_PIXELS = 1 << 26


class CodecError(SplitbenchError, ValueError):
    """A codec could not encode an image or decode a bitstream (corrupt, truncated, unsupported)."""


class CodecUnavailableError(SplitbenchError, RuntimeError):
    """The codec's backend is not installed; the message names what to install."""


class ImageCodec(ABC):
    """A lossy (or lossless) image codec at one rate point (``quality``; its meaning is the codec's own).

    Subclasses set ``name``, ``quality_range``, ``integer_quality`` and ``default_quality``, and
    check their backend in ``__init__``, so a missing library fails when the codec is built, not
    halfway through a sweep.
    """

    name: str = ""
    quality_range: tuple[float, float] = (0, 100)
    integer_quality: bool = True
    default_quality: float = 75  # a mid rate point: what benchmarks and `available_codecs` use

    def __init__(self, quality: float) -> None:
        low, high = self.quality_range
        if isinstance(quality, bool) or not isinstance(quality, (int, float, np.integer, np.floating)):
            raise ValueError(f"{self.name} quality must be a number, got {quality!r}")
        if not math.isfinite(quality) or not low <= quality <= high:
            raise ValueError(f"{self.name} quality must be in [{low}, {high}], got {quality}")
        if self.integer_quality and quality != int(quality):
            raise ValueError(f"{self.name} quality must be an integer, got {quality}")
        self.quality = int(quality) if self.integer_quality else float(quality)

    @abstractmethod
    def encode(self, image: np.ndarray) -> bytes: ...

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray: ...

    def encode_gray(self, plane: np.ndarray) -> bytes:
        """Code an (H, W) uint8 plane; the default sends it as R = G = B (flat chroma costs little).

        Codecs with a native grayscale mode override this (and :meth:`decode_gray`).
        """
        plane = check_plane(plane)
        return self.encode(np.repeat(plane[:, :, None], 3, axis=2))

    def decode_gray(self, data: bytes) -> np.ndarray:
        """Inverse of :meth:`encode_gray`: the decoded image's BT.601 luma, an (H, W) uint8 plane."""
        rgb = self.decode(data).astype(np.float64)
        return np.clip(np.rint(rgb @ LUMA_WEIGHTS), 0, 255).astype(np.uint8)

    def image_size(self, data: bytes) -> tuple[int, int]:
        """The (height, width) a bitstream claims, read from its header without decoding it: what a server
        checks against its pixel limit before it allocates anything. Codecs that cannot tell say so."""
        raise CodecError(f"{self.name} cannot read an image's size without decoding it")

    def describe(self) -> dict:
        """Settings that identify this rate point in a result record."""
        return {"codec": self.name, "quality": self.quality}

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "codec")
        return f"{type(self).__name__}({settings})"


def check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise CodecError(f"expected an (H, W, 3) uint8 image, got {got}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise CodecError(f"cannot code an empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


def check_plane(plane: np.ndarray) -> np.ndarray:
    if not isinstance(plane, np.ndarray) or plane.dtype != np.uint8 or plane.ndim != 2 or 0 in plane.shape:
        got = f"{plane.dtype} {plane.shape}" if isinstance(plane, np.ndarray) else type(plane).__name__
        raise CodecError(f"expected an (H, W) uint8 plane, got {got}")
    return np.ascontiguousarray(plane)


def check_bytes(data: bytes, codec: str) -> bytes:
    """Bitstreams are untrusted input: refuse anything that is not a non-empty bytes-like object."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"a {codec} bitstream is bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise CodecError(f"empty {codec} bitstream")
    return data


def pack_sized(size: tuple[int, int], payload: bytes) -> bytes:
    """Wrap a raw elementary stream (HEVC, VVC) with the picture's true (height, width) and a CRC.

    Raw streams need it: 4:2:0 and the coders' 16-sample minimum force padding (the size says what
    to crop), and video decoders turn a damaged stream into a garbage picture without an error
    (the CRC catches that first).
    """
    return pack(size, [payload])


def unpack_sized(data: bytes, codec: str) -> tuple[int, int, bytes]:
    """Open a :func:`pack_sized` bitstream: (height, width, payload), or :class:`CodecError`."""
    data = check_bytes(data, codec)
    try:
        stream = unpack(data, ndim=2, num_segments=1, max_elements=MAX_PIXELS)
    except BitstreamError as error:
        raise CodecError(f"invalid {codec} bitstream: {error}") from error
    if not stream.segments[0]:
        raise CodecError(f"invalid {codec} bitstream: empty payload")
    height, width = stream.shape
    return height, width, stream.segments[0]


def require_module(module: str, pip_name: str, codec: str) -> ModuleType:
    """Import an optional backend, or say exactly what to ``pip install`` for ``codec``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise CodecUnavailableError(
            f"codec {codec!r} needs the Python package {pip_name!r}: pip install {pip_name} ({error})"
        ) from error


CODECS: Registry[Callable[..., ImageCodec]] = Registry("codec")


def get_codec(name: str, quality: float, **options) -> ImageCodec:
    """Build codec ``name`` at ``quality``; ``options`` are codec-specific (e.g. ``preset`` for vvc)."""
    return CODECS.get(name)(quality, **options)


def list_codecs() -> list[str]:
    return CODECS.names()


def available_codecs() -> list[str]:
    """Registered codecs whose backend works on this machine (each is built once at its default)."""
    names = []
    for name in list_codecs():
        factory = CODECS.get(name)
        try:
            factory(factory.default_quality)
        except CodecUnavailableError:
            continue
        names.append(name)
    return names
