"""The unsplit classifier: trained on the task, it is the teacher of every other method."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from splitbench.methods.base import BuildContext, Method, MethodArgs, register_method
from splitbench.methods.input_codec import InputCodecPipeline, RawPixels
from splitbench.models.backbones import get_backbone
from splitbench.models.staged import StagedNetwork
from splitbench.training.module import TrainingModule


class ClassifierTraining(TrainingModule):
    stages = ("train",)

    def set_stage(self, stage: str) -> None:
        self.reset_frozen()

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.model(images)
        return {"loss": F.cross_entropy(logits, labels), "acc": (logits.argmax(1) == labels).float().mean()}


@register_method
class Classifier(Method):
    """A full classifier (the teacher), trained with cross-entropy; evaluated on raw 8-bit pixels."""

    name = "classifier"
    stages = ("train",)

    def variant(self, args: MethodArgs) -> str:
        return ""

    def needs_training(self, config) -> bool:
        """A pretrained or user-weights backbone with no training stages is evaluated as loaded."""
        b = config.backbone
        return bool(config.train.stages) or not (b.pretrained or b.weights)

    def build_model(self, ctx: BuildContext, args: MethodArgs, teacher: StagedNetwork | None) -> StagedNetwork:
        b = ctx.config.backbone
        return get_backbone(b.name, ctx.num_classes, pretrained=b.pretrained, weights=b.weights)

    def training_module(self, ctx, args, model, teacher) -> TrainingModule:
        return ClassifierTraining(model)

    def pipeline(self, ctx, args, model, teacher) -> InputCodecPipeline:
        if model is None:  # evaluated as loaded (pretrained or backbone.weights)
            model = self.build_model(ctx, args, None)
        return InputCodecPipeline(RawPixels(), model, ctx.device)
