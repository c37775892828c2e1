"""Naive split: the teacher cut at a named stage, its features sent uncompressed (float32 or float16).

Nothing is trained and nothing is lost beyond float16 rounding, so this is the upper-bound curve
(the teacher's accuracy) at the largest data sizes, one point per split point.
"""

from __future__ import annotations

from typing import Literal

from splitbench.codecs.raw import RawFeatures
from splitbench.methods.base import Method, MethodArgs
from splitbench.pipelines.codec import FeatureCodecPipeline


class NaiveSplitArgs(MethodArgs):
    split_after: str = "layer1"
    dtype: Literal["float32", "float16"] = "float32"


class NaiveSplit(Method, name="naive_split", args=NaiveSplitArgs, teacher="server", variant_field="dtype",
                 rate=("split_after",)):
    """Naive split: the teacher split at a stage, its float32/float16 features sent as they are."""

    def pipeline(self, ctx, args: NaiveSplitArgs, model, teacher):
        return FeatureCodecPipeline(RawFeatures(args.dtype), teacher, args.split_after, ctx.device, workers=1)
