"""Naive split: the teacher cut at a named stage, its features sent uncompressed (float32 or float16).

Nothing is trained and nothing is lost beyond float16 rounding, so this is the upper-bound curve
(the teacher's accuracy) at the largest data sizes, one point per split point.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from splitbench.codecs.raw import RawFeatures
from splitbench.methods.base import Method, MethodArgs, register_method
from splitbench.pipelines.codec import FeatureCodecPipeline


class NaiveSplitArgs(MethodArgs):
    split_after: str = "layer1"
    dtype: Literal["float32", "float16"] = "float32"


@register_method
class NaiveSplit(Method):
    """Naive split: the teacher split at a stage, its float32/float16 features sent as they are."""

    name = "naive_split"
    Args: ClassVar = NaiveSplitArgs
    teacher = "server"
    variant_field = "dtype"
    rate_fields = ("split_after",)

    def pipeline(self, ctx, args: NaiveSplitArgs, model, teacher):
        return FeatureCodecPipeline(RawFeatures(args.dtype), teacher, args.split_after, ctx.device, workers=1)
