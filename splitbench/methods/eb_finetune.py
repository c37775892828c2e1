"""EB fine-tuning: an EntropyBottleneck (factorized prior over the split point's channels) after a named stage
of the unmodified, teacher-initialised network; the whole network is then fine-tuned with the task loss +
β·bits per image (the End-to-End loss). The device runs the stages up to the split and codes their output.
"""

from __future__ import annotations

from splitbench.compression.latent_coders import FactorizedPrior
from splitbench.methods.base import Method, RateArgs
from splitbench.models.builders import split_shape, stage_bottleneck, student
from splitbench.training.recipes import TaskRateTraining


class EBFinetuneArgs(RateArgs):
    split_after: str = "layer1"


class EBFinetune(Method, name="eb_finetune", args=EBFinetuneArgs, stages=("train",), teacher="build",
                 variant_field="split_after", rate=("beta",)):
    """EB fine-tuning: an entropy bottleneck after a stage of the teacher, fine-tuned with CE + β·bits."""

    def build(self, ctx, args: EBFinetuneArgs, teacher):
        channels = split_shape(teacher, args.split_after, ctx.image_size)[0]
        bottleneck = stage_bottleneck(teacher, args.split_after, ctx.image_size, FactorizedPrior(channels))
        return student(teacher, args.split_after, bottleneck, ctx.image_size)

    def recipe(self, ctx, args: EBFinetuneArgs, model, teacher):
        return TaskRateTraining(model, args.beta, args.rate_warmup)
