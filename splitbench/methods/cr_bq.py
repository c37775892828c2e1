"""CR+BQ (Matsubara & Levorato, ICPR 2020): a narrow bottleneck (channel reduction, 1–12 channels) trained by
head-network distillation (Σ MSE against the teacher from the split point on, no rate term; the tail stays
the teacher's), then quantized to 8 bits at inference with per-sample scale and zero point in each bitstream.

``architecture: gdn`` (default) is the Entropic Student's GDN bottleneck; ``larger_resnet`` is the
conv/BatchNorm/ReLU stack sc2bench uses (:mod:`splitbench.models.bottlenecks`; split after
``layer1`` or ``layer2``), which sc2bench checkpoints load into. ``integer_zero_point`` quantizes as sc2bench.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from splitbench.compression.latent_coders import Quantize8Bit
from splitbench.methods.base import BottleneckMethod, DistillArgs
from splitbench.models.bottlenecks import build_larger_resnet_bottleneck
from splitbench.models.builders import BottleneckArgs, split_shape, student
from splitbench.training.recipes import HeadDistillation


class CRBQArgs(BottleneckArgs, DistillArgs):
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


class CRBQ(BottleneckMethod, name="cr_bq", args=CRBQArgs, stages=("bottleneck",), rate=("channels",)):
    """CR+BQ: head-distilled narrow bottleneck, 8-bit quantized at inference (no entropy coding)."""

    def variant(self, args: CRBQArgs) -> str:
        return "8bit" if args.architecture == "gdn" else f"{args.architecture}-8bit"

    def build(self, ctx, args: CRBQArgs, teacher):
        if args.architecture == "gdn":
            return super().build(ctx, args, teacher)
        shape = split_shape(teacher, args.split_after, ctx.image_size)
        bottleneck = build_larger_resnet_bottleneck(args.coder(), shape, ctx.image_size)
        return student(teacher, args.split_after, bottleneck, ctx.image_size)

    def recipe(self, ctx, args, model, teacher):
        return HeadDistillation(model, teacher, levels=args.distill)
