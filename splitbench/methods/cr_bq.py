"""CR+BQ (Matsubara & Levorato, ICPR 2020): a narrow bottleneck (channel reduction, 1–12 channels)
trained by head-network distillation, then quantized to 8 bits at inference (bottleneck
quantization) with per-sample scale and zero point carried in each bitstream.

Training is Entropic Student's stage 1 without the rate term (:class:`HeadDistillation`): Σ MSE(sum)
against the teacher at the split point and every later stage; the tail stays the teacher's.
"""

from __future__ import annotations

import copy
from typing import ClassVar

from pydantic import Field

from splitbench.compression.latent_coders import Quantize8Bit
from splitbench.methods.base import BuildContext, Method, register_method
from splitbench.methods.entropic_student import BottleneckArgs, HeadDistillation, build_student
from splitbench.models.staged import StagedNetwork
from splitbench.pipeline import LearnedPipeline
from splitbench.training.module import TrainingModule


class CRBQArgs(BottleneckArgs):
    channels: int = Field(12, ge=1, description="bottleneck channels (1-12 as published)")

    def coder(self) -> Quantize8Bit:
        return Quantize8Bit(self.channels)


@register_method
class CRBQ(Method):
    """CR+BQ: head-distilled narrow bottleneck, 8-bit quantized at inference (no entropy coding)."""

    name = "cr_bq"
    Args: ClassVar = CRBQArgs
    stages = ("bottleneck",)
    uses_teacher = True

    def variant(self, args: CRBQArgs) -> str:
        return "8bit"

    def rate_param(self, args: CRBQArgs) -> dict:
        return {"channels": args.channels}

    def build_model(self, ctx: BuildContext, args: CRBQArgs, teacher: StagedNetwork | None):
        assert teacher is not None
        return build_student(args, copy.deepcopy(teacher), ctx.config.data.image_size)

    def training_module(self, ctx, args, model, teacher) -> TrainingModule:
        return HeadDistillation(model, teacher)

    def pipeline(self, ctx, args, model, teacher) -> LearnedPipeline:
        return LearnedPipeline(model, ctx.device)
