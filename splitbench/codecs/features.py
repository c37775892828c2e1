"""Compress an intermediate feature map (float C×H×W) with a standard image codec.

Layout: every channel becomes one grayscale tile of a near-square grid (``ceil(sqrt(C))``
columns, row-major, unused tiles zero), coded as a single-channel image. Grayscale rather than
packing three channels into R, G, B: a colour codec's RGB→YCbCr transform and chroma
subsampling would mix the three channels and blur two of them, while a gray plane is coded as
luma only (natively by JPEG, PNG, AVIF, JPEG XL; as flat chroma by the others).

Quantisation: 8-bit min–max per group of ``channels_per_group`` channels,
``q = round(255 · (x − min) / (max − min))``, so signed features keep their sign (the reference
tool divides by max alone, which breaks for negative values). min and max travel in the
bitstream as little-endian ``param_dtype`` (float16 by default, rounded *outward* so the range
still covers every value; float32 for features beyond float16's ±65504), and are counted in
``len(bytes)``.

Bitstream: ``pack(shape=(C, H, W), segments=[params, image])``. The group size, parameter dtype
and image codec are the decoder's configuration (like a model's architecture), not sent.
"""

from __future__ import annotations

import math

import numpy as np

from splitbench.codecs.base import CodecError, ImageCodec, check_bytes
from splitbench.compression.bitstream import BitstreamError, pack, unpack

PARAM_DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
LEVELS = 255


def grid_shape(channels: int) -> tuple[int, int]:
    """(rows, cols) of the tile grid: near-square, so the image codec sees a compact picture."""
    cols = math.ceil(math.sqrt(channels))
    return math.ceil(channels / cols), cols


class FeatureCodec:
    """Feature map ↔ bytes through ``codec`` (any :class:`ImageCodec`), 8-bit min–max per channel group."""

    def __init__(
        self,
        codec: ImageCodec,
        channels_per_group: int | None = 1,
        param_dtype: str = "float16",
        max_elements: int = 1 << 26,
    ) -> None:
        if not isinstance(codec, ImageCodec):
            raise TypeError(f"codec must be an ImageCodec (see get_codec), got {type(codec).__name__}")
        if channels_per_group is not None and channels_per_group < 1:
            raise ValueError(
                f"channels_per_group must be >= 1 or None (all channels), got {channels_per_group}"
            )
        if param_dtype not in PARAM_DTYPES:
            raise ValueError(f"param_dtype must be one of {sorted(PARAM_DTYPES)}, got {param_dtype!r}")
        self.codec = codec
        self.channels_per_group = channels_per_group
        self.param_dtype = param_dtype
        self.max_elements = max_elements

    def num_groups(self, channels: int) -> int:
        return math.ceil(channels / (self.channels_per_group or channels))

    def param_bytes(self, channels: int) -> int:
        """Bytes of normalisation parameters (min and max per group) inside every bitstream."""
        return 2 * self.num_groups(channels) * PARAM_DTYPES[self.param_dtype].itemsize

    def _group_index(self, channels: int) -> np.ndarray:
        return np.arange(channels) // (self.channels_per_group or channels)

    def _store_range(self, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Round min down and max up to ``param_dtype``, so the stored range covers all values."""
        dtype = PARAM_DTYPES[self.param_dtype].newbyteorder("=")
        with np.errstate(over="ignore"):
            low_s, high_s = low.astype(dtype), high.astype(dtype)
        low_s = np.where(low_s.astype(np.float64) > low, np.nextafter(low_s, dtype.type(-np.inf)), low_s)
        high_s = np.where(high_s.astype(np.float64) < high, np.nextafter(high_s, dtype.type(np.inf)), high_s)
        if not (np.isfinite(low_s).all() and np.isfinite(high_s).all()):
            raise CodecError(f"feature values exceed the {self.param_dtype} range; use param_dtype='float32'")
        return low_s, high_s

    def encode(self, feature: np.ndarray) -> bytes:
        feature = np.asarray(feature)
        if feature.ndim != 3 or not np.issubdtype(feature.dtype, np.number) or 0 in feature.shape:
            raise CodecError(f"expected a (C, H, W) real feature map, got {feature.dtype} {feature.shape}")
        x = feature.astype(np.float64)
        if not np.isfinite(x).all():
            raise CodecError("feature map has NaN or infinite values")
        channels, height, width = x.shape
        groups = self._group_index(channels)
        starts = np.flatnonzero(np.diff(groups, prepend=-1))  # groups are contiguous channel runs
        low = np.minimum.reduceat(x.min(axis=(1, 2)), starts)
        high = np.maximum.reduceat(x.max(axis=(1, 2)), starts)
        low_s, high_s = self._store_range(low, high)
        lo = low_s.astype(np.float64)[groups]
        span = high_s.astype(np.float64)[groups] - lo
        span_safe = np.where(span > 0, span, 1.0)[:, None, None]
        q = np.clip(np.rint((x - lo[:, None, None]) / span_safe * LEVELS), 0, LEVELS).astype(np.uint8)
        rows, cols = grid_shape(channels)
        tiles = np.zeros((rows * cols, height, width), np.uint8)
        tiles[:channels] = q
        plane = (
            tiles.reshape(rows, cols, height, width)
            .transpose(0, 2, 1, 3)
            .reshape(rows * height, cols * width)
        )
        params = np.stack([low_s, high_s], axis=1).astype(PARAM_DTYPES[self.param_dtype]).tobytes()
        return pack((channels, height, width), [params, self.codec.encode_gray(plane)])

    def decode(self, data: bytes) -> np.ndarray:
        data = check_bytes(data, "feature")
        try:
            stream = unpack(data, ndim=3, num_segments=2, max_elements=self.max_elements)
        except BitstreamError as error:
            raise CodecError(f"invalid feature bitstream: {error}") from error
        channels, height, width = stream.shape
        params, image = stream.segments
        if len(params) != self.param_bytes(channels):
            raise CodecError(
                f"feature bitstream carries {len(params)} parameter bytes, this codec expects "
                f"{self.param_bytes(channels)} ({self.num_groups(channels)} groups × "
                f"{self.param_dtype} min, max)"
            )
        ranges = np.frombuffer(params, PARAM_DTYPES[self.param_dtype]).astype(np.float64).reshape(-1, 2)
        if not np.isfinite(ranges).all() or (ranges[:, 0] > ranges[:, 1]).any():
            raise CodecError("feature bitstream has an invalid min/max range")
        rows, cols = grid_shape(channels)
        plane = self.codec.decode_gray(image)
        if plane.shape != (rows * height, cols * width):
            raise CodecError(f"feature image is {plane.shape}, expected {(rows * height, cols * width)}")
        tiles = (
            plane.reshape(rows, height, cols, width).transpose(0, 2, 1, 3).reshape(rows * cols, height, width)
        )
        groups = self._group_index(channels)
        lo, span = ranges[groups, 0], ranges[groups, 1] - ranges[groups, 0]
        x = lo[:, None, None] + tiles[:channels].astype(np.float64) / LEVELS * span[:, None, None]
        return x.astype(np.float32)

    def describe(self) -> dict:
        return {
            **self.codec.describe(),
            "layout": "gray tile grid",
            "channels_per_group": self.channels_per_group,
            "param_dtype": self.param_dtype,
        }
