"""Naive split: the teacher cut at a named stage, its features sent uncompressed (float32 or float16).

Nothing is trained and nothing is lost beyond float16 rounding, so this is the upper-bound curve
(the teacher's accuracy) at the largest data sizes, one point per split point.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from splitbench.compression.bitstream import BitstreamError, pack, unpack
from splitbench.methods.base import BuildContext, Method, MethodArgs, register_method
from splitbench.methods.feature_codec import FeatureCodecPipeline

DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}


class RawFeatures:
    """A feature map as little-endian floats in a container: ``pack(shape, [values])``, nothing else."""

    def __init__(self, dtype: str = "float32", max_elements: int = 1 << 26) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.dtype = DTYPES[dtype]
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


class NaiveSplitArgs(MethodArgs):
    split_after: str = "layer1"
    dtype: Literal["float32", "float16"] = "float32"


@register_method
class NaiveSplit(Method):
    """Naive split: the teacher split at a stage, its float32/float16 features sent as they are."""

    name = "naive_split"
    Args: ClassVar = NaiveSplitArgs
    server_is_teacher = True

    def variant(self, args: NaiveSplitArgs) -> str:
        return args.dtype

    def rate_param(self, args: NaiveSplitArgs) -> dict:
        return {"split_after": args.split_after}

    def pipeline(self, ctx: BuildContext, args: NaiveSplitArgs, model, teacher) -> FeatureCodecPipeline:
        assert teacher is not None
        return FeatureCodecPipeline(RawFeatures(args.dtype), teacher, args.split_after, ctx.device,  # type: ignore[arg-type]
                                    workers=1)
