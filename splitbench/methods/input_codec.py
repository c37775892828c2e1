"""Input compression: the device codes the image with a standard codec, the server decodes it and runs the
whole teacher. Codecs are single-threaded by design (deterministic bytes, honest per-image times); the
pipeline's parallelism is a process pool kept for the whole evaluation (``eval.workers``).
"""

from __future__ import annotations

from splitbench.codecs import CodecArgs, codec_variant, get_codec, quality_param
from splitbench.methods.base import Method
from splitbench.pipelines.codec import InputCodecPipeline


class InputCodec(Method, name="input_codec", args=CodecArgs, teacher="server",
                 tasks=("classification", "detection", "segmentation")):
    """Input compression with a standard codec (JPEG, WebP, ...); the server runs the full teacher."""

    def variant(self, args: CodecArgs) -> str:
        return codec_variant(args.codec, args.options)

    def rate_param(self, args: CodecArgs) -> dict:
        return quality_param(args.quality)

    def pipeline(self, ctx, args: CodecArgs, model, teacher):
        return InputCodecPipeline(get_codec(args.codec, args.quality, **args.options), teacher, ctx.device,
                                  ctx.config.eval.workers)
