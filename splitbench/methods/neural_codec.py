"""Neural input compression: a CompressAI codec on the device, the teacher on the server.

Weights come from rate–distortion training here (``lmbda``: loss = λ·255²·MSE + bpp, CompressAI's
convention), optionally starting from a local checkpoint (``weights``) or CompressAI's zoo
(``pretrained: true`` + ``quality``, which downloads); without ``lmbda`` those weights are used as is.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from splitbench.errors import SplitbenchError
from splitbench.methods.base import Method, MethodArgs
from splitbench.models.neural_codecs import (
    ArchitectureName,
    build_codec,
    coder_ready,
    load_codec_weights,
    load_pretrained,
    update_coder,
    zoo_widths,
)
from splitbench.pipelines.neural_codec import NeuralCodecPipeline
from splitbench.training.recipes import RateDistortionTraining


class NeuralCodecArgs(MethodArgs):
    arch: ArchitectureName = "mbt2018-mean"
    N: int = Field(32, ge=1, description="channels of the transforms (CompressAI's N); the zoo's when pretrained")
    M: int = Field(48, ge=2, description="latent channels (CompressAI's M); the zoo's when pretrained")
    lmbda: float | None = Field(None, gt=0, description="train with loss = λ·255²·MSE + bpp; unset = use the "
                                "loaded weights as they are")
    pretrained: bool = Field(False, description="CompressAI's zoo weights at `quality` (a download)")
    quality: int | None = Field(None, ge=1, le=8, description="zoo quality index, with pretrained")
    weights: str | None = Field(None, description="a local CompressAI checkpoint (.pth, .pth.tar, .safetensors)")

    @model_validator(mode="after")
    def _one_source(self) -> NeuralCodecArgs:
        if self.pretrained != (self.quality is not None):
            raise ValueError("pretrained: true and quality (1-8) go together")
        if self.pretrained and self.weights:
            raise ValueError("set pretrained or weights, not both")
        if self.lmbda is None and not (self.pretrained or self.weights):
            raise ValueError("set lmbda to train the codec, or pretrained + quality / weights to load one")
        return self


class NeuralCodec(Method, name="neural_codec", args=NeuralCodecArgs, stages=("rate_distortion",), teacher="server",
                  variant_field="arch"):
    """Neural input compression: a CompressAI codec (factorized, hyperprior, mean-scale, autoregressive)."""

    def rate_param(self, args: NeuralCodecArgs) -> dict:
        out: dict[str, Any] = {}
        if args.pretrained:
            out["quality"] = args.quality
        if args.lmbda is not None:
            out["lambda"] = args.lmbda
        return out

    def needs_training(self, config) -> bool:
        """False when the weights are used as loaded (pretrained or a file, no ``lmbda``)."""
        return config.args().lmbda is not None

    def build(self, ctx, args: NeuralCodecArgs, teacher):
        n, m = zoo_widths(args.arch, args.quality) if args.pretrained else (args.N, args.M)
        return build_codec(args.arch, n, m)

    def load_initial(self, codec, args: NeuralCodecArgs) -> None:
        """Pretrained or file weights, if any: the start of training, or the codec itself without ``lmbda``."""
        if args.pretrained:
            load_pretrained(codec, args.arch, args.quality)  # type: ignore[arg-type]
        elif args.weights:
            load_codec_weights(codec, args.weights)
        if (args.pretrained or args.weights) and not coder_ready(codec):
            update_coder(codec)

    def recipe(self, ctx, args: NeuralCodecArgs, model, teacher):
        if args.lmbda is None:
            raise SplitbenchError("neural_codec trains only with method_args.lmbda set; without it the "
                                  "pretrained/weights codec is evaluated as is")
        self.load_initial(model, args)
        return RateDistortionTraining(model, args.lmbda)

    def pipeline(self, ctx, args: NeuralCodecArgs, model, teacher):
        if args.lmbda is None:  # the loaded codec is the codec
            model = self.build(ctx, args, teacher)
            self.load_initial(model, args)
        elif model is None:
            raise SplitbenchError("neural_codec with lmbda needs its trained weights (splitbench train)")
        loaded = "pretrained" if args.pretrained else "weights" if args.weights else None
        description: dict[str, Any] = {"arch": args.arch, "source": "trained" if args.lmbda is not None else loaded}
        if args.lmbda is not None:
            description["lambda"] = args.lmbda
        if loaded:  # what the codec was loaded from (as is, or as the start of training)
            description["init"] = f"CompressAI zoo quality {args.quality}" if args.pretrained else args.weights
        # A decoder must not be sized by the wire: allow up to 16× the configured image area.
        return NeuralCodecPipeline(model, teacher, ctx.device, 16 * ctx.image_size ** 2, description)
