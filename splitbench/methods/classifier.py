"""The unsplit model: trained on the task, it is the teacher of every other method.

For classification it is the backbone itself; for detection and segmentation, the backbone's
feature stages under a Faster R-CNN or DeepLabv3 head (:mod:`splitbench.models.task_model`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from splitbench.methods.base import BuildContext, Method, MethodArgs, register_method
from splitbench.methods.input_codec import InputCodecPipeline, RawPixels
from splitbench.models.backbones import get_backbone
from splitbench.models.staged import StagedNetwork
from splitbench.models.task_model import build_task_model
from splitbench.training.losses import task_losses
from splitbench.training.module import TrainingModule


class ClassifierTraining(TrainingModule):
    stages = ("train",)

    def set_stage(self, stage: str) -> None:
        self.reset_frozen()

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.model(images)
        return {"loss": F.cross_entropy(logits, labels), "acc": (logits.argmax(1) == labels).float().mean()}


class TaskTraining(TrainingModule):
    """A detector/segmenter trained on its task loss (the sum of torchvision's detection losses, or CE + aux).

    With ``frozen_trunk`` only the head trains, on the trunk's test-time quantized latent (a multi-task
    head on a shared Entropic Student body)."""

    stages = ("train",)

    def __init__(self, model: nn.Module, frozen_trunk: bool = False) -> None:
        super().__init__(model)
        self.frozen_trunk = frozen_trunk

    def set_stage(self, stage: str) -> None:
        self.reset_frozen()
        if self.frozen_trunk:
            self.freeze(self.model.trunk)

    def forward(self, images, targets) -> dict[str, torch.Tensor]:
        _, losses, _, _ = self.model.run(images, targets, quantized=self.frozen_trunk)
        logs = task_losses(losses)
        return {"loss": logs["task"], **logs}


@register_method
class Classifier(Method):
    """A full classifier (the teacher), trained with cross-entropy; evaluated on raw 8-bit pixels."""

    name = "classifier"
    stages = ("train",)
    tasks = ("classification", "detection", "segmentation")

    def variant(self, args: MethodArgs) -> str:
        return ""

    def needs_training(self, config) -> bool:
        """A pretrained or user-weights backbone with no training stages is evaluated as loaded."""
        b = config.backbone
        return bool(config.train.stages) or not (b.pretrained or b.weights)

    def build_model(self, ctx: BuildContext, args: MethodArgs, teacher: StagedNetwork | None) -> nn.Module:
        b, config = ctx.config.backbone, ctx.config
        if config.task == "classification":
            return get_backbone(b.name, ctx.num_classes, pretrained=b.pretrained, weights=b.weights)
        # The backbone's own head is dropped: its class count only has to match its weights (ImageNet's).
        backbone = get_backbone(b.name, 1000 if (b.pretrained or b.weights) else ctx.num_classes,
                                pretrained=b.pretrained, weights=b.weights)
        return build_task_model(config.task, backbone, ctx.num_classes, ctx.head_args, config.data.image_size)

    def training_module(self, ctx, args, model, teacher) -> TrainingModule:
        return ClassifierTraining(model) if ctx.config.task == "classification" else TaskTraining(model)

    def pipeline(self, ctx, args, model, teacher) -> InputCodecPipeline:
        if model is None:  # evaluated as loaded (pretrained or backbone.weights)
            model = self.build_model(ctx, args, None)
        return InputCodecPipeline(RawPixels(), model, ctx.device)
