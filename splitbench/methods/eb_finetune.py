"""EB fine-tuning: an EntropyBottleneck (factorized prior over the split point's channels) inserted
after a named stage of the unmodified, teacher-initialised classifier; the whole network is then
fine-tuned with CE + β·bits per image (the End-to-End loss, :class:`TaskRateTraining`). The
device runs the stages up to the split and codes their output.
"""

from __future__ import annotations

import copy
from typing import ClassVar

from splitbench.compression.latent_coders import FactorizedPrior
from splitbench.methods.base import BuildContext, Method, register_method
from splitbench.methods.end_to_end import RateArgs, TaskRateTraining
from splitbench.models.bottleneck_classifier import build_split_classifier
from splitbench.models.staged import StagedNetwork
from splitbench.pipeline import LearnedPipeline
from splitbench.training.module import TrainingModule


class EBFinetuneArgs(RateArgs):
    split_after: str = "layer1"


@register_method
class EBFinetune(Method):
    """EB fine-tuning: an entropy bottleneck after a stage of the teacher, fine-tuned with CE + β·bits."""

    name = "eb_finetune"
    Args: ClassVar = EBFinetuneArgs
    stages = ("train",)
    uses_teacher = True

    def variant(self, args: EBFinetuneArgs) -> str:
        return args.split_after

    def rate_param(self, args: EBFinetuneArgs) -> dict:
        return {"beta": args.beta}

    def build_model(self, ctx: BuildContext, args: EBFinetuneArgs, teacher: StagedNetwork | None):
        assert teacher is not None
        image_size = ctx.config.data.image_size
        teacher.check_split_point(args.split_after)
        channels = teacher.stage_shapes(image_size)[args.split_after][0]
        return build_split_classifier(copy.deepcopy(teacher), args.split_after, image_size, FactorizedPrior(channels))

    def training_module(self, ctx, args: EBFinetuneArgs, model, teacher) -> TrainingModule:
        return TaskRateTraining(model, args.beta)

    def pipeline(self, ctx, args, model, teacher) -> LearnedPipeline:
        return LearnedPipeline(model, ctx.device)
