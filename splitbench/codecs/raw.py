"""The "codecs" that compress nothing: raw 8-bit pixels and raw float features in a container.

They are what sending the image, or a split point's features, costs without any coding: the teacher
evaluated on its own input (method ``classifier``) and the naive split's upper bound.
"""

from __future__ import annotations

import numpy as np

from splitbench.codecs.base import ImageCodec
from splitbench.compression.bitstream import BitstreamError, pack, unpack

FEATURE_DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}


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
            raise BitstreamError(f"raw bitstream of shape {stream.shape} has {len(stream.segments[0])} bytes")
        return np.frombuffer(stream.segments[0], np.uint8).reshape(stream.shape)

    def describe(self) -> dict:
        return {"codec": "raw"}


class RawFeatures:
    """A feature map as little-endian floats in a container: ``pack(shape, [values])``, nothing else."""

    def __init__(self, dtype: str = "float32", max_elements: int = 1 << 26) -> None:
        if dtype not in FEATURE_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(FEATURE_DTYPES)}, got {dtype!r}")
        self.dtype = FEATURE_DTYPES[dtype]
        self.max_elements = max_elements

    def encode(self, features: np.ndarray) -> bytes:
        return pack(features.shape, [np.ascontiguousarray(features, dtype=self.dtype).tobytes()])

    def decode(self, data: bytes) -> np.ndarray:
        stream = unpack(data, num_segments=1, max_elements=self.max_elements)
        count = int(np.prod(stream.shape))
        if not stream.shape or len(stream.segments[0]) != count * self.dtype.itemsize:
            raise BitstreamError(f"raw feature bitstream of shape {stream.shape} has {len(stream.segments[0])} "
                                 f"bytes; {self.dtype.name} needs {count * self.dtype.itemsize}")
        return np.frombuffer(stream.segments[0], self.dtype).astype(np.float32).reshape(stream.shape)

    def describe(self) -> dict:
        return {"codec": "raw", "dtype": self.dtype.name}
