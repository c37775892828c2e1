"""CR+BQ (Matsubara & Levorato, ICPR 2020): a narrow bottleneck (channel reduction, 1–12 channels)
trained by head-network distillation, then quantized to 8 bits at inference (bottleneck
quantization) with per-sample scale and zero point carried in each bitstream.

Training is Entropic Student's stage 1 without the rate term (:class:`HeadDistillation`): Σ MSE(sum)
against the teacher at the split point and every later stage; the tail stays the teacher's.

Two networks: ``architecture: gdn`` (default) is the Entropic Student's GDN bottleneck;
``architecture: larger_resnet`` is the conv/BatchNorm/ReLU stack sc2bench uses for CR+BQ
(:mod:`splitbench.compression.crbq_bottleneck`; split after ``layer1`` or ``layer2``), which
sc2bench checkpoints load into. ``integer_zero_point: true`` quantizes exactly as sc2bench does.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from splitbench.compression.crbq_bottleneck import build_larger_resnet_bottleneck
from splitbench.compression.latent_coders import LatentCoder, Quantize8Bit
from splitbench.methods.base import BuildContext, Method, learned_pipeline, register_method
from splitbench.methods.entropic_student import BottleneckArgs, HeadDistillation, build_student
from splitbench.models.bottleneck_classifier import BottleneckClassifier
from splitbench.models.staged import StagedNetwork
from splitbench.pipeline import SplitPipeline
from splitbench.training.module import TrainingModule


class CRBQArgs(BottleneckArgs):
    channels: int = Field(12, ge=1, description="bottleneck channels (1-12 as published)")
    architecture: Literal["gdn", "larger_resnet"] = Field(
        "gdn", description="gdn: the Entropic Student's GDN bottleneck; larger_resnet: sc2bench's CR+BQ "
        "conv/BN/ReLU stack (split after layer1 or layer2)")
    integer_zero_point: bool = Field(
        False, description="sc2bench's 8-bit quantizer: zero point floored to an integer, sent as 1 byte")

    @model_validator(mode="after")
    def _gdn_settings_need_gdn(self) -> CRBQArgs:
        if self.architecture != "gdn":
            extra = [k for k in ("encoder_channels", "decoder_channels", "simplified_gdn") if getattr(self, k)]
            if extra:
                raise ValueError(f"{', '.join(extra)} apply to architecture 'gdn' only; "
                                 f"{self.architecture!r} has the layer widths of sc2bench's stack")
        return self

    def coder(self) -> Quantize8Bit:
        return Quantize8Bit(self.channels, integer_zero_point=self.integer_zero_point)


def build_larger_resnet_student(
    backbone: StagedNetwork, split_after: str, image_size: int, coder: LatentCoder
) -> BottleneckClassifier:
    """sc2bench's CR+BQ network: its conv/BN/ReLU bottleneck in place of the stages up to ``split_after``."""
    backbone.check_split_point(split_after)
    shape = backbone.stage_shapes(image_size)[split_after]
    return BottleneckClassifier(backbone, split_after, build_larger_resnet_bottleneck(coder, shape, image_size),
                                image_size)


@register_method
class CRBQ(Method):
    """CR+BQ: head-distilled narrow bottleneck, 8-bit quantized at inference (no entropy coding)."""

    name = "cr_bq"
    Args: ClassVar = CRBQArgs
    stages = ("bottleneck",)
    uses_teacher = True
    tasks = ("classification", "detection", "segmentation")

    def variant(self, args: CRBQArgs) -> str:
        return "8bit" if args.architecture == "gdn" else f"{args.architecture}-8bit"

    def rate_param(self, args: CRBQArgs) -> dict:
        return {"channels": args.channels}

    def build_model(self, ctx: BuildContext, args: CRBQArgs, teacher: StagedNetwork | None):
        assert teacher is not None
        image_size = ctx.config.data.image_size
        make_trunk = None
        if args.architecture == "larger_resnet":
            def make_trunk(backbone: StagedNetwork) -> BottleneckClassifier:
                return build_larger_resnet_student(backbone, args.split_after, image_size, args.coder())
        return build_student(args, teacher, image_size, make_trunk)

    def training_module(self, ctx, args, model, teacher) -> TrainingModule:
        return HeadDistillation(model, teacher)

    def pipeline(self, ctx, args, model, teacher) -> SplitPipeline:
        return learned_pipeline(model, ctx.device)
