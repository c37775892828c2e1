"""Entropic Student (Matsubara et al., WACV 2022): a distilled bottleneck with a learned entropy model.

Stage ``bottleneck``: only the bottleneck trains; loss = Σ MSE(sum) between student and teacher at
the split point and every later stage (not the logits) + β·bits (summed over the batch) + the
entropy model's auxiliary loss. Its end fixes the coder tables. Stage ``tail``: encoder and
entropy model frozen; decoder and later stages train with 0.5·CE + 0.5·T²·KL(teacher‖student) on
the test-time quantized latent.
"""

from __future__ import annotations

import copy
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from splitbench.compression.bottleneck import Bottleneck, build_decoder, build_encoder, strides_for
from splitbench.compression.latent_coders import FactorizedPrior, bits_per_sample
from splitbench.methods.base import BuildContext, Method, MethodArgs, register_method
from splitbench.models.bottleneck_classifier import BottleneckClassifier
from splitbench.models.staged import StagedNetwork
from splitbench.pipeline import LearnedPipeline
from splitbench.training.module import TrainingModule


class EntropicStudentArgs(MethodArgs):
    variant: Literal["fp"] = "fp"
    split_after: str = "layer1"
    beta: float = Field(gt=0, description="rate weight on bits summed over the batch")
    channels: int = Field(24, ge=1, description="latent channels")
    encoder_channels: list[int] | None = Field(None, description="default: 96, 48, then 48 per extra stride")
    decoder_channels: list[int] | None = Field(None, description="default: 2×, 1× the split point's channels")
    kd_temperature: float = Field(1.0, gt=0)
    kd_weight: float = Field(0.5, ge=0, le=1, description="weight of KL; CE gets 1 − kd_weight")


def build_student(args: EntropicStudentArgs, backbone: StagedNetwork, image_size: int) -> BottleneckClassifier:
    backbone.check_split_point(args.split_after)
    c, _, w = backbone.stage_shapes(image_size)[args.split_after]
    n_strides = strides_for(image_size // w)
    encoder_channels = args.encoder_channels or ([96, 48] + [48] * (n_strides - 2))[:n_strides]
    if len(encoder_channels) != n_strides:
        raise ValueError(
            f"split after {args.split_after} is {n_strides} halvings deep, so encoder_channels needs "
            f"{n_strides} entries, got {encoder_channels}"
        )
    bottleneck = Bottleneck(
        build_encoder(3, encoder_channels, args.channels),
        FactorizedPrior(args.channels),
        build_decoder(args.channels, args.decoder_channels or [2 * c, c], c),
    )
    return BottleneckClassifier(backbone, args.split_after, bottleneck, image_size)


class EntropicStudentTraining(TrainingModule):
    stages = ("bottleneck", "tail")

    def __init__(self, student: BottleneckClassifier, teacher: StagedNetwork, args: EntropicStudentArgs) -> None:
        super().__init__(student)
        self.teacher = teacher
        self.args = args
        self.distill = [student.split_after] + student.tail_stages[:-1]  # all stage outputs but the logits
        self.stage = "bottleneck"

    def set_stage(self, stage: str) -> None:
        self.stage = stage
        self.reset_frozen()
        student: BottleneckClassifier = self.model
        self.freeze(self.teacher)
        if stage == "bottleneck":
            self.freeze(student.tail)
        else:
            self.freeze(student.bottleneck.encoder, student.bottleneck.coder)

    def end_stage(self, stage: str) -> None:
        if stage == "bottleneck":
            self.model.coder.update()

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            teacher_logits, teacher_features = self.teacher(images, taps=self.distill)
        if self.stage == "bottleneck":
            logits, features, likelihoods = self.model(images)
            mse = sum(F.mse_loss(features[s].float(), teacher_features[s].float(), reduction="sum")
                      for s in self.distill)
            bits = bits_per_sample(likelihoods)
            aux = self.model.coder.aux_loss()
            batch = images.shape[0]
            return {"loss": mse + self.args.beta * bits.sum() + aux, "mse": mse / batch,
                    "bytes": bits.mean() / 8, "aux": aux}
        logits, _, _ = self.model(images, quantized=True)
        t = self.args.kd_temperature
        kl = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                      reduction="batchmean", log_target=True) * t * t
        ce = F.cross_entropy(logits, labels)
        w = self.args.kd_weight
        return {"loss": (1 - w) * ce + w * kl, "ce": ce, "kl": kl,
                "acc": (logits.argmax(1) == labels).float().mean()}


@register_method
class EntropicStudent(Method):
    """Entropic Student: distilled bottleneck + factorized-prior entropy model, two training stages."""

    name = "entropic_student"
    Args: ClassVar = EntropicStudentArgs
    stages = ("bottleneck", "tail")
    uses_teacher = True

    def variant(self, args: EntropicStudentArgs) -> str:
        return args.variant

    def rate_param(self, args: EntropicStudentArgs) -> dict:
        return {"beta": args.beta}

    def build_model(self, ctx: BuildContext, args: EntropicStudentArgs, teacher: StagedNetwork | None):
        assert teacher is not None
        return build_student(args, copy.deepcopy(teacher), ctx.config.data.image_size)

    def training_module(self, ctx, args, model, teacher) -> TrainingModule:
        return EntropicStudentTraining(model, teacher, args)

    def pipeline(self, ctx, args, model, teacher) -> LearnedPipeline:
        return LearnedPipeline(model, ctx.device)
