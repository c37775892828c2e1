"""End-to-End (Singh et al., ICIP 2020): the factorized-prior bottleneck and the whole network trained
from the task loss alone, CE + β·bits per image, in one stage; the layers after the split start
from the teacher's.

β semantics: the rate term is the bits of the batch's latents summed and divided by the batch size
(the mean bits per image), as sc2bench's ``BppLoss(reduction='batchmean')`` computes it; the
published β ∈ {1.28e-8 … 3.2768e-6} go with that. (Entropic Student's β instead multiplies the bits
summed over the batch.) :class:`TaskRateTraining` is shared with EB fine-tuning.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from splitbench.methods.base import BuildContext, Method, MethodArgs, learned_pipeline, register_method
from splitbench.methods.entropic_student import BottleneckArgs, build_student
from splitbench.models.staged import StagedNetwork
from splitbench.models.task_model import TaskModel
from splitbench.pipeline import SplitPipeline
from splitbench.training.losses import rate_bits, task_losses
from splitbench.training.module import TrainingModule


class TaskRateTraining(TrainingModule):
    """Stage ``train``: every parameter trains with CE + β·(mean bits per image) + the aux loss; the
    stage's end builds the coder tables."""

    stages = ("train",)

    def __init__(self, model: nn.Module, beta: float) -> None:
        super().__init__(model)
        self.beta = beta

    def set_stage(self, stage: str) -> None:
        self.reset_frozen()

    def end_stage(self, stage: str) -> None:
        self.model.coder.update()

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if isinstance(self.model, TaskModel):  # a detector/segmenter: its task loss in place of CE
            _, losses, _, likelihoods = self.model.run(images, labels)
            logs = task_losses(losses)
        else:
            logits, _, likelihoods = self.model(images)
            logs = {"task": F.cross_entropy(logits, labels), "acc": (logits.argmax(1) == labels).float().mean()}
        bits = rate_bits(likelihoods, "batchmean")
        aux = self.model.coder.aux_loss()
        return {"loss": logs["task"] + self.beta * bits + aux, **logs, "bytes": bits / 8, "aux": aux}


class RateArgs(MethodArgs):
    beta: float = Field(gt=0, description="weight of the mean bits per image (bits summed over the batch / batch size)")


class EndToEndArgs(BottleneckArgs, RateArgs):
    pass


@register_method
class EndToEnd(Method):
    """End-to-End: factorized-prior bottleneck and the whole network trained with CE + β·bits per image."""

    name = "end_to_end"
    Args: ClassVar = EndToEndArgs
    stages = ("train",)
    uses_teacher = True  # the layers after the split start from the teacher's
    tasks = ("classification", "detection", "segmentation")

    def variant(self, args: EndToEndArgs) -> str:
        return "fp"

    def rate_param(self, args: EndToEndArgs) -> dict:
        return {"beta": args.beta}

    def build_model(self, ctx: BuildContext, args: EndToEndArgs, teacher: StagedNetwork | None):
        assert teacher is not None
        return build_student(args, teacher, ctx.config.data.image_size)

    def training_module(self, ctx, args: EndToEndArgs, model, teacher) -> TrainingModule:
        return TaskRateTraining(model, args.beta)

    def pipeline(self, ctx, args, model, teacher) -> SplitPipeline:
        return learned_pipeline(model, ctx.device)
