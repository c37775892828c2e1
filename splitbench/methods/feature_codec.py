"""Feature compression with a standard codec: the unmodified teacher, split at a named stage.

The device runs the teacher up to ``split_after`` and codes the feature map with
:class:`~splitbench.codecs.FeatureCodec` (8-bit min–max per channel group, the ranges inside the
bitstream); the server decodes it and runs the remaining stages. Nothing is trained, so this is the
baseline a learned bottleneck at the same split point has to beat.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from splitbench.codecs import CodecArgs, FeatureCodec, codec_variant, get_codec, quality_param
from splitbench.methods.base import Method
from splitbench.pipelines.codec import FeatureCodecPipeline


class FeatureCodecArgs(CodecArgs):
    split_after: str = "layer1"
    channels_per_group: int | None = Field(1, ge=1, description="channels sharing one min–max range; null = all")
    param_dtype: Literal["float16", "float32"] = "float16"


class FeatureCodecMethod(Method, name="feature_codec", args=FeatureCodecArgs, teacher="server"):
    """Feature compression: the teacher split at a stage, its features coded with a standard image codec."""

    def variant(self, args: FeatureCodecArgs) -> str:
        return codec_variant(args.codec, args.options, args.split_after)

    def rate_param(self, args: FeatureCodecArgs) -> dict:
        return quality_param(args.quality)

    def pipeline(self, ctx, args: FeatureCodecArgs, model, teacher):
        codec = FeatureCodec(get_codec(args.codec, args.quality, **args.options), args.channels_per_group,
                             args.param_dtype)
        return FeatureCodecPipeline(codec, teacher, args.split_after, ctx.device, ctx.config.eval.workers)
