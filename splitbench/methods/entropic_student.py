"""Entropic Student (Matsubara et al., WACV 2022): a distilled bottleneck with a learned entropy model.

Variants by entropy model: ``fp`` (factorized prior), ``shp`` (scale hyperprior), ``mshp``
(mean-scale hyperprior; z has ``hyper_channels`` channels, 16 as published).

Stage ``bottleneck``: only the bottleneck trains; loss = Σ MSE(sum) between student and teacher at
the split point and every later stage (not the logits) + β·bits (y and z, summed over the batch)
+ the entropy model's auxiliary loss. Its end fixes the coder tables. Stage ``tail``: encoder and
entropy model frozen; decoder and later stages train with 0.5·CE + 0.5·T²·KL(teacher‖student) on
the test-time quantized latent (for MSHP: y rounded around the predicted means).

:class:`HeadDistillation` (stage 1 alone, with or without the rate term) is also CR+BQ's recipe.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt

from splitbench.compression.latent_coders import (
    FactorizedPrior,
    LatentCoder,
    MeanScaleHyperprior,
    ScaleHyperprior,
)
from splitbench.methods.base import BuildContext, Method, MethodArgs, learned_pipeline, register_method
from splitbench.models.bottleneck_classifier import BottleneckClassifier, build_bottleneck_classifier
from splitbench.models.staged import StagedNetwork
from splitbench.models.task_model import TaskModel, pad_images, split_task_model
from splitbench.pipeline import SplitPipeline
from splitbench.training.losses import feature_distillation, kd_divergence, rate_bits, task_losses
from splitbench.training.module import TrainingModule


class BottleneckArgs(MethodArgs):
    """The learned bottleneck shared by Entropic Student, End-to-End and CR+BQ."""

    split_after: str = "layer1"
    channels: int = Field(24, ge=1, description="latent channels")
    encoder_channels: list[PositiveInt] | None = Field(None, description="default: 96, 48, then 48 per extra stride")
    decoder_channels: list[PositiveInt] | None = Field(None, description="default: 2×, 1× the split point's channels")
    simplified_gdn: bool = Field(False, description="GDN1 (|x|, no square root) as in sc2bench, instead of GDN")

    def coder(self) -> LatentCoder:
        """The latent coder these settings describe (a factorized prior unless a method says otherwise)."""
        return FactorizedPrior(self.channels)


def build_student(args: BottleneckArgs, teacher: StagedNetwork | TaskModel, image_size: int,
                  make_trunk: Callable[[StagedNetwork], BottleneckClassifier] | None = None
                  ) -> BottleneckClassifier | TaskModel:
    """The bottleneck (``args``' GDN bottleneck, or what ``make_trunk`` builds on a copy of the backbone) in
    place of the teacher's stages up to the split; for a detector/segmenter teacher, in place of its
    trunk's, under a copy of its head."""
    backbone = copy.deepcopy(teacher.trunk if isinstance(teacher, TaskModel) else teacher)
    if make_trunk is None:
        student = build_bottleneck_classifier(
            backbone, args.split_after, image_size, args.coder(), encoder_channels=args.encoder_channels,
            decoder_channels=args.decoder_channels, simplified_gdn=args.simplified_gdn)
    else:
        student = make_trunk(backbone)
    return split_task_model(teacher, student) if isinstance(teacher, TaskModel) else student


class EntropicStudentArgs(BottleneckArgs):
    variant: Literal["fp", "shp", "mshp"] = "fp"
    beta: float = Field(gt=0, description="rate weight on bits (y + z) summed over the batch")
    hyper_channels: int = Field(16, ge=1, description="channels of the hyper-latent z (shp, mshp)")
    kd_temperature: float = Field(1.0, gt=0)
    kd_weight: float = Field(0.5, ge=0, le=1, description="weight of KL; CE gets 1 − kd_weight")

    def coder(self) -> LatentCoder:
        if self.variant == "fp":
            return FactorizedPrior(self.channels)
        return (MeanScaleHyperprior if self.variant == "mshp" else ScaleHyperprior)(self.channels, self.hyper_channels)


class HeadDistillation(TrainingModule):
    """Stage ``bottleneck``: the bottleneck learns to reproduce the teacher's features at the split point
    and every later stage (the tail is frozen); with ``beta``, plus β·bits summed over the batch
    and the entropy model's aux loss. Its end builds the coder tables."""

    stages: tuple[str, ...] = ("bottleneck",)

    def __init__(self, student: BottleneckClassifier | TaskModel, teacher: StagedNetwork | TaskModel,
                 beta: float | None = None) -> None:
        super().__init__(student)
        self.teacher = teacher
        self.beta = beta
        self.student_trunk = student.trunk if isinstance(student, TaskModel) else student
        # Every stage output from the split point on, but a classifier's logits (a task trunk has none).
        tail = self.student_trunk.tail_stages
        self.distill = [self.student_trunk.split_after] + (tail if isinstance(student, TaskModel) else tail[:-1])
        self.stage = self.stages[0]

    def set_stage(self, stage: str) -> None:
        self.stage = stage
        self.reset_frozen()
        self.freeze(self.teacher)
        if stage == "bottleneck":
            self.freeze(self.student_trunk.tail)
            if isinstance(self.model, TaskModel):
                self.freeze(self.model.head)

    def end_stage(self, stage: str) -> None:
        if stage == "bottleneck":
            self.model.coder.update()

    def _features(self, images) -> tuple[dict, dict, dict]:
        """(student stage outputs, teacher stage outputs, likelihoods) on the same (padded) batch."""
        if isinstance(self.model, TaskModel):
            batch, _ = pad_images(images, self.model.stride)
            with torch.no_grad():
                teacher_features, _ = self.teacher.trunk_features(batch)
            features, likelihoods = self.model.trunk_features(batch)
            return features, teacher_features, likelihoods
        with torch.no_grad():
            _, teacher_features = self.teacher(images, taps=self.distill)
        _, features, likelihoods = self.model(images)
        return features, teacher_features, likelihoods

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        features, teacher_features, likelihoods = self._features(images)
        mse = feature_distillation(features, teacher_features, self.distill)
        batch = len(images)
        if self.beta is None:
            return {"loss": mse, "mse": mse / batch}
        bits = rate_bits(likelihoods, "sum")
        aux = self.model.coder.aux_loss()
        return {"loss": mse + self.beta * bits + aux, "mse": mse / batch, "bytes": bits / batch / 8, "aux": aux}


class EntropicStudentTraining(HeadDistillation):
    stages = ("bottleneck", "tail")

    def __init__(self, student: BottleneckClassifier | TaskModel, teacher: StagedNetwork | TaskModel,
                 args: EntropicStudentArgs) -> None:
        super().__init__(student, teacher, args.beta)
        self.args = args

    def set_stage(self, stage: str) -> None:
        super().set_stage(stage)
        if stage == "tail":
            self.freeze(self.student_trunk.bottleneck.encoder, self.student_trunk.bottleneck.coder)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.stage == "bottleneck":
            return super().forward(images, labels)
        if isinstance(self.model, TaskModel):  # stage 2 of the detection/segmentation recipe: the task loss
            _, losses, _, _ = self.model.run(images, labels, quantized=True)
            logs = task_losses(losses)
            return {"loss": logs["task"], **logs}
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        logits, _, _ = self.model(images, quantized=True)
        kl = kd_divergence(logits, teacher_logits, self.args.kd_temperature)
        ce = F.cross_entropy(logits, labels)
        w = self.args.kd_weight
        return {"loss": (1 - w) * ce + w * kl, "ce": ce, "kl": kl,
                "acc": (logits.argmax(1) == labels).float().mean()}


@register_method
class EntropicStudent(Method):
    """Entropic Student: distilled bottleneck + entropy model (fp, shp, mshp), two training stages."""

    name = "entropic_student"
    Args: ClassVar = EntropicStudentArgs
    stages = ("bottleneck", "tail")
    uses_teacher = True
    tasks = ("classification", "detection", "segmentation")

    def variant(self, args: EntropicStudentArgs) -> str:
        return args.variant

    def rate_param(self, args: EntropicStudentArgs) -> dict:
        return {"beta": args.beta}

    def build_model(self, ctx: BuildContext, args: EntropicStudentArgs, teacher: StagedNetwork | None):
        assert teacher is not None
        return build_student(args, teacher, ctx.config.data.image_size)

    def training_module(self, ctx, args, model, teacher) -> TrainingModule:
        return EntropicStudentTraining(model, teacher, args)

    def pipeline(self, ctx, args, model, teacher) -> SplitPipeline:
        return learned_pipeline(model, ctx.device)
