"""CR+BQ's 8-bit code in numpy: per-sample min–max quantization to uint8, the bytes every CR+BQ stream carries.

One implementation for both sides: :class:`~splitbench.compression.latent_coders.Quantize8Bit` (torch) codes
through it, and the torch-free device (:mod:`splitbench.runtime.device`) runs it on the exported network's
latent, so a device stream and ``splitbench evaluate``'s are the same function of the same latent. The
arithmetic is float32 throughout (min, max, ``(max − min)/255``, ``y/scale + zero point``, round half to even),
each step correctly rounded by IEEE 754, so numpy and torch agree to the bit on the same input.

Layout of one sample's string: little-endian float32 scale, then the zero point (float32, or one byte when
``integer_zero_point``: sc2bench's quantizer), then the C·h·w uint8 values in C order. It is a fixed-length
code, not an entropy code, so it needs no coder backend of its own: streams are the container's default
(version 1). Torch-free.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from splitbench.compression.bitstream import DEFAULT_BACKEND

LEVELS = 255


@dataclass(frozen=True)
class Uint8Code:
    """The 8-bit code of a ``channels``-channel latent."""

    channels: int
    integer_zero_point: bool = False

    backend: ClassVar[str] = DEFAULT_BACKEND  # a fixed-length code: the container's default streams

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")

    @property
    def params(self) -> struct.Struct:
        """The per-sample parameters in front of the values: (scale, zero point)."""
        return struct.Struct("<fB" if self.integer_zero_point else "<ff")

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Uint8Code:
        """The code a bundle's tables describe (``channels``, ``integer_zero_point``)."""
        missing = [k for k in ("channels", "integer_zero_point") if k not in arrays]
        if missing:
            raise ValueError(f"8-bit code tables lack {', '.join(missing)}")
        return cls(int(arrays["channels"]), bool(arrays["integer_zero_point"]))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"channels": np.array(self.channels, np.int32),
                "integer_zero_point": np.array(self.integer_zero_point, np.bool_)}

    def quantize(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(uint8 values, scale, zero point) of each sample of a float latent batch (N, C, h, w)."""
        y = np.asarray(y, np.float32)
        if y.ndim != 4 or y.shape[1] != self.channels:
            raise ValueError(f"a latent batch (N, {self.channels}, h, w) is coded, got shape {y.shape}")
        flat = y.reshape(y.shape[0], -1)
        lo, hi = flat.min(axis=1), flat.max(axis=1)
        scale = (hi - lo) / np.float32(LEVELS)
        scale = np.where(scale > 0, scale, np.float32(1)).astype(np.float32)  # a constant tensor: all zeros
        zero_point = (-lo / scale).astype(np.float32)
        if self.integer_zero_point:  # clamp, then truncate (= floor on [0, 255]), as sc2bench's int()
            zero_point = np.floor(np.clip(zero_point, 0, LEVELS)).astype(np.float32)
        values = np.clip(np.round(flat / scale[:, None] + zero_point[:, None]), 0, LEVELS).astype(np.uint8)
        return values, scale, zero_point

    def compress(self, y: np.ndarray) -> list[bytes]:
        """One string per sample: parameters, then the values."""
        values, scale, zero_point = self.quantize(y)
        zero_points = zero_point.astype(np.uint8).tolist() if self.integer_zero_point else zero_point.tolist()
        return [self.params.pack(s, z) + v.tobytes() for s, z, v in zip(scale.tolist(), zero_points, values,
                                                                         strict=True)]
